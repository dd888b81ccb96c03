"""A small byte-level BPE tokenizer with Qwen2.5-VL's special tokens, trained offline.

For the CPU demo and tests (no hub access): the real runs load Qwen's tokenizer from a folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from mmprolong_jax.data.chat import SPECIAL_TOKENS

# Appended right after the learned vocabulary in this order, so with vocab_size=500 the ids match
# the `tiny()` model preset: <|image_pad|> 500, <|video_pad|> 501, <|vision_start|> 502,
# <|vision_end|> 503 (then <|im_start|>, <|im_end|>, <|endoftext|>).
_ORDER = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")

# Qwen2's pre-tokenizer split pattern, so text splits like the real tokenizer's.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def build_tiny_tokenizer(out_dir: str | Path, corpus: Iterable[str], vocab_size: int = 500) -> Path:
  """Trains BPE on `corpus`, appends the special tokens after the learned vocabulary and saves
  a transformers fast tokenizer to `out_dir`."""
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  corpus = list(corpus) + ["system user assistant You are a helpful assistant."]
  tok.train_from_iterator(corpus, trainers.BpeTrainer(
      vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False))
  tok.add_special_tokens(list(_ORDER) + [t for t in SPECIAL_TOKENS if t not in _ORDER])
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                 pad_token="<|endoftext|>")
  out_dir = Path(out_dir)
  fast.save_pretrained(out_dir)
  return out_dir
