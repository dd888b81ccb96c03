"""Offline packing of instances into rows of at most `max_len` tokens (and `max_patches` patches).

Best-fit decreasing: instances sorted by length (longest first, ties by input order) each go to
the open row whose free token space is smallest but still enough (and whose patch budget fits),
else to a new row. Deterministic for a given input order. `one_per_row` is the unpacked baseline.

A row's capacity use is real tokens / max_len. Two instances longer than max_len / 2 can never
share a row, so for long-only data (the study's pool-native VQA instances are 33K-127K tokens at
128K rows) efficiency is bounded by mean length / max_len whatever the packer; it reaches >= 95%
only when shorter instances are there to fill the gaps (`lower_bound_rows` is the yardstick).
"""
from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np


def best_fit_decreasing(lengths: Sequence[int], patches: Sequence[int], max_len: int,
                        max_patches: int) -> list[list[int]]:
  """Rows as lists of instance indices (each row ordered longest first)."""
  lengths = np.asarray(lengths, np.int64)
  patches = np.asarray(patches, np.int64)
  if np.any(lengths > max_len) or np.any(patches > max_patches):
    raise ValueError("every instance must fit a row on its own; drop over-long ones first")
  order = np.lexsort((np.arange(len(lengths)), -lengths))
  rows: list[list[int]] = []
  free_patches: list[int] = []
  # Open rows sorted by (free tokens, row id): bisect finds the tightest row that fits.
  by_free: list[tuple[int, int]] = []
  for i in order:
    need, need_p = int(lengths[i]), int(patches[i])
    k = bisect.bisect_left(by_free, (need, -1))
    while k < len(by_free) and free_patches[by_free[k][1]] < need_p:
      k += 1
    if k < len(by_free):
      free, r = by_free.pop(k)
      rows[r].append(int(i))
      free_patches[r] -= need_p
      free -= need
    else:
      r = len(rows)
      rows.append([int(i)])
      free_patches.append(max_patches - need_p)
      free = max_len - need
    if free > 0:
      bisect.insort(by_free, (free, r))
  return rows


def one_per_row(count: int) -> list[list[int]]:
  return [[i] for i in range(count)]


def lower_bound_rows(lengths: Sequence[int], max_len: int) -> int:
  """Martello-Toth bound L2: no packing needs fewer rows.

  For a size k <= max_len/2: instances over max_len - k each need a row of their own, those in
  (max_len/2, max_len - k] one row each as well, and instances in [k, max_len/2] fit only into the
  space those rows leave or into extra rows. The bound is the best over k (k = 0 gives the volume).
  """
  x = np.sort(np.asarray(lengths, np.int64))
  if not len(x):
    return 0
  prefix = np.concatenate([[0], np.cumsum(x)])
  half = np.searchsorted(x, max_len // 2, side="right")  # x[:half] <= max_len / 2
  best = -(-int(prefix[-1]) // max_len)
  for k in np.unique(np.concatenate([[0], x[:half]])):
    lo = np.searchsorted(x, k, side="left")  # J3 = x[lo:half]
    hi = np.searchsorted(x, max_len - k, side="right")  # J2 = x[half:hi], J1 = x[hi:]
    n12 = len(x) - half
    space = (hi - half) * max_len - int(prefix[hi] - prefix[half])
    extra = int(prefix[half] - prefix[lo]) - space
    best = max(best, n12 + max(0, -(-extra // max_len)))
  return int(best)


def efficiency(lengths: Sequence[int], num_rows: int, max_len: int) -> float:
  return float(np.sum(lengths)) / (num_rows * max_len) if num_rows else 0.0


def pool_native_lengths(rng: np.random.Generator, count: int) -> np.ndarray:
  """Synthetic instance lengths shaped like the study's pool-native VQA data (Tables 10a, 11).

  32-50 pages skewed to the short end (mean 38.4), ~2.5K tokens per page for 80% of documents
  (letter/A4 at 144 DPI) and 1.0-1.6K for the rest (smaller pages), plus 100-600 text tokens:
  32K-127K tokens, mean ~86K, ~22% at >= 100K (the study: mean 85.3K, 23.6%).
  """
  pages = np.minimum(32 + rng.geometric(1 / 8, count) - 1, 50)
  per_page = np.where(rng.random(count) < 0.8, np.minimum(rng.normal(2480, 40, count), 2530),
                      rng.uniform(1000, 1600, count))
  return (pages * per_page + rng.integers(100, 600, count)).astype(np.int64)


def short_lengths(rng: np.random.Generator, count: int) -> np.ndarray:
  """Synthetic short-context instances (one image of up to 1280 tokens plus a few hundred text
  tokens, LLaVA-OneVision-like): 200-2.5K tokens."""
  return (rng.integers(64, 1281, count) + rng.integers(100, 1200, count)).astype(np.int64)
