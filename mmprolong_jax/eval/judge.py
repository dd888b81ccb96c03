"""The LLM judge for documentQA (the study's Tables 7-8, MMLongBench v1.1), in our own words.

Integer / Float / String / None: the judge gives 0 or 1 point. List: the judge counts the items
in the student's list and how many reference items they cover; the score is the F1 of those
counts. The chat client (`data_tools.chat_client`) brings retries, caching and concurrency; every
result keeps the judge's raw reply and what was read from it. A reply from which no score can be
read scores 0 and says so in `error`; a request that failed for good yields no result, so that a
rerun asks again.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Sequence

from data_tools.chat_client import ChatClient, user_msg

_EQUIVALENCE = (
    "A reference item counts as given when the student states it or something unmistakably "
    "equivalent: the same quantity written differently (10% and 0.1), a synonym (UK and United "
    "Kingdom), singular for plural (apple and apples). A merely related idea does not count.")

BINARY_PROMPT = f"""You are grading a student's answer to a question about a document, using the reference answer.

Guidelines:
- Find the student's final answer and decide whether it is right. Only that final answer matters, not the steps that led to it.
- {_EQUIVALENCE}
- A question with several parts is right only if every part is answered correctly.
- If the reference says the question cannot be answered, the student is right only by also saying that it cannot be answered.
- Write a short rationale of at most 150 words that ends with the sentence "In summary, the student's answer deserves x points", where x is the score.

Scores: 1 point when the student's final answer matches the reference, else 0 points. No other score exists.

Reply in exactly this format:
[Scoring Rationale]: <rationale>
[Score]: <x> points
[JSON]:
```json
{{"answer_score": <x>}}
```

Three graded examples follow, then the case to grade.

[Question]: What share of the surveyed households owned a car?
[Standard Answer]: 42%
[Student Answer]: About 0.42 of them.
[Scoring Rationale]: The student answers 0.42, the same quantity as 42%. In summary, the student's answer deserves 1 points
[Score]: 1 points
[JSON]:
```json
{{"answer_score": 1}}
```

[Question]: Which two cities host the company's research centres?
[Standard Answer]: Lyon and Turin
[Student Answer]: Lyon
[Scoring Rationale]: The question asks for two cities; the student names only one. In summary, the student's answer deserves 0 points
[Score]: 0 points
[JSON]:
```json
{{"answer_score": 0}}
```

[Question]: What is the phone number of the author?
[Standard Answer]: Not answerable
[Student Answer]: The document does not list a phone number.
[Scoring Rationale]: The reference says the question cannot be answered and the student says the same. In summary, the student's answer deserves 1 points
[Score]: 1 points
[JSON]:
```json
{{"answer_score": 1}}
```

"""

LIST_PROMPT = f"""You are grading a student's answer to a question whose reference answer is a list of required items.

Guidelines:
- First extract the list of items the student gives, leaving out filler such as "The answer is".
- Then go through the reference list and decide for each item whether the extracted list covers it.
- {_EQUIVALENCE}
- Write a short rationale of at most 200 words that ends with the sentence "In summary, the student's answer list has X items, covering Y items from the reference list."

Reply in exactly this format:
[Rationale]: <rationale>
[JSON]:
```json
{{"student_answer_count": <X>, "covered_count": <Y>}}
```

Three graded examples follow, then the case to grade.

[Question]: Which colours appear in the logo?
[Standard Answer]: ["red", "blue", "white"]
[Student Answer]: The logo is red and blue.
[Rationale]: Extracted list: red, blue. Red and blue are covered; white is missing. In summary, the student's answer list has 2 items, covering 2 items from the reference list.
[JSON]:
```json
{{"student_answer_count": 2, "covered_count": 2}}
```

[Question]: Which years had revenue above 5 million dollars?
[Standard Answer]: ["2019", "2021"]
[Student Answer]: 2018, 2019 and 2020
[Rationale]: Extracted list: 2018, 2019, 2020. Only 2019 is in the reference. In summary, the student's answer list has 3 items, covering 1 items from the reference list.
[JSON]:
```json
{{"student_answer_count": 3, "covered_count": 1}}
```

[Question]: Name the members of the board mentioned on page 3.
[Standard Answer]: ["Ana Ruiz", "T. Okafor"]
[Student Answer]: Answer: Tunde Okafor; Ana Ruiz
[Rationale]: Extracted list: Tunde Okafor, Ana Ruiz. Both match the reference (T. Okafor is Tunde Okafor). In summary, the student's answer list has 2 items, covering 2 items from the reference list.
[JSON]:
```json
{{"student_answer_count": 2, "covered_count": 2}}
```

"""

CASE = "[Question]: {question}\n[Standard Answer]: {reference}\n[Student Answer]: {prediction}\n"


@dataclasses.dataclass
class Verdict:
  score: float  # in [0, 1]
  raw: str  # the judge's reply, verbatim
  parsed: dict[str, Any]  # the numbers read from it
  error: str | None = None  # set when nothing usable could be read


def judge_messages(question: str, answer: Any, answer_format: str,
                   prediction: str) -> list[dict[str, Any]]:
  is_list = answer_format == "List"
  reference = json.dumps(answer, ensure_ascii=False) if is_list else str(answer)
  case = CASE.format(question=question, reference=reference, prediction=prediction)
  return [user_msg((LIST_PROMPT if is_list else BINARY_PROMPT) + case)]


def _json_objects(text: str) -> list[dict[str, Any]]:
  decoder, found = json.JSONDecoder(), []
  for m in re.finditer(r"\{", text):
    try:
      obj, _ = decoder.raw_decode(text, m.start())
    except json.JSONDecodeError:
      continue
    if isinstance(obj, dict):
      found.append(obj)
  return found


def _read_number(text: str, key: str, fallbacks: Sequence[str]) -> float | None:
  """The last value of `key` in a JSON object of the reply, else in loose `"key": n` text, else
  the first group of the last match of a fallback pattern."""
  for obj in reversed(_json_objects(text)):
    value = obj.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", value):
      return float(value)
  for pattern in (rf'"?{key}"?\s*[:=]\s*"?(-?\d+(?:\.\d+)?)', *fallbacks):
    matches = re.findall(pattern, text, flags=re.IGNORECASE)
    if matches:
      return float(matches[-1])
  return None


def parse_binary(raw: str) -> Verdict:
  score = _read_number(raw, "answer_score",
                       (r"\[Score\]:?\s*(\d+(?:\.\d+)?)\s*point", r"deserves\s+(\d+(?:\.\d+)?)\s+point"))
  if score is None:
    return Verdict(0.0, raw, {}, "no score found in the judge reply")
  return Verdict(min(max(score, 0.0), 1.0), raw, {"answer_score": score})


def parse_list(raw: str, reference_count: int) -> Verdict:
  student = _read_number(raw, "student_answer_count", (r"list has\s+(\d+)\s+items?",))
  covered = _read_number(raw, "covered_count", (r"covering\s+(\d+)\s+items?",))
  parsed = {k: v for k, v in (("student_answer_count", student), ("covered_count", covered))
            if v is not None}
  if student is None or covered is None:
    return Verdict(0.0, raw, parsed, "item counts not found in the judge reply")
  # Judges sometimes overcount; keep the counts consistent before taking F1.
  covered = min(covered, reference_count)
  if covered <= 0:
    return Verdict(0.0, raw, parsed)
  precision, recall = covered / max(student, covered), covered / reference_count
  return Verdict(2 * precision * recall / (precision + recall), raw, parsed)


class Judge:
  """Scores documentQA predictions through an OpenAI-compatible endpoint."""

  def __init__(self, client: ChatClient, max_tokens: int = 512):
    self.client = client
    self.max_tokens = max_tokens

  def score_many(self, cases: Sequence[dict[str, Any]],
                 progress: str | None = None) -> list[Verdict | None]:
    """Each case has question, answer, answer_format and prediction (the parsed answer).
    Returns one Verdict per case, or None where the request failed for good."""
    requests = [judge_messages(c["question"], c["answer"], c["answer_format"], c["prediction"])
                for c in cases]
    results = self.client.complete_many(requests, progress=progress, temperature=0.0,
                                        max_tokens=self.max_tokens)
    verdicts: list[Verdict | None] = []
    for case, result in zip(cases, results):
      if not result.ok:
        verdicts.append(None)
      elif case["answer_format"] == "List":
        verdicts.append(parse_list(result.text or "", len(case["answer"])))
      else:
        verdicts.append(parse_binary(result.text or ""))
    return verdicts
