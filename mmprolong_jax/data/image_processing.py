"""Still-image preprocessing equal to Qwen2.5-VL's image processor (host-side numpy/PIL).

The oracle is transformers' PIL backend (`Qwen2VLImageProcessorPil`): RGB conversion (alpha composited
onto white), `smart_resize` to multiples of patch*merge pixels, PIL bicubic resize of the uint8 image,
rescale by 1/255, OpenAI-CLIP normalization, the still image repeated to `temporal_patch_size` frames
and flattened into patches in (h/merge, w/merge, merge, merge) block order. Outputs are bit-equal.

Pixel budget: the processor class defaults to max_pixels = 28*28*1280 (1280 LLM tokens), the released
Qwen2.5-VL checkpoints ship max_pixels = 12845056. A US-letter page rendered at 144 DPI (1224x1584 px)
is ~2.5K LLM tokens, so callers that feed such pages must raise `max_pixels` above the class default.
"""
import math

import numpy as np
import PIL.Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 1280
# Value in the released Qwen2.5-VL checkpoints' preprocessor_config.json.
CHECKPOINT_MAX_PIXELS = 12845056


def smart_resize(height, width, factor=28, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS):
  """(h, w) closest to the input, multiples of `factor`, area within [min_pixels, max_pixels]."""
  if max(height, width) / min(height, width) > 200:
    raise ValueError(f"aspect ratio must be at most 200, got {height}x{width}")
  # Python's round (half to even) on purpose: it is what the reference uses.
  h = round(height / factor) * factor
  w = round(width / factor) * factor
  if h * w > max_pixels:
    scale = math.sqrt(height * width / max_pixels)
    h = max(factor, math.floor(height / scale / factor) * factor)
    w = max(factor, math.floor(width / scale / factor) * factor)
  elif h * w < min_pixels:
    scale = math.sqrt(min_pixels / (height * width))
    h = math.ceil(height * scale / factor) * factor
    w = math.ceil(width * scale / factor) * factor
  return h, w


def _to_rgb(image):
  """PIL RGB image, compositing transparency onto white exactly as the reference does."""
  if isinstance(image, PIL.Image.Image):
    if "A" in image.getbands() or image.info.get("transparency") is not None:
      rgba = image.convert("RGBA")
      white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
      return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
  arr_HxWxC = np.asarray(image)
  if arr_HxWxC.dtype != np.uint8 or arr_HxWxC.ndim != 3 or arr_HxWxC.shape[-1] not in (1, 3, 4):
    raise ValueError(f"numpy images must be uint8 (H, W, 1|3|4), got {arr_HxWxC.dtype} {arr_HxWxC.shape}")
  if arr_HxWxC.shape[-1] == 1:
    arr_HxWxC = np.repeat(arr_HxWxC, 3, axis=-1)
  elif arr_HxWxC.shape[-1] == 4:
    # The reference blends numpy RGBA in float64 and rounds (PIL's integer blend can differ by 1).
    alpha = arr_HxWxC[..., 3:] / 255
    arr_HxWxC = np.round(alpha * arr_HxWxC[..., :3] + (1 - alpha) * 255).astype(np.uint8)
  return PIL.Image.fromarray(np.ascontiguousarray(arr_HxWxC))


def _normalize_lut(mean, std):
  """(3, 256) float32 table of normalized values, computed with the reference's exact op order."""
  scaled_256 = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
  mean_3x1 = np.asarray(mean, np.float32)[:, None]
  std_3x1 = np.asarray(std, np.float32)[:, None]
  return (scaled_256[None] - mean_3x1) / std_3x1


_CLIP_LUT = _normalize_lut(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


def preprocess_image(image, *, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=14,
                     temporal_patch_size=2, merge_size=2):
  """One still image -> (patches_Nx(3*tps*ps*ps) float32, grid_thw (3,) int64).

  `image` is a PIL image (any mode) or a uint8 (H, W, 1|3|4) array. N = grid_h * grid_w with
  grid_t = 1; each patch row is ordered (channel, frame, row, col) like the reference.
  """
  rgb = _to_rgb(image)
  height, width = rgb.height, rgb.width
  factor = patch_size * merge_size
  new_h, new_w = smart_resize(height, width, factor, min_pixels, max_pixels)
  # Same call as the reference (PIL on the uint8 RGB image), so resized pixels match bit for bit.
  rgb = rgb.resize((new_w, new_h), resample=PIL.Image.Resampling.BICUBIC)
  img_HxWx3 = np.asarray(rgb)

  grid_h, grid_w = new_h // patch_size, new_w // patch_size
  m, p = merge_size, patch_size
  # Reorder on uint8 (cheap) and normalize with a lookup table afterwards.
  blocks = img_HxWx3.reshape(grid_h // m, m, p, grid_w // m, m, p, 3)
  blocks = blocks.transpose(0, 3, 1, 4, 6, 2, 5)  # (gh/m, gw/m, m, m, C, p, p)
  blocks = blocks.reshape(grid_h * grid_w, 3, p, p)
  normed_Nx3xPxP = _CLIP_LUT[np.arange(3)[None, :, None, None], blocks]
  frames = np.broadcast_to(normed_Nx3xPxP[:, :, None], (grid_h * grid_w, 3, temporal_patch_size, p, p))
  patches = frames.reshape(grid_h * grid_w, 3 * temporal_patch_size * p * p)
  return np.ascontiguousarray(patches), np.array([1, grid_h, grid_w], np.int64)


def preprocess_images(images, **kwargs):
  """Several images -> (concatenated patches, grid_thw_Nx3 int64); kwargs as in `preprocess_image`."""
  outs = [preprocess_image(im, **kwargs) for im in images]
  if not outs:
    raise ValueError("preprocess_images needs at least one image")
  return np.concatenate([o[0] for o in outs]), np.stack([o[1] for o in outs])


def num_image_tokens(grid_thw, merge_size=2):
  """LLM tokens of an image (grid (3,)) or of each image (grid (n, 3)): t*h*w / merge**2."""
  grid = np.asarray(grid_thw)
  tokens = np.prod(grid, axis=-1) // (merge_size * merge_size)
  return int(tokens) if tokens.ndim == 0 else tokens
