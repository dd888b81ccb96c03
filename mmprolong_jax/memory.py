"""Per-device memory of one training step: the plan printed at start-up, and the AOT check of
that plan against XLA's compiled memory analysis (abstract state and batch, no weights).

The model (bytes per device; t = tokens and p = vision patch slots per device in one
micro-batch: rows / (data x fsdp) / grad_accum_steps rows, each split over `sequence`):

  arguments   params + optimizer state (their shardings) + this device's slice of the batch
              (every micro-batch: the whole step's batch is one argument)
  gradients   fp32, sharded like the parameters; twice that with gradient accumulation (the
              running sum and the micro-batch's)
  weights     the largest layer gathered over `fsdp` in bf16, twice (the next is prefetched),
              plus the LM head's fp32 kernel and the embedding table gathered in the act
              dtype (and that copy's gradient); with model.scan_layers, every layer's weights
              stacked in the act dtype (sharded like the parameters) and that stack's gradient
  LLM saved   layers x t x hidden x act: each decoder layer's input (per-layer remat)
  ViT saved   (depth + 1) x p x width x act: each vision block's input and the tower's output,
              plus both towers' fp32 rotary angles
  working     the larger of one decoder layer's (per token) and one vision block's (per patch)
              forward intermediates, `layer_widths` (the LLM's with cuDNN's backward
              workspace); the loss head's 1,024-row chunk of fp32 logits (x3)

`act` is the activation dtype's size. With model.scan_layers=False on CPU, XLA:CPU expands
remat's optimization barriers and merges the recomputation back into the forward pass (its
compiled temporaries are the same with remat_policy 'none' and 'full'), so every layer keeps its
intermediates: saved = layers x (input + intermediates) and no separate working set. A scan
fixes what crosses layers on every backend. benchmarks/memory_plan.py prints plan and compiled
bytes side by side; launch/README.md has the measured numbers.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from mmprolong_jax.model.layers import padded_hidden
from mmprolong_jax.parallel.mesh import axis_size

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class StepShape:
  rows: int           # global rows per step
  micro_rows: int     # rows per (data x fsdp) group in one micro-batch
  tokens: int         # LLM tokens per device in one micro-batch
  patches: int        # vision patch slots per device in one micro-batch
  accum: int


def step_shape(config, mesh) -> StepShape:
  d = config.data
  rows = d.global_batch_tokens // d.max_len
  groups = axis_size(mesh, "data") * axis_size(mesh, "fsdp")
  sp = axis_size(mesh, "sequence")
  accum = int(config.train.get("grad_accum_steps", 1))
  micro = max(rows // accum // groups, 1)
  return StepShape(rows, micro, micro * d.max_len // sp, micro * int(d.num_patches) // sp, accum)


def layer_widths(cfg) -> tuple[int, int]:
  """Bytes per token of one decoder layer's and per patch of one vision block's forward
  intermediates (what its backward reads), counted from the layer code: act-dtype tensors
  (norm outputs, q/k/v and their rotated copies, attention and projection outputs, the SwiGLU's
  three hidden tensors) plus the fp32 copies made by RMSNorm and the rotary embedding."""
  t, v = cfg.text, cfg.vision
  act = np.dtype(cfg.dtype).itemsize
  d, hd, e = t.hidden_size, t.head_dim, v.hidden_size
  mlp, vmlp = padded_hidden(t.intermediate_size), padded_hidden(v.intermediate_size)
  llm = act * (4 * d + 2 * (t.num_heads + 2 * t.num_kv_heads) * hd + 3 * mlp)
  llm += 4 * (2 * d + (t.num_heads + t.num_kv_heads) * hd)
  vit = act * (8 * e + 3 * vmlp) + 4 * 4 * e
  return llm, vit


def cudnn_workspace(cfg, config, mesh) -> int:
  """fp32 backward workspace of cuDNN's packed path in the LLM, sized as if the row were
  max_segments rows (attention/config.py): 2 x M x row tokens x local heads x head_dim x 4."""
  a = config.attention
  if "cudnn" not in (a.backend, a.local_backend) or a.backend == "ring":
    return 0
  s = step_shape(config, mesh)
  sp = axis_size(mesh, "sequence") if a.backend == "ulysses" else 1
  heads = cfg.text.num_heads // (sp * axis_size(mesh, "tensor"))
  return 2 * a.max_segments * s.tokens * sp * heads * cfg.text.head_dim * 4


def plan(cfg, config, mesh, params_bytes: int, opt_bytes: int, batch_bytes: int = 0,
         backend: str | None = None) -> dict:
  """The model above, component by component (bytes per device). params_bytes/opt_bytes: the
  sharded state (setup.bytes_per_device); batch_bytes: this device's batch slice."""
  backend = backend or jax.default_backend()
  # Policies that save more than the layer input are planned as 'full' (a lower bound).
  cpu_all = backend == "cpu" and not cfg.scan_layers
  keep_llm, keep_vit = cpu_all or cfg.remat_policy == "none", cpu_all or cfg.vision_remat == "none"
  s = step_shape(config, mesh)
  t, v = cfg.text, cfg.vision
  act = np.dtype(cfg.dtype).itemsize
  fsdp = axis_size(mesh, "fsdp")
  grads = params_bytes * 4 // np.dtype(cfg.param_dtype).itemsize * (2 if s.accum > 1 else 1)
  layer = (t.hidden_size * (t.num_heads + 2 * t.num_kv_heads) * t.head_dim
           + t.num_heads * t.head_dim * t.hidden_size + 3 * t.hidden_size * t.intermediate_size)
  block = 4 * v.hidden_size**2 + 3 * v.hidden_size * v.intermediate_size
  head = 0 if t.tie_word_embeddings else t.hidden_size * t.vocab_size * 4
  # The embedding table gathered in the act dtype, and the gradient of that copy (text.embed).
  embed = 2 * t.vocab_size * t.hidden_size * act if fsdp > 1 else 0
  weights = 2 * max(layer, block) * act + head + embed
  if cfg.scan_layers:   # the scanned stacks in the act dtype, and their gradients (layers.run_layers)
    weights += 2 * (t.num_layers * layer + v.depth * block) * act // fsdp
  llm_w, vit_w = layer_widths(cfg)
  llm_x, vit_x = s.tokens * t.hidden_size * act, s.patches * v.hidden_size * act
  angles = s.tokens * t.head_dim * 4 + s.patches * v.head_dim * 4
  loss = 3 * 1024 * t.vocab_size * 4
  # A tower without remat keeps every layer's intermediates (see the module docstring for CPU);
  # with remat it keeps layer inputs and needs one layer's working set in the backward.
  if keep_llm:
    saved_llm, work_llm = t.num_layers * (llm_x + s.tokens * llm_w), 0
  else:
    saved_llm = t.num_layers * llm_x
    work_llm = s.tokens * llm_w + cudnn_workspace(cfg, config, mesh)
  if keep_vit:
    saved_vit, work_vit = v.depth * (vit_x + s.patches * vit_w), 0
  else:
    saved_vit, work_vit = (v.depth + 1) * vit_x, s.patches * vit_w
  working = max(work_llm, work_vit)
  return {"params": params_bytes, "optimizer": opt_bytes, "batch": batch_bytes,
          "gradients": int(grads), "weights": int(weights), "llm_saved": int(saved_llm),
          "vision_saved": int(saved_vit + angles), "working": int(working + loss)}


def activation_bytes_estimate(cfg, config, mesh) -> int:
  """Saved activations of both towers plus the largest working set (what plan_text prints)."""
  p = plan(cfg, config, mesh, 0, 0)
  return p["llm_saved"] + p["vision_saved"] + p["working"]


def totals(p: dict) -> dict:
  args = p["params"] + p["optimizer"] + p["batch"]
  temps = p["gradients"] + p["weights"] + p["llm_saved"] + p["vision_saved"] + p["working"]
  return {"arguments": args, "temps": temps, "peak": args + temps}


def plan_line(cfg, config, mesh, params_bytes: int, opt_bytes: int) -> str:
  """One line for the start-up plan: the whole step's estimate per device."""
  batch = abstract_batch(config, cfg, mesh)
  b = sum(int(np.prod(v.sharding.shard_shape(v.shape))) * np.dtype(v.dtype).itemsize
          for v in batch.values())
  p = plan(cfg, config, mesh, params_bytes, opt_bytes, b)
  tot = totals(p)
  parts = ", ".join(f"{k} {p[k] / GIB:.2f}" for k in
                    ("batch", "gradients", "weights", "llm_saved", "vision_saved", "working"))
  return (f"memory per device (est., {jax.default_backend()}): {tot['peak'] / GIB:.2f} GiB = "
          f"arguments {tot['arguments'] / GIB:.2f} + temporaries {tot['temps'] / GIB:.2f} "
          f"({parts})")


# --- AOT check: the step compiled on abstract arguments --------------------------------------

def abstract_state(config, cfg, mesh, total_steps: int = 1000):
  """(graphdef, tx, TrainState of ShapeDtypeStructs carrying their shardings, its shardings),
  built as setup.init_state builds the real one, without materializing anything."""
  from mmprolong_jax import params as params_lib, setup
  from mmprolong_jax.optim import make_optimizer
  from mmprolong_jax.train_step import TrainState
  model = setup.build_model(cfg, config, mesh)
  graphdef, _ = nnx.split(model, nnx.Param)
  flat = params_lib.flat_params(model)
  p_shard = setup.param_shardings(flat, mesh)
  tx = make_optimizer(config.optim, total_steps)
  opt = jax.eval_shape(tx.init, flat)
  o_shard = setup._opt_shardings(opt, flat, p_shard, mesh)
  shapes = TrainState(flat, opt, jax.ShapeDtypeStruct((), jnp.int32))
  shard = TrainState(p_shard, o_shard, NamedSharding(mesh, P()))
  return graphdef, tx, setup.abstract_state(shapes, shard), shard


def batch_shapes(config, cfg, sp: int) -> dict:
  """{key: (shape, dtype)} of the global batch, per the loader's contract (data/loader.py)."""
  from mmprolong_jax.model.vision_layout import VisionGeometry
  d = config.data
  b, t = d.global_batch_tokens // d.max_len, d.max_len
  g = VisionGeometry.from_config(d)
  n, f, r = g.num_patches // sp, g.image_rows // sp, g.image_row_len
  i32 = np.dtype(np.int32)
  out = {k: ((b, t), i32) for k in ("input_ids", "segment_ids", "targets", "loss_mask", "task_id")}
  out.update(positions=((3, b, t), i32),
             patches=((b, g.num_patches, cfg.vision.patch_dim), jnp.dtype(d.patch_dtype)),
             window_segments=((b, sp, n), i32), pos_hw=((b, sp, n, 2), i32),
             image_gather=((b, sp, f, r), i32), image_segments=((b, sp, f, r), i32),
             image_scatter=((b, sp, n), i32),
             feature_slot=((b, g.num_patches // cfg.vision.merge_unit), i32))
  if config.attention.backend == "ring":
    out["token_pos"] = ((b, t), i32)
  return out


def abstract_batch(config, cfg, mesh) -> dict:
  from mmprolong_jax.parallel import sharding
  shapes = batch_shapes(config, cfg, axis_size(mesh, "sequence"))
  specs = sharding.batch_specs({k: np.empty((0,) * len(s)) for k, (s, _) in shapes.items()})
  return {k: jax.ShapeDtypeStruct(s, dt, sharding=NamedSharding(mesh, specs[k]))
          for k, (s, dt) in shapes.items()}


# XLA:CPU's default scheduler favours concurrency and keeps far more alive (the fast test's
# config before the sharding fixes: 21.5 vs 11.4 GiB); GPUs schedule with a memory limit.
CPU_COMPILER_OPTIONS = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def compile_step(config, cfg, mesh, compiler_options: dict | None = None, log=lambda msg: None):
  """Lowers and compiles the trainer's jitted step (train.py's shardings and donation) on
  abstract arguments. Returns (compiled, info) with the plan and the timings."""
  from mmprolong_jax import setup
  from mmprolong_jax.data.schema import TASKS
  from mmprolong_jax.train_step import make_train_step
  if compiler_options is None and jax.default_backend() == "cpu":
    compiler_options = CPU_COMPILER_OPTIONS
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    graphdef, tx, state, shard = abstract_state(config, cfg, mesh)
    batch = abstract_batch(config, cfg, mesh)
    step = make_train_step(graphdef, tx, config.train.max_loss_tokens, len(TASKS),
                           config.train.grad_accum_steps)
    jitted = jax.jit(step, in_shardings=(shard, {k: v.sharding for k, v in batch.items()}),
                     out_shardings=(shard, None), donate_argnums=(0,))
    lowered = jitted.lower(state, batch)
    t1 = time.perf_counter()
    log(f"lowered in {t1 - t0:.1f}s; compiling")
    compiled = lowered.compile(compiler_options or {})
  t2 = time.perf_counter()
  p = plan(cfg, config, mesh, setup.bytes_per_device(state.params, shard.params),
           setup.bytes_per_device(state.opt_state, shard.opt_state),
           sum(setup.bytes_per_device([v], [v.sharding]) for v in batch.values()))
  return compiled, {"plan": p, "lower_s": t1 - t0, "compile_s": t2 - t1}


def compiled_bytes(compiled) -> dict:
  m = compiled.memory_analysis()
  return {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
          "aliased": m.alias_size_in_bytes, "temps": m.temp_size_in_bytes,
          "peak": m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes}
