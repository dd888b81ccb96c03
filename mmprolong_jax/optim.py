"""AdamW with linear warmup and cosine decay (the study: 1e-5 peak, 10% warmup, cosine to 1e-6)."""
from __future__ import annotations

import jax
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
  grad_clip_norm (0 disables) and decay_vectors (also decay 1-D params)."""
  mask = None if cfg.get("decay_vectors", False) else _decay_mask
  parts = []
  if cfg.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  parts.append(optax.adamw(lr_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay, mask=mask))
  return optax.chain(*parts)
