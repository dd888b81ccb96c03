"""Placing whole images on sequence shards for the vision tower (host-side, numpy).

See README.md in this package for why whole images: every vision attention block
(windowed or full) then stays on one shard and needs no communication.
"""
import dataclasses
import heapq
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class VisionShardPlan:
  """Where each image's patches go in a [num_shards * shard_len] patch stream.

  shard_of_image: [num_images] shard index of every image.
  source_index: [num_shards * shard_len] index into the original (image-major) patch
    stream for each slot, -1 for padding. `patches_sharded = patches[source_index]`
    (then zero the -1 slots) and the inverse scatter takes results back.
  image_ids: [num_shards * shard_len] 1 + image index per slot, 0 for padding; the
    segment ids of the full-attention blocks (windowed blocks use window ids).
  loads: [num_shards] patches per shard.
  """
  shard_of_image: np.ndarray
  source_index: np.ndarray
  image_ids: np.ndarray
  loads: np.ndarray


def assign_images_to_shards(patches_per_image: Sequence[int], num_shards: int) -> np.ndarray:
  """Greedy longest-first assignment: each image, largest first, goes to the least
  loaded shard. The max load is at most mean + largest image, and within 4/3 of the
  optimum (Graham's LPT bound)."""
  counts = np.asarray(patches_per_image, np.int64)
  shard_of_image = np.zeros(len(counts), np.int32)
  heap = [(0, s) for s in range(num_shards)]
  for i in np.argsort(-counts, kind="stable"):
    load, s = heapq.heappop(heap)
    shard_of_image[i] = s
    heapq.heappush(heap, (load + int(counts[i]), s))
  return shard_of_image


def plan_vision_shards(patches_per_image: Sequence[int], num_shards: int,
                       shard_len: int | None = None, multiple_of: int = 64) -> VisionShardPlan:
  """Assigns images to shards and lays them out, each shard padded to shard_len
  (default: the largest load rounded up to `multiple_of`). Images keep their order
  within a shard, so the merger's 2x2 groups and the window order stay intact."""
  counts = np.asarray(patches_per_image, np.int64)
  shard_of_image = assign_images_to_shards(counts, num_shards)
  loads = np.bincount(shard_of_image, weights=counts, minlength=num_shards).astype(np.int64)
  if shard_len is None:
    shard_len = max(multiple_of, -(-int(loads.max()) // multiple_of) * multiple_of)
  if loads.max() > shard_len:
    raise ValueError(f"Shard loads {loads.tolist()} exceed shard_len {shard_len}.")
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  source_index = np.full(num_shards * shard_len, -1, np.int64)
  image_ids = np.zeros(num_shards * shard_len, np.int32)
  fill = np.arange(num_shards, dtype=np.int64) * shard_len
  for i, (s, n) in enumerate(zip(shard_of_image, counts)):
    source_index[fill[s]:fill[s] + n] = np.arange(starts[i], starts[i] + n)
    image_ids[fill[s]:fill[s] + n] = i + 1
    fill[s] += n
  return VisionShardPlan(shard_of_image, source_index, image_ids, loads)
