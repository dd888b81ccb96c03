"""Evaluation units (one benchmark file at one length) and how to prompt and score their examples."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

from mmprolong_jax.eval import datasets, metrics, prompts
from mmprolong_jax.eval.tokens import TokenCounter

NIAH_VARIANTS = tuple(f"{t}-{m}" for t in datasets.NIAH_TASKS for m in datasets.NIAH_MODALITIES)
GROUPS = {"doc": datasets.DOC_DATASETS, "niah": NIAH_VARIANTS}


@dataclasses.dataclass(frozen=True)
class Unit:
  benchmark: str  # "doc" | "niah"
  name: str  # documentQA dataset or NIAH variant ("counting-image")
  k: int  # context length in K tokens

  @property
  def stem(self) -> str:
    return f"{self.name}_K{self.k}"


def expand_units(tasks: Sequence[str], lengths: Sequence[int]) -> list[Unit]:
  """`tasks` holds group names (doc, niah) and/or single datasets / NIAH variants."""
  benchmark_of = {m: b for b, members in GROUPS.items() for m in members}
  names: dict[str, str] = {}  # ordered: name -> benchmark
  for task in tasks:
    if task in GROUPS:
      names.update(dict.fromkeys(GROUPS[task], task))
    elif task in benchmark_of:
      names[task] = benchmark_of[task]
    else:
      raise ValueError(f"unknown task {task!r}; known: {', '.join([*GROUPS, *benchmark_of])}")
  units = [Unit(b, n, k) for k in lengths for n, b in names.items()]
  longest = max(datasets.FILE_LENGTHS)
  for u in units:
    if u.k not in datasets.FILE_LENGTHS and not (u.benchmark == "doc" and u.k > longest):
      raise ValueError(f"{u.stem}: files exist for {datasets.FILE_LENGTHS}K; only documentQA "
                       f"goes beyond {longest}K, by padding the {longest}K file")
  return units


@dataclasses.dataclass
class Task:
  unit: Unit
  examples: list[Any]
  prompt: Callable[[Any], prompts.Prompt]
  record: Callable[[Any, prompts.Prompt, str], dict[str, Any]]  # (example, prompt, reply)


def _doc_record(ex: datasets.DocExample, prompt: prompts.Prompt, reply: str) -> dict[str, Any]:
  parsed = metrics.parse_answer(reply)
  return {"id": ex.id, "question": ex.question, "answer": ex.answer,
          "answer_format": ex.answer_format, "num_images": len(prompt.images),
          "prediction": reply, "parsed": parsed,
          "score": metrics.docqa_score(parsed, ex.answer, ex.answer_format)}


def _niah_record(ex: datasets.NiahExample, prompt: prompts.Prompt, reply: str) -> dict[str, Any]:
  return {"id": ex.id, "question": ex.question, "answer": ex.answer,
          "num_images": len(prompt.images), "prediction": reply,
          "parsed": metrics.parse_answer(reply),
          "score": metrics.niah_score(reply, ex.answer, ex.task, ex.modality)}


def load_task(unit: Unit, data_dir: str | os.PathLike, image_dir: str | os.PathLike,
              count_tokens: TokenCounter, seed: int) -> Task:
  if unit.benchmark == "niah":
    task, modality = unit.name.split("-")
    path = datasets.niah_path(data_dir, task, modality, unit.k)
    examples = datasets.read_niah(path, task, modality, image_dir)
    return Task(unit, examples, prompts.niah_prompt, _niah_record)
  if unit.k in datasets.FILE_LENGTHS:
    path = datasets.docqa_path(data_dir, unit.name, unit.k)
    return Task(unit, datasets.read_docqa(path, unit.name, image_dir), prompts.docqa_prompt,
                _doc_record)
  # Longer than any file: pad the longest file's contexts with its other documents.
  path = datasets.docqa_path(data_dir, unit.name, max(datasets.FILE_LENGTHS))
  examples = datasets.read_docqa(path, unit.name, image_dir)
  pool = prompts.document_pool(examples)

  def padded_prompt(ex: datasets.DocExample) -> prompts.Prompt:
    pages = prompts.extend_pages(ex, pool, unit.k * 1024, count_tokens, seed)
    return prompts.docqa_prompt(ex, pages)

  return Task(unit, examples, padded_prompt, _doc_record)
