"""Ring attention with the fused (ragged cuDNN) per-step kernel.

On CPU the cuDNN calls are replaced by the jnp emulation in ragged_emulation.py, so
the ring logic, the per-step plans and the statistics layout run for real on 8
simulated devices. The GPU tests check the real kernels against that emulation and the
per-step kernel against the jnp reference at Qwen2.5 head shapes.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_testlib import (B, LLM, T, VISION, assert_close, check_against_reference,
                              out_and_grads, random_qkv, random_segments)
from mmprolong_jax.attention import AttentionConfig, fused_step, ring, zigzag_permutation
from mmprolong_jax.attention.layout import attention_mask
from mmprolong_jax.attention.reference import reference_attention
from mmprolong_jax.parallel.mesh import MeshConfig, make_mesh
from ragged_emulation import EMULATED

MESHES = {
    "seq8": MeshConfig(sequence=8, fsdp=1),
    "seq4_fsdp2": MeshConfig(sequence=4, fsdp=2),
    "seq2_data4": MeshConfig(sequence=2, data=4, fsdp=1),
}


@pytest.fixture
def emulated(monkeypatch):
  monkeypatch.setattr(fused_step, "ragged_ops", EMULATED)


def _plan_mask(plan, T, S, causal_step):
  """Dense [B, T, S] pairs the plan's entries cover, and how often each row is covered."""
  plan = jax.tree.map(np.asarray, plan)
  Bn, M = plan.q_len_BxM.shape
  mask = np.zeros((Bn, T, S), bool)
  q_uses, kv_uses = np.zeros((Bn, T), int), np.zeros((Bn, S), int)
  for b in range(Bn):
    for m in range(M):
      ql, qo, kl, ko = (plan.q_len_BxM[b, m], plan.q_off_BxM1[b, m], plan.kv_len_BxM[b, m],
                        plan.kv_off_BxM1[b, m])
      assert (ql < 0) == (kl < 0) == (qo < 0) == (ko < 0), "entry half used"
      if ql < 0:
        continue
      assert ql > 0 and kl > 0, "zero-length entry"
      block = np.ones((ql, kl), bool)
      if causal_step:
        assert (ql, qo) == (kl, ko), "causal entries must be aligned"
        block = np.tril(block)
      mask[b, qo:qo + ql, ko:ko + kl] |= block
      q_uses[b, qo:qo + ql] += 1
      kv_uses[b, ko:ko + kl] += 1
  return mask, q_uses, kv_uses


@pytest.mark.parametrize("layout,sp,causal", [
    ("zigzag", 8, True), ("zigzag", 2, True), ("natural", 4, True), ("zigzag", 4, False)])
def test_step_plans_cover_exactly_the_mask(layout, sp, causal):
  """Per shard and step, the entries cover exactly the attention mask of (own queries,
  arriving block), no row twice (cuDNN's backward would clobber it), and segments of
  several runs (padding gaps) or crossing chunk and shard boundaries."""
  rng = np.random.default_rng(sp)
  seg = random_segments(rng, B, T, gaps=True)
  perm = zigzag_permutation(T, sp)[0] if layout == "zigzag" else np.arange(T)
  seg_shards = np.stack(np.split(seg[:, perm], sp, axis=1))       # [sp, B, T/sp]
  pos_shards = np.stack(np.split(np.broadcast_to(perm, (B, T)), sp, axis=1))
  kernel = fused_step.FusedStep(causal, layout, max_segments=8)
  for step in range(sp):
    source = (np.arange(sp) - step) % sp
    plans = jax.jit(jax.vmap(lambda sq, skv, r: kernel.plan(sq, skv, step, r, sp)))(
        seg_shards, seg_shards[source], np.arange(sp))
    for r in range(sp):
      want = np.asarray(attention_mask(seg_shards[r], seg_shards[source[r]], pos_shards[r],
                                       pos_shards[source[r]], causal))
      got, q_uses, kv_uses = _plan_mask(jax.tree.map(lambda x: x[r], plans), T // sp, T // sp,
                                        causal and step == 0)
      np.testing.assert_array_equal(got, want, err_msg=f"shard {r}, step {step}")
      assert q_uses.max() <= 1 and kv_uses.max() <= 1


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_causal_gqa_packed(emulated, mesh_name):
  check_against_reference(MESHES[mesh_name], "ring", True, LLM, seed=10, gaps=True,
                          local_backend="cudnn")


def test_noncausal_vision(emulated):
  check_against_reference(MESHES["seq2_data4"], "ring", False, VISION, seed=11, gaps=True,
                          local_backend="cudnn")


def test_natural_layout(emulated):
  check_against_reference(MESHES["seq2_data4"], "ring", True, LLM, layout="natural", seed=12,
                          gaps=True, local_backend="cudnn")


def _one_device_ring(causal, skip_degenerate_ring):
  mesh = make_mesh(MeshConfig(fsdp=1), jax.devices()[:1])
  cfg = AttentionConfig("ring", mesh=mesh, layout="zigzag", local_backend="cudnn")

  def f(q, k, v, do, seg, pos):
    out, vjp = jax.vjp(lambda q, k, v: ring.ring_attention(
        q, k, v, seg, pos, causal, cfg, skip_degenerate_ring=skip_degenerate_ring), q, k, v)
    return out, vjp(do)
  return jax.jit(f)


@pytest.mark.parametrize("causal", [True, False])
def test_one_step_ring_kernel(emulated, causal):
  """The fused step kernel alone (sp = 1 without the shortcut): own block only."""
  rng = np.random.default_rng(13)
  q, k, v, do = random_qkv(rng, B, T, **LLM)
  seg = jnp.asarray(random_segments(rng, B, T, gaps=True))
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  assert_close(_one_device_ring(causal, False)(q, k, v, do, seg, pos),
               out_and_grads(AttentionConfig("reference"), causal)(q, k, v, do, seg, pos))


def test_degenerate_axis_runs_the_packed_local_kernel(monkeypatch):
  """With a sequence axis of 1, ring(cudnn) is the local cuDNN packed kernel: no ring
  step runs, and the shard's row is passed in natural order."""
  calls = []

  def local_kernel(q, k, v, seg, causal, max_segments):
    calls.append(max_segments)
    pos = jnp.broadcast_to(jnp.arange(seg.shape[1]), seg.shape)
    return reference_attention(q, k, v, seg, seg, pos, pos, causal)

  def no_step(*args):
    raise AssertionError("a ring step ran at sp == 1")

  monkeypatch.setattr(ring, "cudnn_attention", local_kernel)
  monkeypatch.setattr(fused_step, "ragged_ops", fused_step.cudnn_ragged.RaggedOps(no_step, no_step))
  rng = np.random.default_rng(14)
  q, k, v, do = random_qkv(rng, B, T, **LLM)
  seg = jnp.asarray(random_segments(rng, B, T))
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  assert_close(_one_device_ring(True, True)(q, k, v, do, seg, pos),
               out_and_grads(AttentionConfig("reference"), True)(q, k, v, do, seg, pos))
  assert calls == [8]


def _rel(got, want, rows=None):
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  if rows is not None:
    got, want = got[rows], want[rows]
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["own_causal", "own_full", "earlier_source", "later_source"])
def test_cudnn_ragged_ops_match_emulation(kind):
  """The real cuDNN pair against the emulation the CPU tests trust: outputs and the
  statistics layout of the forward; gradients of the backward fed the emulation's
  statistics and output."""
  from mmprolong_jax.attention import cudnn_ragged
  rng = np.random.default_rng(20)
  Bn, Tn, H, K, D = 2, 512, 8, 2, 128
  q, k, v, do = (x.astype(jnp.bfloat16) for x in random_qkv(rng, Bn, Tn, H, K, D))
  seg = random_segments(rng, Bn, 2 * Tn, max_segments=5, gaps=True)
  seg_r = np.split(seg[:, zigzag_permutation(2 * Tn, 2)[0]], 2, axis=1)  # shards of sp=2
  kernel = fused_step.FusedStep(kind != "own_full", "zigzag", max_segments=8)
  shard, source = {"earlier_source": (1, 0), "later_source": (0, 1)}.get(kind, (0, 0))
  step = (shard - source) % 2
  plan = kernel.plan(jnp.asarray(seg_r[shard]), jnp.asarray(seg_r[source]), step, shard, 2)
  causal = kind == "own_causal"
  up = lambda x: x.astype(jnp.float32)  # noqa: E731
  out, stats = cudnn_ragged.ragged_fwd(q, k, v, plan, causal)
  want_out, want_stats = EMULATED.fwd(up(q), up(k), up(v), plan, causal)
  rows = np.isfinite(np.asarray(want_out)[:, :, 0, 0])
  defined = np.isfinite(np.asarray(want_stats))
  stats_err = float(np.abs(np.asarray(stats)[defined] - np.asarray(want_stats)[defined]).max())
  print(f"{kind}: rows {rows.sum()}, out rel {_rel(out, want_out, rows):.2e}, "
        f"stats max abs {stats_err:.2e}")
  assert rows.sum() > 0 and _rel(out, want_out, rows) < 2e-2 and stats_err < 2e-2
  o = jnp.where(rows[:, :, None, None], want_out, 0).astype(jnp.bfloat16)
  stats = jnp.where(defined, want_stats, 0.0)
  got = cudnn_ragged.ragged_bwd(q, k, v, do, o, stats, plan, causal)
  want = EMULATED.bwd(up(q), up(k), up(v), up(do), up(o), stats, plan, causal)
  for name, g, w in zip(("dq", "dk", "dv"), got, want):
    ok = np.isfinite(np.asarray(w)[:, :, 0, 0])
    print(f"  {name} rel {_rel(g, w, ok):.2e}")
    assert _rel(g, w, ok) < 2e-2


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
def test_fused_steps_simulated_ring(causal):
  """Every (shard, step) of a 2-shard zigzag ring run one after the other on one GPU
  with the real kernels (own block, earlier and later source blocks), merged, against
  the fp32 reference: Qwen2.5-7B heads, 2K tokens per shard, bf16."""
  from mmprolong_jax.attention.blockwise import merge
  sp, Bn, Tn, H, K, D = 2, 2, 4096, 28, 4, 128
  rng = np.random.default_rng(21)
  q, k, v, do = (x.astype(jnp.bfloat16) for x in random_qkv(rng, Bn, Tn, H, K, D))
  seg = random_segments(rng, Bn, Tn, max_segments=6, gaps=True)
  perm, inverse = zigzag_permutation(Tn, sp)
  Q, Kv, V, DO, S = (jnp.split(jnp.asarray(x)[:, perm], sp, axis=1) for x in (q, k, v, do, seg))
  kernel = fused_step.FusedStep(causal, "zigzag", max_segments=8)
  fwd = jax.jit(kernel.planned_fwd, static_argnames="step")
  bwd = jax.jit(kernel.bwd, static_argnames="step")
  plans, res = {}, []
  for r in range(sp):
    o = lse = None
    for s in range(sp):
      j = (r - s) % sp
      plans[r, s] = kernel.plan(S[r], S[j], s, r, sp)
      o_s, lse_s = fwd(Q[r], Kv[j], V[j], plans[r, s], step=s)
      o, lse = (o_s, lse_s) if o is None else merge(o, lse, o_s, lse_s)
    res.append((o.astype(jnp.bfloat16), lse))
  dq, dk, dv = ([jnp.zeros(x.shape, jnp.float32) for x in X] for X in (Q, Kv, V))
  for r in range(sp):
    for s in range(sp):
      j = (r - s) % sp
      g = bwd(Q[r], Kv[j], V[j], DO[r], res[r], plans[r, s], step=s)
      dq[r], dk[j], dv[j] = dq[r] + g[0], dk[j] + g[1], dv[j] + g[2]
  whole = lambda parts: jnp.concatenate(parts, axis=1)[:, inverse]  # noqa: E731
  got = (whole([o for o, _ in res]), (whole(dq), whole(dk), whole(dv)))
  up = lambda x: x.astype(jnp.float32)  # noqa: E731
  want = out_and_grads(AttentionConfig("reference"), causal)(
      up(q), up(k), up(v), up(do), jnp.asarray(seg), jnp.broadcast_to(jnp.arange(Tn), (Bn, Tn)))
  errs = [_rel(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))]
  print(f"causal={causal}: rel L2 out, dq, dk, dv = {[f'{e:.2e}' for e in errs]}")
  assert max(errs) < 2e-2
  assert not np.any(np.asarray(got[0], np.float32)[seg == 0])
