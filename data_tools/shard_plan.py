"""Instances -> tokenized segments and the packing plan of one shard set (used by build_shards).

An instance is measured (tokens, patches, targets) from its text and its images' headers only;
its tokens are produced again when its shard is written, from the same inputs, and checked
against the measurement. The plan (which instances form which row, which rows form which shard)
is a pure function of the instance order, the build options and the seed.
"""
from __future__ import annotations

import dataclasses
import glob as glob_lib
import hashlib
import io
import json
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
import PIL.Image

from data_tools import io_utils
from data_tools import schema as instance_schema
from mmprolong_jax.data import packing
from mmprolong_jax.data.chat import ChatTokenizer
from mmprolong_jax.data.image_processing import smart_resize
from mmprolong_jax.model.config import VisionConfig

_VISION = VisionConfig()


@dataclasses.dataclass(frozen=True)
class InstanceRef:
  """Where an instance lives: its JSONL file and line, and the folder its image paths start from."""
  file: str
  line: int
  image_root: str


@dataclasses.dataclass(frozen=True)
class Options:
  max_len: int
  max_patches: int
  packing: str  # "best_fit" | "none"
  rows_per_shard: int
  seed: int
  min_pixels: int
  max_pixels: int


def find_instances(work_dirs: Iterable[str]) -> list[tuple[InstanceRef, dict]]:
  """All instances of `<work>/instances/*.jsonl` in a fixed order (work dirs as given, files
  sorted, lines in order); image paths are relative to the work dir (data_tools/schema.py)."""
  found = []
  for work in work_dirs:
    files = sorted(glob_lib.glob(str(Path(work) / "instances" / "*.jsonl")))
    if not files:
      raise FileNotFoundError(f"no instance files in {work}/instances/")
    for path in files:
      for line, record in enumerate(io_utils.read_jsonl(path)):
        found.append((InstanceRef(path, line, str(work)), record))
  return found


def image_grid(height: int, width: int, min_pixels: int, max_pixels: int) -> tuple[int, int, int]:
  """Patch grid of a still image after smart_resize (what preprocess_image will produce)."""
  p, m = _VISION.patch_size, _VISION.spatial_merge_size
  h, w = smart_resize(height, width, p * m, min_pixels, max_pixels)
  return 1, h // p, w // p


@dataclasses.dataclass
class Segment:
  """One tokenized instance, ready to be laid into a row."""
  instance: str
  doc: str
  task: str
  input_ids: np.ndarray
  loss_mask: np.ndarray
  images: list[bytes]
  grids: list[tuple[int, int, int]]
  sizes: list[tuple[int, int]]

  @property
  def num_patches(self) -> int:
    return sum(t * h * w for t, h, w in self.grids)


def _where(ref: InstanceRef, record: dict) -> str:
  return f"instance {record.get('id')!r} ({ref.file}:{ref.line + 1})"


def _image_paths(ref: InstanceRef, record: dict) -> list[Path]:
  return [Path(ref.image_root) / p for p in record["images"]]


def tokenize(ref: InstanceRef, record: dict, chat: ChatTokenizer, opts: Options, *,
             read_images: bool) -> Segment:
  """Instance -> Segment (image bytes only when `read_images`; sizes come from headers)."""
  try:
    instance_schema.validate_instance(record)
    task = record["task"]
    sizes, blobs = [], []
    for path in _image_paths(ref, record):
      data = path.read_bytes() if read_images else None
      with PIL.Image.open(io.BytesIO(data) if read_images else path) as im:
        sizes.append((im.height, im.width))
      blobs.append(data)
    grids = [image_grid(h, w, opts.min_pixels, opts.max_pixels) for h, w in sizes]
    ids, mask, refs = chat.encode(record["messages"], grids)
    return Segment(record["id"], record["doc_id"], task, ids, mask,
                   [blobs[r] for r in refs] if read_images else [],
                   [grids[r] for r in refs], [sizes[r] for r in refs])
  except Exception as e:  # noqa: BLE001 - an unusable instance stops the build, with its location
    raise ValueError(f"{_where(ref, record)}: {type(e).__name__}: {e}") from e


def measure(ref: InstanceRef, record: dict, chat: ChatTokenizer,
            opts: Options) -> tuple[int, int, int]:
  """(tokens, patches, target tokens) of an instance."""
  seg = tokenize(ref, record, chat, opts, read_images=False)
  return len(seg.input_ids), seg.num_patches, int(seg.loss_mask.sum())


def plan_rows(measures: np.ndarray, opts: Options, set_name: str) -> tuple[list[list[int]], dict]:
  """measures [n, 3] -> (rows of kept instance indices in shard order, drop counts)."""
  tokens, patches, _ = measures.T
  too_long = (tokens > opts.max_len) | (patches > opts.max_patches)
  kept = np.flatnonzero(~too_long)
  if opts.packing == "best_fit":
    rows = packing.best_fit_decreasing(tokens[kept], patches[kept], opts.max_len, opts.max_patches)
  elif opts.packing == "none":
    rows = packing.one_per_row(len(kept))
  else:
    raise ValueError(f"unknown packing {opts.packing!r}")
  # Rows come out longest-first; shuffle them so every shard sees the whole length range.
  order = np.random.default_rng([opts.seed, zlib.crc32(set_name.encode())]).permutation(len(rows))
  rows = [[int(kept[i]) for i in rows[r]] for r in order]
  return rows, {"too_long": int(too_long.sum())}


def fingerprint(set_name: str, tasks: list[str], instance_files: list[str], tokenizer_dir: str,
                opts: Options) -> str:
  """Hash of everything a set's shards depend on (instance files, tokenizer, options)."""
  h = hashlib.sha256()
  h.update(json.dumps([set_name, tasks, dataclasses.asdict(opts)], sort_keys=True).encode())
  for path in sorted(instance_files) + sorted(glob_lib.glob(f"{tokenizer_dir}/*")):
    if Path(path).is_file():
      h.update(Path(path).name.encode())
      h.update(Path(path).read_bytes())
  return h.hexdigest()
