"""The one description of a training-shard record (a packed row) and of the shard files on disk.

A record is one row: one or more tokenized instances ("segments") laid end to end, at most the
build's `max_len` tokens, unpadded. It is a `tf.train.Example` described by `features()` (a TFDS
FeaturesDict), so `tfds.data_source` / `tfds.builder_from_directory` read the same files with full
decoding and without TensorFlow installed. Fields (L tokens, n images, S segments):

  input_ids          int32  [L]    token ids, each image expanded to <|vision_start|>,
                                   t*h*w/4 x <|image_pad|>, <|vision_end|> (Qwen2.5-VL chat format)
  loss_mask          uint8  [L]    1 where the token is a training target (assistant content and the
                                   <|im_end|> closing it), aligned with input_ids (not shifted)
  segment_ids        int32  [L]    1..S: which instance the token belongs to (no padding inside)
  images             bytes  [n]    encoded page images exactly as rendered, in token order
  image_grid_thw     int32  [n,3]  patch grid (t, h, w) of each image after smart_resize
  image_size_hw      int32  [n,2]  pixel size (height, width) of each encoded image
  image_min_pixels   int64  []     resize parameters the grids were computed with
  image_max_pixels   int64  []
  segment_task       str    [S]    task name of each segment (one of TASKS)
  segment_instance   str    [S]    instance id of each segment
  segment_doc        str    [S]    document id of each segment
  segment_num_images int32  [S]    how many of `images` each segment owns (in order)

Files: one folder per shard set (a task, or a named group of tasks packed together):
  <out>/<dataset_name(set)>/<VERSION>/<dataset_name(set)>-train.array_record-0000K-of-0000N
plus TFDS's dataset_info.json / features.json, and the builder's stats.json and plan.json.
Records are written with `WRITER_OPTIONS` (group_size 1 for random access; images are already
compressed, so the payload is stored uncompressed).
"""
from __future__ import annotations

import functools

import numpy as np

TASKS = ("extract_single", "extract_multi", "reasoning", "ocr_full", "ocr_needle", "short")
VERSION = "1.0.0"
SPLIT = "train"
WRITER_OPTIONS = "group_size:1,uncompressed"


@functools.cache
def features():
  """The row's TFDS FeaturesDict (tfds is imported here: configs import this module too)."""
  import tensorflow_datasets as tfds
  t = tfds.features.Tensor
  return tfds.features.FeaturesDict({
      "input_ids": t(shape=(None,), dtype=np.int32),
      "loss_mask": t(shape=(None,), dtype=np.uint8),
      "segment_ids": t(shape=(None,), dtype=np.int32),
      "images": t(shape=(None,), dtype=np.object_),
      "image_grid_thw": t(shape=(None, 3), dtype=np.int32),
      "image_size_hw": t(shape=(None, 2), dtype=np.int32),
      "image_min_pixels": t(shape=(), dtype=np.int64),
      "image_max_pixels": t(shape=(), dtype=np.int64),
      "segment_task": t(shape=(None,), dtype=np.str_),
      "segment_instance": t(shape=(None,), dtype=np.str_),
      "segment_doc": t(shape=(None,), dtype=np.str_),
      "segment_num_images": t(shape=(None,), dtype=np.int32),
  })


@functools.cache
def _serializer():
  from tensorflow_datasets.core import example_serializer
  return example_serializer.ExampleSerializer(features().get_serialized_info())


_STRING_FIELDS = ("segment_task", "segment_instance", "segment_doc")


def dataset_name(shard_set: str) -> str:
  """TFDS dataset name of a shard set (TFDS names are snake_case identifiers)."""
  name = f"mmprolong_{shard_set}"
  if not name.isidentifier() or name.lower() != name:
    raise ValueError(f"shard set name must be lower snake_case, got {shard_set!r}")
  return name


def shard_dir(out_dir, shard_set: str) -> str:
  return f"{out_dir}/{dataset_name(shard_set)}/{VERSION}"


def shard_glob(out_dir, shard_set: str) -> str:
  """The glob a loader config uses for this shard set."""
  return f"{shard_dir(out_dir, shard_set)}/{dataset_name(shard_set)}-{SPLIT}.array_record-*"


def shard_path(out_dir, shard_set: str, index: int, count: int) -> str:
  return (f"{shard_dir(out_dir, shard_set)}/{dataset_name(shard_set)}-{SPLIT}.array_record-"
          f"{index:05d}-of-{count:05d}")


def check_row(row: dict) -> None:
  """Structural consistency of a row; raises ValueError naming the first violation."""
  length = len(row["input_ids"])
  for key in ("loss_mask", "segment_ids"):
    if len(row[key]) != length:
      raise ValueError(f"{key} has {len(row[key])} entries for {length} tokens")
  num_segments = len(row["segment_task"])
  seg = np.asarray(row["segment_ids"])
  steps = np.diff(seg)
  if length == 0 or seg[0] != 1 or np.any((steps < 0) | (steps > 1)) or seg[-1] != num_segments:
    raise ValueError(f"segment_ids must run 1..{num_segments} in order without gaps")
  for key in ("segment_instance", "segment_doc", "segment_num_images"):
    if len(row[key]) != num_segments:
      raise ValueError(f"{key} has {len(row[key])} entries for {num_segments} segments")
  num_images = len(row["images"])
  if int(np.sum(row["segment_num_images"])) != num_images:
    raise ValueError(f"segment_num_images sums to {int(np.sum(row['segment_num_images']))}, "
                     f"row has {num_images} images")
  for key, width in (("image_grid_thw", 3), ("image_size_hw", 2)):
    if np.shape(row[key]) != (num_images, width):
      raise ValueError(f"{key} has shape {np.shape(row[key])}, expected ({num_images}, {width})")
  for task in row["segment_task"]:
    task = task.decode() if isinstance(task, bytes) else task
    if task not in TASKS:
      raise ValueError(f"unknown task {task!r}; known: {TASKS}")


def encode_row(row: dict) -> bytes:
  """Row dict (fields above; strings as str) -> serialized record. Deterministic bytes."""
  check_row(row)
  example = _serializer().get_tf_example(features().encode_example(row))
  # deterministic=True fixes the order of the feature map, so equal rows give equal bytes.
  return example.SerializeToString(deterministic=True)


def decode_row(record: bytes) -> dict:
  """Serialized record -> row dict of numpy arrays (strings decoded to str). Validated."""
  row = dict(features().deserialize_example_np(record))
  missing = set(features().keys()) - set(row)
  if missing:
    raise ValueError(f"record lacks fields {sorted(missing)}")
  for key in _STRING_FIELDS:
    row[key] = [s.decode() for s in row[key]]
  row["images"] = list(row["images"])
  check_row(row)
  return row
