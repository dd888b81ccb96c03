"""What cuDNN's mask variants cost on one GPU, at the step's shapes (bf16, median ms).

LLM: one 128K row holding one 131,000-token sequence (then padding), 28 / 4 heads, head dim
128, causal: the unmasked causal kernel (`unmasked`), per-row lengths (`lengths`, the padding
mask variant), the ragged route with M=2 (`ragged`) and `cudnn_attention(max_segments=2)`
(`ours`, which picks a route from the data).
Vision: 52 image rows of 10,752 slots (10,032 real), 16 heads, head dim 80, non-causal:
per-row lengths (`lengths`, the tower's route), padding pushed out by an extra key feature
through the unmasked kernel (`feature`, head dim 88: is the padding mask worth avoiding?), and
the unmasked kernel itself (`unmasked`: wrong at padding, timing only).
Remat: `unmasked` and `ours` under the model's 'save_attention_kernel' checkpoint policy.
Variants of one shape are timed interleaved (reps rounds), so drift hits all alike.

    JAX_PLATFORMS=cuda python3 benchmarks/cudnn_masks.py [--reps 5] [--parts llm,images,remat]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from attention import inputs  # noqa: E402  (benchmarks/attention.py: the LLM's head shapes)
from mmprolong_jax.attention import cudnn  # noqa: E402


def _by_lengths(q, k, v, valid_BxT, causal=False):
  """cuDNN with per-row sequence lengths: each row's real tokens come first."""
  lengths_B = valid_BxT.sum(1, dtype=jnp.int32)
  return jax.nn.dot_product_attention(q, k, v, is_causal=causal, query_seq_lengths=lengths_B,
                                      key_value_seq_lengths=lengths_B, implementation="cudnn")


def _feature_masked(q, k, v, valid_BxT):
  """Non-causal rows with trailing padding through the unmasked kernel: q gains a feature 1,
  k a feature 0 (real) or -1e30 (padding), so padding scores underflow to weight 0."""
  pad = lambda x, first: jnp.concatenate(  # noqa: E731
      [x, first, jnp.zeros(x.shape[:-1] + (7,), x.dtype)], axis=-1)
  ones = jnp.ones(q.shape[:-1] + (1,), q.dtype)
  big = jnp.where(valid_BxT[:, :, None, None], 0.0, -1e30).astype(k.dtype)
  big = jnp.broadcast_to(big, k.shape[:-1] + (1,))
  vx = jnp.concatenate([v, jnp.zeros(v.shape[:-1] + (8,), v.dtype)], axis=-1)
  out = jax.nn.dot_product_attention(pad(q, ones), pad(k, big), vx, scale=q.shape[-1] ** -0.5,
                                     implementation="cudnn")
  return out[..., :q.shape[-1]]


def _time(variants, args, do, valid, reps):
  """{name: (fwd ms, fwd+bwd ms)}, outputs and gradients masked at padding like the model's.
  `args` = (q, k, v, data): the variants' data (segment ids, lengths) is a jit argument, as
  in training; closed over, XLA would constant-fold its bookkeeping at compile time."""
  keep = lambda x: jnp.where(valid[:, :, None, None], x, 0)  # noqa: E731
  fns = {}
  for name, f in variants.items():
    fns[name, "fwd"] = jax.jit(lambda q, k, v, d, f=f: keep(f(q, k, v, d)))
    fns[name, "fwd+bwd"] = jax.jit(lambda q, k, v, d, f=f: jax.vjp(
        lambda q, k, v: keep(f(q, k, v, d)), q, k, v)[1](do))
  for fn in fns.values():
    jax.block_until_ready(fn(*args))
  times = {key: [] for key in fns}
  for _ in range(reps):
    for key, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[key].append(time.perf_counter() - start)
  return fns, {key: statistics.median(ts) * 1e3 for key, ts in times.items()}


def _rel_err(a, b, valid):
  a, b = (jnp.where(valid[:, :, None, None], x, 0).astype(jnp.float32) for x in (a, b))
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def _llm_case(T, real):
  """One row of one `real`-token sequence then padding: inputs and the kernel variants."""
  q, k, v, do = inputs(T)
  seg = (jnp.arange(T) < real).astype(jnp.int32)[None]
  variants = {
      "unmasked": lambda q, k, v, seg: jax.nn.dot_product_attention(
          q, k, v, is_causal=True, implementation="cudnn"),
      "lengths": lambda q, k, v, seg: _by_lengths(q, k, v, seg, causal=True),
      "ragged": lambda q, k, v, seg: cudnn._ragged(q, k, v, seg, True, 2),
      "ours": lambda q, k, v, seg: cudnn.cudnn_attention(q, k, v, seg, True, 2),
  }
  return (q, k, v, seg), do, seg != 0, variants


def llm(reps, T=131072, real=131000):
  qkv, do, valid, variants = _llm_case(T, real)
  fns, ms = _time(variants, qkv, do, valid, reps)
  err = _rel_err(fns["ours", "fwd"](*qkv), fns["ragged", "fwd"](*qkv), valid)
  return ms, {"ours vs ragged, output": err}


def remat(reps, T=131072, real=131000):
  """`unmasked` and `ours` inside jax.checkpoint with the 'save_attention_kernel' policy, as
  in the model: does the lax.cond between routes cost anything there (residuals of both
  branches carried out of the cond)? Prints what each saves for the backward."""
  from mmprolong_jax.model.layers import REMAT_POLICIES
  qkv, do, valid, variants = _llm_case(T, real)
  policy = REMAT_POLICIES["save_attention_kernel"]
  variants = {f"{name}+satt": jax.checkpoint(variants[name], policy=policy)
              for name in ("unmasked", "ours")}
  for name, f in variants.items():
    print(f"saved by {name}:")
    jax.ad_checkpoint.print_saved_residuals(lambda q, k, v, f=f: f(q, k, v, qkv[3]), *qkv[:3])
  _, ms = _time(variants, qkv, do, valid, reps)
  return ms, {}


def vision(rows, slots, real, reps):
  keys = jax.random.split(jax.random.key(1), 4)
  q, k, v, do = (jax.random.normal(key, (rows, slots, 16, 80), jnp.bfloat16) for key in keys)
  valid = jnp.broadcast_to(jnp.arange(slots) < real, (rows, slots))
  variants = {
      "lengths": _by_lengths,
      "feature": _feature_masked,
      "unmasked": lambda q, k, v, valid: jax.nn.dot_product_attention(
          q, k, v, implementation="cudnn"),
  }
  args = (q, k, v, valid)
  fns, ms = _time(variants, args, do, valid, reps)
  errs = {"feature vs lengths, output": _rel_err(fns["feature", "fwd"](*args),
                                                 fns["lengths", "fwd"](*args), valid)}
  for name, a, b in zip(("dq", "dk", "dv"), fns["feature", "fwd+bwd"](*args),
                        fns["lengths", "fwd+bwd"](*args)):
    errs[f"feature vs lengths, {name}"] = _rel_err(a, b, valid)
  return ms, errs


if __name__ == "__main__":
  ap = argparse.ArgumentParser()
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--parts", default="llm,images")
  args = ap.parse_args()
  print(jax.devices()[0].device_kind)
  parts = {"llm": lambda: llm(args.reps), "remat": lambda: remat(args.reps),
           "images": lambda: vision(52, 10752, 10032, args.reps)}
  for part in args.parts.split(","):
    ms, errs = parts[part]()
    for (name, mode), t in ms.items():
      print(f"{part:8s} {name:9s} {mode:8s} {t:9.2f} ms", flush=True)
    for name, e in errs.items():
      print(f"{part:8s} rel. L2 {name}: {e:.2e}", flush=True)
