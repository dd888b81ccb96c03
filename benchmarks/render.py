"""Render benchmarks for data_tools (results in benchmarks/README.md, section "Data tools").

  python benchmarks/render.py speed [--pdf_dir DIR] [--format webp] [--repeat 3]
      Pages/s on one core: data_tools.render (one worker process, with hashing, heartbeats,
      atomic writes and records) vs PyMuPDF's bare loop (page.get_pixmap(dpi=144) + encode, no
      writes) over the same files.
  python benchmarks/render.py formats [--pdf_dir DIR]
      Size, fidelity (PSNR against the raw pixmap) and encode/decode time per page image format.
"""
from __future__ import annotations

import argparse
import io
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image

from data_tools import render

DEFAULT_PDFS = Path(__file__).resolve().parents[1].parent / "shared/testdata/pdfs"
TEXT_HEAVY = ["nist_sp800-223_hpc_security.pdf", "irs_i1040nr_2007_instructions.pdf",
              "pdkids_public_domain_stories.pdf", "dmca_summary_us_copyright_office.pdf",
              "mdpi_ki67_breast_cancer.pdf"]


def bare_loop(paths: list[Path], fmt: str, dpi: int = 144) -> int:
  pages = 0
  for path in paths:
    with pymupdf.open(path) as doc:
      for page in doc:
        render.encode(page.get_pixmap(dpi=dpi), fmt)
        pages += 1
  return pages


def stage_run(paths: list[Path], fmt: str, dpi: int = 144) -> int:
  with tempfile.TemporaryDirectory() as tmp:
    pdfs = Path(tmp) / "pdfs"
    pdfs.mkdir()
    for p in paths:
      shutil.copy(p, pdfs / p.name)
    counts = render.run(pdfs, Path(tmp) / "out", dpi=dpi, fmt=fmt, pages="any", workers=1)
    assert counts == {"done": len(paths)}, counts
    return sum(pymupdf.open(p).page_count for p in paths)


def _cpu_s() -> float:
  """CPU seconds of this process and of its finished (joined) children."""
  usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
  return sum(u.ru_utime + u.ru_stime for u in usage)


def speed(args) -> None:
  render.quiet_mupdf()
  paths = [args.pdf_dir / f for f in TEXT_HEAVY]
  cpu = {"bare": [], "stage": []}
  wall = {"bare": [], "stage": []}
  for _ in range(args.repeat):  # interleaved, so machine load affects both alike
    for name, fn in (("bare", bare_loop), ("stage", stage_run)):
      c0, t0 = _cpu_s(), time.perf_counter()
      pages = fn(paths, args.format)
      cpu[name].append(pages / (_cpu_s() - c0))
      wall[name].append(pages / (time.perf_counter() - t0))
  print(f"{pages} pages x {args.repeat} runs, format {args.format}, 144 DPI, median of runs")
  for label, rates in (("pages per CPU-second", cpu), ("wall-clock pages/s", wall)):
    bare, stage = statistics.median(rates["bare"]), statistics.median(rates["stage"])
    print(f"{label}: bare PyMuPDF loop {bare:.2f}, data_tools.render {stage:.2f}, "
          f"ratio {stage / bare:.1%}")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def _pil(image: Image.Image, **kw) -> bytes:
  buf = io.BytesIO()
  image.save(buf, "WEBP", **kw)
  return buf.getvalue()


def formats(args) -> None:
  render.quiet_mupdf()
  encoders = {
      "png (MuPDF)": lambda pix, im: render.encode(pix, "png"),
      "jpeg q90 (MuPDF)": lambda pix, im: render.encode(pix, "jpeg"),
      "webp lossy q90": lambda pix, im: _pil(im, quality=90),
      "webp lossless m0": lambda pix, im: _pil(im, lossless=True, method=0),
      "webp lossless m4 (chosen)": lambda pix, im: render.encode(pix, "webp"),
  }
  stats = {k: {"bytes": 0, "enc": 0.0, "dec": 0.0, "psnr": []} for k in encoders}
  n = 0
  for name in TEXT_HEAVY:
    with pymupdf.open(args.pdf_dir / name) as doc:
      for i in range(0, doc.page_count, max(1, doc.page_count // 6)):
        pix = doc[i].get_pixmap(dpi=144)
        raw = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.width, 3)
        image = Image.frombuffer("RGB", (pix.width, pix.height), pix.samples, "raw", "RGB", 0, 1)
        n += 1
        for k, enc in encoders.items():
          t0 = time.perf_counter()
          data = enc(pix, image)
          t1 = time.perf_counter()
          decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
          t2 = time.perf_counter()
          s = stats[k]
          s["bytes"] += len(data)
          s["enc"] += t1 - t0
          s["dec"] += t2 - t1
          s["psnr"].append(_psnr(raw, decoded))
  print(f"{n} pages sampled from {len(TEXT_HEAVY)} text-heavy PDFs at 144 DPI\n")
  print("| format | KiB/page | encode ms/page | decode ms/page | PSNR min / mean (dB) |")
  print("|---|---|---|---|---|")
  for k, s in stats.items():
    lo, mean = min(s["psnr"]), statistics.mean(s["psnr"])
    quality = "lossless" if lo == float("inf") else f"{lo:.1f} / {mean:.1f}"
    print(f"| {k} | {s['bytes'] / n / 1024:.0f} | {1000 * s['enc'] / n:.0f} | "
          f"{1000 * s['dec'] / n:.0f} | {quality} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="cmd", required=True)
  for name in ("speed", "formats"):
    p = sub.add_parser(name)
    p.add_argument("--pdf_dir", type=Path, default=DEFAULT_PDFS)
    if name == "speed":
      p.add_argument("--format", choices=sorted(render.FORMATS), default="webp")
      p.add_argument("--repeat", type=int, default=3)
  args = parser.parse_args()
  speed(args) if args.cmd == "speed" else formats(args)


if __name__ == "__main__":
  main()
