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


class SwiGLU(nnx.Module):
  """down(silu(gate(x)) * up(x)); the vision tower uses biases, the decoder does not."""

  def __init__(self, dim: int, hidden: int, *, bias: bool, dtype, param_dtype, rngs):
    kw = dict(bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.gate_proj = linear(dim, hidden, **kw)
    self.up_proj = linear(dim, hidden, **kw)
    self.down_proj = linear(hidden, dim, **kw)

  def __call__(self, x):
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


def _save_attention_kernel(prim, *_, **__) -> bool:
  # cuDNN's forward (output + softmax stats): its backward then needs no second forward pass.
  return prim.name.startswith("dot_product_attention_fwd")


REMAT_POLICIES = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
    "save_attention_kernel": _save_attention_kernel,
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
      name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
      if jnp.issubdtype(p.dtype, jnp.floating):
        p = p.astype(x.dtype)   # the layers compute in x's dtype anyway
      return jax.lax.with_sharding_constraint(p, sharding.gathered_spec(name, p.shape))

    params = jax.tree_util.tree_map_with_path(gather, params)
    if act_spec is not None:
      x = jax.lax.with_sharding_constraint(x, act_spec)
    y = fn(nnx.merge(graphdef, params, rest), x, *args)
    return y if act_spec is None else jax.lax.with_sharding_constraint(y, act_spec)
  return wrapped


def maybe_remat(fn, policy: str, act_spec=None):
  """Wraps a per-layer (module, x, *args) -> out function: FSDP weight gathering
  (`fsdp_gathered`, inside the remat so the backward gathers again) and rematerialization."""
  fn = fsdp_gathered(fn, act_spec)
  if policy == "none":
    return fn
  if policy not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {policy!r}; choose none or one of {sorted(REMAT_POLICIES)}")
  # prevent_cse=True: the layers run from a Python loop (not a scan), where XLA would otherwise
  # fold the recomputation back into the forward pass and keep every activation (measured on an
  # H100 at 32K: 47.7 -> 23.3 GiB of temporaries; benchmarks/README.md).
  return nnx.remat(fn, policy=REMAT_POLICIES[policy], prevent_cse=True)


def chunked_apply(module, x_BxTxD, chunks: int):
  """module(x) over `chunks` interleaved slices of the sequence (token t in slice t % chunks,
  so each slice keeps x's sequence sharding), each slice rematerialized: a backward pass then
  holds one slice's intermediates (the LLM MLP's are 3 x 18,944 values per token)."""
  if chunks <= 1:
    return module(x_BxTxD)
  b, t, d = x_BxTxD.shape
  if t % chunks:
    raise ValueError(f"sequence length {t} is not a multiple of mlp_chunks={chunks}")
  x_BxSxCxD = x_BxTxD.reshape(b, t // chunks, chunks, d)
  f = nnx.remat(lambda m, x: m(x), prevent_cse=True)
  outs = [f(module, x_BxSxCxD[:, :, c]) for c in range(chunks)]
  return jnp.stack(outs, axis=2).reshape(b, t, -1)
