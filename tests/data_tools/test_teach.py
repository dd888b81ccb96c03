"""Teachers: rule-based QA checked against the generated PDF's facts; validation reasons; the
model teacher against a scripted loopback server (retries, rejections, cache)."""
from __future__ import annotations

import json
import random
import re

import pymupdf
import pytest

from data_tools import (chat_client, common, layout_parse, render, teach, teach_prompt,
                        teach_rules, teach_validate)
import dt_pdfs
from dt_chat_server import Reply, chat_body

SEG = {"id": "d-s0", "start_page": 7, "end_page": 9, "sections": ["Results"], "source": "sections"}


@pytest.fixture(scope="module")
def report_layout(tmp_path_factory):
  path = dt_pdfs.make_report(tmp_path_factory.mktemp("pdf") / "report.pdf")
  render.quiet_mupdf()
  with pymupdf.open(path) as doc:
    return layout_parse.parse_document(doc)


def _reply_json(reply):
  return teach_validate.split_reply(reply)[1]


def _cell(value):
  return int(value) if value.isdigit() else value


def test_rule_questions_match_the_pdf_facts(report_layout):
  seg = teach_rules._Segment(report_layout, SEG)
  truth = {p: {row[0]: dict(zip(t[0], row)) for row in t[1:]}
           for p, t in ((7, dt_pdfs.TABLE), (8, dt_pdfs.SECOND_TABLE))}
  for seed in range(12):
    rng = random.Random(seed)
    qa = _reply_json(teach_rules._table_cell(seg, rng))
    page = int(re.search(r"on Page (\d+)", qa["question"]).group(1))
    col, key = re.search(r'"(.+)" value in the row "(.+)"', qa["question"]).groups()
    assert qa["answer"] == _cell(truth[page][key][col]) and qa["evidence_pages"] == [page]

    qa = _reply_json(teach_rules._table_math(seg, rng))
    page = int(re.search(r"on Page (\d+)", qa["question"]).group(1))
    col = re.search(r'"(Samples|Turbidity|Rainfall)"', qa["question"]).group(1)
    vals = {k: float(v[col]) for k, v in truth[page].items()}
    if "sum" in qa["question"]:
      want = sum(vals.values())
    elif "minus" in qa["question"]:
      a, b = re.search(r'of (.+) minus the "\w+" of (.+)\?', qa["question"]).groups()
      want = vals[a] - vals[b]
    else:
      want = max(vals, key=vals.get)
    if isinstance(want, float):
      want = f"{want:.2f}" if col == "Turbidity" else int(want)
    assert qa["answer"] == want and qa["evidence_pages"] == [page], qa
  qa = _reply_json(teach_rules._caption(seg, random.Random(0)))
  assert qa == {**qa, "question": "What is the caption of Figure 2 on Page 9?",
                "answer": "Turbidity by month", "evidence_pages": [9]}
  qa = _reply_json(teach_rules._table_keys(seg, random.Random(0)))
  assert qa["answer"] == ["North Pier", "Fish Market", "Lighthouse", "May", "June"]
  assert qa["evidence_pages"] == [7, 8] and "Pages 7 and 8" in qa["question"]

  wide = teach_rules._Segment(report_layout, {**SEG, "start_page": 1, "end_page": 14})
  qa = _reply_json(teach_rules._heading_list(wide, random.Random(3)))
  a, b = map(int, re.search(r"Pages (\d+)\D+(\d+)", qa["question"]).groups())
  truth = [(p, h) for p, h in [(1, dt_pdfs.TITLE)] + dt_pdfs.SECTIONS if a <= p <= b]
  assert qa["answer"] == [h for _, h in truth] and qa["evidence_pages"] == [p for p, _ in truth]
  qa = _reply_json(teach_rules._count(wide, random.Random(0)))
  truth = {"section headings": 6, "tables": 2, "captioned figures and tables": 2}
  what = re.search(r"How many (.+) are there", qa["question"]).group(1)
  assert qa["answer"] == truth[what] and "Pages 1-14" in qa["question"]


def test_rule_teacher_covers_all_tasks_and_passes_validation(report_layout):
  for task in teach_prompt.TASKS:
    for seed in range(8):
      reply = teach_rules.generate(report_layout, SEG, task, random.Random(seed))
      qa = teach_validate.check_reply(reply, task, SEG)
      assert qa["evidence_description"] and all(7 <= p <= 9 for p in qa["evidence_pages"])
  empty = {"pages": [{"page": p, "blocks": []} for p in range(1, 4)]}
  with pytest.raises(teach_rules.NoMaterial):
    teach_rules.generate(empty, {**SEG, "start_page": 1, "end_page": 3}, "reasoning",
                         random.Random(0))


GOOD = {"question": "In the Results section on Page 7, how many samples came from North Pier?",
        "answer": 14, "answer_format": "Integer", "evidence_pages": [7],
        "evidence_sources": ["Table"]}


@pytest.mark.parametrize("change, task, reason", [
    ({}, "extract_single", None),
    ({"question": "How many samples came from North Pier in the Results section?"},
     "extract_single", None),  # a section anchor is enough
    ({"question": "How many samples came from North Pier?"}, "extract_single", "missing_anchor"),
    ({"question": "On Page 3, how many samples?"}, "extract_single", "anchor_outside_segment"),
    ({"question": "Across the document on Page 7, how many samples?"}, "extract_single",
     "broad_scope"),
    ({"evidence_pages": [7, 8]}, "extract_single", "not_single_page"),
    ({"evidence_pages": [7, 8]}, "extract_multi", None),
    ({"evidence_pages": [12]}, "extract_multi", "evidence_outside_segment"),
    ({"evidence_pages": ["Page 7"]}, "extract_multi", "bad_evidence_pages"),
    ({"evidence_pages": []}, "extract_multi", "bad_evidence_pages"),
    ({"answer_format": "Number"}, "reasoning", "bad_answer_format"),
    ({"answer": "fourteen"}, "reasoning", "answer_format_mismatch"),
    ({"answer": "1,204"}, "reasoning", None),
    ({"answer": "$45.20", "answer_format": "Float"}, "reasoning", None),
    ({"answer": "98.5%", "answer_format": "Float"}, "reasoning", None),
    ({"answer": "many", "answer_format": "Float"}, "reasoning", "answer_format_mismatch"),
    ({"answer": "a, b", "answer_format": "List"}, "reasoning", "answer_format_mismatch"),
    ({"answer": ["a", "b"], "answer_format": "List"}, "reasoning", None),
    ({"evidence_sources": ["Chart"]}, "reasoning", "bad_evidence_source"),
    ({"answer_format": None, "question": None}, "reasoning", "missing_field"),
])
def test_validation_reasons(change, task, reason):
  obj = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
  reply = teach_prompt.format_reply("Table: Page 7 lists North Pier with 14 samples.", obj)
  if reason is None:
    qa = teach_validate.check_reply(reply, task, SEG)
    assert qa["evidence_description"].startswith("Table:")
  else:
    with pytest.raises(teach_validate.Rejected) as e:
      teach_validate.check_reply(reply, task, SEG)
    assert e.value.reason == reason


def test_malformed_replies():
  for text in ("no json here", "[JSON]: {\"question\": \"x\",}", "[JSON]: [1, 2]"):
    with pytest.raises(teach_validate.Rejected) as e:
      teach_validate.check_reply(text, "reasoning", SEG)
    assert e.value.reason == "malformed_json"
  fenced = "[Evidence Description]:\nTable.\n[JSON]:\n```json\n" + json.dumps(GOOD) + "\n```"
  assert teach_validate.check_reply(fenced, "extract_single", SEG)["answer"] == 14


def test_prompt_structure(tmp_path):
  system = teach_prompt.system_prompt("extract_single", random.Random(0))
  for piece in ("[Task]", "[General Restrictions]", "[Response Format]", "[Examples]",
                "Page numbers:", "One page only", "String", "Integer", "Float", "List",
                "Example 1", "Example 2", "[Evidence Description]:", "[JSON]:"):
    assert piece in system
  assert "Example 3" not in system
  image = tmp_path / "p.png"
  pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 4, 4), False).save(image)
  msgs = teach_prompt.build_messages("reasoning", SEG, {7: image, 8: image, 9: image},
                                     random.Random(0))
  assert msgs[0]["role"] == "system" and "quantitative reasoning" in msgs[0]["content"]
  user = msgs[1]["content"]
  assert 'Pages 7 to 9 of the document (sections: "Results")' in user[0]["text"]
  assert [p.get("text") for p in user[1::2]] == ["Page 7:", "Page 8:", "Page 9:"]
  assert user[2]["image_url"]["url"].startswith("data:image/png;base64,")
  assert teach_prompt.page_anchor([4, 5, 6]) == "Pages 4-6"
  assert teach_prompt.page_anchor([4, 9]) == "Pages 4 and 9"


def _scripted_teacher(body, n, state):
  """Replies keyed by (task, seed): see test_model_teacher for the script."""
  system = body["messages"][0]["content"]
  task = ("extract_single" if "One page only" in system else
          "extract_multi" if "Several pages first" in system else "reasoning")
  user = body["messages"][1]["content"]
  start, end = map(int, re.search(r"Pages (\d+) to (\d+)", user[0]["text"]).groups())
  key = (task, body["seed"])
  state[key] = state.get(key, 0) + 1
  seen = state[key]
  qa = {"question": f"On Page {start}, what is the first heading?", "answer": "Results",
        "answer_format": "String", "evidence_pages": [start], "evidence_sources": ["Layout"]}
  if task == "extract_single":
    if body["seed"] == 0:
      return Reply(200, chat_body("[Evidence Description]: Layout.\n[JSON]: {\"question\": "))
    return Reply(200, chat_body(teach_prompt.format_reply("Layout: heading.", qa)))
  if task == "extract_multi":
    if body["seed"] == 0 and seen == 1:
      return Reply(429, {"error": "rate limited"}, {"Retry-After": "0"})
    bad = {**qa, "evidence_pages": [start, end + 3], "answer_format": "List",
           "answer": ["a", "b"]}
    return Reply(200, chat_body(teach_prompt.format_reply("Text.", bad)))
  if seen == 1:
    return Reply(500, {"error": "overloaded"})
  if seen == 2:
    return Reply(200, chat_body("late"), delay_s=1.5)
  count = {**qa, "question": f"How many tables are on Pages {start}-{end}?", "answer": 2,
           "answer_format": "Integer", "evidence_sources": ["Table"]}
  return Reply(200, chat_body(teach_prompt.format_reply("Table: two.", count)))


def test_model_teacher_retries_validates_and_caches(tmp_path, serve):
  out, doc_id = dt_pdfs.segmented_report(tmp_path)
  seg = common.load_record(out, "segment", doc_id)["segments"][0]

  state = {}
  server = serve(lambda body, n: _scripted_teacher(body, n, state))

  def client():
    return chat_client.ChatClient(server.base_url, "teacher", cache_dir=out / "cache" / "chat",
                                  timeout_s=0.5, backoff_s=0.01, max_backoff_s=0.02, concurrency=3)

  first = client()
  assert teach.run_model(out, first, attempts=2) == {"done": 1}
  rec = common.load_record(out, "teach", doc_id)
  assert sorted(q["task"] for q in rec["qa"]) == ["extract_single", "reasoning"]
  assert rec["counts"]["rejected"] == {"evidence_outside_segment": 2, "malformed_json": 1}
  single = next(q for q in rec["qa"] if q["task"] == "extract_single")
  assert single["evidence_pages"] == [seg["start_page"]] and single["answer"] == "Results"
  assert single["id"] == f"{seg['id']}-extract_single"
  # 2 (single) + 3 (multi: 429, then two bad replies) + 3 (reasoning: 500, timeout, good)
  assert first.stats() == {"requests": 8, "cache_hits": 0, "retries": 3, "failures": 0}

  # What was sent: the system prompt, then "Page N:" + image for each page of the segment.
  user = server.requests[0]["body"]["messages"][1]["content"]
  labels = [p["text"] for p in user if p["type"] == "text"][1:]
  assert labels == [f"Page {p}:" for p in range(seg["start_page"], seg["end_page"] + 1)]
  assert sum(p["type"] == "image_url" for p in user) == len(labels)

  # A rerun from scratch is served by the cache: no request, identical record.
  common.record_path(out, "teach", doc_id).unlink()
  again = client()
  teach.run_model(out, again, attempts=2)
  assert len(server.requests) == 8 and again.stats()["requests"] == 0
  assert common.load_record(out, "teach", doc_id) == rec
  assert teach.run_model(out, again, attempts=2) == {"already_done": 1}


def test_teach_command_line_with_the_model_teacher(tmp_path, serve, monkeypatch):
  out, doc_id = dt_pdfs.segmented_report(tmp_path)
  seg = common.load_record(out, "segment", doc_id)["segments"][0]
  qa = {"question": f"How many tables are on Pages {seg['start_page']}-{seg['end_page']}?",
        "answer": 2, "answer_format": "Integer", "evidence_pages": [seg["start_page"]],
        "evidence_sources": ["Table"]}
  server = serve(lambda body, n: Reply(200, chat_body(teach_prompt.format_reply("Table.", qa))))
  monkeypatch.setenv("TEACHER_KEY", "k123")
  common.stage_main(teach, ["--out", str(out), "--teacher", "openai", "--tasks", "reasoning",
                            "--teacher_base_url", server.base_url, "--teacher_model", "m",
                            "--teacher_api_key_env", "TEACHER_KEY"])
  rec = common.load_record(out, "teach", doc_id)
  assert [q["task"] for q in rec["qa"]] == ["reasoning"] and rec["teacher"] == "openai:m"
  assert len(server.requests) == 1 and server.requests[0]["auth"] == "Bearer k123"
  with pytest.raises(SystemExit, match="--tasks"):
    common.stage_main(teach, ["--out", str(out), "--tasks", "reasoning,summaries"])


def test_failed_requests_leave_the_document_for_the_next_run(tmp_path, serve):
  out, doc_id = dt_pdfs.segmented_report(tmp_path)
  seg = common.load_record(out, "segment", doc_id)["segments"][0]
  qa = {"question": f"What is on Page {seg['start_page']}?", "answer": "Text",
        "answer_format": "String", "evidence_pages": [seg["start_page"]],
        "evidence_sources": ["Text"]}
  up = {"ok": False}
  server = serve(lambda body, n: Reply(200, chat_body(teach_prompt.format_reply("Text.", qa)))
                 if up["ok"] else Reply(503, {"error": "down"}))
  client = chat_client.ChatClient(server.base_url, "m", cache_dir=out / "cache", max_retries=1,
                                  backoff_s=0.01)
  assert teach.run_model(out, client, tasks=["extract_single"]) == {"request_failed": 1}
  assert common.load_record(out, "teach", doc_id) is None
  up["ok"] = True
  assert teach.run_model(out, client, tasks=["extract_single"]) == {"done": 1}
  assert len(common.load_record(out, "teach", doc_id)["qa"]) == 1
