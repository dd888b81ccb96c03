"""cuDNN fused flash attention with packed segments (NVIDIA Hopper or newer).

jax.nn.dot_product_attention(implementation='cudnn') takes only one length per row.
The packed route is cuDNN's ragged ("THD") layout: each row is described by the start
offset and length of every contiguous segment, and the fused kernel runs each segment
as its own sequence, skipping all cross-segment tiles and never building a T x T mask.
jax exposes it through the q_offsets/kv_offsets arguments of
jax._src.cudnn.fused_attention_stablehlo.dot_product_attention (not yet re-exported by
jax.nn). Offsets are computed here from segment ids inside jit.

Requirements: segments are contiguous runs in storage order and positions increase
within a segment (natural layout; a zigzag stream is un-permuted by the caller); at
most `max_segments` runs per row. Padding (id 0) is left out of every run, so the
kernel never reads it; what the kernel leaves at padding rows (outputs, dq, dk, dv) is
zeroed so nothing leaks into values or gradients. XLA sizes the grid and the backward's
fp32 workspaces for B * max_segments rows of length T, so keep max_segments tight
(measurements in README.md). Causal batches whose rows each hold one sequence from index 0
skip the ragged route for the plain causal kernel (`cudnn_attention`).
"""
import jax
import jax.numpy as jnp
# The ragged-offset arguments are only on this (private) entry point.
from jax._src.cudnn import fused_attention_stablehlo as cudnn_fa


def segment_runs(seg_BxT, max_segments: int):
  """(lengths_BxM, offsets_BxM1) of the non-padding contiguous runs, -1 filled."""
  B, T = seg_BxT.shape
  starts_BxT = jnp.concatenate(
      [jnp.ones((B, 1), bool), seg_BxT[:, 1:] != seg_BxT[:, :-1]], axis=1)
  run_BxT = jnp.cumsum(starts_BxT, axis=1) - 1
  run_len_BxT = jnp.zeros((B, T), jnp.int32).at[jnp.arange(B)[:, None], run_BxT].add(1)
  first_BxT = starts_BxT & (seg_BxT != 0)
  offsets_BxM = jax.vmap(
      lambda first_T: jnp.nonzero(first_T, size=max_segments, fill_value=-1)[0])(first_BxT)
  offsets_BxM = offsets_BxM.astype(jnp.int32)
  present_BxM = offsets_BxM >= 0
  run_BxM = jnp.take_along_axis(run_BxT, jnp.maximum(offsets_BxM, 0), axis=1)
  lengths_BxM = jnp.where(present_BxM, jnp.take_along_axis(run_len_BxT, run_BxM, axis=1), -1)
  offsets_BxM1 = jnp.concatenate([offsets_BxM, jnp.full((B, 1), -1, jnp.int32)], axis=1)
  return lengths_BxM, offsets_BxM1


@jax.custom_vjp
def _zero_grad_outside(x_BxTxHxD, valid_BxT):
  """x unchanged; its gradient zeroed where not valid. The kernel never reads padding rows, so
  only the gradients it leaves there need masking (a jnp.where on the inputs would also cost a
  forward pass over q, k and v: 8% of the packed 32K forward call on an H100)."""
  return x_BxTxHxD


def _zero_grad_fwd(x, valid_BxT):
  return x, valid_BxT


def _zero_grad_bwd(valid_BxT, g_BxTxHxD):
  return jnp.where(valid_BxT[:, :, None, None], g_BxTxHxD, 0), None


_zero_grad_outside.defvjp(_zero_grad_fwd, _zero_grad_bwd)


def one_run_rows(seg_BxT):
  """True when every row is at most one segment, starting at index 0, then padding."""
  n_B = (seg_BxT != 0).sum(axis=1)
  prefix_BxT = jnp.arange(seg_BxT.shape[1]) < n_B[:, None]
  return jnp.all(jnp.where(prefix_BxT, seg_BxT == seg_BxT[:, :1], seg_BxT == 0))


def _plain_causal(q, k, v, valid_BxT):
  """Causal kernel with no mask but the diagonal, for rows that `one_run_rows` accepts.

  Real queries never reach the trailing padding. Padding queries do read real keys, but
  their output is zeroed by the caller, so their dO is 0 and they add exactly nothing to
  dk/dv, provided their scores and outputs are finite: hence the zeroed inputs."""
  q, k, v = (jnp.where(valid_BxT[:, :, None, None], x, 0) for x in (q, k, v))
  return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")


def _ragged(q, k, v, seg_BxT, causal: bool, max_segments: int):
  # The packed path switches on only with room for >= 2 segments per row.
  lengths_BxM, offsets_BxM1 = segment_runs(seg_BxT, max(max_segments, 2))
  mask_type = cudnn_fa.MaskType.PADDING_CAUSAL if causal else cudnn_fa.MaskType.PADDING
  return cudnn_fa.dot_product_attention(
      q, k, v, q_seqlen=lengths_BxM, kv_seqlen=lengths_BxM, q_offsets=offsets_BxM1,
      kv_offsets=offsets_BxM1, scale=q.shape[-1] ** -0.5, mask_type=mask_type,
      qkv_layout="BTNH")


def cudnn_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, causal: bool, max_segments: int):
  """max_segments == 1 promises one segment per row starting at index 0 (rows of windows or
  images): the plain kernel with per-row lengths, no ragged bookkeeping.

  Causal with max_segments >= 2 checks the data: when every row holds one sequence (a
  long document filling a row) it runs cuDNN's causal kernel without a padding mask,
  4% faster than the masked variants (one 128K row on an H100: 799 ms fwd+bwd against
  826 ms with per-row lengths and 836 ms ragged); packed rows take the ragged route."""
  valid_BxT = seg_BxT != 0
  qkv = (q_BxTxHxD, k_BxTxKxD, v_BxTxKxD)

  def unread(*xs):
    # For the kernels that skip padding; _plain_causal zeroes its inputs instead, which
    # zeroes their gradients there as well.
    return [_zero_grad_outside(x, valid_BxT) for x in xs]

  if max_segments == 1:
    # Empty rows get length 1: they read one padding key, and their output is zeroed below.
    lengths_B = jnp.maximum(valid_BxT.sum(axis=1, dtype=jnp.int32), 1)
    out = jax.nn.dot_product_attention(*unread(*qkv), query_seq_lengths=lengths_B,
                                       key_value_seq_lengths=lengths_B, is_causal=causal,
                                       implementation="cudnn")
  elif causal:
    out = jax.lax.cond(one_run_rows(seg_BxT),
                       lambda q, k, v: _plain_causal(q, k, v, valid_BxT),
                       lambda q, k, v: _ragged(*unread(q, k, v), seg_BxT, True, max_segments),
                       *qkv)
  else:
    out = _ragged(*unread(*qkv), seg_BxT, False, max_segments)
  return jnp.where(valid_BxT[:, :, None, None], out, 0)
