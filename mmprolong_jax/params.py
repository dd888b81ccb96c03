"""Parameters as flat {dotted path: array} dicts, model (de)materialization and the on-disk
model checkpoint (an Orbax tree under `DIR/params` + `DIR/model_config.json`).

Training checkpoints keep the same `params` item inside each step folder, so every reader here
also accepts a training workdir (it picks the latest step).
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmprolong_jax.model.config import ModelConfig

CONFIG_FILE = "model_config.json"


def _path_str(path) -> str:
  return ".".join(str(p) for p in path)


def flat_params(model: nnx.Module) -> dict[str, jax.Array]:
  """{dotted path: value} of every nnx.Param of the model."""
  return {_path_str(p): v.get_value() for p, v in nnx.state(model, nnx.Param).flat_state()}


def abstract_model(cfg: ModelConfig, **model_kwargs):
  """The model with ShapeDtypeStruct leaves: no memory, no random init."""
  from mmprolong_jax.model.qwen2_5_vl import Qwen2_5_VL
  return nnx.eval_shape(lambda: Qwen2_5_VL(cfg, nnx.Rngs(0), **model_kwargs))


def model_from_flat(cfg: ModelConfig, flat: dict[str, np.ndarray], **model_kwargs):
  """Builds the model and fills it with `flat` (cast to cfg.param_dtype); shapes must match."""
  model = abstract_model(cfg, **model_kwargs)
  state = nnx.state(model, nnx.Param)
  expected = {_path_str(p): v.get_value() for p, v in state.flat_state()}
  missing = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  if missing or extra:
    raise ValueError(f"parameter tree mismatch: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
                     f" unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
  for path, var in state.flat_state():
    key = _path_str(path)
    want = expected[key]
    if tuple(flat[key].shape) != tuple(want.shape):
      raise ValueError(f"parameter {key}: shape {tuple(flat[key].shape)} != expected {tuple(want.shape)}")
    var.set_value(jnp.asarray(flat[key], dtype=cfg.param_dtype))
  nnx.update(model, state)
  return model


def nest(flat: dict[str, object]) -> dict:
  out: dict = {}
  for key, value in flat.items():
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


def unnest(tree: dict, prefix: str = "") -> dict[str, object]:
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(unnest(v, key + "."))
    else:
      out[key] = v
  return out


def save_model_checkpoint(directory: str | Path, flat: dict[str, np.ndarray], cfg: ModelConfig):
  """Writes params (as given: numpy or jax arrays) and the model config."""
  import orbax.checkpoint as ocp
  directory = Path(directory).absolute()
  directory.mkdir(parents=True, exist_ok=True)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(directory / "params", nest(flat), force=True)
  ckpt.wait_until_finished()
  (directory / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2))


def resolve_params_dir(directory: str | Path) -> tuple[Path, Path]:
  """(params dir, folder holding model_config.json) for a model checkpoint or a training workdir."""
  directory = Path(directory).absolute()
  if (directory / "params").is_dir() and (directory / CONFIG_FILE).exists():
    return directory / "params", directory
  steps = sorted((p for p in (directory / "checkpoints").glob("*") if p.name.isdigit()),
                 key=lambda p: int(p.name)) if (directory / "checkpoints").is_dir() else []
  if steps and (directory / CONFIG_FILE).exists():
    return steps[-1] / "params", directory
  raise FileNotFoundError(f"{directory} is neither a model checkpoint (params/ + {CONFIG_FILE}) nor "
                          "a training workdir with checkpoints/<step>/params")


def load_model_checkpoint(directory: str | Path) -> tuple[ModelConfig, dict[str, np.ndarray]]:
  """Reads params as host numpy arrays in their stored dtype."""
  import orbax.checkpoint as ocp
  params_dir, cfg_dir = resolve_params_dir(directory)
  cfg = ModelConfig.from_dict(json.loads((cfg_dir / CONFIG_FILE).read_text()))
  ckpt = ocp.StandardCheckpointer()
  meta = ckpt.metadata(params_dir).item_metadata.tree
  target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), meta)
  return cfg, unnest(ckpt.restore(params_dir, target))


def state_from_flat(flat: dict[str, jax.Array]) -> nnx.State:
  """An nnx.State (for nnx.merge) from a flat {dotted path: array} dict."""
  def parts(key):
    return tuple(int(p) if p.isdigit() else p for p in key.split("."))
  return nnx.State.from_flat_path({parts(k): v for k, v in flat.items()})
