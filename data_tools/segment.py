"""Stage 3: sample page segments of 8-15 consecutive pages made of whole sections.

  python -m data_tools.segment --out WORK [--segment_pages 8-15] [--segments_per_doc 1] [--seed 0]

Sections come from the layout's title and section_heading blocks in reading order: a section runs
from its heading's page to the page before the next heading, or to the next heading's page when
text precedes that heading there. Text before the first heading is a section without a title. A
segment is one or more consecutive sections whose pages span LO-HI; one is drawn uniformly from
all such runs. Documents without usable structure fall back to a random window of LO-HI pages.
Several segments per document do not overlap. Draws depend only on --seed and the doc id.
Output: WORK/docs/<doc_id>/segment.json with "segments": [{"id", "start_page", "end_page"
(1-based, inclusive), "sections": [heading texts], "source": "sections"|"window"}].
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
from pathlib import Path
from typing import Any, Callable

from data_tools import common, render

HEADINGS = ("title", "section_heading")


def sections(layout: dict[str, Any]) -> list[dict[str, Any]]:
  """[{"title", "start", "end"}] covering the document's pages in order."""
  n = len(layout["pages"])
  starts = []  # (page, title, text before the heading on its page)
  for page in layout["pages"]:
    seen_text = False
    for b in page["blocks"]:
      if b["label"] in HEADINGS:
        if starts and starts[-1][0] == page["page"] and not seen_text:
          starts[-1] = (page["page"], f"{starts[-1][1]} {b['text']}", starts[-1][2])
        else:
          starts.append((page["page"], b["text"], seen_text))
        seen_text = False
      elif b["label"] not in ("header", "footer"):
        seen_text = True
  if not starts:
    return []
  out = []
  if starts[0][0] > 1 or starts[0][2]:
    out.append({"title": "", "start": 1, "end": starts[0][0] if starts[0][2] else starts[0][0] - 1})
  for k, (page, title, _) in enumerate(starts):
    if k + 1 < len(starts):
      nxt_page, _, text_before = starts[k + 1]
      end = nxt_page if text_before else nxt_page - 1
    else:
      end = n
    out.append({"title": title, "start": page, "end": max(page, end)})
  return out


def sample_segments(layout: dict[str, Any], lo: int, hi: int, count: int,
                    rng: random.Random) -> list[dict[str, Any]]:
  """Up to `count` non-overlapping segments; section runs first, page windows as fallback."""
  n = len(layout["pages"])
  secs = sections(layout)
  runs = []
  for i in range(len(secs)):
    for j in range(i, len(secs)):
      span = secs[j]["end"] - secs[i]["start"] + 1
      if span > hi:
        break
      if span >= lo:
        runs.append((secs[i]["start"], secs[j]["end"], [s["title"] for s in secs[i:j + 1]]))
  rng.shuffle(runs)
  chosen = []
  for start, end, titles in runs:
    if len(chosen) < count and all(end < s["start_page"] or start > s["end_page"] for s in chosen):
      chosen.append({"start_page": start, "end_page": end,
                     "sections": [t for t in titles if t], "source": "sections"})
  for _ in range(count - len(chosen)):
    window = _free_window(n, lo, hi, chosen, rng)
    if window is None:
      break
    chosen.append({"start_page": window[0], "end_page": window[1], "sections": [],
                   "source": "window"})
  return sorted(chosen, key=lambda s: s["start_page"])


def _free_window(n: int, lo: int, hi: int, taken: list[dict[str, Any]],
                 rng: random.Random) -> tuple[int, int] | None:
  """A random window of lo..hi pages that avoids the taken segments, if one fits."""
  free = [p for p in range(1, n + 1)
          if not any(s["start_page"] <= p <= s["end_page"] for s in taken)]
  gaps, start, prev = [], None, 0  # maximal runs of free pages
  for p in free:
    if start is None or p != prev + 1:
      if start is not None:
        gaps.append((start, prev))
      start = p
    prev = p
  if start is not None:
    gaps.append((start, prev))
  gaps = [g for g in gaps if g[1] - g[0] + 1 >= lo]
  if not gaps:
    return None
  a, b = rng.choice(gaps)
  length = rng.randint(lo, min(hi, b - a + 1))
  first = rng.randint(a, b - length + 1)
  return first, first + length - 1


def segment_task(task: dict[str, Any], beat: Callable[[str], None]) -> dict[str, Any]:
  """Worker: the segments of one document."""
  layout = common.load_record(Path(task["out"]), "layout", task["doc_id"])
  lo, hi = task["page_range"]
  if len(layout["pages"]) < lo:
    return {"skip": "too_few_pages", "detail": f"{len(layout['pages'])} pages < {lo}"}
  rng = common.rng(task["seed"], task["doc_id"], "segment")
  segs = sample_segments(layout, lo, hi, task["per_doc"], rng)
  for k, s in enumerate(segs):
    s["id"] = f"{task['doc_id'][:16]}-s{k}"
  return {"segments": segs}


def run(out: Path, *, pages: str = "8-15", per_doc: int = 1, seed: int = 0,
        workers: int = 1) -> collections.Counter:
  params = {"page_range": render.parse_page_range(pages), "per_doc": per_doc, "seed": seed}
  jobs = []
  for doc_id in common.finished_docs(out, "layout"):
    key = common.stage_key(params, common.load_record(out, "layout", doc_id)["key"])
    jobs.append((doc_id, key, {"out": str(out), "doc_id": doc_id, **params}))
  return common.run_stage(out, "segment", segment_task, jobs, workers_n=workers)


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--segment_pages", default="8-15",
                      help="pages per segment, LO-HI inclusive (default 8-15)")
  parser.add_argument("--segments_per_doc", type=int, default=1,
                      help="non-overlapping segments drawn per document (default 1)")


def run_from_args(args: argparse.Namespace) -> collections.Counter:
  return run(args.out, pages=args.segment_pages, per_doc=args.segments_per_doc, seed=args.seed,
             workers=args.workers)


if __name__ == "__main__":
  common.stage_main(sys.modules[__name__])
