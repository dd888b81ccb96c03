"""Attention TFLOP/s on one GPU: every backend that runs there, at Qwen2.5-7B head shapes.

    python3 benchmarks/attention.py [--check] [--extra] [--seq-lens 32768,65536,131072] [--out DIR]

28 query heads, 4 kv heads, head dim 128, bf16, batch 1, causal. Rows are either one
full-length segment ("unpacked") or ~6 segments of random lengths plus ~1% padding
("packed"). TFLOP/s counts only unmasked work: 4*P*H*D FLOPs forward and 14*P*H*D
forward+backward (backward = 2.5x forward), P = sum over segments of L(L+1)/2.
The bare kernel, jax.nn.dot_product_attention(implementation='cudnn', is_causal=True),
runs unpacked in the same process as the yardstick; `eff` is a row's TFLOP/s over the
bare kernel's at the same length and mode. M is AttentionConfig.max_segments.

--check first compares the GPU paths with the fp32 reference at T=2048 (outputs and
gradients, relative L2 error). Prints a table; writes attention.json to --out
(default $OUT, else the working directory).
"""
import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmprolong_jax.attention import AttentionConfig, attention
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


def ours(cfg: AttentionConfig, seg):
  seg = jnp.asarray(seg)
  return lambda q, k, v: attention(q, k, v, segment_ids_BxT=seg, causal=True, cfg=cfg)


def bare(q, k, v):
  return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")


def pallas_triton(seg):
  """jax's Pallas (Triton) GPU flash kernel with segment ids; no GQA, so kv is repeated."""
  from jax.experimental.pallas.ops.gpu import attention as pallas_attention
  seg = jnp.asarray(seg)

  def fn(q, k, v):
    k, v = (jnp.repeat(x, H // K, axis=2) for x in (k, v))
    return pallas_attention.mha(q, k, v, segment_ids=seg, sm_scale=D ** -0.5, causal=True)
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
  def run(q, k, v, do):
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(do)
  return run


def cases(seq_lens, one_device_mesh, extra: bool):
  """(name, seq_len, packed, fn) in the order they run: the cuDNN paths at every length
  first, then (with --extra) the slow ones measured once for the record."""
  out = []
  for t in seq_lens:
    packed = make_segments(t, True)
    out += [("bare cuDNN (unpacked)", t, False, bare),
            ("cudnn M=2 (unpacked)", t, False,
             ours(AttentionConfig("cudnn", max_segments=2), make_segments(t, False))),
            ("cudnn M=8 (packed)", t, True, ours(AttentionConfig("cudnn", max_segments=8), packed)),
            ("ulysses sp=1 [cudnn M=8] (packed)", t, True, ours(AttentionConfig(
                "ulysses", mesh=one_device_mesh, local_backend="cudnn", max_segments=8), packed))]
  t0 = seq_lens[0]
  out.append(("cudnn M=16 (packed)", t0, True,
              ours(AttentionConfig("cudnn", max_segments=16), make_segments(t0, True))))
  if extra:
    ring = AttentionConfig("ring", mesh=one_device_mesh, block_q=2048, block_kv=2048)
    out += [("ring sp=1 [blockwise] (packed)", t, True, ours(ring, make_segments(t, True)))
            for t in seq_lens[:2]]
    out.append(("pallas triton (packed)", t0, True, pallas_triton(make_segments(t0, True))))
  return out


def run_benchmarks(seq_lens, reps, budget_s, one_device_mesh, extra):
  rows = []
  start = time.perf_counter()
  for name, t, packed, fn in cases(seq_lens, one_device_mesh, extra):
    pairs = unmasked_pairs(make_segments(t, packed))
    q, k, v, do = inputs(t)
    for mode, flops, jitted, args in (("fwd", 4 * pairs * H * D, jax.jit(fn), (q, k, v)),
                                      ("fwd+bwd", 14 * pairs * H * D, jax.jit(fwd_bwd(fn)),
                                       (q, k, v, do))):
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
  base = {(r["seq_len"], r["mode"]): r.get("tflops") for r in rows
          if r["backend"].startswith("bare")}
  for r in rows:
    if r.get("tflops") and base.get((r["seq_len"], r["mode"])):
      r["eff_vs_bare"] = r["tflops"] / base[(r["seq_len"], r["mode"])]
  return rows


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run_checks(one_device_mesh, seq_len=2048):
  """Relative L2 error of out, dq, dk, dv against the fp32 reference (bf16 inputs)."""
  results = []
  q, k, v, do = inputs(seq_len, seed=1)
  seg = make_segments(seq_len, True, seed=1)
  # Padding between segments too (cuDNN's contract: each segment one contiguous run).
  longest_end = int(np.flatnonzero(seg[0] == np.bincount(seg[0])[1:].argmax() + 1)[-1]) + 1
  pad = slice(longest_end - 30, longest_end)
  seg[0, pad] = 0
  up = lambda x: x.astype(jnp.float32)  # noqa: E731
  for causal in (True, False):
    def with_causal(cfg):
      s = jnp.asarray(seg)
      return lambda q, k, v: attention(q, k, v, segment_ids_BxT=s, causal=causal, cfg=cfg)
    want = jax.jit(fwd_bwd(with_causal(AttentionConfig("reference"))))(
        up(q), up(k), up(v), up(do))
    for name, cfg in (("cudnn", AttentionConfig("cudnn")),
                      ("ulysses sp=1 [cudnn]", AttentionConfig(
                          "ulysses", mesh=one_device_mesh, local_backend="cudnn")),
                      ("ring sp=1", AttentionConfig("ring", mesh=one_device_mesh)),
                      ("blockwise", AttentionConfig("blockwise"))):
      row = dict(check=name, causal=causal, seq_len=seq_len)
      try:
        got = jax.jit(fwd_bwd(with_causal(cfg)))(q, k, v, do)
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
  print(f"\n{'backend':34s} {'T':>7s} {'mode':8s} {'ms':>9s} {'TFLOP/s':>8s} {'eff':>6s}")
  for r in rows:
    if "error" in r:
      print(f"{r['backend']:34s} {r['seq_len']:7d} {r['mode']:8s} {r['error'][:60]}")
    else:
      eff = f"{r['eff_vs_bare']:.0%}" if "eff_vs_bare" in r else ""
      print(f"{r['backend']:34s} {r['seq_len']:7d} {r['mode']:8s} {r['ms']:9.2f} "
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
  parser.add_argument("--out", default=os.environ.get("OUT", "."))
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"device: {device.device_kind}, jax {jax.__version__}", flush=True)
  one_device_mesh = make_mesh(MeshConfig(fsdp=1), devices=[device])
  report = dict(device=device.device_kind, jax=jax.__version__, heads=H, kv_heads=K, head_dim=D)
  if args.check:
    report["checks"] = run_checks(one_device_mesh)
  report["rows"] = run_benchmarks([int(t) for t in args.seq_lens.split(",")], args.reps,
                                  args.budget_s, one_device_mesh, args.extra)
  print_table(report["rows"])
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "attention.json"), "w") as f:
    json.dump(report, f, indent=1)


if __name__ == "__main__":
  main()
