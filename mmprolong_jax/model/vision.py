"""Qwen2.5-VL vision tower: patch embed -> window/full attention blocks -> 2x2 patch merger.

Works per batch row on the window-slot stream of `vision_layout`: windowed blocks attend inside
each fixed-size window slot (a reshape into rows), full-attention blocks gather each image into
an image row and scatter the result back; padding never mixes with real patches.
"""
import dataclasses
import itertools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from mmprolong_jax.attention import attention
from mmprolong_jax.model import layers, rope
from mmprolong_jax.model.config import ModelConfig
from mmprolong_jax.model.vision_layout import window_slot_size
from mmprolong_jax.parallel.sharding import VISION_ROW_AXES


class VisionAttention(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    v = cfg.vision
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
    self.qkv = layers.linear(v.hidden_size, 3 * v.hidden_size, bias=True, **kw)
    self.proj = layers.linear(v.hidden_size, v.hidden_size, bias=True, **kw)
    self.num_heads = v.num_heads

  def __call__(self, x_BxNxE, angles_BxNxD, attend):
    b, n, _ = x_BxNxE.shape
    qkv = self.qkv(x_BxNxE).reshape(b, n, 3, self.num_heads, -1)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q, k = rope.apply_rope(q, angles_BxNxD), rope.apply_rope(k, angles_BxNxD)
    return self.proj(attend(q, k, v).reshape(b, n, -1))


def window_attention(q_BxNxHxD, k, v, segments_BxN, window: int, cfg):
  """Attention inside each `window`-slot run of the stream: the slots become batch rows."""
  b, n = segments_BxN.shape
  rows = lambda x: x.reshape(b * n // window, window, *x.shape[2:])
  o = attention(rows(q_BxNxHxD), rows(k), rows(v), segment_ids_BxT=rows(segments_BxN),
                causal=False, cfg=dataclasses.replace(cfg, max_segments=1))
  return o.reshape(q_BxNxHxD.shape)


def image_attention(q_BxNxHxD, k, v, gather_BxFxR, segments_BxFxR, scatter_BxN, cfg):
  """Attention within images: slots gathered into image rows, results scattered back (the
  layout's gather and scatter invert each other, so each one's transpose is the other).
  q, k and v move as one stacked tensor: the backward then forms dq, dk and dv in one buffer."""
  b, f, r = gather_BxFxR.shape
  gather_BxI = gather_BxFxR.reshape(b, f * r)
  qkv_BxIx3xHxD = layers.take_rows(jnp.stack([q_BxNxHxD, k, v], axis=2), gather_BxI, scatter_BxN)
  q, k, v = (qkv_BxIx3xHxD[:, :, i].reshape(b * f, r, *q_BxNxHxD.shape[2:]) for i in range(3))
  o = attention(q, k, v, segment_ids_BxT=segments_BxFxR.reshape(b * f, r), causal=False, cfg=cfg)
  return layers.take_rows(o.reshape(b, f * r, *o.shape[2:]), scatter_BxN, gather_BxI)


class VisionBlock(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    v = cfg.vision
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.norm1 = layers.RMSNorm(v.hidden_size, v.rms_norm_eps, **kw)
    self.norm2 = layers.RMSNorm(v.hidden_size, v.rms_norm_eps, **kw)
    self.attn = VisionAttention(cfg, rngs)
    self.mlp = layers.SwiGLU(v.hidden_size, v.intermediate_size, bias=True, rngs=rngs, **kw)
    self.mlp_chunks = cfg.mlp_chunks

  def __call__(self, x, angles, attend):
    x = x + self.attn(self.norm1(x), angles, attend)
    return x + layers.chunked_apply(self.mlp, self.norm2(x), self.mlp_chunks)


class PatchMerger(nnx.Module):
  """RMSNorm, concatenate each 2x2 merge unit, then Linear-GELU-Linear to the LLM width."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    v = cfg.vision
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    width = v.hidden_size * v.merge_unit
    self.ln_q = layers.RMSNorm(v.hidden_size, v.rms_norm_eps, **kw)
    self.fc1 = layers.linear(width, width, bias=True, rngs=rngs, **kw)
    self.fc2 = layers.linear(width, v.out_hidden_size, bias=True, rngs=rngs, **kw)
    self.unit = v.merge_unit

  def __call__(self, x_BxNxE):
    b, n, e = x_BxNxE.shape
    x = self.ln_q(x_BxNxE).reshape(b, n // self.unit, self.unit * e)
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class VisionTower(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    v = cfg.vision
    # Conv3d with stride == kernel over (C, T, P, P) patches is one matmul on the flat patch.
    self.patch_embed = layers.linear(v.patch_dim, v.hidden_size, bias=False, dtype=cfg.dtype,
                                     param_dtype=cfg.param_dtype, rngs=rngs)
    self.blocks = nnx.List([VisionBlock(cfg, rngs) for _ in range(v.depth)])
    self.merger = PatchMerger(cfg, rngs)
    self.cfg = cfg

  def __call__(self, patches_BxNxP, layout, attn_cfg):
    """Returns merged features Bx(N/4)xD in window-slot order (`feature_slot` finds them).

    `layout` holds one row's (or one shard's) `vision_layout` arrays with a leading batch axis.
    """
    v = self.cfg.vision
    x = self.patch_embed(patches_BxNxP.astype(self.cfg.dtype))
    angles = rope.vision_angles(layout["pos_hw"], v.head_dim, v.rope_theta)
    window = window_slot_size(v)

    def windowed(blk, x, angles, layout):
      return blk(x, angles, lambda q, k, val: window_attention(
          q, k, val, layout["window_segments"], window, attn_cfg))

    def full(blk, x, angles, layout):
      return blk(x, angles, lambda q, k, val: image_attention(
          q, k, val, layout["image_gather"], layout["image_segments"], layout["image_scatter"],
          attn_cfg))

    attend_keys = {k: layout[k] for k in
                   ("window_segments", "image_gather", "image_segments", "image_scatter")}
    # Consecutive blocks of one kind (windowed or full attention) run as one scan.
    runs = itertools.groupby(enumerate(self.blocks), lambda ib: ib[0] in v.fullatt_block_indexes)
    for is_full, run in runs:
      x = layers.run_layers(full if is_full else windowed, [blk for _, blk in run], x,
                            (angles, attend_keys), self.cfg.vision_remat,
                            act_spec=P(VISION_ROW_AXES), scan=self.cfg.scan_layers)
    return self.merger(x)
