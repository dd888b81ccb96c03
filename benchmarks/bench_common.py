"""Shared by the train-step benchmark's driver and workers: the --jobs syntax, the results
table, the row, the model shape, FLOPs."""
from __future__ import annotations

import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

LLM_LAYERS, VIT_DEPTH, FULLATT = 4, 8, (3, 7)
PAGE_GRID = (1, 114, 88)
ANSWER_LEN = 32
ROW_EXTRA = 512            # question text + answer: 448 + 32 tokens, plus slack
MAX_LOSS_TOKENS = 256
# Everything in the README table; more than one 9-minute GPU call holds (the README lists the
# three --jobs plans that produced it), so --deadline skips what does not fit and says so.
TINY = {"page_grid": (1, 8, 8), "extra": 100}


# ----------------------------------------------------------------------------------------------
# Shared: the row
# ----------------------------------------------------------------------------------------------
def row_shape(length: int, tiny: bool):
  """(page grid, pages, segment length): pages + question text + answer, one segment."""
  grid = TINY["page_grid"] if tiny else PAGE_GRID
  extra = TINY["extra"] if tiny else ROW_EXTRA
  per_page = grid[0] * grid[1] * grid[2] // 4 + 2
  pages = max((length - extra) // per_page, 1)
  seg_len = pages * per_page + extra - 32   # 32 tokens of slack stay padding
  return grid, pages, min(seg_len, length)


def model_cfg(length: int, tiny: bool, config=None):
  """Our ModelConfig exactly as the trainer builds it from the benchmark's config, depth cut."""
  from mmprolong_jax import setup
  config = config or jax_config(length, tiny)
  cfg = setup.model_config(config)
  if tiny:
    return cfg
  return cfg.replace_text(num_layers=LLM_LAYERS).replace_vision(depth=VIT_DEPTH,
                                                                 fullatt_block_indexes=FULLATT)


def make_batch(cfg, length: int, tiny: bool, config=None):
  """numpy batch in the loader's contract (synthetic_batch, the config's vision geometry),
  patches in bf16."""
  import ml_dtypes
  from mmprolong_jax.data.synthetic import synthetic_batch
  from mmprolong_jax.model.vision_layout import VisionGeometry
  config = config or jax_config(length, tiny)
  grid, pages, seg_len = row_shape(length, tiny)
  fill = (seg_len + 0.5) / length
  batch = synthetic_batch(0, 0, cfg, rows=1, max_len=length,
                          geometry=VisionGeometry.from_config(config.data),
                          page_grid=grid, pages_per_segment=(pages,),
                          answer_len=ANSWER_LEN, fill=fill)
  batch["patches"] = batch["patches"].astype(ml_dtypes.bfloat16)
  real = int((batch["segment_ids"] > 0).sum())
  info = {"length": length, "pages": pages, "real_tokens": real,
          "image_tokens": int((batch["input_ids"] == cfg.image_token_id).sum()),
          "patches": int((batch["image_segments"] > 0).sum()),
          "windows": int(batch["window_segments"].max()),
          "loss_positions": int(batch["loss_mask"].sum())}
  return batch, info


def flops_of(cfg, batch):
  from mmprolong_jax.flops import step_flops
  return {k: float(v) for k, v in step_flops(cfg, batch).items()}


def _median(xs):
  return statistics.median(xs) if xs else None


def jax_config(length: int, tiny: bool):
  from configs import base
  from mmprolong_jax.data import sources
  c = base.get_config()
  if tiny:
    c.model.preset = "tiny"
    c.model.max_position_embeddings = 4096
  c.attention.backend = "blockwise" if tiny else "cudnn"
  c.attention.local_backend = "blockwise" if tiny else "cudnn"
  c.attention.max_segments = 2
  if tiny:
    c.attention.block_q = c.attention.block_kv = 64
  c.mesh.data = c.mesh.fsdp = c.mesh.sequence = c.mesh.tensor = 1
  c.data.source = "synthetic"
  c.data.max_len = length
  c.data.update(sources.vision_slots(length))
  if tiny:   # many 64-patch pages
    c.attention.vision_backend = "blockwise"
    c.data.image_rows, c.data.image_row_len = 128, 64
  c.data.global_batch_tokens = length
  c.train.max_loss_tokens = MAX_LOSS_TOKENS
  return c


# ----------------------------------------------------------------------------------------------
# The driver: --jobs entries and the results table
# ----------------------------------------------------------------------------------------------
def parse_job(s: str) -> dict:
  if "|" in s:
    return {"kind": "alt", "alts": [parse_job(a) for a in s.split("|")], "name": s}
  p = s.split(":")
  if p[0] == "ceil":
    return {"kind": "ceil", "which": p[1], "name": s}
  if p[0] == "ours":
    return {"kind": "ours", "length": int(p[1]), "extra": p[2] if len(p) > 2 else "", "name": s}
  if p[0] == "hf":
    return {"kind": "hf", "length": int(p[1]), "backend": p[2] if len(p) > 2 else "flash",
            "dtype": p[3] if len(p) > 3 else "bf16", "extra": p[4] if len(p) > 4 else "", "name": s}
  if p[0] == "search":
    return {"kind": "search", "fw": p[1], "lengths": [int(x) for x in p[2].split("/")],
            "opt": p[3] if len(p) > 3 else "", "name": s}
  raise ValueError(f"bad job {s!r}")


def ceiling_of(results) -> float | None:
  vals = [r["tflops"] for r in results if r.get("framework", "").startswith("ceiling") and
          r.get("status") == "ok"]
  return max(vals) if vals else None


def fmt_table(results, ceiling) -> str:
  lines = []
  hdr = (f"{'job':<28} {'status':<7} {'tokens':>7} {'step s':>7} {'tok/s':>8} {'TFLOP/s':>8} "
         f"{'MFU%':>6} {'peak GiB':>8} {'compile':>7}")
  lines.append(hdr)
  lines.append("-" * len(hdr))
  for r in results:
    if r.get("framework", "").startswith("ceiling"):
      lines.append(f"{r['job']:<28} {r.get('status', '?'):<7} bf16 8192^3 matmul: "
                   f"{r.get('tflops', 0):.0f} TFLOP/s median ({r.get('device', '')})")
      continue
    st = r.get("status", "?")
    if st != "ok":
      err = (r.get("error") or "")[:150].replace("\n", " ")
      lines.append(f"{r['job']:<28} {st:<7} {err}")
      continue
    fl = sum(r["flops"].values())
    step = r["step_s"]
    tf = fl / step / 1e12
    mfu = 100 * tf / ceiling if ceiling else float("nan")
    lines.append(f"{r['job']:<28} {st:<7} {r['real_tokens']:>7} {step:>7.3f} "
                 f"{r['real_tokens'] / step:>8.0f} {tf:>8.1f} {mfu:>6.1f} "
                 f"{r.get('peak_gib', float('nan')):>8.1f} {r.get('compile_s', 0):>7.0f}")
  return "\n".join(lines)
