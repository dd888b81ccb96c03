"""Streaming reads and writes of Hugging Face safetensors folders, one tensor at a time."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from mmprolong_jax.convert.mapping import TensorSpec, canonical_hf_name

_FLOAT_DTYPES = ("bfloat16", "float16", "float32")


class CheckpointError(ValueError):
  """A malformed checkpoint; the message names the tensor."""


def safetensor_files(hf_dir: Path) -> list[Path]:
  index = hf_dir / "model.safetensors.index.json"
  if index.exists():
    weight_map = json.loads(index.read_text())["weight_map"]
    files = sorted({hf_dir / f for f in weight_map.values()})
  else:
    files = sorted(hf_dir.glob("*.safetensors"))
  if not files:
    raise FileNotFoundError(f"no *.safetensors (or index) in {hf_dir}")
  for f in files:
    if not f.exists():
      raise FileNotFoundError(f"{f.name} is listed in the index but missing from {hf_dir}")
  return files


def iter_hf_tensors(hf_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (canonical HF name, numpy array) in file order; bf16 stays bf16 (ml_dtypes)."""
  from safetensors import safe_open
  for f in safetensor_files(hf_dir):
    with safe_open(str(f), framework="flax") as fh:
      for name in fh.keys():
        yield canonical_hf_name(name), np.asarray(fh.get_tensor(name))


def check_tensor(spec: TensorSpec, x: np.ndarray):
  if tuple(x.shape) != spec.hf_shape:
    raise CheckpointError(f"tensor {spec.hf_name} has shape {tuple(x.shape)}, expected {spec.hf_shape}")
  if x.dtype.name not in _FLOAT_DTYPES:
    raise CheckpointError(f"tensor {spec.hf_name} has dtype {x.dtype.name}, expected one of {_FLOAT_DTYPES}")


def write_safetensors(out_dir: Path, tensors: Iterator[tuple[str, np.ndarray]],
                      max_shard_bytes: int = 5 * 2**30) -> int:
  """Writes shards of at most max_shard_bytes plus model.safetensors.index.json; returns #shards.

  Only one shard's tensors are held at a time.
  """
  from safetensors.numpy import save_file
  out_dir.mkdir(parents=True, exist_ok=True)
  weight_map, total = {}, 0
  shard: dict[str, np.ndarray] = {}
  size = 0
  tmp_names = []

  def flush():
    nonlocal shard, size
    if shard:
      name = f"model-{len(tmp_names) + 1:05d}.safetensors.tmp"
      save_file(shard, str(out_dir / name), metadata={"format": "pt"})
      tmp_names.append((name, list(shard)))
      shard, size = {}, 0

  for name, x in tensors:
    if size + x.nbytes > max_shard_bytes:
      flush()
    shard[name] = x
    size += x.nbytes
    total += x.nbytes
  flush()
  n = len(tmp_names)
  for i, (tmp, names) in enumerate(tmp_names, start=1):
    final = f"model-{i:05d}-of-{n:05d}.safetensors"
    (out_dir / tmp).rename(out_dir / final)
    weight_map.update({k: final for k in names})
  index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
  (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
  return n
