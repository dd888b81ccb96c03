"""OCR followed by SFT (Table 1, "(SFT)" rows), stage 2: 5B tokens of short instruction data.

Starts from stage 1's training workdir (its latest checkpoint and model_config.json, which
already carries the 4e6 mRoPE base):

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/ablations/ocr_sft_stage2.py:full \\
      /ckpt/ocr_full_stage2 \\
      --config.init_checkpoint=/ckpt/ocr_full_stage1 --config.data.root=/data/sft_shards

(on every node: `python -m mmprolong_jax.train --config configs/ablations/ocr_sft_stage2.py:full
--workdir /ckpt/ocr_full_stage2` with the same overrides); `:needle` for the OCR-needle branch.
Use a new workdir: the stage-1 one would be resumed instead.

Data: the SFT part of LLaVA-OneVision (single- and multi-image, Appendix F) as shard set
`short` under its own root. The study gives no SFT hyperparameters; this keeps Table 6's
optimizer, budget and 4M-token batches, with 32K rows (the base model's window; conversations are
a few K tokens) and no sequence parallelism: 128 rows per step, 2 per GPU on 64 GPUs. Packing
caveat as in configs/final_short40.py (segments per row vs attention.max_segments).

Reported (MMLB-D / LD-URL / SLIDE):
  Table 1   OCR-full (SFT)    64K 37.19 / 53.07 / 78.00, avg 56.09;  128K 25.03 / 51.73 / 78.00,
                              avg 51.59;  overall 53.84 (+3.2 over Qwen2.5-VL-7B).
            OCR-needle (SFT)  64K 33.79 / 50.38 / 78.00, avg 54.06;  128K 26.65 / 49.84 / 76.00,
                              avg 50.83;  overall 52.44 (+1.9).
"""
from configs import final
from mmprolong_jax.data import sources

ARGS = ("full", "needle")


def get_config(arg="full"):
  if arg not in ARGS:
    raise ValueError(f"ocr_sft_stage2.py:{arg}: choose one of {ARGS}")
  c = final.get_config()
  c.init_checkpoint = f"/path/to/ocr_{arg}_stage1_workdir"
  final.set_mixture(c, {"short": 1.0}, root="/path/to/sft_shards")
  c.data.max_len = 32768
  c.data.update(sources.vision_slots(c.data.max_len))
  c.data.global_batch_tokens = 128 * c.data.max_len   # still 4M tokens per step
  c.attention.backend = "cudnn"                        # a 32K row fits one device
  c.mesh.sequence = 1
  c.train.max_loss_tokens = final.loss_positions(c.data.global_batch_tokens, 1 / 4)
  return c
