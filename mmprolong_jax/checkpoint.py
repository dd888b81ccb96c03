"""Training checkpoints: Orbax CheckpointManager (async, keep-N, atomic step folders).

Each step folder holds `params` (the same nested layout as a model checkpoint, so
`convert.to_hf --ckpt WORKDIR` works on a training run), `opt_state`, and `data` (the loader's
iterator state as JSON). The model config is written once to WORKDIR/model_config.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from mmprolong_jax import params as params_lib
from mmprolong_jax.train_step import TrainState


class Checkpointer:

  def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True):
    self.dir = Path(workdir).absolute() / "checkpoints"
    self.manager = ocp.CheckpointManager(
        self.dir, item_names=("params", "opt_state", "data"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState, data_state: dict, force: bool = False) -> bool:
    return self.manager.save(step, force=force, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params_lib.nest(state.params)),
        opt_state=ocp.args.StandardSave(state.opt_state),
        data=ocp.args.JsonSave(data_state)))

  def restore(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:
    """Restores onto the shardings of `abstract_state` (ShapeDtypeStructs with .sharding)."""
    out = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(params_lib.nest(abstract_state.params)),
        opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
        data=ocp.args.JsonRestore()))
    state = TrainState(params_lib.unnest(out.params), out.opt_state,
                       jax.numpy.asarray(step, jax.numpy.int32))
    return state, out.data

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def write_model_config(workdir: str | Path, cfg) -> None:
  path = Path(workdir) / params_lib.CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(cfg.to_dict(), indent=2))
