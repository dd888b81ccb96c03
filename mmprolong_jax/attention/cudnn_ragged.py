"""cuDNN ragged-offset attention as two plain calls, for ring attention's fused steps.

Ring attention needs what jax's cuDNN custom_vjp keeps to itself: the forward's softmax
statistics, and a backward that takes the statistics and output from outside (the
*final* ones, merged over all ring steps). Both are reached through jax's private
`fused_attention_stablehlo` module: the forward through its `dot_product_attention`
with return_residual=True, the backward by binding the primitive that jax's own
backward rule binds.

A plan entry m of row b is one sequence for cuDNN: queries [q_off, q_off + q_len) attend
keys [kv_off, kv_off + kv_len) of the same row; -1 marks an unused entry (both sides).
Query and key ranges may differ, which is what lets one call cover past kv chunks.

Statistics layout ([B*M, H, T] fp32, checked on an H100 against the emulation in
tests/attention): row k is the k-th used entry counting row-major over (b, m); column i
is that entry's i-th query; the value is the natural-log log-sum-exp of the scaled
scores. Rows and columns outside the entries are unspecified, as are the outputs and
gradients at rows no entry covers: callers mask them.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax._src.cudnn import fused_attention_stablehlo as cudnn_fa


class RaggedPlan(NamedTuple):
  """Per row b and entry m: lengths [B, M] and offsets [B, M + 1] (last column -1)."""
  q_len_BxM: jax.Array
  q_off_BxM1: jax.Array
  kv_len_BxM: jax.Array
  kv_off_BxM1: jax.Array


def _mask_type(causal: bool):
  # Causal entries always have equal, aligned q and kv ranges, so the diagonal's
  # alignment (top-left or bottom-right) does not matter.
  return cudnn_fa.MaskType.PADDING_CAUSAL if causal else cudnn_fa.MaskType.PADDING


def ragged_fwd(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, plan: RaggedPlan, causal: bool):
  """(out_BxTxHxD in q's dtype, stats [B*M, H, T] fp32)."""
  out_BxTxHxD, stats_KxHxT = cudnn_fa.dot_product_attention(
      q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, q_seqlen=plan.q_len_BxM, kv_seqlen=plan.kv_len_BxM,
      q_offsets=plan.q_off_BxM1, kv_offsets=plan.kv_off_BxM1,
      scale=q_BxTxHxD.shape[-1] ** -0.5, mask_type=_mask_type(causal), qkv_layout="BTNH",
      return_residual=True)
  return out_BxTxHxD, stats_KxHxT


def ragged_bwd(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, do_BxTxHxD, o_BxTxHxD, stats_KxHxT,
               plan: RaggedPlan, causal: bool):
  """(dq, dk, dv) in the inputs' dtype, given output o and its statistics."""
  unused = jnp.zeros(0, q_BxTxHxD.dtype)
  dq, dk, dv = cudnn_fa._dot_product_attention_bwd_p_wrapper.bind(
      q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, unused, plan.q_len_BxM, plan.kv_len_BxM,
      plan.q_off_BxM1, plan.kv_off_BxM1, unused, unused, stats_KxHxT, o_BxTxHxD, do_BxTxHxD,
      scale=q_BxTxHxD.shape[-1] ** -0.5, seed=42, dropout_rate=0.0,
      variadic_args=(False, False), mask_type=_mask_type(causal),
      layout=cudnn_fa.AttentionLayout.BTNH.value, sliding_window_length=None)
  return dq, dk, dv


class RaggedOps(NamedTuple):
  fwd: object
  bwd: object


CUDNN = RaggedOps(ragged_fwd, ragged_bwd)
