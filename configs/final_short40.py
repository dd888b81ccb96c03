"""Table 6's alternative: 60% long-document VQA (still 40/40/20) + 40% LLaVA-OneVision short data.

The study's pick when short-context ability matters more than the last point of long-context
score. Everything else is configs/final.py.

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/final_short40.py /ckpt/mmprolong_short40 \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted --config.data.root=/data/shards

i.e. `python -m mmprolong_jax.train --config configs/final_short40.py --workdir ... (same
overrides)` on every node. Shard sets under data.root: extract_single, extract_multi, reasoning
and short (`python -m data_tools.short`, then build_shards).

Packing caveat: best-fit packing puts dozens of short conversations in one 128K row, while the
cuDNN packed path handles at most `attention.max_segments` segments per row and ignores the rest.
Check `segments_per_row_max` in the short set's stats.json; if it exceeds max_segments, run with
`--config.attention.local_backend=blockwise` (any segment count, slower).

Reported (40% row):
  Table 15  64K 34.90 / 56.65 / 80.00, avg 57.19;  128K 30.19 / 61.30 / 79.00, avg 56.83;
            overall 57.01 (pure long data: 57.70).
  Table 3   MMBench 81.25, RealWorldQA 70.46, MMMU 52.67, MMMU-Pro 37.05, MathVista 68.30,
            OCRBench 87.10, avg 66.14 (pure long data 65.48; Qwen2.5-VL-7B 66.47).
"""
from configs import final


def get_config():
  return final.with_short_data(final.get_config(), 0.4)
