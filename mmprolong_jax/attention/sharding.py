"""How ring and Ulysses lay attention inputs over the mesh."""
import math

import jax
from jax.sharding import PartitionSpec as P

from mmprolong_jax.attention.config import AttentionConfig
from mmprolong_jax.parallel.mesh import BATCH_AXES, axis_size

SEQ_AXIS = "sequence"
HEAD_AXIS = "tensor"


def resolve_mesh(cfg: AttentionConfig):
  mesh = cfg.mesh if cfg.mesh is not None else jax.sharding.get_abstract_mesh()
  if mesh.empty or SEQ_AXIS not in mesh.axis_names:
    raise ValueError(f"Backend {cfg.backend!r} needs a mesh with a {SEQ_AXIS!r} axis: pass "
                     f"AttentionConfig(mesh=...) or call inside jax.set_mesh; got {mesh}.")
  return mesh


def seq_parallel_specs(mesh, cfg: AttentionConfig, q_shape, num_kv_heads: int):
  """(spec of [B, T, heads, D] arrays, spec of [B, T] arrays), after checking divisibility."""
  B, T, H, _ = q_shape
  batch_axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  batch_shards = math.prod(axis_size(mesh, a) for a in batch_axes)
  sp = axis_size(mesh, SEQ_AXIS)
  tp = axis_size(mesh, HEAD_AXIS) if cfg.shard_heads else 1
  if B % batch_shards:
    raise ValueError(f"Batch {B} is not divisible by the {batch_axes} mesh axes ({batch_shards}).")
  if T % sp:
    raise ValueError(f"Sequence length {T} is not divisible by the {SEQ_AXIS!r} axis ({sp}).")
  if tp > 1 and (H % tp or num_kv_heads % tp):
    raise ValueError(f"{H} query / {num_kv_heads} kv heads do not split over the {HEAD_AXIS!r} "
                     f"axis ({tp}); set shard_heads=False or change the mesh.")
  heads = HEAD_AXIS if tp > 1 else None
  return P(batch_axes, SEQ_AXIS, heads, None), P(batch_axes, SEQ_AXIS)
