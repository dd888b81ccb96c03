"""Building blocks shared by the vision tower and the decoder."""
import jax
import jax.numpy as jnp
from flax import nnx


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


REMAT_POLICIES = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
}


def maybe_remat(fn, policy: str):
  """Wraps a (module, *args) -> out function with per-layer rematerialization."""
  if policy == "none":
    return fn
  if policy not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {policy!r}; choose none or one of {sorted(REMAT_POLICIES)}")
  # prevent_cse=True: the layers run from a Python loop (not a scan), where XLA would otherwise
  # fold the recomputation back into the forward pass and keep every activation (measured on an
  # H100 at 32K: 47.7 -> 23.3 GiB of temporaries; benchmarks/README.md).
  return nnx.remat(fn, policy=REMAT_POLICIES[policy], prevent_cse=True)
