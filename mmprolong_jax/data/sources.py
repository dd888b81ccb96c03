"""The data section's defaults and the training data source: the Grain loader over ArrayRecord
shards, or synthetic batches (benchmarks, tests). Imports nothing heavy, so configs load on
machines without grain."""
from __future__ import annotations

import ml_collections

from mmprolong_jax.data import image_processing


def default_config() -> ml_collections.ConfigDict:
  """The recipe's data section (Table 6: 40/40/20, 128K rows, 4M-token batches)."""
  return ml_collections.ConfigDict({
      "shards": {t: "" for t in ("extract_single", "extract_multi", "reasoning")},
      "mixture": {"extract_single": 0.4, "extract_multi": 0.4, "reasoning": 0.2},
      "max_len": 131072,
      **vision_slots(131072),
      "global_batch_tokens": 4 * 2**20,
      "seed": 0,
      # benchmarks/README.md: one worker makes a 128K row every ~9 s; a GPU needs one per ~55 s.
      "worker_count": 2,
      "worker_buffer_size": 1,
      "image_min_pixels": image_processing.MIN_PIXELS,
      "image_max_pixels": image_processing.CHECKPOINT_MAX_PIXELS,
      "patch_dtype": "float32",
  })


def vision_slots(max_len: int, page_patches: int = 10752, page_tokens: int = 2048) -> dict:
  """Static vision geometry (model/vision_layout.py) for rows of `max_len` tokens of pages.

  num_patches: window slots of 64 patches; 4 patches per image token plus 12.5% for windows cut
  by page edges (a US-letter page at 144 DPI needs 5%). image_rows: one image per row (cuDNN's
  packed backward would need a workspace per segment), at least one per `page_tokens` tokens
  (a 144-DPI page is ~2.5K). image_row_len: the largest image, 10,752 patches by default
  (A4 at 144 DPI is 10,320, US letter 10,032).
  """
  return {"num_patches": -(-9 * max_len // 2 // 512) * 512,
          "image_rows": -(-max_len // page_tokens // 8) * 8,
          "image_row_len": page_patches,
          "images_per_row": 1}


def steps_from_budget(token_budget: float, global_batch_tokens: int) -> int:
  """Optimizer steps for a token budget (the study: 5 * 2^30 / 4 * 2^20 -> 1280 steps)."""
  if global_batch_tokens <= 0 or token_budget <= 0:
    raise ValueError(f"token_budget ({token_budget}) and global_batch_tokens "
                     f"({global_batch_tokens}) must be positive")
  return max(1, int(token_budget // global_batch_tokens))


def rows_per_host(data_cfg, process_count: int) -> int:
  rows, rem = divmod(data_cfg.global_batch_tokens, data_cfg.max_len)
  if rem or rows % process_count:
    raise ValueError(f"data.global_batch_tokens={data_cfg.global_batch_tokens} must be a multiple "
                     f"of data.max_len={data_cfg.max_len} times the process count {process_count}")
  return rows // process_count


def make_source(config, model_cfg, *, process_index: int, process_count: int,
                vision_shards: int = 1):
  """vision_shards: the mesh's sequence size (the vision tower is spread over it)."""
  d = config.data
  rows = rows_per_host(d, process_count)
  if d.source == "synthetic":
    from mmprolong_jax.data.synthetic import SyntheticSource
    from mmprolong_jax.model.vision_layout import VisionGeometry
    s = d.synthetic
    return SyntheticSource(config.seed + process_index, model_cfg, rows=rows,
                           max_len=d.max_len, geometry=VisionGeometry.from_config(d),
                           page_grid=tuple(s.page_grid), pages_per_segment=tuple(s.pages_per_segment),
                           answer_len=s.answer_len, vision_shards=vision_shards)
  if d.source == "shards":
    from mmprolong_jax.data.loader import make_loader
    return make_loader(d, model_cfg, process_index=process_index, process_count=process_count,
                       vision_shards=vision_shards)
  raise ValueError(f"unknown data.source {d.source!r}; use 'shards' or 'synthetic'")
