"""Turns a training config into a mesh, model, sharded state and data source."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from mmprolong_jax import memory, params as params_lib
from mmprolong_jax.attention import AttentionConfig, zigzag_permutation
from mmprolong_jax.model import config as config_lib
from mmprolong_jax.model.qwen2_5_vl import Qwen2_5_VL
from mmprolong_jax.parallel import sharding
from mmprolong_jax.parallel.mesh import make_mesh
from mmprolong_jax.train_step import TrainState

PRESETS = {"tiny": config_lib.tiny, "qwen2_5_vl_7b": config_lib.qwen2_5_vl_7b,
           "qwen2_5_vl_3b": config_lib.qwen2_5_vl_3b}


def model_config(config) -> config_lib.ModelConfig:
  """From the init checkpoint's model_config.json when given, else a preset; then overrides."""
  m = config.model
  if config.get("init_checkpoint"):
    _, cfg_dir = params_lib.resolve_params_dir(config.init_checkpoint)
    cfg = config_lib.ModelConfig.from_dict(json.loads((cfg_dir / params_lib.CONFIG_FILE).read_text()))
  else:
    if m.preset not in PRESETS:
      raise ValueError(f"unknown model.preset {m.preset!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[m.preset](**({"tie_word_embeddings": m.tie_word_embeddings}
                               if m.preset == "tiny" and "tie_word_embeddings" in m else {}))
  cfg = cfg.replace(dtype=m.dtype, param_dtype=m.param_dtype, remat_policy=m.remat_policy,
                    vision_remat_policy=m.get("vision_remat_policy", ""),
                    mlp_chunks=int(m.get("mlp_chunks", 1)),
                    scan_layers=bool(m.get("scan_layers", True)),
                    attention_backend=config.attention.backend)
  if m.get("overrides"):        # top-level ModelConfig fields, e.g. special token ids
    cfg = cfg.replace(**dict(m.overrides))
  if m.get("text_overrides"):   # TextConfig fields, e.g. vocab_size
    cfg = cfg.replace_text(**dict(m.text_overrides))
  if m.get("vision_overrides"):  # VisionConfig fields, e.g. depth for reduced-depth benchmarks
    cfg = cfg.replace_vision(**{k: tuple(v) if isinstance(v, (list, tuple)) else v
                                for k, v in dict(m.vision_overrides).items()})
  if m.get("rope_theta"):
    cfg = cfg.replace_text(rope_theta=float(m.rope_theta))
  if m.get("max_position_embeddings"):
    cfg = cfg.replace_text(max_position_embeddings=int(m.max_position_embeddings))
  return cfg


def attention_configs(config, mesh) -> tuple[AttentionConfig, AttentionConfig]:
  """(LLM attention, vision attention). The vision tower runs each (row, sequence shard) on its
  own device, so it always uses a local kernel."""
  a = config.attention
  local = a.local_backend
  llm = AttentionConfig(backend=a.backend, mesh=mesh, local_backend=local,
                        layout="zigzag" if a.backend == "ring" else "natural",
                        block_q=a.block_q, block_kv=a.block_kv, max_segments=a.max_segments)
  # The tower attends within window slots and image rows (model/vision.py), so its segments
  # per row are the images sharing an image row.
  vision = AttentionConfig(backend=a.vision_backend, block_q=a.vision_block, block_kv=a.vision_block,
                           max_segments=int(config.data.get("images_per_row", 1)))
  return llm, vision


def build_model(cfg, config, mesh):
  llm_attn, vis_attn = attention_configs(config, mesh)
  return nnx.eval_shape(lambda: Qwen2_5_VL(cfg, nnx.Rngs(0), llm_attn, vis_attn))


def param_shardings(flat_abstract: dict, mesh) -> dict:
  return {k: sharding.param_sharding(k, v.shape, mesh) for k, v in flat_abstract.items()}


def _opt_shardings(abstract_opt, flat_abstract: dict, param_shard: dict, mesh):
  """Optimizer leaves that mirror a parameter (same key, same shape) take its sharding;
  everything else (step counts) is replicated."""
  def pick(path, leaf):
    for entry in reversed(path):
      key = getattr(entry, "key", None)
      if isinstance(key, str) and key in param_shard and leaf.shape == flat_abstract[key].shape:
        return param_shard[key]
    return NamedSharding(mesh, P())
  return jax.tree_util.tree_map_with_path(pick, abstract_opt)


def init_state(config, cfg, mesh, total_steps: int):
  """Builds the sharded TrainState (random init or the init checkpoint) and the optimizer:
  `memory.abstract_state`'s shapes and shardings, then the values."""
  graphdef, tx, abstract, state_shard = memory.abstract_state(config, cfg, mesh, total_steps)
  p_shard = state_shard.params
  if config.get("init_checkpoint"):
    _, flat_np = params_lib.load_model_checkpoint(config.init_checkpoint)
    missing = sorted(set(p_shard) - set(flat_np))
    if missing:
      raise ValueError(f"init checkpoint lacks {missing[:3]}")
    flat = {k: jax.device_put(np.asarray(flat_np[k]).astype(cfg.param_dtype), p_shard[k])
            for k in p_shard}
    del flat_np
  else:
    def random_init():
      m = Qwen2_5_VL(cfg, nnx.Rngs(config.seed))
      return params_lib.flat_params(m)
    flat = jax.jit(random_init, out_shardings=p_shard)()

  opt_state = jax.jit(tx.init, out_shardings=state_shard.opt_state)(flat)
  state = TrainState(flat, opt_state, jnp.zeros((), jnp.int32))
  return graphdef, tx, state, state_shard


def abstract_state(state: TrainState, shardings: TrainState) -> TrainState:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def bytes_per_device(tree, shardings) -> int:
  total = 0
  for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
    shard = s.shard_shape(x.shape)
    total += math.prod(shard) * np.dtype(x.dtype).itemsize
  return total


def zigzag_batch(batch: dict, sp: int) -> dict:
  """Permutes the token axis of every [.., T] array into ring's load-balanced order."""
  t = batch["input_ids"].shape[1]
  perm, _ = zigzag_permutation(t, sp)
  out = {}
  for k, v in batch.items():
    if k == "positions":
      out[k] = v[:, :, perm]
    elif k in ("input_ids", "segment_ids", "targets", "loss_mask", "task_id"):
      out[k] = v[:, perm]
    else:
      out[k] = v
  out["token_pos"] = np.broadcast_to(perm.astype(np.int32), batch["input_ids"].shape).copy()
  return out


def mesh_from_config(config):
  """All devices, or the first prod(axes) of them when every axis is fixed and fewer are
  needed (e.g. a 1-device run on an 8-device host)."""
  sizes = [int(config.mesh.get(a, 1)) for a in ("data", "fsdp", "sequence", "tensor")]
  if -1 not in sizes and math.prod(sizes) < jax.device_count():
    return make_mesh(config.mesh, jax.devices()[:math.prod(sizes)])
  return make_mesh(config.mesh)


def plan_text(config, cfg, mesh, state, state_shard) -> str:
  p = bytes_per_device(state.params, state_shard.params)
  o = bytes_per_device(state.opt_state, state_shard.opt_state)
  a = memory.activation_bytes_estimate(cfg, config, mesh)
  n = sum(math.prod(x.shape) for x in jax.tree.leaves(state.params))
  gib = 2**30
  return "\n".join([
      f"mesh: {dict(mesh.shape)} over {mesh.devices.size} devices ({jax.devices()[0].device_kind})",
      f"model: {n / 1e9:.3f}B params, dtype {cfg.dtype}, params {cfg.param_dtype}, "
      f"rope_theta {cfg.text.rope_theta:g}, remat {cfg.remat_policy}"
      + (f" (vision {cfg.vision_remat})" if cfg.vision_remat != cfg.remat_policy else ""),
      f"attention: {config.attention.backend} (local kernel {config.attention.local_backend})",
      f"per device: params {p / gib:.2f} GiB, optimizer {o / gib:.2f} GiB, "
      f"activations (est.) {a / gib:.2f} GiB at max_len {config.data.max_len}",
      memory.plan_line(cfg, config, mesh, p, o),
  ])
