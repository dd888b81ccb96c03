import pytest

from data_tools.chat_client import ChatClient
from judge_server import ScriptedJudge
from mmprolong_jax.eval import judge

BINARY_OK = """[Scoring Rationale]: Same number. In summary, the student's answer deserves 1 points
[Score]: 1 points
[JSON]:
```json
{"answer_score": 1}
```"""
LIST_OK = """[Rationale]: In summary, the student's answer list has 3 items, covering 2 items from the reference list.
[JSON]:
```json
{"student_answer_count": 3, "covered_count": 2}
```"""

REPLIES = {
    "forty-two": BINARY_OK,
    "only score line": "[Scoring Rationale]: wrong city.\n[Score]: 0 points",
    "summary only": "Looks right. In summary, the student's answer deserves 1 points",
    "string score": '[JSON]: {"answer_score": "1"} trailing words',
    "json wins": '[Score]: 0 points\n[JSON]:\n{"answer_score": 1}',
    "no verdict": "I cannot decide.",
    "out of range": '{"answer_score": 7}',
    "red, green, blue": LIST_OK,
    "loose counts": 'student_answer_count: 2, "covered_count": 1',
    "sentence counts": "In summary, the student's answer list has 4 items, covering 4 items from the reference list.",
    "garbled list": "[JSON]: {student_answer_count: two}",
    "nothing covered": '{"student_answer_count": 2, "covered_count": 0}',
    "rejected": 400,
}


@pytest.fixture(scope="module")
def server():
  with ScriptedJudge(REPLIES) as scripted:
    yield scripted


def _case(prediction, fmt="String", answer="42"):
  if fmt == "List":
    answer = ["red", "blue"]
  return {"question": "Q?", "answer": answer, "answer_format": fmt, "prediction": prediction}


@pytest.mark.parametrize("prediction, fmt, score, error", [
    ("forty-two", "Integer", 1.0, None),
    ("only score line", "String", 0.0, None),
    ("summary only", "Float", 1.0, None),
    ("string score", "None", 1.0, None),
    ("json wins", "String", 1.0, None),
    ("no verdict", "String", 0.0, "no score found"),
    ("out of range", "String", 1.0, None),
    ("red, green, blue", "List", 0.8, None),  # precision 2/3, recall 2/2
    ("loose counts", "List", 0.5, None),  # precision 1/2, recall 1/2
    ("sentence counts", "List", 2 / 3, None),  # covered capped at 2 of 2: precision 1/2, recall 1
    ("garbled list", "List", 0.0, "item counts not found"),
    ("nothing covered", "List", 0.0, None),
])
def test_judge_scores_and_parsing(server, tmp_path, prediction, fmt, score, error):
  client = ChatClient(server.url, "judge-model", cache_dir=tmp_path / "cache", backoff_s=0.01)
  (verdict,) = judge.Judge(client).score_many([_case(prediction, fmt)])
  assert verdict.score == pytest.approx(score)
  assert verdict.raw == REPLIES[prediction]
  assert verdict.error is None if error is None else error in verdict.error


def test_requests_caching_and_failures(server, tmp_path):
  cases = [_case("forty-two"), _case("rejected"), _case("red, green, blue", "List")]
  client = ChatClient(server.url, "judge-model", cache_dir=tmp_path / "cache", backoff_s=0.01)
  server.requests.clear()
  first = judge.Judge(client).score_many(cases)
  assert first[1] is None  # a failed request gives no verdict, so a rerun asks again
  prompts = {r["messages"][0]["content"].rsplit("[Student Answer]: ", 1)[1]: r
             for r in server.requests}
  body = prompts["forty-two\n"]
  assert body["model"] == "judge-model" and body["temperature"] == 0.0
  assert body["messages"][0]["content"] == (
      judge.BINARY_PROMPT + "[Question]: Q?\n[Standard Answer]: 42\n[Student Answer]: forty-two\n")
  list_prompt = prompts["red, green, blue\n"]["messages"][0]["content"]
  assert list_prompt.startswith(judge.LIST_PROMPT)
  assert '[Standard Answer]: ["red", "blue"]' in list_prompt
  sent = len(server.requests)
  again = judge.Judge(client).score_many(cases)
  assert len(server.requests) == sent + 1  # only the failed one is sent again
  assert [v.score for v in again if v] == [v.score for v in first if v]
  assert client.stats()["cache_hits"] == 2
