"""fit_geometry: the geometry it prints holds every row of the shards, and none smaller does."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from configs import base
from mmprolong_jax.data import fit_geometry, schema
from mmprolong_jax.data.shard_reader import ShardSource
from mmprolong_jax.model.vision_layout import VisionGeometry, sharded_vision_layout

SETS = ("extract_single", "reasoning", "short")


def _config(out, shards):
  c = base.get_config()
  c.data.shards = {name: schema.shard_glob(out, name) for name in SETS}
  c.data.mixture = {"extract_single": 0.5, "reasoning": 0.5, "short": 0.0}
  c.mesh.sequence = shards
  return c


def _all_grids(out, sets):
  return [g for name in sets
          for g in fit_geometry.row_grids(ShardSource(name, schema.shard_glob(out, name)))]


def _fails_somewhere(grids, geom, vision, shards):
  def fails(g):
    try:
      sharded_vision_layout(g, geom, vision, shards)
    except ValueError:
      return True
    return False
  return any(fails(g) for g in grids)


@pytest.mark.parametrize("shards", [1, 2])
def test_fitted_geometry_is_the_smallest_holding_every_row(built, model_cfg, shards):
  out, _ = built
  res = fit_geometry.fit(_config(out, shards), model_cfg)
  assert set(res["sets"]) == {"extract_single", "reasoning"}   # 'short' has weight 0
  geom = VisionGeometry(**res["fitted"])
  grids = _all_grids(out, res["sets"])
  assert res["rows_read"] == len(grids) and not res["sampled"]
  vision = model_cfg.vision
  assert not _fails_somewhere(grids, geom, vision, shards)
  unit = 64 * shards   # one 64-patch window slot per shard
  assert _fails_somewhere(grids, dataclasses.replace(geom, num_patches=geom.num_patches - unit),
                          vision, shards)
  assert _fails_somewhere(grids, dataclasses.replace(geom, image_rows=geom.image_rows - shards),
                          vision, shards)
  real = np.mean([np.prod(g, axis=1).sum() for g in grids])
  assert res["padding_share_fitted"] == pytest.approx(1 - real / geom.num_patches)


def test_mlp_chunks_round_the_slots_up(built, model_cfg):
  out, _ = built
  config = _config(out, 1)
  plain = fit_geometry.fit(config, model_cfg)["fitted"]["num_patches"]
  config.model.mlp_chunks = 3
  chunked = fit_geometry.fit(config, model_cfg)["fitted"]["num_patches"]
  assert chunked % 192 == 0 and plain <= chunked < plain + 192


def test_sampling_reads_fewer_rows_and_says_so(built, model_cfg):
  out, _ = built
  res = fit_geometry.fit(_config(out, 1), model_cfg, max_records=2)
  assert res["sampled"] and all(s["read"] <= 2 for s in res["sets"].values())
  assert "rows not read may need more" in fit_geometry.report(res)


def test_cli_prints_config_lines(built, tmp_path):
  out, _ = built
  cfg_file = tmp_path / "cfg.py"
  cfg_file.write_text(
      "from configs import base\n"
      "def get_config():\n"
      "  c = base.get_config()\n"
      "  c.model.preset = 'tiny'\n"
      "  c.data.max_len = 256\n"
      f"  c.data.shards = {{'reasoning': {schema.shard_glob(out, 'reasoning')!r}}}\n"
      "  c.data.mixture = {'reasoning': 1.0}\n"
      "  return c\n")
  js = tmp_path / "fit.json"
  proc = subprocess.run([sys.executable, "-m", "mmprolong_jax.data.fit_geometry",
                         f"--config={cfg_file}", f"--json={js}"],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  res = json.loads(js.read_text())
  assert f"c.data.num_patches = {res['fitted']['num_patches']}" in proc.stdout
  assert "the configured geometry is too small" not in proc.stdout
