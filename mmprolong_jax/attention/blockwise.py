"""Tiled (flash-style) attention in jnp: the per-block kernel of ring attention.

`block_fwd` returns the block's normalized output and log-sum-exp so partial results
from several key blocks merge exactly (`merge`). `block_bwd` takes the *final* output's
logsumexp and delta = rowsum(dO * O), which makes the gradient of each key block exact
no matter how many blocks contributed to the softmax. Tiles whose mask is empty
(other segment, or entirely in the causal future) are skipped with `lax.cond`, so
packed rows and the zigzag layout cost only their unmasked tiles (at tile
granularity).
"""
import math

import jax.numpy as jnp
from jax import lax

from mmprolong_jax.attention.layout import attention_mask


def _tile(n: int, block: int) -> int:
  """Largest tile <= block that divides n."""
  return math.gcd(n, min(block, n))


def _split(x, tile: int):
  """[B, N, ...] -> [N // tile, B, tile, ...] (tiles leading, for scan/map)."""
  B, N = x.shape[:2]
  return jnp.moveaxis(x.reshape(B, N // tile, tile, *x.shape[2:]), 1, 0)


def _unsplit(x):
  """Inverse of `_split`."""
  n, B, tile = x.shape[:3]
  return jnp.moveaxis(x, 0, 1).reshape(B, n * tile, *x.shape[3:])


def _scores(q_BxQxKxGxD, k_BxSxKxD, scale):
  s = jnp.einsum("bqkgd,bskd->bqkgs", q_BxQxKxGxD, k_BxSxKxD, preferred_element_type=jnp.float32)
  return s * scale


def block_fwd(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, seg_q_BxT, seg_kv_BxS, pos_q_BxT, pos_kv_BxS, *,
              causal: bool, block_q: int, block_kv: int):
  """Attention of all queries over one key block.

  Returns (o_BxTxHxD fp32, lse_BxTxH fp32); rows that see no key get o = 0, lse = -inf.
  """
  B, T, H, D = q_BxTxHxD.shape
  S, K = k_BxSxKxD.shape[1:3]
  G = H // K
  bq, bk = _tile(T, block_q), _tile(S, block_kv)
  scale = D ** -0.5
  kv_tiles = (_split(k_BxSxKxD, bk), _split(v_BxSxKxD, bk), _split(seg_kv_BxS, bk),
              _split(pos_kv_BxS, bk))

  def q_tile(args):
    q_BxQxKxGxD, seg_q_BxQ, pos_q_BxQ = args

    def kv_step(carry, kv):
      k_BxSxKxD, v_BxSxKxD, seg_kv_BxS, pos_kv_BxS = kv
      mask_BxQxS = attention_mask(seg_q_BxQ, seg_kv_BxS, pos_q_BxQ, pos_kv_BxS, causal)

      def update(carry):
        m_BxQxKxG, l_BxQxKxG, acc_BxQxKxGxD = carry
        s = _scores(q_BxQxKxGxD, k_BxSxKxD, scale)
        s = jnp.where(mask_BxQxS[:, :, None, None, :], s, -jnp.inf)
        m_new = jnp.maximum(m_BxQxKxG, s.max(-1))
        # A row with nothing visible yet keeps m = -inf; shift by 0 so exp gives 0, not NaN.
        m_shift = jnp.where(jnp.isneginf(m_new), 0.0, m_new)
        p = jnp.exp(s - m_shift[..., None])
        alpha = jnp.exp(m_BxQxKxG - m_shift)
        pv = jnp.einsum("bqkgs,bskd->bqkgd", p.astype(v_BxSxKxD.dtype), v_BxSxKxD,
                        preferred_element_type=jnp.float32)
        return m_new, alpha * l_BxQxKxG + p.sum(-1), alpha[..., None] * acc_BxQxKxGxD + pv

      return lax.cond(mask_BxQxS.any(), update, lambda c: c, carry), None

    # *_like keeps shard_map's varying-axes type of the inputs on the carry.
    stats = q_BxQxKxGxD[..., 0]
    init = (jnp.full_like(stats, -jnp.inf, jnp.float32), jnp.zeros_like(stats, jnp.float32),
            jnp.zeros_like(q_BxQxKxGxD, jnp.float32))
    (m, l, acc), _ = lax.scan(kv_step, init, kv_tiles)
    seen = l > 0
    o = acc / jnp.where(seen, l, 1.0)[..., None]
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), -jnp.inf)
    return o, lse

  q_tiles = _split(q_BxTxHxD.reshape(B, T, K, G, D), bq)
  o, lse = lax.map(q_tile, (q_tiles, _split(seg_q_BxT, bq), _split(pos_q_BxT, bq)))
  return _unsplit(o).reshape(B, T, H, D), _unsplit(lse).reshape(B, T, H)


def merge(o1_BxTxHxD, lse1_BxTxH, o2_BxTxHxD, lse2_BxTxH):
  """Combines two partial softmax results over disjoint key sets."""
  lse = jnp.logaddexp(lse1_BxTxH, lse2_BxTxH)
  lse_shift = jnp.where(jnp.isneginf(lse), 0.0, lse)
  w1 = jnp.exp(lse1_BxTxH - lse_shift)[..., None]
  w2 = jnp.exp(lse2_BxTxH - lse_shift)[..., None]
  return w1 * o1_BxTxHxD + w2 * o2_BxTxHxD, lse


def block_bwd(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, do_BxTxHxD, lse_BxTxH, delta_BxTxH, seg_q_BxT,
              seg_kv_BxS, pos_q_BxT, pos_kv_BxS, *, causal: bool, block_q: int, block_kv: int):
  """Gradient contributions of one key block, given the final lse and delta.

  Returns (dq_BxTxHxD, dk_BxSxKxD, dv_BxSxKxD), all fp32.
  """
  B, T, H, D = q_BxTxHxD.shape
  S, K = k_BxSxKxD.shape[1:3]
  G = H // K
  bq, bk = _tile(T, block_q), _tile(S, block_kv)
  scale = D ** -0.5
  by_group = lambda x: x.reshape(B, T, K, G, *x.shape[3:])  # noqa: E731
  q_tiles = (_split(by_group(q_BxTxHxD), bq), _split(by_group(do_BxTxHxD), bq),
             _split(by_group(lse_BxTxH), bq), _split(by_group(delta_BxTxH), bq),
             _split(seg_q_BxT, bq), _split(pos_q_BxT, bq))

  def kv_tile(dq_tiles, kv):
    k_BxSxKxD, v_BxSxKxD, seg_kv_BxS, pos_kv_BxS = kv

    def q_step(dkv, qs):
      q_BxQxKxGxD, do_BxQxKxGxD, lse_BxQxKxG, delta_BxQxKxG, seg_q_BxQ, pos_q_BxQ = qs
      mask_BxQxS = attention_mask(seg_q_BxQ, seg_kv_BxS, pos_q_BxQ, pos_kv_BxS, causal)

      def grads(dkv):
        dk_BxSxKxD, dv_BxSxKxD = dkv
        s = _scores(q_BxQxKxGxD, k_BxSxKxD, scale)
        p = jnp.where(mask_BxQxS[:, :, None, None, :], jnp.exp(s - lse_BxQxKxG[..., None]), 0.0)
        dv_BxSxKxD += jnp.einsum("bqkgs,bqkgd->bskd", p.astype(do_BxQxKxGxD.dtype), do_BxQxKxGxD,
                                 preferred_element_type=jnp.float32)
        dp = jnp.einsum("bqkgd,bskd->bqkgs", do_BxQxKxGxD, v_BxSxKxD,
                        preferred_element_type=jnp.float32)
        ds = (p * (dp - delta_BxQxKxG[..., None]) * scale).astype(q_BxQxKxGxD.dtype)
        dq = jnp.einsum("bqkgs,bskd->bqkgd", ds, k_BxSxKxD, preferred_element_type=jnp.float32)
        dk_BxSxKxD += jnp.einsum("bqkgs,bqkgd->bskd", ds, q_BxQxKxGxD,
                                 preferred_element_type=jnp.float32)
        return (dk_BxSxKxD, dv_BxSxKxD), dq

      def skip(dkv):
        return dkv, jnp.zeros_like(q_BxQxKxGxD, jnp.float32)

      return lax.cond(mask_BxQxS.any(), grads, skip, dkv)

    zeros = jnp.zeros_like(k_BxSxKxD, jnp.float32)
    dkv, dq_contrib = lax.scan(q_step, (zeros, zeros), q_tiles)
    return dq_tiles + dq_contrib, dkv

  kv_tiles = (_split(k_BxSxKxD, bk), _split(v_BxSxKxD, bk), _split(seg_kv_BxS, bk),
              _split(pos_kv_BxS, bk))
  dq_tiles = jnp.zeros_like(q_tiles[0], jnp.float32)
  dq_tiles, (dk_tiles, dv_tiles) = lax.scan(kv_tile, dq_tiles, kv_tiles)
  return _unsplit(dq_tiles).reshape(B, T, H, D), _unsplit(dk_tiles), _unsplit(dv_tiles)

