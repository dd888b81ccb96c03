"""Qwen2 decoder with GQA (QKV bias), chunked mRoPE, RMSNorm and SwiGLU."""
import jax
import jax.numpy as jnp
from flax import nnx

from mmprolong_jax.attention import attention
from mmprolong_jax.model import layers, rope
from mmprolong_jax.model.config import ModelConfig


class Attention(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    t = cfg.text
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
    hd = t.head_dim
    self.q_proj = layers.linear(t.hidden_size, t.num_heads * hd, bias=True, **kw)
    self.k_proj = layers.linear(t.hidden_size, t.num_kv_heads * hd, bias=True, **kw)
    self.v_proj = layers.linear(t.hidden_size, t.num_kv_heads * hd, bias=True, **kw)
    self.o_proj = layers.linear(t.num_heads * hd, t.hidden_size, bias=False, **kw)
    self.num_heads, self.num_kv_heads, self.head_dim = t.num_heads, t.num_kv_heads, hd

  def qkv(self, x_BxTxD, angles_BxTxHd):
    b, t, _ = x_BxTxD.shape
    q = self.q_proj(x_BxTxD).reshape(b, t, self.num_heads, self.head_dim)
    k = self.k_proj(x_BxTxD).reshape(b, t, self.num_kv_heads, self.head_dim)
    v = self.v_proj(x_BxTxD).reshape(b, t, self.num_kv_heads, self.head_dim)
    return rope.apply_rope(q, angles_BxTxHd), rope.apply_rope(k, angles_BxTxHd), v

  def __call__(self, x_BxTxD, angles_BxTxHd, segment_ids_BxT, token_pos_BxT, attn_cfg):
    q, k, v = self.qkv(x_BxTxD, angles_BxTxHd)
    o = attention(q, k, v, segment_ids_BxT=segment_ids_BxT, positions_BxT=token_pos_BxT,
                  causal=True, cfg=attn_cfg)
    o = jax.ad_checkpoint.checkpoint_name(o, "attention_out")
    return self.o_proj(o.reshape(*x_BxTxD.shape[:2], -1))


class DecoderLayer(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    t = cfg.text
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.input_layernorm = layers.RMSNorm(t.hidden_size, t.rms_norm_eps, **kw)
    self.post_attention_layernorm = layers.RMSNorm(t.hidden_size, t.rms_norm_eps, **kw)
    self.self_attn = Attention(cfg, rngs)
    self.mlp = layers.SwiGLU(t.hidden_size, t.intermediate_size, bias=False, rngs=rngs, **kw)

  def __call__(self, x, angles, segment_ids, token_pos, attn_cfg):
    x = x + self.self_attn(self.input_layernorm(x), angles, segment_ids, token_pos, attn_cfg)
    return x + self.mlp(self.post_attention_layernorm(x))


class TextModel(nnx.Module):
  """Embedding, decoder stack, final norm and the LM head (tied to the embedding or not)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    t = cfg.text
    self.embed_tokens = nnx.Embed(t.vocab_size, t.hidden_size, dtype=cfg.dtype,
                                  param_dtype=cfg.param_dtype,
                                  embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.layers = nnx.List([DecoderLayer(cfg, rngs) for _ in range(t.num_layers)])
    self.norm = layers.RMSNorm(t.hidden_size, t.rms_norm_eps, dtype=cfg.dtype,
                               param_dtype=cfg.param_dtype)
    if not t.tie_word_embeddings:
      self.lm_head = layers.linear(t.hidden_size, t.vocab_size, bias=False, dtype=jnp.float32,
                                   param_dtype=cfg.param_dtype, rngs=rngs)
    self.cfg = cfg

  def __call__(self, embeds_BxTxD, positions_3xBxT, segment_ids_BxT, token_pos_BxT, attn_cfg):
    """Final hidden states BxTxD (after the last norm)."""
    t = self.cfg.text
    angles = rope.mrope_angles(positions_3xBxT, t.head_dim, t.rope_theta, t.mrope_section)
    layer_fn = layers.maybe_remat(
        lambda layer, x: layer(x, angles, segment_ids_BxT, token_pos_BxT, attn_cfg),
        self.cfg.remat_policy)
    x = embeds_BxTxD
    for layer in self.layers:
      x = layer_fn(layer, x)
    return self.norm(x)

  def logits(self, hidden_xD):
    """Vocabulary logits in fp32 for any leading shape; call it on loss positions only."""
    h = hidden_xD.astype(jnp.float32)
    if self.cfg.text.tie_word_embeddings:
      return h @ self.embed_tokens.embedding[...].astype(jnp.float32).T
    return self.lm_head(h)
