"""Host-side vision layout: window slots, image rows and merged-token slots are consistent.
(The tower's numerics on this layout are checked against transformers in test_model_parity.py.)"""
import dataclasses

import numpy as np
import pytest

from mmprolong_jax.model import config as config_lib
from mmprolong_jax.model.vision_layout import (VisionGeometry, pack_vision_rows,
                                               sharded_vision_layout, window_slot_size)

VISION = config_lib.qwen2_5_vl_7b().vision
ROWS = [[(1, 8, 12), (1, 2, 2), (1, 30, 18), (1, 16, 16)], [(1, 6, 22)], []]


def _random_rows(seed, n_rows=3):
  rng = np.random.default_rng(seed)
  return [[(1, 2 * int(rng.integers(1, 20)), 2 * int(rng.integers(1, 20)))
           for _ in range(int(rng.integers(0, 6)))] for _ in range(n_rows)]


@pytest.mark.parametrize("shards", [1, 2, 4])
@pytest.mark.parametrize("seed", range(4))
def test_every_patch_has_one_slot_and_one_image_position(shards, seed):
  rows = ROWS if seed == 0 else _random_rows(seed)
  fit = VisionGeometry.fit(rows, VISION, shards)
  geom = dataclasses.replace(fit, num_patches=fit.num_patches + 64 * shards,
                             image_rows=fit.image_rows + shards)
  k = window_slot_size(VISION)
  patches = [np.arange(sum(t * h * w for t, h, w in g), dtype=np.float32)[:, None] + 1
             for g in rows]
  packed, lay = pack_vision_rows([np.repeat(p, VISION.patch_dim, 1) for p in patches], rows, geom,
                                 VISION, shards)
  n_s = geom.num_patches // shards
  for b, grids in enumerate(rows):
    stream = packed[b, :, 0]
    real = stream > 0
    # Each patch lands once; padding slots are zero and carry segment 0.
    np.testing.assert_array_equal(np.sort(stream[real]), patches[b][:, 0])
    win = lay["window_segments"][b].reshape(-1)
    np.testing.assert_array_equal(win > 0, real)
    # A window slot holds one window, as a prefix of its K slots, in whole merge units.
    for slot in win.reshape(-1, k):
      ids = slot[slot > 0]
      assert len(set(ids.tolist())) <= 1 and np.all(slot[:len(ids)] > 0)
      assert len(ids) % VISION.merge_unit == 0
    # Image rows gather exactly the real slots, and the scatter inverts the gather.
    for s in range(shards):
      gather = lay["image_gather"][b, s].reshape(-1)
      seg = lay["image_segments"][b, s].reshape(-1)
      scatter = lay["image_scatter"][b, s]
      used = gather < n_s
      np.testing.assert_array_equal(used, seg > 0)
      np.testing.assert_array_equal(np.sort(gather[used]), np.flatnonzero(real[s * n_s:(s + 1) * n_s]))
      np.testing.assert_array_equal(gather[scatter[real[s * n_s:(s + 1) * n_s]]],
                                    np.flatnonzero(real[s * n_s:(s + 1) * n_s]))
      for row in lay["image_segments"][b, s]:
        assert len(set(row[row > 0].tolist())) <= geom.images_per_row
    # Merged-token slots: image order, the 4 patches of unit j of the row are 4j..4j+3.
    units = len(patches[b]) // VISION.merge_unit
    slot = lay["feature_slot"][b, :units]
    got = stream.reshape(-1, VISION.merge_unit)[slot]
    np.testing.assert_array_equal(got, patches[b][:, 0].reshape(-1, VISION.merge_unit))


def test_page_geometry_and_errors():
  page = (1, 114, 88)   # US letter at 144 DPI
  lay, _ = sharded_vision_layout([page], VisionGeometry(165 * 64, 1, 10048), VISION)
  assert lay["window_segments"].max() == 165          # 15 x 11 windows, 11 of them cut
  with pytest.raises(ValueError, match="raise data.num_patches"):
    sharded_vision_layout([page], VisionGeometry(164 * 64, 1, 10048), VISION)
  with pytest.raises(ValueError, match="raise data.image_row_len"):
    sharded_vision_layout([page], VisionGeometry(165 * 64, 1, 9984), VISION)
  with pytest.raises(ValueError, match="raise data.image_rows"):
    sharded_vision_layout([page, page], VisionGeometry(2 * 165 * 64, 1, 10048), VISION)
  two = VisionGeometry(2 * 165 * 64, 1, 2 * 10032, images_per_row=2)
  lay, _ = sharded_vision_layout([page, page], two, VISION)
  assert set(np.unique(lay["image_segments"])) == {1, 2}   # one full row of two pages
  with pytest.raises(ValueError, match="sequence shards"):
    VisionGeometry(100 * 64, 2, 64).check(VISION, 8)
