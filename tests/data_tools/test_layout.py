"""Layout parsing: exact labels on generated PDFs, reading order, scans, VLM backend, real PDFs."""
from __future__ import annotations

import json

import pymupdf
import pytest

from data_tools import chat_client, common, layout, layout_parse, layout_vlm, render
import dt_pdfs
from dt_chat_server import Reply, chat_body


def _parse(path):
  render.quiet_mupdf()
  with pymupdf.open(path) as doc:
    return layout_parse.parse_document(doc)


def _labels(page, skip=("paragraph",)):
  return [(b["label"], b["text"]) for b in page["blocks"] if b["label"] not in skip]


@pytest.mark.parametrize("toc", [True, False], ids=["outline", "font-style"])
def test_generated_report_is_parsed_exactly(tmp_path, toc):
  parsed = _parse(dt_pdfs.make_report(tmp_path / "report.pdf", toc=toc))
  assert parsed["title"] == dt_pdfs.TITLE and parsed["body_size"] == 11.0
  pages = parsed["pages"]
  headings = {p: h for p, h in dt_pdfs.SECTIONS}
  captions = {p: f"{label}: {text}" for p, label, text in dt_pdfs.CAPTIONS}
  tables = {dt_pdfs.TABLE_PAGE: dt_pdfs.TABLE, dt_pdfs.SECOND_TABLE_PAGE: dt_pdfs.SECOND_TABLE}
  for page in pages:
    n = page["page"]
    want = [("header", dt_pdfs.HEADER)]
    want += [("title", dt_pdfs.TITLE)] if n == 1 else []
    want += [("section_heading", headings[n])] if n in headings else []
    want += [("table", "\n".join(" | ".join(r) for r in tables[n]))] if n in tables else []
    want += [("figure_caption", captions[n])] if n in captions else []
    want += [("footer", f"Page {n}")]
    assert _labels(page) == want, n
    paragraphs = [b["text"] for b in page["blocks"] if b["label"] == "paragraph"]
    assert paragraphs == [dt_pdfs.PARAGRAPH] * 3
    assert [b["order"] for b in page["blocks"]] == list(range(len(page["blocks"])))
    assert not page["needs_ocr"] and page["source"] == "text"
  table = next(b for b in pages[dt_pdfs.TABLE_PAGE - 1]["blocks"] if b["label"] == "table")
  assert table["rows"] == dt_pdfs.TABLE
  assert table["bbox"][0] == pytest.approx(72, abs=1)
  assert table["bbox"][2] == pytest.approx(492, abs=1)
  if toc:
    levels = [b.get("level") for p in pages for b in p["blocks"] if b["label"] == "section_heading"]
    assert levels == [1] * len(dt_pdfs.SECTIONS)


def test_two_columns_are_read_column_by_column(tmp_path):
  doc = pymupdf.open()
  page = doc.new_page()
  page.insert_text((72, 60), "A Two Column Page", fontsize=20)
  for i in range(4):  # lines written row by row, across both columns
    page.insert_text((72, 120 + 14 * i), f"left line {i}", fontsize=10)
    page.insert_text((330, 120 + 14 * i), f"right line {i}", fontsize=10)
  closing = "A closing paragraph that runs across the full width of the page text."
  page.insert_text((72, 400), closing, fontsize=10)
  doc.save(tmp_path / "cols.pdf")
  texts = [b["text"] for b in _parse(tmp_path / "cols.pdf")["pages"][0]["blocks"]]
  assert texts == ["A Two Column Page", "left line 0 left line 1 left line 2 left line 3",
                   "right line 0 right line 1 right line 2 right line 3",
                   closing]


def test_non_latin_text_is_kept(tmp_path):
  doc = pymupdf.open()
  page = doc.new_page()
  page.insert_text((72, 100), "港口水质年度报告", fontsize=22, fontname="china-s")
  page.insert_text((72, 160), "采样在低潮时进行。", fontsize=11, fontname="china-s")
  doc.save(tmp_path / "cjk.pdf")
  parsed = _parse(tmp_path / "cjk.pdf")
  assert parsed["title"] == "港口水质年度报告"
  assert _labels(parsed["pages"][0], skip=()) == [("title", "港口水质年度报告"),
                                                   ("paragraph", "采样在低潮时进行。")]


def _rendered(tmp_path, pdf_maker):
  pdfs = tmp_path / "pdfs"
  pdfs.mkdir(exist_ok=True)
  path = pdf_maker(pdfs)
  out = tmp_path / "out"
  render.run(pdfs, out, dpi=20, pages="any", workers=1)
  return out, render.file_sha256(path)


def test_scanned_pages_are_marked_then_read_by_the_vlm_backend(tmp_path, serve):
  out, doc_id = _rendered(tmp_path,
                          lambda d: dt_pdfs.make_plain(d / "scan.pdf", 2, image_only=True))
  layout.run(out, workers=1)
  rec = common.load_record(out, "layout", doc_id)
  pages = [(p["needs_ocr"], p["source"], p["blocks"]) for p in rec["pages"]]
  assert pages == [(True, "none", [])] * 2

  reply = json.dumps([{"label": "section_heading", "bbox": [100, 50, 500, 80], "text": "Notice"},
                      {"label": "paragraph", "bbox": [100, 100, 900, 300], "text": "Keep  dry."},
                      {"label": "mystery", "bbox": "bad", "text": "Stamp"}])
  server = serve(lambda body, n: Reply(200, chat_body("```json\n" + reply + "\n```"))
                 if n != 1 else Reply(200, chat_body("I cannot read this page.")))
  # one request at a time, so the second page is the one that fails
  client = chat_client.ChatClient(server.base_url, "ocr-model", cache_dir=tmp_path / "cache",
                                  backoff_s=0.01, concurrency=1)
  counts = layout.run(out, workers=1, client=client)
  assert counts["ocr_pages"] + counts["ocr_failed"] == 2 and counts["ocr_failed"] == 1
  rec = common.load_record(out, "layout", doc_id)
  good = next(p for p in rec["pages"] if p["source"] == "vlm")
  assert [(b["label"], b["text"], b["order"]) for b in good["blocks"]] == [
      ("section_heading", "Notice", 0), ("paragraph", "Keep dry.", 1), ("paragraph", "Stamp", 2)]
  assert good["blocks"][0]["bbox"] == [61.2, 39.6, 306.0, 63.36]  # 0-1000 -> points on 612x792
  bad = next(p for p in rec["pages"] if p["source"] != "vlm")
  assert bad["needs_ocr"] and "no JSON array" in bad["ocr_error"]
  sent = server.requests[0]["body"]["messages"][0]["content"]
  assert sent[0]["type"] == "image_url" and sent[1]["text"] == layout_vlm.PROMPT


def test_real_born_digital_pdfs(shared_pdfs):
  nist = _parse(shared_pdfs / "nist_sp800-223_hpc_security.pdf")
  headings = [(p["page"], b["text"]) for p in nist["pages"] for b in p["blocks"]
              if b["label"] == "section_heading"]
  assert len(headings) == len(nist["toc"]) == 39  # every outline entry found on its page
  assert headings[0] == (9, "1. Introduction")
  assert nist["title"] == "High-Performance Computing Security"
  page9 = nist["pages"][8]["blocks"]
  assert page9[0]["label"] == "header"
  assert (page9[-1]["label"], page9[-1]["text"]) == ("footer", "1")

  ki67 = _parse(shared_pdfs / "mdpi_ki67_breast_cancer.pdf")  # outline titles lack the numbers
  found = [b["text"] for p in ki67["pages"] for b in p["blocks"] if b["label"] == "section_heading"]
  assert found[:3] == ["1. Background", "2. Questions to Address", "3. Summary and Recommendations"]
  captions = [b["text"][:8] for p in ki67["pages"] for b in p["blocks"]
              if b["label"] == "figure_caption"]
  assert captions[:3] == ["Figure 1", "Figure 2", "Figure 3"]

  scan = _parse(shared_pdfs / "broken_xref_scanned_bulletin.pdf")
  assert [p["needs_ocr"] for p in scan["pages"]] == [True, True]
