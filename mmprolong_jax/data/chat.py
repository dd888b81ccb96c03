"""Chat formatting and tokenization of one instance in the Qwen2.5-VL chat format.

Matches the chat template shipped in Qwen2.5-VL-7B-Instruct's tokenizer_config.json (the
`add_vision_id=False` path): when the first message is not a system message, the system turn
"You are a helpful assistant." is prepended; every message renders as
`<|im_start|>{role}\\n{content}<|im_end|>\\n`, its content parts concatenated with nothing in
between, each image part as `<|vision_start|><|image_pad|><|vision_end|>`. As in the HF processor,
each `<|image_pad|>` then stands for t*h*w/4 copies (the image's merged grid).

The conversation string is tokenized once (special tokens are atomic, so expanding the pads
afterwards in id space gives the same ids as tokenizing the expanded string). Loss targets are
the tokens of assistant contents plus the `<|im_end|>` closing each assistant turn; the role
header and the newline after `<|im_end|>` are not targets.

Instance messages follow data_tools' format: `{"role": "system"|"user"|"assistant", "content":
[{"type": "image", "image": idx} | {"type": "text", "text": str}]}` (a plain string content is
accepted as one text part).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mmprolong_jax.data.image_processing import num_image_tokens

DEFAULT_SYSTEM = "You are a helpful assistant."
ROLES = ("system", "user", "assistant")
SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                  "<|endoftext|>")


class ChatTokenizer:
  """Turns instance messages + image grids into (input_ids, loss_mask) with a HF fast tokenizer."""

  def __init__(self, tokenizer):
    if not getattr(tokenizer, "is_fast", False):
      raise ValueError("a fast (Rust) tokenizer is needed for offsets")
    self.tokenizer = tokenizer
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
      raise ValueError(f"tokenizer lacks Qwen2.5-VL special tokens {missing}")
    self.ids = {t: vocab[t] for t in SPECIAL_TOKENS}
    self.image_token_id = self.ids["<|image_pad|>"]
    self.vision_start_id = self.ids["<|vision_start|>"]
    self.vision_end_id = self.ids["<|vision_end|>"]

  def render(self, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]], list[int]]:
    """Conversation text with one pad per image; char spans of loss targets; image indices used."""
    if not messages:
      raise ValueError("instance has no messages")
    if messages[0]["role"] != "system":
      messages = [{"role": "system", "content": DEFAULT_SYSTEM}, *messages]
    pieces, spans, image_refs = [], [], []
    size = 0
    for m in messages:
      role = m.get("role")
      if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
      header = f"<|im_start|>{role}\n"
      body = []
      content = m["content"]
      for part in ([{"type": "text", "text": content}] if isinstance(content, str) else content):
        if part.get("type") == "image":
          if role == "assistant":
            raise ValueError("images inside assistant turns are not supported")
          body.append("<|vision_start|><|image_pad|><|vision_end|>")
          image_refs.append(int(part["image"]))
        elif part.get("type") == "text":
          body.append(part["text"])
        else:
          raise ValueError(f"unknown content part {part!r}")
      text = header + "".join(body) + "<|im_end|>"
      if role == "assistant":
        spans.append((size + len(header), size + len(text)))
      pieces.append(text + "\n")
      size += len(text) + 1
    return "".join(pieces), spans, image_refs

  def encode(self, messages: Sequence[dict], grids_thw) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """-> (input_ids int32 [L], loss_mask uint8 [L], image indices in token order).

    `grids_thw[i]` is the resized grid of the instance's image i; each image part expands to
    num_image_tokens(grid) pads.
    """
    text, spans, image_refs = self.render(messages)
    enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], np.int32)
    starts = np.asarray([s for s, _ in enc["offset_mapping"]], np.int64)
    target = np.zeros(len(ids), np.uint8)
    for lo, hi in spans:
      target[(starts >= lo) & (starts < hi)] = 1

    pads = np.flatnonzero(ids == self.image_token_id)
    if len(pads) != len(image_refs):
      raise ValueError(f"{len(pads)} <|image_pad|> tokens for {len(image_refs)} image parts; "
                       "does a text part contain a special token?")
    for ref in image_refs:
      if not 0 <= ref < len(grids_thw):
        raise ValueError(f"image index {ref} out of range for {len(grids_thw)} images")
    repeats = np.ones(len(ids), np.int64)
    repeats[pads] = [num_image_tokens(grids_thw[r]) for r in image_refs]
    return np.repeat(ids, repeats), np.repeat(target, repeats), image_refs
