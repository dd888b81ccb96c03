"""Where a later ring step's time goes: one GPU, profiler traces of the zigzag ring's step 1
(`attention.ring_step_case`, sp=4, unpacked rows of 32K and 64K) beside the bare non-causal
cuDNN kernel on the same shard, forward and forward+backward. Prints wall ms per call, GPU busy
and span ms per call (3 traced calls) and the top kernels.

    PYTHONPATH=. JAX_PLATFORMS=cuda python3 benchmarks/ring_profile.py
"""
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import attention as A  # noqa: E402
from trace_tools import summarize_trace  # noqa: E402


def main():
  for seq_len in (32768, 65536):
    name, seg, _, fwd, fwdbwd, _ = A.ring_step_case(seq_len, 4)
    t = seg.shape[1]
    q, k, v, do = A.inputs(t)
    seg = jnp.asarray(seg)
    _, _, _, bfwd, bfwdbwd, _ = A.bare_noncausal_case(t)
    for label, fn, args in ((name + " fwd", jax.jit(fwd), (q, k, v, seg)),
                            ("bare noncausal fwd", jax.jit(bfwd), (q, k, v, seg)),
                            (name + " fwd+bwd", jax.jit(fwdbwd), (q, k, v, seg, do)),
                            ("bare noncausal fwd+bwd", jax.jit(bfwdbwd), (q, k, v, seg, do))):
      ms = A.timed(fn, args, 5) * 1e3
      logdir = f"/tmp/prof_{len(label)}_{seq_len}"
      jax.profiler.start_trace(logdir, create_perfetto_trace=True)
      for _ in range(3):
        jax.block_until_ready(fn(*args))
      jax.profiler.stop_trace()
      s = summarize_trace(glob.glob(f"{logdir}/**/*.json.gz", recursive=True)[0])
      print(f"== {label} T={t}: {ms:.3f} ms/call; GPU busy {s['gpu_busy_s'] * 1e3 / 3:.3f} "
            f"ms/call, span {s['gpu_span_s'] * 1e3 / 3:.3f}")
      for kname, sec, _ in s["top"][:14]:
        print(f"   {sec * 1e3 / 3:8.3f} ms  {kname[:110]}")


if __name__ == "__main__":
  main()
