"""The single table between Hugging Face tensor names and our parameter paths.

`tensor_specs(cfg)` lists every tensor of a Qwen2.5-VL checkpoint with its HF name, our dotted
parameter path, the layout transform and both shapes. Loading, saving and error checking all use
it, so the two directions cannot drift apart.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mmprolong_jax.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  hf_name: str
  path: str             # our dotted parameter path, e.g. "language_model.layers.0.mlp.up_proj.kernel"
  kind: str             # 'copy' | 'linear' (HF [out, in] <-> ours [in, out]) | 'patch_embed'
  hf_shape: tuple[int, ...]

  def to_ours(self, x: np.ndarray) -> np.ndarray:
    if self.kind == "linear":
      return np.ascontiguousarray(x.T)
    if self.kind == "patch_embed":
      return np.ascontiguousarray(x.reshape(x.shape[0], -1).T)
    return x

  def to_hf(self, x: np.ndarray) -> np.ndarray:
    if self.kind == "linear":
      return np.ascontiguousarray(x.T)
    if self.kind == "patch_embed":
      return np.ascontiguousarray(x.T.reshape(self.hf_shape))
    return x

  @property
  def our_shape(self) -> tuple[int, ...]:
    if self.kind == "linear":
      return self.hf_shape[::-1]
    if self.kind == "patch_embed":
      return (int(np.prod(self.hf_shape[1:])), self.hf_shape[0])
    return self.hf_shape


# Names newer transformers versions use in memory; checkpoints on disk use the legacy ones.
_HF_ALIASES = (("model.language_model.", "model."), ("model.visual.", "visual."))


def canonical_hf_name(name: str) -> str:
  for new, old in _HF_ALIASES:
    if name.startswith(new):
      return old + name[len(new):]
  return name


def _linear(specs, hf, ours, dout, din, bias: bool):
  specs.append(TensorSpec(f"{hf}.weight", f"{ours}.kernel", "linear", (dout, din)))
  if bias:
    specs.append(TensorSpec(f"{hf}.bias", f"{ours}.bias", "copy", (dout,)))


def _norm(specs, hf, ours, dim):
  specs.append(TensorSpec(f"{hf}.weight", f"{ours}.weight", "copy", (dim,)))


def _mlp(specs, hf, ours, dim, hidden, bias):
  _linear(specs, f"{hf}.gate_proj", f"{ours}.gate_proj", hidden, dim, bias)
  _linear(specs, f"{hf}.up_proj", f"{ours}.up_proj", hidden, dim, bias)
  _linear(specs, f"{hf}.down_proj", f"{ours}.down_proj", dim, hidden, bias)


def tensor_specs(cfg: ModelConfig) -> list[TensorSpec]:
  v, t = cfg.vision, cfg.text
  specs: list[TensorSpec] = [TensorSpec(
      "visual.patch_embed.proj.weight", "visual.patch_embed.kernel", "patch_embed",
      (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size))]
  for i in range(v.depth):
    hf, ours = f"visual.blocks.{i}", f"visual.blocks.{i}"
    _norm(specs, f"{hf}.norm1", f"{ours}.norm1", v.hidden_size)
    _norm(specs, f"{hf}.norm2", f"{ours}.norm2", v.hidden_size)
    _linear(specs, f"{hf}.attn.qkv", f"{ours}.attn.qkv", 3 * v.hidden_size, v.hidden_size, True)
    _linear(specs, f"{hf}.attn.proj", f"{ours}.attn.proj", v.hidden_size, v.hidden_size, True)
    _mlp(specs, f"{hf}.mlp", f"{ours}.mlp", v.hidden_size, v.intermediate_size, True)
  width = v.hidden_size * v.merge_unit
  _norm(specs, "visual.merger.ln_q", "visual.merger.ln_q", v.hidden_size)
  _linear(specs, "visual.merger.mlp.0", "visual.merger.fc1", width, width, True)
  _linear(specs, "visual.merger.mlp.2", "visual.merger.fc2", v.out_hidden_size, width, True)

  lm = "language_model"
  specs.append(TensorSpec("model.embed_tokens.weight", f"{lm}.embed_tokens.embedding", "copy",
                          (t.vocab_size, t.hidden_size)))
  hd = t.head_dim
  for i in range(t.num_layers):
    hf, ours = f"model.layers.{i}", f"{lm}.layers.{i}"
    _linear(specs, f"{hf}.self_attn.q_proj", f"{ours}.self_attn.q_proj", t.num_heads * hd,
            t.hidden_size, True)
    _linear(specs, f"{hf}.self_attn.k_proj", f"{ours}.self_attn.k_proj", t.num_kv_heads * hd,
            t.hidden_size, True)
    _linear(specs, f"{hf}.self_attn.v_proj", f"{ours}.self_attn.v_proj", t.num_kv_heads * hd,
            t.hidden_size, True)
    _linear(specs, f"{hf}.self_attn.o_proj", f"{ours}.self_attn.o_proj", t.hidden_size,
            t.num_heads * hd, False)
    _mlp(specs, f"{hf}.mlp", f"{ours}.mlp", t.hidden_size, t.intermediate_size, False)
    _norm(specs, f"{hf}.input_layernorm", f"{ours}.input_layernorm", t.hidden_size)
    _norm(specs, f"{hf}.post_attention_layernorm", f"{ours}.post_attention_layernorm",
          t.hidden_size)
  _norm(specs, "model.norm", f"{lm}.norm", t.hidden_size)
  if not t.tie_word_embeddings:
    _linear(specs, "lm_head", f"{lm}.lm_head", t.vocab_size, t.hidden_size, False)
  return specs
