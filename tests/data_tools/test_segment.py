"""Segment sampling: whole sections, 8-15 pages, windows as fallback, seeded."""
from __future__ import annotations

import random

import pymupdf

from data_tools import layout_parse, render, segment
import dt_pdfs


def _layout(path):
  render.quiet_mupdf()
  with pymupdf.open(path) as doc:
    return layout_parse.parse_document(doc)


def test_sections_follow_the_headings(tmp_path):
  lay = _layout(dt_pdfs.make_report(tmp_path / "r.pdf", pages=14))
  assert [(s["title"], s["start"], s["end"]) for s in segment.sections(lay)] == [
      (dt_pdfs.TITLE, 1, 1), ("Introduction", 2, 3), ("Sampling Sites", 4, 6), ("Results", 7, 9),
      ("Discussion", 10, 11), ("Appendix", 12, 14)]


def test_segments_are_runs_of_whole_sections(tmp_path):
  lay = _layout(dt_pdfs.make_report(tmp_path / "r.pdf", pages=14))
  starts = {s["start"] for s in segment.sections(lay)}
  ends = {s["end"] for s in segment.sections(lay)}
  seen = set()
  for seed in range(30):
    segs = segment.sample_segments(lay, 5, 7, 1, random.Random(seed))
    assert len(segs) == 1
    s = segs[0]
    assert s["source"] == "sections" and 5 <= s["end_page"] - s["start_page"] + 1 <= 7
    assert s["start_page"] in starts and s["end_page"] in ends
    seen.add((s["start_page"], s["end_page"]))
    assert segment.sample_segments(lay, 5, 7, 1, random.Random(seed)) == segs  # reproducible
  # Every run of whole sections spanning 5-7 pages can be drawn.
  assert seen == {(1, 6), (2, 6), (4, 9), (7, 11), (10, 14)}


def test_several_segments_do_not_overlap_and_fall_back_to_windows(tmp_path):
  lay = _layout(dt_pdfs.make_report(tmp_path / "r.pdf", pages=14))
  segs = segment.sample_segments(lay, 3, 4, 3, random.Random(0))
  assert len(segs) == 3
  covered = [p for s in segs for p in range(s["start_page"], s["end_page"] + 1)]
  assert len(covered) == len(set(covered))

  flat = _layout(dt_pdfs.make_plain(tmp_path / "flat.pdf", 40))  # no headings at all
  for seed in range(10):
    segs = segment.sample_segments(flat, 8, 15, 2, random.Random(seed))
    assert [s["source"] for s in segs] == ["window", "window"]
    assert all(8 <= s["end_page"] - s["start_page"] + 1 <= 15 for s in segs)
    assert segs[0]["end_page"] < segs[1]["start_page"] and segs[1]["end_page"] <= 40
