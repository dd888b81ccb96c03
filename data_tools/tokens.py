"""Token estimates for Qwen2.5-VL instances (used by the report).

Image tokens follow Qwen2.5-VL's processor (mmprolong_jax.data.image_processing.smart_resize):
the image is resized so both sides are multiples of 28 (14-pixel patches merged 2x2) with
min_pixels 3136 and the released checkpoints' max_pixels 12845056, and yields (h/28)*(w/28) LLM
tokens, plus <|vision_start|> and <|vision_end|>.
With a tokenizer folder (transformers.AutoTokenizer, offline) the count is exact: the instance is
rendered and tokenized by mmprolong_jax.data.chat, as the shard builder does. Without one, text
is estimated as ceil(chars / 4), each turn adds 5 template tokens (<|im_start|>, role, newline,
<|im_end|>, newline), and the default system turn is added when there is none.
"""
from __future__ import annotations

import math
from typing import Any

from mmprolong_jax.data import image_processing

FACTOR = 28
MAX_PIXELS = image_processing.CHECKPOINT_MAX_PIXELS
TURN_OVERHEAD = 5
IMAGE_WRAPPER = 2
DEFAULT_SYSTEM = "You are a helpful assistant."


def image_tokens(width: int, height: int) -> int:
  """LLM tokens of one image, without the two wrapper tokens."""
  h, w = image_processing.smart_resize(height, width, FACTOR, image_processing.MIN_PIXELS,
                                      MAX_PIXELS)
  return (h // FACTOR) * (w // FACTOR)


class Counter:
  """Token length of an instance: exact with a tokenizer folder (mmprolong_jax.data.chat renders
  the Qwen2.5-VL chat template and expands every image to its tokens), else estimated."""

  def __init__(self, tokenizer_dir: str | None = None):
    self.chat = None
    self.method = "an estimate (text chars/4, 5 tokens per turn)"
    if tokenizer_dir:
      from transformers import AutoTokenizer
      from mmprolong_jax.data.chat import ChatTokenizer
      self.chat = ChatTokenizer(AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True))
      self.method = f"the tokenizer in {tokenizer_dir} and the Qwen2.5-VL chat template"

  def __call__(self, inst: dict[str, Any], image_size: dict[str, tuple[int, int]]) -> int:
    """`image_size` maps each image path of the instance to its (width, height)."""
    sizes = [image_size[path] for path in inst["images"]]
    if self.chat is not None:
      grids = [(1, h // 14, w // 14) for h, w in (
          image_processing.smart_resize(h, w, FACTOR, image_processing.MIN_PIXELS, MAX_PIXELS)
          for w, h in sizes)]
      return len(self.chat.encode(inst["messages"], grids)[0])
    total = 0 if inst["messages"][0]["role"] == "system" else TURN_OVERHEAD + _chars(DEFAULT_SYSTEM)
    for m in inst["messages"]:
      total += TURN_OVERHEAD
      for part in m["content"]:
        if part["type"] == "text":
          total += _chars(part["text"])
        else:
          total += IMAGE_WRAPPER + image_tokens(*sizes[part["image"]])
    return total


def _chars(text: str) -> int:
  return math.ceil(len(text) / 4)
