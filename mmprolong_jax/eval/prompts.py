"""Prompts in the MMLongBench layout, as chat messages shaped like our training instances.

documentQA: an instruction, every page introduced by the document it belongs to and its page
number, then the question naming the target document; the reply is prefilled with "Answer:".
Tags are cut to 15 characters (as in MMLongBench) and come from the page's folder, so pages of
padding documents carry their own document's name. Page numbers come from the file name
(`<doc>_page5.jpg` -> 5, slide decks `<deck>-5-1024.jpg` -> 5), else the file stem is shown.

Beyond the 128K files (the study's 256K/512K), `extend_pages` pads the page list: whole documents
not already in the context, sampled at random, go alternately to the left and to the right until
the next page would pass the target length.
"""
from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path
from typing import Any, Sequence

from mmprolong_jax.eval.datasets import IMAGE_TOKEN, DataError, DocExample, NiahExample
from mmprolong_jax.eval.metrics import ANSWER_PREFIX
from mmprolong_jax.eval.tokens import TokenCounter

TAG_CHARS = 15

DOC_INSTRUCTION = (
    "You will see the pages of one or more documents, each page introduced by the name of its "
    "document, followed by a question. Reply as briefly as you can, with one word, phrase or "
    "sentence if possible. If the documents do not contain what the question asks for, reply "
    "'Not answerable.' Use this form:\nAnswer: [answer]")
DOC_PAGE = "Document {doc} (page {page}): " + IMAGE_TOKEN
DOC_QUESTION = "Question: Using Document {doc}, answer this question. {question}"

NIAH_INSTRUCTION = (
    "Below is a long passage that mixes text and images, followed by a question about it. "
    "Answer the question from the passage. Use this form:\nAnswer: [answer]")
NIAH_CHOICE_INSTRUCTION = (
    "Below is a long passage that mixes text and images, followed by a question about it with "
    "image options. Answer with the letter of the right option (A, B, ...). Use this form:\n"
    "Answer: [answer]")


@dataclasses.dataclass(frozen=True)
class Prompt:
  """One generation request.

  messages: chat turns in the training-instance structure (`mmprolong_jax.data.chat`),
    `[{"role": "user", "content": [{"type": "text", "text": str} | {"type": "image", "image": i},
    ...]}]`, where `i` indexes `images` (paths under the image root). The generator renders them,
    opens an assistant turn (`<|im_start|>assistant\n`), writes `prefill` into it and returns
    only the text generated after that.
  """
  id: str
  messages: list[dict[str, Any]]
  images: list[str]
  prefill: str = ANSWER_PREFIX


def interleave(text: str) -> list[dict[str, Any]]:
  """Content items for text whose IMAGE_TOKEN markers stand for images 0, 1, 2, ... in order."""
  items = []
  for i, piece in enumerate(text.split(IMAGE_TOKEN)):
    if i:
      items.append({"type": "image", "image": i - 1})
    if piece:
      items.append({"type": "text", "text": piece})
  return items


def _user_prompt(ex_id: str, text: str, images: Sequence[str]) -> Prompt:
  return Prompt(id=ex_id, messages=[{"role": "user", "content": interleave(text)}],
                images=list(images))


def page_label(path: str) -> str:
  stem = Path(path).stem
  m = re.search(r"page[_-]?(\d+)$", stem, flags=re.IGNORECASE) or re.search(r"-(\d+)-\d+$", stem)
  return m[1] if m else stem


def document_tag(name: str) -> str:
  return re.sub(r"\.pdf$", "", name, flags=re.IGNORECASE)[:TAG_CHARS]


def docqa_prompt(example: DocExample, pages: Sequence[str] | None = None) -> Prompt:
  """The prompt for `example`, over `pages` when given (a padded page list) else its own."""
  pages = example.pages if pages is None else pages
  context = "\n\n".join(
      DOC_PAGE.format(doc=document_tag(Path(p).parent.name), page=page_label(p)) for p in pages)
  question = DOC_QUESTION.format(doc=document_tag(example.doc_name), question=example.question)
  return _user_prompt(example.id, f"{DOC_INSTRUCTION}\n\n{context}\n\n{question}", pages)


def niah_prompt(example: NiahExample) -> Prompt:
  instruction = NIAH_CHOICE_INSTRUCTION if example.choices else NIAH_INSTRUCTION
  options = "".join(f"\n{chr(ord('A') + i)}. {IMAGE_TOKEN}" for i in range(len(example.choices)))
  text = f"{instruction}\n\n{example.context}\n\nQuestion: {example.question}{options}"
  return _user_prompt(example.id, text, example.images + example.choices)


def document_pool(examples: Sequence[DocExample]) -> dict[str, tuple[str, ...]]:
  """Every document seen in a benchmark file (its page folder) -> its pages in first-seen order."""
  pool: dict[str, dict[str, None]] = {}
  for ex in examples:
    for page in ex.pages:
      pool.setdefault(str(Path(page).parent), {})[page] = None
  return {doc: tuple(pages) for doc, pages in pool.items()}


def extend_pages(example: DocExample, pool: dict[str, tuple[str, ...]], target_tokens: int,
                 count_tokens: TokenCounter, seed: int) -> tuple[str, ...]:
  """`example.pages` padded with other documents' pages, alternately left and right, to at most
  `target_tokens` (and within one page of it). The draw depends only on seed and example."""

  def fits(pages: Sequence[str]) -> bool:
    prompt = docqa_prompt(example, pages)
    return count_tokens(prompt.messages, prompt.images) <= target_tokens

  if not fits(example.pages):
    return example.pages
  present = {str(Path(p).parent) for p in example.pages}
  negatives = [doc for doc in sorted(pool) if doc not in present]
  random.Random(f"{seed}:{example.dataset}:{example.id}").shuffle(negatives)
  left: tuple[str, ...] = ()
  right: tuple[str, ...] = ()
  for n, doc in enumerate(negatives):
    on_left = n % 2 == 0
    pages = pool[doc]

    def arrange(k: int) -> tuple[str, ...]:
      if on_left:
        return pages[:k] + left + example.pages + right
      return left + example.pages + right + pages[:k]

    # Usually the whole document fits; otherwise find the longest prefix that does.
    lo, hi = (len(pages), len(pages)) if fits(arrange(len(pages))) else (0, len(pages) - 1)
    while lo < hi:
      mid = (lo + hi + 1) // 2
      lo, hi = (mid, hi) if fits(arrange(mid)) else (lo, mid - 1)
    if on_left:
      left = pages[:lo] + left
    else:
      right = right + pages[:lo]
    if lo < len(pages):  # the next page would pass the target
      return left + example.pages + right
  raise DataError(
      f"{example.dataset} example {example.id}: the {len(negatives)} other documents are not "
      f"enough to pad to {target_tokens} tokens")
