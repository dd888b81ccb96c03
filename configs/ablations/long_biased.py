"""Sequence-length ablation (Section 5.1, Table 14): one VQA task on *long-biased* data.

  configs/ablations/long_biased.py:extract_single | :extract_multi | :reasoning

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/ablations/long_biased.py:extract_multi \\
      /ckpt/abl_lb_extract_multi --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted \\
      --config.data.root=/data/long_biased_shards

(on every node: `python -m mmprolong_jax.train --config
configs/ablations/long_biased.py:extract_multi --workdir /ckpt/abl_lb_extract_multi` with the same
overrides). The long-biased shards hold the same tasks synthesised from 50-100 page documents:
114.3K tokens per sample on average, 83.9% of samples >= 100K tokens vs 23.6% for pool-native
(Tables 10b, 11). Build them into their own root; the set names are the task names. The
pool-native counterparts are extract_single.py, extract_multi.py and reasoning.py.

Reported (Table 14, long-biased rows). Columns: 64K MMLB-D / LD-URL / SLIDE / avg | 128K the
same | overall (pool-native overall):
  extract_single   31.47 55.88 75.00 54.12 | 29.48 59.40 75.00 54.63 | 54.37  (55.69)
  extract_multi    36.29 56.75 80.00 57.68 | 30.72 55.79 81.00 55.84 | 56.76  (56.90)
  reasoning        32.00 55.79 79.00 55.60 | 28.74 58.22 75.00 53.98 | 54.79  (56.47)
"""
from configs import final

ARGS = ("extract_single", "extract_multi", "reasoning")


def get_config(arg="extract_multi"):
  if arg not in ARGS:
    raise ValueError(f"long_biased.py:{arg}: choose one of {ARGS}")
  return final.set_mixture(final.get_config(), {arg: 1.0}, root="/path/to/long_biased_shards")
