"""PDFs generated for tests, with known titles, sections, tables, captions and running heads."""
from __future__ import annotations

from pathlib import Path

import pymupdf

TITLE = "Harbor Water Quality Review"
HEADER = "Coastal Monitoring Unit"
SECTIONS = [  # (page, heading)
    (2, "Introduction"), (4, "Sampling Sites"), (7, "Results"), (10, "Discussion"),
    (12, "Appendix"),
]
TABLE_PAGE = 7
TABLE = [["Site", "Samples", "Turbidity"],
         ["North Pier", "14", "3.5"],
         ["Fish Market", "9", "7.25"],
         ["Lighthouse", "21", "1.75"]]
SECOND_TABLE_PAGE = 8
SECOND_TABLE = [["Month", "Rainfall"], ["May", "62"], ["June", "48"]]
CAPTIONS = [(5, "Figure 1", "Map of the sampling sites"), (9, "Figure 2", "Turbidity by month")]
PARAGRAPH = ("Water samples were collected at low tide and stored on ice before analysis in the "
             "laboratory. Each sample was measured twice and the mean value is reported here.")


def _table(page: pymupdf.Page, top: float, rows: list[list[str]]) -> None:
  left, col_w, row_h = 72, 140, 22
  ncol = len(rows[0])
  for r in range(len(rows) + 1):
    page.draw_line((left, top + r * row_h), (left + ncol * col_w, top + r * row_h))
  for c in range(ncol + 1):
    page.draw_line((left + c * col_w, top), (left + c * col_w, top + len(rows) * row_h))
  for r, row in enumerate(rows):
    for c, cell in enumerate(row):
      page.insert_text((left + c * col_w + 6, top + r * row_h + 15), cell, fontsize=10)


def make_report(path: Path, pages: int = 14, toc: bool = True) -> Path:
  """A report of `pages` pages: title on page 1, SECTIONS, tables, captions, header/footer."""
  doc = pymupdf.open()
  for n in range(1, pages + 1):
    page = doc.new_page(width=612, height=792)
    page.insert_text((72, 40), HEADER, fontsize=9)
    page.insert_text((290, 770), f"Page {n}", fontsize=9)
    y = 90
    if n == 1:
      page.insert_text((72, y), TITLE, fontsize=24)
      y += 50
    for p, heading in SECTIONS:
      if p == n:
        page.insert_text((72, y), heading, fontsize=16)
        y += 30
    for _ in range(3):
      page.insert_textbox(pymupdf.Rect(72, y, 540, y + 80), PARAGRAPH, fontsize=11)
      y += 70
    if n == TABLE_PAGE:
      _table(page, y + 10, TABLE)
    if n == SECOND_TABLE_PAGE:
      _table(page, y + 10, SECOND_TABLE)
    for p, label, text in CAPTIONS:
      if p == n:
        page.draw_rect(pymupdf.Rect(72, y + 10, 300, y + 150), color=(0, 0, 0),
                       fill=(0.8, 0.8, 0.8))
        page.insert_text((72, y + 170), f"{label}: {text}", fontsize=10)
  if toc:
    doc.set_toc([[1, heading, p] for p, heading in SECTIONS if p <= pages])
  doc.save(path)
  doc.close()
  return path


def make_plain(path: Path, pages: int,
               text: str = "Plain page {n} of a document without any structure.",
               fontname: str = "helv", image_only: bool = False) -> Path:
  """Simple pages: one line of text each, or (image_only) a picture and no text layer.

  Each page's picture has its own shade, so no two pages send the same OCR request (the chat
  client sends identical requests once and gives every copy that one answer).
  """
  doc = pymupdf.open()
  for n in range(1, pages + 1):
    page = doc.new_page(width=612, height=792)
    if image_only:
      pix = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 40, 40), False)
      shade = (40 * n) % 256
      pix.set_rect(pix.irect, (shade, shade, shade))
      page.insert_image(pymupdf.Rect(72, 72, 300, 300), pixmap=pix)
    else:
      page.insert_text((72, 100), text.format(n=n), fontsize=12, fontname=fontname)
  doc.save(path)
  doc.close()
  return path


def segmented_report(root: Path) -> tuple[Path, str]:
  """A work folder where make_report's PDF went through render, layout and segment (5-7 pages);
  returns (work folder, doc id)."""
  from data_tools import layout, render, segment
  pdfs = root / "pdfs"
  pdfs.mkdir()
  doc_id = render.file_sha256(make_report(pdfs / "report.pdf"))
  out = root / "out"
  render.run(pdfs, out, dpi=20, pages="any", workers=1)
  layout.run(out, workers=1)
  segment.run(out, pages="5-7", workers=1)
  return out, doc_id
