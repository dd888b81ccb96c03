"""Qwen2.5-VL: vision features scattered into the token stream of the Qwen2 decoder.

Inputs of `Qwen2_5_VL.__call__` (a packed batch; B rows of T tokens, N patches per row):
  input_ids_BxT      int32 token ids; image tokens are `cfg.image_token_id`
  positions_3xBxT    int32 mRoPE positions (`model.position_ids.mrope_position_ids`)
  segment_ids_BxT    int32 packed segment ids, 0 = padding (default: one segment per row)
  token_pos_BxT      int32 original token index, for causality when the row is stored in a
                     permuted (load-balanced) order; default arange(T)
  patches_BxNxP      float patches in window slots (P = 3*2*14*14), `vision_layout.pack_vision_rows`
  vision_layout      dict of that function's layout arrays (with a sequence-shard axis S; S = 1
                     when the vision tower is not spread)
The k-th image token of a row (in original token order) receives the k-th merged patch feature.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jax.sharding import PartitionSpec as P

from mmprolong_jax.attention import AttentionConfig
from mmprolong_jax.model import layers
from mmprolong_jax.model.config import ModelConfig
from mmprolong_jax.model.text import TextModel
from mmprolong_jax.model.vision import VisionTower
from mmprolong_jax.parallel.sharding import VISION_ROW_AXES, constrain


def _image_token_rank(mask_BxT, token_pos_BxT):
  """For each image token, how many image tokens precede it in original token order."""
  order = jnp.argsort(token_pos_BxT, axis=1)
  mask_nat = jnp.take_along_axis(mask_BxT, order, axis=1)
  rank_nat = jnp.cumsum(mask_nat.astype(jnp.int32), axis=1) - 1
  return jnp.take_along_axis(rank_nat, token_pos_BxT, axis=1)


class Qwen2_5_VL(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, attn_cfg: AttentionConfig | None = None,
               vision_attn_cfg: AttentionConfig | None = None):
    self.visual = VisionTower(cfg, rngs)
    self.language_model = TextModel(cfg, rngs)
    self.cfg = cfg
    self.attn_cfg = attn_cfg or AttentionConfig(backend=cfg.attention_backend)
    self.vision_attn_cfg = vision_attn_cfg or self.attn_cfg

  def embed(self, input_ids_BxT, token_pos_BxT=None, patches_BxNxP=None, vision_layout=None):
    """Token embeddings with image features in place of the image tokens."""
    embeds = self.language_model.embed(input_ids_BxT)
    if patches_BxNxP is None:
      return embeds
    feats_BxMxD = self._vision_features(patches_BxNxP, vision_layout)
    mask = input_ids_BxT == self.cfg.image_token_id
    if token_pos_BxT is None:
      rank = jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1
    else:
      rank = _image_token_rank(mask, token_pos_BxT)
    rank = jnp.clip(rank, 0, feats_BxMxD.shape[1] - 1)
    slot_BxT = jnp.take_along_axis(vision_layout["feature_slot"], rank, axis=1)
    # Image tokens and real features correspond one to one (the loader checks the counts), and
    # text tokens' gradients are zeroed by the where below: so the gather's transpose is a
    # gather from the token that reads each feature.
    b, t = mask.shape
    m = feats_BxMxD.shape[1]
    token_BxM = jnp.full((b, m), t, jnp.int32).at[
        jnp.arange(b)[:, None], jnp.where(mask, slot_BxT, m)].set(
            jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)), mode="drop")
    feats_BxTxD = layers.take_rows(feats_BxMxD, slot_BxT, token_BxM)
    return jnp.where(mask[:, :, None], feats_BxTxD.astype(embeds.dtype), embeds)

  def _vision_features(self, patches_BxNxP, layout):
    """Runs the tower on each (row, sequence shard) independently: the layout's shard axis S is
    folded into the batch, which shards over (data, fsdp, sequence) with no communication.
    Returns merged features BxMxD in shard-major slot order."""
    b, n, p = patches_BxNxP.shape
    s = layout["window_segments"].shape[1]
    fold = lambda x: x.reshape(b * s, *x.shape[2:])
    rows = {k: fold(v) for k, v in layout.items() if k != "feature_slot"}
    patches = constrain(patches_BxNxP.reshape(b * s, n // s, p), P(VISION_ROW_AXES))
    feats = self.visual(patches, rows, self.vision_attn_cfg)
    return feats.reshape(b, -1, feats.shape[-1])

  def hidden_states(self, input_ids_BxT, positions_3xBxT, segment_ids_BxT=None, token_pos_BxT=None,
                    patches_BxNxP=None, vision_layout=None):
    b, t = input_ids_BxT.shape
    if segment_ids_BxT is None:
      segment_ids_BxT = jnp.ones((b, t), jnp.int32)
    if token_pos_BxT is None:
      token_pos_BxT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    embeds = self.embed(input_ids_BxT, token_pos_BxT, patches_BxNxP, vision_layout)
    return self.language_model(embeds, positions_3xBxT, segment_ids_BxT, token_pos_BxT,
                               self.attn_cfg)

  def __call__(self, *args, **kwargs):
    """Full-vocabulary logits BxTxV (fp32). Training uses `hidden_states` + `logits` at loss
    positions instead, which never builds a T x V tensor."""
    return self.logits(self.hidden_states(*args, **kwargs))

  def logits(self, hidden_xD):
    return self.language_model.logits(hidden_xD)
