"""Import short-context conversations in LLaVA-OneVision's format as "short" instances.

  python -m data_tools.short --input llava.json [--input more.jsonl] --image_root DIR --out WORK

Input: a JSON array or JSON Lines of records like
  {"id": "...", "image": "coco/1.jpg" (or a list, or absent),
   "conversations": [{"from": "human", "value": "<image>\\nWhat is shown?"},
                     {"from": "gpt", "value": "A cat."}]}
Roles: human/user -> user, gpt/assistant -> assistant, system -> system. Each "<image>" marks
where the next image goes; with no marker at all, the images go before the first human text
(the LLaVA convention). Images are copied (hard-linked when possible) to
WORK/short_images/<sha256>.<ext>, so identical images are stored once. Records that cannot be
converted are counted by reason: no_conversations, bad_role, empty_turn, missing_image,
image_count_mismatch, video, bad_turn_order, duplicate (an identical record seen before).
Output: WORK/instances/short.jsonl (schema.py) and WORK/instances/short.summary.json.
Conversion is I/O-bound and runs in one process; a rerun rewrites both files identically.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from data_tools import common, io_utils, schema

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
          "system": "system"}
IMAGE_TOKEN = "<image>"


class Skip(ValueError):

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


def read_records(path: Path) -> Iterator[dict[str, Any]]:
  """Records of a JSON array file or a JSON Lines file."""
  with open(path, encoding="utf-8") as f:
    head = f.read(1)
    while head.isspace():
      head = f.read(1)
    f.seek(0)
    if head == "[":
      yield from json.load(f)
    else:
      for line in f:
        if line.strip():
          yield json.loads(line)


def _store_image(src: Path, out: Path) -> str:
  """Content-addressed copy of an image under out/short_images; returns its relative path."""
  with open(src, "rb") as f:
    digest = hashlib.file_digest(f, "sha256").hexdigest()
  rel = f"short_images/{digest[:2]}/{digest}{src.suffix.lower()}"
  dest = out / rel
  if not dest.exists():
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
      os.link(src, tmp)
    except OSError:  # another filesystem, or links not allowed
      shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
  return rel


def convert(rec: dict[str, Any], image_root: Path, out: Path) -> schema.Instance:
  """One LLaVA record as a "short" instance; raises Skip with a reason."""
  if "video" in rec:
    raise Skip("video")
  turns = rec.get("conversations")
  if not isinstance(turns, list) or not turns:
    raise Skip("no_conversations")
  sources = rec.get("image") or []
  sources = [sources] if isinstance(sources, str) else list(sources)
  markers = sum(str(t.get("value", "")).count(IMAGE_TOKEN) for t in turns)
  if markers not in (0, len(sources)):
    raise Skip("image_count_mismatch")
  paths = []
  for s in sources:
    path = image_root / s
    if not path.is_file():
      raise Skip("missing_image")
    paths.append(path)
  images = [_store_image(p, out) for p in paths]

  messages, next_image = [], 0
  for t in turns:
    role = _ROLES.get(t.get("from"))
    if role is None:
      raise Skip("bad_role")
    value = str(t.get("value", ""))
    content: list[Any] = []
    if role == "user" and markers == 0 and next_image == 0 and images:
      content += [schema.image(i) for i in range(len(images))]
      next_image = len(images)
    for k, piece in enumerate(value.split(IMAGE_TOKEN)):
      if k:
        content.append(schema.image(next_image))
        next_image += 1
      if piece.strip():
        content.append(schema.text(piece.strip()))
    if not content:
      raise Skip("empty_turn")
    messages.append({"role": role, "content": content})

  blob = json.dumps(rec, sort_keys=True, ensure_ascii=False).encode("utf-8")
  doc_id = hashlib.sha256(blob).hexdigest()
  inst: schema.Instance = {"id": f"short-{doc_id[:16]}", "task": "short",
                           "doc_id": doc_id, "images": images, "messages": messages,
                           "meta": {"source_id": rec.get("id")}}
  try:
    schema.validate_instance(inst)
  except ValueError:
    raise Skip("bad_turn_order") from None
  return inst


def run(inputs: list[Path], image_root: Path, out: Path) -> dict[str, Any]:
  """Converts all records; returns the summary that is also written next to the output."""
  out = Path(out)
  skipped = collections.Counter()
  insts, seen = [], set()
  for path in inputs:
    for rec in read_records(path):
      try:
        inst = convert(rec, Path(image_root), out)
      except Skip as e:
        skipped[e.reason] += 1
        continue
      if inst["id"] in seen:  # the same record twice
        skipped["duplicate"] += 1
        continue
      seen.add(inst["id"])
      insts.append(inst)
  insts.sort(key=lambda r: (r["doc_id"], r["id"]))
  io_utils.write_jsonl_atomic(out / "instances" / "short.jsonl", insts)
  summary = {"inputs": [str(p) for p in inputs], "instances": len(insts),
             "skipped": dict(sorted(skipped.items()))}
  io_utils.write_json_atomic(out / "instances" / "short.summary.json", summary)
  common.log.info("short: %s", summary)
  return summary


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m data_tools.short", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input", type=Path, action="append", required=True,
                      help="LLaVA-format .json or .jsonl file (repeatable)")
  parser.add_argument("--image_root", type=Path, required=True,
                      help="folder the records' image paths are relative to")
  parser.add_argument("--out", type=Path, required=True, help="the work folder")
  args = parser.parse_args(argv)
  common.setup_logging()
  run(args.input, args.image_root, args.out)


if __name__ == "__main__":
  main()
