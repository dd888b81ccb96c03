"""mRoPE base ablation (Appendix G.3, Table 16): base 2e6 / 4e6 / 8e6 on each single VQA task.

The original base is 1e6 (32K window); Dynamic-NTK for 32K -> 128K gives 4e6, the recipe's value,
so TASK_4e6 is the same run as configs/ablations/TASK.py.

  configs/ablations/rope_base.py:TASK_BASE   TASK in extract_single, extract_multi, reasoning;
                                             BASE in 2e6, 4e6, 8e6

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/ablations/rope_base.py:extract_multi_8e6 \\
      /ckpt/abl_rope_em_8e6 --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted \\
      --config.data.root=/data/shards

(on every node: `python -m mmprolong_jax.train --config
configs/ablations/rope_base.py:extract_multi_8e6 --workdir /ckpt/abl_rope_em_8e6` with the same
overrides).

Reported (Table 16). Columns: 64K MMLB-D / LD-URL / SLIDE / avg | 128K the same | overall.
  extract_single 2e6   35.52 57.07 78.00 56.86 | 28.87 58.65 78.00 55.17 | 56.02
                 4e6   33.85 59.73 77.00 56.86 | 30.89 55.69 77.00 54.53 | 55.69
                 8e6   33.63 52.73 79.00 55.12 | 30.83 58.10 79.00 55.98 | 55.55
  extract_multi  2e6   31.86 63.01 76.00 56.95 | 31.60 52.31 79.00 54.30 | 55.63
                 4e6   32.75 64.32 77.00 58.02 | 31.50 54.82 81.00 55.77 | 56.90
                 8e6   33.36 58.91 79.00 57.09 | 29.25 54.00 81.00 54.75 | 55.92
  reasoning      2e6   33.04 57.20 77.00 55.75 | 33.44 58.66 77.00 56.36 | 56.05
                 4e6   32.67 60.34 79.00 57.33 | 29.23 61.61 76.00 55.62 | 56.47
                 8e6   34.33 57.86 73.00 55.07 | 34.26 54.61 72.00 53.62 | 54.34
  (2e6 and 4e6 are on par; 8e6 gives no consistent gain.)
"""
import itertools

from configs import final

TASKS = ("extract_single", "extract_multi", "reasoning")
BASES = ("2e6", "4e6", "8e6")
ARGS = tuple(f"{t}_{b}" for t, b in itertools.product(TASKS, BASES))


def get_config(arg="extract_multi_2e6"):
  if arg not in ARGS:
    raise ValueError(f"rope_base.py:{arg}: choose one of {ARGS}")
  task, rope_base = arg.rsplit("_", 1)
  c = final.set_mixture(final.get_config(), {task: 1.0})
  c.model.rope_theta = float(rope_base)
  return c
