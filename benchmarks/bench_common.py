"""Shared by the train-step benchmark's workers: the row, the model shape, FLOPs."""
from __future__ import annotations

import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

LLM_LAYERS, VIT_DEPTH, FULLATT = 4, 8, (3, 7)
PAGE_GRID = (1, 114, 88)
ANSWER_LEN = 32
ROW_EXTRA = 512            # question text + answer: 448 + 32 tokens, plus slack
MAX_LOSS_TOKENS = 256
# Everything in the README table; more than one 9-minute GPU call holds (the README lists the
# three --jobs plans that produced it), so --deadline skips what does not fit and says so.
TINY = {"page_grid": (1, 8, 8), "extra": 100}


# ----------------------------------------------------------------------------------------------
# Shared: the row
# ----------------------------------------------------------------------------------------------
def row_shape(length: int, tiny: bool):
  """(page grid, pages, segment length): pages + question text + answer, one segment."""
  grid = TINY["page_grid"] if tiny else PAGE_GRID
  extra = TINY["extra"] if tiny else ROW_EXTRA
  per_page = grid[0] * grid[1] * grid[2] // 4 + 2
  pages = max((length - extra) // per_page, 1)
  seg_len = pages * per_page + extra - 32   # 32 tokens of slack stay padding
  return grid, pages, min(seg_len, length)


def model_cfg(length: int, tiny: bool, config=None):
  """Our ModelConfig exactly as the trainer builds it from the benchmark's config, depth cut."""
  from mmprolong_jax import setup
  config = config or jax_config(length, tiny)
  cfg = setup.model_config(config)
  if tiny:
    return cfg
  return cfg.replace_text(num_layers=LLM_LAYERS).replace_vision(depth=VIT_DEPTH,
                                                                 fullatt_block_indexes=FULLATT)


def make_batch(cfg, length: int, tiny: bool, config=None):
  """numpy batch in the loader's contract (synthetic_batch, the config's vision geometry),
  patches in bf16."""
  import ml_dtypes
  from mmprolong_jax.data.synthetic import synthetic_batch
  from mmprolong_jax.model.vision_layout import VisionGeometry
  config = config or jax_config(length, tiny)
  grid, pages, seg_len = row_shape(length, tiny)
  fill = (seg_len + 0.5) / length
  batch = synthetic_batch(0, 0, cfg, rows=1, max_len=length,
                          geometry=VisionGeometry.from_config(config.data),
                          page_grid=grid, pages_per_segment=(pages,),
                          answer_len=ANSWER_LEN, fill=fill)
  batch["patches"] = batch["patches"].astype(ml_dtypes.bfloat16)
  real = int((batch["segment_ids"] > 0).sum())
  info = {"length": length, "pages": pages, "real_tokens": real,
          "image_tokens": int((batch["input_ids"] == cfg.image_token_id).sum()),
          "patches": int((batch["image_segments"] > 0).sum()),
          "windows": int(batch["window_segments"].max()),
          "loss_positions": int(batch["loss_mask"].sum())}
  return batch, info


def flops_of(cfg, batch):
  from mmprolong_jax.flops import step_flops
  return {k: float(v) for k, v in step_flops(cfg, batch).items()}


def _median(xs):
  return statistics.median(xs) if xs else None


def jax_config(length: int, tiny: bool):
  from configs import base
  from mmprolong_jax.data import sources
  c = base.get_config()
  if tiny:
    c.model.preset = "tiny"
    c.model.max_position_embeddings = 4096
  c.attention.backend = "blockwise" if tiny else "cudnn"
  c.attention.local_backend = "blockwise" if tiny else "cudnn"
  c.attention.max_segments = 2
  if tiny:
    c.attention.block_q = c.attention.block_kv = 64
  c.mesh.data = c.mesh.fsdp = c.mesh.sequence = c.mesh.tensor = 1
  c.data.source = "synthetic"
  c.data.max_len = length
  c.data.update(sources.vision_slots(length))
  if tiny:   # many 64-patch pages
    c.attention.vision_backend = "blockwise"
    c.data.image_rows, c.data.image_row_len = 128, 64
  c.data.global_batch_tokens = length
  c.train.max_loss_tokens = MAX_LOSS_TOKENS
  return c
