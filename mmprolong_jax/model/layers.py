"""Building blocks shared by the vision tower and the decoder."""
import jax
import jax.numpy as jnp
from flax import nnx

from mmprolong_jax.parallel import sharding


class RMSNorm(nnx.Module):
  """Normalizes in fp32, casts back, then scales (the order Qwen uses)."""

  def __init__(self, dim: int, eps: float, *, dtype, param_dtype):
    self.weight = nnx.Param(jnp.ones((dim,), param_dtype))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.weight[...].astype(self.dtype) * x32.astype(self.dtype)


def linear(din: int, dout: int, *, bias: bool, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(din, dout, use_bias=bias, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=nnx.initializers.normal(0.02), rngs=rngs)


# The vision MLP's 3,420 bf16 columns are not a multiple of 16 bytes, so cuBLAS cannot use
# Hopper's TMA kernels for it: its matmuls ran at 190-300 TFLOP/s instead of ~650 (H100 trace
# of the 128K step, benchmarks/README.md). Padding the hidden width to 128 costs 1% of them.
HIDDEN_MULTIPLE = 128


def padded_hidden(hidden: int) -> int:
  """The width the SwiGLU's hidden activations have on the device."""
  return -(-hidden // HIDDEN_MULTIPLE) * HIDDEN_MULTIPLE


class SwiGLU(nnx.Module):
  """down(silu(gate(x)) * up(x)); the vision tower uses biases, the decoder does not."""

  def __init__(self, dim: int, hidden: int, *, bias: bool, dtype, param_dtype, rngs):
    kw = dict(bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.gate_proj = linear(dim, hidden, **kw)
    self.up_proj = linear(dim, hidden, **kw)
    self.down_proj = linear(hidden, dim, **kw)

  def __call__(self, x):
    # Zero columns of gate/up and zero rows of down leave the output and the real weights'
    # gradients unchanged (silu(0) * 0 = 0) and give the matmuls aligned operands.
    pad = padded_hidden(self.up_proj.out_features) - self.up_proj.out_features
    dtype = self.up_proj.dtype or x.dtype

    def dense(lin: nnx.Linear, h, pad_in: int, pad_out: int):
      kernel = jnp.pad(lin.kernel[...].astype(dtype), ((0, pad_in), (0, pad_out)))
      y = h.astype(dtype) @ kernel
      return y if lin.bias is None else y + jnp.pad(lin.bias[...].astype(dtype), (0, pad_out))

    h = jax.nn.silu(dense(self.gate_proj, x, 0, pad)) * dense(self.up_proj, x, 0, pad)
    return dense(self.down_proj, h, pad, 0)


@jax.custom_vjp
def take_rows(x_BxNxF, index_BxI, inverse_BxN):
  """x[b, index[b, i]] along axis 1 (any trailing dims); index N reads a zero row.

  `inverse` inverts `index` on the rows it reads: inverse[b, n] = i where index[b, i] == n, and
  I (zero) where no i reads row n; each row is read at most once. The transpose is then the
  same gather with the two swapped instead of a scatter-add: on an H100 a bf16 scatter-add of
  the 128K step's 590K x 1,280 vision stream took 6 ms, a gather ~1 ms (benchmarks/README.md).
  """
  return _gather_rows(x_BxNxF, index_BxI)


def _gather_rows(x, index_BxI):
  idx = index_BxI.reshape(index_BxI.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1, mode="fill", fill_value=0)


def _take_rows_fwd(x, index_BxI, inverse_BxN):
  return _gather_rows(x, index_BxI), inverse_BxN


def _take_rows_bwd(inverse_BxN, g_BxIxF):
  return _gather_rows(g_BxIxF, inverse_BxN), None, None


take_rows.defvjp(_take_rows_fwd, _take_rows_bwd)


def _save_attention_kernel(prim, *_, **__) -> bool:
  # cuDNN's forward (output + softmax stats): its backward then needs no second forward pass.
  return prim.name.startswith("dot_product_attention_fwd")


REMAT_POLICIES = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
    "save_attention_kernel": _save_attention_kernel,
    # That and every matmul output: the backward recomputes only elementwise passes (norms,
    # rotary, SwiGLU). For the vision tower at 32K (model.vision_remat_policy): 26 KiB a patch
    # slot per block.
    "save_attention_dots": jax.checkpoint_policies.save_from_both_policies(
        _save_attention_kernel, jax.checkpoint_policies.dots_with_no_batch_dims_saveable),
    # Also the LLM's rotated q/k/v (named in text.py; the vision tower names none): the
    # backward then skips the QKV projection and rotary pass, for 9 KiB a token per layer.
    "save_attention_qkv": jax.checkpoint_policies.save_from_both_policies(
        _save_attention_kernel,
        jax.checkpoint_policies.save_only_these_names("attention_q", "attention_k",
                                                      "attention_v")),
}


def fsdp_gathered(fn, act_spec=None):
  """fn(module, x, *args) with the module's parameters cast to x's dtype and gathered over
  'fsdp' where used, and x and the output constrained to `act_spec`. Left to itself, XLA may
  keep a weight sharded and gather activations over the batch instead, or all-reduce partial
  [tokens x 18,944] MLP products (memory.py's check found both). No-op without a mesh."""
  def wrapped(module, x, *args):
    if jax.sharding.get_abstract_mesh().empty:
      return fn(module, x, *args)
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def gather(path, p):
      return jax.lax.with_sharding_constraint(
          _cast_float(p, x.dtype), sharding.gathered_spec(_dotted(path), p.shape))

    params = jax.tree_util.tree_map_with_path(gather, params)
    if act_spec is not None:
      x = jax.lax.with_sharding_constraint(x, act_spec)
    y = fn(nnx.merge(graphdef, params, rest), x, *args)
    return y if act_spec is None else jax.lax.with_sharding_constraint(y, act_spec)
  return wrapped


def _dotted(path) -> str:
  """'mlp.gate_proj.kernel' for a parameter's tree path (a Variable's `.value` key dropped, so
  the sharding rules see the parameter's own name)."""
  return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path
                  if not isinstance(k, jax.tree_util.GetAttrKey))


def _cast_float(p, dtype):
  # The layers compute in the activation dtype anyway (nnx.Linear and RMSNorm cast).
  return p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p


def maybe_remat(fn, policy: str, act_spec=None, prevent_cse: bool = True):
  """Wraps a per-layer (module, x, *args) -> out function: FSDP weight gathering
  (`fsdp_gathered`, inside the remat so the backward gathers again) and rematerialization."""
  fn = fsdp_gathered(fn, act_spec)
  if policy == "none":
    return fn
  if policy not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {policy!r}; choose none or one of {sorted(REMAT_POLICIES)}")
  # prevent_cse=True outside a scan: in a Python loop XLA would otherwise fold the recomputation
  # back into the forward pass and keep every activation (measured on an H100 at 32K: 47.7 ->
  # 23.3 GiB of temporaries; benchmarks/README.md). A scan body needs no barrier.
  return nnx.remat(fn, policy=REMAT_POLICIES[policy], prevent_cse=prevent_cse)


def run_layers(fn, modules, x, args, policy: str, act_spec=None, scan: bool = True):
  """x through fn(module, x, *args) for each module in order, each call wrapped by
  `maybe_remat`; `args` (a tuple of pytrees) is the same for every layer.

  With `scan`, the modules (same structure) run as one jax.lax.scan over their parameters
  stacked on a new leading axis, cast to x's dtype first (the copy is half the fp32 size, and
  sharded like the parameters). A scan's backward recomputes one layer at a time by
  construction; an unrolled loop leaves XLA:GPU free to schedule recomputations early and keep
  many layers' intermediates alive (launch/README.md), and compiles every layer separately.
  """
  if not scan or len(modules) < 2:
    step = maybe_remat(fn, policy, act_spec)
    for m in modules:
      x = step(m, x, *args)
    return x

  def tied(module, x, *args):
    # Differentiating a scan hoists every computation that reads only loop-invariant inputs
    # out of the loop, stacked over any inner loops: the blockwise kernel's masks became a
    # T x T array (memory.py's check at 128K). Tying `args` to x keeps them inside the layer.
    x, args = jax.lax.optimization_barrier((x, args))
    return fn(module, x, *args)

  step = maybe_remat(tied, policy, act_spec, prevent_cse=False)
  graphdef = nnx.graphdef(modules[0])
  states = [jax.tree.map(lambda p: _cast_float(p, x.dtype), nnx.state(m)) for m in modules]
  stacked = _keep_sharded(jax.tree.map(lambda *ps: jnp.stack(ps), *states), lead=1)

  def body(x, state):
    # Sharded inside the loop too, so that the transpose reduce-scatters each layer's gradient
    # in the loop instead of leaving XLA to pick a layout for the stacked gradient.
    return step(nnx.merge(graphdef, _keep_sharded(state, lead=0)), x, *args), None
  x, _ = jax.lax.scan(body, x, stacked)
  return x


def _keep_sharded(state, lead: int):
  """Constrains each parameter (with `lead` stacking axes in front) to its own sharding."""
  if jax.sharding.get_abstract_mesh().empty:
    return state
  return jax.tree_util.tree_map_with_path(
      lambda path, p: jax.lax.with_sharding_constraint(
          p, sharding.placed_spec(_dotted(path), p.shape, lead)), state)


def chunked_apply(module, x_BxTxD, chunks: int):
  """module(x) over `chunks` interleaved slices of the sequence (token t in slice t % chunks,
  so each slice keeps x's sequence sharding), each slice rematerialized: a backward pass then
  holds one slice's intermediates (the LLM MLP's are 3 x 18,944 values per token, the vision
  MLP's 3 x 3,456 per patch, ~4 patches per token)."""
  if chunks <= 1:
    return module(x_BxTxD)
  b, t, d = x_BxTxD.shape
  if t % chunks:
    raise ValueError(f"sequence length {t} (tokens or patch slots) is not a multiple of "
                     f"mlp_chunks={chunks}")
  x_BxSxCxD = x_BxTxD.reshape(b, t // chunks, chunks, d)
  f = nnx.remat(lambda m, x: m(x), prevent_cse=True)
  outs = [f(module, x_BxSxCxD[:, :, c]) for c in range(chunks)]
  return jnp.stack(outs, axis=2).reshape(b, t, -1)
