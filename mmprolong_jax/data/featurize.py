"""Shard records -> one padded batch in the loader's contract (runs in grain worker processes).

Each record is decoded (schema.decode_row) and checked against the loader config; its page images
are decoded and patchified with `image_processing.preprocess_image` and placed, with their layout,
by `vision_layout.pack_vision_rows` (over `vision_shards` sequence shards), one row at a time so
that only one row's float32 patches (GBs at 128K) exist besides the batch. The 3-D positions of
the whole batch come from one `position_ids.mrope_position_ids` call. A failure is re-raised as
ShardRecordError naming the record.
"""
from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image

from mmprolong_jax.data import schema
from mmprolong_jax.data.image_processing import num_image_tokens, preprocess_image
from mmprolong_jax.data.shard_reader import RecordRef, ShardRecordError
from mmprolong_jax.model.position_ids import mrope_position_ids
from mmprolong_jax.model.vision_layout import VisionGeometry, pack_vision_rows

TASK_INDEX = {t: i for i, t in enumerate(schema.TASKS)}


def use_cpu_for_jax(worker_index: int = 0, worker_count: int = 1) -> None:
  """grain worker_init_fn: a worker must never initialize the accelerator backend."""
  del worker_index, worker_count
  jax.config.update("jax_platforms", "cpu")


def _grid_rows(count: int) -> int:
  """Static grid-list length (zero rows are skipped by mrope_position_ids): few distinct shapes."""
  return max(8, 1 << (max(count, 1) - 1).bit_length())


def _runs(seg: np.ndarray) -> list:
  cuts = np.flatnonzero(np.diff(seg)) + 1
  return [int(seg[i]) for i in np.r_[0, cuts]]


class BatchFeaturizer:
  """Callable list[RecordRef] -> batch dict (see loader.py for the contract)."""

  def __init__(self, *, max_len: int, geometry: VisionGeometry, min_pixels: int, max_pixels: int,
               patch_dtype: str, model_cfg, vision_shards: int = 1):
    vision = model_cfg.vision
    geometry.check(vision, vision_shards)
    self.max_len, self.geometry, self.vision_shards = max_len, geometry, vision_shards
    self.min_pixels, self.max_pixels = min_pixels, max_pixels
    self.patch_dtype = jnp.dtype(patch_dtype)
    self.vision = vision
    self.image_token_id = model_cfg.image_token_id

  def __call__(self, refs: list[RecordRef]) -> dict:
    b, t = len(refs), self.max_len
    batch = {"input_ids": np.zeros((b, t), np.int32), "segment_ids": np.zeros((b, t), np.int32),
             "targets": np.zeros((b, t), np.int32), "loss_mask": np.zeros((b, t), np.int32),
             "task_id": np.full((b, t), -1, np.int32),
             "patches": np.zeros((b, self.geometry.num_patches, self.vision.patch_dim),
                                 self.patch_dtype)}
    grids, layouts = [], []
    for i, ref in enumerate(refs):
      try:
        row = schema.decode_row(ref.data)
        grids.append(self._fill_tokens(row, batch, i))
        layouts.append(self._fill_patches(row, batch["patches"], i))
      except Exception as e:  # noqa: BLE001 - every failure is reported with its location
        raise ShardRecordError(ref.shard, ref.index, f"{type(e).__name__}: {e}") from e
    batch["positions"] = self._positions(batch["input_ids"], batch["segment_ids"], grids)
    batch.update({k: np.concatenate([l[k] for l in layouts]) for k in layouts[0]})
    return batch

  def _check(self, row: dict) -> None:
    length = len(row["input_ids"])
    if length > self.max_len:
      raise ValueError(f"row has {length} tokens, loader max_len is {self.max_len}")
    params = (int(row["image_min_pixels"]), int(row["image_max_pixels"]))
    if params != (self.min_pixels, self.max_pixels):
      raise ValueError(f"shard built with image (min_pixels, max_pixels)={params}, loader config "
                       f"has {(self.min_pixels, self.max_pixels)}")
    seg = np.asarray(row["segment_ids"])
    if len(seg) and (seg.min() < 1 or np.any(np.diff(seg) < 0)):
      # Every attention backend assumes each packed instance is one contiguous run (the fused
      # cuDNN ring would silently mix segments otherwise).
      raise ValueError("segment ids must be >= 1 and non-decreasing (each packed instance one "
                       f"contiguous run); got runs {_runs(seg)[:8]}")
    grids = row["image_grid_thw"]
    expected = int(np.sum(num_image_tokens(grids))) if len(grids) else 0
    found = int(np.count_nonzero(row["input_ids"] == self.image_token_id))
    if found != expected:
      raise ValueError(f"{found} tokens equal image_token_id={self.image_token_id} but the grids "
                       f"need {expected}: shard tokenizer and model config disagree?")
    patches = int(np.prod(grids, axis=-1).sum()) if len(grids) else 0
    if patches > self.geometry.num_patches:
      raise ValueError(f"row needs {patches} patches, loader num_patches is "
                       f"{self.geometry.num_patches}")

  def _fill_tokens(self, row: dict, batch: dict, i: int) -> np.ndarray:
    """Writes the token arrays of row i; returns its image grids [n, 3]."""
    self._check(row)
    n = len(row["input_ids"])
    ids_T, seg_T = batch["input_ids"][i], batch["segment_ids"][i]
    ids_T[:n] = row["input_ids"]
    seg_T[:n] = row["segment_ids"]
    target_T = np.zeros(self.max_len, bool)
    target_T[:n] = row["loss_mask"] != 0
    # Token j predicts token j + 1 only inside its own segment.
    same_next = (seg_T[1:] == seg_T[:-1]) & (seg_T[:-1] != 0)
    batch["targets"][i, :-1] = np.where(same_next, ids_T[1:], 0)
    batch["loss_mask"][i, :-1] = same_next & target_T[1:]
    seg_task = np.array([-1] + [TASK_INDEX[name] for name in row["segment_task"]], np.int32)
    batch["task_id"][i] = seg_task[seg_T]
    return np.asarray(row["image_grid_thw"], np.int32).reshape(-1, 3)

  def _fill_patches(self, row: dict, patches_BxNxP: np.ndarray, i: int) -> dict:
    """Decodes and patchifies row i's images into patches_BxNxP[i]; returns its layout [1, ...]."""
    grids = [tuple(int(x) for x in g) for g in row["image_grid_thw"]]
    row_patches = np.empty((sum(t * h * w for t, h, w in grids), self.vision.patch_dim), np.float32)
    offset = 0
    for k, (data, grid, size) in enumerate(zip(row["images"], grids, row["image_size_hw"])):
      image = PIL.Image.open(io.BytesIO(data))
      if (image.height, image.width) != tuple(size):
        raise ValueError(f"image {k} is {image.height}x{image.width}, record says {tuple(size)}")
      patches, got = preprocess_image(image, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                                      patch_size=self.vision.patch_size,
                                      temporal_patch_size=self.vision.temporal_patch_size,
                                      merge_size=self.vision.spatial_merge_size)
      if tuple(got) != grid:
        raise ValueError(f"image {k} processes to grid {tuple(got)}, record says {grid}")
      row_patches[offset:offset + len(patches)] = patches
      offset += len(patches)
    packed_1xNxP, layout = pack_vision_rows([row_patches], [grids], self.geometry, self.vision,
                                            self.vision_shards, dtype=self.patch_dtype)
    patches_BxNxP[i] = packed_1xNxP[0]
    return layout

  def _positions(self, ids_BxT: np.ndarray, seg_BxT: np.ndarray, grids: list[np.ndarray]) -> np.ndarray:
    flat = np.concatenate(grids) if grids else np.zeros((0, 3), np.int32)
    grid_Gx3 = np.zeros((_grid_rows(len(flat)), 3), np.int32)  # images of all rows, row-major
    grid_Gx3[:len(flat)] = flat
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
      pos_3xBxT = mrope_position_ids(ids_BxT, grid_Gx3, segment_ids_BxT=seg_BxT,
                                     image_token_id=self.image_token_id,
                                     spatial_merge_size=self.vision.spatial_merge_size)
    return np.asarray(pos_3xBxT)
