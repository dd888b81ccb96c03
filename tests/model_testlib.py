"""Shared by the model-level tests: loss and parameter gradients of one training batch."""
import jax
from flax import nnx

from mmprolong_jax.train_step import loss_and_metrics


def loss_and_grads(model, batch, max_loss_tokens: int = 64):
  """(summed nll, grads of every nnx.Param) of `batch`, jitted (under the caller's mesh)."""
  graphdef, state = nnx.split(model, nnx.Param)
  def f(state):
    return loss_and_metrics(nnx.merge(graphdef, state), batch, max_loss_tokens, num_tasks=0)[0]
  return jax.jit(jax.value_and_grad(f))(state)
