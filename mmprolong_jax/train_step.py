"""The jitted training step: forward, loss at loss positions, AdamW update."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from mmprolong_jax.loss import masked_nll

VISION_KEYS = ("window_index", "window_segments", "image_segments", "pos_hw", "feature_slot")


@struct.dataclass
class TrainState:
  params: Any
  opt_state: Any
  step: jax.Array


def forward_hidden(model, batch):
  layout = {k: batch[k] for k in VISION_KEYS} if "patches" in batch else None
  return model.hidden_states(batch["input_ids"], batch["positions"], batch["segment_ids"],
                             batch.get("token_pos"), batch.get("patches"), layout)


def loss_and_metrics(model, batch, max_loss_tokens: int, num_tasks: int):
  hidden = forward_hidden(model, batch)
  nll_K, valid_K, index_K, overflow = masked_nll(
      hidden, batch["targets"], batch["loss_mask"], model.logits, max_loss_tokens)
  n = valid_K.sum()
  loss = nll_K.sum() / jnp.maximum(n, 1)
  metrics = {"loss": loss, "loss_tokens": n, "loss_overflow": overflow}
  if "task_id" in batch and num_tasks:
    task_K = jnp.take(batch["task_id"].reshape(-1), index_K)
    onehot = jax.nn.one_hot(task_K, num_tasks) * valid_K[:, None]
    metrics["task_loss_sum"] = (onehot * nll_K[:, None]).sum(0)
    metrics["task_tokens"] = onehot.sum(0)
  return loss, metrics


def make_train_step(graphdef, tx: optax.GradientTransformation, max_loss_tokens: int,
                    num_tasks: int = 0):
  """step(state, batch) -> (state, metrics); pure, to be wrapped in jax.jit by the caller."""

  def step(state: TrainState, batch):
    def loss_fn(params):
      return loss_and_metrics(nnx.merge(graphdef, params), batch, max_loss_tokens, num_tasks)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    # A non-finite loss or gradient leaves the state untouched, so the caller still holds the
    # last good state and can save it before stopping.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jnp.where(finite, new, old)
    new_state = TrainState(jax.tree.map(keep, params, state.params),
                           jax.tree.map(keep, opt_state, state.opt_state),
                           state.step + finite.astype(state.step.dtype))
    metrics["grad_norm"] = grad_norm
    metrics["finite"] = finite
    return new_state, metrics

  return step
