"""Image preprocessing vs transformers' Qwen2-VL image processor (PIL backend, no torchvision)."""
import numpy as np
import PIL.Image
import pytest
from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as hf_ip

from mmprolong_jax.data import image_processing as ip


def _hf(images, **kwargs):
  proc = hf_ip.Qwen2VLImageProcessorPil(**kwargs)
  out = proc(images=images, return_tensors="np")
  return out["pixel_values"], out["image_grid_thw"]


def _random_image(rng, height, width, mode="RGB"):
  """Smooth-plus-noise content so that resampling has something to get wrong."""
  yy, xx = np.mgrid[0:height, 0:width]
  base = 127 + 100 * np.sin(xx[..., None] / 7.0 + np.arange(3)) * np.cos(yy[..., None] / 11.0)
  img = np.clip(base + rng.integers(-40, 40, (height, width, 3)), 0, 255).astype(np.uint8)
  image = PIL.Image.fromarray(img)
  if mode == "RGBA":
    alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
    image = PIL.Image.fromarray(np.concatenate([img, alpha[..., None]], -1))
  elif mode != "RGB":
    image = image.convert(mode)
  return image


# (height, width, mode, min_pixels, max_pixels)
CASES = [
  (224, 224, "RGB", ip.MIN_PIXELS, ip.MAX_PIXELS),  # already a multiple of 28
  (100, 150, "RGB", ip.MIN_PIXELS, ip.MAX_PIXELS),  # rounding up and down
  (13, 17, "RGB", ip.MIN_PIXELS, ip.MAX_PIXELS),  # tiny: min_pixels upscale
  (30, 1500, "RGB", ip.MIN_PIXELS, ip.MAX_PIXELS),  # very wide
  (2000, 41, "RGB", ip.MIN_PIXELS, ip.MAX_PIXELS),  # very tall
  (1584, 1224, "RGB", ip.MIN_PIXELS, ip.MAX_PIXELS),  # 144-DPI letter page, downscaled
  (1584, 1224, "RGB", ip.MIN_PIXELS, 28 * 28 * 2600),  # same page at the study's budget
  (333, 517, "L", ip.MIN_PIXELS, ip.MAX_PIXELS),  # grayscale
  (97, 203, "RGBA", ip.MIN_PIXELS, ip.MAX_PIXELS),  # alpha onto white
  (401, 299, "RGB", 128 * 28 * 28, 256 * 28 * 28),  # custom pixel window
]


@pytest.mark.parametrize("height,width,mode,min_pixels,max_pixels", CASES)
def test_single_image_matches_hf(height, width, mode, min_pixels, max_pixels):
  rng = np.random.default_rng(height * 7919 + width)
  image = _random_image(rng, height, width, mode)
  patches, grid = ip.preprocess_image(image, min_pixels=min_pixels, max_pixels=max_pixels)
  want_patches, want_grid = _hf([image], min_pixels=min_pixels, max_pixels=max_pixels)
  np.testing.assert_array_equal(grid[None], want_grid)
  assert patches.dtype == np.float32 and patches.shape == want_patches.shape
  np.testing.assert_array_equal(patches, want_patches)
  assert ip.num_image_tokens(grid) == patches.shape[0] // 4


def test_numpy_inputs_match_hf():
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (61, 90, 3), dtype=np.uint8)
  rgba = rng.integers(0, 256, (61, 90, 4), dtype=np.uint8)
  gray = rng.integers(0, 256, (61, 90, 1), dtype=np.uint8)
  for arr in (rgb, rgba, gray):
    patches, grid = ip.preprocess_image(arr)
    want_patches, want_grid = _hf([arr])
    np.testing.assert_array_equal(grid[None], want_grid)
    np.testing.assert_array_equal(patches, want_patches)


def test_batch_matches_hf():
  rng = np.random.default_rng(1)
  images = [_random_image(rng, h, w) for h, w in [(56, 56), (300, 90), (77, 640), (56, 56)]]
  patches, grids = ip.preprocess_images(images, max_pixels=512 * 28 * 28)
  want_patches, want_grids = _hf(images, max_pixels=512 * 28 * 28)
  np.testing.assert_array_equal(grids, want_grids)
  np.testing.assert_array_equal(patches, want_patches)
  np.testing.assert_array_equal(ip.num_image_tokens(grids), np.prod(want_grids, -1) // 4)


def test_smart_resize_matches_hf():
  rng = np.random.default_rng(2)
  sizes = [(28, 28), (42, 42), (14, 2799), (1, 150), (4000, 3000), (1224, 1584), (55, 57)]
  sizes += [tuple(int(v) for v in rng.integers(10, 5000, 2)) for _ in range(300)]
  for max_pixels in (ip.MAX_PIXELS, ip.CHECKPOINT_MAX_PIXELS, 3136):
    for h, w in sizes:
      if max(h, w) / min(h, w) > 200:
        continue
      got = ip.smart_resize(h, w, max_pixels=max_pixels)
      assert got == hf_ip.smart_resize(h, w, max_pixels=max_pixels), (h, w, max_pixels)
  with pytest.raises(ValueError):
    ip.smart_resize(10, 2500)


def test_defaults_match_hf_processor():
  proc = hf_ip.Qwen2VLImageProcessorPil()
  assert (proc.size["shortest_edge"], proc.size["longest_edge"]) == (ip.MIN_PIXELS, ip.MAX_PIXELS)
  np.testing.assert_array_equal(proc.image_mean, ip.OPENAI_CLIP_MEAN)
  np.testing.assert_array_equal(proc.image_std, ip.OPENAI_CLIP_STD)
