"""Fixtures for data_tools tests: real test PDFs and a scripted loopback chat server."""
from __future__ import annotations

from pathlib import Path

import pytest

from dt_chat_server import ScriptedServer

SHARED_PDFS = Path(__file__).parents[2].parent / "shared/testdata/pdfs"


@pytest.fixture
def shared_pdfs() -> Path:
  if not SHARED_PDFS.is_dir():
    pytest.skip(f"shared test PDFs not found at {SHARED_PDFS} (clone shared/ beside the repo)")
  return SHARED_PDFS


@pytest.fixture
def serve():
  """Starts ScriptedServer(script) instances and closes them after the test."""
  servers = []

  def start(script):
    s = ScriptedServer(script)
    servers.append(s)
    return s

  yield start
  for s in servers:
    s.close()
