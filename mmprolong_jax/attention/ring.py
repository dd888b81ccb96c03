"""Ring attention over the mesh's 'sequence' axis.

Each of the sp shards keeps its queries; key/value blocks (with their segment ids and
positions) travel around the ring, one hop per step, and each step's partial result
(out, logsumexp) is merged by log-sum-exp. The next hop's ppermute is issued before
the current block is computed so the transfer hides behind the math.

The backward (custom_vjp) rings too and never gathers K/V: K/V travel again, each
step computes the block's gradient with the *final* logsumexp, and the dK/dV
accumulators travel with their block, arriving home after sp hops. The accumulator
sent after step s is only consumed at step s+1, so that transfer overlaps step s+1's
compute.

Masks come from segment ids and positions alone, so any token layout is correct; the
zigzag layout makes the work equal across shards, and tiles that the mask empties
(future chunks, other segments) are skipped inside the block kernel.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

from mmprolong_jax.attention import blockwise
from mmprolong_jax.attention.config import AttentionConfig
from mmprolong_jax.attention.sharding import SEQ_AXIS, resolve_mesh, seq_parallel_specs
from mmprolong_jax.parallel.mesh import axis_size


def _hop(x, axis_name, sp):
  """Sends x from shard i to shard i+1 (mod sp)."""
  return lax.ppermute(x, axis_name, [(i, (i + 1) % sp) for i in range(sp)])


def _ring_fwd(q, k, v, seg, pos, causal, axis_name, sp, block_q, block_kv):
  kernel = functools.partial(blockwise.block_fwd, causal=causal, block_q=block_q,
                             block_kv=block_kv)
  kv = (k, v, seg, pos)
  o = lse = None
  for step in range(sp):
    if step + 1 < sp:
      kv_next = _hop(kv, axis_name, sp)
    o_step, lse_step = kernel(q, kv[0], kv[1], seg, kv[2], pos, kv[3])
    o, lse = (o_step, lse_step) if o is None else blockwise.merge(o, lse, o_step, lse_step)
    if step + 1 < sp:
      kv = kv_next
  return o.astype(q.dtype), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9))
def ring_core(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT, causal, axis_name, sp,
              block_q, block_kv):
  """Per-shard ring attention; with sp == 1 it is single-device flash attention
  (no collectives, usable outside shard_map)."""
  return _ring_fwd(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT, causal, axis_name, sp,
                   block_q, block_kv)[0]


def _ring_core_fwd(q, k, v, seg, pos, causal, axis_name, sp, block_q, block_kv):
  o, lse = _ring_fwd(q, k, v, seg, pos, causal, axis_name, sp, block_q, block_kv)
  return o, (q, k, v, seg, pos, o, lse)


def _ring_core_bwd(causal, axis_name, sp, block_q, block_kv, res, do_BxTxHxD):
  q, k, v, seg, pos, o, lse = res
  delta_BxTxH = jnp.einsum("bthd,bthd->bth", do_BxTxHxD.astype(jnp.float32),
                           o.astype(jnp.float32))
  kernel = functools.partial(blockwise.block_bwd, causal=causal, block_q=block_q,
                             block_kv=block_kv)
  kv = (k, v, seg, pos)
  dq = jnp.zeros_like(q, jnp.float32)
  dkv_in_flight = None
  for step in range(sp):
    if step + 1 < sp:
      kv_next = _hop(kv, axis_name, sp)
    dq_step, dk, dv = kernel(q, kv[0], kv[1], do_BxTxHxD, lse, delta_BxTxH, seg, kv[2], pos, kv[3])
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


def ring_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT, causal: bool,
                   cfg: AttentionConfig):
  """Global-array entry point: shard_map over (batch, sequence[, heads]) and ring."""
  mesh = resolve_mesh(cfg)
  tok_spec, row_spec = seq_parallel_specs(mesh, cfg, q_BxTxHxD.shape, k_BxTxKxD.shape[2])
  sp = axis_size(mesh, SEQ_AXIS)

  def per_shard(q, k, v, seg, pos):
    return ring_core(q, k, v, seg, pos, causal, SEQ_AXIS, sp, cfg.block_q, cfg.block_kv)

  return jax.shard_map(
      per_shard, mesh=mesh,
      in_specs=(tok_spec, tok_spec, tok_spec, row_spec, row_spec), out_specs=tok_spec,
  )(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT)
