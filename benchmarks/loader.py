"""Loader throughput: host cost per page and per row, and rows/s / tokens/s per grain worker count.

    python3 benchmarks/loader.py [--pages PDF|DIR] [--save_pages DIR] [--micro_only]
        [--max_len 131072] [--pages_per_row 48] [--rows 4] [--workers 0,1,2] [--procs 1,2]
        [--patch_dtype float32] [--out DIR]

Pages: rendered from a PDF at 144 DPI as lossless WebP (data_tools.render's default format), read
from a folder of page images, or (no --pages) synthetic text-like US-letter pages. Micro costs
(numpy/PIL/JAX only, so they also run on a GPU host without the loader's packages): image decode
and `preprocess_image` per page at the checkpoint's pixel budget (a letter page -> ~10K patches,
~2.5K tokens) and its throughput with --procs processes side by side, then `mrope_position_ids`
and `pack_vision_rows` per row. The loader part writes a
shard of 8 rows of `--pages_per_row` pages each (Qwen2.5-VL token ids) and times `make_loader`
batches of one row per worker count. Prints a table; writes loader.json to --out
(default $OUT, else the working directory).
"""
import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmprolong_jax.data.image_processing import (  # noqa: E402
    CHECKPOINT_MAX_PIXELS, MIN_PIXELS, preprocess_image)
from mmprolong_jax.model.config import qwen2_5_vl_7b  # noqa: E402

MODEL = qwen2_5_vl_7b()
# One 131,072-token row on one H100, from DESIGN.md's cost model: (6 x 6.5e9 dense + 16e9 ViT
# + 92e9 causal attention) FLOP/token at 50% of the measured 696 TFLOP/s bf16 ceiling. The study's
# own pace (5 x 2^30 tokens in 2.9K H20 hours) is ~255 s per row on an H20.
GPU_SECONDS_PER_ROW = (6 * 6.5e9 + 16e9 + 92e9) * 131072 / (0.5 * 696e12)


def synthetic_page(rng) -> bytes:
  """A 1224x1584 (letter at 144 DPI) page of text lines, lossless WebP."""
  img = PIL.Image.new("RGB", (1224, 1584), "white")
  draw = PIL.ImageDraw.Draw(img)
  letters = list("abcdefghijklmnopqrstuvwxyz")
  for y in range(120, 1450, 22):
    x = 110
    while x < 1100:
      n = int(rng.integers(2, 12))
      draw.text((x, y), "".join(rng.choice(letters, n)), fill=(0, 0, 0))
      x += 7 * n + 8
  buf = io.BytesIO()
  img.save(buf, "WEBP", lossless=True, quality=80, method=4)
  return buf.getvalue()


def load_pages(source: str | None, count: int) -> list[bytes]:
  if source is None:
    rng = np.random.default_rng(0)
    return [synthetic_page(rng) for _ in range(count)]
  path = Path(source)
  if path.is_dir():
    return [p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()][:count]
  import pymupdf  # only needed to render a PDF
  from data_tools.render import encode
  with pymupdf.open(path) as doc:
    return [encode(doc[i].get_pixmap(matrix=pymupdf.Matrix(2, 2)), "webp")
            for i in range(min(count, len(doc)))]


def timed(fn, repeat):
  out, times = None, []
  for _ in range(repeat):
    t = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t)
  return out, statistics.median(times)


def _page_cost(data: bytes) -> float:
  t = time.perf_counter()
  preprocess_image(PIL.Image.open(io.BytesIO(data)), min_pixels=MIN_PIXELS,
                   max_pixels=CHECKPOINT_MAX_PIXELS)
  return time.perf_counter() - t


def pages_per_second(pages: list[bytes], procs: int, per_proc: int = 6) -> float:
  """Decode + preprocess throughput of `procs` processes working on pages side by side."""
  import multiprocessing
  work = [pages[i % len(pages)] for i in range(procs * per_proc)]
  with multiprocessing.get_context("spawn").Pool(procs) as pool:
    pool.map(_page_cost, work[:procs])  # start-up
    t = time.perf_counter()
    pool.map(_page_cost, work, chunksize=1)
    return len(work) / (time.perf_counter() - t)


def micro(pages: list[bytes], max_len: int, pages_per_row: int, patch_dtype: str) -> dict:
  import jax
  import jax.numpy as jnp
  from mmprolong_jax.model.position_ids import mrope_position_ids
  from mmprolong_jax.model.vision_layout import pack_vision_rows

  decode, prep, grids, patches = [], [], [], []
  for data in pages:
    image, t_dec = timed(lambda: PIL.Image.open(io.BytesIO(data)).convert("RGB"), 3)
    (page_patches, grid), t_prep = timed(lambda: preprocess_image(
        image, min_pixels=MIN_PIXELS, max_pixels=CHECKPOINT_MAX_PIXELS), 3)
    decode.append(t_dec)
    prep.append(t_prep)
    grids.append(tuple(int(g) for g in grid))
    patches.append(page_patches)
  picks = [i % len(pages) for i in range(pages_per_row)]
  row_grids = [grids[i] for i in picks]
  ids = np.zeros((1, max_len), np.int32)
  pos = 0
  for _, h, w in row_grids:
    n = h * w // 4
    ids[0, pos + 1:pos + 1 + n] = MODEL.image_token_id
    pos += n + 2
  if pos > max_len:
    raise ValueError(f"{pages_per_row} pages need {pos} tokens, more than max_len={max_len}")
  seg = np.zeros((1, max_len), np.int32)
  seg[0, :pos + 200] = 1
  grid = np.asarray(row_grids, np.int32)
  run = lambda: np.asarray(mrope_position_ids(ids, grid, segment_ids_BxT=seg,  # noqa: E731
                                              image_token_id=MODEL.image_token_id))
  with jax.default_device(jax.local_devices(backend="cpu")[0]):
    run()  # compile
    _, t_pos = timed(run, 3)
  row_patches = np.concatenate([patches[i] for i in picks])
  pack = {}
  for dtype in ("float32", "bfloat16"):
    _, pack[dtype] = timed(lambda: pack_vision_rows([row_patches], [row_grids], 4 * max_len,
                                                    MODEL.vision, dtype=jnp.dtype(dtype)), 2)
  t_pack = pack[patch_dtype]
  page_s = statistics.mean(decode) + statistics.mean(prep)
  return {
      "pages": len(pages), "page_bytes_mean": statistics.mean(len(p) for p in pages),
      "patches_per_page": statistics.mean(len(p) for p in patches),
      "tokens_per_page": statistics.mean(len(p) for p in patches) / 4,
      "decode_ms_per_page": 1e3 * statistics.mean(decode),
      "preprocess_ms_per_page": 1e3 * statistics.mean(prep),
      "positions_ms_per_row": 1e3 * t_pos,
      "pack_vision_rows_ms_per_row": {k: 1e3 * v for k, v in pack.items()},
      "host_s_per_row_est": pages_per_row * page_s + t_pos + t_pack,
  }


def write_shard(path: str, pages: list[bytes], rows: int, pages_per_row: int, max_len: int) -> int:
  """`rows` single-segment rows of `pages_per_row` pages; returns real tokens per row (mean)."""
  from array_record.python import array_record_module
  from data_tools.shard_plan import image_grid
  from mmprolong_jax.data import schema
  rng = np.random.default_rng(1)
  sizes = [PIL.Image.open(io.BytesIO(p)).size[::-1] for p in pages]
  grids = [image_grid(h, w, MIN_PIXELS, CHECKPOINT_MAX_PIXELS) for h, w in sizes]
  writer = array_record_module.ArrayRecordWriter(path, schema.WRITER_OPTIONS)
  lengths = []
  for r in range(rows):
    picks = [(r + i) % len(pages) for i in range(pages_per_row)]
    ids = []
    for i in picks:
      ids += [MODEL.vision_start_token_id] + [MODEL.image_token_id] * (grids[i][1] * grids[i][2] // 4)
      ids += [MODEL.vision_end_token_id]
    ids += rng.integers(0, 150000, 200).tolist()
    if len(ids) > max_len:
      raise ValueError(f"{pages_per_row} pages need {len(ids)} tokens, more than max_len={max_len}")
    lengths.append(len(ids))
    writer.write(schema.encode_row({
        "input_ids": np.asarray(ids, np.int32),
        "loss_mask": (np.arange(len(ids)) >= len(ids) - 20).astype(np.uint8),
        "segment_ids": np.ones(len(ids), np.int32), "images": [pages[i] for i in picks],
        "image_grid_thw": np.asarray([grids[i] for i in picks], np.int32),
        "image_size_hw": np.asarray([sizes[i] for i in picks], np.int32),
        "image_min_pixels": MIN_PIXELS, "image_max_pixels": CHECKPOINT_MAX_PIXELS,
        "segment_task": ["extract_single"], "segment_instance": [f"bench-{r}"],
        "segment_doc": ["bench"],
        "segment_num_images": np.asarray([pages_per_row], np.int32)}))
  writer.close()
  return int(np.mean(lengths))


def loader_runs(shard: str, tokens_per_row: int, max_len: int, rows: int, workers: list[int],
                patch_dtype: str) -> list[dict]:
  """Batches of one row; after one warm-up batch per worker, times max(rows, 2 x workers) rows."""
  from mmprolong_jax.data import loader
  results = []
  for count in workers:
    cfg = loader.default_config()
    cfg.shards = {"extract_single": shard}
    cfg.mixture = {"extract_single": 1.0}
    cfg.update({"max_len": max_len, "num_patches": 4 * max_len, "global_batch_tokens": max_len,
                "worker_count": count, "patch_dtype": patch_dtype})
    it = loader.make_loader(cfg, MODEL)
    t0 = time.perf_counter()
    for _ in range(max(1, count)):
      next(it)
    warmup = time.perf_counter() - t0
    timed_rows = max(rows, 2 * count)
    t1 = time.perf_counter()
    for _ in range(timed_rows):
      next(it)
    elapsed = time.perf_counter() - t1
    if hasattr(it, "close"):
      it.close()
    results.append({"workers": count, "warmup_s": warmup, "rows": timed_rows,
                    "rows_per_s": timed_rows / elapsed,
                    "tokens_per_s": timed_rows * tokens_per_row / elapsed})
    print(f"{count:7d}  {warmup:8.1f}  {timed_rows:4d}  {results[-1]['rows_per_s']:6.3f}  "
          f"{results[-1]['tokens_per_s']:8.0f}", flush=True)
  return results


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--pages", default=None, help="PDF to render at 144 DPI, or a folder of page images")
  p.add_argument("--num_pages", type=int, default=8, help="distinct pages to use")
  p.add_argument("--save_pages", default=None, help="write the encoded pages to this folder")
  p.add_argument("--micro_only", action="store_true")
  p.add_argument("--max_len", type=int, default=131072)
  p.add_argument("--pages_per_row", type=int, default=48)
  p.add_argument("--rows", type=int, default=4, help="timed rows per worker count (at least 2x workers)")
  p.add_argument("--workers", default="0,1,2")
  p.add_argument("--procs", default="1,2", help="process counts for the parallel page throughput")
  p.add_argument("--patch_dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--out", default=os.environ.get("OUT", "."))
  args = p.parse_args()

  pages = load_pages(args.pages, args.num_pages)
  if args.save_pages:
    Path(args.save_pages).mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(pages):
      (Path(args.save_pages) / f"{i + 1:04d}.webp").write_bytes(data)
  report = {"cpu_count": os.cpu_count(), "max_len": args.max_len, "pages_per_row": args.pages_per_row,
            "micro": micro(pages, args.max_len, args.pages_per_row, args.patch_dtype),
            "pages_per_s": {int(n): pages_per_second(pages, int(n)) for n in args.procs.split(",")},
            "gpu_s_per_row_h100_model": GPU_SECONDS_PER_ROW}
  m = report["micro"]
  report["host_cores_per_gpu_est"] = m["host_s_per_row_est"] / GPU_SECONDS_PER_ROW
  print(f"{m['pages']} pages, {m['page_bytes_mean'] / 1e3:.0f} KB, {m['patches_per_page']:.0f} patches "
        f"({m['tokens_per_page']:.0f} tokens) per page")
  pack = m["pack_vision_rows_ms_per_row"]
  print(f"per page: decode {m['decode_ms_per_page']:.1f} ms, "
        f"preprocess {m['preprocess_ms_per_page']:.1f} ms; per row: positions "
        f"{m['positions_ms_per_row']:.1f} ms, pack_vision_rows {pack['float32']:.0f} ms (float32) / "
        f"{pack['bfloat16']:.0f} ms (bfloat16)")
  print("pages/s by processes: " + ", ".join(f"{n}: {v:.1f}" for n, v in report["pages_per_s"].items()))
  print(f"host s/row ~{m['host_s_per_row_est']:.2f} (one core), GPU s/row ~{GPU_SECONDS_PER_ROW:.0f} "
        f"-> {report['host_cores_per_gpu_est']:.3f} cores per GPU")
  if not args.micro_only:
    with tempfile.TemporaryDirectory() as tmp:
      shard = f"{tmp}/bench.array_record-00000-of-00001"
      tokens = write_shard(shard, pages, 8, args.pages_per_row, args.max_len)
      print("workers  warmup s  rows  rows/s  tokens/s")
      report["loader"] = loader_runs(shard, tokens, args.max_len, args.rows,
                                     [int(w) for w in args.workers.split(",")], args.patch_dtype)
  Path(args.out).mkdir(parents=True, exist_ok=True)
  (Path(args.out) / "loader.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
  main()
