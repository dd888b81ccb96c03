"""Fixtures for the data pipeline tests: an offline tokenizer with Qwen's special tokens
(mmprolong_jax.data.tiny_tokenizer) and small synthetic data_tools work folders (PNG pages +
instances JSONL)."""
import json

import numpy as np
import PIL.Image
import pytest

from mmprolong_jax.data.tiny_tokenizer import build_tiny_tokenizer
from mmprolong_jax.model import config as model_config

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "ve", "da", "xu", "be", "qo", "fi"]
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 12  # small grids keep the tests fast


def words(rng, n):
  out = []
  for _ in range(n):
    w = "".join(rng.choice(SYLLABLES, rng.integers(1, 4)))
    out.append(w.capitalize() if rng.random() < 0.1 else w)
  text = " ".join(out)
  return text + rng.choice([".", "?", ",", "!", " 42.", "\n"])


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
  rng = np.random.default_rng(0)
  corpus = [words(rng, 30) for _ in range(400)]
  return str(build_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"), corpus))


@pytest.fixture(scope="session")
def model_cfg(tokenizer_dir):
  """The tiny model with the test tokenizer's special token ids."""
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(tokenizer_dir)
  ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
      ("image_token_id", "<|image_pad|>"), ("vision_start_token_id", "<|vision_start|>"),
      ("vision_end_token_id", "<|vision_end|>"))}
  return model_config.tiny().replace(**ids, video_token_id=model_config.tiny().text.vocab_size - 1)


def page(rng, height, width):
  img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  return PIL.Image.fromarray(img)


def write_work(root, rng, specs):
  """specs: list of (task, num_pages, question_words, answer_words); returns the records."""
  records = []
  for k, (task, num_pages, q_words, a_words) in enumerate(specs):
    doc = f"doc{k:03d}"
    (root / "docs" / doc / "pages").mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(num_pages):
      rel = f"docs/{doc}/pages/{i + 1:04d}.png"
      page(rng, int(rng.integers(30, 110)), int(rng.integers(30, 110))).save(root / rel)
      images.append(rel)
    content = [{"type": "image", "image": i} for i in range(num_pages)]
    content.append({"type": "text", "text": words(rng, q_words)})
    messages = [{"role": "user", "content": content},
                {"role": "assistant", "content": [{"type": "text", "text": words(rng, a_words)}]}]
    if k % 3 == 0:
      messages.insert(0, {"role": "system", "content": [{"type": "text", "text": "Read the pages."}]})
    records.append({"id": f"{task}-{k}", "task": task, "doc_id": doc, "images": images,
                    "messages": messages})
  (root / "instances").mkdir(parents=True, exist_ok=True)
  with open(root / "instances" / "part-000.jsonl", "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  return records


MAX_LEN, MAX_PATCHES = 256, 512


def build_opts(**overrides):
  from data_tools.shard_plan import Options
  kw = dict(max_len=MAX_LEN, max_patches=MAX_PATCHES, packing="best_fit", rows_per_shard=3, seed=0,
            min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
  return Options(**{**kw, **overrides})


def work_specs(rng):
  """Three tasks of small instances and one over-long instance."""
  specs = [("extract_single", int(rng.integers(1, 5)), int(rng.integers(8, 40)), int(rng.integers(2, 12)))
           for _ in range(14)]
  specs += [("reasoning", int(rng.integers(1, 4)), int(rng.integers(8, 30)), int(rng.integers(5, 20)))
            for _ in range(8)]
  specs += [("short", 1, int(rng.integers(3, 15)), int(rng.integers(2, 8))) for _ in range(10)]
  specs += [("extract_single", 2, 300, 3)]  # over max_len: dropped
  return specs


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("work")
  rng = np.random.default_rng(7)
  write_work(root, rng, work_specs(rng))
  return root


@pytest.fixture(scope="session")
def built(work_dir, tokenizer_dir, tmp_path_factory):
  from data_tools import build_shards
  out = tmp_path_factory.mktemp("shards")
  stats = build_shards.build([str(work_dir)], str(out), tokenizer_dir, build_opts())
  return out, stats
