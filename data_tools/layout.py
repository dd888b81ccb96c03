"""Stage 2: page layout blocks (title / section_heading / paragraph / table / figure_caption /
header / footer) with bbox and reading order, for every rendered document.

  python -m data_tools.layout --out WORK [--ocr vlm --ocr_base_url URL --ocr_model NAME]

The built-in parser (layout_parse.py) reads the PDF's text layer, font sizes and outline. Pages
without a usable text layer (scans) are kept with `needs_ocr: true` and no blocks; with
`--ocr vlm` they are sent as images to an OpenAI-compatible vision-language model instead
(layout_vlm.py) and get `source: "vlm"`. Output: WORK/docs/<doc_id>/layout.json:
  {"title", "body_size", "toc", "pages": [{"page" (1-based), "width_pt", "height_pt",
   "source": "text"|"vlm"|"none", "needs_ocr", "blocks": [{"label", "text", "bbox" (PDF points),
   "order", ...}]}]}
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path
from typing import Any, Callable

import pymupdf

from data_tools import chat_client, common, io_utils, layout_parse, layout_vlm, render


def parse_task(task: dict[str, Any], beat: Callable[[str], None]) -> dict[str, Any]:
  """Worker: the born-digital layout of one document."""
  render.quiet_mupdf()
  with pymupdf.open(task["source"]) as doc:
    if doc.page_count != task["n_pages"]:
      return {"skip": "changed_source",
              "detail": f"{task['source']} has {doc.page_count} pages, rendered {task['n_pages']}"}
    parsed = layout_parse.parse_document(doc, beat)
  return {"source": task["source"], "n_pages": task["n_pages"], **parsed}


def ocr_pages(out: Path, client: chat_client.ChatClient, doc_ids: list[str]) -> collections.Counter:
  """Fills pages marked needs_ocr through the VLM backend; rewrites the layout records."""
  counts = collections.Counter()
  for doc_id in doc_ids:
    rec = common.load_record(out, "layout", doc_id)
    todo = [p for p in rec["pages"] if p["needs_ocr"]]
    if not todo:
      continue
    render = common.load_record(out, "render", doc_id)
    images = {p["page"]: str(Path(out) / p["image"]) for p in render["pages"]}
    replies = client.complete_many([layout_vlm.request(images[p["page"]]) for p in todo],
                                   temperature=0.0)
    for page, reply in zip(todo, replies):
      try:
        if not reply.ok:
          raise ValueError(reply.error)
        page["blocks"] = layout_vlm.parse_reply(reply.text, page["width_pt"], page["height_pt"])
      except ValueError as e:
        page["ocr_error"] = str(e)[:300]
        counts["ocr_failed"] += 1
        continue
      page.update(source="vlm", needs_ocr=False)
      page.pop("ocr_error", None)
      counts["ocr_pages"] += 1
    io_utils.write_json_atomic(common.record_path(out, "layout", doc_id), rec)
  return counts


def run(out: Path, *, workers: int = 1, timeout_s: float = 300.0,
        client: chat_client.ChatClient | None = None) -> collections.Counter:
  """Parses every rendered document not done yet; then OCRs text-less pages if `client`."""
  params = {"parser": "pymupdf-1", "ocr": client.model if client else None}
  jobs = []
  for doc_id in common.finished_docs(out, "render"):
    render = common.load_record(out, "render", doc_id)
    jobs.append((doc_id, common.stage_key(params, render["key"]),
                 {"source": render["source"], "n_pages": render["n_pages"]}))
  counts = common.run_stage(out, "layout", parse_task, jobs, workers_n=workers, timeout_s=timeout_s)
  if client is not None:
    counts.update(ocr_pages(out, client, [d for d, _, _ in jobs]))
  return counts


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--layout_timeout", type=float, default=300.0,
                      help="seconds one page may take to parse before its worker is killed")
  parser.add_argument("--ocr", choices=["none", "vlm"], default="none",
                      help="backend for pages without a text layer (default: mark needs_ocr)")
  parser.add_argument("--ocr_base_url", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
  parser.add_argument("--ocr_model", help="model name for --ocr vlm")
  parser.add_argument("--ocr_api_key_env", help="environment variable that holds the API key")


def run_from_args(args: argparse.Namespace) -> collections.Counter:
  client = None
  if args.ocr == "vlm":
    if not (args.ocr_base_url and args.ocr_model):
      raise SystemExit("--ocr vlm needs --ocr_base_url and --ocr_model")
    client = chat_client.ChatClient(args.ocr_base_url, args.ocr_model,
                                    api_key_env=args.ocr_api_key_env,
                                    cache_dir=Path(args.out) / "cache" / "chat")
  return run(args.out, workers=args.workers, timeout_s=args.layout_timeout, client=client)


if __name__ == "__main__":
  common.stage_main(sys.modules[__name__])
