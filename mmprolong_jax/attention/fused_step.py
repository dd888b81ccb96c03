"""Ring attention's fused per-step kernel: one ragged-offset attention call per ring step.

Shard r holds contiguous ranges of original positions in increasing order (zigzag:
chunks r and 2sp-1-r of 2sp; natural: chunk r of sp). At step s the kv block of shard
j = (r - s) mod sp arrives; relative to shard r's queries each of its chunks is entirely
past, future, or (step 0 only) the diagonal. With segments contiguous, every key a query
may see at a step lies in one contiguous storage range per (query run, segment):
- step 0 (own block): the query's segment run itself, causal. Runs are listed in storage
  order, which is position order within the shard, so plain causal masking is exact.
- later steps (causal): the visible kv chunks form a storage prefix [0, kv_limit) and the
  queries that see any form a suffix [q_from, T); each query run meets the run of its
  segment inside that prefix, without a mask (all of it is past).
- non-causal: every step as the later ones with the whole block visible.
Queries that see nothing at a step are left out (no zero-length entries); their step
output is 0 with log-sum-exp -inf, which the log-sum-exp merge ignores. Distinct runs
belong to distinct segments, so no two entries share query rows or key rows: cuDNN's
backward writes dK/dV per entry and would clobber a shared key row.

q_from and kv_limit depend on the shard index, a traced value inside shard_map, so they
are data; the mask type (causal or not) is static per step.

Requirements (as for the packed cuDNN path): positions are the default ones of
cfg.layout (they are not read), each segment id is one contiguous run of the row, and a
shard row holds at most `max_segments` runs (more are dropped).
"""
import dataclasses

import jax.numpy as jnp
from jax import lax

from mmprolong_jax.attention import cudnn_ragged
from mmprolong_jax.attention.cudnn import segment_runs
from mmprolong_jax.attention.cudnn_ragged import RaggedPlan

# The ragged kernel pair every step calls; tests substitute a jnp emulation.
ragged_ops = cudnn_ragged.CUDNN


def own_block_plan(seg_BxT, max_segments: int) -> RaggedPlan:
  """Each segment run of the shard attends to itself (mask causal or not)."""
  lengths_BxM, offsets_BxM1 = segment_runs(seg_BxT, max_segments)
  return RaggedPlan(lengths_BxM, offsets_BxM1, lengths_BxM, offsets_BxM1)


def cross_block_plan(seg_q_BxT, seg_kv_BxS, q_from, kv_limit, max_segments: int) -> RaggedPlan:
  """Queries [q_from, T) see keys [0, kv_limit) of their own segment, unmasked."""
  T, S = seg_q_BxT.shape[1], seg_kv_BxS.shape[1]
  seg_q_BxT = jnp.where(jnp.arange(T) >= q_from, seg_q_BxT, 0)
  seg_kv_BxS = jnp.where(jnp.arange(S) < kv_limit, seg_kv_BxS, 0)
  q_len_BxM, q_off_BxM1 = segment_runs(seg_q_BxT, max_segments)
  q_id_BxM = jnp.take_along_axis(seg_q_BxT, jnp.maximum(q_off_BxM1[:, :-1], 0), axis=1)
  # A segment's visible keys are one contiguous run: locate it by its id.
  same_BxMxS = (seg_kv_BxS[:, None, :] == q_id_BxM[:, :, None]) & (q_len_BxM[:, :, None] > 0)
  kv_len_BxM = same_BxMxS.sum(-1, dtype=jnp.int32)
  found_BxM = kv_len_BxM > 0
  kv_off_BxM = jnp.argmax(same_BxMxS, axis=-1).astype(jnp.int32)
  entry = lambda x_BxM: jnp.where(found_BxM, x_BxM, -1)  # noqa: E731
  none_Bx1 = jnp.full((seg_q_BxT.shape[0], 1), -1, jnp.int32)
  return RaggedPlan(entry(q_len_BxM), jnp.concatenate([entry(q_off_BxM1[:, :-1]), none_Bx1], 1),
                    entry(kv_len_BxM), jnp.concatenate([entry(kv_off_BxM), none_Bx1], 1))


def cross_block_window(layout: str, sp: int, shard, step: int, T: int):
  """(q_from, kv_limit) of a causal step > 0 on shard `shard` (traced int)."""
  source = (shard - step) % sp
  earlier = source < shard
  if layout == "natural":
    # One chunk per shard: all past (earlier shard) or all future.
    return jnp.where(earlier, 0, T), T
  # zigzag, chunk c = T/2: source j < r: both query chunks see kv chunk j (first half);
  # j > r: only the late query chunk sees, and it sees both kv chunks.
  c = T // 2
  return jnp.where(earlier, 0, c), jnp.where(earlier, c, T)


def _entry_of_token(len_BxM, off_BxM, T):
  """[B, T]: index m of the entry covering each row, -1 where none does."""
  B, M = len_BxM.shape
  used_BxM = len_BxM > 0
  mark_BxM = jnp.where(used_BxM, jnp.arange(1, M + 1), 0)
  b_BxM = jnp.broadcast_to(jnp.arange(B)[:, None], (B, M))
  marks_BxT1 = jnp.zeros((B, T + 1), jnp.int32)
  marks_BxT1 = marks_BxT1.at[b_BxM, jnp.where(used_BxM, off_BxM, T)].add(mark_BxM)
  marks_BxT1 = marks_BxT1.at[b_BxM, jnp.where(used_BxM, off_BxM + len_BxM, T)].add(-mark_BxM)
  return jnp.cumsum(marks_BxT1, axis=1)[:, :T] - 1


def _stats_rows(len_BxM):
  """[B, M]: the statistics row of each entry (entries counted row-major, as jax packs
  them for cuDNN: every length >= 0 is an entry)."""
  used = (len_BxM >= 0).reshape(-1)
  return (jnp.cumsum(used) - 1).reshape(len_BxM.shape)


def lse_from_stats(stats_KxHxT, plan: RaggedPlan):
  """Per-token log-sum-exp [B, T, H] (-inf where no entry covers) and the covered mask."""
  M = plan.q_len_BxM.shape[1]
  T = stats_KxHxT.shape[2]
  q_off_BxM = plan.q_off_BxM1[:, :M]
  m_BxT = _entry_of_token(plan.q_len_BxM, q_off_BxM, T)
  covered_BxT = m_BxT >= 0
  m_BxT = jnp.maximum(m_BxT, 0)
  row_BxT = jnp.take_along_axis(_stats_rows(plan.q_len_BxM), m_BxT, axis=1)
  col_BxT = jnp.clip(jnp.arange(T) - jnp.take_along_axis(q_off_BxM, m_BxT, axis=1), 0, T - 1)
  lse_BxTxH = stats_KxHxT[row_BxT, :, col_BxT]
  return jnp.where(covered_BxT[..., None], lse_BxTxH, -jnp.inf), covered_BxT


def stats_from_lse(lse_BxTxH, plan: RaggedPlan):
  """Inverse of `lse_from_stats` on covered rows; 0 elsewhere (never read)."""
  B, T, _ = lse_BxTxH.shape
  M = plan.q_len_BxM.shape[1]
  used_BxM = plan.q_len_BxM >= 0
  row_BxM = jnp.where(used_BxM, _stats_rows(plan.q_len_BxM), B * M)
  b_K = jnp.zeros(B * M, jnp.int32).at[row_BxM].set(
      jnp.broadcast_to(jnp.arange(B, dtype=jnp.int32)[:, None], (B, M)), mode="drop")
  off_K = jnp.zeros(B * M, jnp.int32).at[row_BxM].set(plan.q_off_BxM1[:, :M], mode="drop")
  t_KxT = jnp.minimum(off_K[:, None] + jnp.arange(T), T - 1)
  stats_KxTxH = lse_BxTxH[b_K[:, None], t_KxT]
  return jnp.moveaxis(jnp.where(jnp.isfinite(stats_KxTxH), stats_KxTxH, 0.0), 2, 1)


@dataclasses.dataclass(frozen=True)
class FusedStep:
  """Ring step kernel over ragged attention (cuDNN on GPU); see the module docstring."""
  causal: bool
  layout: str
  max_segments: int

  def plan(self, seg_q_BxT, seg_kv_BxS, step: int, shard, sp: int) -> RaggedPlan:
    M = max(self.max_segments, 2)  # the ragged path needs room for >= 2 entries
    if step == 0:
      return own_block_plan(seg_q_BxT, M)
    T = seg_q_BxT.shape[1]
    q_from, kv_limit = (cross_block_window(self.layout, sp, shard, step, T) if self.causal
                        else (0, seg_kv_BxS.shape[1]))
    return cross_block_plan(seg_q_BxT, seg_kv_BxS, q_from, kv_limit, M)

  def fwd(self, q, seg_q, pos_q, k, v, seg_kv, pos_kv, *, step, axis_name, sp):
    del pos_q, pos_kv  # masks follow from the layout and the shard index
    # Step 0 needs no shard index, so a one-step ring also runs outside shard_map.
    shard = None if step == 0 else lax.axis_index(axis_name)
    plan = self.plan(seg_q, seg_kv, step, shard, sp)
    return (*self.planned_fwd(q, k, v, plan, step=step), plan)

  def planned_fwd(self, q, k, v, plan: RaggedPlan, *, step):
    out_BxTxHxD, stats_KxHxT = ragged_ops.fwd(q, k, v, plan, self.causal and step == 0)
    lse_BxTxH, covered_BxT = lse_from_stats(stats_KxHxT, plan)
    return jnp.where(covered_BxT[:, :, None, None], out_BxTxHxD, 0), lse_BxTxH

  def bwd_residuals(self, o_BxTxHxD, lse_BxTxH, do_BxTxHxD):
    del do_BxTxHxD  # cuDNN forms rowsum(dO * O) itself
    return o_BxTxHxD, lse_BxTxH

  def bwd(self, q, k, v, do, residuals, plan: RaggedPlan, *, step):
    o_BxTxHxD, lse_BxTxH = residuals
    stats_KxHxT = stats_from_lse(lse_BxTxH, plan)
    dq, dk, dv = ragged_ops.bwd(q, k, v, do.astype(q.dtype), o_BxTxHxD, stats_KxHxT, plan,
                                self.causal and step == 0)
    M = plan.q_len_BxM.shape[1]
    q_rows_BxT = _entry_of_token(plan.q_len_BxM, plan.q_off_BxM1[:, :M], q.shape[1]) >= 0
    kv_rows_BxS = _entry_of_token(plan.kv_len_BxM, plan.kv_off_BxM1[:, :M], k.shape[1]) >= 0
    def keep(x, rows):  # rows no entry covers hold whatever cuDNN left there
      return jnp.where(rows[:, :, None, None], x.astype(jnp.float32), 0.0)
    return keep(dq, q_rows_BxT), keep(dk, kv_rows_BxS), keep(dv, kv_rows_BxS)
