"""Random access over one shard set's ArrayRecord files, with errors that name the file and index."""
from __future__ import annotations

import bisect
import dataclasses
import glob as glob_lib
import threading

from array_record.python import array_record_module


class ShardRecordError(RuntimeError):
  """A record could not be read or decoded; the message names the shard file and record index."""

  def __init__(self, shard: str, index: int, cause: BaseException | str):
    self.shard, self.index, self.cause = shard, index, str(cause)
    super().__init__(f"shard {shard} record {index}: {cause}")

  def __reduce__(self):  # keeps the fields when grain ships the error out of a worker process
    return type(self), (self.shard, self.index, self.cause)


@dataclasses.dataclass(frozen=True)
class RecordRef:
  """What the loader's map step receives: the raw record and where it came from."""
  shard_set: str
  shard: str
  index: int
  data: bytes


def expand_shards(pattern: str) -> list[str]:
  paths = sorted(glob_lib.glob(pattern))
  if not paths:
    raise FileNotFoundError(f"no shard files match {pattern!r}")
  return paths


def _open(path: str):
  # No readahead: the loader reads single records at shuffled positions.
  return array_record_module.ArrayRecordReader(path, "readahead_buffer_size:0")


class ShardSource:
  """grain RandomAccessDataSource: global index -> RecordRef over the sorted files of a set.

  Readers open lazily and are not pickled, so the source travels to grain worker processes.
  """

  def __init__(self, shard_set: str, pattern: str):
    self.shard_set = shard_set
    self.paths = expand_shards(pattern)
    ends, total = [], 0
    for path in self.paths:
      try:
        reader = _open(path)
        total += reader.num_records()
        reader.close()
      except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ShardRecordError(path, -1, f"cannot open: {e}") from e
      ends.append(total)
    if total == 0:
      raise ValueError(f"shard set {shard_set!r} ({pattern}) has no records")
    self._ends = ends
    self._readers: list = [None] * len(self.paths)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self._ends[-1]

  def locate(self, index: int) -> tuple[int, int]:
    """Global index -> (file number, index within that file)."""
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range for {len(self)} records")
    f = bisect.bisect_right(self._ends, index)
    return f, index - (self._ends[f - 1] if f else 0)

  def __getitem__(self, index: int) -> RecordRef:
    f, local = self.locate(int(index))
    path = self.paths[f]
    try:
      with self._lock:
        if self._readers[f] is None:
          self._readers[f] = _open(path)
      data = self._readers[f].read([local])[0]
    except Exception as e:  # noqa: BLE001 - re-raised with location
      raise ShardRecordError(path, local, e) from e
    return RecordRef(self.shard_set, path, local, data)

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_readers"] = [None] * len(self.paths)
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __repr__(self) -> str:
    return f"ShardSource({self.shard_set!r}, {len(self.paths)} files, {len(self)} records)"
