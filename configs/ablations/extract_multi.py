"""Single-task ablation: extract-multi only (pool-native lengths, mRoPE base 4e6, 5B tokens).

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/ablations/extract_multi.py \\
      /ckpt/abl_extract_multi \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted \\
      --config.data.root=/data/shards

(on every node: `python -m mmprolong_jax.train --config configs/ablations/extract_multi.py
--workdir /ckpt/abl_extract_multi` with the same overrides). Data: 59,316 samples, 5.06B tokens
(Table 10a).

Reported (MMLB-D / LD-URL / SLIDE):
  Table 1   64K 32.75 / 64.32 / 77.00, avg 58.02;  128K 31.50 / 54.82 / 81.00, avg 55.77;
            overall 56.90 (+6.3), the best single task.
  This run is also the pool-native row of Table 14 and the 4e6 row of Table 16.
"""
from configs import final


def get_config():
  return final.set_mixture(final.get_config(), {"extract_multi": 1.0})
