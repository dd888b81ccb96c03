"""The generation interface the evaluation loop drives, and the generators it ships with.

A model plugs in by implementing `Generator`. The JAX model's generator lives in
`mmprolong_jax.generate`, imported only when asked for, as
`make_eval_generator(ckpt: str, *, tokenizer, min_pixels, max_pixels) -> Generator`.
"""
from __future__ import annotations

import importlib
from typing import Callable, Mapping, Protocol

from mmprolong_jax.eval.prompts import Prompt


class Generator(Protocol):

  def generate(self, batch: list[Prompt], max_new_tokens: int) -> list[str]:
    """One reply per prompt, in order: the text that follows each prompt's prefill."""
    ...


class EchoGenerator:
  """Replies with the prompt's last text part: runs the pipeline end to end without a model."""

  def generate(self, batch: list[Prompt], max_new_tokens: int) -> list[str]:
    del max_new_tokens
    return [next(item["text"] for item in reversed(p.messages[-1]["content"])
                 if item["type"] == "text") for p in batch]


class ScriptedGenerator:
  """Replies looked up by prompt id, or computed by a function of the prompt."""

  def __init__(self, replies: Mapping[str, str] | Callable[[Prompt], str]):
    self.replies = replies

  def generate(self, batch: list[Prompt], max_new_tokens: int) -> list[str]:
    del max_new_tokens
    if callable(self.replies):
      return [self.replies(p) for p in batch]
    missing = [p.id for p in batch if p.id not in self.replies]
    if missing:
      raise KeyError(f"no scripted reply for ids {missing}")
    return [self.replies[p.id] for p in batch]


def load_jax_generator(ckpt: str, **options) -> Generator:
  """options (tokenizer, min_pixels, max_pixels) go to make_eval_generator."""
  try:
    module = importlib.import_module("mmprolong_jax.generate")
  except ModuleNotFoundError as e:
    if e.name != "mmprolong_jax.generate":
      raise
    raise SystemExit("--generator jax needs mmprolong_jax/generate.py (KV-cache decoding for the "
                     "JAX model), which this checkout does not have yet") from None
  factory = getattr(module, "make_eval_generator", None)
  if factory is None:
    raise SystemExit("mmprolong_jax.generate must define make_eval_generator(ckpt, **options) returning "
                     "an object with generate(batch: list[Prompt], max_new_tokens: int) -> list[str]")
  return factory(ckpt, **options)
