"""Single-task ablation: reasoning only (pool-native lengths, mRoPE base 4e6, 5B tokens).

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/ablations/reasoning.py /ckpt/abl_reasoning \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted --config.data.root=/data/shards

(on every node: `python -m mmprolong_jax.train --config configs/ablations/reasoning.py
--workdir /ckpt/abl_reasoning` with the same overrides). Data: 59,403 samples, 5.06B tokens
(Table 10a).

Reported (MMLB-D / LD-URL / SLIDE):
  Table 1   64K 32.67 / 60.34 / 79.00, avg 57.33;  128K 29.23 / 61.61 / 76.00, avg 55.62;
            overall 56.47 (+5.9).
  This run is also the 0:10 row of Table 2, the pool-native row of Table 14 and the 4e6 row of
  Table 16.
"""
from configs import final


def get_config():
  return final.set_mixture(final.get_config(), {"reasoning": 1.0})
