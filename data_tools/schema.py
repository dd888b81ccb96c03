"""The training-instance format: the contract between data_tools and the shard builder.

Files: `<out>/instances/*.jsonl` (UTF-8 JSON Lines, one instance per line). `long.jsonl` holds the
document tasks written by `data_tools.assemble`, `short.jsonl` the conversations imported by
`data_tools.short`. Within a file, lines are sorted by (doc_id, id); reruns with the same inputs
and seed write byte-identical files.

One instance (`Instance`):
  id        str, unique over all files, stable across reruns.
  task      one of TASKS: "extract_single", "extract_multi", "reasoning" (long-document VQA),
            "ocr_full", "ocr_needle" (OCR transcription), "short" (imported short conversations).
  doc_id    str. Document tasks: SHA-256 (hex) of the source PDF's bytes. "short": SHA-256 of the
            source record.
  images    list[str]: image files, as paths relative to `<out>`, in the order the image parts of
            `messages` refer to them. Document tasks list every page of the document in page
            order, so images[i] is Page i+1 (page numbers in questions are 1-based positions in
            the full document).
  messages  list of chat turns {"role": "system" | "user" | "assistant", "content": [part, ...]}
            where a part is {"type": "image", "image": <int index into images>} or
            {"type": "text", "text": <str>}. Image parts, read in order through all turns, use
            the indices 0, 1, ..., len(images) - 1 exactly once each. An optional system turn
            comes first; then user and assistant turns alternate, starting with user and ending
            with assistant. Assistant turns are the loss targets; every other token is context.
            No system turn means the chat template's default one (Qwen2.5-VL inserts
            "You are a helpful assistant."). The builder renders the turns with the Qwen2.5-VL
            chat template: each image part becomes <|vision_start|><|image_pad|>...<|vision_end|>.
  meta      dict, optional provenance that is not trained on: for VQA the teacher's answer,
            answer_format, evidence_pages, evidence_sources, segment_pages and teacher; for OCR
            the pages transcribed; for "short" the source record's id.

`validate_instance(record)` raises ValueError naming the first broken rule.
"""
from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Literal, NotRequired, TypedDict

TASKS = ("extract_single", "extract_multi", "reasoning", "ocr_full", "ocr_needle", "short")


class ImagePart(TypedDict):
  type: Literal["image"]
  image: int


class TextPart(TypedDict):
  type: Literal["text"]
  text: str


class Message(TypedDict):
  role: Literal["system", "user", "assistant"]
  content: list[ImagePart | TextPart]


class Instance(TypedDict):
  id: str
  task: str
  doc_id: str
  images: list[str]
  messages: list[Message]
  meta: NotRequired[dict[str, Any]]


def text(value: str) -> TextPart:
  return {"type": "text", "text": value}


def image(index: int) -> ImagePart:
  return {"type": "image", "image": index}


def validate_instance(rec: Any) -> None:
  """Raises ValueError if `rec` breaks the format described in the module docstring."""
  def fail(msg: str):
    raise ValueError(f"instance {rec.get('id', '?') if isinstance(rec, dict) else '?'}: {msg}")

  if not isinstance(rec, dict):
    raise ValueError("instance: not a JSON object")
  for field, kind in (("id", str), ("task", str), ("doc_id", str), ("images", list),
                      ("messages", list)):
    if not isinstance(rec.get(field), kind):
      fail(f"field {field!r} missing or not a {kind.__name__}")
  if not rec["id"] or not rec["doc_id"]:
    fail("empty id or doc_id")
  if rec["task"] not in TASKS:
    fail(f"task {rec['task']!r} is not one of {TASKS}")
  unknown = set(rec) - {"id", "task", "doc_id", "images", "messages", "meta"}
  if unknown:
    fail(f"unknown fields {sorted(unknown)}")
  if "meta" in rec and not isinstance(rec["meta"], dict):
    fail("meta is not an object")
  for path in rec["images"]:
    p = PurePosixPath(path) if isinstance(path, str) else None
    if p is None or not path or p.is_absolute() or ".." in p.parts:
      fail(f"image path {path!r} is not a relative path inside the output folder")

  roles = [m.get("role") if isinstance(m, dict) else None for m in rec["messages"]]
  body = roles[1:] if roles[:1] == ["system"] else roles
  if not body or body[0] != "user" or body[-1] != "assistant" or any(
      r != ("user", "assistant")[i % 2] for i, r in enumerate(body)):
    fail(f"turns must be [system] user, assistant, user, ..., assistant; got {roles}")
  next_image = 0
  for m in rec["messages"]:
    if set(m) != {"role", "content"} or not isinstance(m["content"], list) or not m["content"]:
      fail("a turn must be {'role', 'content': [parts]} with at least one part")
    for part in m["content"]:
      if part == {"type": "text", "text": part.get("text")} and isinstance(part["text"], str):
        continue
      if part == {"type": "image", "image": part.get("image")} and type(part["image"]) is int:
        if part["image"] != next_image:
          fail(f"image part {part['image']} out of order; expected {next_image}")
        next_image += 1
        continue
      fail(f"bad content part {part!r}")
    if m["role"] == "assistant" and not any(p["type"] == "text" and p["text"]
                                            for p in m["content"]):
      fail("an assistant turn has no text to learn")
  if next_image != len(rec["images"]):
    fail(f"{len(rec['images'])} images listed but {next_image} referenced")
