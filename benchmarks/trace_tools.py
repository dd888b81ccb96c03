"""Where the train-step benchmark's time goes: profiler traces split into phases, and the
vision / LLM / optimizer parts timed separately."""
from __future__ import annotations

import json
import os
import time

from bench_common import LLM_LAYERS, VIT_DEPTH, _median

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
  """GPU time by category and the top kernels (name, seconds, launches) from a
  perfetto/chrome trace (json.gz)."""
  import gzip
  with gzip.open(path, "rt") as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  pname = {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      pname[e.get("pid")] = str(e.get("args", {}).get("name", ""))
  gpu_pids = {p for p, n in pname.items() if "gpu" in n.lower() or "/device:" in n.lower()}
  by_name, runs, total = {}, {}, 0.0
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
    runs[key] = runs.get(key, 0) + 1
    total += dur
    span[0] = min(span[0], float(e.get("ts", 0)))
    span[1] = max(span[1], float(e.get("ts", 0)) + dur)
  cats = {}
  for k, d in by_name.items():
    c = categorize(k)
    cats[c] = cats.get(c, 0.0) + d
  top = sorted(by_name.items(), key=lambda kv: -kv[1])[:40]
  return {"gpu_busy_s": total / 1e6, "gpu_span_s": max(span[1] - span[0], 0) / 1e6,
          "by_category_s": {k: v / 1e6 for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
          "top": [(k, v / 1e6, runs[k]) for k, v in top], "gpu_processes": sorted(pname[p] for p in gpu_pids)}


def trace_phases(path: str, llm_layers: int = LLM_LAYERS, vit_blocks: int = VIT_DEPTH) -> dict:
  """Splits one step's GPU timeline (perfetto trace of profile_step) into phases, using the cuDNN
  attention kernels as landmarks. The step runs: vision forward (V fprops), LLM forward (L
  fprops) and the head, then per LLM layer a recomputed fprop (unless the remat policy saves
  cuDNN's forward) + bprop (last layer first), then the same for the V vision blocks, then the
  fused AdamW update (a run of `select` fusions: the update is fused into the keep-if-finite
  where()). Boundaries are kernel starts, so a few ms of each layer's pre-attention work
  (norm, QKV) land in the previous phase."""
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
  if len(att) not in (2 * (V + L), 3 * (V + L)):
    return {"error": f"expected {2 * (V + L)} or {3 * (V + L)} attention kernels, found {len(att)}"}
  per_layer = len(att) // (V + L) - 1   # kernels per layer in the backward: 1 or 2
  end = ev[-1]["ts"] + ev[-1]["dur"]
  opt = len(ev)
  while opt > 0 and (any(s in ev[opt - 1]["name"] for s in ("select", "reduce", "compare"))
                     or ev[opt - 1]["name"].startswith("Memset")):
    opt -= 1
  t = lambda i: ev[i]["ts"] if i < len(ev) else end
  llm_end = V + L + per_layer * L
  cuts = [ev[0]["ts"], t(att[V]), t(att[V + L]), t(att[llm_end]), t(opt), end]
  names = ["vision_fwd", "llm_fwd_head", "llm_bwd", "vision_bwd", "optimizer"]
  out = {n: (b - a) / 1e6 for n, a, b in zip(names, cuts[:-1], cuts[1:])}
  att_s = {"llm_fwd": 0.0, "llm_recompute": 0.0, "llm_bwd": 0.0, "vis_fwd": 0.0,
           "vis_recompute": 0.0, "vis_bwd": 0.0}
  for k, i in enumerate(att):
    d = ev[i]["dur"] / 1e6
    if k < V:
      att_s["vis_fwd"] += d
    elif k < V + L:
      att_s["llm_fwd"] += d
    elif k < llm_end:
      att_s["llm_recompute" if "fprop" in ev[i]["name"] else "llm_bwd"] += d
    else:
      att_s["vis_recompute" if "fprop" in ev[i]["name"] else "vis_bwd"] += d
  out["attention_kernels_s"] = att_s
  out["step_gpu_s"] = (end - ev[0]["ts"]) / 1e6
  return out


def time_parts(graphdef, tx, state, dbatch, cfg, config, mesh, length):
  """Times pieces of the step separately: vision fwd+bwd, LLM(+head) fwd+bwd on given embeddings,
  full fwd+bwd without the update, and the optimizer update alone."""
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx
  from mmprolong_jax.loss import masked_nll
  from mmprolong_jax.train_step import VISION_KEYS, TrainState, loss_and_metrics

  params = state.params
  vis_keys = [k for k in params if k.startswith("visual.")]
  vis = {k: params[k] for k in vis_keys}
  rest = {k: v for k, v in params.items() if k not in vis}
  out = {}

  def timeit(name, fn, *args, n=3):
    try:
      t0 = time.perf_counter()
      c = jax.jit(fn).lower(*args).compile()
      comp = time.perf_counter() - t0
      jax.block_until_ready(c(*args))
      ts = []
      for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(c(*args))
        ts.append(time.perf_counter() - t0)
      out[name] = {"s": _median(ts), "times": ts, "compile_s": comp}
    except Exception as e:  # noqa: BLE001
      out[name] = {"error": repr(e)[:400]}
    print(f"  part {name}: {out[name]}", flush=True)

  def vis_loss(vp, rp, b):
    model = nnx.merge(graphdef, {**vp, **rp})
    layout = {k: b[k] for k in VISION_KEYS if k in b}
    if hasattr(model, "_vision_features"):   # layout with a shard axis
      f = model._vision_features(b["patches"], layout)
    else:
      f = model.visual(b["patches"], layout, model.vision_attn_cfg)
    return jnp.mean(jnp.square(f.astype(jnp.float32)))

  def llm_loss(rp, vp, emb, b):
    model = nnx.merge(graphdef, {**vp, **rp})
    t = b["input_ids"].shape[1]
    tp = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), b["input_ids"].shape)
    h = model.language_model(emb, b["positions"], b["segment_ids"], tp, model.attn_cfg)
    nll, valid, _, _ = masked_nll(h, b["targets"], b["loss_mask"], model.logits,
                                  config.train.max_loss_tokens)
    return nll.sum() / jnp.maximum(valid.sum(), 1)

  def full_grad(p, b):
    return jax.grad(lambda p: loss_and_metrics(nnx.merge(graphdef, p), b,
                                               config.train.max_loss_tokens, 0)[0])(p)

  with jax.set_mesh(mesh):
    timeit("fwd_bwd_full", full_grad, params, dbatch)
    timeit("vision_fwd_bwd", jax.grad(vis_loss), vis, rest, dbatch)
    emb = (jax.random.normal(jax.random.key(0), dbatch["input_ids"].shape + (cfg.text.hidden_size,))
           * 0.02).astype(cfg.dtype)
    timeit("llm_head_fwd_bwd", jax.grad(llm_loss), rest, vis, emb, dbatch)
    del emb

    def opt_only(st, g):
      updates, opt_state = tx.update(g, st.opt_state, st.params)
      p = optax.apply_updates(st.params, updates)
      gn = optax.global_norm(g)
      ok = jnp.isfinite(gn)
      keep = lambda new, old: jnp.where(ok, new, old)
      return TrainState(jax.tree.map(keep, p, st.params), jax.tree.map(keep, opt_state, st.opt_state),
                        st.step + 1)

    grads = jax.tree.map(lambda x: x * 1e-3, params)
    timeit("optimizer", opt_only, state, grads)
  return out
