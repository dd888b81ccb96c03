"""Layouts, cuDNN segment offsets, Ulysses degrees, meshes and vision sharding plans."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

from mmprolong_jax.attention import zigzag_permutation
from mmprolong_jax.attention.cudnn import segment_runs
from mmprolong_jax.attention.vision_sp import assign_images_to_shards, plan_vision_shards
from mmprolong_jax.parallel.mesh import AXES, MeshConfig, make_abstract_mesh, make_mesh, mesh_shape


@pytest.mark.parametrize("seq_len,sp", [(16, 1), (32, 2), (128, 8), (96, 4)])
def test_zigzag_permutation(seq_len, sp):
  perm, inverse = zigzag_permutation(seq_len, sp)
  assert perm.dtype == inverse.dtype == np.int32
  np.testing.assert_array_equal(perm[inverse], np.arange(seq_len))
  chunk = seq_len // (2 * sp)
  for r, shard in enumerate(perm.reshape(sp, -1)):
    np.testing.assert_array_equal(shard[:chunk] // chunk, r)
    np.testing.assert_array_equal(shard[chunk:] // chunk, 2 * sp - 1 - r)
  # Equal causal work: every shard's queries see the same number of earlier keys.
  work = [np.sum(shard + 1) for shard in perm.reshape(sp, -1)]
  assert len(set(work)) == 1


def test_zigzag_rejects_indivisible_length():
  with pytest.raises(ValueError, match="divisible by 2\\*sp = 8"):
    zigzag_permutation(20, 4)


def test_segment_runs_for_cudnn():
  seg = jnp.array([[1, 1, 1, 2, 2, 0, 0, 0],
                   [0, 3, 3, 3, 3, 3, 5, 5],
                   [7, 7, 7, 7, 7, 7, 7, 7],
                   [0, 0, 0, 0, 0, 0, 0, 0],
                   [4, 4, 0, 0, 6, 6, 6, 0]])
  lengths, offsets = segment_runs(seg, 3)
  np.testing.assert_array_equal(lengths, [[3, 2, -1], [5, 2, -1], [8, -1, -1], [-1, -1, -1],
                                          [2, 3, -1]])
  np.testing.assert_array_equal(offsets, [[0, 3, -1, -1], [1, 6, -1, -1], [0, -1, -1, -1],
                                          [-1, -1, -1, -1], [0, 4, -1, -1]])


def test_mesh_from_config():
  mesh = make_mesh(MeshConfig(sequence=4, fsdp=-1))
  assert mesh.axis_names == AXES
  assert dict(mesh.shape) == dict(data=1, fsdp=2, sequence=4, tensor=1)
  assert all(t == AxisType.Auto for t in mesh.axis_types)
  abstract = make_abstract_mesh(dict(data=2, fsdp=1, sequence=-1, tensor=2), num_devices=16)
  assert dict(abstract.shape) == dict(data=2, fsdp=1, sequence=4, tensor=2)
  assert make_mesh(MeshConfig(fsdp=1), devices=jax.devices()[:1]).size == 1


@pytest.mark.parametrize("cfg,match", [
    (dict(data=-1, fsdp=-1), "At most one"),
    (dict(data=3, fsdp=-1), "do not divide"),
    (dict(data=2, fsdp=2, sequence=1, tensor=1), "needs 4 devices"),
    (dict(data=0), "positive"),
])
def test_mesh_shape_errors(cfg, match):
  with pytest.raises(ValueError, match=match):
    mesh_shape(cfg, 8)


def test_vision_plan_balances_whole_images():
  rng = np.random.default_rng(0)
  counts = rng.integers(2_000, 12_000, size=50)
  plan = plan_vision_shards(counts, 8)
  assert plan.loads.max() <= plan.loads.mean() + counts.max()
  assert plan.loads.max() / plan.loads.mean() < 1.05
  shard_len = plan.source_index.size // 8
  for i, n in enumerate(counts):
    slots = np.flatnonzero(plan.image_ids == i + 1)
    assert len(slots) == n and len(set(slots // shard_len)) == 1  # whole image, one shard
    assert slots[0] // shard_len == plan.shard_of_image[i]
  # Every patch appears exactly once; the rest is padding.
  used = plan.source_index[plan.source_index >= 0]
  np.testing.assert_array_equal(np.sort(used), np.arange(counts.sum()))
  assert np.all((plan.source_index < 0) == (plan.image_ids == 0))


def test_vision_assignment_bounds():
  counts = [5, 5, 4, 3, 3]  # Graham's worst case for 2 shards: LPT gives 11, optimum 10.
  loads = np.bincount(assign_images_to_shards(counts, 2), counts)
  assert loads.max() <= 4 / 3 * 10
  with pytest.raises(ValueError, match="exceed shard_len"):
    plan_vision_shards([100, 10], 2, shard_len=64)
