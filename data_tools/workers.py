"""Supervised worker processes with a heartbeat time limit.

`run(fn, items, ...)` calls `fn(item, beat)` in worker processes and yields `(index, result)` as
items finish (in completion order; `index` is the item's position in `items`). `fn` calls
`beat("page 7")` after every unit of work; if a worker stays silent for longer than `timeout_s`
(a page whose render never finishes, a parser stuck in C code), the parent kills that process,
yields `(index, Failure(...))` naming the last unit reached, and starts a fresh worker. A worker
that dies (segfault in a C library, out of memory) or an `fn` that raises produce a Failure too;
other items are unaffected.

A signal-based timeout inside the worker would not work here: Python signal handlers only run
between bytecodes, so they cannot interrupt a long call into MuPDF. Killing the process can.
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing
import multiprocessing.connection
import time
import traceback
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

# Workers are spawned, not forked: the parent may have started threads (JAX in tests, the chat
# client's pool) and forking a threaded process can deadlock.
_CTX = multiprocessing.get_context("spawn")


@dataclasses.dataclass(frozen=True)
class Failure:
  """Why an item produced no result: `kind` is "timeout", "died" or "error"."""
  kind: str
  reason: str


def _worker_main(fn: Callable[[Any, Callable[[str], None]], Any], conn) -> None:
  def beat(note: str) -> None:
    conn.send(("beat", note))

  while True:
    try:
      item = conn.recv()
    except EOFError:  # the parent went away
      return
    if item is None:
      return
    conn.send(("beat", "start"))
    try:
      conn.send(("done", fn(item, beat)))
    except Exception as e:  # report, keep the worker alive for the next item
      tb = traceback.format_exc(limit=3)
      conn.send(("error", f"{type(e).__name__}: {e}\n{tb}"))


class _Slot:
  """One worker process and the item it is working on."""

  def __init__(self, fn):
    self.conn, child = _CTX.Pipe()
    self.proc = _CTX.Process(target=_worker_main, args=(fn, child), daemon=True)
    self.proc.start()
    child.close()
    self.index = -1
    self.busy = False
    self.fresh = True  # no heartbeat yet: still importing, gets `startup_s`
    self.note = "start"
    self.last_beat = 0.0

  def give(self, job: tuple[int, Any]) -> None:
    self.index, self.busy, self.note = job[0], True, "waiting for the worker to start"
    self.last_beat = time.monotonic()
    self.conn.send(job[1])

  def deadline(self, startup_s: float, timeout_s: float | None) -> float:
    """When this busy worker counts as stuck: `startup_s` until its first heartbeat (imports),
    then `timeout_s` after each heartbeat; math.inf without a limit."""
    limit = startup_s if self.fresh else timeout_s
    return math.inf if limit is None else self.last_beat + limit

  def kill(self) -> None:
    self.proc.kill()
    self.proc.join()
    self.conn.close()

  def stop(self) -> None:
    """Asks an idle worker to exit; kills it if it is busy or does not go."""
    if self.proc.is_alive() and not self.busy:
      try:
        self.conn.send(None)
      except OSError:
        pass
      self.proc.join(timeout=2)
    if self.proc.is_alive():
      self.kill()


def run(fn: Callable[[Any, Callable[[str], None]], Any], items: Iterable[Any], *, workers: int,
        timeout_s: float | None = None, startup_s: float = 120.0,
        desc: str | None = None) -> Iterator[tuple[int, Any]]:
  """Yields (index, fn(item, beat) or Failure) for every item; see the module docstring.

  `fn` must be picklable (a module-level function or a functools.partial of one). `timeout_s`
  bounds the time between two heartbeats; `startup_s` bounds a fresh worker's start (imports).
  """
  pending = list(enumerate(items))
  pending.reverse()  # pop() from the end keeps the input order of dispatch
  slots = [_Slot(fn) for _ in range(max(1, min(workers, len(pending))))] if pending else []
  bar = tqdm(total=len(pending), desc=desc, disable=desc is None, dynamic_ncols=True)
  try:
    for s in slots:
      if pending:
        s.give(pending.pop())
    while any(s.busy for s in slots):
      busy = [s for s in slots if s.busy]
      first = min(s.deadline(startup_s, timeout_s) for s in busy)
      wait_s = None if first == math.inf else max(0.0, first - time.monotonic())
      ready = multiprocessing.connection.wait([s.conn for s in busy], timeout=wait_s)
      for s in busy:
        restart = False
        if s.conn in ready:
          try:
            kind, payload = s.conn.recv()
          except (EOFError, OSError):
            s.proc.join(timeout=5)
            result = Failure("died",
                             f"worker process died (exit code {s.proc.exitcode}) at {s.note}")
            restart = True
          else:
            if kind == "beat":
              s.note, s.last_beat, s.fresh = payload, time.monotonic(), False
              continue
            result = payload if kind == "done" else Failure("error",
                                                            f"error at {s.note}: {payload}")
        else:
          if time.monotonic() <= s.deadline(startup_s, timeout_s):
            continue
          limit = startup_s if s.fresh else timeout_s
          result = Failure("timeout", f"timed out after {limit:g}s at {s.note}")
          restart = True
        index, s.busy = s.index, False
        if restart:
          s.kill()
          i = slots.index(s)
          s = slots[i] = _Slot(fn)
        bar.update(1)
        yield index, result
        if pending:
          s.give(pending.pop())
  finally:
    bar.close()
    for s in slots:
      s.stop()
