"""TPU splash attention with segment ids (jax.experimental.pallas.ops.tpu).

Splash masks by storage index (static causal/full mask AND equal segment ids) and
skips tiles the static mask empties; GQA is native (query heads a multiple of kv
heads). Padding (id 0) forms its own "segment" inside the kernel, which keeps every
softmax row non-empty as splash requires; its inputs and outputs are zeroed. Natural
layout only (the caller un-permutes a zigzag stream).
"""
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash


def _block(n: int, preferred: int) -> int:
  b = min(preferred, n)
  if n % b:
    raise ValueError(f"splash needs sequence length {n} divisible by its block size {b}.")
  return b


def splash_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, causal: bool, *, block_q: int,
                     block_kv: int, interpret: bool):
  B, T, H, D = q_BxTxHxD.shape
  bq, bk = _block(T, block_q), _block(T, block_kv)
  head_mask = splash.CausalMask((T, T)) if causal else splash.FullMask((T, T))
  kernel = splash.make_splash_mha_single_device(
      splash.MultiHeadMask([head_mask] * H),
      block_sizes=splash.BlockSizes(
          block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq, block_kv_dkv=bk,
          block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk),
      interpret=interpret)
  valid_BxTx1x1 = (seg_BxT != 0)[:, :, None, None]
  heads_first = lambda x: jnp.where(valid_BxTx1x1, x, 0).transpose(0, 2, 1, 3)  # noqa: E731
  q_BxHxTxD = heads_first(q_BxTxHxD * D ** -0.5)
  o_BxHxTxD = jax.vmap(lambda q, k, v, s: kernel(q, k, v, splash.SegmentIds(q=s, kv=s)))(
      q_BxHxTxD, heads_first(k_BxTxKxD), heads_first(v_BxTxKxD), seg_BxT)
  return jnp.where(valid_BxTx1x1, o_BxHxTxD.transpose(0, 2, 1, 3), 0)
