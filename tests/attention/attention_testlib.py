"""Shared inputs and comparisons for the attention tests."""
import jax
import jax.numpy as jnp
import numpy as np

from mmprolong_jax.attention import AttentionConfig, attention, zigzag_permutation
from mmprolong_jax.parallel.mesh import make_mesh

B, T = 4, 128
LLM = dict(heads=8, kv_heads=2, head_dim=16)     # GQA; Ulysses repeats kv heads at sp > 2
VISION = dict(heads=8, kv_heads=8, head_dim=16)  # non-causal, segments = windows/images
TRIALS = 3  # random segment layouts per compiled function


def random_segments(rng: np.random.Generator, batch: int, seq_len: int, max_segments: int = 4,
                    pad: bool = True, gaps: bool = False) -> np.ndarray:
  """Rows of 1..max_segments contiguous segments (arbitrary ids), then maybe padding;
  with gaps, each segment's first 0-3 tokens may be padding too."""
  seg = np.zeros((batch, seq_len), np.int32)
  for b in range(batch):
    used = seq_len - (int(rng.integers(0, seq_len // 4)) if pad else 0)
    n = int(rng.integers(1, max_segments + 1))
    cuts = np.sort(rng.choice(np.arange(1, used), size=n - 1, replace=False)) if n > 1 else []
    ids = rng.choice(np.arange(1, 100), size=n, replace=False)
    for i, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, used])):
      gap = min(int(rng.integers(0, 4)), hi - lo - 1) if gaps else 0
      seg[b, lo + gap:hi] = ids[i]
  return seg


def random_qkv(rng: np.random.Generator, batch, seq_len, heads, kv_heads, head_dim):
  shapes = [(batch, seq_len, heads, head_dim), (batch, seq_len, kv_heads, head_dim),
            (batch, seq_len, kv_heads, head_dim), (batch, seq_len, heads, head_dim)]
  return [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]


def out_and_grads(cfg: AttentionConfig, causal: bool):
  """A jitted f(q, k, v, do, seg, pos) -> (out, (dq, dk, dv)) for cfg."""

  def f(q, k, v, do, seg, pos):
    out, vjp = jax.vjp(lambda q, k, v: attention(
        q, k, v, segment_ids_BxT=seg, positions_BxT=pos, causal=causal, cfg=cfg), q, k, v)
    return out, vjp(do)

  return jax.jit(f)


def assert_close(actual, expected, rtol=1e-5):
  """fp32-tight: elementwise rtol, plus an atol of rtol/10 of each array's largest entry."""
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    e = np.asarray(e)
    np.testing.assert_allclose(np.asarray(a), e, rtol=rtol, atol=rtol / 10 * np.abs(e).max())


def check_against_reference(mesh_cfg, backend, causal, shapes, *, layout="zigzag", seed=0,
                            devices=None, gaps=False, **cfg_kw):
  """cfg's outputs and gradients equal the reference on TRIALS random segment layouts."""
  mesh = make_mesh(mesh_cfg, devices)
  sp = dict(mesh.shape)["sequence"]
  rng = np.random.default_rng(seed)
  q, k, v, do = random_qkv(rng, B, T, shapes["heads"], shapes["kv_heads"], shapes["head_dim"])
  perm, inverse = zigzag_permutation(T, sp) if layout == "zigzag" else (np.arange(T),) * 2
  cfg = AttentionConfig(backend, mesh=mesh, layout=layout, block_q=8, block_kv=8, **cfg_kw)
  ours = out_and_grads(cfg, causal)
  ref = out_and_grads(AttentionConfig("reference"), causal)
  pos = jnp.broadcast_to(jnp.asarray(perm, jnp.int32), (B, T))
  stored = lambda x: x[:, perm]  # noqa: E731  (the model permutes its stream once)
  for _ in range(TRIALS):
    seg = random_segments(rng, B, T, gaps=gaps)
    got = ours(*map(stored, (q, k, v, do)), jnp.asarray(seg[:, perm]), pos)
    want = ref(q, k, v, do, jnp.asarray(seg), jnp.broadcast_to(jnp.arange(T), (B, T)))
    assert_close(jax.tree.map(lambda x: x[:, inverse], got), want)
    out = np.asarray(got[0])[:, inverse]
    assert not np.any(out[seg == 0]), "padded queries must output exactly zero"
