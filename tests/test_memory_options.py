"""Options that trade memory for nothing else: they must not change the math (beyond rounding)."""
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from flax import nnx

from mmprolong_jax.model import layers
from mmprolong_jax.optim import _decay_mask, lr_schedule, make_optimizer


def _optim_cfg(**kw):
  return mlc.ConfigDict(dict(peak_lr=1e-3, final_lr=1e-4, warmup_fraction=0.1, b1=0.9, b2=0.95,
                             eps=1e-8, weight_decay=0.1, grad_clip_norm=1.0, decay_vectors=False,
                             **kw))


def _run(tx, params, steps=20):
  state, out = tx.init(params), []
  for i in range(steps):
    grads = jax.tree.map(lambda x: jnp.sin(x * (i + 1) + 0.3), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out, state


def test_adamw_is_optax_adamw_and_bf16_moments_stay_close():
  params = {"w": jnp.linspace(-1, 1, 48).reshape(8, 6), "b": jnp.linspace(0, 1, 6)}
  cfg = _optim_cfg()
  ref = optax.chain(optax.clip_by_global_norm(1.0),
                    optax.adamw(lr_schedule(cfg, 100), b1=0.9, b2=0.95, eps=1e-8,
                                weight_decay=0.1, mask=_decay_mask))
  want, _ = _run(ref, params)
  got, _ = _run(make_optimizer(cfg, 100), params)
  for a, b in zip(jax.tree.leaves(want[-1]), jax.tree.leaves(got[-1])):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
  low, state = _run(make_optimizer(_optim_cfg(moment_dtype="bfloat16"), 100), params)
  assert {x.dtype for x in jax.tree.leaves(state[1].mu) + jax.tree.leaves(state[1].nu)} == {
      jnp.dtype(jnp.bfloat16)}
  moved = [np.abs(np.asarray(a) - np.asarray(p)).max()
           for a, p in zip(jax.tree.leaves(want[-1]), jax.tree.leaves(params))]
  for a, b, m in zip(jax.tree.leaves(want[-1]), jax.tree.leaves(low[-1]), moved):
    assert np.abs(np.asarray(b) - np.asarray(a)).max() < 0.02 * m   # rounding of the moments only


def test_chunked_mlp_equals_whole_and_keeps_gradients():
  mlp = layers.SwiGLU(16, 40, bias=False, rngs=nnx.Rngs(0), dtype=jnp.float32,
                      param_dtype=jnp.float32)
  x = jax.random.normal(jax.random.key(1), (2, 24, 16))
  graphdef, state = nnx.split(mlp)

  def loss(state, x, chunks):
    y = layers.chunked_apply(nnx.merge(graphdef, state), x, chunks)
    return (y * jnp.cos(y)).sum()

  want_val, want_grads = jax.value_and_grad(loss, argnums=(0, 1))(state, x, 1)
  for chunks in (2, 3, 8):
    got_val, got_grads = jax.value_and_grad(loss, argnums=(0, 1))(state, x, chunks)
    np.testing.assert_allclose(got_val, want_val, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(want_grads), jax.tree.leaves(got_grads)):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_padded_swiglu_equals_the_formula_and_runs_aligned_matmuls():
  mlp = layers.SwiGLU(16, 40, bias=True, rngs=nnx.Rngs(0), dtype=jnp.float32,
                      param_dtype=jnp.float32)
  for lin in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):   # nonzero biases
    lin.bias[...] = jax.random.normal(jax.random.key(lin.bias.shape[0]), lin.bias.shape)
  graphdef, state = nnx.split(mlp)
  x = jax.random.normal(jax.random.key(1), (2, 24, 16))

  def formula(p, x):
    lin = lambda name, h: h @ p[name]["kernel"][...] + p[name]["bias"][...]
    y = lin("down_proj", jax.nn.silu(lin("gate_proj", x)) * lin("up_proj", x))
    return (y * jnp.cos(y)).sum()

  def ours(p, x):
    y = nnx.merge(graphdef, p)(x)
    return (y * jnp.cos(y)).sum()

  want = jax.value_and_grad(formula, argnums=(0, 1))(state, x)
  got = jax.value_and_grad(ours, argnums=(0, 1))(state, x)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
  dots = [e for e in jax.make_jaxpr(ours)(state, x).jaxpr.eqns if e.primitive.name == "dot_general"]
  assert layers.padded_hidden(40) == 128
  assert len(dots) == 3 and all(any(128 in v.aval.shape for v in e.invars) for e in dots)
  assert layers.padded_hidden(256) == 256
