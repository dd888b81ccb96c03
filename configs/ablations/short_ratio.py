"""Short-data ratio (Section 5.3, Tables 3 and 15): P% LLaVA-OneVision rows, the rest 8:2 long data.

  configs/ablations/short_ratio.py:0 | :20 | :40 | :60 | :80
  (0 is configs/final.py, 40 is configs/final_short40.py)

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/ablations/short_ratio.py:20 /ckpt/abl_short20 \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted --config.data.root=/data/shards

(on every node: `python -m mmprolong_jax.train --config configs/ablations/short_ratio.py:20
--workdir /ckpt/abl_short20` with the same overrides). The token budget stays 5B, so short data
displaces long data. Shard set `short` (full LLaVA-OneVision instruction data, Appendix F) next
to the three VQA sets. Packing caveat as in configs/final_short40.py.

Reported. Long-document VQA (Table 15); columns: 64K MMLB-D / LD-URL / SLIDE / avg | 128K the
same | overall:
  0%    36.00 62.69 80.00 59.56 | 34.19 56.33 77.00 55.84 | 57.70
  20%   32.33 57.61 78.00 55.98 | 31.49 56.00 78.00 55.16 | 55.57
  40%   34.90 56.65 80.00 57.19 | 30.19 61.30 79.00 56.83 | 57.01
  60%   33.62 57.53 81.00 57.38 | 31.93 58.61 79.00 56.52 | 56.95
  80%   33.90 57.60 80.00 57.17 | 31.93 55.17 81.00 56.03 | 56.60
Short context (Table 3); columns: MMBench / RealWorldQA / MMMU / MMMU-Pro / MathVista / OCRBench |
avg:
  0%    80.00 72.68 49.33 36.65 68.70 85.50 | 65.48
  20%   81.82 70.98 54.33 36.47 68.30 87.30 | 66.53
  40%   81.25 70.46 52.67 37.05 68.30 87.10 | 66.14
  60%   81.66 69.93 52.67 37.51 67.80 86.70 | 66.05
  80%   81.14 69.67 52.11 37.40 69.30 87.40 | 66.17
  Qwen2.5-VL-7B 80.68 68.76 53.00 37.80 70.50 88.10 | 66.47
"""
from configs import final

ARGS = ("0", "20", "40", "60", "80")


def get_config(arg="20"):
  arg = arg.rstrip("%")
  if arg not in ARGS:
    raise ValueError(f"short_ratio.py:{arg}: choose one of {ARGS}")
  c = final.get_config()
  return final.with_short_data(c, int(arg) / 100) if arg != "0" else c
