"""Next-token loss computed only where `loss_mask` is set.

The few supervised positions (answers, OCR targets) are gathered before the vocabulary
projection, so a 128K x 152K logits tensor is never built. Their count is bounded by a static
`max_tokens`; if a batch has more, the excess is not scored and `overflow` reports it (the trainer
stops with a message naming the config key to raise).
"""
import jax
import jax.numpy as jnp


def _nll(logits_KxV, targets_K):
  logits_KxV = logits_KxV.astype(jnp.float32)
  picked = jnp.take_along_axis(logits_KxV, targets_K[:, None], axis=-1)[:, 0]
  return jax.nn.logsumexp(logits_KxV, axis=-1) - picked


def masked_nll(hidden_BxTxD, targets_BxT, loss_mask_BxT, logits_fn, max_tokens: int,
               chunk: int = 1024):
  """Returns (nll_K, valid_K, index_K, overflow): per gathered position, its negative
  log-likelihood, whether it is a real loss position and its flat index into BxT."""
  b, t, d = hidden_BxTxD.shape
  flat_mask = loss_mask_BxT.reshape(-1) > 0
  count = flat_mask.sum()
  (index_K,) = jnp.nonzero(flat_mask, size=max_tokens, fill_value=0)
  valid_K = jnp.arange(max_tokens) < count
  h_KxD = jnp.take(hidden_BxTxD.reshape(b * t, d), index_K, axis=0)
  tgt_K = jnp.take(targets_BxT.reshape(-1), index_K)
  if max_tokens <= chunk:
    nll_K = _nll(logits_fn(h_KxD), tgt_K)
  else:  # bound the live logits to chunk x V; recompute them in the backward pass
    pad = -max_tokens % chunk
    h = jnp.pad(h_KxD, ((0, pad), (0, 0))).reshape(-1, chunk, d)
    y = jnp.pad(tgt_K, (0, pad)).reshape(-1, chunk)
    step = jax.checkpoint(lambda hy: _nll(logits_fn(hy[0]), hy[1]))
    nll_K = jax.lax.map(step, (h, y)).reshape(-1)[:max_tokens]
  return jnp.where(valid_K, nll_K, 0.0), valid_K, index_K, count > max_tokens
