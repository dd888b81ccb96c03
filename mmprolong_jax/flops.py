"""Model FLOPs of one training step (what MFU counts), from the real segment lengths.

  dense:     6 * (LLM matmul params) * real tokens            (embedding lookups cost nothing)
  head:      6 * hidden * vocab * loss tokens                  (the head runs on loss positions)
  vision:    6 * (ViT block + merger params) * real patches
  attention: 6 * heads * head_dim * sum(L^2) per LLM layer     (causal: half of 12*H*D*L^2)
             12 * heads * head_dim * sum(w^2) per ViT block    (non-causal windows / images)
Rematerialization is not counted: MFU measures useful work.
"""
from __future__ import annotations

import numpy as np

from mmprolong_jax.model.config import ModelConfig


def _run_lengths(ids_BxT: np.ndarray) -> list[int]:
  """Lengths of the runs of equal non-zero ids in each row."""
  out = []
  ids = np.asarray(ids_BxT)
  for row in ids.reshape(-1, ids.shape[-1]):
    cuts = np.r_[0, np.flatnonzero(row[1:] != row[:-1]) + 1, len(row)]
    out += [int(b - a) for a, b in zip(cuts[:-1], cuts[1:]) if row[a] != 0]
  return out


def llm_matmul_params(cfg: ModelConfig) -> int:
  t = cfg.text
  hd = t.head_dim
  attn = t.hidden_size * hd * (2 * t.num_heads + 2 * t.num_kv_heads)
  mlp = 3 * t.hidden_size * t.intermediate_size
  return t.num_layers * (attn + mlp)


def vision_matmul_params(cfg: ModelConfig) -> tuple[int, int]:
  """(per-patch params: patch embed + blocks, per-merged-token params: merger)."""
  v = cfg.vision
  block = 4 * v.hidden_size**2 + 3 * v.hidden_size * v.intermediate_size
  width = v.hidden_size * v.merge_unit
  return v.patch_dim * v.hidden_size + v.depth * block, width * width + width * v.out_hidden_size


def step_flops(cfg: ModelConfig, batch: dict) -> dict[str, float]:
  """FLOPs by part for one batch in the loader's contract (numpy arrays)."""
  t, v = cfg.text, cfg.vision
  seg = np.asarray(batch["segment_ids"])
  tokens = int((seg > 0).sum())
  out = {
      "dense": 6.0 * llm_matmul_params(cfg) * tokens,
      "head": 6.0 * t.hidden_size * t.vocab_size * float(np.asarray(batch["loss_mask"]).sum()),
      "attention": 6.0 * t.num_layers * t.num_heads * t.head_dim * sum(l * l for l in _run_lengths(seg)),
  }
  if "image_segments" in batch:
    per_patch, per_merged = vision_matmul_params(cfg)
    patches = int((np.asarray(batch["image_segments"]) > 0).sum())
    full = len(v.fullatt_block_indexes)
    win2 = sum(l * l for l in _run_lengths(np.asarray(batch["window_segments"])))
    img2 = sum(l * l for l in _run_lengths(np.asarray(batch["image_segments"])))
    out["vision"] = 6.0 * per_patch * patches + 6.0 * per_merged * patches / v.merge_unit
    out["vision_attention"] = 12.0 * v.num_heads * v.head_dim * ((v.depth - full) * win2 + full * img2)
  return out
