"""Rule-based scores, following MMLongBench's conventions.

documentQA (score in [0, 1], on the answer parsed from after "Answer:"):
  Integer  some number in the prediction equals the reference;
  Float    some number is within 1% (relative) of the reference, or of reference x100 / /100
           (percent written either way);
  String / None ("Not answerable")  references that must match verbatim (URLs, file names, page
           refs, dates, times, e-mails, number ranges) must be contained in the prediction;
           everything else gets SQuAD token F1;
  List     each reference item scored against the whole prediction by its own type, averaged;
           plain-word items are first joined into one string so that F1 is not diluted.
MM-NIAH (0 or 1; the better of the raw and the parsed prediction):
  substring  retrieval-text, reasoning-text: a normalised reference is a substring;
  count      counting-*: the integer list in the prediction sums to the reference list's sum
             (MMLongBench compares sums, which tolerates formatting of the per-needle list);
  choice     retrieval-image, reasoning-image: the option letter picked equals the reference.
"""
from __future__ import annotations

import collections
import json
import math
import re
import string
from typing import Any

ANSWER_PREFIX = "Answer:"

NIAH_METRICS = {
    ("retrieval", "text"): "substring",
    ("counting", "text"): "count",
    ("reasoning", "text"): "substring",
    ("retrieval", "image"): "choice",
    ("counting", "image"): "count",
    ("reasoning", "image"): "choice",
}


def parse_answer(text: str, prefix: str = ANSWER_PREFIX) -> str:
  """The answer in a reply that continues after `prefix`; models sometimes write it again."""
  m = re.search(re.escape(prefix), text, flags=re.IGNORECASE)
  if m is not None:
    text = text[m.end():]
  text = text.strip()
  while text.lower().startswith(prefix.lower()):
    text = text[len(prefix):].strip()
  return text


# ----- text normalisation ---------------------------------------------------------------------

_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
  """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
  text = text.lower().translate(_PUNCT)
  return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def token_f1(prediction: str, reference: str) -> float:
  pred, ref = normalize(prediction).split(), normalize(reference).split()
  common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(pred), common / len(ref)
  return 2 * precision * recall / (precision + recall)


# ----- numbers ---------------------------------------------------------------------------------

# Trailing units and scale words dropped before reading a number ("12 kg", "3 million").
_UNIT_SUFFIXES = ("kg", "meters", "acres", "minutes", "miles", "mile", "feet", "million",
                  "thousand", "billion", "mm", "m")


def clean_number_text(value: Any) -> str:
  text = str(value).lower().strip().replace(",", "")
  for suffix in _UNIT_SUFFIXES:
    if text.endswith(suffix):
      text = text[:-len(suffix)].strip()
  text = re.sub(r"^['\"]|['\"]$", "", text).strip()
  for symbol in "$£%":
    text = text.strip().strip(symbol)
  return text.strip()


def to_number(value: Any) -> float | None:
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value)
  try:
    number = float(clean_number_text(value))
  except ValueError:
    return None
  return number if math.isfinite(number) else None


def numbers_in(text: str) -> list[float]:
  found = (float(m) for m in re.findall(r"-?\d+(?:\.\d*)?|-?\.\d+", text.replace(",", "")))
  return [n for n in found if math.isfinite(n)]


_VERBATIM = [re.compile(p) for p in (
    r"https://", r"\.(py|ipynb)$", r"^page", r"^\d+(-\d+|\s\d+)?$", r"(a\.m\.|p\.m\.)",
    r"^\d{4}[-/\s]\d{1,2}[-/\s]\d{1,2}$", r"^\d{1,2}[-/\s]\d{1,2}[-/\s]\d{2,4}$",
    r"^\d{4}[-/\s]\d{1,2}$", r"^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$")]


def needs_verbatim(reference: str) -> bool:
  """References that token F1 would score too leniently (a URL sharing 'https' etc.)."""
  return any(p.search(reference) for p in _VERBATIM)


def _item_format(item: Any) -> str:
  if isinstance(item, int):
    return "Integer"
  if isinstance(item, float):
    return "Float"
  number = to_number(item)
  if number is None:
    return "String"
  return "Integer" if number.is_integer() and "%" not in str(item) else "Float"


# ----- document QA -----------------------------------------------------------------------------

def docqa_score(prediction: str, answer: Any, answer_format: str) -> float:
  """Rule-based score of a parsed prediction against a reference of the given answer_format."""
  if answer_format in ("Integer", "Float"):
    reference = to_number(answer)
    if reference is None:
      raise ValueError(f"{answer_format} reference {answer!r} is not a number")
    candidates = numbers_in(clean_number_text(prediction))
    if answer_format == "Integer":
      return float(reference in candidates)
    targets = (reference, reference / 100, reference * 100)
    return float(any(math.isclose(t, c, rel_tol=0.01) for t in targets for c in candidates))
  if answer_format in ("String", "None"):
    answer = str(answer)
    return float(answer in prediction) if needs_verbatim(answer) else token_f1(prediction, answer)
  if answer_format == "List":
    items = json.loads(answer) if isinstance(answer, str) else list(answer)
    words = [i for i in items
             if isinstance(i, str) and _item_format(i) == "String" and not needs_verbatim(i)]
    merged = " ".join(words).strip()
    items = ([merged] if merged else []) + [i for i in items if i not in words]
    return sum(docqa_score(prediction, i, _item_format(i)) for i in items) / len(items)
  raise ValueError(f"unknown answer_format {answer_format!r}")


# ----- MM-NIAH ---------------------------------------------------------------------------------

def count_list(prediction: str) -> list[int]:
  """The per-needle counts a reply gives: its last [..] list of integers, else all integers."""
  for group in reversed(re.findall(r"\[([^\[\]]*)\]", prediction)):
    items = [s.strip() for s in group.split(",") if s.strip()]
    ints = [int(s) for s in items if re.fullmatch(r"-?\d+", s)]
    if ints:
      return ints
  return [int(s) for s in re.findall(r"\d+", prediction)]


def choice_index(prediction: str) -> int:
  """The 0-based option a reply picks (letters A-J), or -1."""
  text = " ".join(prediction.split())
  for pattern in (r"answer is \(?([A-J])\)?", r"[aA]nswer:\s*([A-J])\b"):
    m = re.search(pattern, text)
    if m:
      return ord(m[1]) - ord("A")
  letters = re.findall(r"\b([A-J])\b", text)
  return ord(letters[-1]) - ord("A") if letters else -1


def _niah_once(prediction: str, answer: Any, metric: str) -> float:
  if metric == "substring":
    refs = [answer] if isinstance(answer, str) else answer
    return float(any(normalize(r) in normalize(prediction) for r in refs))
  if metric == "count":
    return float(sum(count_list(prediction)) == sum(answer))
  if metric == "choice":
    return float(choice_index(prediction) == answer)
  raise ValueError(f"unknown NIAH metric {metric!r}")


def niah_score(prediction: str, answer: Any, task: str, modality: str) -> float:
  metric = NIAH_METRICS[task, modality]
  return max(_niah_once(p, answer, metric) for p in (prediction, parse_answer(prediction)))
