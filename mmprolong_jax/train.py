"""Continued pre-training entry point.

  python -m mmprolong_jax.train --config configs/final.py --workdir /ckpt/run1 \
      [--config.optim.peak_lr=2e-5 ...]

Resumes automatically from the latest checkpoint in --workdir. SIGTERM (preemption) saves a
checkpoint before exiting; a non-finite loss stops the run after saving the last good state.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, logs and TensorBoard events go here.")
flags.DEFINE_integer("stop_after", 0, "Stop (with a checkpoint) after this many steps of this "
                     "invocation; 0 runs to the end. For tests and staged runs.")


def maybe_initialize_distributed(config):
  """jax.distributed.initialize for multi-process runs (SLURM, TPU slices, or explicit env)."""
  import jax
  explicit = str(config.get("distributed", "auto")).lower()
  multi = (int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "JAX_COORDINATOR_ADDRESS" in os.environ
           or "TPU_WORKER_HOSTNAMES" in os.environ)
  if explicit not in ("auto", "true", "false"):
    raise ValueError(f"config.distributed must be auto, true or false, got {explicit!r}")
  if explicit == "true" or (explicit == "auto" and multi):
    jax.distributed.initialize()
    logging.info("process %d of %d", jax.process_index(), jax.process_count())


def run(config, workdir: str, stop_after: int = 0) -> dict:
  """Trains; returns the last logged metrics (used by tests and the demo)."""
  import jax

  from mmprolong_jax import checkpoint as ckpt_lib
  from mmprolong_jax import metrics as metrics_lib
  from mmprolong_jax import setup
  from mmprolong_jax.flops import step_flops
  from mmprolong_jax.data.sources import make_source, steps_from_budget
  from mmprolong_jax.optim import lr_schedule
  from mmprolong_jax.data.schema import TASKS
  from mmprolong_jax.train_step import make_train_step

  maybe_initialize_distributed(config)
  workdir = Path(workdir)
  mesh = setup.mesh_from_config(config)
  cfg = setup.model_config(config)
  total_steps = steps_from_budget(config.train.token_budget, config.data.global_batch_tokens)
  with jax.set_mesh(mesh):
    graphdef, tx, state, state_shard = setup.init_state(config, cfg, mesh, total_steps)
  print(setup.plan_text(config, cfg, mesh, state, state_shard), flush=True)
  print(f"steps: {total_steps} ({config.train.token_budget:.3g} tokens / "
        f"{config.data.global_batch_tokens} per step)", flush=True)

  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                       async_save=config.train.async_checkpointing)
  ckpt_lib.write_model_config(workdir, cfg)
  source = make_source(config, cfg, process_index=jax.process_index(),
                       process_count=jax.process_count(), vision_shards=mesh.shape["sequence"])
  start = checkpointer.latest_step()
  if start is not None:
    state, data_state = checkpointer.restore(start, setup.abstract_state(state, state_shard))
    source.set_state(data_state)
    print(f"resumed from step {start}", flush=True)
  start = start or 0

  task_names = list(TASKS)  # task_id in batches indexes this tuple
  step_fn = make_train_step(graphdef, tx, config.train.max_loss_tokens, len(task_names),
                            config.train.grad_accum_steps)
  batch_spec = None
  train_step = None
  sp = mesh.shape["sequence"]
  writer = metrics_lib.MetricsWriter(workdir, config.train.get("wandb_project"))

  preempted = {"flag": False}
  signal.signal(signal.SIGTERM, lambda *_: preempted.update(flag=True))

  last, t_last, flops_acc, tokens_acc = {}, time.perf_counter(), 0.0, 0
  step = start
  ran = 0
  try:
    while step < total_steps:
      batch = next(source)
      if config.attention.backend == "ring":
        batch = setup.zigzag_batch(batch, sp)
      flops_acc += sum(step_flops(cfg, batch).values())
      tokens_acc += int((batch["segment_ids"] > 0).sum())
      if train_step is None:
        batch_spec = setup.sharding.batch_specs(batch)
        in_shard = {k: jax.sharding.NamedSharding(mesh, s) for k, s in batch_spec.items()}
        train_step = jax.jit(step_fn, in_shardings=(state_shard, in_shard),
                             out_shardings=(state_shard, None), donate_argnums=(0,))
      device_batch = {k: jax.make_array_from_process_local_data(in_shard[k], v)
                      for k, v in batch.items()}
      with jax.set_mesh(mesh):
        new_state, m = train_step(state, device_batch)
      state = new_state
      if not bool(m["finite"]):
        checkpointer.save(step, state, source.get_state(), force=True)
        checkpointer.wait()
        raise FloatingPointError(
            f"non-finite loss/gradient ({float(m['loss'])}, {float(m['grad_norm'])}) at step "
            f"{step + 1}; the update was skipped and the last good state saved as step {step} in "
            f"{checkpointer.dir}. Lower optim.peak_lr or inspect the data of this step.")
      step += 1
      ran += 1
      if bool(m["loss_overflow"]):
        checkpointer.save(step, state, source.get_state(), force=True)
        raise ValueError(f"step {step}: more loss positions than train.max_loss_tokens="
                         f"{config.train.max_loss_tokens}; raise it (e.g. for OCR data).")
      if step % config.train.log_every == 0 or step == total_steps:
        jax.block_until_ready(state.step)
        dt = time.perf_counter() - t_last
        last = metrics_lib.summarize(m, step=step, lr=float(lr_schedule(config.optim, total_steps)(step)),
                                     seconds=dt, flops=flops_acc, tokens=tokens_acc,
                                     n_devices=mesh.devices.size, task_names=task_names)
        writer.write(step, last)
        t_last, flops_acc, tokens_acc = time.perf_counter(), 0.0, 0
      done = step == total_steps or (stop_after and ran >= stop_after)
      if step % config.train.checkpoint_every == 0 or done or preempted["flag"]:
        checkpointer.save(step, state, source.get_state(), force=True)
      if preempted["flag"]:
        print(f"SIGTERM: saved step {step}, exiting", flush=True)
        break
      if done:
        break
  finally:
    checkpointer.close()
    writer.close()
  return last


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
  if FLAGS.workdir is None:
    sys.exit("--workdir is required")
  run(FLAGS.config, FLAGS.workdir, FLAGS.stop_after)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
