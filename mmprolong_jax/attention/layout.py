"""Token layouts and masks shared by every backend.

The zigzag layout balances causal ring attention: the row is cut into 2*sp chunks and
sequence shard r holds chunks r and 2*sp-1-r, so every shard owns one early and one
late chunk and does the same causal work. The model permutes its whole token stream
(tokens, positions, segment ids, loss mask) once at the input with `perm` and leaves
it permuted; attention masks by the carried positions, so every layer works in place.
"""
import functools

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=64)
def _zigzag(seq_len: int, sp: int) -> tuple[np.ndarray, np.ndarray]:
  if seq_len % (2 * sp):
    raise ValueError(f"zigzag layout needs seq_len divisible by 2*sp = {2 * sp}, got {seq_len}.")
  chunk = seq_len // (2 * sp)
  order = [c for r in range(sp) for c in (r, 2 * sp - 1 - r)]
  perm = np.concatenate([np.arange(c * chunk, (c + 1) * chunk) for c in order]).astype(np.int32)
  inverse = np.argsort(perm).astype(np.int32)
  perm.flags.writeable = inverse.flags.writeable = False
  return perm, inverse


def zigzag_permutation(seq_len: int, sp: int) -> tuple[np.ndarray, np.ndarray]:
  """(perm, inverse), int32 [seq_len]: `x_layout = x[perm]`, `x = x_layout[inverse]`.

  perm[i] is the original index of the token stored at position i, so `perm` itself is
  the positions_BxT row of an unpacked zigzag stream.
  """
  return _zigzag(seq_len, sp)


def default_positions(batch: int, seq_len: int, layout: str, sp: int) -> jnp.ndarray:
  """Original token index of every stored token: arange, or the zigzag perm."""
  idx = zigzag_permutation(seq_len, sp)[0] if layout == "zigzag" else np.arange(seq_len)
  return jnp.broadcast_to(jnp.asarray(idx, jnp.int32), (batch, seq_len))


def take_tokens(x_BxTx___, idx_T):
  """Reorders the token axis (axis 1) by a static index array."""
  return jnp.take(x_BxTx___, jnp.asarray(idx_T), axis=1)


def attention_mask(q_seg_BxT, kv_seg_BxS, q_pos_BxT, kv_pos_BxS, causal: bool):
  """[B, T, S] bool: same non-padding segment and, if causal, key position <= query's."""
  mask_BxTxS = ((q_seg_BxT[:, :, None] == kv_seg_BxS[:, None, :])
                & (q_seg_BxT[:, :, None] != 0))
  if causal:
    mask_BxTxS &= kv_pos_BxS[:, None, :] <= q_pos_BxT[:, :, None]
  return mask_BxTxS
