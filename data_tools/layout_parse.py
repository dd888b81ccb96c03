"""Built-in layout parser for born-digital PDFs: PyMuPDF text structure + font sizes + outline.

A block is {"label", "text", "bbox": [x0, y0, x1, y1] in PDF points (origin top-left), "order"}
plus "level" for headings and "rows" (list of cell lists) for tables. Labels:
  title            the largest text on the first page that has text
  section_heading  outline (TOC) entries found on their page. Documents without a usable
                   outline (< 3 entries, or fewer than half found in the text) fall back to
                   font style: short lines set clearly larger than the body text, or short
                   all-bold lines that are numbered or stand alone
  paragraph        everything else in the body
  table            `page.find_tables()` grids with >= 2 rows and >= 2 columns
  figure_caption   blocks starting "Figure 3:", "Fig. 2.", "Table 1." ... (captions of figures
                   and of tables: there is no separate table-caption label)
  header / footer  blocks in the top/bottom band of the page whose text, digits masked, repeats on
                   several pages, or that are only a page number
Reading order: headers, then the body column by column within horizontal bands separated by
full-width blocks, then footers.
"""
from __future__ import annotations

import collections
import re
from typing import Any

LABELS = ("title", "section_heading", "paragraph", "table", "figure_caption", "header", "footer")

BAND = 0.12  # top/bottom share of the page height where headers and footers live
_BOLD = 16  # PyMuPDF span flag
CAPTION = re.compile(r"^(figure|fig\.|table|chart|exhibit|plate|graph|diagram)\s*[A-Z]?\d+(\.\d+)*"
                     r"\s*[.:\-\u2013\u2014|]", re.IGNORECASE)
_NUMBERED = re.compile(r"^(\d+(\.\d+)*\.?|[A-Z]\.|[IVX]+\.)\s+\S")
_NUMBERED_PREFIX = re.compile(r"^\s*(\d+(\.\d+)*\.?|[A-Z]\.|[IVX]+\.)\s+")
_PAGE_NUMBER = re.compile(
    r"^(page\s*)?[-\u2013(\[]?\s*(\d+|[ivxlc]+)\s*[-\u2013)\]]?(\s*(of|/)\s*\d+)?$", re.IGNORECASE)


def normalize(text: str) -> str:
  """Lowercase alphanumerics only (for loose text matching)."""
  return re.sub(r"[\W_]+", "", text.lower())


def heading_key(text: str) -> str:
  """Matches a heading with its outline entry: numbering dropped ("1.2 Scope" == "Scope")."""
  return normalize(_NUMBERED_PREFIX.sub("", text))


def _mask_digits(text: str) -> str:
  return re.sub(r"\d+", "#", " ".join(text.lower().split()))


def _style(spans: list[dict[str, Any]]) -> tuple[float, bool, int]:
  """(dominant font size, all but a few chars bold, char count) of some spans."""
  sizes = collections.Counter()
  bold = chars = 0
  for span in spans:
    n = len(span["text"].strip())
    sizes[round(span["size"] * 2) / 2] += n
    bold += n if span["flags"] & _BOLD else 0
    chars += n
  size = sizes.most_common(1)[0][0] if chars else 0.0
  return size, chars > 0 and bold / chars > 0.9, chars


def _pieces(line: dict[str, Any]) -> list[list[dict[str, Any]]]:
  """A line's spans, split where a wide horizontal gap shows they belong to different columns."""
  pieces = [[line["spans"][0]]] if line["spans"] else []
  for span in line["spans"][1:]:
    prev = pieces[-1][-1]
    if span["bbox"][0] - prev["bbox"][2] > max(2.0 * span["size"], 10.0):
      pieces.append([span])
    else:
      pieces[-1].append(span)
  return pieces


def page_runs(page_dict: dict[str, Any]) -> list[dict[str, Any]]:
  """Text runs: consecutive lines of one style in one column. PyMuPDF blocks are split where the
  font style changes (a heading glued to its paragraph) and where lines of one block sit in
  different columns (some PDFs interleave the lines of a multi-column page)."""
  runs = []
  for block in page_dict["blocks"]:
    if block.get("type") != 0:
      continue
    open_runs: list[dict[str, Any]] = []
    for line in block["lines"]:
      for spans in _pieces(line):
        size, bold, chars = _style(spans)
        if not chars:
          continue
        text = "".join(s["text"] for s in spans).strip()
        box = [min(s["bbox"][0] for s in spans), min(s["bbox"][1] for s in spans),
               max(s["bbox"][2] for s in spans), max(s["bbox"][3] for s in spans)]
        run = next((r for r in reversed(open_runs) if _continues(r, box, size, bold)), None)
        if run is None:
          run = {"lines": [], "bbox": box, "size": size, "bold": bold}
          open_runs.append(run)
        run["lines"].append(text)
        run["last"] = box
        b = run["bbox"]
        run["bbox"] = [min(b[0], box[0]), min(b[1], box[1]), max(b[2], box[2]), max(b[3], box[3])]
    runs += open_runs
  for r in runs:
    r["text"] = _join_lines(r.pop("lines"))
    del r["last"]
  return runs


def _continues(run: dict[str, Any], box: list[float], size: float, bold: bool) -> bool:
  """Whether a line at `box` continues `run`: same style, just below its last line, same column."""
  if (size, bold) != (run["size"], run["bold"]):
    return False
  last = run["last"]
  overlap = min(box[2], last[2]) - max(box[0], last[0])
  gap = box[1] - last[3]
  return overlap > 0.3 * min(box[2] - box[0], last[2] - last[0]) and -0.5 * size < gap < 0.8 * size


def _join_lines(lines: list[str]) -> str:
  out = ""
  for line in lines:
    if out.endswith("-") and line[:1].islower():
      out = out[:-1] + line  # undo end-of-line hyphenation
    else:
      out = f"{out} {line}" if out else line
  return " ".join(out.split())


def body_size(runs_per_page: list[list[dict[str, Any]]]) -> float:
  """The most common font size, weighted by characters."""
  sizes = collections.Counter()
  for runs in runs_per_page:
    for r in runs:
      sizes[r["size"]] += len(r["text"])
  return sizes.most_common(1)[0][0] if sizes else 0.0


def _inside(bbox, region, slack: float = 2.0) -> bool:
  cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
  return (region[0] - slack <= cx <= region[2] + slack
          and region[1] - slack <= cy <= region[3] + slack)


def table_blocks(page) -> list[dict[str, Any]]:
  """Ruled tables of at least 2x2 cells. Pages with almost no vector graphics cannot hold a
  ruled table, and find_tables() costs ~10x the text extraction, so they are not searched."""
  if len(page.get_cdrawings()) < 3:
    return []
  out = []
  for tab in page.find_tables().tables:
    rows = [[" ".join((c or "").split()) for c in row] for row in tab.extract()]
    if tab.row_count < 2 or tab.col_count < 2 or not any(any(r) for r in rows):
      continue
    out.append({"label": "table", "bbox": [round(v, 2) for v in tab.bbox], "rows": rows,
                "text": "\n".join(" | ".join(r) for r in rows)})
  return out


def _is_heading(run: dict[str, Any], body: float) -> bool:
  text = run["text"]
  words = len(text.split())
  if not 1 <= words <= 20 or len(text) > 150 or _PAGE_NUMBER.match(text):
    return False
  if not re.search(r"[^\W\d_]{2}", text):
    return False  # headings have words, not "2,000" or "!"
  if run["size"] >= 1.15 * body:
    return not text.endswith((".", ",", ";")) or bool(_NUMBERED.match(text))
  if run["bold"] and run["size"] >= 0.95 * body and words <= 12:
    return bool(_NUMBERED.match(text)) or not text.endswith((".", ",", ";", ":"))
  return False


def classify_page(runs: list[dict[str, Any]], tables: list[dict[str, Any]], body: float,
                  toc_titles: dict[str, int] | None) -> list[dict[str, Any]]:
  """Labels of one page's runs (before header/footer and title decisions). `toc_titles` maps
  normalized outline titles on this page to their level; None: the document has no outline."""
  blocks = list(tables)
  for run in runs:
    if any(_inside(run["bbox"], t["bbox"]) for t in tables):
      continue  # the table block already carries this text
    block = {"label": "paragraph", "text": run["text"],
             "bbox": [round(v, 2) for v in run["bbox"]], "size": run["size"]}
    level = (toc_titles or {}).get(heading_key(run["text"]))
    if level is not None and len(run["text"]) <= 200:
      block.update(label="section_heading", level=level)
    elif CAPTION.match(run["text"]):
      block["label"] = "figure_caption"
    elif toc_titles is None and _is_heading(run, body):
      block["label"] = "section_heading"
    blocks.append(block)
  return blocks


def mark_headers_footers(pages: list[list[dict[str, Any]]], heights: list[float]) -> None:
  """Relabels band blocks that repeat across pages (digits masked) or are bare page numbers."""
  seen = collections.Counter()
  for blocks, h in zip(pages, heights):
    keys = {_mask_digits(b["text"]) for b in blocks if _band(b, h) and b["label"] != "table"}
    seen.update(keys)
  need = max(2, int(0.3 * len(pages)))
  for blocks, h in zip(pages, heights):
    for b in blocks:
      where = _band(b, h)
      if not where or b["label"] == "table":
        continue
      if seen[_mask_digits(b["text"])] >= need or _PAGE_NUMBER.match(b["text"]):
        b["label"] = where
        b.pop("level", None)


def _band(block: dict[str, Any], height: float) -> str | None:
  if block["bbox"][3] <= BAND * height:
    return "header"
  if block["bbox"][1] >= (1 - BAND) * height:
    return "footer"
  return None


def _top_left(block: dict[str, Any]) -> tuple[float, float]:
  return block["bbox"][1], block["bbox"][0]


def reading_order(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Headers, body (columns within bands split by full-width blocks), footers."""
  head = sorted((b for b in blocks if b["label"] == "header"), key=_top_left)
  foot = sorted((b for b in blocks if b["label"] == "footer"), key=_top_left)
  body = [b for b in blocks if b["label"] not in ("header", "footer")]
  if not body:
    return head + foot
  left = min(b["bbox"][0] for b in body)
  right = max(b["bbox"][2] for b in body)
  wide = 0.6 * (right - left)
  ordered, band = [], []
  for b in sorted(body, key=_top_left):
    if b["bbox"][2] - b["bbox"][0] >= wide:
      ordered += _by_columns(band)
      band = []
      ordered.append(b)
    else:
      band.append(b)
  return head + ordered + _by_columns(band) + foot


def _by_columns(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
  columns: list[list[Any]] = []  # [x0, x1, blocks]
  for b in sorted(blocks, key=lambda b: b["bbox"][0]):
    x0, x1 = b["bbox"][0], b["bbox"][2]
    for col in columns:
      overlap = min(x1, col[1]) - max(x0, col[0])
      if overlap > 0.5 * min(x1 - x0, col[1] - col[0]):
        col[0], col[1] = min(col[0], x0), max(col[1], x1)
        col[2].append(b)
        break
    else:
      columns.append([x0, x1, [b]])
  out = []
  for col in sorted(columns, key=lambda c: c[0]):
    out += sorted(col[2], key=_top_left)
  return out


def mark_title(pages: list[list[dict[str, Any]]], body: float) -> str:
  """Labels the largest text of the first page with text as the title; returns it."""
  for blocks in pages:
    runs = [b for b in blocks if b["label"] not in ("table", "header", "footer")]
    if not runs:
      continue
    biggest = max(b["size"] for b in runs)
    if biggest < 1.25 * body:
      return ""
    top = [b for b in runs if b["size"] == biggest]
    for b in top:
      b["label"] = "title"
      b.pop("level", None)
    return " ".join(b["text"] for b in sorted(top, key=lambda b: b["bbox"][1]))
  return ""


def looks_unreadable(text: str) -> bool:
  """A text layer that is mostly replacement characters (broken font encodings)."""
  bad = text.count("\ufffd")
  return bool(text) and bad / len(text) > 0.3


def parse_document(doc, beat=lambda note: None) -> dict[str, Any]:
  """Layout of every page of an open PyMuPDF document (see the module docstring)."""
  toc = doc.get_toc()
  toc_by_page: dict[int, dict[str, int]] = collections.defaultdict(dict)
  for level, title, page_no in toc:
    if heading_key(title):
      toc_by_page[page_no][heading_key(title)] = level
  runs_per_page, tables_per_page, sizes = [], [], []
  for i, page in enumerate(doc):
    beat(f"page {i + 1}/{doc.page_count}")
    page_dict = page.get_text("dict")
    runs = page_runs(page_dict)
    text = " ".join(r["text"] for r in runs)
    unreadable = looks_unreadable(text)
    runs_per_page.append([] if unreadable else runs)
    tables_per_page.append([] if unreadable or not runs else table_blocks(page))
    sizes.append((page.rect.width, page.rect.height, unreadable))
  body = body_size(runs_per_page)
  pages = []
  if len(toc) >= 3:
    pages = [classify_page(runs, tables, body, toc_by_page.get(i + 1, {}))
             for i, (runs, tables) in enumerate(zip(runs_per_page, tables_per_page))]
  if not pages or sum("level" in b for blocks in pages for b in blocks) < len(toc) / 2:
    # No outline, or one that does not match the printed headings: use font style instead.
    pages = [classify_page(runs, tables, body, None)
             for runs, tables in zip(runs_per_page, tables_per_page)]
  mark_headers_footers(pages, [h for _, h, _ in sizes])
  title = mark_title(pages, body)
  out_pages = []
  for i, (blocks, (w, h, unreadable)) in enumerate(zip(pages, sizes)):
    ordered = reading_order(blocks)
    for k, b in enumerate(ordered):
      b["order"] = k
      b.pop("size", None)
    page = {"page": i + 1, "width_pt": w, "height_pt": h, "source": "text" if ordered else "none",
            "needs_ocr": not ordered, "blocks": ordered}
    if unreadable:
      page["note"] = "text layer is unreadable (broken font encoding)"
    out_pages.append(page)
  return {"title": title, "body_size": body, "toc": [list(t[:3]) for t in toc], "pages": out_pages}
