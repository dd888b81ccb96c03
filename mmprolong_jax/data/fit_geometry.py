"""The smallest vision geometry a shard corpus needs, against what the config reserves.

  python -m mmprolong_jax.data.fit_geometry --config configs/final.py \
      [--config.data.shards.extract_single=GLOB ...] [--max_records N] [--json FILE]

The vision tower computes every patch slot of `data.num_patches`, real or padding. The defaults
(`sources.vision_slots`: 4.5 slots per token) hold rows made only of pages of any common shape;
a corpus of fewer or better-fitting pages leaves much of that as padding (the benchmark's 32K
row of US-letter pages: 126,720 of 147,456 slots used; step 1.098 -> 1.053 s on an H100 with the
fit, benchmarks/README.md). This reads every record of the mixture's shard sets (it uses their
image grids; no image is decoded), lays each row out as the loader does (one image per image row,
whole images spread over the mesh's `sequence` shards) and prints the config lines of the
smallest geometry holding them.
With --max_records it reads an evenly spaced sample of each set instead; a row it skipped may
need more, in which case the loader stops and names the key to raise.
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from mmprolong_jax.data import schema
from mmprolong_jax.data.shard_reader import ShardSource
from mmprolong_jax.model.vision_layout import VisionGeometry, window_slot_size

FLAGS = flags.FLAGS


def shard_sets(data_cfg) -> dict[str, str]:
  """Set name -> glob for the sets the mixture draws from."""
  sets = {name: g for name, g in data_cfg.shards.items()
          if g and float(data_cfg.mixture.get(name, 0)) > 0}
  if not sets:
    raise ValueError("data.shards names no shard set with a positive data.mixture weight")
  return sets


def row_grids(source: ShardSource, max_records: int = 0, desc: str = ""):
  """Image grids [n, 3] of each record read (all, or `max_records` evenly spaced)."""
  n = len(source)
  picks = (np.unique(np.linspace(0, n - 1, max_records).round().astype(int))
           if 0 < max_records < n else range(n))
  for i in tqdm(picks, desc=desc, unit="row", file=sys.stderr):
    yield np.asarray(schema.decode_row(source[int(i)].data)["image_grid_thw"]).reshape(-1, 3)


def fit(config, model_cfg, max_records: int = 0) -> dict:
  """The fitted geometry, the configured one, and per-set statistics (plain dict)."""
  d, vision = config.data, model_cfg.vision
  shards = int(config.mesh.sequence)
  if int(d.get("images_per_row", 1)) != 1:
    raise ValueError("fit_geometry lays out one image per image row; data.images_per_row is "
                     f"{d.images_per_row}")
  # Each shard's slots also split into model.mlp_chunks sequence slices.
  unit = math.lcm(window_slot_size(vision), int(config.model.get("mlp_chunks", 1)))
  configured = VisionGeometry.from_config(d)
  out, needed = {"sets": {}}, []
  for name, pattern in shard_sets(d).items():
    source = ShardSource(name, pattern)
    per_row = [(VisionGeometry.fit([g], vision, shards), int(np.prod(g, axis=1).sum()))
               for g in row_grids(source, max_records, desc=name)]
    needed += per_row
    slots = np.array([geom.num_patches for geom, _ in per_row])
    out["sets"][name] = {"records": len(source), "read": len(per_row),
                         "max_slots": int(slots.max()), "mean_slots": float(slots.mean()),
                         "max_patches": max(p for _, p in per_row)}
  per_shard = max(geom.num_patches for geom, _ in needed) // shards
  best = VisionGeometry(-(-per_shard // unit) * unit * shards,
                        max(geom.image_rows for geom, _ in needed),
                        max(geom.image_row_len for geom, _ in needed))
  real = sum(p for _, p in needed) / len(needed)
  out.update({
      "sequence_shards": shards, "rows_read": len(needed),
      "sampled": any(s["read"] < s["records"] for s in out["sets"].values()),
      "fitted": {"num_patches": best.num_patches, "image_rows": best.image_rows,
                 "image_row_len": best.image_row_len},
      "configured": {"num_patches": configured.num_patches, "image_rows": configured.image_rows,
                     "image_row_len": configured.image_row_len},
      "mean_real_patches": real,
      "padding_share_configured": 1 - real / configured.num_patches,
      "padding_share_fitted": 1 - real / best.num_patches})
  return out


def report(res: dict) -> str:
  f, c = res["fitted"], res["configured"]
  lines = [f"{name}: {s['read']} of {s['records']} rows read; patch slots needed: max "
           f"{s['max_slots']:,}, mean {s['mean_slots']:,.0f} (largest row {s['max_patches']:,} "
           f"real patches)" for name, s in res["sets"].items()]
  lines += [
      f"padding share of the vision tower's slots: {res['padding_share_configured']:.1%} as "
      f"configured ({c['num_patches']:,} slots), {res['padding_share_fitted']:.1%} with the fit",
      "config lines for the smallest geometry holding every row read "
      f"(sequence shards: {res['sequence_shards']}):",
      *(f"  c.data.{k} = {v}" for k, v in f.items())]
  if any(f[k] > c[k] for k in f):
    lines.append("the configured geometry is too small for some rows: the loader would stop there")
  if res["sampled"]:
    lines.append("sampled (--max_records): rows not read may need more")
  return "\n".join(lines)


def main(argv):
  del argv
  from mmprolong_jax import setup
  config = FLAGS.config
  res = fit(config, setup.model_config(config), FLAGS.max_records)
  print(report(res))
  if FLAGS.json:
    with open(FLAGS.json, "w") as fh:
      json.dump(res, fh, indent=1)


if __name__ == "__main__":
  # Defined here, not at import: the trainer defines its own --config in the same flag registry.
  config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).")
  flags.DEFINE_integer("max_records", 0, "Records read per shard set, evenly spaced; 0 reads all.")
  flags.DEFINE_string("json", "", "Also write the result here as JSON.")
  flags.mark_flag_as_required("config")
  app.run(main)
