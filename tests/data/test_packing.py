"""Best-fit-decreasing packing: validity, efficiency on study-shaped lengths, determinism."""
import numpy as np

from mmprolong_jax.data import packing

CAP = 131072


def _check_valid(rows, lengths, patches, max_len, max_patches):
  flat = sorted(i for row in rows for i in row)
  assert flat == list(range(len(lengths)))  # every instance exactly once
  for row in rows:
    assert lengths[row].sum() <= max_len and patches[row].sum() <= max_patches


def test_valid_and_deterministic():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 100, 500)
  patches = rng.integers(0, 300, 500)
  rows = packing.best_fit_decreasing(lengths, patches, 128, 400)
  _check_valid(rows, lengths, patches, 128, 400)
  assert rows == packing.best_fit_decreasing(lengths, patches, 128, 400)
  assert packing.one_per_row(3) == [[0], [1], [2]]


def test_pool_native_distribution_shape():
  lengths = packing.pool_native_lengths(np.random.default_rng(0), 20000)
  assert 32_000 < lengths.min() and lengths.max() <= 127 * 1024
  assert 83_000 < lengths.mean() < 88_000  # the study: 85.3K
  assert 0.18 < np.mean(lengths >= 100 * 1024) < 0.26  # the study: 23.6%


def test_efficiency_with_shorter_instances():
  """Long pool-native rows plus shorter instances (40% of tokens): >= 95% of capacity used."""
  rng = np.random.default_rng(1)
  long = packing.pool_native_lengths(rng, 1000)
  short = packing.short_lengths(rng, 30000)
  short = short[np.cumsum(short) <= long.sum() * 0.4 / 0.6]
  lengths = np.concatenate([long, short])
  rows = packing.best_fit_decreasing(lengths, 4 * lengths, CAP, 4 * CAP)
  _check_valid(rows, lengths, 4 * lengths, CAP, 4 * CAP)
  assert packing.efficiency(lengths, len(rows), CAP) >= 0.95


def test_long_only_is_near_the_lower_bound():
  """Long-only data cannot pack well (two >64K instances never share a row); BFD still gets within
  1% of the lower bound on rows, and its efficiency is what the data allows (~80%)."""
  lengths = packing.pool_native_lengths(np.random.default_rng(2), 2000)
  rows = packing.best_fit_decreasing(lengths, lengths, CAP, 4 * CAP)
  assert len(rows) <= 1.01 * packing.lower_bound_rows(lengths, CAP)
  assert 0.7 < packing.efficiency(lengths, len(rows), CAP) < 0.85


def test_lower_bound_small_cases():
  assert packing.lower_bound_rows([60, 60, 60], 100) == 3
  assert packing.lower_bound_rows([30, 30, 30, 30], 100) == 2
  assert packing.lower_bound_rows([70, 40, 40], 100) == 2  # the 40s cannot join the 70
