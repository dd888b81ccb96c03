"""Synthetic packed batches in the loader's batch contract (random tokens, page-shaped images).

For benchmarks and for trainer tests that must not depend on rendered data. Deterministic in
(seed, step), so its iterator state is just the step.
"""
from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from mmprolong_jax.model.config import ModelConfig
from mmprolong_jax.model.position_ids import mrope_position_ids
from mmprolong_jax.model.vision_layout import VisionGeometry, pack_vision_rows


def synthetic_row(rng, cfg: ModelConfig, max_len: int, segment_lens, page_grid, pages_per_segment,
                  answer_len: int):
  """One packed row: each segment = pages, question text, answer (the loss targets)."""
  ids, seg, mask, grids = [], [], [], []
  vocab = min(cfg.text.vocab_size, cfg.image_token_id) - 1
  tokens_per_page = int(np.prod(page_grid)) // cfg.vision.merge_unit
  for s, (length, pages) in enumerate(zip(segment_lens, pages_per_segment), start=1):
    body = []
    for _ in range(pages):
      body += [cfg.vision_start_token_id] + [cfg.image_token_id] * tokens_per_page + [cfg.vision_end_token_id]
      grids.append(tuple(page_grid))
    text = max(length - len(body) - answer_len, 1)
    body += list(rng.integers(3, vocab, text + answer_len))
    ids += body
    seg += [s] * len(body)
    mask += [0] * (len(body) - answer_len) + [1] * answer_len
  if len(ids) > max_len:
    raise ValueError(f"segments need {len(ids)} tokens, row holds {max_len}")
  pad = max_len - len(ids)
  return ids + [0] * pad, seg + [0] * pad, mask + [0] * pad, grids


def synthetic_batch(seed: int, step: int, cfg: ModelConfig, rows: int, max_len: int,
                    geometry: VisionGeometry | None = None, page_grid=(1, 8, 8),
                    pages_per_segment=(2, 1), answer_len: int = 8, fill: float = 0.9,
                    vision_shards: int = 1):
  """geometry: the vision slots (default: the smallest that holds these rows)."""
  rng = np.random.default_rng([seed, step])
  n_seg = len(pages_per_segment)
  lens = [int(max_len * fill / n_seg)] * n_seg
  out = {k: [] for k in ("input_ids", "segment_ids", "loss_mask")}
  grids_per_row, patches = [], []
  for _ in range(rows):
    ids, seg, mask, grids = synthetic_row(rng, cfg, max_len, lens, page_grid, pages_per_segment,
                                          answer_len)
    out["input_ids"].append(ids)
    out["segment_ids"].append(seg)
    out["loss_mask"].append(mask)
    grids_per_row.append(grids)
    n = sum(int(np.prod(g)) for g in grids)
    patches.append(rng.standard_normal((n, cfg.vision.patch_dim), dtype=np.float32))
  batch = {k: np.asarray(v, np.int32) for k, v in out.items()}
  # Targets: the next token of the same segment; the mask marks positions whose next token is
  # an answer token, so shift the answer mask left by one.
  ids, seg = batch["input_ids"], batch["segment_ids"]
  batch["targets"] = np.concatenate([ids[:, 1:], np.zeros((rows, 1), np.int32)], 1)
  nxt_seg = np.concatenate([seg[:, 1:], np.zeros((rows, 1), np.int32)], 1)
  batch["loss_mask"] = (np.concatenate([batch["loss_mask"][:, 1:], np.zeros((rows, 1), np.int32)], 1)
                        * (nxt_seg == seg) * (seg > 0)).astype(np.int32)
  flat_grids = np.array([g for gs in grids_per_row for g in gs] or [(0, 0, 0)], np.int32)
  batch["positions"] = np.asarray(mrope_position_ids(
      jnp.asarray(ids), jnp.asarray(flat_grids), segment_ids_BxT=jnp.asarray(seg),
      image_token_id=cfg.image_token_id, spatial_merge_size=cfg.vision.spatial_merge_size))
  if geometry is None:
    geometry = VisionGeometry.fit(grids_per_row, cfg.vision, vision_shards)
  p, layout = pack_vision_rows(patches, grids_per_row, geometry, cfg.vision, vision_shards)
  batch["patches"] = p
  batch.update(layout)
  return batch


class SyntheticSource:
  """Iterator of synthetic batches with get_state/set_state like the Grain loader's."""

  def __init__(self, seed: int, cfg: ModelConfig, **batch_kw):
    self.seed, self.cfg, self.batch_kw, self.step = seed, cfg, batch_kw, 0

  def __iter__(self):
    return self

  def __next__(self):
    batch = synthetic_batch(self.seed, self.step, self.cfg, **self.batch_kw)
    self.step += 1
    return batch

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict):
    self.step = int(state["step"])
