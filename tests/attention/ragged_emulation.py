"""jnp emulation of cuDNN's ragged-offset attention (cudnn_ragged.RaggedOps), for CPU tests.

Written from the contract in cudnn_ragged.py with dense per-entry masks, not from the
package's plan helpers, so a bug there is not mirrored here. The GPU test in
test_ring_fused.py checks the real kernels against this emulation. To make the CPU tests
strict, whatever cuDNN leaves unspecified is NaN here: outputs and gradients of rows no
entry covers, statistics outside the entries, and rows covered by two entries (cuDNN
would let the second entry overwrite the first).
"""
import jax.numpy as jnp

from mmprolong_jax.attention.cudnn_ragged import RaggedOps


def _entry_masks(plan, T, S):
  """Per entry, which query rows [B, M, T] and key rows [B, M, S] it covers."""
  M = plan.q_len_BxM.shape[1]
  def rows(length_BxM, offset_BxM, n):
    idx = jnp.arange(n)
    used = (length_BxM >= 0)[:, :, None]
    return used & (idx >= offset_BxM[:, :, None]) & (idx < (offset_BxM + length_BxM)[:, :, None])
  return (rows(plan.q_len_BxM, plan.q_off_BxM1[:, :M], T),
          rows(plan.kv_len_BxM, plan.kv_off_BxM1[:, :M], S))


def _stats_row(plan):
  used = (plan.q_len_BxM >= 0).reshape(-1)
  return (jnp.cumsum(used) - 1).reshape(plan.q_len_BxM.shape)


def _mask(plan, T, S, causal):
  """[B, T, S] allowed pairs, and the per-entry query masks."""
  M = plan.q_len_BxM.shape[1]
  q_in_BxMxT, kv_in_BxMxS = _entry_masks(plan, T, S)
  pair_BxMxTxS = q_in_BxMxT[:, :, :, None] & kv_in_BxMxS[:, :, None, :]
  if causal:
    i_BxMxT = jnp.arange(T) - plan.q_off_BxM1[:, :M, None]
    j_BxMxS = jnp.arange(S) - plan.kv_off_BxM1[:, :M, None]
    pair_BxMxTxS &= j_BxMxS[:, :, None, :] <= i_BxMxT[:, :, :, None]
  return pair_BxMxTxS.any(1), q_in_BxMxT, kv_in_BxMxS


def _scores(q, k):
  B, T, H, D = q.shape
  K = k.shape[2]
  q_BxTxKxGxD = q.reshape(B, T, K, H // K, D).astype(jnp.float32)
  return jnp.einsum("btkgd,bskd->btkgs", q_BxTxKxGxD, k.astype(jnp.float32)) * D ** -0.5


def _poison(x, ok_BxT):
  return jnp.where(ok_BxT.reshape(ok_BxT.shape + (1,) * (x.ndim - 2)), x, jnp.nan)


def emulated_fwd(q, k, v, plan, causal):
  B, T, H, D = q.shape
  S, K = k.shape[1:3]
  M = plan.q_len_BxM.shape[1]
  mask_BxTxS, q_in_BxMxT, _ = _mask(plan, T, S, causal)
  s = jnp.where(mask_BxTxS[:, :, None, None, :], _scores(q, k), -jnp.inf)
  lse_BxTxKxG = jnp.log(jnp.exp(s - s.max(-1, keepdims=True)).sum(-1)) + s.max(-1)
  p = jnp.exp(s - lse_BxTxKxG[..., None])
  out = jnp.einsum("btkgs,bskd->btkgd", p, v.astype(jnp.float32)).reshape(B, T, H, D)
  once_BxT = q_in_BxMxT.sum(1) == 1
  out = _poison(out, once_BxT).astype(q.dtype)
  # Statistics row of entry (b, m), column i = row q_off + i.
  lse_BxTxH = lse_BxTxKxG.reshape(B, T, H)
  cols_BxMxT = jnp.clip(plan.q_off_BxM1[:, :M, None] + jnp.arange(T), 0, T - 1)
  vals_BxMxTxH = jnp.take_along_axis(lse_BxTxH[:, None], cols_BxMxT[..., None], axis=2)
  in_entry_BxMxT = (jnp.arange(T) < plan.q_len_BxM[:, :, None])
  vals_BxMxTxH = jnp.where(in_entry_BxMxT[..., None], vals_BxMxTxH, jnp.nan)
  row_BxM = jnp.where(plan.q_len_BxM >= 0, _stats_row(plan), B * M)
  stats = jnp.full((B * M, T, H), jnp.nan).at[row_BxM].set(vals_BxMxTxH, mode="drop")
  return out, jnp.moveaxis(stats, 2, 1)


def emulated_bwd(q, k, v, do, o, stats, plan, causal):
  B, T, H, D = q.shape
  S, K = k.shape[1:3]
  G = H // K
  M = plan.q_len_BxM.shape[1]
  mask_BxTxS, q_in_BxMxT, kv_in_BxMxS = _mask(plan, T, S, causal)
  # Each row's log-sum-exp, read from its entry's statistics row.
  i_BxMxT = jnp.clip(jnp.arange(T) - plan.q_off_BxM1[:, :M, None], 0, T - 1)
  stats_BxMxHxT = stats[jnp.clip(_stats_row(plan), 0, B * M - 1)]
  lse_BxMxTxH = jnp.take_along_axis(jnp.moveaxis(stats_BxMxHxT, 2, 3), i_BxMxT[..., None], 2)
  lse_BxTxH = jnp.where(q_in_BxMxT[..., None], lse_BxMxTxH, 0.0).sum(1)
  lse_BxTxKxG = lse_BxTxH.reshape(B, T, K, G)
  s = _scores(q, k)
  p = jnp.where(mask_BxTxS[:, :, None, None, :], jnp.exp(s - lse_BxTxKxG[..., None]), 0.0)
  up = lambda x: x.astype(jnp.float32).reshape(B, T, K, G, D)  # noqa: E731
  do_, o_ = up(do), up(o)
  dv = jnp.einsum("btkgs,btkgd->bskd", p, do_)
  dp = jnp.einsum("btkgd,bskd->btkgs", do_, v.astype(jnp.float32))
  ds = p * (dp - (do_ * o_).sum(-1)[..., None]) * D ** -0.5
  dq = jnp.einsum("btkgs,bskd->btkgd", ds, k.astype(jnp.float32)).reshape(B, T, H, D)
  dk = jnp.einsum("btkgs,btkgd->bskd", ds, q.astype(jnp.float32).reshape(B, T, K, G, D))
  q_once, kv_once = q_in_BxMxT.sum(1) == 1, kv_in_BxMxS.sum(1) == 1
  return (_poison(dq, q_once).astype(q.dtype), _poison(dk, kv_once).astype(k.dtype),
          _poison(dv, kv_once).astype(v.dtype))


EMULATED = RaggedOps(emulated_fwd, emulated_bwd)
