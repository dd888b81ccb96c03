"""Assembled instances -> packed ArrayRecord training shards, one shard set per task.

  python -m data_tools.build_shards --work WORK [--work WORK2 ...] --out SHARDS \\
      --tokenizer_dir QWEN_TOKENIZER [--max_len 131072] [--packing best_fit|none] [--seed 0]

Reads every `<work>/instances/*.jsonl` (data_tools/schema.py; image paths relative to <work>),
checks each instance with `validate_instance`, tokenizes it in the Qwen2.5-VL chat format
(mmprolong_jax.data.chat) with each page expanded to its resized grid's image tokens, and packs
instances into rows of at most `--max_len` tokens (best-fit decreasing; `--packing none` keeps one
instance per row, the unpacked baseline). Each task becomes its own shard set, so mixtures are chosen at training time;
`--group NAME=TASK,TASK` packs several tasks into one set instead (short instances then fill the
gaps that long ones leave). Record and file layout: mmprolong_jax/data/schema.py.

Rule: an instance longer than max_len tokens (or max_patches patches) is dropped, never
truncated: cutting a VQA instance loses its question and answer at the end, cutting an OCR one
leaves targets for pages that are gone. Drops are counted in stats.json. An invalid instance or an
unreadable image stops the build with its file and line.

Deterministic: same instances, tokenizer, options and seed give byte-identical shards. Resumable:
the plan is saved first, each shard file appears atomically when complete, and a rerun writes
only missing shards (after checking that instance files, tokenizer and options still match the
plan; image files are not hashed, a changed page shows up only if its token count changes).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import logging
import math
import multiprocessing
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module

from data_tools import io_utils
from data_tools.shard_plan import (InstanceRef, Options, Segment, find_instances, fingerprint,
                                   measure, plan_rows, tokenize)
from mmprolong_jax.data import packing, schema
from mmprolong_jax.data.chat import ChatTokenizer
from mmprolong_jax.data.image_processing import CHECKPOINT_MAX_PIXELS, MIN_PIXELS

log = logging.getLogger("data_tools.build_shards")

_chat: ChatTokenizer | None = None  # per process, set by _init


def _init(tokenizer_dir: str) -> None:
  global _chat
  from transformers import AutoTokenizer
  _chat = ChatTokenizer(AutoTokenizer.from_pretrained(tokenizer_dir))


def _measure_chunk(items, opts: Options):
  return [measure(ref, rec, _chat, opts) for ref, rec in items]


def assemble_row(segments: list[Segment], opts: Options) -> dict:
  """Segments laid end to end -> a schema row."""
  return {
      "input_ids": np.concatenate([s.input_ids for s in segments]),
      "loss_mask": np.concatenate([s.loss_mask for s in segments]),
      "segment_ids": np.concatenate([np.full(len(s.input_ids), k + 1, np.int32)
                                     for k, s in enumerate(segments)]),
      "images": [b for s in segments for b in s.images],
      "image_grid_thw": np.array([g for s in segments for g in s.grids], np.int32).reshape(-1, 3),
      "image_size_hw": np.array([z for s in segments for z in s.sizes], np.int32).reshape(-1, 2),
      "image_min_pixels": opts.min_pixels,
      "image_max_pixels": opts.max_pixels,
      "segment_task": [s.task for s in segments],
      "segment_instance": [s.instance for s in segments],
      "segment_doc": [s.doc for s in segments],
      "segment_num_images": np.array([len(s.images) for s in segments], np.int32),
  }


def _write_shard(path: str, rows: list[list[tuple[InstanceRef, dict, int]]], opts: Options) -> str:
  """Writes one shard to a temporary name and renames it into place when complete."""
  tmp = f"{Path(path).parent}/.{Path(path).name}.tmp{os.getpid()}"
  writer = array_record_module.ArrayRecordWriter(tmp, schema.WRITER_OPTIONS)
  try:
    for row in rows:
      segments = []
      for ref, record, measured in row:
        seg = tokenize(ref, record, _chat, opts, read_images=True)
        if len(seg.input_ids) != measured:
          raise RuntimeError(f"instance {seg.instance!r} tokenizes to {len(seg.input_ids)} tokens, "
                             f"the plan measured {measured}: did its inputs change mid-build?")
        segments.append(seg)
      writer.write(schema.encode_row(assemble_row(segments, opts)))
    writer.close()
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
  return path


def _pool(workers: int, tokenizer_dir: str):
  _init(tokenizer_dir)  # the main process tokenizes too when there is no pool
  if workers <= 1:
    return None
  return concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
      initargs=(tokenizer_dir,))


def _run(pool, fn, jobs):
  """fn(*job) for every job, in order, in the pool when there is one."""
  if pool is None:
    return [fn(*job) for job in jobs]
  return [f.result() for f in [pool.submit(fn, *job) for job in jobs]]


def _plan(set_name, tasks, items, fp, opts, pool) -> dict:
  chunk = 256
  chunks = [(items[i:i + chunk], opts) for i in range(0, len(items), chunk)]
  measures = np.array([m for part in _run(pool, _measure_chunk, chunks) for m in part],
                      np.int64).reshape(-1, 3)
  rows, dropped = plan_rows(measures, opts, set_name)
  return {"fingerprint": fp, "set": set_name, "tasks": tasks, "options": dataclasses.asdict(opts),
          "instances": [[ref.file, ref.line] for ref, _ in items], "measures": measures.tolist(),
          "rows": rows, "dropped": dropped}


def _stats(plan: dict, items, paths: list[str], opts: Options, chat: ChatTokenizer) -> dict:
  measures = np.array(plan["measures"], np.int64).reshape(-1, 3)
  kept = np.array([i for row in plan["rows"] for i in row], np.int64)
  tokens, patches, targets = measures[kept].T if len(kept) else np.zeros((3, 0), np.int64)
  row_tokens = [int(measures[row, 0].sum()) for row in plan["rows"]]
  row_patches = [int(measures[row, 1].sum()) for row in plan["rows"]]
  per_task = defaultdict(int)
  for i in kept:
    per_task[items[i][1]["task"]] += 1
  return {
      "set": plan["set"], "tasks": plan["tasks"], "options": plan["options"],
      "instances_in": len(items), "instances_kept": int(len(kept)), "dropped": plan["dropped"],
      "kept_per_task": dict(sorted(per_task.items())),
      "rows": len(plan["rows"]), "tokens": int(tokens.sum()), "target_tokens": int(targets.sum()),
      "patches": int(patches.sum()),
      "packing_efficiency": packing.efficiency(tokens, len(plan["rows"]), opts.max_len),
      "lower_bound_rows": packing.lower_bound_rows(tokens, opts.max_len) if len(kept) else 0,
      "segments_per_row_max": max((len(r) for r in plan["rows"]), default=0),
      "max_row_tokens": max(row_tokens, default=0), "max_row_patches": max(row_patches, default=0),
      "instance_tokens": {"min": int(tokens.min()), "median": float(np.median(tokens)),
                          "mean": float(tokens.mean()), "max": int(tokens.max())} if len(kept) else {},
      "token_ids": chat.ids,
      "shards": [{"file": Path(p).name, "records": n, "bytes": Path(p).stat().st_size}
                 for p, n in zip(paths, _shard_counts(len(plan["rows"]), opts.rows_per_shard))],
  }


def _shard_counts(num_rows: int, per_shard: int) -> list[int]:
  count = max(1, math.ceil(num_rows / per_shard))
  return [len(range(k * per_shard, min(num_rows, (k + 1) * per_shard))) for k in range(count)]


def _write_metadata(set_dir: str, set_name: str, stats: dict) -> None:
  split = tfds.core.SplitInfo(name=schema.SPLIT, shard_lengths=[s["records"] for s in stats["shards"]],
                              num_bytes=sum(s["bytes"] for s in stats["shards"]))
  tfds.folder_dataset.write_metadata(
      data_dir=set_dir, features=schema.features(), split_infos=[split], check_data=False,
      description=f"MMProLong packed rows, shard set {set_name!r} (tasks {stats['tasks']}); "
                  "fields: mmprolong_jax/data/schema.py")


def build_set(out: str, set_name: str, tasks: list[str], items, tokenizer_dir: str, opts: Options,
              pool) -> dict:
  """Plans (or reloads the plan of) one shard set, writes its missing shards, then stats/metadata."""
  set_dir = schema.shard_dir(out, set_name)
  Path(set_dir).mkdir(parents=True, exist_ok=True)
  fp = fingerprint(set_name, tasks, sorted({ref.file for ref, _ in items}), tokenizer_dir, opts)
  plan_path = Path(set_dir) / "plan.json"
  if plan_path.exists():
    plan = io_utils.read_json(plan_path)
    if plan["fingerprint"] != fp:
      raise RuntimeError(f"{set_dir} holds a build from other inputs or options; remove it or "
                         "choose another --out")
    log.info("%s: resuming with the saved plan", set_name)
  else:
    plan = _plan(set_name, tasks, items, fp, opts, pool)
    io_utils.write_json_atomic(plan_path, plan)

  rows, measures = plan["rows"], plan["measures"]
  counts = _shard_counts(len(rows), opts.rows_per_shard)
  paths = [schema.shard_path(out, set_name, k, len(counts)) for k in range(len(counts))]
  jobs = []
  for k, path in enumerate(paths):
    if Path(path).exists():
      continue
    shard_rows = rows[k * opts.rows_per_shard:(k + 1) * opts.rows_per_shard]
    jobs.append((path, [[(*items[i], measures[i][0]) for i in row] for row in shard_rows], opts))
  log.info("%s: %d rows in %d shards, %d to write", set_name, len(rows), len(paths), len(jobs))
  _run(pool, _write_shard, jobs)

  stats = _stats(plan, items, paths, opts, _chat)
  io_utils.write_json_atomic(Path(set_dir) / "stats.json", stats)
  _write_metadata(set_dir, set_name, stats)
  return stats


def shard_sets(tasks_present: set[str], groups: list[str]) -> dict[str, list[str]]:
  """{set name: tasks}: each task alone unless a --group NAME=T1,T2 claims it."""
  sets, claimed = {}, set()
  for spec in groups:
    name, _, members = spec.partition("=")
    members = [t.strip() for t in members.split(",") if t.strip()]
    if not name or not members or set(members) - set(schema.TASKS):
      raise ValueError(f"bad --group {spec!r}: expected NAME=TASK[,TASK...] with tasks from "
                       f"{schema.TASKS}")
    if claimed & set(members):
      raise ValueError(f"tasks {sorted(claimed & set(members))} are in two groups")
    claimed |= set(members)
    sets[name] = members
  for task in sorted(tasks_present - claimed):
    sets[task] = [task]
  return sets


def build(work_dirs: list[str], out: str, tokenizer_dir: str, opts: Options, groups=(),
          workers: int = 1) -> dict[str, dict]:
  found = find_instances(work_dirs)
  sets = shard_sets({rec.get("task") for _, rec in found}, list(groups))
  pool = _pool(workers, tokenizer_dir)
  try:
    results = {}
    for name, tasks in sets.items():
      items = [(ref, rec) for ref, rec in found if rec.get("task") in tasks]
      if items:
        results[name] = build_set(out, name, tasks, items, tokenizer_dir, opts, pool)
    return results
  finally:
    if pool is not None:
      pool.shutdown()


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--work", action="append", required=True,
                 help="data_tools output folder holding instances/*.jsonl (repeatable)")
  p.add_argument("--out", required=True, help="shard output folder")
  p.add_argument("--tokenizer_dir", required=True, help="local Qwen2.5-VL tokenizer folder")
  p.add_argument("--max_len", type=int, default=131072)
  p.add_argument("--max_patches", type=int, default=None,
                 help="patch budget per row (default 4 * max_len: never binding)")
  p.add_argument("--packing", choices=("best_fit", "none"), default="best_fit")
  p.add_argument("--rows_per_shard", type=int, default=64)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--image_min_pixels", type=int, default=MIN_PIXELS)
  p.add_argument("--image_max_pixels", type=int, default=CHECKPOINT_MAX_PIXELS)
  p.add_argument("--group", action="append", default=[], help="NAME=TASK,TASK: pack tasks together")
  p.add_argument("--workers", type=int, default=1)
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  opts = Options(max_len=args.max_len, max_patches=args.max_patches or 4 * args.max_len,
                 packing=args.packing, rows_per_shard=args.rows_per_shard, seed=args.seed,
                 min_pixels=args.image_min_pixels, max_pixels=args.image_max_pixels)
  results = build(args.work, args.out, args.tokenizer_dir, opts, args.group, args.workers)
  for name, s in results.items():
    log.info("%s: %d/%d instances kept (dropped %s), %d rows, efficiency %.3f, glob %s", name,
             s["instances_kept"], s["instances_in"], s["dropped"], s["rows"],
             s["packing_efficiency"], schema.shard_glob(args.out, name))


if __name__ == "__main__":
  main()
