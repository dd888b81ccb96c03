"""Where a run's outputs live, and append-only JSONL records that survive a killed run.

  <out>/generations/<name>_K<k>.jsonl  one record per example: reply, parsed answer, rule score
  <out>/judge/<name>_K<k>.jsonl        one record per judged documentQA example
  <out>/report.{json,csv}              the tables
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from data_tools import io_utils


def generations_path(out_dir: str | os.PathLike, stem: str) -> Path:
  return Path(out_dir) / "generations" / f"{stem}.jsonl"


def judge_path(out_dir: str | os.PathLike, stem: str) -> Path:
  return Path(out_dir) / "judge" / f"{stem}.jsonl"


def read_records(path: Path) -> list[dict[str, Any]]:
  """The records of an output file (none if it is missing). A run killed mid-write can leave a
  torn last line; the file is rewritten without it so that appending can go on."""
  if not path.exists():
    return []
  text = path.read_text(encoding="utf-8")
  lines = text.splitlines()
  records = []
  for i, line in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i != len(lines) - 1:
        raise ValueError(f"{path}:{i + 1}: corrupt record; repair or delete the file") from None
  if len(records) != len(lines) or (text and not text.endswith("\n")):
    io_utils.write_jsonl_atomic(path, records)
  return records


def append_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
