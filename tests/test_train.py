"""The trainer on 8 simulated CPU devices: sharded == single device, exact resume, preemption,
non-finite loss handling."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from configs import tiny_cpu
from mmprolong_jax import train

ROOT = Path(__file__).parents[1]


def _config(**mesh):
  c = tiny_cpu.get_config()
  c.train.token_budget = 6 * c.data.global_batch_tokens
  c.train.checkpoint_every = 3
  for k, v in mesh.items():
    c.mesh[k] = v
  return c


def _losses(workdir):
  rows = [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows}


def test_sharded_run_matches_single_device(tmp_path):
  sharded = _config(data=2, fsdp=2, sequence=2)
  single = _config(data=1, fsdp=1, sequence=1)
  single.attention.backend = "reference"
  train.run(sharded, tmp_path / "sharded")
  train.run(single, tmp_path / "single")
  a, b = _losses(tmp_path / "sharded"), _losses(tmp_path / "single")
  assert sorted(a) == list(range(1, 7))
  np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=2e-5)


def _spawn(workdir, *extra):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "-m", "mmprolong_jax.train", "--config", "configs/tiny_cpu.py",
         "--workdir", str(workdir), "--config.train.token_budget=12288",
         "--config.train.checkpoint_every=4", *extra]
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(path: Path, proc, timeout=300):
  t0 = time.time()
  while not path.exists():
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    assert time.time() - t0 < timeout
    time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_losses(tmp_path):
  full = _spawn(tmp_path / "full")
  assert full.wait() == 0, full.stdout.read().decode()[-3000:]
  victim = _spawn(tmp_path / "killed")
  _wait_for(tmp_path / "killed" / "checkpoints" / "4", victim)
  victim.send_signal(signal.SIGKILL)
  assert victim.wait() == -signal.SIGKILL
  resumed = _spawn(tmp_path / "killed")
  out = resumed.communicate()[0].decode()
  assert resumed.returncode == 0 and "resumed from step" in out, out[-3000:]
  a, b = _losses(tmp_path / "full"), _losses(tmp_path / "killed")
  for step in range(5, 13):
    assert a[step] == b[step], (step, a[step], b[step])


def test_resume_in_process_gives_identical_losses(tmp_path):
  c = _config(data=2, fsdp=2, sequence=2)
  train.run(c, tmp_path / "full")
  train.run(c, tmp_path / "split", stop_after=3)
  train.run(c, tmp_path / "split")
  a, b = _losses(tmp_path / "full"), _losses(tmp_path / "split")
  assert [a[s] for s in range(4, 7)] == [b[s] for s in range(4, 7)]


def test_sigterm_saves_and_exits(tmp_path):
  proc = _spawn(tmp_path / "w", "--config.train.checkpoint_every=1000")
  _wait_for(tmp_path / "w" / "metrics.jsonl", proc)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=300)[0].decode()
  assert proc.returncode == 0 and "SIGTERM: saved step" in out, out[-3000:]
  steps = [p.name for p in (tmp_path / "w" / "checkpoints").iterdir() if p.name.isdigit()]
  assert steps and int(steps[0]) < 12


def test_nonfinite_loss_stops_after_saving_last_good_state(tmp_path):
  c = _config(data=1, fsdp=1, sequence=1)
  c.optim.peak_lr = 1e35
  c.optim.grad_clip_norm = 0.0
  c.optim.warmup_fraction = 0.0
  with pytest.raises(FloatingPointError, match="update was skipped"):
    train.run(c, tmp_path / "w")
  from mmprolong_jax import params as params_lib
  _, flat = params_lib.load_model_checkpoint(tmp_path / "w")
  assert all(np.isfinite(v).all() for v in flat.values())


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
  whole = _config(data=1, fsdp=1, sequence=1)
  whole.attention.backend = "reference"
  whole.train.token_budget = 3 * whole.data.global_batch_tokens
  accum = whole.copy_and_resolve_references()
  accum.train.grad_accum_steps = 2
  train.run(whole, tmp_path / "whole")
  train.run(accum, tmp_path / "accum")
  a, b = _losses(tmp_path / "whole"), _losses(tmp_path / "accum")
  np.testing.assert_allclose([b[s] for s in (1, 2, 3)], [a[s] for s in (1, 2, 3)], rtol=2e-5)
