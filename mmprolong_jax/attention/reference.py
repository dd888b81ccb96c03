"""Plain-jnp attention with an explicit [B, T, S] mask: the numerical oracle."""
import jax.numpy as jnp

from mmprolong_jax.attention.layout import attention_mask

# Finite, so fully masked rows give a finite (then zeroed) softmax, never NaN.
_MASKED = -1e30


def reference_attention(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, seg_q_BxT, seg_kv_BxS, pos_q_BxT,
                        pos_kv_BxS, causal: bool):
  """Exact attention in fp32; rows without any visible key (padding) output zero."""
  B, T, H, D = q_BxTxHxD.shape
  K = k_BxSxKxD.shape[2]
  q_BxTxKxGxD = q_BxTxHxD.reshape(B, T, K, H // K, D).astype(jnp.float32)
  s_BxKxGxTxS = jnp.einsum("btkgd,bskd->bkgts", q_BxTxKxGxD, k_BxSxKxD.astype(jnp.float32))
  s_BxKxGxTxS *= D ** -0.5
  mask_BxTxS = attention_mask(seg_q_BxT, seg_kv_BxS, pos_q_BxT, pos_kv_BxS, causal)
  s_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], s_BxKxGxTxS, _MASKED)
  p_BxKxGxTxS = jnp.exp(s_BxKxGxTxS - s_BxKxGxTxS.max(-1, keepdims=True))
  p_BxKxGxTxS /= p_BxKxGxTxS.sum(-1, keepdims=True)
  o_BxTxKxGxD = jnp.einsum("bkgts,bskd->btkgd", p_BxKxGxTxS, v_BxSxKxD.astype(jnp.float32))
  o_BxTxKxGxD *= mask_BxTxS.any(-1)[:, :, None, None, None]
  return o_BxTxKxGxD.reshape(B, T, H, D).astype(q_BxTxHxD.dtype)
