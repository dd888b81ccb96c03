"""Grain loader: instance -> shard -> batch round trip, mixture, resume, errors, multi-host."""
import collections
import glob
import json
import shutil

import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
from transformers import AutoTokenizer

from mmprolong_jax.data import loader
from mmprolong_jax.data import mixture, schema
from mmprolong_jax.data.sources import rows_per_host, steps_from_budget
from mmprolong_jax.data.chat import ChatTokenizer
from mmprolong_jax.data.featurize import BatchFeaturizer
from mmprolong_jax.data.image_processing import preprocess_image
from mmprolong_jax.data.shard_reader import ShardRecordError, ShardSource
from mmprolong_jax.model.position_ids import mrope_position_ids
from mmprolong_jax.model.vision_layout import VisionGeometry, pack_vision_rows
from tests.data.conftest import MAX_LEN, MAX_PIXELS, MIN_PIXELS

SETS = ("extract_single", "reasoning", "short")
# Rows hold <= MAX_PATCHES real patches in images of <= 48 patches (one window each).
GEOM = VisionGeometry(num_patches=2048, image_rows=16, image_row_len=64)


def data_cfg(out, mixture_weights, rows=2, **kw):
  cfg = loader.default_config()
  cfg.shards = {name: schema.shard_glob(out, name) for name in SETS}
  cfg.mixture = mixture_weights
  cfg.update({"max_len": MAX_LEN, "num_patches": GEOM.num_patches, "image_rows": GEOM.image_rows,
              "image_row_len": GEOM.image_row_len, "global_batch_tokens": rows * MAX_LEN,
              "worker_count": 0, "image_min_pixels": MIN_PIXELS, "image_max_pixels": MAX_PIXELS, **kw})
  return cfg


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _expected_row(segments, chat, work_dir, model_cfg, vision_shards, patch_dtype):
  """What the batch row must hold, computed from the instances alone."""
  ids, seg, targets, loss, task, grids, patches = [], [], [], [], [], [], []
  for k, inst in enumerate(segments, start=1):
    paths = [work_dir / p for p in inst["images"]]
    processed = [preprocess_image(PIL.Image.open(p), min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
                 for p in paths]
    g = [tuple(int(x) for x in grid) for _, grid in processed]
    s_ids, s_mask, refs = chat.encode(inst["messages"], g)
    ids += list(s_ids)
    seg += [k] * len(s_ids)
    targets += list(s_ids[1:]) + [0]
    loss += list(s_mask[1:]) + [0]
    task += [schema.TASKS.index(inst["task"])] * len(s_ids)
    grids += [g[r] for r in refs]
    patches += [processed[r][0] for r in refs]
  pad = MAX_LEN - len(ids)
  row = {"input_ids": ids + [0] * pad, "segment_ids": seg + [0] * pad,
         "targets": targets + [0] * pad, "loss_mask": loss + [0] * pad, "task_id": task + [-1] * pad}
  row = {k: np.asarray(v, np.int32)[None] for k, v in row.items()}
  row["positions"] = np.asarray(mrope_position_ids(
      row["input_ids"], np.asarray(grids, np.int32).reshape(-1, 3),
      segment_ids_BxT=row["segment_ids"], image_token_id=model_cfg.image_token_id))
  vis, layout = pack_vision_rows([np.concatenate(patches)], [grids], GEOM, model_cfg.vision,
                                 vision_shards, dtype=jnp.dtype(patch_dtype))
  return {**row, "patches": vis, **layout}


@pytest.mark.parametrize("vision_shards,patch_dtype", [(1, "float32"), (2, "bfloat16")])
def test_round_trip_instance_to_batch(built, work_dir, tokenizer_dir, model_cfg, vision_shards,
                                      patch_dtype):
  out, _ = built
  from data_tools.shard_plan import find_instances
  instances = {rec["id"]: rec for _, rec in find_instances([str(work_dir)])}
  records = {}
  for name in SETS:
    src = ShardSource(name, schema.shard_glob(out, name))
    for i in range(len(src)):
      row = schema.decode_row(src[i].data)
      records[tuple(row["input_ids"])] = row["segment_instance"]
  chat = ChatTokenizer(AutoTokenizer.from_pretrained(tokenizer_dir))
  cfg = data_cfg(out, {"extract_single": 1, "reasoning": 1, "short": 1}, patch_dtype=patch_dtype)
  it = loader.make_loader(cfg, model_cfg, vision_shards=vision_shards)
  for batch in take(it, 3):
    assert batch["positions"].shape == (3, 2, MAX_LEN)
    assert batch["patches"].shape == (2, GEOM.num_patches, 1176)
    assert batch["image_gather"].shape == (2, vision_shards, 16 // vision_shards, 64)
    for b in range(2):
      length = np.count_nonzero(batch["segment_ids"][b])
      segments = [instances[i] for i in records[tuple(batch["input_ids"][b, :length])]]
      want = _expected_row(segments, chat, work_dir, model_cfg, vision_shards, patch_dtype)
      for key, value in want.items():
        got = batch[key][:, b:b + 1] if key == "positions" else batch[key][b:b + 1]
        np.testing.assert_array_equal(got, value, err_msg=key)
        assert got.dtype == value.dtype, key


def test_mixture_proportions(built):
  out, _ = built
  weights = {"extract_single": 0.5, "reasoning": 0.3, "short": 0.2}
  shards = {name: schema.shard_glob(out, name) for name in SETS}
  n = 600
  for p in range(2):
    ds = mixture.mixed_records(shards, weights, seed=3, process_index=p, process_count=2)
    counts = collections.Counter(ds[i].shard_set for i in range(n))
    for name, w in weights.items():
      sigma = np.sqrt(n * w * (1 - w))
      assert abs(counts[name] - n * w) < 3 * sigma, (name, counts)


def test_loader_batches_follow_mixture(built, model_cfg):
  out, _ = built
  it = loader.make_loader(data_cfg(out, {"extract_single": 0, "reasoning": 3, "short": 1}), model_cfg)
  first = collections.Counter(int(t) for b in take(it, 8) for t in b["task_id"][:, 0])
  assert set(first) == {schema.TASKS.index("reasoning"), schema.TASKS.index("short")}
  assert first[schema.TASKS.index("reasoning")] > first[schema.TASKS.index("short")]


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_resume(built, model_cfg, workers):
  out, _ = built
  cfg = data_cfg(out, {"extract_single": 0.4, "reasoning": 0.4, "short": 0.2}, worker_count=workers)
  it = loader.make_loader(cfg, model_cfg)
  take(it, 3)
  state = json.loads(json.dumps(it.get_state()))  # checkpoints store it as JSON
  reference = take(it, 3)
  resumed = loader.make_loader(cfg, model_cfg)
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 3), reference)
  for i in (it, resumed):
    if hasattr(i, "close"):
      i.close()


def test_hosts_split_the_global_batch(built, model_cfg):
  """Two hosts together produce exactly the single-host global batches, without overlap."""
  out, _ = built
  weights = {"extract_single": 0.5, "reasoning": 0.3, "short": 0.2}
  single = take(loader.make_loader(data_cfg(out, weights, rows=4), model_cfg), 3)
  hosts = [take(loader.make_loader(data_cfg(out, weights, rows=4), model_cfg, process_index=p,
                                   process_count=2), 3) for p in range(2)]
  for k, batch in enumerate(single):
    for p in range(2):
      np.testing.assert_array_equal(hosts[p][k]["input_ids"], batch["input_ids"][p::2])
      np.testing.assert_array_equal(hosts[p][k]["patches"], batch["patches"][p::2])
      np.testing.assert_array_equal(hosts[p][k]["positions"], batch["positions"][:, p::2])


def test_hosts_cover_an_epoch_disjointly(built):
  out, _ = built
  shards = {"extract_single": schema.shard_glob(out, "extract_single")}
  size = len(ShardSource("extract_single", shards["extract_single"]))
  seen = []
  for p in range(2):
    ds = mixture.mixed_records(shards, {"extract_single": 1}, seed=5, process_index=p,
                               process_count=2, window=size)
    seen.append({(r.shard, r.index) for r in (ds[i] for i in range((size + 1 - p) // 2))})
  assert not seen[0] & seen[1]
  assert len(seen[0] | seen[1]) == size


def test_corrupted_record_names_shard_and_index(built, model_cfg, tmp_path):
  out, _ = built
  name = "reasoning"
  for path in glob.glob(schema.shard_glob(out, name)):
    shutil.copy(path, tmp_path)
  pattern = str(tmp_path / "*.array_record-*")
  cfg = data_cfg(tmp_path, {name: 1}, rows=1)
  cfg.shards = {name: pattern}
  # Damage one page of the first record this loader will read.
  first = mixture.mixed_records(cfg.shards, cfg.mixture, seed=cfg.seed, process_index=0,
                                process_count=1)[0]
  image = schema.decode_row(first.data)["images"][0]
  data = bytearray(open(first.shard, "rb").read())
  at = data.find(image)
  assert at > 0
  data[at + len(image) // 2] ^= 0xFF
  open(first.shard, "wb").write(bytes(data))

  it = loader.make_loader(cfg, model_cfg)
  where = f"shard {first.shard} record {first.index}: "
  with pytest.raises(ShardRecordError, match=where + ".*hash mismatch"):
    take(it, 1)


def test_config_mismatch_is_reported_with_location(built, model_cfg):
  out, _ = built
  it = loader.make_loader(data_cfg(out, {"short": 1}, image_max_pixels=MAX_PIXELS * 2), model_cfg)
  with pytest.raises(ShardRecordError, match=r"mmprolong_short-train.*record \d+: .*max_pixels"):
    take(it, 1)


def test_split_segments_are_refused(model_cfg):
  feat = BatchFeaturizer(max_len=MAX_LEN, geometry=GEOM, min_pixels=MIN_PIXELS,
                         max_pixels=MAX_PIXELS, patch_dtype="float32", model_cfg=model_cfg)
  row = {"input_ids": np.ones(6, np.int32), "image_min_pixels": MIN_PIXELS,
         "image_max_pixels": MAX_PIXELS, "image_grid_thw": np.zeros((0, 3), np.int32)}
  feat._check(dict(row, segment_ids=np.array([1, 1, 2, 2, 3, 3])))   # contiguous: fine
  for bad in ([1, 1, 2, 1, 2, 2], [1, 1, 0, 2, 2, 2]):
    with pytest.raises(ValueError, match="contiguous run"):
      feat._check(dict(row, segment_ids=np.array(bad)))


def test_budget_and_batch_arithmetic():
  assert steps_from_budget(5 * 2**30, 4 * 2**20) == 1280  # the recipe: 5B tokens, 4M batches
  cfg = loader.default_config()
  assert rows_per_host(cfg, 8) == 4
  with pytest.raises(ValueError, match="multiple"):
    rows_per_host(cfg, 3)


def _host_records(args):
  """Runs in a separate process: the (shard, index) records host `p` of 2 reads in one epoch."""
  pattern, size, p = args
  from mmprolong_jax.data import mixture as mixture_lib
  ds = mixture_lib.mixed_records({"extract_single": pattern}, {"extract_single": 1}, seed=5,
                                 process_index=p, process_count=2, window=size)
  return sorted((r.shard, r.index) for r in (ds[i] for i in range((size + 1 - p) // 2)))


def test_two_host_processes_cover_an_epoch_disjointly(built):
  import multiprocessing
  out, _ = built
  pattern = schema.shard_glob(out, "extract_single")
  size = len(ShardSource("extract_single", pattern))
  with multiprocessing.get_context("spawn").Pool(2) as pool:
    seen = [set(map(tuple, r)) for r in pool.map(_host_records, [(pattern, size, p) for p in (0, 1)])]
  assert not seen[0] & seen[1]
  assert len(seen[0] | seen[1]) == size
