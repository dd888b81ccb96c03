"""Tiny random Hugging Face Qwen2.5-VL models and matching inputs, built offline (the oracle)."""
from __future__ import annotations

import numpy as np
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mmprolong_jax.model import config as config_lib

IMAGE, V_START, V_END = 500, 502, 503


def tiny_hf_config(tied: bool = False, vision_depth: int = 3, full_blocks=(1,)) -> Qwen2_5_VLConfig:
  ours = config_lib.tiny(tie_word_embeddings=tied).replace_vision(
      depth=vision_depth, fullatt_block_indexes=tuple(full_blocks))
  return Qwen2_5_VLConfig(**ours.to_hf_dict())


def build_hf_model(hf_cfg: Qwen2_5_VLConfig, seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
  torch.manual_seed(seed)
  model = Qwen2_5_VLForConditionalGeneration(hf_cfg).eval()
  # Random init leaves norms at 1 and biases at 0; perturb everything so no path hides.
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.02 * torch.randn_like(p))
  return model


def make_batch(rows_images, text_lens, rng: np.random.Generator, vocab: int = 400):
  """Builds a right-padded batch.

  rows_images: per row, a list of (t, h, w) patch grids; text_lens: per row, the lengths of the
  text runs around the images (len(images) + 1 runs). Returns a dict with numpy arrays:
  input_ids, attention_mask, mm_token_type_ids, pixel_values (all rows' images concatenated),
  image_grid_thw, and per-row `grids`.
  """
  rows = []
  for grids, lens in zip(rows_images, text_lens):
    assert len(lens) == len(grids) + 1
    ids = list(rng.integers(3, vocab, lens[0]))
    for (t, h, w), n in zip(grids, lens[1:]):
      ids += [V_START] + [IMAGE] * (t * h * w // 4) + [V_END]
      ids += list(rng.integers(3, vocab, n))
    rows.append(ids)
  length = max(len(r) for r in rows)
  input_ids = np.zeros((len(rows), length), np.int64)
  mask = np.zeros((len(rows), length), np.int64)
  for i, r in enumerate(rows):
    input_ids[i, :len(r)] = r
    mask[i, :len(r)] = 1
  all_grids = [g for grids in rows_images for g in grids]
  n_patches = sum(t * h * w for t, h, w in all_grids)
  return {
      "input_ids": input_ids,
      "attention_mask": mask,
      "mm_token_type_ids": (input_ids == IMAGE).astype(np.int64),
      "pixel_values": rng.standard_normal((n_patches, 3 * 2 * 14 * 14)).astype(np.float32),
      "image_grid_thw": np.array(all_grids, np.int64).reshape(-1, 3),
      "grids": [list(g) for g in rows_images],
  }


def hf_forward(model, batch):
  """HF logits and 3-D positions for a batch from `make_batch`."""
  kw = {k: torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
  if len(batch["image_grid_thw"]):
    kw["pixel_values"] = torch.from_numpy(batch["pixel_values"])
    kw["image_grid_thw"] = torch.from_numpy(batch["image_grid_thw"])
  with torch.no_grad():
    out = model(**kw)
    pos, _ = model.model.get_rope_index(
        kw["input_ids"], image_grid_thw=kw.get("image_grid_thw"),
        attention_mask=kw["attention_mask"], mm_token_type_ids=kw["mm_token_type_ids"])
  return out.logits.float().numpy(), pos.numpy()
