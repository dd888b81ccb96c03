"""Attention TFLOP/s on one GPU: every backend that runs there, at Qwen2.5-7B head shapes.

    python3 benchmarks/attention.py [--check] [--extra] [--per-segment] [--tokamax]
                                    [--seq-lens 32768,65536,131072] [--out DIR]

28 query heads, 4 kv heads, head dim 128, bf16, batch 1, causal. Rows are either one
full-length segment ("unpacked") or ~6 segments of random lengths plus ~1% padding
("packed"). TFLOP/s counts only unmasked work: 4*P*H*D FLOPs forward and 14*P*H*D
forward+backward (backward = 2.5x forward), P = sum over segments of L(L+1)/2.
The bare kernel, jax.nn.dot_product_attention(implementation='cudnn', is_causal=True),
runs unpacked in the same process as the yardstick; `eff` is a row's TFLOP/s over the
bare kernel's at the same length and mode. M is AttentionConfig.max_segments.
"ring sp=1 [cudnn]" is ring on a one-device mesh with local_backend='cudnn' (it runs the
packed kernel); "one-step ring [cudnn steps]" keeps the ring anyway, so the fused ring
step kernel (ragged cuDNN call + statistics) is timed on its own.

"ring step 1 of sp=4" times one later ring step on one GPU (see `ring_step_case`) beside
the bare non-causal kernel on the same shard length.

--check first compares the GPU paths with the fp32 reference at T=2048 (outputs and
gradients, relative L2 error). --per-segment also times the bare kernel on each segment
length of the first packed row alone, to compare their sum with the packed call.
Prints a table; writes attention.json to --out (default $OUT, else the working directory).
"""
import argparse
import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmprolong_jax.attention import AttentionConfig, attention
from mmprolong_jax.attention.fused_step import FusedStep
from mmprolong_jax.attention.ring import ring_attention
from mmprolong_jax.parallel.mesh import MeshConfig, make_mesh

H, K, D = 28, 4, 128
DTYPE = jnp.bfloat16


def make_segments(seq_len: int, packed: bool, seed: int = 0) -> np.ndarray:
  if not packed:
    return np.ones((1, seq_len), np.int32)
  rng = np.random.default_rng(seed + seq_len)
  used = seq_len - seq_len // 100
  cuts = np.sort(rng.choice(np.arange(1, used), size=5, replace=False))
  seg = np.zeros((1, seq_len), np.int32)
  for i, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, used])):
    seg[0, lo:hi] = i + 1
  return seg


def unmasked_pairs(seg: np.ndarray, causal: bool = True) -> int:
  lengths = np.bincount(seg[seg > 0]).astype(np.int64)
  return int(np.sum(lengths * (lengths + 1) // 2 if causal else lengths ** 2))


def inputs(seq_len: int, seed: int = 0):
  keys = jax.random.split(jax.random.key(seed), 4)
  shapes = [(1, seq_len, H, D), (1, seq_len, K, D), (1, seq_len, K, D), (1, seq_len, H, D)]
  return [jax.random.normal(k, s, DTYPE) for k, s in zip(keys, shapes)]


# Every timed function takes (q, k, v, seg): segment ids are a jit argument, as in
# training, so their bookkeeping (runs, plans) runs on the GPU instead of being folded
# into constants at compile time.
def ours(cfg: AttentionConfig, causal=True):
  return lambda q, k, v, seg: attention(q, k, v, segment_ids_BxT=seg, causal=causal, cfg=cfg)


def one_step_ring(cfg: AttentionConfig, causal=True):
  """Ring with its sp == 1 shortcut turned off: the fused step kernel alone."""
  def fn(q, k, v, seg):
    pos = jnp.broadcast_to(jnp.arange(seg.shape[1]), seg.shape)
    return ring_attention(q, k, v, seg, pos, causal, cfg, skip_degenerate_ring=False)
  return fn


def bare(q, k, v, seg):
  del seg  # unpacked rows only
  return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")


def pallas_triton(q, k, v, seg):
  """jax's Pallas (Triton) GPU flash kernel with segment ids; no GQA, so kv is repeated."""
  from jax.experimental.pallas.ops.gpu import attention as pallas_attention
  k, v = (jnp.repeat(x, H // K, axis=2) for x in (k, v))
  return pallas_attention.mha(q, k, v, segment_ids=seg, sm_scale=D ** -0.5, causal=True)


def run_bounds(seg):
  """[B, T] first and one-past-last index of each token's contiguous segment run."""
  idx = jnp.arange(seg.shape[1])
  first = jnp.concatenate([jnp.ones_like(seg[:, :1], bool), seg[:, 1:] != seg[:, :-1]], 1)
  last = jnp.concatenate([seg[:, 1:] != seg[:, :-1], jnp.ones_like(seg[:, :1], bool)], 1)
  start = jax.lax.cummax(jnp.where(first, idx, 0), axis=1)
  end = jax.lax.cummin(jnp.where(last, idx + 1, seg.shape[1]), axis=1, reverse=True)
  return start, end


def tokamax_mosaic(causal=True):
  """tokamax's Mosaic GPU flash kernel (Hopper; private Op API, the only one taking key
  ranges). A packed row becomes per-query key ranges: from the first token of the query's
  run to itself (causal) or to the run's end. The forward skips key tiles outside the
  ranges; padding queries see only themselves and their output is zeroed."""
  from tokamax._src.ops.attention import base as tk_base
  from tokamax._src.ops.attention import pallas_mosaic_gpu as tk_mgpu
  kernel = tk_mgpu.PallasMosaicGpuFlashAttention()

  def fn(q, k, v, seg):
    start, end = run_bounds(seg)
    mask = (tk_base.Mask(k_start=start[:, None], is_causal=True) if causal
            else tk_base.Mask(k_start=start[:, None], k_end=end[:, None]))
    out = kernel(q, k, v, mask=mask, logits_scale=q.shape[-1] ** -0.5)
    return jnp.where((seg > 0)[:, :, None, None], out, 0).astype(q.dtype)
  return fn


def timed(fn, args, reps: int) -> float:
  """Median seconds of `reps` calls after a compile-and-warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def fwd_bwd(fn):
  def run(q, k, v, seg, do):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, seg), q, k, v)
    return out, vjp(do)
  return run


def case(name, seq_len, packed, fn):
  """(name, segment ids, fwd, fwd+bwd, unmasked pairs) of a causal attention call."""
  seg = make_segments(seq_len, packed)
  return name, seg, packed, fn, fwd_bwd(fn), unmasked_pairs(seg)


def ring_step_case(seq_len, sp):
  """Shard 0's step 1 of a zigzag ring over sp shards on an unpacked row: its late query
  chunk against both chunks of the arriving block, no mask, 2c^2 pairs (c = chunk).
  Every step after the first does this much work, so at sp >= 2 it is most of the ring."""
  t, c = seq_len // sp, seq_len // (2 * sp)
  kernel = FusedStep(True, "zigzag", max_segments=8)

  def step(q, k, v, seg):
    return kernel.planned_fwd(q, k, v, kernel.plan(seg, seg, 1, 0, sp), step=1)

  def step_fwd_bwd(q, k, v, seg, do):
    plan = kernel.plan(seg, seg, 1, 0, sp)
    o, lse = kernel.planned_fwd(q, k, v, plan, step=1)
    return kernel.bwd(q, k, v, do, (o.astype(q.dtype), lse), plan, step=1)
  return (f"ring step 1 of sp={sp}, {seq_len // 1024}K row", make_segments(t, False), False,
          step, step_fwd_bwd, 2 * c * c)


def bare_noncausal_case(seq_len):
  def fn(q, k, v, seg):
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
  return ("bare cuDNN non-causal (unpacked)", make_segments(seq_len, False), False, fn,
          fwd_bwd(fn), seq_len ** 2)


def cases(seq_lens, one_device_mesh, extra: bool, tokamax: bool):
  """Benchmark cases (see `case`) in the order they run: the cuDNN paths at every
  length first, then (with --extra) the slow ones measured once for the record, then
  (with --tokamax) tokamax's kernel on the first length."""
  out = []
  ring = AttentionConfig("ring", mesh=one_device_mesh, local_backend="cudnn", max_segments=8)
  for t in seq_lens:
    out += [case("bare cuDNN (unpacked)", t, False, bare),
            case("cudnn M=2 (unpacked)", t, False, ours(AttentionConfig("cudnn", max_segments=2))),
            case("cudnn M=8 (packed)", t, True, ours(AttentionConfig("cudnn", max_segments=8))),
            case("ulysses sp=1 [cudnn M=8] (packed)", t, True, ours(AttentionConfig(
                "ulysses", mesh=one_device_mesh, local_backend="cudnn", max_segments=8))),
            case("ring sp=1 [cudnn M=8] (unpacked)", t, False, ours(ring)),
            case("ring sp=1 [cudnn M=8] (packed)", t, True, ours(ring)),
            case("one-step ring [cudnn steps] (unpacked)", t, False, one_step_ring(ring)),
            case("one-step ring [cudnn steps] (packed)", t, True, one_step_ring(ring))]
  t0, t1 = seq_lens[0], seq_lens[-1]
  out += [case("cudnn M=16 (packed)", t0, True, ours(AttentionConfig("cudnn", max_segments=16))),
          ring_step_case(t1, 4), bare_noncausal_case(t1 // 4)]
  if extra:
    ring = AttentionConfig("ring", mesh=one_device_mesh, block_q=2048, block_kv=2048)
    out += [case("ring sp=1 [blockwise] (packed)", t, True, ours(ring)) for t in seq_lens[:2]]
    out.append(case("pallas triton (packed)", t0, True, pallas_triton))
  if tokamax:
    out += [case(f"tokamax mosaic ({kind})", t0, kind == "packed", tokamax_mosaic())
            for kind in ("unpacked", "packed")]
  return out


def per_segment_cases(seq_len):
  """The bare kernel on each segment of the packed row alone (one unpacked row each),
  lengths rounded up to even: cuDNN's backward rejects odd ones."""
  lengths = np.bincount(make_segments(seq_len, True)[0])[1:]
  return [case(f"bare cuDNN, segment of {n} alone", int(n + n % 2), False, bare)
          for n in lengths]


def per_segment_sums(rows, seq_len):
  """Rows adding up the per-segment timings, as if the packed row ran as separate calls."""
  out = []
  for mode, flops_per_pair in (("fwd", 4 * H * D), ("fwd+bwd", 14 * H * D)):
    parts = [r for r in rows if r["backend"].endswith(" alone") and r["mode"] == mode]
    if parts and all("ms" in r for r in parts):
      ms = sum(r["ms"] for r in parts)
      pairs = sum(r["unmasked_pairs"] for r in parts)
      out.append(dict(backend="sum of the segments alone", seq_len=seq_len, packed=True,
                      mode=mode, unmasked_pairs=pairs, ms=ms,
                      tflops=flops_per_pair * pairs / ms / 1e9))
  return out


def run_benchmarks(seq_lens, reps, budget_s, one_device_mesh, extra, per_segment, tokamax):
  rows = []
  start = time.perf_counter()
  todo = cases(seq_lens, one_device_mesh, extra, tokamax)
  if per_segment:
    todo += per_segment_cases(seq_lens[0])
  for name, seg, packed, fwd, fwd_and_bwd, pairs in todo:
    t = seg.shape[1]
    q, k, v, do = inputs(t)
    seg = jnp.asarray(seg)
    for mode, flops, jitted, args in (("fwd", 4 * pairs * H * D, jax.jit(fwd), (q, k, v, seg)),
                                      ("fwd+bwd", 14 * pairs * H * D, jax.jit(fwd_and_bwd),
                                       (q, k, v, seg, do))):
      row = dict(backend=name, seq_len=t, packed=packed, mode=mode, unmasked_pairs=pairs)
      if time.perf_counter() - start > budget_s:
        row["error"] = "skipped: time budget"
      else:
        try:
          sec = timed(jitted, args, reps)
          row.update(ms=sec * 1e3, tflops=flops / sec / 1e12)
        except Exception as e:  # noqa: BLE001  (record and go on: one kernel's failure is data)
          row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
      rows.append(row)
      print(json.dumps(row), flush=True)
  if per_segment:
    rows += per_segment_sums(rows, seq_lens[0])
  base = {(r["seq_len"], r["mode"]): r.get("tflops") for r in rows
          if r["backend"] == "bare cuDNN (unpacked)"}
  for r in rows:
    if r.get("tflops") and base.get((r["seq_len"], r["mode"])):
      r["eff_vs_bare"] = r["tflops"] / base[(r["seq_len"], r["mode"])]
  return rows


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run_checks(one_device_mesh, tokamax: bool, seq_len=2048):
  """Relative L2 error of out, dq, dk, dv against the fp32 reference (bf16 inputs)."""
  results = []
  q, k, v, do = inputs(seq_len, seed=1)
  seg = make_segments(seq_len, True, seed=1)
  # Padding between segments too (cuDNN's contract: each segment one contiguous run).
  longest_end = int(np.flatnonzero(seg[0] == np.bincount(seg[0])[1:].argmax() + 1)[-1]) + 1
  pad = slice(longest_end - 30, longest_end)
  seg[0, pad] = 0
  up = lambda x: x.astype(jnp.float32)  # noqa: E731
  seg_arg = jnp.asarray(seg)
  ring_cudnn = AttentionConfig("ring", mesh=one_device_mesh, local_backend="cudnn")
  paths = [("cudnn", functools.partial(ours, AttentionConfig("cudnn"))),
           ("ulysses sp=1 [cudnn]", functools.partial(ours, AttentionConfig(
               "ulysses", mesh=one_device_mesh, local_backend="cudnn"))),
           ("ring sp=1", functools.partial(ours, AttentionConfig("ring", mesh=one_device_mesh))),
           ("ring sp=1 [cudnn]", functools.partial(ours, ring_cudnn)),
           ("one-step ring [cudnn steps]", functools.partial(one_step_ring, ring_cudnn)),
           ("blockwise", functools.partial(ours, AttentionConfig("blockwise")))]
  if tokamax:
    paths.append(("tokamax mosaic", tokamax_mosaic))
  for causal in (True, False):
    want = jax.jit(fwd_bwd(ours(AttentionConfig("reference"), causal)))(
        up(q), up(k), up(v), seg_arg, up(do))
    for name, make in paths:
      row = dict(check=name, causal=causal, seq_len=seq_len)
      fn = make(causal=causal)
      try:
        got = jax.jit(fwd_bwd(fn))(q, k, v, seg_arg, do)
        errs = [rel_err(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))]
        pad_out = float(jnp.abs(got[0][0, pad]).max())
        row.update(rel_err_out_dq_dk_dv=errs, max_abs_padded_out=pad_out,
                   ok=max(errs) < 2e-2 and pad_out == 0.0)
      except Exception as e:  # noqa: BLE001
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
      results.append(row)
      print(json.dumps(row), flush=True)
  return results


def print_table(rows):
  print(f"\n{'backend':40s} {'T':>7s} {'mode':8s} {'ms':>9s} {'TFLOP/s':>8s} {'eff':>6s}")
  for r in rows:
    if "error" in r:
      print(f"{r['backend']:40s} {r['seq_len']:7d} {r['mode']:8s} {r['error'][:60]}")
    else:
      eff = f"{r['eff_vs_bare']:.0%}" if "eff_vs_bare" in r else ""
      print(f"{r['backend']:40s} {r['seq_len']:7d} {r['mode']:8s} {r['ms']:9.2f} "
            f"{r['tflops']:8.1f} {eff:>6s}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seq-lens", default="32768,65536,131072")
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--budget-s", type=float, default=300.0,
                      help="stop starting new timings after this many seconds")
  parser.add_argument("--check", action="store_true")
  parser.add_argument("--extra", action="store_true",
                      help="also time ring sp=1 (blockwise kernel) and jax's Pallas Triton kernel")
  parser.add_argument("--tokamax", action="store_true",
                      help="also check and time tokamax's Mosaic GPU kernel (needs tokamax)")
  parser.add_argument("--per-segment", action="store_true",
                      help="also time the bare kernel on each segment of the first packed row")
  parser.add_argument("--out", default=os.environ.get("OUT", "."))
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"device: {device.device_kind}, jax {jax.__version__}", flush=True)
  one_device_mesh = make_mesh(MeshConfig(fsdp=1), devices=[device])
  report = dict(device=device.device_kind, jax=jax.__version__, heads=H, kv_heads=K, head_dim=D)
  if args.check:
    report["checks"] = run_checks(one_device_mesh, args.tokamax)
  report["rows"] = run_benchmarks([int(t) for t in args.seq_lens.split(",")], args.reps,
                                  args.budget_s, one_device_mesh, args.extra, args.per_segment,
                                  args.tokamax)
  print_table(report["rows"])
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "attention.json"), "w") as f:
    json.dump(report, f, indent=1)


if __name__ == "__main__":
  main()
