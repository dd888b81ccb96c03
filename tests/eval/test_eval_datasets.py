import pytest

from eval_synth import NIAH_RECORDS, doc_pages, doc_record, write_jsonl
from mmprolong_jax.eval import datasets


def test_read_docqa(bench):
  path = datasets.docqa_path(bench, "slidevqa", 128)
  examples = datasets.read_docqa(path, "slidevqa", bench)
  assert [e.id for e in examples] == ["slidevqa_0", "slidevqa_1", "slidevqa_2", "slidevqa_3"]
  ex = examples[2]
  assert ex.answer == ["apple", "2019"] and ex.answer_format == "List"  # JSON text decoded
  assert len(ex.pages) == 6 and all(p.startswith(str(bench)) for p in ex.pages)
  assert ex.answer_pages == (0,)


def test_niah_paths_and_fields(bench):
  assert datasets.niah_path(bench, "retrieval", "text", 64).name == "retrieval-text_test_K64_dep6.jsonl"
  assert datasets.niah_path(bench, "counting", "text", 64).name == "counting-text_test_K64.jsonl"
  ex = datasets.read_niah(datasets.niah_path(bench, "counting", "image", 64), "counting", "image", bench)[0]
  assert ex.id == "0" and ex.answer == [2, 0]
  assert [p.rsplit("/", 1)[1] for p in ex.images] == ["img0.png", "img1.png", "img2.png"]
  mc = datasets.read_niah(datasets.niah_path(bench, "retrieval", "image", 64), "retrieval", "image", bench)[0]
  assert len(mc.choices) == 3 and mc.context == "Look: <image>"
  text = datasets.read_niah(datasets.niah_path(bench, "retrieval", "text", 64), "retrieval", "text", bench)
  assert text[1].context == "Text only.\n\nThe city is Oslo."


def test_missing_files(bench):
  with pytest.raises(datasets.DataError, match="missing benchmark file .*mmlongdoc_K32.jsonl"):
    datasets.docqa_path(bench, "mmlongdoc", 32)
  with pytest.raises(datasets.DataError, match="unknown documentQA dataset"):
    datasets.docqa_path(bench, "docvqa", 64)
  with pytest.raises(datasets.DataError, match="expected one NIAH file.*found no file"):
    datasets.niah_path(bench, "retrieval", "text", 128)


def _bad_doc(bench, tmp_path, **changes):
  rec = {**doc_record("mmlongdoc", 0, doc_pages("mmlongdoc", 0)), **changes}
  rec = {k: v for k, v in rec.items() if v is not None}
  good = doc_record("mmlongdoc", 1, doc_pages("mmlongdoc", 1))
  path = write_jsonl(tmp_path / "bad.jsonl", [good, rec])
  return lambda: datasets.read_docqa(path, "mmlongdoc", bench)


@pytest.mark.parametrize("changes, message", [
    ({"question": None}, "missing field 'question'"),
    ({"answer_format": "Date"}, "answer_format 'Date' is not one of"),
    ({"answer_format": "Integer", "answer": "many"}, "not a number"),
    ({"answer_format": "List", "answer": "apple, pear"}, "non-empty list"),
    ({"page_list": []}, "page_list is empty"),
    ({"page_list": ["docqa/nowhere.png"]}, "image 'docqa/nowhere.png' not found"),
    ({"ans_page_list": ["1"]}, "ans_page_list must be a list of integers"),
    ({"id": "mmlongdoc_1"}, "duplicate id 'mmlongdoc_1'"),
    ({"id": True}, "field 'id' must be str or int"),
])
def test_docqa_errors_name_file_and_line(bench, tmp_path, changes, message):
  with pytest.raises(datasets.DataError, match=rf"bad.jsonl:2: .*{message}"):
    _bad_doc(bench, tmp_path, **changes)()


def test_not_json(bench, tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"id": 1}\n\n[1, 2]\n')
  with pytest.raises(datasets.DataError, match="bad.jsonl:1: missing field"):
    datasets.read_docqa(path, "mmlongdoc", bench)
  path.write_text("[1, 2]\n")
  with pytest.raises(datasets.DataError, match="bad.jsonl:1: expected a JSON object"):
    datasets.read_docqa(path, "mmlongdoc", bench)
  path.write_text("{oops\n")
  with pytest.raises(datasets.DataError, match="bad.jsonl:1: not valid JSON"):
    datasets.read_docqa(path, "mmlongdoc", bench)


@pytest.mark.parametrize("variant, changes, message", [
    ("retrieval-text", {"image_list": []}, "1 <image> markers .* but 0 images"),
    ("retrieval-image", {"choices_image": []}, "needs a non-empty choices_image"),
    ("retrieval-text", {"choices_image": ["mm-niah/img0.png"]}, "must not have a non-empty"),
    ("retrieval-image", {"answer": 3}, "not an index into 3 choices"),
    ("counting-text", {"answer": 3}, "field 'answer' must be list"),
    ("counting-text", {"answer": ["1"]}, "list of integers"),
    ("reasoning-text", {"answer": [1]}, "string or a non-empty list of strings"),
    ("reasoning-text", {"ctxs": [{"txt": "x"}]}, "each ctxs entry"),
])
def test_niah_errors(bench, tmp_path, variant, changes, message):
  path = write_jsonl(tmp_path / "bad.jsonl", [{**NIAH_RECORDS[variant][0], **changes}])
  task, modality = variant.split("-")
  with pytest.raises(datasets.DataError, match=rf"bad.jsonl:1: .*{message}"):
    datasets.read_niah(path, task, modality, bench)


def test_parse_length():
  assert [datasets.parse_length(s) for s in ("64K", "128k", "512")] == [64, 128, 512]
  with pytest.raises(ValueError, match="bad context length"):
    datasets.parse_length("64KB")
