"""cuDNN attention time vs head dim at the vision tower's full-attention shape: 52 image rows
of 10,752 slots (10,032 real patches, per-row lengths), 16 heads, non-causal, bf16, scale
fixed at 80^-0.5. Answers whether zero-padding Qwen2.5-VL's head dim 80 could help (it cannot
if 80 already costs what 96 or 128 cost). Median of 5 calls, ms.

    JAX_PLATFORMS=cuda python3 benchmarks/vision_head_dim.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from attention import timed  # noqa: E402

B, T, H = 52, 10752, 16
LENGTHS = jnp.full((B,), 10032, jnp.int32)


def bench(head_dim: int, with_bwd: bool) -> float:
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(key, (B, T, H, head_dim), jnp.bfloat16) for key in keys)

  def f(q, k, v):
    o = jax.nn.dot_product_attention(q, k, v, scale=80 ** -0.5, query_seq_lengths=LENGTHS,
                                     key_value_seq_lengths=LENGTHS, implementation="cudnn")
    return o.astype(jnp.float32).sum()
  fn = jax.jit(jax.grad(f, argnums=(0, 1, 2)) if with_bwd else f)
  return timed(fn, (q, k, v), 5) * 1e3


if __name__ == "__main__":
  for d in (64, 80, 96, 128):
    print(d, "fwd %.1f ms" % bench(d, False), "fwd+bwd %.1f ms" % bench(d, True), flush=True)
