"""Device meshes with the project's fixed axes ('data', 'fsdp', 'sequence', 'tensor').

A mesh config is anything with integer fields `data`, `fsdp`, `sequence`, `tensor`
(attributes, e.g. an ml_collections.ConfigDict or `MeshConfig`, or mapping keys). At
most one of them may be -1, meaning "all remaining devices". All axes are
`AxisType.Auto`: the model shards through sharding annotations and shard_map, not
through explicit-sharding types.
"""
import dataclasses
import math
from collections.abc import Mapping, Sequence

import jax
from jax.sharding import AbstractMesh, AxisType, Mesh

AXES = ("data", "fsdp", "sequence", "tensor")
# Axes the batch dimension is split over.
BATCH_AXES = ("data", "fsdp")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = 1
  fsdp: int = -1
  sequence: int = 1
  tensor: int = 1


def mesh_shape(cfg, num_devices: int) -> tuple[int, ...]:
  """Axis sizes in `AXES` order, with a -1 entry resolved against `num_devices`."""
  get = cfg.get if isinstance(cfg, Mapping) else lambda k, d: getattr(cfg, k, d)
  sizes = [int(get(axis, 1)) for axis in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {dict(zip(AXES, sizes))}.")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"Mesh axis sizes must be positive or -1, got {dict(zip(AXES, sizes))}.")
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if num_devices % known:
      raise ValueError(
          f"{num_devices} devices do not divide into a mesh with fixed axes "
          f"{dict(zip(AXES, sizes))}.")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
        f"Mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, have {num_devices}.")
  return tuple(sizes)


def make_mesh(cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A concrete mesh over `devices` (default: all devices), topology-aware ordering."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(cfg, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def make_abstract_mesh(cfg, num_devices: int | None = None) -> AbstractMesh:
  """The device-free mesh of the same shape, for tracing/lowering without devices."""
  num_devices = jax.device_count() if num_devices is None else num_devices
  return AbstractMesh(mesh_shape(cfg, num_devices), AXES, axis_types=(AxisType.Auto,) * len(AXES))


def axis_size(mesh: Mesh | AbstractMesh, name: str) -> int:
  """Size of a mesh axis, 1 when the mesh lacks it."""
  return dict(mesh.shape).get(name, 1)


__all__ = ["AXES", "BATCH_AXES", "MeshConfig", "mesh_shape", "make_mesh", "make_abstract_mesh",
           "axis_size"]
