"""Atomic file writes and JSON/JSONL helpers shared by every stage.

Every output is written to a temporary file in the same folder and then renamed over the final
name, so a killed run leaves either the old file, the new file, or a stray `*.tmp*` that the next
run ignores and overwrites; never a half-written output.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Iterator


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
  try:
    with open(tmp, "xb") as f:  # normal permissions (umask), unlike tempfile's 0600
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
  write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=1) + "\n")


def read_json(path: str | os.PathLike) -> Any:
  return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> None:
  lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records)
  write_text_atomic(path, "".join(lines))


def read_jsonl(path: str | os.PathLike) -> Iterator[Any]:
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        yield json.loads(line)
