"""Model configuration: Qwen2.5-VL shapes plus our numerics/runtime choices.

`ModelConfig.from_hf` reads a transformers `Qwen2_5_VLConfig` (or a checkpoint folder's
config.json through it), `to_hf_dict` writes one back; presets give the published shapes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  depth: int = 32
  hidden_size: int = 1280
  intermediate_size: int = 3420
  num_heads: int = 16
  in_channels: int = 3
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  window_size: int = 112
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  out_hidden_size: int = 3584
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    return self.in_channels * self.temporal_patch_size * self.patch_size**2

  @property
  def merge_unit(self) -> int:
    return self.spatial_merge_size**2


@dataclasses.dataclass(frozen=True)
class TextConfig:
  vocab_size: int = 152064
  hidden_size: int = 3584
  intermediate_size: int = 18944
  num_layers: int = 28
  num_heads: int = 28
  num_kv_heads: int = 4
  rms_norm_eps: float = 1e-6
  rope_theta: float = 1e6
  mrope_section: tuple[int, ...] = (16, 24, 24)
  max_position_embeddings: int = 128000
  tie_word_embeddings: bool = False

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  text: TextConfig = TextConfig()
  vision: VisionConfig = VisionConfig()
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  bos_token_id: int | None = 151643
  eos_token_id: int | Sequence[int] | None = 151645
  # Numerics: parameters are stored in `param_dtype`, activations computed in `dtype`.
  dtype: str = "float32"
  param_dtype: str = "float32"
  # Attention backend for both towers (see mmprolong_jax.attention) and remat policy per layer:
  # 'none' | 'full' (recompute everything) | 'dots_saveable' | 'save_attention_out' |
  # 'save_attention_kernel' (keep cuDNN's forward output and softmax stats) |
  # 'save_attention_qkv' (that and the LLM's rotated q/k/v) | 'save_attention_dots' (cuDNN's
  # forward and every matmul output). `vision_remat_policy` overrides it for the vision tower
  # ('' = the same): at 32K on an 80 GB card the tower's matmul outputs fit, at 128K they don't.
  attention_backend: str = "reference"
  remat_policy: str = "none"
  vision_remat_policy: str = ""
  # LLM and vision MLPs run over this many interleaved sequence slices (tokens, patch slots),
  # each rematerialized (memory at 128K).
  mlp_chunks: int = 1
  # Decoder layers (and runs of same-kind vision blocks) as one jax.lax.scan: bounded remat
  # memory and one compiled layer (model/layers.run_layers).
  scan_layers: bool = True

  @property
  def vision_remat(self) -> str:
    return self.vision_remat_policy or self.remat_policy

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def replace_text(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, text=dataclasses.replace(self.text, **kw))

  def replace_vision(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, vision=dataclasses.replace(self.vision, **kw))

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "ModelConfig":
    d = dict(d)
    text = TextConfig(**{**d.pop("text", {})})
    vision = VisionConfig(**{**d.pop("vision", {})})
    text = dataclasses.replace(text, mrope_section=tuple(text.mrope_section))
    vision = dataclasses.replace(vision, fullatt_block_indexes=tuple(vision.fullatt_block_indexes))
    return cls(text=text, vision=vision, **d)

  # --- Hugging Face interop -------------------------------------------------------------------
  @classmethod
  def from_hf(cls, hf_config: Any, **overrides) -> "ModelConfig":
    """Builds from a transformers Qwen2_5_VLConfig, a dict, or a folder with config.json."""
    if isinstance(hf_config, str) or hasattr(hf_config, "__fspath__"):
      from transformers import AutoConfig
      hf_config = AutoConfig.from_pretrained(str(hf_config))
    if isinstance(hf_config, dict):
      from transformers import Qwen2_5_VLConfig
      hf_config = Qwen2_5_VLConfig(**hf_config)
    if getattr(hf_config, "model_type", None) != "qwen2_5_vl":
      raise ValueError(f"expected a qwen2_5_vl config, got model_type={hf_config.model_type!r}")
    t, v = hf_config.text_config, hf_config.vision_config
    rope = t.rope_parameters or {}
    text = TextConfig(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
        num_layers=t.num_hidden_layers, num_heads=t.num_attention_heads,
        num_kv_heads=t.num_key_value_heads, rms_norm_eps=t.rms_norm_eps,
        rope_theta=float(rope.get("rope_theta", 1e6)),
        mrope_section=tuple(rope.get("mrope_section", (16, 24, 24))),
        max_position_embeddings=t.max_position_embeddings,
        tie_word_embeddings=bool(hf_config.tie_word_embeddings))
    if getattr(t, "use_sliding_window", False):
      raise ValueError("sliding-window layers are not supported (Qwen2.5-VL checkpoints do not use them)")
    vrope = v.rope_parameters or {}
    vision = VisionConfig(
        depth=v.depth, hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
        num_heads=v.num_heads, in_channels=v.in_channels, patch_size=v.patch_size,
        temporal_patch_size=v.temporal_patch_size, spatial_merge_size=v.spatial_merge_size,
        window_size=v.window_size, fullatt_block_indexes=tuple(v.fullatt_block_indexes),
        out_hidden_size=v.out_hidden_size, rope_theta=float(vrope.get("rope_theta", 10000.0)))
    if v.hidden_act != "silu" or t.hidden_act != "silu":
      raise ValueError(f"only silu MLPs are supported, got {v.hidden_act}/{t.hidden_act}")
    return cls(text=text, vision=vision, image_token_id=hf_config.image_token_id,
               video_token_id=hf_config.video_token_id,
               vision_start_token_id=hf_config.vision_start_token_id,
               vision_end_token_id=hf_config.vision_end_token_id,
               bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id, **overrides)

  def to_hf_dict(self) -> dict:
    """A config.json dict that transformers' Qwen2_5_VLConfig loads."""
    t, v = self.text, self.vision
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "image_token_id": self.image_token_id,
        "video_token_id": self.video_token_id,
        "vision_start_token_id": self.vision_start_token_id,
        "vision_end_token_id": self.vision_end_token_id,
        "tie_word_embeddings": t.tie_word_embeddings,
        "text_config": {
            "model_type": "qwen2_5_vl_text",
            "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_layers,
            "num_attention_heads": t.num_heads, "num_key_value_heads": t.num_kv_heads,
            "hidden_act": "silu", "rms_norm_eps": t.rms_norm_eps,
            "max_position_embeddings": t.max_position_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta,
                                "mrope_section": list(t.mrope_section)},
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
            "use_sliding_window": False,
        },
        "vision_config": {
            "model_type": "qwen2_5_vl_vision",
            "depth": v.depth, "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size, "num_heads": v.num_heads,
            "in_channels": v.in_channels, "patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size,
            "spatial_merge_size": v.spatial_merge_size, "window_size": v.window_size,
            "fullatt_block_indexes": list(v.fullatt_block_indexes),
            "out_hidden_size": v.out_hidden_size, "hidden_act": "silu",
            "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
        },
    }


def qwen2_5_vl_7b(**overrides) -> ModelConfig:
  """Qwen2.5-VL-7B-Instruct shapes (untied LM head)."""
  return ModelConfig(**overrides)


def qwen2_5_vl_3b(**overrides) -> ModelConfig:
  """Qwen2.5-VL-3B-Instruct shapes (tied embeddings)."""
  text = TextConfig(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_layers=36,
                    num_heads=16, num_kv_heads=2, tie_word_embeddings=True)
  return ModelConfig(text=text, vision=VisionConfig(out_hidden_size=2048), **overrides)


def tiny(tie_word_embeddings: bool = False, **overrides) -> ModelConfig:
  """A few-hundred-kilobyte model with every structural feature, for tests and CPU demos."""
  text = TextConfig(vocab_size=512, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                    num_kv_heads=2, mrope_section=(2, 3, 3), max_position_embeddings=4096,
                    tie_word_embeddings=tie_word_embeddings)
  vision = VisionConfig(depth=3, hidden_size=32, intermediate_size=48, num_heads=2,
                        fullatt_block_indexes=(1,), out_hidden_size=64)
  return ModelConfig(text=text, vision=vision, image_token_id=500, video_token_id=501,
                     vision_start_token_id=502, vision_end_token_id=503, bos_token_id=1,
                     eos_token_id=2, **overrides)
