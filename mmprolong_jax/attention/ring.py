"""Ring attention over the mesh's 'sequence' axis.

Each of the sp shards keeps its queries; key/value blocks (with their segment ids and
positions) travel around the ring, one hop per step, and each step's partial result
(out, logsumexp) is merged by log-sum-exp. The next hop's ppermute is issued before
the current block is computed so the transfer hides behind the math.

The backward (custom_vjp) rings too and never gathers K/V: K/V travel again, each
step computes the block's gradient with the *final* output statistics, and the dK/dV
accumulators travel with their block, arriving home after sp hops. The accumulator
sent after step s is only consumed at step s+1, so that transfer overlaps step s+1's
compute.

Per-step kernels (`BlockwiseStep`, `FusedStep`) share one interface: fwd -> (out,
lse, masks) of the queries over one kv block, lse = -inf where a query sees nothing,
masks = what the backward needs to mask that step again (kept, so segment ids and
positions do not travel twice); bwd -> the block's (dq, dk, dv) in fp32 given the
final statistics.
- BlockwiseStep (jnp, any platform): masks from segment ids and positions, so any
  token layout is exact; tiles the mask empties are skipped.
- FusedStep (local_backend='cudnn'): one cuDNN ragged call per step (fused_step.py).
  With a sequence axis of 1 the ring is skipped: the shard runs the cuDNN packed path.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from mmprolong_jax.attention import blockwise
from mmprolong_jax.attention.config import AttentionConfig
from mmprolong_jax.attention.cudnn import cudnn_attention
from mmprolong_jax.attention.fused_step import FusedStep
from mmprolong_jax.attention.sharding import SEQ_AXIS, resolve_mesh, seq_parallel_specs
from mmprolong_jax.parallel.mesh import axis_size


@dataclasses.dataclass(frozen=True)
class BlockwiseStep:
  causal: bool
  block_q: int
  block_kv: int

  def fwd(self, q, seg_q, pos_q, k, v, seg_kv, pos_kv, **_):
    o, lse = blockwise.block_fwd(q, k, v, seg_q, seg_kv, pos_q, pos_kv, causal=self.causal,
                                 block_q=self.block_q, block_kv=self.block_kv)
    return o, lse, (seg_q, pos_q, seg_kv, pos_kv)

  def bwd_residuals(self, o_BxTxHxD, lse_BxTxH, do_BxTxHxD):
    delta_BxTxH = jnp.einsum("bthd,bthd->bth", do_BxTxHxD.astype(jnp.float32),
                             o_BxTxHxD.astype(jnp.float32))
    return lse_BxTxH, delta_BxTxH

  def bwd(self, q, k, v, do, residuals, masks, **_):
    lse_BxTxH, delta_BxTxH = residuals
    seg_q, pos_q, seg_kv, pos_kv = masks
    return blockwise.block_bwd(q, k, v, do, lse_BxTxH, delta_BxTxH, seg_q, seg_kv, pos_q,
                               pos_kv, causal=self.causal, block_q=self.block_q,
                               block_kv=self.block_kv)


def _hop(x, axis_name, sp):
  """Sends x from shard i to shard i+1 (mod sp)."""
  return lax.ppermute(x, axis_name, [(i, (i + 1) % sp) for i in range(sp)])


def _ring_fwd(q, k, v, seg, pos, kernel, axis_name, sp):
  kv = (k, v, seg, pos)
  o = lse = None
  step_masks = []
  for step in range(sp):
    if step + 1 < sp:
      kv_next = _hop(kv, axis_name, sp)
    o_step, lse_step, masks = kernel.fwd(q, seg, pos, *kv, step=step, axis_name=axis_name, sp=sp)
    step_masks.append(masks)
    o, lse = (o_step, lse_step) if o is None else blockwise.merge(o, lse, o_step, lse_step)
    if step + 1 < sp:
      kv = kv_next
  return o.astype(q.dtype), lse, tuple(step_masks)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def ring_core(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT, kernel, axis_name, sp):
  """Per-shard ring attention with a step kernel; with sp == 1 it is the kernel alone
  (no collectives, usable outside shard_map)."""
  return _ring_fwd(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT, kernel, axis_name, sp)[0]


def _ring_core_fwd(q, k, v, seg, pos, kernel, axis_name, sp):
  o, lse, step_masks = _ring_fwd(q, k, v, seg, pos, kernel, axis_name, sp)
  return o, (q, k, v, o, lse, step_masks)


def _ring_core_bwd(kernel, axis_name, sp, res, do_BxTxHxD):
  q, k, v, o, lse, step_masks = res
  residuals = kernel.bwd_residuals(o, lse, do_BxTxHxD)
  kv = (k, v)  # masks of every step were kept by the forward
  dq = jnp.zeros_like(q, jnp.float32)
  dkv_in_flight = None
  for step in range(sp):
    if step + 1 < sp:
      kv_next = _hop(kv, axis_name, sp)
    dq_step, dk, dv = kernel.bwd(q, *kv, do_BxTxHxD, residuals, step_masks[step], step=step)
    dq += dq_step
    if dkv_in_flight is not None:
      dk, dv = dk + dkv_in_flight[0], dv + dkv_in_flight[1]
    # The accumulator follows its K/V block; after the last hop it is back home.
    dkv_in_flight = (dk, dv) if sp == 1 else _hop((dk, dv), axis_name, sp)
    if step + 1 < sp:
      kv = kv_next
  dk, dv = dkv_in_flight
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None


ring_core.defvjp(_ring_core_fwd, _ring_core_bwd)


def step_kernel(causal: bool, cfg: AttentionConfig):
  if cfg.local_backend == "cudnn":
    return FusedStep(causal, cfg.layout, cfg.max_segments)
  return BlockwiseStep(causal, cfg.block_q, cfg.block_kv)


def ring_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT, causal: bool,
                   cfg: AttentionConfig, *, skip_degenerate_ring: bool = True):
  """Global-array entry point: shard_map over (batch, sequence[, heads]) and ring.

  skip_degenerate_ring=False keeps the one-step ring at sp == 1 (to time its kernel).
  """
  mesh = resolve_mesh(cfg)
  tok_spec, row_spec = seq_parallel_specs(mesh, cfg, q_BxTxHxD.shape, k_BxTxKxD.shape[2])
  sp = axis_size(mesh, SEQ_AXIS)
  kernel = step_kernel(causal, cfg)

  def per_shard(q, k, v, seg, pos):
    if sp == 1 and skip_degenerate_ring and isinstance(kernel, FusedStep):
      # Both layouts are the identity at sp == 1: the shard is the natural-order row.
      return cudnn_attention(q, k, v, seg, causal, cfg.max_segments)
    return ring_core(q, k, v, seg, pos, kernel, SEQ_AXIS, sp)

  return jax.shard_map(
      per_shard, mesh=mesh,
      in_specs=(tok_spec, tok_spec, tok_spec, row_spec, row_spec), out_specs=tok_spec,
  )(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT)
