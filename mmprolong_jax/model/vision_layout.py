"""Host-side layout of a row's images for the vision tower, so the jitted tower sees only static
shapes and its windowed blocks need no gather at all.

Window slots. A row's N patch slots are cut into window slots of K = (window_size / patch_size)^2
patches (64 for Qwen2.5-VL: the 8 x 8 patches of a 112-px window). Each window of each image gets
its own slot: its merge units (HF's order within the window) fill the slot's front, the rest is
padding. Windowed attention is then attention inside each [K] slot, a reshape. Windows cut by an
image's edge leave padding (5% for a US-letter page at 144 DPI).

Image rows. Full-attention blocks attend within an image, so images are also placed in F rows of
R positions (at most `images_per_row` per row, first-fit decreasing): `image_gather` [F, R] names
the patch slot feeding each position, `image_scatter` [N] the position of each slot (N and F*R
mean "none" and read a zero row).

Per row and sequence shard (N, F: that shard's share):
  window_segments [N]     window id (1.., unique in the shard), 0 = padding
  pos_hw          [N, 2]  (row, column) of the patch in its image, for the 2-D rotary embedding
  image_gather    [F, R]  patch slot per image-row position
  image_segments  [F, R]  image id (1.., unique in the shard) per position, 0 = padding
  image_scatter   [N]     flat image-row position per slot
and per row `feature_slot` [N_row / 4]: the merged-token slot (shard-major) of the k-th merged
token in image order, which is the order of the row's image tokens.
Patches come in the processor's order (merge units contiguous), as
`mmprolong_jax.data.image_processing` and HF's processor produce them.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from mmprolong_jax.model.config import VisionConfig


def window_slot_size(cfg: VisionConfig) -> int:
  return (cfg.window_size // cfg.patch_size) ** 2


@dataclasses.dataclass(frozen=True)
class VisionGeometry:
  """Static sizes of a row's vision arrays (whole row, all sequence shards)."""
  num_patches: int        # N: patch slots, a multiple of window_slot_size x shards
  image_rows: int         # F: rows for the full-attention blocks, a multiple of shards
  image_row_len: int      # R: positions per image row (largest image, rounded up)
  images_per_row: int = 1  # images sharing one image row (the attention's segment bound)

  @classmethod
  def from_config(cls, data_cfg) -> "VisionGeometry":
    return cls(int(data_cfg.num_patches), int(data_cfg.image_rows), int(data_cfg.image_row_len),
               int(data_cfg.get("images_per_row", 1)))

  @classmethod
  def fit(cls, grids_per_row, cfg: VisionConfig, shards: int = 1, multiple: int = 64):
    """The smallest geometry holding these rows, one image per image row (tests, generation)."""
    from mmprolong_jax.attention.vision_sp import assign_images_to_shards
    windows, images, largest = 1, 1, cfg.merge_unit
    for grids in grids_per_row:
      grids = [tuple(int(x) for x in g) for g in grids]
      owner = assign_images_to_shards([int(np.prod(g)) for g in grids], shards)
      for s in range(shards):
        mine = [g for g, o in zip(grids, owner) if o == s]
        windows = max(windows, sum(len(_image_windows(*g, cfg)[1]) for g in mine))
        images = max(images, len(mine))
      largest = max([largest] + [int(np.prod(g)) for g in grids])
    up = lambda x, m: -(-x // m) * m
    return cls(windows * window_slot_size(cfg) * shards, images * shards, up(largest, multiple))

  def check(self, cfg: VisionConfig, shards: int) -> None:
    k = window_slot_size(cfg)
    if self.num_patches % (k * shards):
      raise ValueError(f"num_patches={self.num_patches} must be a multiple of the window slot "
                       f"({k} patches) x sequence shards ({shards})")
    if self.image_rows % shards or self.image_rows <= 0:
      raise ValueError(f"image_rows={self.image_rows} must be a positive multiple of the "
                       f"sequence shards ({shards})")
    if self.image_row_len % cfg.merge_unit or self.image_row_len <= 0:
      raise ValueError(f"image_row_len={self.image_row_len} must be a positive multiple of "
                       f"{cfg.merge_unit}")
    if self.images_per_row < 1:
      raise ValueError(f"images_per_row={self.images_per_row} must be >= 1")

  def shard(self, shards: int) -> "VisionGeometry":
    return dataclasses.replace(self, num_patches=self.num_patches // shards,
                               image_rows=self.image_rows // shards)


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


def _unit_positions(t: int, h: int, w: int, m: int) -> np.ndarray:
  """(row, col) of every patch of an image in processor order, as [units, m*m, 2]."""
  gh, gw = h // m, w // m
  r = np.arange(gh)[:, None, None, None] * m + np.arange(m)[None, None, :, None]
  c = np.arange(gw)[None, :, None, None] * m + np.arange(m)[None, None, None, :]
  rows = np.broadcast_to(r, (gh, gw, m, m)).reshape(-1)
  cols = np.broadcast_to(c, (gh, gw, m, m)).reshape(-1)
  return np.tile(np.stack([rows, cols], -1).reshape(gh * gw, m * m, 2), (t, 1, 1))


def _image_rows(sizes: Sequence[int], geom: VisionGeometry):
  """First-fit decreasing of images (patch counts) into rows: (row, offset) per image."""
  fill = np.zeros(geom.image_rows, np.int64)
  members = np.zeros(geom.image_rows, np.int64)
  place = [None] * len(sizes)
  for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
    if sizes[i] > geom.image_row_len:
      raise ValueError(f"an image of {sizes[i]} patches exceeds image_row_len="
                       f"{geom.image_row_len}; raise data.image_row_len")
    fits = np.flatnonzero((fill + sizes[i] <= geom.image_row_len)
                          & (members < geom.images_per_row))
    if not len(fits):
      raise ValueError(f"{len(sizes)} images ({sum(sizes)} patches) do not fit {geom.image_rows} "
                       f"image rows of {geom.image_row_len} (images_per_row="
                       f"{geom.images_per_row}); raise data.image_rows")
    row = int(fits[0])
    place[i] = (row, int(fill[row]))
    fill[row] += sizes[i]
    members[row] += 1
  return place


def vision_layout(grids_thw: Sequence[Sequence[int]], geom: VisionGeometry, cfg: VisionConfig):
  """Layout of one row (or one shard's images, with that shard's geometry): the module
  docstring's arrays plus `slot_src` [N] (patch index, -1 = padding) and `unit_slot` (merged
  slot of every merge unit, image order), both for the host."""
  grids = [tuple(int(x) for x in g) for g in grids_thw]
  k, unit, m = window_slot_size(cfg), cfg.merge_unit, cfg.spatial_merge_size
  n, f, r = geom.num_patches, geom.image_rows, geom.image_row_len
  for g in grids:
    if g[1] % m or g[2] % m:
      raise ValueError(f"grid {g} is not a multiple of the merge size {m}")
  slot_src = np.full(n, -1, np.int64)
  window_segments = np.zeros(n, np.int32)
  pos_hw = np.zeros((n, 2), np.int32)
  unit_slot, image_slots = [], []
  windows_used, units_before = 0, 0
  for t, h, w in grids:
    order, counts = _image_windows(t, h, w, cfg)
    if (windows_used + len(counts)) * k > n:
      need = sum(len(_image_windows(*g, cfg)[1]) for g in grids)
      raise ValueError(f"images need {need} windows of {k} patch slots ({need * k} slots) but the "
                       f"row holds {n}; raise data.num_patches")
    window_U = np.repeat(np.arange(len(counts)), counts)
    within_U = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    slot_unit_U = (windows_used + window_U) * (k // unit) + within_U   # window order
    slots_Ux4 = slot_unit_U[:, None] * unit + np.arange(unit)
    slot_src[slots_Ux4] = (order + units_before)[:, None] * unit + np.arange(unit)
    window_segments[slots_Ux4] = (windows_used + window_U + 1)[:, None]
    pos_hw[slots_Ux4] = _unit_positions(t, h, w, m)[order]
    in_image_order = np.empty_like(slot_unit_U)
    in_image_order[order] = slot_unit_U
    unit_slot.append(in_image_order)
    image_slots.append(slots_Ux4.reshape(-1))
    windows_used += len(counts)
    units_before += len(order)

  image_gather = np.full(f * r, n, np.int64)
  image_segments = np.zeros(f * r, np.int32)
  image_scatter = np.full(n, f * r, np.int64)
  for i, (row, off) in enumerate(_image_rows([len(s) for s in image_slots], geom)):
    at = row * r + off + np.arange(len(image_slots[i]))
    image_gather[at] = image_slots[i]
    image_segments[at] = i + 1
    image_scatter[image_slots[i]] = at
  return {
      "window_segments": window_segments,
      "pos_hw": pos_hw,
      "image_gather": image_gather.reshape(f, r).astype(np.int32),
      "image_segments": image_segments.reshape(f, r),
      "image_scatter": image_scatter.astype(np.int32),
      "slot_src": slot_src,
      "unit_slot": np.concatenate(unit_slot) if unit_slot else np.zeros(0, np.int64),
  }


def sharded_vision_layout(grids_thw: Sequence[Sequence[int]], geom: VisionGeometry,
                          cfg: VisionConfig, num_shards: int = 1):
  """Layout of one row whose images are spread over `num_shards` sequence shards.

  Whole images go to shards (balanced by patch count, see attention/vision_sp.py), so windows
  and images never cross a shard and the tower runs on each shard independently. Arrays get a
  shard axis S in front; `feature_slot` indexes the shard-major merged output. Also returns
  `slot_src` [S * N/S] (index into the row's patches in image order, -1 = padding).
  """
  from mmprolong_jax.attention.vision_sp import assign_images_to_shards
  geom.check(cfg, num_shards)
  grids = [tuple(int(x) for x in g) for g in grids_thw]
  per = geom.shard(num_shards)
  counts = [t * h * w for t, h, w in grids]
  owner = assign_images_to_shards(counts, num_shards) if grids else np.zeros(0, np.int32)
  starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  units = [c // cfg.merge_unit for c in counts]
  merged_per_shard = per.num_patches // cfg.merge_unit
  shards, slot_src = [], []
  feature_slot = np.zeros(geom.num_patches // cfg.merge_unit, np.int64)
  unit_start = np.concatenate([[0], np.cumsum(units)]).astype(np.int64)
  for s in range(num_shards):
    imgs = [i for i in range(len(grids)) if owner[i] == s]
    try:
      lay = vision_layout([grids[i] for i in imgs], per, cfg)
    except ValueError as e:
      raise ValueError(f"sequence shard {s} of {num_shards}: {e}") from None
    src = lay.pop("slot_src")
    # Shard-local patch index -> the row's patch index (images concatenated in row order).
    local_start = np.concatenate([[0], np.cumsum([counts[i] for i in imgs])]).astype(np.int64)
    remap = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in imgs] or [np.zeros(0)])
    slot_src.append(np.where(src >= 0, remap[np.maximum(src, 0)] if len(remap) else -1, -1))
    unit_slot = lay.pop("unit_slot")
    for j, i in enumerate(imgs):
      a = local_start[j] // cfg.merge_unit
      feature_slot[unit_start[i]:unit_start[i + 1]] = s * merged_per_shard + unit_slot[a:a + units[i]]
    shards.append(lay)
  out = {key: np.stack([sh[key] for sh in shards]) for key in shards[0]}
  out["feature_slot"] = feature_slot.astype(np.int32)
  return out, np.concatenate(slot_src).astype(np.int64)


def pack_vision_rows(patches_per_row: Sequence[np.ndarray], grids_per_row, geom: VisionGeometry,
                     cfg: VisionConfig, num_shards: int = 1, dtype=np.float32):
  """Places each row's patches (processor order, images concatenated) into its window slots;
  returns (patches_BxNxP, layout dict with a leading batch axis)."""
  out = np.zeros((len(patches_per_row), geom.num_patches, cfg.patch_dim), dtype)
  layouts = []
  for r, (patches, grids) in enumerate(zip(patches_per_row, grids_per_row)):
    layout, src = sharded_vision_layout(grids, geom, cfg, num_shards)
    if len(patches) != num_patches(grids):
      raise ValueError(f"row {r}: {len(patches)} patches for grids needing {num_patches(grids)}")
    used = src >= 0
    out[r, used] = patches[src[used]]
    layouts.append(layout)
  return out, {k: np.stack([l[k] for l in layouts]) for k in layouts[0]}
