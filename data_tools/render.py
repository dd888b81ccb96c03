"""Stage 1: PDFs -> page images (PyMuPDF), with ids, contamination filter and page-count selection.

  python -m data_tools.render --pdf_dir PDFS --out WORK [--pages pool-native] [--dpi 144]

Each document's id is the SHA-256 of its bytes (byte-identical copies are rendered once). PDFs
whose hash is listed in `--exclude_hashes` (evaluation documents) are skipped as "contaminated".
Pages are written to WORK/docs/<doc_id>/pages/NNNN.<ext> (1-based page numbers) and described in
WORK/docs/<doc_id>/render.json. Bad inputs become skip records with a reason: encrypted,
open_failed, zero_pages, page_count, render_failed, timeout (a page exceeded --page_timeout; its
worker process is killed) or error.

Image format: lossless WebP by default. On the text-heavy test PDFs it is 2.6x smaller than PNG
with identical pixels, where JPEG/lossy WebP blur glyph edges; benchmarks/README.md has the numbers.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import io
import math
import sys
from pathlib import Path
from typing import Any, Callable

import pymupdf
from PIL import Image

from data_tools import common, io_utils, tokens

PAGE_RANGES = {"pool-native": (32, 50), "long-biased": (50, 100), "any": (1, 1 << 30)}
FORMATS = {"webp": "webp", "png": "png", "jpeg": "jpg"}


def parse_page_range(spec: str) -> tuple[int, int]:
  """'pool-native' (32-50), 'long-biased' (50-100), 'any', or 'LO-HI' (inclusive)."""
  if spec in PAGE_RANGES:
    return PAGE_RANGES[spec]
  try:
    lo, hi = (int(x) for x in spec.split("-"))
  except ValueError:
    raise ValueError(f"page range {spec!r}: use one of {sorted(PAGE_RANGES)} or LO-HI") from None
  if not 1 <= lo <= hi:
    raise ValueError(f"page range {spec!r}: need 1 <= LO <= HI")
  return lo, hi


def file_sha256(path: Path) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def read_hash_list(path: Path | None) -> set[str]:
  """SHA-256 hex digests, one per line (first field); blank lines and # comments ignored."""
  if path is None:
    return set()
  hashes = set()
  for line in Path(path).read_text().splitlines():
    field = line.split("#", 1)[0].strip().split()
    if field:
      if len(field[0]) != 64:
        raise ValueError(f"{path}: {field[0]!r} is not a SHA-256 hex digest")
      hashes.add(field[0].lower())
  return hashes


def encode(pix, fmt: str) -> bytes:
  """Encodes an RGB pixmap. WebP is lossless (method 4: PIL's default effort)."""
  if fmt == "png":
    return pix.tobytes("png")
  if fmt == "jpeg":
    return pix.tobytes("jpeg", jpg_quality=90)
  if fmt == "webp":
    image = Image.frombuffer("RGB", (pix.width, pix.height), pix.samples, "raw", "RGB", 0, 1)
    buf = io.BytesIO()
    image.save(buf, "WEBP", lossless=True, quality=80, method=4)
    return buf.getvalue()
  raise ValueError(f"unknown image format {fmt!r}; choose from {sorted(FORMATS)}")


def page_dpi(width_pt: float, height_pt: float, dpi: float, max_pixels: int) -> float:
  """`dpi`, lowered just enough that the page fits in `max_pixels` (huge posters, maps).
  MuPDF rounds each side up, so solve (w*z + 1) * (h*z + 1) = max_pixels for the zoom z."""
  w, h = width_pt, height_pt
  zoom = (-(w + h) + math.sqrt((w + h) ** 2 + 4 * w * h * (max_pixels - 1))) / (2 * w * h)
  return min(dpi, 72.0 * zoom)


def quiet_mupdf() -> None:
  """Broken files are expected: their skip reason is recorded, MuPDF's own messages are noise."""
  pymupdf.TOOLS.mupdf_display_errors(False)
  pymupdf.TOOLS.mupdf_display_warnings(False)
  pymupdf.no_recommend_layout()


def render_document(task: dict[str, Any], beat: Callable[[str], None]) -> dict[str, Any]:
  """Worker: renders one PDF; returns the render record or {"skip": reason, "detail": ...}."""
  quiet_mupdf()
  source, doc_id = task["path"], task["doc_id"]
  try:
    doc = pymupdf.open(source)
  except Exception as e:  # MuPDF raises several types for unreadable files
    return {"skip": "open_failed", "detail": f"{type(e).__name__}: {e}", "source": source}
  with doc:
    if doc.needs_pass:
      return {"skip": "encrypted", "detail": "a user password is required", "source": source}
    n = doc.page_count
    if n == 0:
      detail = "after repairing a broken file" if doc.is_repaired else ""
      return {"skip": "zero_pages", "detail": detail, "source": source}
    lo, hi = task["page_range"]
    if not lo <= n <= hi:
      return {"skip": "page_count", "detail": f"{n} pages, outside [{lo}, {hi}]", "source": source}
    ext = FORMATS[task["format"]]
    pages = []
    for i in range(n):
      beat(f"page {i + 1}/{n}")
      try:
        page = doc[i]
        rect = page.rect
        dpi = page_dpi(rect.width, rect.height, task["dpi"], task["max_page_pixels"])
        zoom = dpi / 72.0
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom))
        data = encode(pix, task["format"])
      except Exception as e:
        return {"skip": "render_failed", "detail": f"page {i + 1}: {type(e).__name__}: {e}",
                "source": source}
      rel = f"docs/{doc_id}/pages/{i + 1:04d}.{ext}"
      io_utils.write_bytes_atomic(Path(task["out"]) / rel, data)
      pages.append({"page": i + 1, "image": rel, "width": pix.width, "height": pix.height,
                    "dpi": round(dpi, 3), "width_pt": rect.width, "height_pt": rect.height})
    return {"source": source, "n_pages": n, "format": task["format"], "dpi": task["dpi"],
            "repaired": bool(doc.is_repaired), "title": (doc.metadata or {}).get("title") or "",
            "pages": pages}


def find_pdfs(pdf_dir: Path) -> list[Path]:
  return sorted(p for p in Path(pdf_dir).rglob("*") if p.suffix.lower() == ".pdf" and p.is_file())


def run(pdf_dir: Path, out: Path, *, dpi: float = 144, fmt: str = "webp",
        pages: str = "pool-native", exclude_hashes: Path | None = None,
        page_timeout_s: float = 60.0, max_page_pixels: int = tokens.MAX_PIXELS,
        workers: int = 1) -> collections.Counter:
  """Renders every PDF under `pdf_dir` that is not done yet; returns counts."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown image format {fmt!r}; choose from {sorted(FORMATS)}")
  params = {"dpi": dpi, "format": fmt, "page_range": parse_page_range(pages),
            "max_page_pixels": max_page_pixels}
  excluded = read_hash_list(exclude_hashes)
  counts = collections.Counter()
  seen: set[str] = set()
  jobs = []
  for path in find_pdfs(pdf_dir):
    doc_id = file_sha256(path)
    if doc_id in seen:
      counts["duplicate"] += 1
      common.log.info("render: %s is a byte-identical duplicate, not rendered again", path)
      continue
    seen.add(doc_id)
    key = common.stage_key(params, doc_id)
    if doc_id in excluded:
      if not common.is_done(out, "render", doc_id, key):
        common.write_skip(out, "render", doc_id, key, "contaminated",
                          "hash is in the evaluation list", str(path))
      counts["contaminated"] += 1
      continue
    jobs.append((doc_id, key, {"path": str(path), "doc_id": doc_id, "out": str(out), **params}))
  counts.update(common.run_stage(out, "render", render_document, jobs, workers_n=workers,
                                 timeout_s=page_timeout_s))
  return counts


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--pdf_dir", type=Path, required=True, help="folder searched for *.pdf")
  parser.add_argument("--dpi", type=float, default=144, help="render resolution (default 144)")
  parser.add_argument("--format", choices=sorted(FORMATS), default="webp",
                      help="page image format (default: lossless webp)")
  parser.add_argument("--pages", default="pool-native",
                      help="page-count selection: pool-native (32-50), long-biased (50-100), "
                           "any, or LO-HI")
  parser.add_argument("--exclude_hashes", type=Path,
                      help="file of SHA-256 digests of evaluation PDFs to drop (contamination)")
  parser.add_argument("--page_timeout", type=float, default=60.0,
                      help="seconds one page may take before its worker is killed")
  parser.add_argument("--max_page_pixels", type=int, default=tokens.MAX_PIXELS,
                      help="pages larger than this at --dpi are rendered at a lower dpi "
                           "(default: Qwen2.5-VL's max_pixels, beyond which it downscales)")


def run_from_args(args: argparse.Namespace) -> collections.Counter:
  return run(args.pdf_dir, args.out, dpi=args.dpi, fmt=args.format, pages=args.pages,
             exclude_hashes=args.exclude_hashes, page_timeout_s=args.page_timeout,
             max_page_pixels=args.max_page_pixels, workers=args.workers)


if __name__ == "__main__":
  common.stage_main(sys.modules[__name__])
