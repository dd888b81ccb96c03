"""Readers for MMLongBench-format benchmark files, validated up front with file:line errors.

Layout under the data root (as in MMLongBench's `mmlb_data/`):
  documentQA/{mmlongdoc,longdocurl,slidevqa}_K{8,16,32,64,128}.jsonl
  NIAH/{retrieval,counting,reasoning}-{text,image}_test_K{n}[_<suffix>].jsonl  (e.g. `_dep6`)
Image paths inside the files are relative to an image root (MMLongBench's `mmlb_image/`, which
may be the data root itself); absolute paths are used as they are. Every referenced image must
exist, so a broken download fails before any generation starts.

documentQA record: id, doc_name, question (str); answer (str | int | float, or for List a list or
the JSON text of one); answer_format (String | Integer | Float | List | None); page_list (the
context's page images in order; at long lengths it also holds pages of other documents, each page
in its own document's folder: `<...>/<doc>/<file>`); ans_page_list (0-based page indices in the
original document; kept for analysis, not used for scoring).

NIAH record (MM-NIAH as standardised by MMLongBench): id (str | int); question (str); ctxs (list of
{"text": str, ...}, or plain strings: the haystack paragraphs, where each "<image>" marks where
the next image goes); image_list (list of paths); needle_image_list (optional list of paths,
placed after image_list: counting-image puts its needles in the question); choices_image (list of
paths, only for the multiple-choice variants retrieval-image and reasoning-image). The number of
"<image>" markers in ctxs + question must equal len(image_list) + len(needle_image_list).
answer: str or list of str (retrieval-text, reasoning-text; any listed string counts), list of
int (counting: one count per needle place), int (0-based index into choices_image).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from mmprolong_jax.eval import metrics

DOC_DATASETS = ("mmlongdoc", "longdocurl", "slidevqa")  # Table 4 column order
NIAH_TASKS = ("retrieval", "counting", "reasoning")
NIAH_MODALITIES = ("text", "image")
FILE_LENGTHS = (8, 16, 32, 64, 128)  # context lengths (in K tokens) that ship as files
ANSWER_FORMATS = ("String", "Integer", "Float", "List", "None")
IMAGE_TOKEN = "<image>"


class DataError(ValueError):
  """A benchmark file that is missing or does not follow the expected format."""


@dataclasses.dataclass(frozen=True)
class DocExample:
  id: str
  dataset: str
  doc_name: str
  question: str
  answer: Any  # str | int | float, or list for answer_format "List"
  answer_format: str
  pages: tuple[str, ...]  # resolved image paths
  answer_pages: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class NiahExample:
  id: str
  task: str
  modality: str
  question: str
  answer: Any
  context: str  # paragraphs joined by blank lines, with IMAGE_TOKEN markers
  images: tuple[str, ...]  # one per marker in context + question, in order
  choices: tuple[str, ...]  # option images of the multiple-choice variants


def parse_length(text: str) -> int:
  """'64K' / '64k' / '64' -> 64 (thousands of tokens, K = 1024)."""
  m = re.fullmatch(r"\s*(\d+)\s*[kK]?\s*", text)
  if m is None or int(m[1]) <= 0:
    raise ValueError(f"bad context length {text!r}; expected e.g. 64K")
  return int(m[1])


def docqa_path(data_dir: str | os.PathLike, dataset: str, k: int) -> Path:
  if dataset not in DOC_DATASETS:
    raise DataError(f"unknown documentQA dataset {dataset!r}; known: {', '.join(DOC_DATASETS)}")
  path = Path(data_dir) / "documentQA" / f"{dataset}_K{k}.jsonl"
  if not path.is_file():
    raise DataError(f"missing benchmark file {path}")
  return path


def niah_path(data_dir: str | os.PathLike, task: str, modality: str, k: int) -> Path:
  stem = f"{task}-{modality}_test_K{k}"
  folder = Path(data_dir) / "NIAH"
  found = sorted({*folder.glob(f"{stem}.jsonl"), *folder.glob(f"{stem}_*.jsonl")})
  if len(found) != 1:
    what = "no file" if not found else f"{len(found)} files ({', '.join(p.name for p in found)})"
    raise DataError(f"expected one NIAH file {folder}/{stem}[_*].jsonl, found {what}")
  return found[0]


def _records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e})") from None
      if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
      yield where, rec


def _field(rec: dict[str, Any], name: str, types: type | tuple[type, ...], where: str,
           default: Any = ...) -> Any:
  if name not in rec:
    if default is not ...:
      return default
    raise DataError(f"{where}: missing field {name!r}")
  value = rec[name]
  # bool is an int subclass but never a valid count, index or answer here.
  if not isinstance(value, types) or isinstance(value, bool):
    names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
    raise DataError(f"{where}: field {name!r} must be {names}, got {value!r:.80}")
  return value


def _str_list(rec: dict[str, Any], name: str, where: str, default: Any = ...) -> list[str]:
  value = _field(rec, name, list, where, default)
  if not all(isinstance(v, str) for v in value):
    raise DataError(f"{where}: field {name!r} must be a list of strings")
  return value


def _images(paths: list[str], image_root: Path, where: str) -> tuple[str, ...]:
  resolved = []
  for p in paths:
    full = image_root / p  # an absolute p replaces the root
    if not full.is_file():
      raise DataError(f"{where}: image {p!r} not found (looked for {full})")
    resolved.append(str(full))
  return tuple(resolved)


def _unique_id(rec: dict[str, Any], seen: set[str], where: str) -> str:
  ex_id = str(_field(rec, "id", (str, int), where))
  if ex_id in seen:
    raise DataError(f"{where}: duplicate id {ex_id!r}")
  seen.add(ex_id)
  return ex_id


def _doc_answer(rec: dict[str, Any], fmt: str, where: str) -> Any:
  answer = _field(rec, "answer", (str, int, float, list), where)
  if fmt == "List":
    if isinstance(answer, str):
      try:
        answer = json.loads(answer)
      except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, list) or not answer:
      raise DataError(f"{where}: a List answer must be a non-empty list, got {rec['answer']!r:.80}")
  elif isinstance(answer, list):
    raise DataError(f"{where}: answer_format {fmt} but the answer is a list")
  elif fmt in ("Integer", "Float") and metrics.to_number(answer) is None:
    raise DataError(f"{where}: answer_format {fmt} but the answer {answer!r} is not a number")
  return answer


def read_docqa(path: str | os.PathLike, dataset: str,
               image_root: str | os.PathLike) -> list[DocExample]:
  examples, seen = [], set()
  for where, rec in _records(Path(path)):
    fmt = _field(rec, "answer_format", str, where)
    if fmt not in ANSWER_FORMATS:
      raise DataError(f"{where}: answer_format {fmt!r} is not one of {', '.join(ANSWER_FORMATS)}")
    pages = _str_list(rec, "page_list", where)
    if not pages:
      raise DataError(f"{where}: page_list is empty")
    answer_pages = _field(rec, "ans_page_list", list, where)
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in answer_pages):
      raise DataError(f"{where}: ans_page_list must be a list of integers")
    examples.append(DocExample(
        id=_unique_id(rec, seen, where), dataset=dataset,
        doc_name=_field(rec, "doc_name", str, where),
        question=_field(rec, "question", str, where),
        answer=_doc_answer(rec, fmt, where), answer_format=fmt,
        pages=_images(pages, Path(image_root), where), answer_pages=tuple(answer_pages)))
  return examples


def _niah_answer(rec: dict[str, Any], metric: str, num_choices: int, where: str) -> Any:
  if metric == "substring":
    answer = _field(rec, "answer", (str, list), where)
    if isinstance(answer, list) and not (answer and all(isinstance(a, str) for a in answer)):
      raise DataError(f"{where}: answer must be a string or a non-empty list of strings")
  elif metric == "count":
    answer = _field(rec, "answer", list, where)
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in answer):
      raise DataError(f"{where}: a counting answer must be a list of integers, got {answer!r:.80}")
  else:
    answer = _field(rec, "answer", int, where)
    if not 0 <= answer < num_choices:
      raise DataError(f"{where}: answer {answer} is not an index into {num_choices} choices")
  return answer


def _ctx_text(ctx: Any, where: str) -> str:
  text = ctx.get("text") if isinstance(ctx, dict) else ctx
  if not isinstance(text, str):
    raise DataError(f"{where}: each ctxs entry must be a string or an object with a 'text' string")
  return text


def read_niah(path: str | os.PathLike, task: str, modality: str,
              image_root: str | os.PathLike) -> list[NiahExample]:
  metric = metrics.NIAH_METRICS[task, modality]
  examples, seen = [], set()
  for where, rec in _records(Path(path)):
    context = "\n\n".join(_ctx_text(c, where) for c in _field(rec, "ctxs", list, where))
    question = _field(rec, "question", str, where)
    image_paths = _str_list(rec, "image_list", where) + _str_list(
        rec, "needle_image_list", where, default=[])
    markers = context.count(IMAGE_TOKEN) + question.count(IMAGE_TOKEN)
    if markers != len(image_paths):
      raise DataError(f"{where}: {markers} {IMAGE_TOKEN} markers in ctxs + question but "
                      f"{len(image_paths)} images in image_list + needle_image_list")
    choices = _str_list(rec, "choices_image", where, default=[])
    if (metric == "choice") != bool(choices):
      need = "needs" if metric == "choice" else "must not have"
      raise DataError(f"{where}: {task}-{modality} {need} a non-empty choices_image list")
    examples.append(NiahExample(
        id=_unique_id(rec, seen, where), task=task, modality=modality, question=question,
        answer=_niah_answer(rec, metric, len(choices), where), context=context,
        images=_images(image_paths, Path(image_root), where),
        choices=_images(choices, Path(image_root), where)))
  return examples
