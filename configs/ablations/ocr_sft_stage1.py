"""OCR followed by SFT (Table 1, "(SFT)" rows), stage 1: 5B tokens of OCR LongPT.

  configs/ablations/ocr_sft_stage1.py:full     same run as ocr_full.py
  configs/ablations/ocr_sft_stage1.py:needle   same run as ocr_needle.py

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/ablations/ocr_sft_stage1.py:full \\
      /ckpt/ocr_full_stage1 \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted --config.data.root=/data/shards

(on every node: `python -m mmprolong_jax.train --config configs/ablations/ocr_sft_stage1.py:full
--workdir /ckpt/ocr_full_stage1` with the same overrides). Then stage 2 starts from this workdir:
configs/ablations/ocr_sft_stage2.py.

Reported: after stage 1 alone, Table 1's OCR-full (33.17) and OCR-needle (43.80) rows; after
both stages, the "(SFT)" rows (53.84 and 52.44, see ocr_sft_stage2.py).
"""
from configs.ablations import ocr_full, ocr_needle

ARGS = ("full", "needle")


def get_config(arg="full"):
  if arg not in ARGS:
    raise ValueError(f"ocr_sft_stage1.py:{arg}: choose one of {ARGS}")
  return (ocr_full if arg == "full" else ocr_needle).get_config()
