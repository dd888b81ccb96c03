"""Ring and Ulysses attention as XLA builds them for N GPUs, on one GPU (jax's mock NCCL).

With jax's `mock_num_gpu_processes=N` this process acts as one of N single-GPU hosts: XLA
partitions and schedules the program exactly as for N real GPUs (collectives become
async start/done pairs placed by its latency-hiding scheduler), but the collectives move
no data. So one device's program can be read and timed here without N GPUs:
- overlap: for every asynchronous collective, the cuDNN attention calls and other kernels
  that the scheduler placed between its start and its done (work that hides the transfer);
- compute: one device's time for the sharded call, against 1/N of the one-GPU call on the
  whole row in the same process (how much of the ideal N-fold speed-up the per-device work
  keeps; NCCL transfer times are not in it: they need real GPUs, benchmarks/multi_gpu.py).

    PYTHONPATH=. JAX_PLATFORMS=cuda python3 benchmarks/ring_mock.py [--sp 4] [--seq-len 131072]

On CPU (JAX_PLATFORMS=cpu) it uses N simulated host devices and the blockwise kernel and
only prints the schedules: a smoke test of this script, nothing about GPUs.
Writes ring_mock.json and the compiled HLO of every case to --out (default $OUT or .).
"""
import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ON_CPU = os.environ.get("JAX_PLATFORMS", "") == "cpu"


def _start_jax(sp: int):
  """Import jax with N devices: mocked GPUs, or simulated host devices on CPU."""
  if ON_CPU:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={sp}")
  import jax
  if not ON_CPU:
    jax.config.update("mock_num_gpu_processes", sp)
  return jax


_NAME = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=")
_ASYNC = re.compile(r"\s(collective-permute|all-to-all|all-gather|reduce-scatter|all-reduce|"
                    r"async)-(start|done)\(")
_SYNC = re.compile(r"\s(collective-permute|all-to-all|all-gather|reduce-scatter|all-reduce)\(")
_KERNEL = re.compile(r"\s(fusion|custom-call|convolution|dot|copy|scatter|gather|sort)\(")


def schedule(hlo_text: str):
  """Per computation, in scheduled order: every async collective with the attention calls
  (cuDNN fMHA custom calls, or on CPU nothing) and other kernels between start and done,
  and the synchronous collectives. Returns a list of dicts, one per collective."""
  out = []
  for comp in re.split(r"\n(?=\S)", hlo_text):  # computations start at column 0
    lines = comp.splitlines()
    ops = [l for l in lines if _NAME.match(l) and " parameter(" not in l]
    if len(ops) <= 1:
      continue  # a wrapper computation of an async op (its one op is the collective)
    open_ = {}  # start name -> record
    for line in lines:
      m = _NAME.match(line)
      if not m:
        continue
      name = m.group(1)
      is_attention = "custom-call(" in line and "fmha" in line.lower()
      for rec in open_.values():
        if is_attention:
          rec["attention_calls_between"] += 1
        elif _KERNEL.search(line):
          rec["other_kernels_between"] += 1
      a = _ASYNC.search(line)
      if a and a.group(2) == "start":
        open_[name] = dict(op=a.group(1), start=name, attention_calls_between=0,
                           other_kernels_between=0)
      elif a:  # a done: its operand is the start
        started = next((s for s in open_ if re.search(rf"[(%\s]{re.escape(s)}[),]", line)), None)
        if started:
          out.append(open_.pop(started))
      elif sync := _SYNC.search(line):
        out.append(dict(op=sync.group(1), start=name, synchronous=True))
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--sp", type=int, default=4)
  ap.add_argument("--seq-len", type=int, default=131072)
  ap.add_argument("--backends", default="ring,ulysses")
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--max-segments", type=int, default=8)
  ap.add_argument("--out", default=os.environ.get("OUT", "."))
  args = ap.parse_args()
  sp, T = args.sp, args.seq_len
  os.makedirs(args.out, exist_ok=True)
  jax = _start_jax(sp)
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P

  import attention as A  # benchmarks/attention.py: head shapes, rows, timing
  from mmprolong_jax.attention import AttentionConfig, attention, zigzag_permutation
  from mmprolong_jax.parallel.mesh import make_mesh

  local = "blockwise" if ON_CPU else "cudnn"
  mesh = make_mesh({"data": 1, "fsdp": 1, "sequence": sp, "tensor": 1}, jax.devices())
  print(f"{len(jax.devices())} devices ({jax.devices()[0].device_kind}), "
        f"{len(jax.local_devices())} local; jax {jax.__version__}", flush=True)
  rng = np.random.default_rng(0)
  shapes = dict(q=(1, T, A.H, A.D), k=(1, T, A.K, A.D), v=(1, T, A.K, A.D), do=(1, T, A.H, A.D))

  def normal(shape):
    return lambda idx: rng.standard_normal(
        [len(range(*s.indices(n))) for s, n in zip(idx, shape)], np.float32).astype(A.DTYPE)

  report = dict(sp=sp, seq_len=T, device=jax.devices()[0].device_kind, jax=jax.__version__,
                cases=[])
  seg_natural = A.make_segments(T, True)
  perm, _ = zigzag_permutation(T, sp)
  flops = {"fwd": 4 * A.H * A.D * A.unmasked_pairs(seg_natural)}
  flops["fwd+bwd"] = flops["fwd"] * 14 // 4

  # The whole row on the local GPU: what each of N devices would ideally need 1/N of.
  if not ON_CPU:
    one = AttentionConfig("cudnn", max_segments=args.max_segments)
    q, k, v, do = A.inputs(T)
    seg1 = jnp.asarray(seg_natural)
    for mode, fn in (("fwd", A.ours(one)), ("fwd+bwd", A.fwd_bwd(A.ours(one)))):
      fargs = (q, k, v, seg1) + ((do,) if mode == "fwd+bwd" else ())
      ms = A.timed(jax.jit(fn), fargs, args.reps) * 1e3
      row = dict(case="one GPU, whole row, cudnn", mode=mode, ms=ms,
                 tflops=flops[mode] / ms / 1e9)
      report["cases"].append(row)
      print(json.dumps(row), flush=True)
    del q, k, v, do

  # Split along the sequence (axis 1): tokens of q/k/v/do, and segment ids.
  by_seq = NamedSharding(mesh, P(None, "sequence"))
  q, k, v, do = (jax.make_array_from_callback(s, by_seq, normal(s)) for s in shapes.values())
  for backend in args.backends.split(","):
    zig = backend == "ring"
    cfg = AttentionConfig(backend, mesh=mesh, layout="zigzag" if zig else "natural",
                          local_backend=local, max_segments=args.max_segments)
    seg = seg_natural[:, perm] if zig else seg_natural
    seg_g = jax.make_array_from_callback(seg.shape, by_seq, lambda idx, seg=seg: seg[idx])
    fwd = A.ours(cfg)
    for mode, fn in (("fwd", fwd), ("fwd+bwd", A.fwd_bwd(fwd))):
      fargs = (q, k, v, seg_g) + ((do,) if mode == "fwd+bwd" else ())
      name = f"{backend} sp={sp} [{local}]"
      row = dict(case=name, mode=mode)
      with jax.set_mesh(mesh):
        compiled = jax.jit(fn).lower(*fargs).compile()
      text = compiled.as_text()
      with open(os.path.join(args.out, f"ring_mock_{backend}_{mode}.hlo.txt"), "w") as f:
        f.write(text)
      row["collectives"] = schedule(text)
      if not ON_CPU:
        try:
          with jax.set_mesh(mesh):
            ms = A.timed(compiled, fargs, args.reps) * 1e3
          row["ms_per_device"] = ms
        except Exception as e:  # noqa: BLE001  (mocked execution may be refused: record it)
          row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
      report["cases"].append(row)
      print(json.dumps(row), flush=True)

  whole = {r["mode"]: r["ms"] for r in report["cases"] if r["case"].startswith("one GPU")}
  print("\ncase                                 mode      ms/device   ideal (1/N)   kept")
  for r in report["cases"]:
    if "ms_per_device" in r and r["mode"] in whole:
      ideal = whole[r["mode"]] / sp
      r["ideal_ms"], r["kept"] = ideal, ideal / r["ms_per_device"]
      print(f"{r['case']:36s} {r['mode']:8s} {r['ms_per_device']:10.2f} {ideal:12.2f} "
            f"{r['kept']:7.0%}")
  print("\ncollectives in one device's program (async: attention calls / other kernels "
        "scheduled between start and done, in program order)")
  for r in report["cases"]:
    for op in sorted({c["op"] for c in r.get("collectives", [])}):
      cs = [c for c in r["collectives"] if c["op"] == op]
      between = " ".join(f"{c['attention_calls_between']}/{c['other_kernels_between']}"
                         for c in cs if not c.get("synchronous"))
      sync = sum(1 for c in cs if c.get("synchronous"))
      print(f"{r['case']:28s} {r['mode']:8s} {op}: {len(cs) - sync} async [{between}], "
            f"{sync} synchronous")
  with open(os.path.join(args.out, "ring_mock.json"), "w") as f:
    json.dump(report, f, indent=1)


if __name__ == "__main__":
  main()
