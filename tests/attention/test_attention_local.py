"""Single-device backends against the reference, and the reference against a loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_testlib import assert_close, out_and_grads, random_qkv, random_segments
from mmprolong_jax.attention import AttentionConfig, attention


def _naive(q, k, v, seg, pos, causal):
  """Per query, per head softmax over the allowed keys, in float64 numpy."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  B, T, H, D = q.shape
  G = H // k.shape[2]
  out = np.zeros_like(q)
  for b in range(B):
    for t in range(T):
      keys = (seg[b] == seg[b, t]) & (seg[b, t] != 0)
      if causal:
        keys &= pos[b] <= pos[b, t]
      if not keys.any():
        continue
      for h in range(H):
        s = k[b, keys, h // G] @ q[b, t, h] / np.sqrt(D)
        p = np.exp(s - s.max())
        out[b, t, h] = (p / p.sum()) @ v[b, keys, h // G]
  return out


@pytest.mark.parametrize("causal", [True, False])
def test_reference_matches_naive_loop(causal):
  rng = np.random.default_rng(0)
  B, T, H, K, D = 2, 24, 4, 2, 8
  q, k, v, _ = random_qkv(rng, B, T, H, K, D)
  seg = random_segments(rng, B, T)
  pos = np.stack([rng.permutation(T) for _ in range(B)]).astype(np.int32)
  out = attention(q, k, v, segment_ids_BxT=jnp.asarray(seg), positions_BxT=jnp.asarray(pos),
                  causal=causal, cfg=AttentionConfig())
  np.testing.assert_allclose(np.asarray(out), _naive(q, k, v, seg, pos, causal), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block_q,block_kv", [(8, 8), (16, 32), (12, 20)])
def test_blockwise_matches_reference(causal, block_q, block_kv):
  rng = np.random.default_rng(1)
  B, T, H, K, D = 2, 64, 6, 2, 16
  q, k, v, do = random_qkv(rng, B, T, H, K, D)
  ours = out_and_grads(AttentionConfig("blockwise", block_q=block_q, block_kv=block_kv), causal)
  ref = out_and_grads(AttentionConfig("reference"), causal)
  for trial in range(3):
    seg = jnp.asarray(random_segments(rng, B, T))
    # Storage order is arbitrary: causality follows the carried positions.
    pos = jnp.asarray(np.stack([rng.permutation(T) if trial else np.arange(T) for _ in range(B)]),
                      jnp.int32)
    assert_close(ours(q, k, v, do, seg, pos), ref(q, k, v, do, seg, pos))


@pytest.mark.parametrize("backend", ["reference", "blockwise"])
def test_padding_is_inert(backend):
  """Padded queries output 0, padded tokens get zero gradients and change nothing."""
  rng = np.random.default_rng(2)
  B, T, H, K, D = 2, 32, 4, 2, 8
  q, k, v, do = random_qkv(rng, B, T, H, K, D)
  seg = np.ones((B, T), np.int32)
  seg[0, 20:] = 0
  seg[1, :3] = 0
  seg[1, 10:12] = 0
  pad = jnp.asarray(seg == 0)[:, :, None, None]
  f = out_and_grads(AttentionConfig(backend, block_q=8, block_kv=8), causal=True)
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  out, (dq, dk, dv) = f(q, k, v, do, jnp.asarray(seg), pos)
  for x in (out, dq, dk, dv):
    assert not np.any(np.asarray(jnp.where(pad, x, 0)))
  noise = jnp.where(pad, 1e3, 0.0)
  out2, _ = f(q + noise, k + noise[:, :, :K], v - noise[:, :, :K], do, jnp.asarray(seg), pos)
  np.testing.assert_array_equal(np.asarray(out2), np.asarray(out))


def test_splash_interpret_matches_reference():
  """Splash's Pallas TPU kernel, run in interpret mode on CPU (not run on a TPU)."""
  rng = np.random.default_rng(3)
  B, T, H, K, D = 1, 256, 4, 2, 32
  q, k, v, do = random_qkv(rng, B, T, H, K, D)
  seg = jnp.asarray(random_segments(rng, B, T))
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  cfg = AttentionConfig("splash", block_q=128, block_kv=128, splash_interpret=True)
  assert_close(out_and_grads(cfg, True)(q, k, v, do, seg, pos),
               out_and_grads(AttentionConfig("reference"), True)(q, k, v, do, seg, pos))


def _nan_route(q, *_):
  """Stands in for a cuDNN route that must not run: NaN everywhere."""
  return jnp.full_like(q, jnp.nan)


def _poison_padding(seg, *xs, value=1e3):
  """`value` at padding rows: large ones where the kernel must never read them, NaN where it
  reads them (zeroed first)."""
  pad = (jnp.asarray(seg) == 0)[:, :, None, None]
  return [jnp.where(pad, value, x) for x in xs]


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("max_segments,rows", [(8, "packed"), (1, "one_run"), (8, "one_run")])
def test_cudnn_matches_reference(monkeypatch, causal, max_segments, rows):
  """Packed rows (max_segments=8) and rows with one prefix segment each, one row empty
  (max_segments=1: the vision tower's window and image rows; max_segments=8, causal: the
  plain causal kernel, the ragged route poisoned so the test sees which ran); padding
  inputs poisoned (NaN where the plain causal kernel reads them)."""
  rng = np.random.default_rng(4)
  B, T, H, K, D = 3, 1024, 8, 2, 128
  if rows == "one_run":
    seg = np.zeros((B, T), np.int32)
    seg[0, :T - 100] = 7
    seg[1, :T] = 3
  else:
    seg = random_segments(rng, B, T, max_segments=6)
  q, k, v, do = random_qkv(rng, B, T, H, K, D)
  q, k, v = _poison_padding(seg, q, k, v)
  q, k, v, do = (x.astype(jnp.bfloat16) for x in (q, k, v, do))
  ours_in = (q, k, v)
  if rows == "one_run" and max_segments > 1 and causal:
    from mmprolong_jax.attention import cudnn
    monkeypatch.setattr(cudnn, "_ragged", _nan_route)
    ours_in = _poison_padding(seg, *ours_in, value=jnp.nan)
  seg = jnp.asarray(seg)
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  ours = out_and_grads(AttentionConfig("cudnn", max_segments=max_segments), causal)(
      *ours_in, do, seg, pos)
  up = lambda x: x.astype(jnp.float32)  # noqa: E731
  ref = out_and_grads(AttentionConfig("reference"), causal)(up(q), up(k), up(v), up(do), seg, pos)
  pad = np.asarray(seg == 0)
  for a, e in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    a, e = np.asarray(up(a)), np.asarray(e)
    assert np.all(np.isfinite(a))
    assert np.all(a[pad] == 0)   # outputs and gradients at padding rows
    assert np.linalg.norm(a - e) <= 2e-2 * np.linalg.norm(e)


def test_one_run_rows_matches_a_run_count():
  from mmprolong_jax.attention.cudnn import one_run_rows
  rng = np.random.default_rng(5)
  cases = [random_segments(rng, 3, 40, max_segments=m, gaps=g) for m in (1, 2, 4)
           for g in (False, True) for _ in range(5)]
  cases += [np.zeros((2, 16), np.int32), np.array([[0, 3, 3, 0]]), np.array([[3, 3, 0, 3]])]
  for seg in cases:
    def one_run(row):
      nz = np.flatnonzero(row)
      return len(nz) == 0 or (nz[-1] + 1 == len(nz) and len(set(row[nz])) == 1)
    assert bool(one_run_rows(jnp.asarray(seg))) == all(one_run(r) for r in seg), seg


def _xla_kernels(monkeypatch, T, poison=None):
  """cuDNN's kernels swapped for XLA ones on CPU: jax.nn's 'cudnn' runs as 'xla', the ragged
  route as the reference on inputs zeroed at padding (it never reads padding). `poison`
  ('_ragged' or '_plain_causal') returns NaN instead, to show that route did not run."""
  from mmprolong_jax.attention import cudnn
  from mmprolong_jax.attention.reference import reference_attention
  xla_dpa = jax.nn.dot_product_attention
  monkeypatch.setattr(jax.nn, "dot_product_attention",
                      lambda *a, implementation=None, **kw: xla_dpa(*a, implementation="xla", **kw))

  def ragged(q, k, v, seg, causal, max_segments):
    q, k, v = (jnp.where((seg == 0)[:, :, None, None], 0.0, x) for x in (q, k, v))
    pos = jnp.broadcast_to(jnp.arange(T), seg.shape)
    return reference_attention(q, k, v, seg, seg, pos, pos, causal)
  monkeypatch.setattr(cudnn, "_ragged", ragged)
  if poison:
    monkeypatch.setattr(cudnn, poison, _nan_route)


def _one_run_rows(B, T):
  seg = np.zeros((B, T), np.int32)
  seg[0, :T - 18], seg[1, :] = 5, 2      # any further rows are all padding
  return seg


@pytest.mark.parametrize("one_run", [True, False])
def test_cudnn_causal_dispatch(monkeypatch, one_run):
  """Causal cuDNN attention on CPU (XLA kernels): rows of one sequence each take the plain
  causal kernel exactly, with NaN padding; packed rows take the ragged route."""
  rng = np.random.default_rng(6)
  B, T, H, K, D = 3, 48, 4, 2, 8
  q, k, v, do = random_qkv(rng, B, T, H, K, D)
  if one_run:
    seg = _one_run_rows(B, T)
  else:
    seg = random_segments(rng, B, T, max_segments=3)
    seg[0, :10], seg[0, 10:20] = 1, 2      # at least one row with two segments
  _xla_kernels(monkeypatch, T, poison="_ragged" if one_run else "_plain_causal")
  pad = jnp.asarray(seg == 0)[:, :, None, None]
  q, k, v = _poison_padding(seg, q, k, v, value=jnp.nan)
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  seg = jnp.asarray(seg)
  ours = out_and_grads(AttentionConfig("cudnn", max_segments=4), True)(q, k, v, do, seg, pos)
  clean = [jnp.where(pad, 0.0, x) for x in (q, k, v)]
  ref = out_and_grads(AttentionConfig("reference"), True)(*clean, do, seg, pos)
  for a in jax.tree.leaves(ours):
    assert np.all(np.isfinite(np.asarray(a)))
    assert not np.any(np.asarray(jnp.where(pad, a, 0)))
  assert_close(ours, ref)


def test_cudnn_dispatch_per_device_under_ulysses(monkeypatch):
  """Inside Ulysses' shard_map each device picks its route from its own rows (zigzag
  stream, batch split over 'data': one device group sees one-run rows, the other packed)."""
  from mmprolong_jax.attention import zigzag_permutation
  from mmprolong_jax.parallel.mesh import MeshConfig, make_mesh
  rng = np.random.default_rng(7)
  B, T, H, K, D = 4, 64, 4, 2, 8
  mesh = make_mesh(MeshConfig(sequence=4, data=2, fsdp=1))
  q, k, v, do = random_qkv(rng, B, T, H, K, D)
  seg = np.concatenate([_one_run_rows(2, T), random_segments(rng, 2, T, max_segments=3)])
  seg[2, :10], seg[2, 10:20] = 1, 2
  _xla_kernels(monkeypatch, T)
  perm, inverse = zigzag_permutation(T, 4)
  cfg = AttentionConfig("ulysses", mesh=mesh, layout="zigzag", local_backend="cudnn",
                        max_segments=4)
  got = out_and_grads(cfg, True)(*(x[:, perm] for x in (q, k, v, do)),
                                 jnp.asarray(seg[:, perm]),
                                 jnp.broadcast_to(jnp.asarray(perm, jnp.int32), (B, T)))
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  want = out_and_grads(AttentionConfig("reference"), True)(q, k, v, do, jnp.asarray(seg), pos)
  assert_close(jax.tree.map(lambda x: x[:, inverse], got), want)
