"""Full training step on one GPU: ours (JAX/Flax) vs HF transformers + PyTorch, same shape.

    python3 benchmarks/train_step.py [--jobs PLAN] [--deadline SECONDS] [--out DIR] [--tiny]

Model: Qwen2.5-VL-7B width, depth cut to fit one GPU: 4 LLM layers + 8 ViT blocks (full-attention
blocks 3 and 7 of the 8), random weights, bf16 compute, per-layer rematerialization, answer-only
loss, AdamW. One packed row = P US-letter pages at 144 DPI (grid 1x114x88 = 10,032 patches = 2,508
image tokens + vision start/end = 2,510 tokens each) + 448 question tokens + a 32-token answer,
P = (L - 512) // 2510 (12 pages at 32K, 25 at 64K, 52 at 128K), padded to L.

Ours: `mmprolong_jax` as a training run would build it (configs/base.py keys; setup.init_state,
make_train_step, jit with donated state): fp32 master weights and AdamW state, bf16 activations,
model.remat_policy='full', attention.backend='cudnn' with attention.max_segments=2 (one document
per row: the tightest bound the packed path allows), optax clip(1.0) + AdamW,
train.max_loss_tokens=256 (= base.py's 8192 per 32-row batch, per row), the batch on the device
before timing (host input not measured).
The vision tower runs on the trainer's layout (data geometry from data.sources.vision_slots:
window slots + image rows, attention.vision_backend='cudnn'; model/vision_layout.py).

HF: Qwen2_5_VLForConditionalGeneration.from_config(Qwen2_5_VLConfig(**cfg.to_hf_dict())),
attn_implementation='sdpa', torch.nn.attention.sdpa_kernel restricted to one backend
('cudnn' or 'flash'), gradient_checkpointing_enable() (use_reentrant=False), bf16 parameters +
torch.optim.AdamW(fused=True) (dtype 'bf16'; 'fp32' = fp32 parameters + autocast bf16),
clip_grad_norm_(1.0); loss = lm_head on the answer positions of model.model(...)'s hidden states,
mm_token_type_ids passed so the 3-D mRoPE positions are used.

Model FLOPs (mmprolong_jax.flops.step_flops; rematerialization not counted):
  6 * N_llm_matmul * tokens + 6 * d * V * loss_positions
  + 6 * L_layers * H * D * sum(segment_len^2)                         (causal LLM attention)
  + 6 * (patch_embed + ViT block params) * patches + 6 * merger params * patches / 4
  + 12 * H_v * D_v * (windowed_blocks * sum(window^2) + full_blocks * sum(image^2))
MFU = model FLOPs / step time / bf16 matmul ceiling (8192^3, measured in the same run, max of the
jax and torch medians).

Each framework/length runs in its own subprocess (sequentially: never two on the GPU), so an OOM
or a compile failure is reported and the rest goes on. Prints a table last; writes
train_step.json (and log.txt, worker logs) under --out (default $OUT, else ./bench_out).

PLAN is a comma list of jobs:
  ceil:jax  ceil:torch                    bf16 matmul ceiling
  ours:L[:opts]                           opts '+'-joined from pbf16 (bf16 params), m16 (bf16
                                          AdamW moments), mlpN (model.mlp_chunks=N), satt
                                          (remat_policy save_attention_kernel), sqkv
                                          (save_attention_qkv), remat-P (remat_policy P,
                                          e.g. remat-none), vremat-P (the vision tower's
                                          policy, P a name or satt/sqkv/sdots), npN
                                          (data.num_patches=N vision slots), loop (layers
                                          unrolled, not scanned), aot (compile and report
                                          memory only), parts, trace, quick (1 warm-up + 1
                                          timed step)
  hf:L[:backend[:dtype[:opts]]]           backend in {cudnn, flash}; dtype in {bf16, fp32}; quick,
                                          prof (one more step under torch.profiler)
  A|B|...                                 run A; on OOM or error run B, ...
  search:ours:L1/L2/...[:opts]  search:hf:L1/...[:backend]   largest trainable length: run
                                          ascending, stop at the first failure (quick steps)

    python3 benchmarks/train_step.py --analyze-trace OUT/trace_ours_65536.json.gz
splits a traced step into vision fwd / LLM fwd / LLM bwd / vision bwd / optimizer (trace_phases).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback

from bench_common import (REPO, _median, ceiling_of, flops_of, fmt_table, jax_config, make_batch,
                          model_cfg, parse_job)
from torch_step import worker_hf
from trace_tools import profile_step, time_parts, trace_phases

# Short names for remat policies (remat-P names any policy).
POLICY_OPTS = {"satt": "save_attention_kernel", "sqkv": "save_attention_qkv",
               "sdots": "save_attention_dots"}
DEFAULT_PLAN = ("ceil:jax,ceil:torch,ours:32768:trace,hf:32768:cudnn,hf:32768:flash,"
                "ours:65536:trace,hf:65536:flash,ours:131072:m16+mlp4,"
                "hf:131072:flash:bf16:quick,search:ours:163840/196608:m16+mlp8")

# ----------------------------------------------------------------------------------------------
# Worker: ours
# ----------------------------------------------------------------------------------------------
def worker_ours(job: dict, tiny: bool, out_dir: str) -> dict:
  import jax
  from mmprolong_jax import setup
  from mmprolong_jax.train_step import make_train_step

  length = job["length"]
  opts = set(job.get("extra", "").split("+")) - {""}
  res = {"framework": "ours", "length": length, "options": sorted(opts),
         "device": jax.devices()[0].device_kind, "jax": jax.__version__}
  t_start = time.perf_counter()
  log = lambda msg: print(f"  [{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)
  config = jax_config(length, tiny)
  if "pbf16" in opts:
    config.model.param_dtype = "bfloat16"
  if "m16" in opts:
    config.optim.moment_dtype = "bfloat16"
  if "loop" in opts:
    config.model.scan_layers = False
  for o in opts:
    if o.startswith("mlp"):
      config.model.mlp_chunks = int(o[3:])
    if o.startswith("np") and o[2:].isdigit():
      config.data.num_patches = int(o[2:])
    if o in POLICY_OPTS or o.startswith("remat-"):
      config.model.remat_policy = POLICY_OPTS.get(o, o[len("remat-"):])
    if o.startswith("vremat-"):
      v = o[len("vremat-"):]
      config.model.vision_remat_policy = POLICY_OPTS.get(v, v)
  cfg = model_cfg(length, tiny, config)
  res["param_dtype"], res["remat_policy"] = cfg.param_dtype, cfg.remat_policy
  res["vision_remat_policy"] = cfg.vision_remat
  res["moment_dtype"], res["mlp_chunks"] = config.optim.moment_dtype, cfg.mlp_chunks
  res["scan_layers"] = cfg.scan_layers
  batch, info = make_batch(cfg, length, tiny, config)
  log(f"batch ready: {info}")
  res.update(info)
  res["flops"] = flops_of(cfg, batch)
  mesh = setup.mesh_from_config(config)
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    graphdef, tx, state, state_shard = setup.init_state(config, cfg, mesh, total_steps=1000)
  jax.block_until_ready(state)
  res["init_s"] = time.perf_counter() - t0
  res["params"] = int(sum(x.size for x in jax.tree.leaves(state.params)))
  log(f"state ready ({res['params'] / 1e9:.3f}B params) in {res['init_s']:.0f}s")
  step_fn = make_train_step(graphdef, tx, config.train.max_loss_tokens, 0)
  specs = setup.sharding.batch_specs(batch)
  in_shard = {k: jax.sharding.NamedSharding(mesh, s) for k, s in specs.items()}
  dbatch = {k: jax.device_put(v, in_shard[k]) for k, v in batch.items()}
  train_step = jax.jit(step_fn, in_shardings=(state_shard, in_shard),
                       out_shardings=(state_shard, None), donate_argnums=(0,))
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = train_step.lower(state, dbatch).compile()
  res["compile_s"] = time.perf_counter() - t0
  try:
    ma = compiled.memory_analysis()
    res["xla_temp_gib"] = ma.temp_size_in_bytes / 2**30
    res["xla_args_gib"] = ma.argument_size_in_bytes / 2**30
  except Exception:  # noqa: BLE001
    pass
  log(f"compiled in {res['compile_s']:.0f}s: XLA temp {res.get('xla_temp_gib', -1):.2f} GiB, "
      f"arguments {res.get('xla_args_gib', -1):.2f} GiB")
  print(f"MEMORY {job['name']}: temp {res.get('xla_temp_gib', -1):.2f} GiB args "
        f"{res.get('xla_args_gib', -1):.2f} GiB compile {res['compile_s']:.0f}s", file=sys.stderr,
        flush=True)
  _write_partial(out_dir, dict(res, status="compiled"))
  if "aot" in opts:
    return dict(res, status="ok")
  warmup, steps = (1, 1) if "quick" in opts else (1, 3)
  times = []
  m = None
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    state, m = compiled(state, dbatch)
    jax.block_until_ready((state, m))
    dt = time.perf_counter() - t0
    if i >= warmup:
      times.append(dt)
    print(f"  ours L={length} step {i}: {dt:.3f}s loss={float(m['loss']):.4f} "
          f"n={int(m['loss_tokens'])} finite={bool(m['finite'])}", flush=True)
  res["step_times"] = times
  res["step_s"] = _median(times)
  res["loss"] = float(m["loss"])
  res["loss_tokens"] = int(m["loss_tokens"])
  res["finite"] = bool(m["finite"])
  stats = jax.devices()[0].memory_stats() or {}
  res["peak_gib"] = stats.get("peak_bytes_in_use", 0) / 2**30
  res["bytes_limit_gib"] = stats.get("bytes_limit", 0) / 2**30
  res["status"] = "ok"
  _write_partial(out_dir, res)
  if "trace" in opts:
    res["trace"] = profile_step(compiled, state, dbatch, out_dir, f"ours_{length}")
    state = res["trace"].pop("_state", state)
    _write_partial(out_dir, res)
  if "parts" in opts:
    res["parts"] = time_parts(graphdef, tx, state, dbatch, cfg, config, mesh, length)
  return res


def _write_partial(out_dir, res):
  path = os.environ.get("BENCH_PARTIAL")
  if path:
    with open(path, "w") as f:
      json.dump(res, f)


# ----------------------------------------------------------------------------------------------
# Worker: matmul ceiling
# ----------------------------------------------------------------------------------------------
def worker_ceiling(job: dict, tiny: bool, out_dir: str) -> dict:
  n = 1024 if tiny else 8192
  reps, inner = (5, 2) if tiny else (30, 10)
  flop = 2.0 * n ** 3
  if job["which"] == "jax":
    import jax
    import jax.numpy as jnp
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.bfloat16)
    b = jax.random.normal(kb, (n, n), jnp.bfloat16)
    f = jax.jit(lambda a, b: a @ b)
    for _ in range(3):
      f(a, b).block_until_ready()
    ts = []
    for _ in range(reps):
      t0 = time.perf_counter()
      for _ in range(inner):
        c = f(a, b)
      c.block_until_ready()
      ts.append((time.perf_counter() - t0) / inner)
    dev = jax.devices()[0].device_kind
  else:
    import torch
    dev_t = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a = torch.randn(n, n, device=dev_t, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev_t, dtype=torch.bfloat16)
    for _ in range(3):
      c = a @ b
    ts = []
    if dev_t.type == "cuda":
      torch.cuda.synchronize()
      for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(inner):
          c = a @ b
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3 / inner)
      dev = torch.cuda.get_device_name()
    else:
      for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
          c = a @ b
        ts.append((time.perf_counter() - t0) / inner)
      dev = "cpu"
  med = _median(ts)
  return {"framework": f"ceiling-{job['which']}", "n": n, "median_s": med, "tflops": flop / med / 1e12,
          "max_tflops": flop / min(ts) / 1e12, "device": dev, "status": "ok"}


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def worker_main(args):
  job = json.loads(args.worker)
  try:
    fn = {"ours": worker_ours, "hf": worker_hf, "ceil": worker_ceiling}[job["kind"]]
    res = fn(job, args.tiny, args.out)
  except BaseException as e:  # noqa: BLE001
    msg = f"{type(e).__name__}: {e}"
    oom = any(s in msg for s in ("RESOURCE_EXHAUSTED", "OutOfMemory", "out of memory",
                                 "Out of memory", "CUDA out of memory"))
    res = {"status": "oom" if oom else "error", "error": msg[:1500]}
    traceback.print_exc()
  res["job"] = job["name"]
  with open(args.result, "w") as f:
    json.dump(res, f, default=str)


def run_job(job: dict, args, deadline: float, log) -> dict:
  """Runs one worker in its own process group; returns its result dict."""
  remaining = deadline - time.time()
  if remaining < 45:
    return {"job": job["name"], "status": "skipped", "error": "deadline"}
  import tempfile
  res_path = os.path.join(tempfile.gettempdir(), f"bench_res_{os.getpid()}.json")
  part_path = res_path + ".partial"
  for p in (res_path, part_path):
    if os.path.exists(p):
      os.remove(p)
  env = dict(os.environ)
  # One preallocated arena (the trainer's default; fraction 0.96 unless the caller sets one):
  # with growth, the allocator keeps init's freed regions and a 33 GiB step buffer failed at
  # 64K (measured).
  env.update(PYTHONUNBUFFERED="1", XLA_PYTHON_CLIENT_PREALLOCATE="false" if job["kind"] != "ours"
             else "true", BENCH_PARTIAL=part_path,
             XLA_PYTHON_CLIENT_MEM_FRACTION=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.96"),
             TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "1"))
  if job["kind"] == "hf":
    env["JAX_PLATFORMS"] = "cpu"   # jax only builds the synthetic row's positions there
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
  if job["kind"] == "ceil" and job["which"] == "torch":
    env["JAX_PLATFORMS"] = "cpu"
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job), "--result",
         res_path, "--out", args.out] + (["--tiny"] if args.tiny else [])
  t0 = time.time()
  log.write(f"\n===== {job['name']} =====\n")
  log.flush()
  log_start = log.tell()
  proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                          start_new_session=True)
  timeout = min(remaining - 20, args.job_timeout)
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  wall = time.time() - t0
  if os.path.exists(res_path):
    with open(res_path) as f:
      res = json.load(f)
  elif os.path.exists(part_path):
    with open(part_path) as f:
      res = json.load(f)
    res["note"] = f"worker killed after the main measurement (rc {proc.returncode})"
  else:
    res = {"status": "timeout" if wall >= timeout - 1 else "crash",
           "error": f"rc={proc.returncode} after {wall:.0f}s"}
  res["job"] = job["name"]
  res["wall_s"] = wall
  try:
    with open(log.name) as f:
      f.seek(log_start)
      lines = [l.rstrip() for l in f.read().splitlines() if l.strip()]
    res["log_tail"] = lines[-4:]
    if res.get("status") not in ("ok",):
      print("    | " + "\n    | ".join(l[:220] for l in lines[-3:]), flush=True)
  except Exception:  # noqa: BLE001
    pass
  return res


def driver_main(args):
  os.makedirs(args.out, exist_ok=True)
  deadline = time.time() + args.deadline
  plan = [parse_job(s) for s in args.jobs.split(",") if s]
  results = []
  json_path = os.path.join(args.out, "train_step.json")
  with open(os.path.join(args.out, "log.txt"), "a") as log:
    for job in plan:
      if job["kind"] == "search":
        for length in job["lengths"]:
          if job["fw"] == "ours":
            sub = parse_job(f"ours:{length}:quick+{job['opt']}")
          else:
            sub = parse_job(f"hf:{length}:{job['opt'] or 'flash'}:bf16:quick")
          sub["name"] = f"search:{sub['name']}"
          r = run_job(sub, args, deadline, log)
          results.append(r)
          print(f"[{time.strftime('%H:%M:%S')}] {sub['name']}: {r.get('status')} "
                f"step={r.get('step_s')} peak={r.get('peak_gib')} wall={r.get('wall_s', 0):.0f}s",
                flush=True)
          if r.get("status") != "ok":
            break
      elif job["kind"] == "alt":
        for alt in job["alts"]:
          r = run_job(alt, args, deadline, log)
          results.append(r)
          print(f"[{time.strftime('%H:%M:%S')}] {alt['name']}: {r.get('status')} "
                f"step={r.get('step_s')} peak={r.get('peak_gib')} wall={r.get('wall_s', 0):.0f}s "
                f"{(r.get('error') or '')[:200]}", flush=True)
          if r.get("status") not in ("oom", "error"):
            break
      else:
        r = run_job(job, args, deadline, log)
        results.append(r)
        print(f"[{time.strftime('%H:%M:%S')}] {job['name']}: {r.get('status')} "
              f"step={r.get('step_s')} peak={r.get('peak_gib')} wall={r.get('wall_s', 0):.0f}s "
              f"{(r.get('error') or '')[:200]}", flush=True)
      ceiling = ceiling_of(results)
      for x in results:
        if x.get("status") == "ok" and "flops" in x and x.get("step_s"):
          fl = sum(x["flops"].values())
          x["model_tflops"] = fl / x["step_s"] / 1e12
          x["tokens_per_s"] = x["real_tokens"] / x["step_s"]
          x["mfu"] = x["model_tflops"] / ceiling if ceiling else None
      with open(json_path, "w") as f:
        json.dump({"ceiling_tflops": ceiling, "results": results}, f, indent=1, default=str)
  ceiling = ceiling_of(results)
  for r in results:
    for key in ("parts", "trace"):
      if key in r:
        print(f"--- {r['job']} {key}: " + json.dumps(r[key], default=str)[:2500])
  print(f"\nceiling (max of jax/torch medians): {ceiling}")
  print(fmt_table(results, ceiling))


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--jobs", default=DEFAULT_PLAN)
  ap.add_argument("--deadline", type=float, default=520.0, help="seconds for the whole run")
  ap.add_argument("--job-timeout", type=float, default=400.0)
  ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(REPO, "bench_out"))
  ap.add_argument("--tiny", action="store_true", help="tiny model, CPU-friendly smoke test")
  ap.add_argument("--analyze-trace", help="print trace_phases() of a saved trace_*.json.gz")
  ap.add_argument("--worker", help=argparse.SUPPRESS)
  ap.add_argument("--result", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.analyze_trace:
    print(json.dumps(trace_phases(args.analyze_trace), indent=1))
  elif args.worker:
    worker_main(args)
  else:
    driver_main(args)


if __name__ == "__main__":
  main()

