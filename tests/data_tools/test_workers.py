"""The supervised pool: results, raised errors, hard crashes and silent workers."""
from __future__ import annotations

import os
import time

from data_tools import workers


def _job(item, beat):
  kind, n = item
  for i in range(n):
    beat(f"step {i}")
  if kind == "hang":
    time.sleep(60)
  if kind == "raise":
    raise ValueError("bad item")
  if kind == "crash":
    os._exit(3)
  return n * 10


def test_pool_isolates_bad_items():
  items = [("ok", 1), ("hang", 2), ("ok", 2), ("raise", 0), ("crash", 1), ("ok", 3)]
  t0 = time.monotonic()
  out = {items[i]: r for i, r in workers.run(_job, items, workers=2, timeout_s=1.0)}
  assert time.monotonic() - t0 < 30
  assert out[("ok", 1)] == 10 and out[("ok", 2)] == 20 and out[("ok", 3)] == 30
  assert out[("hang", 2)] == workers.Failure("timeout", "timed out after 1s at step 1")
  assert out[("raise", 0)].kind == "error" and "ValueError: bad item" in out[("raise", 0)].reason
  assert out[("crash", 1)].kind == "died"
  assert out[("crash", 1)].reason.startswith("worker process died (exit code 3) at step 0")
