import json
import sys
import types

import pytest

from judge_server import ScriptedJudge
from mmprolong_jax.eval import generators, outputs, prompts, run, tasks, tokens

DOC_REPLIES = {  # reply per example index; rule scores 62.5, 25 and 75 (see eval_synth.DOC_ANSWERS)
    "mmlongdoc": [" Answer: red bicycle", "12", "apple", "Paris"],  # 1, 1, 0.5, 0
    "longdocurl": ["red bicycle", "13", "pear", "Paris"],  # 1, 0, 0, 0
    "slidevqa": ["red bicycle", "12", "pear", "Not answerable."],  # 1, 1, 0, 1
}
NIAH_REPLIES = {  # by question; Ret. (50 + 100) / 2, Count 100, Reas. 0
    "What is the secret word?": "The secret word is Blue Moon.",
    "Which city?": "Bergen",
    "How many apples per needle?": "[1, 2]",
    "What is 6 times 7?": "41",
    "Which image appeared in the text?": "B",
    "How many times does": "[1, 1]",
    "Which image shows what the text describes?": "B",
}
BINARY = '[Score]: {} points\n[JSON]:\n```json\n{{"answer_score": {}}}\n```'
JUDGE_REPLIES = {  # by parsed prediction; judge scores 66.67, 25, 75
    "red bicycle": BINARY.format(1, 1),
    "12": BINARY.format(1, 1),
    "13": "The student is close.",  # malformed: 0 points, error kept
    "apple": '[JSON]: {"student_answer_count": 1, "covered_count": 1}',  # F1 2/3
    "pear": '[JSON]: {"student_answer_count": 1, "covered_count": 0}',
    "Paris": BINARY.format(0, 0),
    "Not answerable.": BINARY.format(1, 1),
}


def scripted_reply(prompt):
  if "_" in prompt.id:
    dataset, i = prompt.id.rsplit("_", 1)
    return DOC_REPLIES[dataset][int(i)]
  text = "".join(c["text"] for c in prompt.messages[0]["content"] if c["type"] == "text")
  return next(r for q, r in NIAH_REPLIES.items() if f"Question: {q}" in text)


class Recorder(generators.ScriptedGenerator):

  def __init__(self):
    super().__init__(scripted_reply)
    self.seen = []

  def generate(self, batch, max_new_tokens):
    assert max_new_tokens == 128 and len(batch) <= 3
    self.seen += [p.id for p in batch]
    return super().generate(batch, max_new_tokens)


@pytest.fixture
def fake_jax(monkeypatch):
  """Stands in for mmprolong_jax.generate, checking the hook's contract."""
  gen = Recorder()
  module = types.ModuleType("mmprolong_jax.generate")
  def make_eval_generator(ckpt, *, tokenizer, min_pixels, max_pixels):
    gen.options = dict(ckpt=ckpt, tokenizer=tokenizer, min_pixels=min_pixels, max_pixels=max_pixels)
    return gen
  module.make_eval_generator = make_eval_generator
  monkeypatch.setitem(sys.modules, "mmprolong_jax.generate", module)
  return gen


def _main(bench, out, *extra):
  return run.main(["--data_dir", str(bench), "--out", str(out), "--generator", "jax",
                   "--ckpt", "/ckpts/final", "--batch_size", "3", *extra])


def test_doc_end_to_end_with_judge_and_resume(bench, tmp_path, fake_jax, capsys):
  out = tmp_path / "out"
  with ScriptedJudge(JUDGE_REPLIES) as server:
    args = ["--tasks", "doc", "--lengths", "64K,128K", "--judge_url", server.url,
            "--judge_model", "judge"]
    assert _main(bench, out, *args) == 0
    # 24 judged examples, but only 7 distinct (question, reference, answer) cases reach the
    # server: the rest come from the judge cache.
    assert len(fake_jax.seen) == 24 and len(server.requests) == 7
    assert len(outputs.read_records(out / "judge" / "slidevqa_K128.jsonl")) == 4
    printed = capsys.readouterr().out
    assert "final |   66.67   25.00   75.00   55.56 |   66.67" in printed
    report = json.loads((out / "report.json").read_text())
    rule, judged = report["tables"]["docqa_rule"], report["tables"]["docqa_judge"]
    assert rule["128K"] == pytest.approx(
        {"MMLB-D": 62.5, "LD-URL": 25.0, "SLIDE": 75.0, "AVG.": 162.5 / 3})
    assert judged["64K"] == pytest.approx(
        {"MMLB-D": 100 * (2 + 2 / 3) / 4, "LD-URL": 25.0, "SLIDE": 75.0, "AVG.": 500 / 9})
    assert judged["AVG."] == pytest.approx(500 / 9)
    gen = outputs.read_records(out / "generations" / "mmlongdoc_K64.jsonl")
    assert gen[0] == {"id": "mmlongdoc_0", "question": "Question 0?", "answer": "red bicycle",
                      "answer_format": "String", "num_images": 3,
                      "prediction": " Answer: red bicycle", "parsed": "red bicycle", "score": 1.0}
    verdict = outputs.read_records(out / "judge" / "longdocurl_K128.jsonl")[1]
    assert verdict["raw"] == "The student is close." and verdict["score"] == 0.0
    assert verdict["error"] and verdict["judge_model"] == "judge"

    # A rerun does nothing new; a torn file is repaired and only its missing examples redone.
    assert _main(bench, out, *args) == 0
    assert len(fake_jax.seen) == 24 and len(server.requests) == 7
    path = out / "generations" / "mmlongdoc_K64.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]) + '{"id": "mml')
    assert _main(bench, out, *args) == 0
    assert fake_jax.seen[24:] == ["mmlongdoc_2", "mmlongdoc_3"]
    assert [r["id"] for r in outputs.read_records(path)] == [f"mmlongdoc_{i}" for i in range(4)]
  assert json.loads((out / "report.json").read_text())["tables"]["docqa_judge"] == judged


def test_niah_end_to_end(bench, tmp_path, fake_jax):
  out = tmp_path / "out"
  assert _main(bench, out, "--tasks", "niah", "--lengths", "64K", "--model_name", "m") == 0
  table = json.loads((out / "report.json").read_text())["tables"]["niah"]
  assert table["64K"] == pytest.approx({"Ret.": 75.0, "Count": 100.0, "Reas.": 0.0, "AVG.": 175 / 3})
  rec = outputs.read_records(out / "generations" / "retrieval-image_K64.jsonl")[0]
  assert rec["num_images"] == 4 and rec["score"] == 1.0


def test_echo_and_judge_only_runs(bench, tmp_path, capsys):
  out = tmp_path / "out"
  argv = ["--data_dir", str(bench), "--out", str(out), "--tasks", "slidevqa,counting-text",
          "--lengths", "64"]
  assert run.main([*argv, "--generator", "echo"]) == 0
  assert [r["prediction"] for r in outputs.read_records(out / "generations" / "slidevqa_K64.jsonl")][:1] == [
      "\n\nQuestion: Using Document slidevqadoc0, answer this question. Question 0?"]
  assert "echo " in capsys.readouterr().out
  assert run.main([*argv, "--generator", "none", "--model_name", "again"]) == 0
  assert "again " in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--tasks", "docs"], "unknown task 'docs'"),
    (["--tasks", "niah", "--lengths", "256K"], "only documentQA goes beyond 128K"),
    (["--lengths", "64KB"], "bad context length"),
    (["--tasks", "slidevqa", "--lengths", "32K"], "missing benchmark file"),
    (["--judge_url", "http://127.0.0.1:9/v1"], "--judge_url needs --judge_model"),
    (["--tasks", "slidevqa", "--lengths", "256K"], "3 other documents are not enough to pad"),
])
def test_cli_errors(bench, tmp_path, extra, message):
  with pytest.raises(SystemExit, match=message):
    run.main(["--data_dir", str(bench), "--out", str(tmp_path), "--generator", "echo", *extra])


def test_jax_hook_errors(bench, tmp_path, monkeypatch):
  argv = ["--data_dir", str(bench), "--out", str(tmp_path), "--tasks", "slidevqa", "--generator", "jax"]
  with pytest.raises(SystemExit, match="needs --ckpt"):
    run.main(argv)
  monkeypatch.setitem(sys.modules, "mmprolong_jax.generate", None)  # as if the file were absent
  with pytest.raises(SystemExit, match="needs mmprolong_jax/generate.py"):
    run.main([*argv, "--ckpt", "c"])
  monkeypatch.setitem(sys.modules, "mmprolong_jax.generate", types.ModuleType("g"))
  with pytest.raises(SystemExit, match="must define make_eval_generator"):
    run.main([*argv, "--ckpt", "c"])


def test_subsets_are_seeded_and_shared_across_lengths(bench):
  def ids(k, seed):
    task = tasks.load_task(tasks.Unit("doc", "mmlongdoc", k), bench, bench, tokens.estimate_tokens, 0)
    return [ex.id for ex in run.select(task, 2, seed)]

  assert ids(64, 0) == ids(128, 0) and len(ids(64, 0)) == 2
  assert len({tuple(ids(64, s)) for s in range(10)}) > 1


class _Silent:

  def generate(self, batch, max_new_tokens):
    return []


def test_generator_reply_count_is_checked(bench, tmp_path):
  task = tasks.load_task(tasks.Unit("doc", "slidevqa", 64), bench, bench, tokens.estimate_tokens, 0)
  with pytest.raises(RuntimeError, match="returned 0 replies for 2 prompts"):
    run.generate_unit(task, _Silent(), tmp_path, batch_size=2)



def test_scripted_generator_by_id():
  gen = generators.ScriptedGenerator({"a": "yes"})
  batch = [prompts.Prompt(id="a", messages=[], images=[])]
  assert gen.generate(batch, 8) == ["yes"]
  with pytest.raises(KeyError, match=r"no scripted reply for ids \['b'\]"):
    gen.generate([prompts.Prompt(id="b", messages=[], images=[])], 8)


def test_jax_generator_gets_tokenizer_and_pixel_limits(bench, tmp_path, fake_jax):
  from mmprolong_jax.data.tiny_tokenizer import build_tiny_tokenizer
  tok = str(build_tiny_tokenizer(tmp_path / "tok", ["a few words of text"] * 20))
  _main(bench, tmp_path / "out", "--tasks", "doc", "--lengths", "64K", "--tokenizer", tok,
        "--min_pixels", "3136", "--max_pixels", "50176")
  assert fake_jax.options == {"ckpt": "/ckpts/final", "tokenizer": tok, "min_pixels": 3136,
                              "max_pixels": 50176}
