"""Stage 5: training instances (schema.py) from the QA pairs and the layout.

  python -m data_tools.assemble --out WORK [--assemble_tasks extract_single,...,ocr_needle]

- VQA (extract_single / extract_multi / reasoning): every page image of the document, then the
  anchored question; the answer is the assistant turn (a List answer is written as a JSON array).
- ocr_full: every page image, then an instruction to transcribe all pages; the target is the text
  of every page in reading order, each page introduced by "Page N:".
- ocr_needle: every page image, then an instruction to transcribe 1-3 drawn pages; the other
  pages are distractors.
OCR targets keep titles, headings, paragraphs, tables (one row per line, cells joined by " | ")
and captions, and leave out running headers and footers. Documents with pages that still need
OCR get no ocr_full instance, and those pages are never needles.
--page_labels puts a "Page N:" text part before each image.
Output: WORK/docs/<doc_id>/assemble.json, merged into WORK/instances/long.jsonl.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any, Callable

from data_tools import common, io_utils, schema

TASKS = ("extract_single", "extract_multi", "reasoning", "ocr_full", "ocr_needle")
OCR_LABELS = ("title", "section_heading", "paragraph", "table", "figure_caption")

_OCR_FULL_PROMPTS = (
    "Transcribe the text of every page of this document in reading order. Begin each page with "
    "a line \"Page N:\" and leave out running headers, footers and page numbers.",
    "Write out all the text in this document, page by page, in reading order. Start every page "
    "with \"Page N:\"; skip page headers, footers and page numbers.",
)
_OCR_NEEDLE_PROMPTS = (
    "Transcribe the text on {pages} of this document in reading order. Begin each page with a "
    "line \"Page N:\" and leave out running headers, footers and page numbers.",
    "Write out the text of {pages}, in reading order, starting each page with \"Page N:\". Skip "
    "page headers, footers and page numbers.",
)


def page_text(page: dict[str, Any]) -> str:
  """The transcription target of one layout page."""
  return "\n\n".join(b["text"] for b in page["blocks"] if b["label"] in OCR_LABELS)


def answer_text(answer: Any, fmt: str) -> str:
  return json.dumps(answer, ensure_ascii=False) if fmt == "List" else str(answer)


def _pages_phrase(pages: list[int]) -> str:
  if len(pages) == 1:
    return f"Page {pages[0]}"
  return "Pages " + ", ".join(map(str, pages[:-1])) + f" and {pages[-1]}"


def _instance(inst_id: str, task: str, doc_id: str, images: list[str], prompt: str,
              target: str, page_labels: bool, meta: dict[str, Any]) -> schema.Instance:
  user: list[Any] = []
  for i in range(len(images)):
    user += [schema.text(f"Page {i + 1}:"), schema.image(i)] if page_labels else [schema.image(i)]
  user.append(schema.text(prompt))
  rec: schema.Instance = {
      "id": inst_id, "task": task, "doc_id": doc_id, "images": images,
      "messages": [{"role": "user", "content": user},
                   {"role": "assistant", "content": [schema.text(target)]}],
      "meta": meta}
  schema.validate_instance(rec)
  return rec


def doc_instances(out: Path, doc_id: str, tasks: list[str], seed: int,
                  page_labels: bool) -> list[schema.Instance]:
  """All instances of one document."""
  images = [p["image"] for p in common.load_record(out, "render", doc_id)["pages"]]
  insts = []
  if any(t in tasks for t in ("extract_single", "extract_multi", "reasoning")):
    for qa in common.load_record(out, "teach", doc_id)["qa"]:
      if qa["task"] in tasks:
        meta = {k: qa[k] for k in ("answer", "answer_format", "evidence_pages",
                                   "evidence_sources", "segment_pages", "teacher")}
        insts.append(_instance(qa["id"], qa["task"], doc_id, images, qa["question"],
                               answer_text(qa["answer"], qa["answer_format"]), page_labels, meta))
  layout = common.load_record(out, "layout", doc_id)
  texts = {p["page"]: page_text(p) for p in layout["pages"]}
  rng = common.rng(seed, doc_id, "ocr")
  short = doc_id[:16]
  if "ocr_full" in tasks and not any(p["needs_ocr"] for p in layout["pages"]):
    target = "\n\n".join(f"Page {n}:\n{t}".rstrip() for n, t in sorted(texts.items()))
    insts.append(_instance(f"{short}-ocr_full", "ocr_full", doc_id, images,
                           rng.choice(_OCR_FULL_PROMPTS), target, page_labels,
                           {"pages": sorted(texts)}))
  candidates = [n for n, t in sorted(texts.items()) if len(t) >= 20]
  if "ocr_needle" in tasks and candidates:
    needles = sorted(rng.sample(candidates, rng.randint(1, min(3, len(candidates)))))
    prompt = rng.choice(_OCR_NEEDLE_PROMPTS).format(pages=_pages_phrase(needles))
    target = "\n\n".join(f"Page {n}:\n{texts[n]}" for n in needles)
    insts.append(_instance(f"{short}-ocr_needle", "ocr_needle", doc_id, images, prompt, target,
                           page_labels, {"pages": needles}))
  return insts


def assemble_task(task: dict[str, Any], beat: Callable[[str], None]) -> dict[str, Any]:
  insts = doc_instances(Path(task["out"]), task["doc_id"], task["tasks"], task["seed"],
                        task["page_labels"])
  if not insts:
    return {"skip": "no_instances", "detail": "no accepted QA and no OCR text"}
  return {"instances": insts}


def run(out: Path, *, tasks=TASKS, seed: int = 0, page_labels: bool = False,
        workers: int = 1) -> collections.Counter:
  """Assembles every taught document not done yet, then rewrites instances/long.jsonl."""
  params = {"tasks": list(tasks), "seed": seed, "page_labels": page_labels}
  jobs = []
  for doc_id in common.finished_docs(out, "teach"):
    upstream = common.load_record(out, "teach", doc_id)["key"]
    jobs.append((doc_id, common.stage_key(params, upstream),
                 {"out": str(out), "doc_id": doc_id, **params}))
  counts = common.run_stage(out, "assemble", assemble_task, jobs, workers_n=workers)
  merged = []
  for doc_id, key, _ in jobs:
    rec = common.load_record(out, "assemble", doc_id)
    if rec is not None and rec["key"] == key:
      merged += sorted(rec["instances"], key=lambda r: r["id"])
  io_utils.write_jsonl_atomic(Path(out) / "instances" / "long.jsonl", merged)
  counts.update(collections.Counter(r["task"] for r in merged))
  common.log.info("assemble: %d instances in %s", len(merged), Path(out) / "instances/long.jsonl")
  return counts


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--assemble_tasks", default=",".join(TASKS),
                      help="comma-separated subset of " + ",".join(TASKS))
  parser.add_argument("--page_labels", action="store_true",
                      help='put a "Page N:" text part before every page image')


def run_from_args(args: argparse.Namespace) -> collections.Counter:
  tasks = common.parse_choices(args.assemble_tasks, TASKS, "--assemble_tasks")
  return run(args.out, tasks=tasks, seed=args.seed, page_labels=args.page_labels,
             workers=args.workers)


if __name__ == "__main__":
  common.stage_main(sys.modules[__name__])
