"""The final recipe (configs/final.py) on Qwen2.5-VL-3B-Instruct (tied input/output embeddings).

  python -m mmprolong_jax.convert.from_hf --hf_dir /hf/Qwen2.5-VL-3B-Instruct \\
      --out /ckpt/qwen2_5_vl_3b_converted
  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/qwen2_5_vl_3b.py /ckpt/mmprolong_3b \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_3b_converted --config.data.root=/data/shards

(on every node: `python -m mmprolong_jax.train --config configs/qwen2_5_vl_3b.py --workdir
/ckpt/mmprolong_3b` with the same overrides). Shapes come from the converted checkpoint (36
layers, hidden 2048, 16 query / 2 KV heads of dim 128, MLP 11008, one shared 151936 x 2048
embedding); the converter drops a duplicated lm_head.weight if the export carries one.

Same data, optimizer, batch and budget as the 7B recipe. Head dim is 128 as in the 7B model, so
Dynamic-NTK gives the same 4e6 base for 32K -> 128K. Ulysses degree 2 splits the 2 KV heads one
per device. 3.75B parameters x 16 bytes (fp32 weights, grads, AdamW moments) = 60 GB before
sharding (1.9 GB per device at FSDP 32); the LLM's saved residual stream is 36 layers x 64K
tokens x 2048 x 2 bytes = 9.7 GB, and the vision tower costs what it costs for the 7B model (same
ViT), see launch/README.md.

Reported: the study trains only the 7B model (Appendix H lists scale as a limitation), so there is
no reference number for this config; compare against the base model's own MMLongBench scores.
"""
from configs import final


def get_config():
  c = final.get_config()
  c.init_checkpoint = "/path/to/qwen2_5_vl_3b_converted"
  c.model.preset = "qwen2_5_vl_3b"   # random init only
  return c
