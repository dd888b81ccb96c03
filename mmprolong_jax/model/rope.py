"""Rotary embeddings: chunked 3-D mRoPE for the LLM and axial 2-D rope for the vision tower.

Both use the rotate-half convention: the first and second halves of the head dim are the
(real, imaginary) parts, with the same frequency table repeated twice.
"""
import jax.numpy as jnp


def _inv_freq(dim: int, theta: float) -> jnp.ndarray:
  return 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))


def mrope_angles(positions_3xBxT, head_dim: int, theta: float, sections):
  """Angles BxTx(head_dim) for 3-D positions (temporal, height, width).

  The head_dim/2 frequencies are split into `sections` chunks ([16, 24, 24] on the 7B); chunk i
  takes its positions from axis i % 3.
  """
  if sum(sections) != head_dim // 2:
    raise ValueError(f"mrope sections {tuple(sections)} must sum to head_dim/2 = {head_dim // 2}")
  inv = _inv_freq(head_dim, theta)
  freqs_3xBxTxF = positions_3xBxT.astype(jnp.float32)[..., None] * inv
  chunks, start = [], 0
  for i, n in enumerate(sections):
    chunks.append(freqs_3xBxTxF[i % 3, ..., start:start + n])
    start += n
  half_BxTxF = jnp.concatenate(chunks, axis=-1)
  return jnp.concatenate([half_BxTxF, half_BxTxF], axis=-1)


def vision_angles(pos_hw_BxNx2, head_dim: int, theta: float):
  """Angles BxNx(head_dim) for patch (row, column) positions: [h freqs, w freqs] repeated."""
  inv = _inv_freq(head_dim // 2, theta)
  f_BxNx2xF = pos_hw_BxNx2.astype(jnp.float32)[..., None] * inv
  half = jnp.concatenate([f_BxNx2xF[..., 0, :], f_BxNx2xF[..., 1, :]], axis=-1)
  return jnp.concatenate([half, half], axis=-1)


def apply_rope(x_BxTxHxD, angles_BxTxD):
  """Rotates x in fp32 and returns it in x's dtype."""
  x = x_BxTxHxD.astype(jnp.float32)
  cos = jnp.cos(angles_BxTxD)[:, :, None, :]
  sin = jnp.sin(angles_BxTxD)[:, :, None, :]
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (x * cos + rotated * sin).astype(x_BxTxHxD.dtype)
