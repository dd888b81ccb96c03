"""Plumbing shared by the stages: the output layout, done-markers, skip records, seeded RNGs.

Output folder (`--out`):
  docs/<doc_id>/render.json      render record (the page images are in docs/<doc_id>/pages/)
  docs/<doc_id>/layout.json      layout blocks per page
  docs/<doc_id>/segment.json     sampled page segments
  docs/<doc_id>/teach.json       accepted QA pairs and rejected teacher outputs
  docs/<doc_id>/assemble.jsonl   this document's training instances
  skips/<stage>/<doc_id>.json    why a document went no further at <stage>
  instances/*.jsonl              the merged training instances (see schema.py)

Every record carries a `key`: a hash of the stage's parameters and of the upstream record's key.
A document counts as done for a stage when its record (or skip record) has the expected key, so a
rerun skips finished work, redoes work whose inputs or parameters changed, and never duplicates.
Records are written atomically, so a killed run leaves no half-written record. Skips count as
done too; delete skips/<stage>/ to retry documents that failed for a passing reason.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import os
import random
import types
from pathlib import Path
from typing import Any, Callable, Iterable

from data_tools import io_utils, workers

log = logging.getLogger("data_tools")

def doc_dir(out: Path, doc_id: str) -> Path:
  return Path(out) / "docs" / doc_id


def record_path(out: Path, stage: str, doc_id: str) -> Path:
  return doc_dir(out, doc_id) / f"{stage}.json"


def skip_path(out: Path, stage: str, doc_id: str) -> Path:
  return Path(out) / "skips" / stage / f"{doc_id}.json"


def stage_key(params: dict[str, Any], upstream_key: str) -> str:
  blob = json.dumps([params, upstream_key], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:32]


def load_record(out: Path, stage: str, doc_id: str) -> dict[str, Any] | None:
  path = record_path(out, stage, doc_id)
  return io_utils.read_json(path) if path.exists() else None


def is_done(out: Path, stage: str, doc_id: str, key: str) -> bool:
  for path in (record_path(out, stage, doc_id), skip_path(out, stage, doc_id)):
    if path.exists() and io_utils.read_json(path).get("key") == key:
      return True
  return False


def write_record(out: Path, stage: str, doc_id: str, key: str, payload: dict[str, Any]) -> None:
  io_utils.write_json_atomic(record_path(out, stage, doc_id),
                             {"doc_id": doc_id, "key": key, **payload})
  skip_path(out, stage, doc_id).unlink(missing_ok=True)


def write_skip(out: Path, stage: str, doc_id: str, key: str, reason: str, detail: str = "",
               source: str | None = None) -> None:
  """Records why `doc_id` stops at `stage`; `reason` is a short code counted in the report."""
  log.warning("%s: skip %s: %s%s", stage, source or doc_id[:16], reason,
              f" ({detail})" if detail else "")
  io_utils.write_json_atomic(skip_path(out, stage, doc_id),
                             {"doc_id": doc_id, "key": key, "stage": stage, "reason": reason,
                              "detail": detail, "source": source})
  record_path(out, stage, doc_id).unlink(missing_ok=True)


def skip_counts(out: Path) -> dict[str, dict[str, int]]:
  """{stage: {reason: count}} over all skip records."""
  counts: dict[str, collections.Counter] = {}
  root = Path(out) / "skips"
  for path in sorted(root.glob("*/*.json")) if root.exists() else []:
    rec = io_utils.read_json(path)
    counts.setdefault(rec["stage"], collections.Counter())[rec["reason"]] += 1
  return {stage: dict(sorted(c.items())) for stage, c in sorted(counts.items())}


def finished_docs(out: Path, stage: str) -> list[str]:
  """Sorted ids of documents with a record of `stage` (the input of the next stage)."""
  root = Path(out) / "docs"
  if not root.exists():
    return []
  return sorted(p.parent.name for p in root.glob(f"*/{stage}.json"))


def rng(seed: int, *keys: str) -> random.Random:
  """A generator that depends only on the seed and the keys (e.g. doc id, purpose)."""
  return random.Random(":".join([str(seed), *keys]))


def run_stage(out: Path, stage: str, fn: Callable[[Any, Callable[[str], None]], Any],
              jobs: Iterable[tuple[str, str, Any]], *, workers_n: int,
              timeout_s: float | None = None) -> collections.Counter:
  """Runs `fn(task, beat)` for each (doc_id, key, task) not already done, writing records.

  `fn` returns either a record payload, or {"skip": reason, "detail": ...}. Worker failures
  become skip records with reason "timeout", "died" (crash) or "error" (exception).
  Returns counts: done / skipped / already done.
  """
  counts = collections.Counter()
  todo = []
  for doc_id, key, task in jobs:
    if is_done(out, stage, doc_id, key):
      counts["already_done"] += 1
    else:
      todo.append((doc_id, key, task))
  tasks = [task for _, _, task in todo]
  for i, result in workers.run(fn, tasks, workers=workers_n, timeout_s=timeout_s, desc=stage):
    doc_id, key, _ = todo[i]
    if isinstance(result, workers.Failure):
      write_skip(out, stage, doc_id, key, result.kind, result.reason.strip())
      counts["skipped"] += 1
    elif "skip" in result:
      write_skip(out, stage, doc_id, key, result["skip"], result.get("detail", ""),
                 result.get("source"))
      counts["skipped"] += 1
    else:
      write_record(out, stage, doc_id, key, result)
      counts["done"] += 1
  log.info("%s: %s", stage, dict(counts))
  return counts


def parse_choices(spec: str, allowed: tuple[str, ...], flag: str) -> list[str]:
  """A comma-separated subset of `allowed`, in the order given; exits with a clear message."""
  chosen = [t.strip() for t in spec.split(",") if t.strip()]
  bad = [t for t in chosen if t not in allowed]
  if bad or not chosen:
    raise SystemExit(f"{flag}: unknown {bad or 'empty list'}; choose from {','.join(allowed)}")
  return chosen


def add_common_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--out", type=Path, required=True,
                      help="the work folder shared by all stages (see data_tools/common.py)")
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                      help="worker processes (default: all cores)")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed for every random choice; same seed, same output")


def setup_logging() -> None:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


def stage_main(stage: types.ModuleType, argv: list[str] | None = None) -> None:
  """The command line of a stage module: common flags + `stage.add_args`, then
  `stage.run_from_args`; the module docstring is the --help text."""
  parser = argparse.ArgumentParser(prog=f"python -m {stage.__spec__.name}",
                                   description=stage.__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  add_common_args(parser)
  stage.add_args(parser)
  args = parser.parse_args(argv)
  setup_logging()
  stage.run_from_args(args)
