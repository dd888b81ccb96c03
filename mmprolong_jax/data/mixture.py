"""Mixing shard sets by weight into one endless, seeded, host-sharded stream of records.

Each set is shuffled with its own seed and repeated, reshuffling every epoch. Sets are interleaved
in exact proportion to their weights (grain's `MapDataset.mix`: within every run of sum-of-weights
rows each set appears its share of times), and the interleaved stream is then shuffled within
windows of `window` rows so the set order is random while the proportions stay tight. Hosts take
every `process_count`-th row starting at `process_index`: disjoint, together complete, and each
host reads only the records it uses. Everything is a pure function of (index, seed), which is what
makes the loader's state small and resumption exact.
"""
from __future__ import annotations

import zlib
from typing import Mapping

import grain

from mmprolong_jax.data.shard_reader import ShardSource

WINDOW = 1024


def normalized_weights(mixture: Mapping[str, float], shards: Mapping[str, str]) -> dict[str, float]:
  """Positive weights summing to 1, for sets that have shards; zero weights drop a set."""
  weights = {name: float(w) for name, w in mixture.items() if float(w) != 0.0}
  bad = {name: w for name, w in weights.items() if w < 0}
  if bad:
    raise ValueError(f"mixture weights must be >= 0, got {bad}")
  if not weights:
    raise ValueError("mixture has no positive weight")
  missing = sorted(set(weights) - set(shards))
  if missing:
    raise ValueError(f"mixture names {missing} but data.shards has no glob for them")
  total = sum(weights.values())
  return {name: w / total for name, w in sorted(weights.items())}


def _set_seed(seed: int, name: str) -> int:
  return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**32


def mixed_records(shards: Mapping[str, str], mixture: Mapping[str, float], *, seed: int,
                  process_index: int, process_count: int, window: int = WINDOW) -> grain.MapDataset:
  """Endless MapDataset of RecordRef for this host."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} outside [0, {process_count})")
  weights = normalized_weights(mixture, shards)
  parts = [grain.MapDataset.source(ShardSource(name, shards[name]))
           .shuffle(_set_seed(seed, name)).repeat() for name in weights]
  ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, list(weights.values()))
  # grain adds the window number to the seed; keep the sum inside 32 bits.
  ds = grain.experimental.WindowShuffleMapDataset(ds, window_size=window, seed=seed % 2**31)
  return ds[process_index::process_count]
