"""Shard building: contents, drop rules, determinism, resume after a crash, TFDS metadata."""
import glob
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from transformers import AutoTokenizer

from data_tools import build_shards
from data_tools import schema as instance_schema
from mmprolong_jax.data import schema
from mmprolong_jax.data.chat import ChatTokenizer
from mmprolong_jax.data.image_processing import preprocess_image
from tests.data.conftest import MAX_LEN, MAX_PIXELS, MIN_PIXELS, build_opts

SETS = ("extract_single", "reasoning", "short")


def _records(path):
  reader = array_record_module.ArrayRecordReader(str(path))
  out = [reader.read([i])[0] for i in range(reader.num_records())]
  reader.close()
  return out


def _tree_digest(root):
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_stats_and_drop_rules(built, model_cfg):
  _, stats = built
  assert set(stats) == set(SETS)
  es = stats["extract_single"]
  assert es["dropped"] == {"too_long": 1}
  assert es["instances_in"] == 15 and es["instances_kept"] == 14
  for s in stats.values():
    assert s["max_row_tokens"] <= MAX_LEN and 0.5 < s["packing_efficiency"] <= 1
    assert s["rows"] >= s["lower_bound_rows"]
    assert sum(f["records"] for f in s["shards"]) == s["rows"]
    assert s["token_ids"]["<|image_pad|>"] == model_cfg.image_token_id


def test_records_hold_the_instances(built, work_dir, tokenizer_dir):
  """Every kept instance appears exactly once, tokenized as chat.py does, with its page bytes."""
  out, stats = built
  from data_tools.shard_plan import find_instances
  instances = {rec["id"]: rec for _, rec in find_instances([str(work_dir)])}
  chat = ChatTokenizer(AutoTokenizer.from_pretrained(tokenizer_dir))
  seen = []
  for name in SETS:
    for path in sorted(glob.glob(schema.shard_glob(out, name))):
      for record in _records(path):
        row = schema.decode_row(record)
        img = 0
        for k, inst_id in enumerate(row["segment_instance"]):
          inst = instances[inst_id]
          seen.append(inst_id)
          sel = row["segment_ids"] == k + 1
          images = [work_dir / p for p in inst["images"]]
          grids = [tuple(preprocess_image(PIL.Image.open(p), min_pixels=MIN_PIXELS,
                                          max_pixels=MAX_PIXELS)[1]) for p in images]
          ids, mask, refs = chat.encode(inst["messages"], grids)
          np.testing.assert_array_equal(row["input_ids"][sel], ids)
          np.testing.assert_array_equal(row["loss_mask"][sel], mask)
          assert row["segment_task"][k] == inst["task"] == name
          n = row["segment_num_images"][k]
          assert [bytes(b) for b in row["images"][img:img + n]] == [images[r].read_bytes() for r in refs]
          np.testing.assert_array_equal(row["image_grid_thw"][img:img + n], [grids[r] for r in refs])
          img += n
  kept = sum(s["instances_kept"] for s in stats.values())
  assert len(seen) == len(set(seen)) == kept


def test_tfds_reads_the_same_files(built):
  out, _ = built
  for name in SETS:
    ds = tfds.data_source(schema.dataset_name(name), split="train", data_dir=str(out), download=False)
    raw = [r for p in sorted(glob.glob(schema.shard_glob(out, name))) for r in _records(p)]
    assert len(ds) == len(raw)
    for i in (0, len(ds) - 1):
      want = schema.decode_row(raw[i])
      got = ds[i]
      np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
      np.testing.assert_array_equal(got["image_grid_thw"], want["image_grid_thw"])
      assert list(got["images"]) == want["images"]
  assert "tensorflow" not in sys.modules  # TFDS reads these files without TensorFlow


def test_deterministic_resumable_and_parallel(work_dir, tokenizer_dir, tmp_path, monkeypatch, built):
  clean, _ = built
  opts = build_opts()
  # Crash while writing the second shard of the first set, then rerun.
  real_write, calls = build_shards._write_shard, []

  def crashing(path, rows, o):
    calls.append(path)
    if len(calls) == 2:
      raise KeyboardInterrupt("simulated kill")
    return real_write(path, rows, o)

  monkeypatch.setattr(build_shards, "_write_shard", crashing)
  with pytest.raises(KeyboardInterrupt):
    build_shards.build([str(work_dir)], str(tmp_path), tokenizer_dir, opts)
  leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
  assert not any(".tmp" in n for n in leftovers)
  assert sum("array_record" in n for n in leftovers) == 1
  monkeypatch.setattr(build_shards, "_write_shard", real_write)
  build_shards.build([str(work_dir)], str(tmp_path), tokenizer_dir, opts)
  assert _tree_digest(tmp_path) == _tree_digest(clean)
  # Shards written by parallel workers are the same bytes.
  build_shards.build([str(work_dir)], str(tmp_path / "parallel"), tokenizer_dir, opts, workers=2)
  assert _tree_digest(tmp_path / "parallel") == _tree_digest(clean)

  # Other options on the same folder are refused rather than mixed in.
  with pytest.raises(RuntimeError, match="other inputs or options"):
    build_shards.build([str(work_dir)], str(tmp_path), tokenizer_dir, build_opts(seed=1))


def test_unpacked_baseline(work_dir, tokenizer_dir, tmp_path):
  stats = build_shards.build([str(work_dir)], str(tmp_path), tokenizer_dir,
                             build_opts(packing="none"))
  for s in stats.values():
    assert s["rows"] == s["instances_kept"] and s["segments_per_row_max"] == 1


def test_groups_pack_tasks_together(work_dir, tokenizer_dir, tmp_path):
  stats = build_shards.build([str(work_dir)], str(tmp_path), tokenizer_dir, build_opts(),
                             groups=["long_short=extract_single,short"])
  assert set(stats) == {"long_short", "reasoning"}
  assert stats["long_short"]["kept_per_task"] == {"extract_single": 14, "short": 10}
  with pytest.raises(ValueError, match="bad --group"):
    build_shards.shard_sets({"short"}, ["x=nope"])


def test_invalid_instance_stops_the_build_with_its_location(work_dir, tokenizer_dir, tmp_path):
  work = tmp_path / "work"
  shutil.copytree(work_dir, work)
  lines = (work / "instances" / "part-000.jsonl").read_text().splitlines()
  bad = json.loads(lines[4])
  bad["messages"] = bad["messages"][:-1]  # no assistant turn
  lines[4] = json.dumps(bad)
  (work / "instances" / "part-000.jsonl").write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=r"part-000.jsonl:5\).*turns must be"):
    build_shards.build([str(work)], str(tmp_path / "out"), tokenizer_dir, build_opts())


def test_task_names_agree_with_data_tools():
  assert schema.TASKS == instance_schema.TASKS
