"""The jitted training step: forward, loss at loss positions, AdamW update."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from mmprolong_jax.loss import masked_nll

VISION_KEYS = ("window_segments", "pos_hw", "image_gather", "image_segments", "image_scatter",
               "feature_slot")


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
  """(summed nll, metrics); the caller divides by metrics['loss_tokens'] of the global batch."""
  hidden = forward_hidden(model, batch)
  nll_K, valid_K, index_K, overflow = masked_nll(
      hidden, batch["targets"], batch["loss_mask"], model.logits, max_loss_tokens)
  metrics = {"nll_sum": nll_K.sum(), "loss_tokens": valid_K.sum(), "loss_overflow": overflow}
  if "task_id" in batch and num_tasks:
    task_K = jnp.take(batch["task_id"].reshape(-1), index_K)
    onehot = jax.nn.one_hot(task_K, num_tasks) * valid_K[:, None]
    metrics["task_loss_sum"] = (onehot * nll_K[:, None]).sum(0)
    metrics["task_tokens"] = onehot.sum(0)
  return metrics["nll_sum"], metrics


def _micro_batches(batch, n: int):
  """Splits the row axis into n micro-batches (positions carry rows on axis 1). Micro-batch i
  takes rows i, i + n, ...: each device's block of rows splits in place, whereas a contiguous
  split puts a micro-batch on few devices and XLA gathers it to all (memory.py, README)."""
  def split(k, x):
    axis = 1 if k == "positions" else 0
    x = jnp.moveaxis(x, axis, 0)
    x = jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1)
    return jnp.moveaxis(x, 1, axis + 1)
  return {k: split(k, v) for k, v in batch.items()}


def make_train_step(graphdef, tx: optax.GradientTransformation, max_loss_tokens: int,
                    num_tasks: int = 0, grad_accum_steps: int = 1):
  """step(state, batch) -> (state, metrics); pure, to be wrapped in jax.jit by the caller.

  The loss is the mean over all loss tokens of the global batch; with gradient accumulation the
  summed nll and its gradient are accumulated over micro-batches and divided once at the end, so
  the result does not depend on how the batch is split. `max_loss_tokens` bounds each
  micro-batch's loss positions.
  """

  def grads_of(params, batch):
    fn = lambda p: loss_and_metrics(nnx.merge(graphdef, p), batch, max_loss_tokens, num_tasks)
    return jax.grad(fn, has_aux=True)(params)

  def step(state: TrainState, batch):
    if grad_accum_steps == 1:
      grads, metrics = grads_of(state.params, batch)
    else:
      micro = _micro_batches(batch, grad_accum_steps)
      def body(acc, mb):
        g, m = grads_of(state.params, mb)
        return jax.tree.map(jnp.add, acc, (g, m)), None
      first = jax.tree.map(lambda x: x[0], micro)
      zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grads_of, state.params, first))
      (grads, metrics), _ = jax.lax.scan(body, zeros, micro)
      metrics["loss_overflow"] = metrics["loss_overflow"] > 0
    n = jnp.maximum(metrics["loss_tokens"], 1)
    grads = jax.tree.map(lambda g: g / n, grads)
    loss = metrics.pop("nll_sum") / n
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    # A non-finite loss or gradient leaves the state untouched, so the caller still holds the
    # last good state and can save it before stopping.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jnp.where(finite, new, old)
    new_state = TrainState(jax.tree.map(keep, params, state.params),
                           jax.tree.map(keep, opt_state, state.opt_state),
                           state.step + finite.astype(state.step.dtype))
    metrics.update(loss=loss, grad_norm=grad_norm, finite=finite)
    return new_state, metrics

  return step
