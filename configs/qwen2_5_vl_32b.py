"""The final recipe (configs/final.py) on Qwen2.5-VL-32B-Instruct.

  python -m mmprolong_jax.convert.from_hf --hf_dir /hf/Qwen2.5-VL-32B-Instruct \\
      --out /ckpt/qwen2_5_vl_32b_converted
  sbatch --nodes=16 launch/slurm_gpu.sbatch configs/qwen2_5_vl_32b.py /ckpt/mmprolong_32b \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_32b_converted --config.data.root=/data/shards

(on every node: `python -m mmprolong_jax.train --config configs/qwen2_5_vl_32b.py --workdir
/ckpt/mmprolong_32b` with the same overrides). There is no 32B preset: every shape is read from
the converted checkpoint's model_config.json (which the converter takes from the HF config.json),
so this file holds only what differs in how the run is laid out. Random init is refused.

Layout: ~33B parameters (a 64-layer decoder of hidden 5120 with 40 query / 8 KV heads, plus the
ViT) x 16 bytes = ~0.53 TB of weights, grads and AdamW moments. Ulysses over 4 devices per row
(8 KV heads -> 2 per device) keeps the saved residual stream at 64 layers x 32K tokens x 5120 x
2 bytes = 21 GB per device; with 32 batch groups that is 128 GPUs (FSDP 32 x SP 4, ~16.6 GB of
sharded state each), ~8 GB of layer working set and ~16 GB for the ViT's quarter of each row:
about 60 GB per device by launch/README.md's accounting. Not run.

Reported: not trained in the study. Starting point (Table 4, Qwen2.5-VL-32B, MMLB-D / LD-URL /
SLIDE): 64K 44.06 / 60.58 / 77.00, avg 60.55; 128K 32.08 / 60.15 / 76.00, avg 56.08; overall
58.31 (MMProLong-7B: 57.70).
"""
from configs import final


def get_config():
  c = final.get_config()
  c.init_checkpoint = "/path/to/qwen2_5_vl_32b_converted"
  c.model.preset = "qwen2_5_vl_32b"   # no such preset: only a converted checkpoint can start it
  c.mesh.sequence = 4
  return c
