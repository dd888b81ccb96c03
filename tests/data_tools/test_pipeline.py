"""The whole chain as a command: a clean run; kill + resume gives the same bytes; bad inputs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymupdf

from data_tools import io_utils, schema
import dt_pdfs

REPO = Path(__file__).parents[2]


def _inputs(folder: Path) -> Path:
  folder.mkdir()
  dt_pdfs.make_report(folder / "report14.pdf", pages=14)
  dt_pdfs.make_report(folder / "report12.pdf", pages=12, toc=False)
  dt_pdfs.make_plain(folder / "plain.pdf", 10)
  dt_pdfs.make_plain(folder / "tiny.pdf", 2)
  (folder / "truncated.pdf").write_bytes((folder / "plain.pdf").read_bytes()[:400])
  doc = pymupdf.open()
  doc.new_page().insert_text((72, 72), "secret")
  doc.save(folder / "locked.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u",
           owner_pw="o")
  return folder


def _cmd(pdfs: Path, out: Path) -> list[str]:
  return [sys.executable, "-m", "data_tools.pipeline", "--pdf_dir", str(pdfs), "--out", str(out),
          "--pages", "4-60", "--dpi", "20", "--segment_pages", "5-7", "--workers", "2",
          "--seed", "7"]


def _snapshot(out: Path) -> dict[str, bytes]:
  """Every output file except temporaries and the (unstable) PNG plots."""
  return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
          if p.is_file() and not p.name.startswith(".") and p.suffix != ".png"}


def test_pipeline_clean_run_and_resume_after_kill(tmp_path):
  pdfs = _inputs(tmp_path / "pdfs")
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  clean = tmp_path / "clean"
  subprocess.run(_cmd(pdfs, clean), check=True, env=env, capture_output=True, timeout=300)

  insts = list(io_utils.read_jsonl(clean / "instances" / "long.jsonl"))
  for inst in insts:
    schema.validate_instance(inst)
  tasks = sorted(i["task"] for i in insts)
  assert tasks.count("ocr_full") == 3 and tasks.count("ocr_needle") == 3
  assert tasks.count("extract_single") == 2  # the plain document has nothing to ask about
  report = io_utils.read_json(clean / "report" / "report.json")
  assert report["skips"] == {"render": {"encrypted": 1, "open_failed": 1, "page_count": 1}}
  assert report["teacher"]["rejected"] == {"no_material": 3}
  assert (clean / "report" / "hist_reasoning.png").is_file()

  # Kill a second run mid-way (no cleanup runs), leave a stray temp file, then resume.
  resumed = tmp_path / "resumed"
  proc = subprocess.Popen(_cmd(pdfs, resumed), env=env, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 120
  while not list(resumed.glob("docs/*/render.json")) and time.monotonic() < deadline:
    time.sleep(0.02)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (resumed / "instances").exists(), "the run finished before it was killed"
  page_dir = next(resumed.glob("docs/*/pages"), None)
  if page_dir is not None:
    (page_dir / ".0001.webp.123.abcd.tmp").write_bytes(b"half a page")
  subprocess.run(_cmd(pdfs, resumed), check=True, env=env, capture_output=True, timeout=300)
  assert _snapshot(resumed) == _snapshot(clean)

  # A third run finds all done and rewrites identical files.
  result = subprocess.run(_cmd(pdfs, resumed), check=True, env=env, capture_output=True,
                          text=True, timeout=300)
  assert "already_done" in result.stderr and _snapshot(resumed) == _snapshot(clean)
