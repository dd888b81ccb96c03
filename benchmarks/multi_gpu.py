"""Several GPUs of one host: correctness of sequence/FSDP parallelism and sequence-parallel scaling.

  python3 benchmarks/multi_gpu.py [--parts check,scale] [--deadline SECONDS]

check: on 2 GPUs, ring and Ulysses attention (outputs and dq/dk/dv) against the single-GPU
  reference, and a tiny-model train step with mesh sequence=2 and with fsdp=2 against the same
  step on one GPU (losses over 3 steps), all in fp32 with 'highest' matmul precision.
scale: the 7B-width, reduced-depth step (4 LLM layers + 8 ViT blocks, one packed row of
  US-letter pages, bf16, full remat, AdamW) on one GPU at 128K vs sequence=2 with Ulysses (cuDNN
  inside) and ring at 128K and 256K. Each case runs in its own subprocess (an OOM is reported,
  not fatal). tokens/s = real tokens of the row / median step time.
NCCL's NVLink multicast stays off (NCCL_NVLS_ENABLE=0), as this machine's docs require.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")

SCALE_CASES = [  # name, max_len, sequence, backend
    ("1gpu_128k", 131072, 1, "cudnn"),
    ("sp2_ulysses_128k", 131072, 2, "ulysses"),
    ("sp2_ulysses_256k", 262144, 2, "ulysses"),
    ("sp2_ring_128k", 131072, 2, "ring"),
]


def check_attention():
  import jax
  import jax.numpy as jnp
  import numpy as np
  from mmprolong_jax.attention import AttentionConfig, attention, zigzag_permutation
  from mmprolong_jax.parallel.mesh import make_mesh

  jax.config.update("jax_default_matmul_precision", "highest")
  rng = np.random.default_rng(0)
  b, t, h, k, d = 1, int(os.environ.get("MGPU_T", 4096)), 28, 4, 128
  q, kk, v = (jnp.asarray(rng.standard_normal((b, t, n, d)), jnp.float32) for n in (h, k, k))
  seg = np.ones((b, t), np.int32)
  seg[:, int(.37 * t):int(.73 * t)] = 2  # segments cross the shard boundary
  seg[:, int(.73 * t):int(.95 * t)] = 3
  seg[:, int(.95 * t):] = 0  # padding
  seg = jnp.asarray(seg)
  mesh = make_mesh({"data": 1, "fsdp": 1, "sequence": 2, "tensor": 1}, jax.devices()[:2])
  ref_cfg = AttentionConfig(backend="reference")

  def loss(cfg, pos=None, sg=seg):
    def f(q, k, v):
      o = attention(q, k, v, segment_ids_BxT=sg, positions_BxT=pos, causal=True, cfg=cfg)
      return (o * o).sum(), o
    return f

  (_, want), want_g = jax.value_and_grad(loss(ref_cfg), (0, 1, 2), has_aux=True)(q, kk, v)
  out = {}
  perm, _ = zigzag_permutation(t, 2)
  for name, cfg in [
      ("ulysses_blockwise", AttentionConfig(backend="ulysses", mesh=mesh, local_backend="blockwise")),
      ("ring_zigzag", AttentionConfig(backend="ring", mesh=mesh, layout="zigzag", local_backend="blockwise"))]:
    if name.startswith("ring"):
      args = [x[:, perm] for x in (q, kk, v)]
      f = loss(cfg, pos=jnp.asarray(np.broadcast_to(perm, (b, t))), sg=seg[:, perm])
    else:
      args, f = [q, kk, v], loss(cfg)
    with jax.set_mesh(mesh):
      (_, got), got_g = jax.jit(jax.value_and_grad(f, (0, 1, 2), has_aux=True))(*args)
    if name.startswith("ring"):
      got, got_g = got[:, np.argsort(perm)], [g[:, np.argsort(perm)] for g in got_g]
    rel = lambda a, w: float(jnp.linalg.norm(a - w) / jnp.linalg.norm(w))
    out[name] = {"out": rel(got, want), **{f"d{n}": rel(g, w) for n, g, w in zip("qkv", got_g, want_g)}}
  return out


def check_train():
  import jax
  from configs import tiny_cpu
  from mmprolong_jax import train

  jax.config.update("jax_default_matmul_precision", "highest")
  result = {}
  base = None
  for name, mesh, backend in [("1gpu", dict(data=1, fsdp=1, sequence=1), "reference"),
                              ("sequence2_ring", dict(data=1, fsdp=1, sequence=2), "ring"),
                              ("sequence2_ulysses", dict(data=1, fsdp=1, sequence=2), "ulysses"),
                              ("fsdp2", dict(data=1, fsdp=2, sequence=1), "reference")]:
    c = tiny_cpu.get_config()
    c.mesh.update(mesh)
    c.attention.backend = backend
    c.train.token_budget = 3 * c.data.global_batch_tokens
    c.train.checkpoint_every = 1000
    workdir = f"/tmp/mgpu_{name}_{time.time_ns()}"
    train.run(c, workdir)
    losses = [json.loads(l)["loss"] for l in open(f"{workdir}/metrics.jsonl")]
    base = base or losses
    result[name] = {"losses": losses,
                    "max_rel_diff_vs_1gpu": max(abs(a - b) / abs(b) for a, b in zip(losses, base))}
  return result


def scale_case(name: str, max_len: int, sp: int, backend: str, steps: int = 3):
  """One case, in this process: prints a JSON line."""
  import jax
  import numpy as np
  from configs import base
  from mmprolong_jax import setup
  from mmprolong_jax.data.synthetic import synthetic_batch
  from mmprolong_jax.flops import step_flops
  from mmprolong_jax.parallel import sharding
  from mmprolong_jax.train_step import make_train_step

  c = base.get_config()
  c.model.preset = "qwen2_5_vl_7b"
  c.model.text_overrides = {"num_layers": 4}
  c.model.vision_overrides = {"depth": 8, "fullatt_block_indexes": (3, 7)}
  c.attention.backend = backend
  c.attention.local_backend = "cudnn"
  c.attention.max_segments = 2
  c.mesh.update(data=1, fsdp=1, sequence=sp, tensor=1)
  c.data.max_len = max_len
  c.data.global_batch_tokens = max_len
  c.data.num_patches = 4 * max_len
  mesh = setup.mesh_from_config(c)
  cfg = setup.model_config(c)
  pages = (max_len - 512) // 2510
  batch = synthetic_batch(0, 0, cfg, rows=1, max_len=max_len, num_patches=4 * max_len,
                          page_grid=(1, 114, 88), pages_per_segment=(pages,), answer_len=32,
                          fill=(pages * 2510 + 480) / max_len, vision_shards=sp)
  batch["patches"] = batch["patches"].astype("bfloat16")
  if backend == "ring":
    batch = setup.zigzag_batch(batch, sp)
  with jax.set_mesh(mesh):
    graphdef, tx, state, state_shard = setup.init_state(c, cfg, mesh, 100)
  specs = sharding.batch_specs(batch)
  shard = {k: jax.sharding.NamedSharding(mesh, s) for k, s in specs.items()}
  dev = {k: jax.device_put(v, shard[k]) for k, v in batch.items()}
  step = jax.jit(make_train_step(graphdef, tx, 256), in_shardings=(state_shard, shard),
                 out_shardings=(state_shard, None), donate_argnums=(0,))
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    state, m = step(state, dev)
    jax.block_until_ready(m["loss"])
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      state, m = step(state, dev)
      jax.block_until_ready(m["loss"])
      times.append(time.perf_counter() - t0)
  tokens = int((batch["segment_ids"] > 0).sum())
  med = float(np.median(times))
  flops = sum(step_flops(cfg, batch).values())
  peak = max((d.memory_stats() or {}).get("peak_bytes_in_use", 0) for d in mesh.devices.flat)
  print("RESULT " + json.dumps({
      "case": name, "gpus": sp, "tokens": tokens, "step_s": med, "tokens_per_s": tokens / med,
      "model_tflops_per_gpu": flops / med / sp / 1e12, "compile_plus_first_s": compile_s,
      "peak_gib_per_gpu": peak / 2**30, "loss": float(m["loss"])}), flush=True)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--parts", default="check,scale")
  ap.add_argument("--cases", default=",".join(c[0] for c in SCALE_CASES))
  ap.add_argument("--deadline", type=float, default=480.0)
  ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
  a = ap.parse_args()
  if a.case:
    scale_case(*next((c for c in SCALE_CASES if c[0] == a.case)))
    return
  start = time.time()
  results = {}
  out_dir = os.environ.get("OUT", "/tmp")
  if "check" in a.parts:
    results["attention"] = check_attention()
    print("attention", json.dumps(results["attention"]), flush=True)
    results["train"] = check_train()
    print("train", json.dumps(results["train"]), flush=True)
  if "scale" in a.parts:
    results["scale"] = []
    for name in a.cases.split(","):
      left = a.deadline - (time.time() - start)
      if left < 60:
        results["scale"].append({"case": name, "error": "skipped: deadline"})
        continue
      try:
        p = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True,
                           text=True, timeout=left - 20, env=os.environ)
        line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
        res = json.loads(line[7:]) if line else {"case": name, "error": (p.stderr or p.stdout)[-600:]}
      except subprocess.TimeoutExpired:
        res = {"case": name, "error": "timeout"}
      results["scale"].append(res)
      print(json.dumps(res), flush=True)
  with open(os.path.join(out_dir, "multi_gpu.json"), "w") as f:
    json.dump(results, f, indent=1)
  print("\n== summary")
  for k, v in results.get("attention", {}).items():
    print(f"attention {k}: " + " ".join(f"{n}={e:.1e}" for n, e in v.items()))
  for k, v in results.get("train", {}).items():
    print(f"train {k}: max rel loss diff vs 1 GPU {v['max_rel_diff_vs_1gpu']:.1e}")
  for r in results.get("scale", []):
    if "error" in r:
      print(f"{r['case']}: {r['error'][-200:]}")
    else:
      print(f"{r['case']}: {r['step_s']:.2f} s/step, {r['tokens_per_s']:.0f} tok/s, "
            f"{r['model_tflops_per_gpu']:.0f} TFLOP/s/GPU, peak {r['peak_gib_per_gpu']:.1f} GiB")


if __name__ == "__main__":
  main()
