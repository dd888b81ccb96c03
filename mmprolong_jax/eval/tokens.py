"""Prompt-length estimates for Qwen2.5-VL, used to pad documents to a target context length.

The estimate needs no tokenizer and no pixels: an image costs what Qwen2.5-VL's processor gives
it (`data.image_processing.smart_resize`: sides rounded to multiples of 28 within [min_pixels,
max_pixels]; one LLM token per 28x28 block after the 2x2 merge) plus the vision start/end
markers; text costs about a token per four characters unless a real tokenizer is passed in.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

from PIL import Image

from mmprolong_jax.data.image_processing import CHECKPOINT_MAX_PIXELS, MIN_PIXELS, smart_resize

PATCH = 28  # 14-pixel ViT patches merged 2x2 into one LLM token
MAX_PIXELS = CHECKPOINT_MAX_PIXELS  # what the released checkpoints' processor uses
IMAGE_MARKERS = 2  # <|vision_start|> and <|vision_end|>
TURN_OVERHEAD = 5  # "<|im_start|>user\n" ... "<|im_end|>\n"

# (messages, image paths) -> number of prompt tokens.
TokenCounter = Callable[[Sequence[dict[str, Any]], Sequence[str]], int]


@functools.lru_cache(maxsize=1 << 18)
def _image_size(path: str) -> tuple[int, int]:
  # Opening reads only the header; padding re-counts the same pages many times.
  with Image.open(path) as im:
    return im.height, im.width


def image_tokens(path: str, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> int:
  h, w = smart_resize(*_image_size(path), PATCH, min_pixels, max_pixels)
  return (h // PATCH) * (w // PATCH) + IMAGE_MARKERS


def approx_text_tokens(text: str) -> int:
  return math.ceil(len(text) / 4)


def make_token_counter(text_tokens: Callable[[str], int] = approx_text_tokens,
                       min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> TokenCounter:
  """A TokenCounter; pass e.g. `lambda s: len(tokenizer.encode(s))` for exact text counts."""

  def count(messages: Sequence[dict[str, Any]], images: Sequence[str]) -> int:
    total = 0
    for message in messages:
      total += TURN_OVERHEAD
      for item in message["content"]:
        if item["type"] == "text":
          total += text_tokens(item["text"])
        else:
          total += image_tokens(images[item["image"]], min_pixels, max_pixels)
    return total

  return count


estimate_tokens: TokenCounter = make_token_counter()
