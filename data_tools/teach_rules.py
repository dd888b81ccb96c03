"""Offline rule-based teacher: grounded QA pairs built from the parsed layout blocks.

It writes replies in the same response format the model teacher is asked for, so both pass the
same validation. Question kinds (one is drawn per segment and task from those the pages allow):
  extract_single  a table cell by row and column; the caption of a figure/table; a page's first
                  section heading
  extract_multi   all section headings on a page range; all caption labels on a page range; the
                  row labels of tables on two or more pages
  reasoning       sum / difference / largest value of a numeric table column; counts of section
                  headings, tables or captions on a page range
Every question is anchored with the page numbers it is about (full-document, 1-based).
"""
from __future__ import annotations

import random
import re
from typing import Any, Callable

from data_tools.layout_parse import CAPTION
from data_tools.teach_prompt import format_reply, page_anchor

_ORDINAL = ("first", "second", "third", "fourth", "fifth", "sixth")
_NUMBER = re.compile(r"^([$\u20ac\u00a3]?)\s?([-+]?(?:\d{1,3}(?:,\d{3})+|\d*)(?:\.(\d+))?)\s*(%?)$")


class NoMaterial(Exception):
  """The segment's blocks support no question of the requested kind."""


def number(cell: str) -> tuple[float, int] | None:
  """(value, decimals) of a numeric table cell like "1,204", "$3.50", "12.5%"; else None."""
  m = _NUMBER.match(cell.strip())
  if not m or not re.search(r"\d", m.group(2)):
    return None
  return float(m.group(2).replace(",", "")), len(m.group(3) or "")


def _typed(value: float, decimals: int) -> tuple[Any, str]:
  if decimals == 0 and float(value).is_integer():
    return int(value), "Integer"
  return f"{value:.{max(decimals, 1)}f}", "Float"


def _cell_answer(cell: str) -> tuple[Any, str]:
  """A cell as an answer: plain whole numbers are Integer; decimals, money, percents Float."""
  parsed = number(cell)
  if parsed is None:
    return cell, "String"
  if parsed[1] == 0 and cell.strip()[0].isdigit() and not cell.strip().endswith("%"):
    return int(parsed[0]), "Integer"
  return cell.strip(), "Float"


class _Segment:
  """The blocks of one segment, grouped the way the question kinds need them."""

  def __init__(self, layout: dict[str, Any], segment: dict[str, Any]):
    self.start, self.end = segment["start_page"], segment["end_page"]
    self.headings, self.captions, self.tables = [], [], []
    for page in layout["pages"][self.start - 1:self.end]:
      p = page["page"]
      page_tables = [b for b in page["blocks"] if b["label"] == "table" and len(b["rows"]) >= 2]
      for k, b in enumerate(page_tables):
        where = "the table" if len(page_tables) == 1 else f"the {_ORDINAL[min(k, 5)]} table"
        self.tables.append((p, f"{where} on Page {p}", b["rows"]))
      for b in page["blocks"]:
        if b["label"] in ("title", "section_heading") and len(b["text"]) <= 120:
          self.headings.append((p, b["text"]))
        m = CAPTION.match(b["text"]) if b["label"] == "figure_caption" else None
        if m:
          self.captions.append((p, b["text"][:m.end()].rstrip(" .:-|\u2013\u2014"),
                                b["text"][m.end():].strip()))

  def ranges(self, items: list[tuple], lo: int, hi: int) -> list[tuple[int, int, list]]:
    """Page ranges [a, b] whose items number lo..hi and lie on at least two pages."""
    out = []
    for a in range(self.start, self.end + 1):
      for b in range(a + 1, self.end + 1):
        inside = [it for it in items if a <= it[0] <= b]
        if lo <= len(inside) <= hi and len({it[0] for it in inside}) >= 2 \
            and inside[0][0] == a and inside[-1][0] == b:
          out.append((a, b, inside))
    return out


def _qa(question, answer, fmt, pages, sources, description) -> str:
  return format_reply(description, {
      "question": question, "answer": answer, "answer_format": fmt,
      "evidence_pages": sorted(set(pages)), "evidence_sources": sources})


def _table_cell(seg: _Segment, rng: random.Random) -> str | None:
  cells = [(p, where, rows[0][c], row[0], row[c]) for p, where, rows in seg.tables
           for row in rows[1:] for c in range(1, len(row))
           if row[0] and row[c] and c < len(rows[0]) and rows[0][c]
           and [r[0] for r in rows].count(row[0]) == 1]
  if not cells:
    return None
  p, where, col, key, value = rng.choice(cells)
  answer, fmt = _cell_answer(value)
  return _qa(f'In {where}, what is the "{col}" value in the row "{key}"?', answer, fmt, [p],
             ["Table"], f'Table: in {where}, the row "{key}" has "{value}" in the "{col}" column.')


def _caption(seg: _Segment, rng: random.Random) -> str | None:
  labels = [c[1] for c in seg.captions]
  options = [c for c in seg.captions if c[2] and labels.count(c[1]) == 1]
  if not options:
    return None
  p, label, text = rng.choice(options)
  return _qa(f"What is the caption of {label} on Page {p}?", text, "String", [p], ["Layout"],
             f'Layout: the caption on Page {p} reads "{label}: {text}".')


def _first_heading(seg: _Segment, rng: random.Random) -> str | None:
  firsts = {}
  for p, text in seg.headings:
    firsts.setdefault(p, text)
  if not firsts:
    return None
  p = rng.choice(sorted(firsts))
  return _qa(f"What is the first section heading on Page {p}?", firsts[p], "String", [p],
             ["Layout"], f'Layout: the first heading printed on Page {p} is "{firsts[p]}".')


def _listing(seg: _Segment, items: list[tuple], rng: random.Random, question: str,
             role: str) -> str | None:
  """All items (page, text, ...) on a drawn page range, as a List answer."""
  options = seg.ranges(items, 2, 10)
  if not options:
    return None
  a, b, chosen = rng.choice(options)
  desc = "Layout: " + "; ".join(f'"{it[1]}" {role} on Page {it[0]}' for it in chosen) + "."
  return _qa(question.format(anchor=page_anchor(list(range(a, b + 1)))),
             [it[1] for it in chosen], "List", [it[0] for it in chosen], ["Layout"], desc)


def _heading_list(seg: _Segment, rng: random.Random) -> str | None:
  return _listing(seg, seg.headings, rng,
                  "List the section headings that appear on {anchor}, in reading order.",
                  "is a heading")


def _caption_list(seg: _Segment, rng: random.Random) -> str | None:
  return _listing(seg, seg.captions, rng,
                  "Which figures and tables are captioned on {anchor}? List their labels in order.",
                  "is captioned")


def _table_keys(seg: _Segment, rng: random.Random) -> str | None:
  tables_on = [p for p, _, _ in seg.tables]
  keys = {p: [r[0] for r in rows[1:] if r[0]] for p, _, rows in seg.tables
          if tables_on.count(p) == 1}  # "the table on Page p" must be unambiguous
  pages = sorted(p for p in keys if keys[p])
  if len(pages) < 2:
    return None
  k = rng.randint(2, min(3, len(pages)))
  first = rng.randint(0, len(pages) - k)
  chosen = pages[first:first + k]
  answer = [key for p in chosen for key in keys[p]]
  if len(answer) > 15:
    return None
  return _qa(f"List the row labels (the first-column entries below the header) of the tables on "
             f"{page_anchor(chosen)}, in order.", answer, "List", chosen, ["Table"],
             "Table: " + "; ".join(f"the table on Page {p} has rows {', '.join(keys[p])}"
                                   for p in chosen) + ".")


def _numeric_columns(seg: _Segment) -> list[tuple[int, str, str, list[tuple[str, float, int]]]]:
  cols = []
  for p, where, rows in seg.tables:
    for c in range(1, len(rows[0])):
      vals = [(r[0], number(r[c])) for r in rows[1:] if c < len(r) and r[0]]
      if rows[0][c] and len(vals) >= 2 and all(v is not None for _, v in vals) \
          and len({k for k, _ in vals}) == len(vals):
        cols.append((p, where, rows[0][c], [(k, v[0], v[1]) for k, v in vals]))
  return cols


def _table_math(seg: _Segment, rng: random.Random) -> str | None:
  cols = _numeric_columns(seg)
  if not cols:
    return None
  p, where, col, vals = rng.choice(cols)
  decimals = max(d for _, _, d in vals)
  listed = ", ".join(f'{k} = {v:.{decimals}f}' for k, v, _ in vals)
  desc = f'Table: in {where}, the "{col}" column lists {listed}.'
  op = rng.choice(["sum", "difference", "max"])
  if op == "sum":
    answer, fmt = _typed(round(sum(v for _, v, _ in vals), decimals), decimals)
    return _qa(f'What is the sum of the "{col}" values in {where}?', answer, fmt, [p],
               ["Table"], desc)
  if op == "difference":
    (ka, va, _), (kb, vb, _) = rng.sample(vals, 2)
    answer, fmt = _typed(round(va - vb, decimals), decimals)
    return _qa(f'In {where}, what is the "{col}" of {ka} minus the "{col}" of {kb}?', answer,
               fmt, [p], ["Table"], desc)
  top = max(v for _, v, _ in vals)
  winners = [k for k, v, _ in vals if v == top]
  if len(winners) != 1:
    return None
  return _qa(f'In {where}, which row has the largest "{col}"?', winners[0], "String", [p],
             ["Table"], desc)


def _count(seg: _Segment, rng: random.Random) -> str | None:
  kinds = []
  if seg.headings:
    kinds.append(("section headings", [p for p, _ in seg.headings], "Layout"))
  if seg.tables:
    kinds.append(("tables", [p for p, _, _ in seg.tables], "Table"))
  if seg.captions:
    kinds.append(("captioned figures and tables", [p for p, _, _ in seg.captions], "Layout"))
  if not kinds:
    return None
  what, pages, source = rng.choice(kinds)
  anchor = page_anchor(list(range(seg.start, seg.end + 1)))
  per_page = ", ".join(f"Page {p}: {pages.count(p)}" for p in sorted(set(pages)))
  return _qa(f"How many {what} are there on {anchor}?", len(pages), "Integer", pages, [source],
             f"{source}: counting {what} page by page gives {per_page}.")


KINDS: dict[str, list[Callable[[_Segment, random.Random], str | None]]] = {
    "extract_single": [_table_cell, _caption, _first_heading],
    "extract_multi": [_heading_list, _caption_list, _table_keys],
    "reasoning": [_table_math, _count],
}


def generate(layout: dict[str, Any], segment: dict[str, Any], task: str,
             rng: random.Random) -> str:
  """A reply for (segment, task); raises NoMaterial when no question kind applies."""
  seg = _Segment(layout, segment)
  kinds = list(KINDS[task])
  rng.shuffle(kinds)
  for kind in kinds:
    reply = kind(seg, rng)
    if reply is not None:
      return reply
  raise NoMaterial(f"no {task} question fits pages {seg.start}-{seg.end}")
