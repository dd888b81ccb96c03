"""All sharding rules in one place: parameters (FSDP + tensor), activations and batches.

Parameters: every matrix is split over 'fsdp' on its input dim and over 'tensor' on its output
dim (column-parallel) or the reverse (row-parallel: attention out and MLP down projections).
Embeddings split the vocabulary over 'fsdp'. Vectors (norm scales, biases) are replicated except
biases of column-parallel layers, which follow 'tensor'. The 'data' axis replicates parameters.
A dim that the axis size does not divide stays unsplit.
Activations: batch over ('data', 'fsdp'), tokens over 'sequence'.
"""
from __future__ import annotations

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

from mmprolong_jax.parallel.mesh import BATCH_AXES, axis_size

_ROW_PARALLEL = ("o_proj", "down_proj", "attn.proj")


def param_spec(path: str, shape: tuple[int, ...]) -> P:
  """Logical rule for one parameter (dotted path as in `params.flat_params`)."""
  leaf = path.rsplit(".", 1)[-1]
  if leaf == "embedding":
    return P("fsdp", None)
  if leaf == "kernel":
    if any(f".{name}." in f".{path}" for name in _ROW_PARALLEL):
      return P("tensor", "fsdp")
    return P("fsdp", "tensor")
  if leaf == "bias" and not any(f".{name}." in f".{path}" for name in _ROW_PARALLEL):
    return P("tensor")
  return P()


def fit_spec(spec: P, shape, mesh) -> P:
  """Drops axes that do not divide their dim."""
  out = []
  for dim, axis in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    out.append(axis if axis is None or dim % axis_size(mesh, axis) == 0 else None)
  return P(*out)


def param_sharding(path: str, shape, mesh) -> NamedSharding:
  return NamedSharding(mesh, fit_spec(param_spec(path, shape), shape, mesh))


BATCH_SPEC = P(BATCH_AXES, "sequence")
# The vision tower's rows are (batch row, sequence shard) pairs: see model/vision_layout.py.
VISION_ROW_AXES = BATCH_AXES + ("sequence",)
_VISION_SHARDED = ("patches", "window_segments", "pos_hw", "image_gather", "image_segments",
                   "image_scatter")


def batch_specs(batch) -> dict:
  """PartitionSpecs of the loader's batch arrays (see mmprolong_jax.data.loader)."""
  specs = {}
  for k, v in batch.items():
    if k == "positions":
      specs[k] = P(None, BATCH_AXES, "sequence")
    elif k in _VISION_SHARDED:
      specs[k] = P(BATCH_AXES, "sequence")  # dim 1: patches or the layout's shard axis
    elif k == "feature_slot":
      specs[k] = P(BATCH_AXES)
    else:
      specs[k] = BATCH_SPEC if getattr(v, "ndim", 0) >= 2 else P()
  return specs


def constrain(x, spec: P):
  """with_sharding_constraint when a mesh is set (jax.set_mesh), else a no-op."""
  if jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(x, spec)


def placed_spec(path: str, shape, lead: int = 0) -> P:
  """A parameter's own spec under the mesh set with jax.set_mesh; `lead` leading axes (layers
  stacked for a scan) stay unsplit."""
  mesh = jax.sharding.get_abstract_mesh()
  inner = tuple(shape[lead:])
  return P(*(None,) * lead, *fit_spec(param_spec(path, inner), inner, mesh))


def gathered_spec(path: str, shape) -> P:
  """A parameter's spec where it is used: its own without 'fsdp' (FSDP gathers the weight, a
  'tensor' split stays). Uses the mesh set with jax.set_mesh."""
  return P(*(None if a == "fsdp" else a for a in placed_spec(path, shape)))
