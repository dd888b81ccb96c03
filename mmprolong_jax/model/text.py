"""Qwen2 decoder with GQA (QKV bias), chunked mRoPE, RMSNorm and SwiGLU."""
import jax
import jax.numpy as jnp
from flax import nnx

from mmprolong_jax.attention import attention
from mmprolong_jax.attention.reference import reference_attention
from mmprolong_jax.model import layers, rope
from mmprolong_jax.model.config import ModelConfig
from mmprolong_jax.parallel.sharding import BATCH_SPEC, gathered_spec


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
    q, k, v = (jax.ad_checkpoint.checkpoint_name(x, f"attention_{n}") for x, n in
               zip((q, k, v), "qkv"))
    o = attention(q, k, v, segment_ids_BxT=segment_ids_BxT, positions_BxT=token_pos_BxT,
                  causal=True, cfg=attn_cfg)
    o = jax.ad_checkpoint.checkpoint_name(o, "attention_out")
    return self.o_proj(o.reshape(*x_BxTxD.shape[:2], -1))

  # --- KV-cache generation (mmprolong_jax.generate); training uses __call__ only. ---

  def prefill(self, x_BxTxD, angles_BxTxHd, segment_ids_BxT, token_pos_BxT, attn_cfg):
    """`__call__` that also returns the rotated keys and values ([B, T, K, D] each) to cache."""
    q, k, v = self.qkv(x_BxTxD, angles_BxTxHd)
    o = attention(q, k, v, segment_ids_BxT=segment_ids_BxT, positions_BxT=token_pos_BxT,
                  causal=True, cfg=attn_cfg)
    return self.o_proj(o.reshape(*x_BxTxD.shape[:2], -1)), (k, v)

  def decode(self, x_BxTxD, angles_BxTxHd, kv_cache, valid_BxS, index):
    """T new tokens written to cache slots [index, index + T), each attending to the valid slots
    up to its own. `kv_cache` is (k_BxSxKxD, v_BxSxKxD); returns (output, updated cache)."""
    q, k, v = self.qkv(x_BxTxD, angles_BxTxHd)
    k_BxSxKxD, v_BxSxKxD = (
        jax.lax.dynamic_update_slice_in_dim(cache, new.astype(cache.dtype), index, axis=1)
        for cache, new in zip(kv_cache, (k, v)))
    b, t = x_BxTxD.shape[:2]
    s = k_BxSxKxD.shape[1]
    pos_q_BxT = jnp.broadcast_to(index + jnp.arange(t, dtype=jnp.int32), (b, t))
    pos_kv_BxS = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
    # T is a handful of tokens, so the explicit [B, T, S] mask of the reference kernel is small.
    o = reference_attention(q, k_BxSxKxD, v_BxSxKxD, jnp.ones((b, t), jnp.int32), valid_BxS,
                            pos_q_BxT, pos_kv_BxS, causal=True)
    return self.o_proj(o.reshape(b, t, -1)), (k_BxSxKxD, v_BxSxKxD)


class DecoderLayer(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    t = cfg.text
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.input_layernorm = layers.RMSNorm(t.hidden_size, t.rms_norm_eps, **kw)
    self.post_attention_layernorm = layers.RMSNorm(t.hidden_size, t.rms_norm_eps, **kw)
    self.self_attn = Attention(cfg, rngs)
    self.mlp = layers.SwiGLU(t.hidden_size, t.intermediate_size, bias=False, rngs=rngs, **kw)
    self.mlp_chunks = cfg.mlp_chunks

  def __call__(self, x, angles, segment_ids, token_pos, attn_cfg):
    x = x + self.self_attn(self.input_layernorm(x), angles, segment_ids, token_pos, attn_cfg)
    return x + layers.chunked_apply(self.mlp, self.post_attention_layernorm(x), self.mlp_chunks)

  # --- KV-cache generation: the same layer around Attention.prefill / Attention.decode. ---

  def prefill(self, x, angles, segment_ids, token_pos, attn_cfg):
    h, kv = self.self_attn.prefill(self.input_layernorm(x), angles, segment_ids, token_pos,
                                   attn_cfg)
    x = x + h
    return x + self.mlp(self.post_attention_layernorm(x)), kv

  def decode(self, x, angles, kv_cache, valid_BxS, index):
    h, kv_cache = self.self_attn.decode(self.input_layernorm(x), angles, kv_cache, valid_BxS, index)
    x = x + h
    return x + self.mlp(self.post_attention_layernorm(x)), kv_cache


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

  def embed(self, ids_BxT):
    """Token embeddings in the activation dtype. Under a mesh the table (its vocabulary split
    over 'fsdp') is gathered first, like a layer's weights: a lookup into the split table
    all-reduces fp32 partial embeddings of the whole row over 'fsdp' instead."""
    table_VxD = self.embed_tokens.embedding[...].astype(self.cfg.dtype)
    if not jax.sharding.get_abstract_mesh().empty:
      table_VxD = jax.lax.with_sharding_constraint(
          table_VxD, gathered_spec("embed_tokens.embedding", table_VxD.shape))
    return jnp.take(table_VxD, ids_BxT, axis=0)

  def __call__(self, embeds_BxTxD, positions_3xBxT, segment_ids_BxT, token_pos_BxT, attn_cfg):
    """Final hidden states BxTxD (after the last norm)."""
    t = self.cfg.text
    angles = rope.mrope_angles(positions_3xBxT, t.head_dim, t.rope_theta, t.mrope_section)
    x = layers.run_layers(
        lambda layer, x, *args: layer(x, *args, attn_cfg), list(self.layers), embeds_BxTxD,
        (angles, segment_ids_BxT, token_pos_BxT), self.cfg.remat_policy, act_spec=BATCH_SPEC,
        scan=self.cfg.scan_layers)
    return self.norm(x)

  def logits(self, hidden_xD):
    """Vocabulary logits in fp32 for any leading shape; call it on loss positions only."""
    h = hidden_xD.astype(jnp.float32)
    if self.cfg.text.tie_word_embeddings:
      return h @ self.embed_tokens.embedding[...].astype(jnp.float32).T
    return self.lm_head(h)

  # --- KV-cache generation (mmprolong_jax.generate). ---

  def prefill(self, embeds_BxTxD, positions_3xBxT, segment_ids_BxT, token_pos_BxT, attn_cfg):
    """`__call__` (without remat) that also returns every layer's (k_BxTxKxD, v_BxTxKxD)."""
    t = self.cfg.text
    angles = rope.mrope_angles(positions_3xBxT, t.head_dim, t.rope_theta, t.mrope_section)
    x, kv_caches = embeds_BxTxD, []
    for layer in self.layers:
      x, kv = layer.prefill(x, angles, segment_ids_BxT, token_pos_BxT, attn_cfg)
      kv_caches.append(kv)
    return self.norm(x), kv_caches

  def decode(self, embeds_BxTxD, positions_3xBxT, kv_caches, valid_BxS, index):
    """T new tokens at cache slots [index, index + T) on top of per-layer (k, v) caches of S
    slots; `valid_BxS` marks the slots holding tokens (the new ones included). Returns (final
    hidden states, updated caches)."""
    t = self.cfg.text
    angles = rope.mrope_angles(positions_3xBxT, t.head_dim, t.rope_theta, t.mrope_section)
    x, updated = embeds_BxTxD, []
    for layer, kv in zip(self.layers, kv_caches):
      x, kv = layer.decode(x, angles, kv, valid_BxS, index)
      updated.append(kv)
    return self.norm(x), updated
