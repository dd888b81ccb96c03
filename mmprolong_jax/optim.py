"""AdamW with linear warmup and cosine decay (the study: 1e-5 peak, 10% warmup, cosine to 1e-6)."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def lr_schedule(cfg, total_steps: int):
  warmup = max(1, int(round(cfg.warmup_fraction * total_steps)))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.peak_lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=cfg.final_lr)


def _decay_mask(params):
  # Biases and norm scales (1-D) are not decayed, as in most LLM recipes.
  return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
  """cfg: ConfigDict with peak_lr, final_lr, warmup_fraction, b1, b2, eps, weight_decay,
  grad_clip_norm (0 disables), decay_vectors (also decay 1-D params) and moment_dtype.
  The chain is optax.adamw's (scale by Adam, add decayed weights, scale by -lr)."""
  mask = None if cfg.get("decay_vectors", False) else _decay_mask
  parts = []
  if cfg.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  moments = jnp.dtype(cfg.get("moment_dtype", "float32"))
  if moments == jnp.float32:
    adam = optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  else:
    adam = scale_by_adam_stored_as(moments, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  parts += [adam, optax.add_decayed_weights(cfg.weight_decay, mask),
            optax.scale_by_learning_rate(lr_schedule(cfg, total_steps))]
  return optax.chain(*parts)


class _AdamState(NamedTuple):
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_adam_stored_as(dtype, *, b1: float, b2: float, eps: float):
  """Adam's scaling with both moments kept in `dtype` (bfloat16 halves the optimizer state);
  the update itself is computed in float32."""
  f32 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)

  def init(params):
    zeros = lambda p: jnp.zeros(p.shape, dtype)
    return _AdamState(jnp.zeros((), jnp.int32), jax.tree.map(zeros, params),
                      jax.tree.map(zeros, params))

  def update(updates, state, params=None):
    del params
    g = f32(updates)
    mu = jax.tree.map(lambda m, x: b1 * m + (1 - b1) * x, f32(state.mu), g)
    nu = jax.tree.map(lambda v, x: b2 * v + (1 - b2) * x * x, f32(state.nu), g)
    count = optax.safe_increment(state.count)
    c1, c2 = 1 - b1 ** count.astype(jnp.float32), 1 - b2 ** count.astype(jnp.float32)
    out = jax.tree.map(lambda m, v: (m / c1) / (jnp.sqrt(v / c2) + eps), mu, nu)
    store = lambda t: jax.tree.map(lambda x: x.astype(dtype), t)
    return out, _AdamState(count, store(mu), store(nu))

  return optax.GradientTransformation(init, update)
