"""Macro averages laid out like the study's Table 4 (documentQA) and Table 17 (MM-NIAH).

A cell is the mean example score of one file at one length, in percent; a column that spans
several files (an NIAH family: its text and image variants) averages the files present. AVG. at a
length is the mean of the columns present there, and the last AVG. the mean of all cells present.
With every cell present that is the mean of the per-length averages; with some missing it is what
Table 4 prints (GPT-5.4, no SLIDE at 128K: (61.56 + 72.37 + 87.10 + 52.96 + 73.06) / 5 = 69.41).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path
from typing import Any, Sequence

from data_tools import io_utils

DOC_COLUMNS = (("MMLB-D", ("mmlongdoc",)), ("LD-URL", ("longdocurl",)), ("SLIDE", ("slidevqa",)))
NIAH_COLUMNS = (("Ret.", ("retrieval-text", "retrieval-image")),
                ("Count", ("counting-text", "counting-image")),
                ("Reas.", ("reasoning-text", "reasoning-image")))
AVG = "AVG."
# (key, title, benchmark, metric, columns) of each table, in print order.
TABLES = (("docqa_judge", "documentQA, LLM judge (official)", "doc", "judge", DOC_COLUMNS),
          ("docqa_rule", "documentQA, rule-based", "doc", "rule", DOC_COLUMNS),
          ("niah", "MM-NIAH", "niah", "rule", NIAH_COLUMNS))


@dataclasses.dataclass(frozen=True)
class UnitScore:
  benchmark: str
  name: str
  k: int
  metric: str  # "rule" | "judge"
  score: float  # mean over examples, in percent
  n: int  # examples scored


def _mean(values: Sequence[float]) -> float | None:
  return sum(values) / len(values) if values else None


def summarize(scores: dict[tuple[str, int], float], columns, lengths: Sequence[int]) -> dict:
  """{"<k>K": {column: value | None, ..., AVG.: value | None}, ..., AVG.: value | None}."""
  table: dict[str, Any] = {}
  cells = []
  for k in lengths:
    row = {label: _mean([scores[n, k] for n in names if (n, k) in scores])
           for label, names in columns}
    cells += [v for v in row.values() if v is not None]
    row[AVG] = _mean([v for v in row.values() if v is not None])
    table[f"{k}K"] = row
  table[AVG] = _mean(cells)
  return table


def _cell(value: float | None) -> str:
  return "N/A" if value is None else f"{value:.2f}"


def format_table(title: str, model: str, table: dict, columns) -> str:
  labels = [label for label, _ in columns] + [AVG]
  groups = [key for key in table if key != AVG]
  width = 7
  group_width = len(labels) * (width + 1) - 1
  name_width = max(len(model), len("Model"))
  lines = [
      title,
      " " * name_width + " | " + " | ".join(g.center(group_width) for g in groups) + " |",
      "Model".ljust(name_width) + " | " + " | ".join(
          " ".join(label.rjust(width) for label in labels) for _ in groups) + " | " + AVG.rjust(width),
      model.ljust(name_width) + " | " + " | ".join(
          " ".join(_cell(table[g][label]).rjust(width) for label in labels) for g in groups)
      + " | " + _cell(table[AVG]).rjust(width),
  ]
  return "\n".join(lines)


def build(unit_scores: Sequence[UnitScore], lengths: Sequence[int]) -> dict[str, dict]:
  """The tables that have any score, keyed as in TABLES."""
  tables = {}
  for key, _, benchmark, metric, columns in TABLES:
    scores = {(u.name, u.k): u.score for u in unit_scores
              if u.benchmark == benchmark and u.metric == metric}
    if scores:
      tables[key] = summarize(scores, columns, lengths)
  return tables


def _csv(tables: dict[str, dict]) -> str:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["table", "length", "column", "score"])
  for key, table in tables.items():
    for length, row in table.items():
      cells = {AVG: row} if length == AVG else row
      for column, value in cells.items():
        writer.writerow([key, "all" if length == AVG else length, column,
                         "" if value is None else f"{value:.4f}"])
  return buf.getvalue()


def write(out_dir: str | os.PathLike, model: str, unit_scores: Sequence[UnitScore],
          lengths: Sequence[int]) -> str:
  """Writes report.json and report.csv under out_dir; returns the printable tables."""
  tables = build(unit_scores, lengths)
  io_utils.write_json_atomic(Path(out_dir) / "report.json", {
      "model": model, "tables": tables, "units": [dataclasses.asdict(u) for u in unit_scores]})
  io_utils.write_text_atomic(Path(out_dir) / "report.csv", _csv(tables))
  if not tables:
    return f"no scored examples under {out_dir} for these tasks and lengths"
  titles = {key: (title, columns) for key, title, _, _, columns in TABLES}
  return "\n\n".join(format_table(titles[key][0] + ", scores in %", model, table, titles[key][1])
                     for key, table in tables.items())
