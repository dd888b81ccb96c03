"""Shared inputs and comparisons for the attention tests."""
import jax
import jax.numpy as jnp
import numpy as np

from mmprolong_jax.attention import AttentionConfig, attention



def random_segments(rng: np.random.Generator, batch: int, seq_len: int, max_segments: int = 4,
                    pad: bool = True) -> np.ndarray:
  """Rows of 1..max_segments contiguous segments (arbitrary ids), then maybe padding."""
  seg = np.zeros((batch, seq_len), np.int32)
  for b in range(batch):
    used = seq_len - (int(rng.integers(0, seq_len // 4)) if pad else 0)
    n = int(rng.integers(1, max_segments + 1))
    cuts = np.sort(rng.choice(np.arange(1, used), size=n - 1, replace=False)) if n > 1 else []
    ids = rng.choice(np.arange(1, 100), size=n, replace=False)
    for i, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, used])):
      seg[b, lo:hi] = ids[i]
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
