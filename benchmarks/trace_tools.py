"""Profiler traces of the train-step benchmark: capture and split into phases."""
from __future__ import annotations

import json
import os
import time

from bench_common import LLM_LAYERS, VIT_DEPTH

def profile_step(compiled, state, dbatch, out_dir, tag):
  """One step under jax.profiler with a perfetto trace; summarizes GPU kernel time."""
  import glob
  import shutil
  import jax
  logdir = os.path.join("/tmp", f"prof_{tag}")
  out = {}
  try:
    jax.profiler.start_trace(logdir, create_perfetto_trace=True)
    t0 = time.perf_counter()
    state, m = compiled(state, dbatch)
    jax.block_until_ready((state, m))
    out["wall_s"] = time.perf_counter() - t0
    jax.profiler.stop_trace()
    files = glob.glob(os.path.join(logdir, "**", "*.json.gz"), recursive=True)
    if files:
      out["summary"] = summarize_trace(files[0])
      size = os.path.getsize(files[0])
      out["trace_bytes"] = size
      if size < 15 * 2**20:
        shutil.copy(files[0], os.path.join(out_dir, f"trace_{tag}.json.gz"))
  except Exception as e:  # noqa: BLE001
    out["error"] = repr(e)[:500]
  out["_state"] = state
  return out


def categorize(name: str) -> str:
  n = name.lower()
  if any(s in n for s in ("fmha", "flash", "sdpa", "cudnn", "attention")):
    return "attention"
  if any(s in n for s in ("gemm", "cublas", "cutlass", "xmma", "nvjet", "matmul", "dot", "wgmma",
                          "sm90_")):
    return "matmul"
  if any(s in n for s in ("scatter", "gather", "dynamic")):
    return "gather/scatter"
  if any(s in n for s in ("reduce", "loop_", "fusion", "input_", "elementwise", "transpose",
                          "copy", "convert", "concatenate", "broadcast")):
    return "fusion/elementwise"
  if "memset" in n or "memcpy" in n:
    return "memcpy/memset"
  return "other"


def summarize_trace(path: str) -> dict:
  """GPU time by category and the top kernels from a perfetto/chrome trace (json.gz)."""
  import gzip
  with gzip.open(path, "rt") as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  pname = {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      pname[e.get("pid")] = str(e.get("args", {}).get("name", ""))
  gpu_pids = {p for p, n in pname.items() if "gpu" in n.lower() or "/device:" in n.lower()}
  by_name, total = {}, 0.0
  span = [float("inf"), 0.0]
  for e in events:
    if e.get("ph") != "X" or e.get("pid") not in gpu_pids:
      continue
    dur = float(e.get("dur", 0))
    name = str(e.get("name", ""))
    args = e.get("args", {}) or {}
    kname = str(args.get("kernel_name", args.get("name", "")))
    key = name if not kname else f"{name} | {kname[:80]}"
    by_name[key] = by_name.get(key, 0.0) + dur
    total += dur
    span[0] = min(span[0], float(e.get("ts", 0)))
    span[1] = max(span[1], float(e.get("ts", 0)) + dur)
  cats = {}
  for k, d in by_name.items():
    c = categorize(k)
    cats[c] = cats.get(c, 0.0) + d
  top = sorted(by_name.items(), key=lambda kv: -kv[1])[:30]
  return {"gpu_busy_s": total / 1e6, "gpu_span_s": max(span[1] - span[0], 0) / 1e6,
          "by_category_s": {k: v / 1e6 for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
          "top": [(k, v / 1e6) for k, v in top], "gpu_processes": sorted(pname[p] for p in gpu_pids)}


def trace_phases(path: str, llm_layers: int = LLM_LAYERS, vit_blocks: int = VIT_DEPTH) -> dict:
  """Splits one step's GPU timeline (perfetto trace of profile_step) into phases, using the cuDNN
  attention kernels as landmarks. The step runs: vision forward (V fprops), LLM forward (L
  fprops) and the head, then per LLM layer a recomputed fprop + bprop (last layer first), then the
  same for the V vision blocks, then the fused AdamW update (a run of `select` fusions: the
  update is fused into the keep-if-finite where()). Boundaries are kernel starts, so a few ms of
  each layer's pre-attention work (norm, QKV) land in the previous phase."""
  import gzip
  with gzip.open(path, "rt") as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  pname = {e.get("pid"): str(e.get("args", {}).get("name", "")) for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  ev = sorted((e for e in events if e.get("ph") == "X" and "/device:" in pname.get(e.get("pid"), "")),
              key=lambda e: e["ts"])
  att = [i for i, e in enumerate(ev) if "sdpa" in e["name"] and ("fprop" in e["name"] or
                                                                  "bprop" in e["name"])]
  V, L = vit_blocks, llm_layers
  if len(att) != 2 * (V + L) + V + L:
    return {"error": f"expected {3 * (V + L)} attention kernels, found {len(att)}"}
  end = ev[-1]["ts"] + ev[-1]["dur"]
  opt = len(ev)
  while opt > 0 and ("select" in ev[opt - 1]["name"] or "reduce" in ev[opt - 1]["name"]
                     or ev[opt - 1]["name"].startswith("Memset")):
    opt -= 1
  t = lambda i: ev[i]["ts"]
  cuts = [ev[0]["ts"], t(att[V]), t(att[V + L]), t(att[V + 3 * L]), t(opt), end]
  names = ["vision_fwd", "llm_fwd_head", "llm_bwd_recompute", "vision_bwd_recompute", "optimizer"]
  out = {n: (b - a) / 1e6 for n, a, b in zip(names, cuts[:-1], cuts[1:])}
  att_s = {"llm_fwd": 0.0, "llm_recompute": 0.0, "llm_bwd": 0.0, "vis_fwd": 0.0,
           "vis_recompute": 0.0, "vis_bwd": 0.0}
  for k, i in enumerate(att):
    d = ev[i]["dur"] / 1e6
    if k < V:
      att_s["vis_fwd"] += d
    elif k < V + L:
      att_s["llm_fwd"] += d
    elif k < V + 3 * L:
      att_s["llm_recompute" if "fprop" in ev[i]["name"] else "llm_bwd"] += d
    else:
      att_s["vis_recompute" if "fprop" in ev[i]["name"] else "vis_bwd"] += d
  out["attention_kernels_s"] = att_s
  out["step_gpu_s"] = (end - ev[0]["ts"]) / 1e6
  return out


