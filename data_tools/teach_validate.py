"""Strict checks on a teacher's reply; every rejection has a short reason code.

Reasons: malformed_json, missing_field, bad_answer_format, answer_format_mismatch,
bad_evidence_pages, evidence_outside_segment, not_single_page, bad_evidence_source,
missing_anchor, anchor_outside_segment, broad_scope.
"""
from __future__ import annotations

import json
import re
from typing import Any

from data_tools.layout_parse import normalize
from data_tools.teach_prompt import ANSWER_FORMATS, EVIDENCE_SOURCES


class Rejected(ValueError):
  """A reply that fails validation; `reason` is the code that is counted."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason
    self.detail = detail


_INTEGER = re.compile(r"^[-+]?\d{1,3}(,\d{3})+$|^[-+]?\d+$")
# A number with an optional currency prefix and a unit/percent suffix: "$45.20", "98.5%".
_FLOAT = re.compile(r"^[^\d\s]{0,3}\s?[-+]?[\d,]*\.?\d+\s*(%|[a-zA-Z ]{0,15})$")
_PAGE_REF = re.compile(r"\bpages?\s+((?:\d+\s*(?:[-\u2013\u2014]|to|through|,|and|&)?\s*)+)",
                       re.IGNORECASE)
_BROAD = re.compile(r"\b(whole|entire|full)\s+(document|file|report|paper|book)\b|"
                    r"\b(across|throughout)\s+the\s+(document|file)\b", re.IGNORECASE)


def split_reply(text: str) -> tuple[str, dict[str, Any]]:
  """(evidence description, JSON object) from a reply in the prompt's response format."""
  marker = re.search(r"\[\s*JSON\s*\]\s*:?", text, re.IGNORECASE)
  head, tail = (text[:marker.start()], text[marker.end():]) if marker else ("", text)
  desc = re.sub(r"^\s*\[\s*Evidence Description\s*\]\s*:?", "", head, flags=re.IGNORECASE)
  start, end = tail.find("{"), tail.rfind("}")
  if start < 0 or end <= start:
    raise Rejected("malformed_json", "no JSON object in the reply")
  try:
    obj = json.loads(tail[start:end + 1])
  except json.JSONDecodeError as e:
    raise Rejected("malformed_json", str(e)) from None
  if not isinstance(obj, dict):
    raise Rejected("malformed_json", "the JSON is not an object")
  return desc.strip(), obj


def _check_answer(answer: Any, fmt: str) -> None:
  ok = False
  if fmt == "List":
    ok = isinstance(answer, list) and bool(answer) and all(
        isinstance(a, (str, int, float)) and str(a).strip() for a in answer)
  elif isinstance(answer, bool) or isinstance(answer, (list, dict)) or answer is None:
    ok = False
  elif fmt == "String":
    ok = bool(str(answer).strip())
  elif fmt == "Integer":
    ok = isinstance(answer, int) or (isinstance(answer, float) and answer.is_integer()) or (
        isinstance(answer, str) and bool(_INTEGER.match(answer.strip())))
  elif fmt == "Float":
    ok = isinstance(answer, (int, float)) or (
        isinstance(answer, str) and bool(_FLOAT.match(answer.strip())))
  if not ok:
    raise Rejected("answer_format_mismatch", f"{answer!r} is not a valid {fmt}")


def page_refs(question: str) -> list[int]:
  """Page numbers the question refers to ("Page 4", "Pages 4-6", "pages 3, 5 and 9")."""
  refs = []
  for m in _PAGE_REF.finditer(question):
    refs += [int(x) for x in re.findall(r"\d+", m.group(1))]
  return refs


def validate(obj: dict[str, Any], task: str, segment: dict[str, Any]) -> dict[str, Any]:
  """The QA fields of a valid reply object; raises Rejected otherwise."""
  for field in ("question", "answer", "answer_format", "evidence_pages"):
    if field not in obj:
      raise Rejected("missing_field", field)
  question = obj["question"]
  if not isinstance(question, str) or not question.strip():
    raise Rejected("missing_field", "question is empty")
  fmt = obj["answer_format"]
  if fmt not in ANSWER_FORMATS:
    raise Rejected("bad_answer_format", repr(fmt))
  _check_answer(obj["answer"], fmt)

  pages = obj["evidence_pages"]
  if not isinstance(pages, list) or not pages or not all(
      isinstance(p, int) and not isinstance(p, bool) or (isinstance(p, str) and p.isdigit())
      for p in pages):
    raise Rejected("bad_evidence_pages", repr(pages))
  pages = sorted({int(p) for p in pages})
  start, end = segment["start_page"], segment["end_page"]
  if not all(start <= p <= end for p in pages):
    raise Rejected("evidence_outside_segment", f"{pages} not within [{start}, {end}]")
  if task == "extract_single" and len(pages) != 1:
    raise Rejected("not_single_page", f"{pages}")

  sources = obj.get("evidence_sources", [])
  if not isinstance(sources, list):
    raise Rejected("bad_evidence_source", repr(sources))
  canon = {s.lower(): s for s in EVIDENCE_SOURCES}
  if not all(isinstance(s, str) and s.strip().lower() in canon for s in sources):
    raise Rejected("bad_evidence_source", repr(sources))

  if _BROAD.search(question):
    raise Rejected("broad_scope", question)
  refs = page_refs(question)
  if refs and not all(start <= p <= end for p in refs):
    raise Rejected("anchor_outside_segment", f"{refs} not within [{start}, {end}]")
  titles = [normalize(s) for s in segment.get("sections", []) if len(normalize(s)) >= 4]
  if not refs and not any(t in normalize(question) for t in titles):
    raise Rejected("missing_anchor", question)

  return {"question": question.strip(), "answer": obj["answer"], "answer_format": fmt,
          "evidence_pages": pages,
          "evidence_sources": sorted({canon[s.strip().lower()] for s in sources})}


def check_reply(text: str, task: str, segment: dict[str, Any]) -> dict[str, Any]:
  """Parses and validates a reply; returns the QA fields plus the evidence description."""
  desc, obj = split_reply(text)
  qa = validate(obj, task, segment)
  qa["evidence_description"] = desc
  return qa
