"""3-D mRoPE position ids vs transformers' Qwen2_5_VLModel.get_rope_index."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from mmprolong_jax.model.position_ids import mrope_position_ids, rope_deltas

IMG, START, END = 60, 61, 62  # image, vision start and vision end tokens of the tiny vocabulary
MERGE = 2


@pytest.fixture(scope="module")
def hf_model():
  transformers.logging.set_verbosity_error()
  cfg = transformers.Qwen2_5_VLConfig(
    text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, vocab_size=64,
                     rope_scaling=dict(type="mrope", mrope_section=[1, 1, 2])),
    vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=16,
                       fullatt_block_indexes=[0], spatial_merge_size=MERGE),
    image_token_id=IMG, video_token_id=63, vision_start_token_id=START, vision_end_token_id=END)
  return transformers.Qwen2_5_VLForConditionalGeneration(cfg).model


def _hf(model, ids_BxT, grids_Nx3, mask_BxT=None):
  ids = torch.as_tensor(np.asarray(ids_BxT), dtype=torch.long)
  grids = None if grids_Nx3 is None or len(grids_Nx3) == 0 else torch.as_tensor(np.asarray(grids_Nx3))
  mask = None if mask_BxT is None else torch.as_tensor(np.asarray(mask_BxT))
  pos, deltas = model.get_rope_index(ids, (ids == IMG).int(), image_grid_thw=grids, attention_mask=mask)
  return pos.numpy(), deltas.numpy()[:, 0]


def _sequence(rng, items):
  """Token ids for items: an int n is n text tokens, a (t, h, w) tuple is one image's tokens."""
  ids, grids = [], []
  for item in items:
    if isinstance(item, int):
      ids += rng.integers(1, IMG, item).tolist()
    else:
      ids += [IMG] * (item[0] * item[1] * item[2] // MERGE**2)
      grids.append(item)
  return ids, grids


def _check_rows(model, rows, pad_left=False, extra_grid_rows=0):
  """rows: lists of items; pads to a common length and compares with HF using an attention mask."""
  rng = np.random.default_rng(len(rows))
  seqs = [_sequence(rng, items) for items in rows]
  length = max(len(ids) for ids, _ in seqs)
  ids_BxT = np.zeros((len(rows), length), np.int64)
  mask_BxT = np.zeros((len(rows), length), np.int64)
  for b, (ids, _) in enumerate(seqs):
    sl = slice(length - len(ids), length) if pad_left else slice(0, len(ids))
    ids_BxT[b, sl], mask_BxT[b, sl] = ids, 1
  grids = [g for _, gs in seqs for g in gs]
  grids_Nx3 = np.array(grids + [(0, 0, 0)] * extra_grid_rows, np.int64).reshape(-1, 3)
  want, want_deltas = _hf(model, ids_BxT, grids or None, mask_BxT)
  got = mrope_position_ids(ids_BxT, grids_Nx3, segment_ids_BxT=mask_BxT, image_token_id=IMG)
  assert got.dtype == jnp.int32 and got.shape == want.shape
  np.testing.assert_array_equal(np.asarray(got), want)
  np.testing.assert_array_equal(np.asarray(rope_deltas(got, mask_BxT)), want_deltas)
  if mask_BxT.all():  # no segment ids means one sequence per row
    got = mrope_position_ids(ids_BxT, grids_Nx3, image_token_id=IMG)
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(np.asarray(rope_deltas(got)), want_deltas)


def test_text_only(hf_model):
  _check_rows(hf_model, [[17]])
  ids_BxT = np.arange(1, 12)[None]
  want, _ = _hf(hf_model, ids_BxT, None)
  np.testing.assert_array_equal(np.asarray(mrope_position_ids(ids_BxT, None, image_token_id=IMG)), want)
  _check_rows(hf_model, [[5], [9]], extra_grid_rows=2)


def test_one_image(hf_model):
  _check_rows(hf_model, [[3, (1, 4, 6), 5]])


def test_image_at_edges(hf_model):
  _check_rows(hf_model, [[(1, 6, 4), 4, (1, 2, 2)]])


def test_several_images_one_row(hf_model):
  _check_rows(hf_model, [[2, (1, 8, 8), 3, (1, 2, 10), 1, (1, 12, 4), 6]])


def test_rows_with_different_image_counts(hf_model):
  _check_rows(hf_model, [[4, (1, 4, 4), 2, (1, 6, 2), 3], [7], [1, (1, 2, 8), 2]], extra_grid_rows=3)


def test_odd_merged_grids(hf_model):
  # Merged grids 1x1, 1x5, 7x1, 3x5, 5x3 and a two-frame grid.
  _check_rows(hf_model, [[1, (1, 2, 2), 1, (1, 2, 10), 1, (1, 14, 2), 1, (1, 6, 10), 1, (1, 10, 6), 1,
                          (2, 4, 6), 2]])


@pytest.mark.parametrize("pad_left", [True, False])
def test_padding_via_attention_mask(hf_model, pad_left):
  _check_rows(hf_model, [[2, (1, 4, 8), 9], [1, (1, 2, 2), 1], [3]], pad_left=pad_left)


def test_mask_holes_are_skipped(hf_model):
  rng = np.random.default_rng(0)
  ids, grids = _sequence(rng, [3, (1, 4, 4), 2, (1, 2, 6), 4])
  ids_BxT = np.array([ids])
  mask_BxT = np.ones_like(ids_BxT)
  mask_BxT[0, [1, 8, len(ids) - 1]] = 0  # text tokens only
  want, _ = _hf(hf_model, ids_BxT, grids, mask_BxT)
  got = mrope_position_ids(ids_BxT, np.array(grids), segment_ids_BxT=mask_BxT, image_token_id=IMG)
  np.testing.assert_array_equal(np.asarray(got), want)


def _check_packed(model, rows_of_segments, length, num_grid_rows, rng):
  """Packs independent sequences into rows; each segment must equal HF on that sequence alone."""
  ids_BxT = np.zeros((len(rows_of_segments), length), np.int64)
  seg_BxT = np.zeros((len(rows_of_segments), length), np.int64)
  all_grids, spans = [], []
  for b, segments in enumerate(rows_of_segments):
    cursor = 0
    seg_ids = rng.permutation(np.arange(1, len(segments) + 1) * 3)  # arbitrary, non-consecutive ids
    for s, items in enumerate(segments):
      cursor += int(rng.integers(0, 2))  # padding between segments sometimes
      ids, grids = _sequence(rng, items)
      ids_BxT[b, cursor:cursor + len(ids)] = ids
      seg_BxT[b, cursor:cursor + len(ids)] = seg_ids[s]
      spans.append((b, cursor, cursor + len(ids), grids))
      all_grids += grids
      cursor += len(ids)
    assert cursor <= length
  # Zero rows ("no image") both between real rows and at the end.
  grid_rows = list(all_grids)
  for _ in range(num_grid_rows - len(all_grids)):
    grid_rows.insert(int(rng.integers(0, len(grid_rows) + 1)), (0, 0, 0))
  grids_Nx3 = np.array(grid_rows, np.int64).reshape(-1, 3)
  got = np.asarray(mrope_position_ids(ids_BxT, grids_Nx3, segment_ids_BxT=seg_BxT, image_token_id=IMG))
  for b, lo, hi, grids in spans:
    want, _ = _hf(model, ids_BxT[b:b + 1, lo:hi], grids or None)
    np.testing.assert_array_equal(got[:, b, lo:hi], want[:, 0], err_msg=f"row {b} span {lo}:{hi}")
  np.testing.assert_array_equal(got[:, seg_BxT == 0], 0)


def test_packed_segments(hf_model):
  rng = np.random.default_rng(0)
  rows = [
    [[3, (1, 4, 4), 2], [5], [(1, 2, 6), 1, (1, 6, 6), 4]],
    [[1, (1, 8, 2), 1], [2, (1, 2, 2)]],
  ]
  _check_packed(hf_model, rows, length=64, num_grid_rows=8, rng=rng)


def _random_items(rng):
  """Random text/image layout; images are separated by text, as transformers requires."""
  items = []
  for _ in range(int(rng.integers(1, 5))):
    if rng.random() < 0.55 or (items and not isinstance(items[-1], int)):
      items.append(int(rng.integers(1, 6)))
    else:
      t = 2 if rng.random() < 0.1 else 1
      items.append((t, 2 * int(rng.integers(1, 6)), 2 * int(rng.integers(1, 6))))
  return items


def _seq_len(items):
  return sum(i if isinstance(i, int) else i[0] * i[1] * i[2] // MERGE**2 for i in items)


@pytest.mark.parametrize("seed", range(25))
def test_random_packed_layouts(hf_model, seed):
  # Fixed (B, T, N) across seeds so that one compilation serves every case.
  batch, length, num_grid_rows = 3, 256, 24
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(batch):
    segments, used, images = [], 0, 0
    for _ in range(int(rng.integers(1, 5))):
      items = _random_items(rng)
      n_img = sum(not isinstance(i, int) for i in items)
      if used + _seq_len(items) + 1 > length or images + n_img > num_grid_rows // batch:
        break
      segments.append(items)
      used, images = used + _seq_len(items) + 1, images + n_img
    rows.append(segments)
  _check_packed(hf_model, rows, length, num_grid_rows, rng)


@pytest.mark.parametrize("seed", range(10))
def test_random_padded_batches(hf_model, seed):
  rng = np.random.default_rng(100 + seed)
  rows = [_random_items(rng) for _ in range(int(rng.integers(1, 4)))]
  _check_rows(hf_model, rows, pad_left=bool(seed % 2), extra_grid_rows=int(rng.integers(0, 3)))
