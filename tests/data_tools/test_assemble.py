"""Instances: the schema contract, VQA/OCR assembly, the LLaVA short-data importer, tokens."""
from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from data_tools import assemble, common, io_utils, report, schema, short, teach, tokens
import dt_pdfs


def _instance(**change):
  rec = {"id": "x", "task": "reasoning", "doc_id": "d", "images": ["a.webp", "b.webp"],
         "messages": [{"role": "user", "content": [schema.image(0), schema.image(1),
                                                   schema.text("Q?")]},
                      {"role": "assistant", "content": [schema.text("A")]}]}
  rec.update(change)
  return rec


@pytest.mark.parametrize("change, message", [
    ({}, None),
    ({"task": "vqa"}, "task"),
    ({"images": ["/abs/a.webp", "b.webp"]}, "relative"),
    ({"images": ["../a.webp", "b.webp"]}, "relative"),
    ({"images": ["a.webp"]}, "1 images listed but 2 referenced"),
    ({"messages": [{"role": "user", "content": [schema.image(1), schema.image(0)]},
                   {"role": "assistant", "content": [schema.text("A")]}]}, "out of order"),
    ({"messages": [{"role": "user", "content": [schema.image(0), schema.image(1)]}]}, "turns"),
    ({"messages": [{"role": "system", "content": [schema.text("S")]},
                   {"role": "user", "content": [schema.image(0), schema.image(1)]},
                   {"role": "assistant", "content": [schema.text("")]}]}, "no text to learn"),
    ({"messages": [{"role": "user", "content": [schema.image(0), schema.image(1)]},
                   {"role": "assistant", "content": [{"type": "text", "text": 3}]}]},
     "bad content"),
    ({"extra": 1}, "unknown fields"),
])
def test_validate_instance(change, message):
  if message is None:
    schema.validate_instance(_instance(**change))
  else:
    with pytest.raises(ValueError, match=message):
      schema.validate_instance(_instance(**change))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
  """A work folder after render -> layout -> segment -> teach (rule) -> assemble."""
  out, doc_id = dt_pdfs.segmented_report(tmp_path_factory.mktemp("work"))
  teach.run_rule(out, workers=1)
  assemble.run(out, workers=1)
  return out, doc_id


def test_long_instances(work):
  out, doc_id = work
  insts = list(io_utils.read_jsonl(out / "instances" / "long.jsonl"))
  assert [i["task"] for i in insts] == ["ocr_full", "ocr_needle", "extract_multi",
                                        "extract_single", "reasoning"]
  pages = [p["image"] for p in common.load_record(out, "render", doc_id)["pages"]]
  qa = {q["task"]: q for q in common.load_record(out, "teach", doc_id)["qa"]}
  for inst in insts:
    schema.validate_instance(inst)
    assert inst["doc_id"] == doc_id and inst["images"] == pages and len(pages) == 14
    user, answer = inst["messages"]
    assert [p["image"] for p in user["content"][:-1]] == list(range(14))
    if inst["task"] in qa:
      q = qa[inst["task"]]
      assert user["content"][-1]["text"] == q["question"]
      assert answer["content"][0]["text"] == assemble.answer_text(q["answer"], q["answer_format"])
      assert inst["meta"]["evidence_pages"] == q["evidence_pages"]
  full = insts[0]["messages"][1]["content"][0]["text"]
  assert full.startswith(f"Page 1:\n{dt_pdfs.TITLE}\n\n{dt_pdfs.PARAGRAPH}")
  assert full.count(dt_pdfs.PARAGRAPH) == 3 * 14 and dt_pdfs.HEADER not in full
  assert "Page 14:\n" in full and "North Pier | 14 | 3.5" in full
  needle = insts[1]
  chosen = needle["meta"]["pages"]
  assert 1 <= len(chosen) <= 3
  target = needle["messages"][1]["content"][0]["text"]
  assert [int(n) for n in re.findall(r"^Page (\d+):$", target, re.M)] == chosen


def test_page_labels_and_list_answers(work):
  out, doc_id = work
  insts = assemble.doc_instances(out, doc_id, ["extract_multi"], 0, page_labels=True)
  content = insts[0]["messages"][0]["content"]
  assert content[0] == schema.text("Page 1:") and content[1] == schema.image(0)
  assert content[-3] == schema.text("Page 14:")
  assert assemble.answer_text(["a", "b"], "List") == '["a", "b"]'


def test_report_stats_and_histograms(work):
  out, _ = work
  rep = report.run(out)
  for task in ("extract_single", "extract_multi", "reasoning", "ocr_full", "ocr_needle"):
    s = rep["tasks"][task]
    assert s["samples"] == 1 and s["page_range"] == [14, 14] and s["share_ge_100k"] == 0.0
    assert (out / "report" / f"hist_{task}.png").is_file()
  assert rep["tasks"]["total"]["samples"] == 5
  assert rep["teacher"]["accepted"] == {"extract_multi": 1, "extract_single": 1, "reasoning": 1}
  assert "| extract_single | 1 | 14.0 |" in (out / "report" / "report.md").read_text()


def test_qwen_token_rule():
  # A US-letter page at 144 DPI (1224x1584 px) becomes 1232x1596: 44 x 57 tokens of 28 px.
  assert tokens.image_tokens(1224, 1584) == 2508
  assert tokens.image_tokens(10, 10) == 4  # min_pixels 3136: 56x56
  assert tokens.image_tokens(6000, 8000) <= tokens.MAX_PIXELS // 28 ** 2
  inst = _instance()
  sizes = {"a.webp": (1224, 1584), "b.webp": (1224, 1584)}
  assert tokens.Counter()(inst, sizes) == (
      5 + 7 + 5 + 2 * (2 + 2508) + 1 + 5 + 1)  # default system, user, images, "Q?", "A"


def test_exact_token_count_with_a_tokenizer(tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.train_from_iterator(["Q? A system user assistant You are a helpful"], trainers.BpeTrainer(
      vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  tok.add_special_tokens(["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                          "<|image_pad|>", "<|endoftext|>"])
  PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(tmp_path)
  count = tokens.Counter(str(tmp_path))
  sizes = {"a.webp": (1224, 1584), "b.webp": (1224, 1584)}
  with_images = count(_instance(), sizes)
  text_only = _instance(images=[])
  text_only["messages"][0]["content"] = [schema.text("Q?")]
  assert with_images - count(text_only, sizes) == 2 * (2 + 2508)


def test_llava_short_import(tmp_path):
  images = tmp_path / "imgs"
  images.mkdir()
  for name in ("a.jpg", "b.jpg"):
    Image.new("RGB", (30, 20), "white").save(images / name)
  records = [
      {"id": "1", "image": "a.jpg", "conversations": [
          {"from": "human", "value": "<image>\nWhat is shown?"},
          {"from": "gpt", "value": "A page."},
          {"from": "human", "value": "Color?"}, {"from": "gpt", "value": "White."}]},
      {"id": "2", "image": ["a.jpg", "b.jpg"], "conversations": [
          {"from": "human", "value": "Compare <image> and <image>."},
          {"from": "gpt", "value": "Same."}]},
      {"id": "3", "image": "b.jpg", "conversations": [
          {"from": "system", "value": "Be brief."}, {"from": "human", "value": "Size?"},
          {"from": "gpt", "value": "Small."}]},
      {"id": "4", "conversations": [{"from": "human", "value": "Hi"},
                                    {"from": "gpt", "value": "Hello"}]},
      {"id": "5", "image": "missing.jpg", "conversations": [{"from": "human", "value": "<image>"}]},
      {"id": "6", "image": "a.jpg", "conversations": [{"from": "human", "value": "<image><image>"},
                                                     {"from": "gpt", "value": "x"}]},
      {"id": "7", "video": "v.mp4", "conversations": []},
      {"id": "8", "conversations": [{"from": "gpt", "value": "?"},
                                    {"from": "human", "value": "!"}]},
  ]
  src = tmp_path / "llava.json"
  src.write_text(json.dumps(records))
  jsonl = tmp_path / "more.jsonl"
  jsonl.write_text(json.dumps(records[0]) + "\n")  # the same record again
  out = tmp_path / "out"
  summary = short.run([src, jsonl], images, out)
  assert summary["instances"] == 4
  assert summary["skipped"] == {"bad_turn_order": 1, "duplicate": 1, "image_count_mismatch": 1,
                                "missing_image": 1, "video": 1}
  insts = {i["meta"]["source_id"]: i for i in io_utils.read_jsonl(out / "instances/short.jsonl")}
  for inst in insts.values():
    schema.validate_instance(inst)
    assert all((out / p).is_file() for p in inst["images"])
  assert insts["1"]["messages"][0]["content"] == [schema.image(0), schema.text("What is shown?")]
  assert [m["role"] for m in insts["1"]["messages"]] == ["user", "assistant"] * 2
  assert insts["2"]["messages"][0]["content"] == [
      schema.text("Compare"), schema.image(0), schema.text("and"), schema.image(1),
      schema.text(".")]
  assert insts["2"]["images"][0] == insts["1"]["images"][0]  # stored once
  assert insts["3"]["messages"][1]["content"] == [schema.image(0), schema.text("Size?")]
  assert insts["4"]["images"] == []
  rep = report.run(out)
  assert rep["tasks"]["short"]["samples"] == 4 and rep["short"]["instances"] == 4
