"""Render stage: real broken PDFs, selection, contamination, per-page time limit, huge pages."""
from __future__ import annotations

import csv
import hashlib
import io
import random
import shutil

import numpy as np
import pymupdf
from PIL import Image

from data_tools import common, io_utils, render
import dt_pdfs

NASTY = ["encrypted_user_password.pdf", "zero_pages_broken_pagetree.pdf", "truncated_no_xref.pdf",
         "broken_xref_scanned_bulletin.pdf", "dmca_summary_us_copyright_office.pdf"]


def _manifest(shared_pdfs):
  with open(shared_pdfs / "MANIFEST.tsv", newline="") as f:
    return {r["file"]: r for r in csv.DictReader(f, delimiter="\t")}


def test_real_pdfs_render_or_skip_with_reason(shared_pdfs, tmp_path):
  pdfs = tmp_path / "pdfs"
  pdfs.mkdir()
  for name in NASTY:
    shutil.copy(shared_pdfs / name, pdfs / name)
  out = tmp_path / "out"
  counts = render.run(pdfs, out, dpi=36, pages="any", workers=2)
  assert counts == {"done": 2, "skipped": 3}
  manifest = _manifest(shared_pdfs)
  reasons = {}
  for name in NASTY:
    doc_id = render.file_sha256(pdfs / name)
    assert doc_id.startswith(manifest[name]["sha256_16"])
    skip = common.skip_path(out, "render", doc_id)
    if skip.exists():
      reasons[name] = io_utils.read_json(skip)["reason"]
    else:
      rec = common.load_record(out, "render", doc_id)
      assert rec["n_pages"] == int(manifest[name]["pages_mupdf"])
      assert all((out / p["image"]).is_file() for p in rec["pages"])
      reasons[name] = "rendered, repaired" if rec["repaired"] else "rendered"
  assert reasons == {
      "encrypted_user_password.pdf": "encrypted",
      "zero_pages_broken_pagetree.pdf": "zero_pages",
      "truncated_no_xref.pdf": "zero_pages",
      "broken_xref_scanned_bulletin.pdf": "rendered, repaired",
      "dmca_summary_us_copyright_office.pdf": "rendered",  # owner-password only: opens
  }
  assert common.skip_counts(out) == {"render": {"encrypted": 1, "zero_pages": 2}}
  # A rerun finds everything done and changes nothing.
  before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file())
  assert render.run(pdfs, out, dpi=36, pages="any", workers=2) == {"already_done": 5}
  assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()) == before


def test_selection_contamination_duplicates_and_non_pdf(tmp_path):
  pdfs = tmp_path / "pdfs"
  pdfs.mkdir()
  short = dt_pdfs.make_plain(pdfs / "short.pdf", 2)
  dt_pdfs.make_plain(pdfs / "ok.pdf", 5)
  shutil.copy(pdfs / "ok.pdf", pdfs / "ok_copy.pdf")
  evaluation = dt_pdfs.make_plain(pdfs / "eval.pdf", 4, text="Benchmark page {n}")
  (pdfs / "notes.PDF").write_bytes(b"this is not a pdf at all")
  hashes = tmp_path / "eval_hashes.txt"
  hashes.write_text(f"# evaluation documents\n{render.file_sha256(evaluation)}  eval.pdf\n")
  out = tmp_path / "out"
  counts = render.run(pdfs, out, dpi=20, pages="3-10", exclude_hashes=hashes, workers=1)
  assert counts["duplicate"] == 1 and counts["contaminated"] == 1
  skips = common.skip_counts(out)["render"]
  assert skips == {"contaminated": 1, "open_failed": 1, "page_count": 1}
  assert common.finished_docs(out, "render") == [render.file_sha256(pdfs / "ok.pdf")]
  detail = io_utils.read_json(common.skip_path(out, "render", render.file_sha256(short)))["detail"]
  assert detail == "2 pages, outside [3, 10]"


def test_page_range_presets():
  assert render.parse_page_range("pool-native") == (32, 50)
  assert render.parse_page_range("long-biased") == (50, 100)
  assert render.parse_page_range("8-15") == (8, 15)
  for bad in ("15-8", "x", "0-3"):
    try:
      render.parse_page_range(bad)
    except ValueError as e:
      assert "page range" in str(e)
    else:
      raise AssertionError(bad)


def _heavy_pdf(path, lines=12000):
  """Page 1 is trivial; page 2 carries so many vector lines that rendering takes seconds."""
  doc = pymupdf.open()
  doc.new_page().insert_text((72, 72), "fine")
  shape = doc.new_page().new_shape()
  rng = random.Random(0)
  for _ in range(lines):
    a = (rng.random() * 612, rng.random() * 792)
    shape.draw_line(a, (rng.random() * 612, rng.random() * 792))
  shape.finish(width=0.3)
  shape.commit()
  doc.save(path)


def test_page_that_never_finishes_is_killed(tmp_path):
  pdfs = tmp_path / "pdfs"
  pdfs.mkdir()
  _heavy_pdf(pdfs / "heavy.pdf")
  dt_pdfs.make_plain(pdfs / "light.pdf", 2)
  out = tmp_path / "out"
  counts = render.run(pdfs, out, dpi=36, pages="any", page_timeout_s=0.5, workers=1)
  assert counts == {"done": 1, "skipped": 1}
  rec = io_utils.read_json(common.skip_path(out, "render", render.file_sha256(pdfs / "heavy.pdf")))
  assert rec["reason"] == "timeout" and rec["detail"] == "timed out after 0.5s at page 2/2"


def test_huge_page_is_rendered_within_the_pixel_cap(tmp_path):
  pdfs = tmp_path / "pdfs"
  pdfs.mkdir()
  doc = pymupdf.open()
  doc.new_page(width=5000, height=3000).insert_text((100, 100), "poster", fontsize=200)
  doc.save(pdfs / "poster.pdf")
  out = tmp_path / "out"
  render.run(pdfs, out, dpi=144, pages="any", max_page_pixels=1_000_000, workers=1)
  page = common.load_record(out, "render", render.file_sha256(pdfs / "poster.pdf"))["pages"][0]
  assert page["width"] * page["height"] <= 1_000_000 and page["dpi"] < 144
  assert Image.open(out / page["image"]).size == (page["width"], page["height"])


def test_webp_is_lossless_and_smaller_than_png(shared_pdfs):
  with pymupdf.open(shared_pdfs / "nist_sp800-223_hpc_security.pdf") as doc:
    pix = doc[9].get_pixmap(dpi=72)
  webp, png = render.encode(pix, "webp"), render.encode(pix, "png")
  decoded = np.asarray(Image.open(io.BytesIO(webp)).convert("RGB"))
  original = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.width, 3)
  assert np.array_equal(decoded, original) and len(webp) < len(png)


def test_doc_id_is_sha256_of_bytes(tmp_path):
  path = dt_pdfs.make_plain(tmp_path / "a.pdf", 1)
  assert render.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
