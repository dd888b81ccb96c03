"""OCR-transcription ablation: needle-page OCR only (1-3 pages transcribed, the rest distractors).

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/ablations/ocr_needle.py /ckpt/abl_ocr_needle \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted --config.data.root=/data/shards

(on every node: `python -m mmprolong_jax.train --config configs/ablations/ocr_needle.py
--workdir /ckpt/abl_ocr_needle` with the same overrides). Shard set `ocr_needle`. Data: 140,655
samples, 42.9 pages and 85.4K tokens on average, 12.01B tokens (Table 10c). Loss positions: up
to three pages of text per instance, budgeted at 1/32 of the batch.

Reported (MMLB-D / LD-URL / SLIDE):
  Table 1   64K 40.07 / 28.77 / 68.00, avg 45.61;  128K 22.75 / 37.24 / 66.00, avg 42.00;
            overall 43.80 (-6.8). After a 5B-token SFT stage (ocr_sft_stage2.py:needle): 52.44.
"""
from configs import final


def get_config():
  c = final.set_mixture(final.get_config(), {"ocr_needle": 1.0})
  c.train.max_loss_tokens = final.loss_positions(c.data.global_batch_tokens, 1 / 32)
  return c
