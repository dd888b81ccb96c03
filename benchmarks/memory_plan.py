"""The start-up memory plan against XLA's compiled memory analysis, on an abstract 8-device mesh.

  # CPU: 8 simulated devices
  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
      python benchmarks/memory_plan.py --config configs/final.py --grad_accum 8
  # GPU: 8 mocked GPUs of one host on a single physical GPU (compile only)
  python benchmarks/memory_plan.py --config configs/final.py --grad_accum 8 --mock_gpus 8

Nothing is materialized: the trainer's step is lowered on ShapeDtypeStructs (memory.compile_step)
and compiled for the mesh's devices. Prints plan and compiled bytes per device as JSON; with
--dump DIR, XLA's buffer assignment goes there and the largest buffers live at the peak are
listed (peak_buffers).
"""
from __future__ import annotations

import argparse
import collections
import glob
import importlib.util
import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default=os.path.join(REPO, "configs/final.py"))
  p.add_argument("--max_len", type=int, default=0, help="override data.max_len (vision slots follow)")
  p.add_argument("--rows", type=int, default=0, help="global rows per step (default: the config's)")
  p.add_argument("--grad_accum", type=int, default=0)
  p.add_argument("--llm_layers", type=int, default=0)
  p.add_argument("--vit_depth", type=int, default=0)
  p.add_argument("--local_backend", default="", help="LLM kernel inside ulysses (CPU: blockwise)")
  p.add_argument("--vision_backend", default="")
  p.add_argument("--dtype", default="", help="override model.dtype (activations)")
  p.add_argument("--no_scan", action="store_true", help="model.scan_layers=False (unrolled)")
  p.add_argument("--mock_gpus", type=int, default=0, help="compile for N mocked GPUs of one host")
  p.add_argument("--dump", default="", help="XLA dump folder; lists the peak's largest buffers")
  return p.parse_args(argv)


def build_config(args):
  from mmprolong_jax.data import sources
  spec = importlib.util.spec_from_file_location("cfg_module", args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.init_checkpoint = ""            # shapes from the preset; nothing is loaded
  if args.max_len:
    rows = c.data.global_batch_tokens // c.data.max_len
    c.data.max_len = args.max_len
    c.data.update(sources.vision_slots(args.max_len))
    c.data.global_batch_tokens = rows * args.max_len
  if args.rows:
    c.data.global_batch_tokens = args.rows * c.data.max_len
  if args.grad_accum:
    c.train.grad_accum_steps = args.grad_accum
  if args.llm_layers:
    c.model.text_overrides = {**dict(c.model.text_overrides), "num_layers": args.llm_layers}
  if args.vit_depth:
    c.model.vision_overrides = {**dict(c.model.vision_overrides), "depth": args.vit_depth,
                                "fullatt_block_indexes": (args.vit_depth - 1,)}
  if args.dtype:
    c.model.dtype = args.dtype
  if args.no_scan:
    c.model.scan_layers = False
  if args.local_backend:
    c.attention.local_backend = args.local_backend
  if args.vision_backend:
    c.attention.vision_backend = args.vision_backend
  return c


def peak_buffers(dump_dir: str, top: int = 15) -> dict:
  """Temporaries live at the peak of XLA's buffer assignment (from the dump's buffer-assignment
  and live-range files), summed by shape."""
  ba = glob.glob(f"{dump_dir}/*after_optimizations-buffer-assignment.txt")
  lr = glob.glob(f"{dump_dir}/*after_optimizations-live-range.txt")
  if not ba or not lr:
    return {}
  size, shape, skip, is_param = {}, {}, set(), False
  for line in open(ba[0]):
    if line.startswith("allocation"):
      is_param = "parameter" in line or "constant" in line
    m = re.match(r"\s*value: <\d+ (\S+) @(\S+)> \(size=(\d+),offset=\d+\): (\S+)", line)
    if m:
      key = f"{m.group(1)}@{m.group(2)}"
      size[key], shape[key] = int(m.group(3)), m.group(4).split("{")[0]
      if is_param:
        skip.add(key)
  ranges = []
  for line in open(lr[0]):
    m = re.match(r"\s*(\S+?)\{([0-9,]*)\}:(\d+)-(\d+)", line)
    if m:
      key = f"{m.group(1)}@{m.group(2) or '0'}"
      if key in size and key not in skip:
        ranges.append((int(m.group(3)), int(m.group(4)), key))
  if not ranges:
    return {}
  delta = collections.Counter()
  for s, e, k in ranges:
    delta[s] += size[k]
    delta[e + 1] -= size[k]
  live, best, at = 0, -1, 0
  for t in sorted(delta):
    live += delta[t]
    if live > best:
      best, at = live, t
  by_shape = collections.Counter()
  for s, e, k in ranges:
    if s <= at <= e:
      by_shape[shape[k]] += size[k]
  return {"live_at_peak": best, "largest": dict(by_shape.most_common(top))}


def main(argv=None):
  args = parse_args(argv)
  if args.dump:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={args.dump}"
                               " --xla_dump_hlo_module_re=jit_step --xla_dump_hlo_pass_re=NONE")
  if args.mock_gpus:
    # Compile only: autotuning would time every fusion on the one real GPU (the 7B compile did
    # not finish in 280 s with it, 80 s without), and XLA's rematerialization pass would squeeze
    # the program towards that GPU's memory instead of showing what the step needs.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_autotune_level=0"
                               " --xla_disable_hlo_passes=rematerialization")
  import jax
  if args.mock_gpus:   # must precede the backend's start
    jax.config.update("jax_mock_gpu_topology", f"1x{args.mock_gpus}x1")
    jax.config.update("jax_cuda_visible_devices", "0")
  from mmprolong_jax import memory, setup
  config = build_config(args)
  mesh = setup.mesh_from_config(config)
  cfg = setup.model_config(config)
  compiled, info = memory.compile_step(config, cfg, mesh,
                                       log=lambda msg: print(msg, file=sys.stderr, flush=True))
  got = memory.compiled_bytes(compiled)
  out = {"device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
         "mesh": dict(mesh.shape), "jax": jax.__version__,
         "shape": memory.step_shape(config, mesh).__dict__,
         "lower_s": round(info["lower_s"], 1), "compile_s": round(info["compile_s"], 1),
         "plan_GiB": {k: round(v / memory.GIB, 3) for k, v in info["plan"].items()},
         "plan_totals_GiB": {k: round(v / memory.GIB, 3) for k, v in memory.totals(info["plan"]).items()},
         "compiled_GiB": {k: round(v / memory.GIB, 3) for k, v in got.items()}}
  if args.dump:
    peak = peak_buffers(args.dump)
    out["peak_buffers_GiB"] = {k: round(v / memory.GIB, 3) for k, v in peak.get("largest", {}).items()}
    out["live_at_peak_GiB"] = round(peak.get("live_at_peak", 0) / memory.GIB, 3)
  print(json.dumps(out, indent=1), flush=True)
  return out


if __name__ == "__main__":
  main()
