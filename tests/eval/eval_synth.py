"""Synthetic MMLongBench-format benchmark files with tiny PNG pages."""
import json
from pathlib import Path

from PIL import Image

DOC_ANSWERS = [  # (answer, answer_format) of example i of every documentQA dataset
    ("red bicycle", "String"),
    ("12", "Integer"),
    ('["apple", "2019"]', "List"),
    ("Not answerable", "None"),
]
PAGES_PER_DOC = 3
DOCS_PER_DATASET = 6


def make_png(path: Path, width: int = 56, height: int = 56) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", (width, height), (230, 230, 230)).save(path)
  return path


def write_jsonl(path: Path, records) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
  return path


def doc_pages(dataset: str, doc: int) -> list[str]:
  name = f"{dataset}doc{doc}"
  return [f"docqa/{dataset}/{name}/{name}_page{i}.png" for i in range(PAGES_PER_DOC)]


def doc_record(dataset: str, i: int, pages: list[str]) -> dict:
  answer, fmt = DOC_ANSWERS[i]
  return {"id": f"{dataset}_{i}", "doc_name": f"{dataset}doc{i}", "question": f"Question {i}?",
          "answer": answer, "answer_format": fmt, "page_list": pages, "ans_page_list": [0]}


NIAH_RECORDS = {
    "retrieval-text": [
        {"id": 0, "question": "What is the secret word?", "answer": "Blue Moon",
         "ctxs": [{"text": "A photo: <image> of a lake."}, {"text": "The secret word is Blue Moon."}],
         "image_list": ["mm-niah/img0.png"]},
        {"id": 1, "question": "Which city?", "answer": ["Oslo", "Christiania"],
         "ctxs": ["Text only.", "The city is Oslo."], "image_list": []},
    ],
    "counting-text": [
        {"id": 0, "question": "How many apples per needle? Answer as a list.", "answer": [1, 2],
         "ctxs": [{"text": "one apple"}, {"text": "two apples <image>"}],
         "image_list": ["mm-niah/img1.png"]},
    ],
    "reasoning-text": [
        {"id": 0, "question": "What is 6 times 7?", "answer": "42",
         "ctxs": [{"text": "Six times seven is forty-two, written 42."}], "image_list": []},
    ],
    "retrieval-image": [
        {"id": 0, "question": "Which image appeared in the text?", "answer": 1,
         "ctxs": [{"text": "Look: <image>"}], "image_list": ["mm-niah/img0.png"],
         "choices_image": ["mm-niah/img1.png", "mm-niah/img0.png", "mm-niah/img2.png"]},
    ],
    "counting-image": [
        {"id": 0, "question": "How many times does <image> appear in each image?",
         "answer": [2, 0], "ctxs": [{"text": "<image> and <image>"}],
         "image_list": ["mm-niah/img0.png", "mm-niah/img1.png"],
         "needle_image_list": ["mm-niah/img2.png"]},
    ],
    "reasoning-image": [
        {"id": 0, "question": "Which image shows what the text describes?", "answer": 0,
         "ctxs": [{"text": "Something red."}], "image_list": [],
         "choices_image": ["mm-niah/img1.png", "mm-niah/img2.png"]},
    ],
}


def build_benchmark(root: Path) -> Path:
  """documentQA for every dataset at 64K and 128K (4 examples each), MM-NIAH at 64K."""
  for dataset in ("mmlongdoc", "longdocurl", "slidevqa"):
    for doc in range(DOCS_PER_DATASET):
      for page in doc_pages(dataset, doc):
        make_png(root / page)
    for k in (64, 128):
      records = []
      for i in range(len(DOC_ANSWERS)):
        pages = doc_pages(dataset, i)
        if k == 128:  # longer contexts carry a neighbouring document too, as in MMLongBench
          pages = pages + doc_pages(dataset, (i + 1) % DOCS_PER_DATASET)
        records.append(doc_record(dataset, i, pages))
      write_jsonl(root / "documentQA" / f"{dataset}_K{k}.jsonl", records)
  for n in range(3):
    make_png(root / f"mm-niah/img{n}.png", 28 * (n + 1), 28)
  for variant, records in NIAH_RECORDS.items():
    suffix = "_dep6" if variant.startswith("retrieval") else ""
    write_jsonl(root / "NIAH" / f"{variant}_test_K64{suffix}.jsonl", records)
  return root

