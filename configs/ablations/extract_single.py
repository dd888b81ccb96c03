"""Single-task ablation: extract-single only (pool-native lengths, mRoPE base 4e6, 5B tokens).

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/ablations/extract_single.py \\
      /ckpt/abl_extract_single \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted \\
      --config.data.root=/data/shards

(on every node: `python -m mmprolong_jax.train --config configs/ablations/extract_single.py
--workdir /ckpt/abl_extract_single` with the same overrides). Data: 59,055 samples, 5.04B tokens
(Table 10a).

Reported (MMLB-D / LD-URL / SLIDE):
  Table 1   64K 33.85 / 59.73 / 77.00, avg 56.86;  128K 30.89 / 55.69 / 77.00, avg 54.53;
            overall 55.69 (+5.1 over Qwen2.5-VL-7B's 50.59).
  This run is also the pool-native row of Table 14 and the 4e6 row of Table 16.
"""
from configs import final


def get_config():
  return final.set_mixture(final.get_config(), {"extract_single": 1.0})
