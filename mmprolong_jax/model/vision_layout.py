"""Host-side bookkeeping for the vision tower, so the jitted tower sees only static shapes.

For one row's images (grids in patches, (t, h, w)), padded to `num_patches`, this computes:
- `window_index_M` (M = num_patches / 4): merge-unit order in which the tower runs, grouping the
  2x2 merge units of each 112-px window together (the HF reordering); padding units keep their
  place at the end;
- `window_segments_N` / `image_segments_N`: attention segment ids in that order (0 = padding),
  one per window for windowed blocks and one per image for full-attention blocks;
- `pos_hw_Nx2`: (row, column) of every patch in that order, for the 2-D rotary embedding.
Patches are expected in the processor's order (merge units contiguous), which is what
`mmprolong_jax.data.image_processing` and HF's processor produce.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mmprolong_jax.model.config import VisionConfig


def num_patches(grids_thw: Sequence[Sequence[int]]) -> int:
  return int(sum(t * h * w for t, h, w in grids_thw))


def _image_windows(t: int, h: int, w: int, cfg: VisionConfig):
  """Merge-unit indices of one image in window order, and the unit count of each window."""
  m = cfg.spatial_merge_size
  win = cfg.window_size // m // cfg.patch_size  # window side in merge units
  gh, gw = h // m, w // m
  idx = np.arange(t * gh * gw).reshape(t, gh, gw)
  nh, nw = -(-gh // win), -(-gw // win)
  padded = np.full((t, nh * win, nw * win), -1, np.int64)
  padded[:, :gh, :gw] = idx
  padded = padded.reshape(t, nh, win, nw, win).transpose(0, 1, 3, 2, 4).reshape(t * nh * nw, win * win)
  counts = (padded >= 0).sum(-1)
  order = padded[padded >= 0]
  return order, counts[counts > 0]


def vision_layout(grids_thw: Sequence[Sequence[int]], num_patches_padded: int, cfg: VisionConfig):
  """Layout arrays for one row; see the module docstring."""
  grids = [tuple(int(x) for x in g) for g in grids_thw]
  total = num_patches(grids)
  unit = cfg.merge_unit
  if total > num_patches_padded:
    raise ValueError(f"images need {total} patches but the row holds only {num_patches_padded}")
  if num_patches_padded % unit:
    raise ValueError(f"num_patches_padded={num_patches_padded} must be a multiple of {unit}")
  for g in grids:
    if g[1] % cfg.spatial_merge_size or g[2] % cfg.spatial_merge_size:
      raise ValueError(f"grid {g} is not a multiple of the merge size {cfg.spatial_merge_size}")

  window_index, unit_window, unit_image, unit_pos = [], [], [], []
  offset, window_id = 0, 0
  m = cfg.spatial_merge_size
  for image_id, (t, h, w) in enumerate(grids, start=1):
    order, counts = _image_windows(t, h, w, cfg)
    window_index.append(order + offset)
    unit_window.append(np.repeat(np.arange(window_id + 1, window_id + 1 + len(counts)), counts))
    window_id += len(counts)
    unit_image.append(np.full(len(order), image_id))
    # Patch (row, col) for every patch of the image, in processor order (units contiguous).
    gh, gw = h // m, w // m
    r = np.arange(gh)[:, None, None, None] * m + np.arange(m)[None, None, :, None]
    c = np.arange(gw)[None, :, None, None] * m + np.arange(m)[None, None, None, :]
    rows = np.broadcast_to(r, (gh, gw, m, m)).reshape(-1)
    cols = np.broadcast_to(c, (gh, gw, m, m)).reshape(-1)
    pos = np.tile(np.stack([rows, cols], -1).reshape(gh * gw, unit, 2), (t, 1, 1))
    unit_pos.append(pos[order])
    offset += t * gh * gw

  pad_units = (num_patches_padded - total) // unit
  window_index.append(np.arange(offset, offset + pad_units))
  unit_window.append(np.zeros(pad_units, np.int64))
  unit_image.append(np.zeros(pad_units, np.int64))
  unit_pos.append(np.zeros((pad_units, unit, 2), np.int64))
  return {
      "window_index": np.concatenate(window_index).astype(np.int32),
      "window_segments": np.repeat(np.concatenate(unit_window), unit).astype(np.int32),
      "image_segments": np.repeat(np.concatenate(unit_image), unit).astype(np.int32),
      "pos_hw": np.concatenate(unit_pos).reshape(-1, 2).astype(np.int32),
  }


def sharded_vision_layout(grids_thw: Sequence[Sequence[int]], num_patches_padded: int,
                          cfg: VisionConfig, num_shards: int = 1):
  """Layout of one row whose images are spread over `num_shards` sequence shards.

  Whole images go to shards (balanced by patch count); each shard holds N/S patch slots laid
  out by `vision_layout`, so windows and images never cross a shard and the tower runs on each
  shard independently. Arrays get a shard axis: window_index [S, M/S], window_segments /
  image_segments [S, N/S], pos_hw [S, N/S, 2]. `feature_slot` [M] maps the k-th merged token in
  image order to its slot in the shard-major tower output. Also returns, per shard, the image
  indices it holds (to place the patches).
  """
  from mmprolong_jax.attention.vision_sp import assign_images_to_shards
  grids = [tuple(int(x) for x in g) for g in grids_thw]
  if num_patches_padded % (num_shards * cfg.merge_unit):
    raise ValueError(f"num_patches={num_patches_padded} must be a multiple of "
                     f"{num_shards * cfg.merge_unit} (shards x merge unit)")
  per_shard = num_patches_padded // num_shards
  counts = [t * h * w for t, h, w in grids]
  owner = assign_images_to_shards(counts, num_shards) if grids else np.zeros(0, np.int32)
  members = [[i for i in range(len(grids)) if owner[i] == s] for s in range(num_shards)]
  shards = []
  for s, imgs in enumerate(members):
    try:
      shards.append(vision_layout([grids[i] for i in imgs], per_shard, cfg))
    except ValueError as e:
      raise ValueError(f"sequence shard {s} of {num_shards}: {e}") from None
  # Merged-token slots: image i's tokens sit in its shard, after the images before it there.
  units = [c // cfg.merge_unit for c in counts]
  start_in_shard = np.zeros(len(grids), np.int64)
  for imgs in members:
    acc = 0
    for i in imgs:
      start_in_shard[i], acc = acc, acc + units[i]
  m = num_patches_padded // cfg.merge_unit
  slot = np.arange(m, dtype=np.int64)
  k = 0
  for i in range(len(grids)):
    slot[k:k + units[i]] = owner[i] * (m // num_shards) + start_in_shard[i] + np.arange(units[i])
    k += units[i]
  out = {key: np.stack([sh[key] for sh in shards]) for key in shards[0]}
  out["feature_slot"] = slot.astype(np.int32)
  return out, members


def pack_vision_rows(patches_per_row: Sequence[np.ndarray], grids_per_row, num_patches_padded: int,
                     cfg: VisionConfig, num_shards: int = 1, dtype=np.float32):
  """Places each row's patches (processor order, images concatenated) into its shard slots;
  returns (patches_BxNxP, layout dict with a leading batch axis)."""
  rows = len(patches_per_row)
  out = np.zeros((rows, num_patches_padded, cfg.patch_dim), dtype)
  per_shard = num_patches_padded // num_shards
  layouts = []
  for r, (patches, grids) in enumerate(zip(patches_per_row, grids_per_row)):
    layout, members = sharded_vision_layout(grids, num_patches_padded, cfg, num_shards)
    counts = [int(np.prod(g)) for g in grids]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    for s, imgs in enumerate(members):
      at = s * per_shard
      for i in imgs:
        out[r, at:at + counts[i]] = patches[starts[i]:starts[i + 1]]
        at += counts[i]
    layouts.append(layout)
  return out, {k: np.stack([l[k] for l in layouts]) for k in layouts[0]}
