"""The loss-position head gives the same loss and gradients as the full-vocabulary head."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mmprolong_jax.loss import masked_nll
from mmprolong_jax.model import config as config_lib
from mmprolong_jax.model.qwen2_5_vl import Qwen2_5_VL


def _full_head_loss(model, ids, pos, seg, targets, mask):
  logits = model(ids, pos, seg)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  return (nll * mask).sum() / mask.sum()


@pytest.mark.parametrize("tied,max_tokens,chunk", [(False, 64, 1024), (True, 40, 16)])
def test_gathered_head_equals_full_head(tied, max_tokens, chunk):
  cfg = config_lib.tiny(tie_word_embeddings=tied)
  model = Qwen2_5_VL(cfg, nnx.Rngs(0))
  rng = np.random.default_rng(0)
  b, t = 2, 48
  ids = jnp.asarray(rng.integers(3, 400, (b, t)), jnp.int32)
  seg = jnp.asarray(np.repeat([[1] * 20 + [2] * 20 + [0] * 8], b, 0), jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (3, b, t))
  targets = jnp.asarray(rng.integers(3, 400, (b, t)), jnp.int32)
  mask = jnp.asarray(rng.random((b, t)) < 0.3, jnp.int32) * (seg > 0)

  def gathered(model):
    hidden = model.hidden_states(ids, pos, seg)
    nll, valid, _, over = masked_nll(hidden, targets, mask, model.logits, max_tokens, chunk)
    return nll.sum() / valid.sum()

  want, g_want = nnx.value_and_grad(lambda m: _full_head_loss(m, ids, pos, seg, targets, mask))(model)
  got, g_got = nnx.value_and_grad(gathered)(model)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  flat_w, flat_g = jax.tree.leaves(g_want), jax.tree.leaves(g_got)
  for a, c in zip(flat_w, flat_g):
    np.testing.assert_allclose(c, a, rtol=1e-4, atol=1e-7)


def test_overflow_is_reported():
  hidden = jnp.ones((1, 10, 4))
  mask = jnp.ones((1, 10), jnp.int32)
  _, valid, _, over = masked_nll(hidden, jnp.zeros((1, 10), jnp.int32), mask,
                                 lambda h: h @ jnp.ones((4, 7)), max_tokens=6)
  assert bool(over) and int(valid.sum()) == 6
