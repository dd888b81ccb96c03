"""The one attention entry point; see the package docstring for the contract."""
import jax.numpy as jnp

from mmprolong_jax.attention import layout
from mmprolong_jax.attention.config import AttentionConfig
from mmprolong_jax.attention.local import local_attention
from mmprolong_jax.attention.ring import ring_attention
from mmprolong_jax.attention.sharding import SEQ_AXIS, resolve_mesh
from mmprolong_jax.attention.ulysses import ulysses_attention
from mmprolong_jax.parallel.mesh import axis_size


def _check_shapes(q, k, v, seg, pos):
  if q.ndim != 4 or k.shape != v.shape or k.ndim != 4:
    raise ValueError(f"Expected q [B,T,H,D] and k, v [B,T,K,D]; got {q.shape}, {k.shape}, "
                     f"{v.shape}.")
  B, T, H, D = q.shape
  if k.shape[:2] != (B, T) or k.shape[3] != D:
    raise ValueError(f"q {q.shape} and k/v {k.shape} disagree on batch, length or head dim.")
  if H % k.shape[2]:
    raise ValueError(f"{H} query heads are not a multiple of {k.shape[2]} kv heads.")
  for name, x in (("segment_ids_BxT", seg), ("positions_BxT", pos)):
    if x is not None and x.shape != (B, T):
      raise ValueError(f"{name} must have shape {(B, T)}, got {x.shape}.")


def attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, *, segment_ids_BxT, positions_BxT=None,
              causal: bool, cfg: AttentionConfig):
  """Packed (segment-masked), optionally causal, GQA attention. Returns [B, T, H, D]."""
  _check_shapes(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, positions_BxT)
  B, T = segment_ids_BxT.shape
  # Zigzag degree: the sequence axis of the mesh that laid the stream out.
  sp = axis_size(resolve_mesh(cfg), SEQ_AXIS) if cfg.layout == "zigzag" else 1
  if positions_BxT is None:
    positions_BxT = layout.default_positions(B, T, cfg.layout, sp)
  seg_BxT = segment_ids_BxT.astype(jnp.int32)
  pos_BxT = positions_BxT.astype(jnp.int32)
  if cfg.backend == "ring":
    return ring_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT, causal, cfg)
  if cfg.backend == "ulysses":
    return ulysses_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT, causal, cfg)
  return local_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT, causal, cfg,
                         cfg.backend, sp)
