"""Ring and Ulysses on 8 simulated devices equal the reference (outputs and grads)."""
import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_testlib import (B, LLM, T, VISION, assert_close, check_against_reference,
                              out_and_grads, random_qkv)
from mmprolong_jax.attention import AttentionConfig, attention, kv_head_repeats, zigzag_permutation
from mmprolong_jax.parallel.mesh import MeshConfig, make_mesh

MESHES = {
    "seq8": MeshConfig(sequence=8, fsdp=1),
    "seq4_fsdp2": MeshConfig(sequence=4, fsdp=2),
    "seq2_data4": MeshConfig(sequence=2, data=4, fsdp=1),
}


@pytest.mark.parametrize("mesh_name", list(MESHES))
@pytest.mark.parametrize("backend", ["ring", "ulysses"])
def test_causal_gqa_packed(mesh_name, backend):
  check_against_reference(MESHES[mesh_name], backend, True, LLM)


@pytest.mark.parametrize("mesh_name", ["seq8", "seq4_fsdp2"])
@pytest.mark.parametrize("backend", ["ring", "ulysses"])
def test_noncausal_vision(mesh_name, backend):
  check_against_reference(MESHES[mesh_name], backend, False, VISION, seed=1)


def test_ring_natural_layout():
  """Masks come from positions, so the unbalanced natural layout is also exact."""
  check_against_reference(MESHES["seq4_fsdp2"], "ring", True, LLM, layout="natural", seed=2)


def test_ring_degenerate_sequence_axis():
  check_against_reference(MeshConfig(fsdp=1), "ring", True, LLM, seed=3,
                           devices=jax.devices()[:1])


@pytest.mark.parametrize("backend", ["ring", "ulysses"])
def test_heads_over_tensor_axis(backend):
  check_against_reference(MeshConfig(sequence=2, tensor=2, fsdp=2), backend, True, LLM, seed=4)


def test_ulysses_blockwise_local_kernel():
  check_against_reference(MESHES["seq4_fsdp2"], "ulysses", True, LLM, seed=5,
                           local_backend="blockwise")


@pytest.mark.parametrize("heads,kv_heads,sp,repeats", [
    (28, 4, 4, 1), (28, 4, 2, 1), (28, 4, 7, 7), (16, 16, 8, 1), (8, 2, 8, 4), (12, 4, 6, 3)])
def test_ulysses_kv_head_repeats(heads, kv_heads, sp, repeats):
  assert kv_head_repeats(heads, kv_heads, sp) == repeats


@pytest.mark.parametrize("heads,kv_heads,sp,match", [
    (28, 4, 8, r"28 query heads .* degree 8"),
    (20, 4, 8, r"20 query heads .* degree 8"),
    (12, 5, 4, r"12 query heads are not a multiple of 5 kv heads"),
])
def test_ulysses_impossible_degrees(heads, kv_heads, sp, match):
  with pytest.raises(ValueError, match=match):
    kv_head_repeats(heads, kv_heads, sp)


def test_ulysses_rejects_impossible_mesh_at_trace_time():
  mesh = make_mesh(MESHES["seq8"])
  q = jnp.zeros((1, 64, 12, 8))
  kv = jnp.zeros((1, 64, 4, 8))
  seg = jnp.ones((1, 64), jnp.int32)
  with pytest.raises(ValueError, match="12 query heads .* degree 8"):
    jax.eval_shape(lambda q, k, v: attention(
        q, k, v, segment_ids_BxT=seg, causal=True,
        cfg=AttentionConfig("ulysses", mesh=mesh, layout="zigzag")), q, kv, kv)


@st.composite
def _segment_rows(draw):
  """B rows of 1-4 segments with random cuts (often across shard boundaries) and padding."""
  rows = []
  for _ in range(B):
    used = T - draw(st.integers(0, T // 4))
    cuts = draw(st.lists(st.integers(1, used - 1), max_size=3, unique=True))
    ids = draw(st.lists(st.integers(1, 2**31 - 1), min_size=4, max_size=4, unique=True))
    row = np.zeros(T, np.int32)
    for i, (lo, hi) in enumerate(zip([0, *sorted(cuts)], [*sorted(cuts), used])):
      row[lo:hi] = ids[i]
    rows.append(row)
  return np.stack(rows)


@functools.lru_cache(maxsize=None)
def _compiled(backend):
  mesh = make_mesh(MESHES["seq4_fsdp2"])
  cfg = AttentionConfig(backend, mesh=mesh, layout="zigzag", block_q=8, block_kv=8)
  return out_and_grads(cfg, True), out_and_grads(AttentionConfig("reference"), True)


@pytest.mark.parametrize("backend", ["ring", "ulysses"])
@hypothesis.settings(max_examples=8, deadline=None, derandomize=True, database=None)
@hypothesis.given(seg=_segment_rows())
def test_random_segment_layouts(backend, seg):
  ours, ref = _compiled(backend)
  q, k, v, do = random_qkv(np.random.default_rng(7), B, T, **LLM)
  perm, inverse = zigzag_permutation(T, 4)
  pos = jnp.broadcast_to(jnp.asarray(perm), (B, T))
  got = ours(*(x[:, perm] for x in (q, k, v, do)), jnp.asarray(seg[:, perm]), pos)
  want = ref(q, k, v, do, jnp.asarray(seg), jnp.broadcast_to(jnp.arange(T), (B, T)))
  assert_close(jax.tree.map(lambda x: x[:, inverse], got), want)
