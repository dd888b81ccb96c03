"""Our Flax Qwen2.5-VL against transformers on tiny random models (fp32)."""
import numpy as np
import pytest
import jax.numpy as jnp

from mmprolong_jax.convert import from_hf
from mmprolong_jax.model.position_ids import mrope_position_ids
from mmprolong_jax.model.vision_layout import VisionGeometry, pack_vision_rows
from mmprolong_jax import params as params_lib
from tests import hf_reference as ref

# Grids chosen for several 112-px windows per image, partial windows and odd merged shapes.
CASES = {
    "text_only": ([[], []], [[7], [12]]),
    "one_image": ([[(1, 8, 12)]], [[3, 5]]),
    "several_images": ([[(1, 8, 12), (1, 2, 2), (1, 10, 14)]], [[4, 2, 0, 6]]),
    "two_rows_different_counts": ([[(1, 6, 22)], [(1, 4, 4), (1, 12, 6)]], [[2, 3], [1, 4, 2]]),
}


def _our_inputs(cfg, batch):
  rows, starts = [], np.cumsum([0] + [t * h * w for g in batch["grids"] for t, h, w in g])
  k = 0
  for grids in batch["grids"]:
    n = sum(t * h * w for t, h, w in grids)
    rows.append(batch["pixel_values"][starts[k]:starts[k] + n])
    k += len(grids)
  # Spare window slots and image rows: padding must not change anything.
  fit = VisionGeometry.fit(batch["grids"], cfg.vision)
  geom = VisionGeometry(fit.num_patches + 128, fit.image_rows + 1, fit.image_row_len + 64)
  patches, layout = pack_vision_rows(rows, batch["grids"], geom, cfg.vision)
  ids = jnp.asarray(batch["input_ids"], jnp.int32)
  seg = jnp.asarray(batch["attention_mask"], jnp.int32)
  grid = batch["image_grid_thw"] if len(batch["image_grid_thw"]) else np.zeros((1, 3), np.int64)
  pos = mrope_position_ids(ids, jnp.asarray(grid, jnp.int32), segment_ids_BxT=seg,
                           image_token_id=cfg.image_token_id, spatial_merge_size=2)
  return dict(input_ids_BxT=ids, positions_3xBxT=pos, segment_ids_BxT=seg,
              patches_BxNxP=jnp.asarray(patches), vision_layout=layout)


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def models(request, tmp_path_factory):
  hf_cfg = ref.tiny_hf_config(tied=request.param, vision_depth=4, full_blocks=(1, 3))
  hf_model = ref.build_hf_model(hf_cfg, seed=int(request.param))
  d = tmp_path_factory.mktemp("hf")
  hf_model.save_pretrained(d, max_shard_size="200KB")  # several shards + index
  cfg, flat = from_hf.convert(d)
  return hf_model, cfg, params_lib.model_from_flat(cfg, flat)


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(models, case):
  hf_model, cfg, model = models
  images, lens = CASES[case]
  batch = ref.make_batch(images, lens, np.random.default_rng(0))
  want_logits, want_pos = ref.hf_forward(hf_model, batch)
  inputs = _our_inputs(cfg, batch)
  mask = batch["attention_mask"].astype(bool)
  np.testing.assert_array_equal(np.asarray(inputs["positions_3xBxT"])[:, mask], want_pos[:, mask])
  if not len(batch["image_grid_thw"]):
    inputs.pop("patches_BxNxP"), inputs.pop("vision_layout")
  got = np.asarray(model(**inputs))
  err = np.linalg.norm(got[mask] - want_logits[mask]) / np.linalg.norm(want_logits[mask])
  assert err <= 1e-5, f"relative logits error {err:.2e}"


def test_vision_features_match_transformers(models):
  import torch
  hf_model, cfg, model = models
  images, lens = CASES["two_rows_different_counts"]
  batch = ref.make_batch(images, lens, np.random.default_rng(1))
  with torch.no_grad():
    want = hf_model.model.get_image_features(
        torch.from_numpy(batch["pixel_values"]), torch.from_numpy(batch["image_grid_thw"]),
        return_dict=True).pooler_output
  want = torch.cat(want).numpy()
  inputs = _our_inputs(cfg, batch)
  feats = np.asarray(model._vision_features(inputs["patches_BxNxP"], inputs["vision_layout"]))
  slot = inputs["vision_layout"]["feature_slot"]   # image order -> the tower's slot order
  got = np.concatenate([feats[i, slot[i, :sum(t * h * w for t, h, w in g) // 4]]
                        for i, g in enumerate(batch["grids"])])
  err = np.linalg.norm(got - want) / np.linalg.norm(want)
  assert err <= 1e-5, f"relative vision feature error {err:.2e}"


def test_bf16_activations_with_fp32_params_stay_close(models):
  hf_model, cfg, model = models
  flat = {k: np.asarray(v) for k, v in params_lib.flat_params(model).items()}
  bf16 = params_lib.model_from_flat(cfg.replace(dtype="bfloat16"), flat)
  assert all(v.dtype == np.float32 for v in params_lib.flat_params(bf16).values())
  batch = ref.make_batch(*CASES["several_images"], np.random.default_rng(2))
  want, _ = ref.hf_forward(hf_model, batch)
  got = np.asarray(bf16(**_our_inputs(cfg, batch)))
  mask = batch["attention_mask"].astype(bool)
  err = np.linalg.norm(got[mask] - want[mask]) / np.linalg.norm(want[mask])
  assert 1e-5 < err < 3e-2, f"bf16 relative error {err:.2e}"
