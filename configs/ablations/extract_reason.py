"""Long-data mixture grid (Section 5.2, Table 2): extraction-to-reasoning ratio E:R, 0:10 ... 10:0.

Extraction is split evenly between extract-single and extract-multi, so E:R gives weights
(E/20, E/20, R/10). 8:2 is the final recipe (configs/final.py); 0:10 is reasoning.py.

  configs/ablations/extract_reason.py:0_10 | :2_8 | :4_6 | :6_4 | :8_2 | :10_0  (or :6:4)

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/ablations/extract_reason.py:6_4 \\
      /ckpt/abl_er_6_4 --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted \\
      --config.data.root=/data/shards

(on every node: `python -m mmprolong_jax.train --config configs/ablations/extract_reason.py:6_4
--workdir /ckpt/abl_er_6_4` with the same overrides).

Reported (Table 2). Columns: 64K MMLB-D / LD-URL / SLIDE / avg | 128K the same | overall.
  0:10   32.67 60.34 79.00 57.33 | 29.23 61.61 76.00 55.62 | 56.47
  2:8    32.04 65.02 77.00 58.02 | 27.37 61.34 74.00 54.24 | 56.13
  4:6    31.57 59.49 78.00 56.35 | 32.95 53.39 79.00 55.11 | 55.73
  6:4    32.52 64.86 79.00 58.79 | 32.72 55.53 79.00 55.75 | 57.27
  8:2    36.00 62.69 80.00 59.56 | 34.19 56.33 77.00 55.84 | 57.70   (the recipe)
  10:0   33.98 59.48 79.00 57.49 | 32.12 59.07 78.00 56.40 | 56.94
"""
from configs import final

ARGS = ("0_10", "2_8", "4_6", "6_4", "8_2", "10_0")


def get_config(arg="8_2"):
  arg = arg.replace(":", "_")
  if arg not in ARGS:
    raise ValueError(f"extract_reason.py:{arg}: choose one of {ARGS}")
  extraction = int(arg.split("_")[0]) / 10
  return final.set_mixture(final.get_config(), {
      "extract_single": extraction / 2, "extract_multi": extraction / 2,
      "reasoning": round(1 - extraction, 6)})
