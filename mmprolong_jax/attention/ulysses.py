"""Ulysses (all-to-all) sequence parallelism over the mesh's 'sequence' axis.

Each shard trades its sequence slice of all heads for all tokens of H/sp heads
(all-to-all), runs an ordinary local kernel on the full row, and trades back. The
gathered row is in storage order, i.e. the model's layout; kernels that need natural
order un-permute locally (see local.py), the others mask by the gathered positions.

GQA: K kv heads split over sp shards only if every shard receives whole kv heads
matching its query heads. When sp does not divide K, each kv head is repeated so there
are lcm(K, sp) of them (e.g. 4 kv heads at sp=8 -> 8 heads, each sent to one shard);
the only impossible case is H not divisible by sp (28 heads at sp=8). Autodiff goes
through the collectives, so the backward is all-to-all as well.
"""
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from mmprolong_jax.attention.config import AttentionConfig
from mmprolong_jax.attention.local import local_attention
from mmprolong_jax.attention.sharding import HEAD_AXIS, SEQ_AXIS, resolve_mesh, seq_parallel_specs
from mmprolong_jax.parallel.mesh import axis_size


def kv_head_repeats(num_heads: int, num_kv_heads: int, sp: int) -> int:
  """How often each (per-shard) kv head is repeated before the all-to-all.

  Raises ValueError when the heads cannot be spread over sp shards.
  """
  if num_heads % num_kv_heads:
    raise ValueError(f"{num_heads} query heads are not a multiple of {num_kv_heads} kv heads.")
  if num_heads % sp:
    raise ValueError(f"Ulysses needs the {num_heads} query heads (per tensor shard) to be "
                     f"divisible by the sequence-parallel degree {sp}.")
  # Both divide num_heads, so lcm(num_kv_heads, sp) does too: whole groups per shard.
  return math.lcm(num_kv_heads, sp) // num_kv_heads


def _ulysses_shard(q, k, v, seg, pos, *, causal, cfg, sp, repeats):
  if repeats > 1:
    k, v = jnp.repeat(k, repeats, axis=2), jnp.repeat(v, repeats, axis=2)
  to_heads = functools.partial(lax.all_to_all, axis_name=SEQ_AXIS, split_axis=2, concat_axis=1,
                               tiled=True)
  q, k, v = to_heads(q), to_heads(k), to_heads(v)
  seg, pos = lax.all_gather((seg, pos), SEQ_AXIS, axis=1, tiled=True)
  o = local_attention(q, k, v, seg, pos, causal, cfg, cfg.local_backend, sp)
  return lax.all_to_all(o, SEQ_AXIS, split_axis=1, concat_axis=2, tiled=True)


def ulysses_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT, causal: bool,
                      cfg: AttentionConfig):
  mesh = resolve_mesh(cfg)
  tok_spec, row_spec = seq_parallel_specs(mesh, cfg, q_BxTxHxD.shape, k_BxTxKxD.shape[2])
  sp = axis_size(mesh, SEQ_AXIS)
  tp = axis_size(mesh, HEAD_AXIS) if tok_spec[2] else 1
  repeats = kv_head_repeats(q_BxTxHxD.shape[2] // tp, k_BxTxKxD.shape[2] // tp, sp)
  shard_fn = functools.partial(_ulysses_shard, causal=causal, cfg=cfg, sp=sp, repeats=repeats)
  return jax.shard_map(
      shard_fn, mesh=mesh, in_specs=(tok_spec, tok_spec, tok_spec, row_spec, row_spec),
      out_specs=tok_spec,
  )(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT)
