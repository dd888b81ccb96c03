"""Qwen2.5-VL vision tower: patch embed -> window/full attention blocks -> 2x2 patch merger.

Works per batch row on a padded patch stream (see `vision_layout`): all images of a row go
through together, attention masked by segment ids so it never crosses windows (windowed blocks)
or images (full-attention blocks).
"""
import jax
import jax.numpy as jnp
from flax import nnx

from mmprolong_jax.attention import attention
from mmprolong_jax.model import layers, rope
from mmprolong_jax.model.config import ModelConfig


class VisionAttention(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    v = cfg.vision
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
    self.qkv = layers.linear(v.hidden_size, 3 * v.hidden_size, bias=True, **kw)
    self.proj = layers.linear(v.hidden_size, v.hidden_size, bias=True, **kw)
    self.num_heads = v.num_heads

  def __call__(self, x_BxNxE, angles_BxNxD, segments_BxN, attn_cfg):
    b, n, _ = x_BxNxE.shape
    qkv = self.qkv(x_BxNxE).reshape(b, n, 3, self.num_heads, -1)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q, k = rope.apply_rope(q, angles_BxNxD), rope.apply_rope(k, angles_BxNxD)
    o = attention(q, k, v, segment_ids_BxT=segments_BxN, causal=False, cfg=attn_cfg)
    return self.proj(o.reshape(b, n, -1))


class VisionBlock(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    v = cfg.vision
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.norm1 = layers.RMSNorm(v.hidden_size, v.rms_norm_eps, **kw)
    self.norm2 = layers.RMSNorm(v.hidden_size, v.rms_norm_eps, **kw)
    self.attn = VisionAttention(cfg, rngs)
    self.mlp = layers.SwiGLU(v.hidden_size, v.intermediate_size, bias=True, rngs=rngs, **kw)

  def __call__(self, x, angles, segments, attn_cfg):
    x = x + self.attn(self.norm1(x), angles, segments, attn_cfg)
    return x + self.mlp(self.norm2(x))


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

  def attention_segments(self, layout):
    """(windowed blocks', full-attention blocks') segment argument for `attention`."""
    return layout["window_segments"], layout["image_segments"]

  def __call__(self, patches_BxNxP, layout, attn_cfg):
    """Returns merged features BxMxD (M = N/4) in the processor's (image, raster) order.

    `layout` holds one row's (or one shard's) `vision_layout` arrays with a leading batch axis.
    """
    v = self.cfg.vision
    b, n, _ = patches_BxNxP.shape
    unit = v.merge_unit
    x = self.patch_embed(patches_BxNxP.astype(self.cfg.dtype))
    win_BxM = layout["window_index"]
    x = jnp.take_along_axis(x.reshape(b, n // unit, unit, -1), win_BxM[:, :, None, None], axis=1)
    x = x.reshape(b, n, -1)
    angles = rope.vision_angles(layout["pos_hw"], v.head_dim, v.rope_theta)
    full = set(v.fullatt_block_indexes)
    block_fn = layers.maybe_remat(lambda blk, x, seg: blk(x, angles, seg, attn_cfg),
                                  self.cfg.remat_policy)
    windows, images = self.attention_segments(layout)
    for i, blk in enumerate(self.blocks):
      x = block_fn(blk, x, images if i in full else windows)
    merged_BxMxD = self.merger(x)
    inverse_BxM = jnp.argsort(win_BxM, axis=1)
    return jnp.take_along_axis(merged_BxMxD, inverse_BxM[:, :, None], axis=1)
