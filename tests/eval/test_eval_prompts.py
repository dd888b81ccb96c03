import pytest

from eval_synth import make_png
from mmprolong_jax.eval import datasets, prompts, tasks, tokens


def _docs(bench, dataset="slidevqa", k=128):
  return datasets.read_docqa(datasets.docqa_path(bench, dataset, k), dataset, bench)


def test_token_estimate(tmp_path):
  page = str(make_png(tmp_path / "p.png", 2000, 1000))
  assert tokens.image_tokens(page) == 71 * 36 + 2  # resized to 1988x1008
  assert tokens.image_tokens(page, max_pixels=1003520) == 50 * 25 + 2  # 1400x700
  messages = [{"role": "user", "content": [
      {"type": "text", "text": "x" * 9}, {"type": "image", "image": 0}]}]
  assert tokens.estimate_tokens(messages, [page]) == 5 + 3 + 71 * 36 + 2
  by_word = tokens.make_token_counter(lambda s: len(s.split()), max_pixels=1003520)
  assert by_word(messages, [page]) == 5 + 1 + 50 * 25 + 2


def test_docqa_prompt_layout(bench):
  ex = _docs(bench)[0]
  p = prompts.docqa_prompt(ex)
  assert p.id == "slidevqa_0" and p.prefill == "Answer:" and p.images == list(ex.pages)
  (message,) = p.messages
  content = message["content"]
  assert message["role"] == "user"
  assert [c["image"] for c in content if c["type"] == "image"] == list(range(6))
  assert [c["type"] for c in content] == ["text", "image"] * 6 + ["text"]
  assert content[0]["text"] == (prompts.DOC_INSTRUCTION + "\n\nDocument slidevqadoc0 (page 0): ")
  assert content[6]["text"] == "\n\nDocument slidevqadoc1 (page 0): "  # the neighbour's own tag
  assert content[-1]["text"] == ("\n\nQuestion: Using Document slidevqadoc0, answer this question. "
                                 "Question 0?")


def test_page_label_and_tag():
  assert prompts.page_label("a/4190345/4190345_page5.jpg") == "5"
  assert prompts.page_label("a/deck/private-banking-4-1024.jpg") == "4"
  assert prompts.page_label("a/doc/cover.png") == "cover"
  assert prompts.document_tag("a-very-long-document-name.pdf") == "a-very-long-doc"
  assert prompts.document_tag("report.PDF") == "report"


def test_niah_prompts(bench):
  def first(variant):
    task, modality = variant.split("-")
    return datasets.read_niah(datasets.niah_path(bench, task, modality, 64), task, modality, bench)[0]

  mc = prompts.niah_prompt(first("retrieval-image"))
  texts = [c["text"] for c in mc.messages[0]["content"] if c["type"] == "text"]
  assert texts[0] == prompts.NIAH_CHOICE_INSTRUCTION + "\n\nLook: "
  assert texts[1:] == ["\n\nQuestion: Which image appeared in the text?\nA. ", "\nB. ", "\nC. "]
  assert [i.rsplit("/", 1)[1] for i in mc.images] == ["img0.png", "img1.png", "img0.png", "img2.png"]
  count = prompts.niah_prompt(first("counting-image"))
  assert count.messages[0]["content"][0]["text"].startswith(prompts.NIAH_INSTRUCTION)
  assert [c["image"] for c in count.messages[0]["content"] if c["type"] == "image"] == [0, 1, 2]
  assert count.messages[0]["content"][-1]["text"] == " appear in each image?"


def _per_image(cost):
  return lambda messages, images: cost * len(images)


def test_extend_pages_alternates_and_stops_within_a_page(bench):
  examples = _docs(bench)
  pool = prompts.document_pool(examples)
  assert len(pool) == 5 and all(len(p) == 3 for p in pool.values())  # docs 0-4 appear
  ex = examples[0]  # pages of doc0 and doc1
  target = 100 * (len(ex.pages) + 7) + 50  # room for 7 more pages
  pages = prompts.extend_pages(ex, pool, target, _per_image(100), seed=0)
  assert len(pages) == 13
  start = pages.index(ex.pages[0])
  assert pages[start:start + 6] == ex.pages
  left, right = pages[:start], pages[start + 6:]
  # First document to the left, the second to the right, then a 1-page prefix of the third left.
  assert len(left) == 4 and len(right) == 3
  folder = lambda p: p.rsplit("/", 2)[1]
  assert folder(left[0]) != folder(left[1]) == folder(left[3])
  assert left[0].endswith("_page0.png") and right[0].endswith("_page0.png")
  assert {folder(p) for p in pages[:start] + pages[start + 6:]}.isdisjoint({"slidevqadoc0", "slidevqadoc1"})
  assert prompts.extend_pages(ex, pool, target, _per_image(100), seed=0) == pages  # seeded
  draws = {prompts.extend_pages(ex, pool, target, _per_image(100), seed=s) for s in range(8)}
  assert len(draws) > 1


def test_extend_pages_with_the_estimator(bench):
  examples = _docs(bench)
  pool = prompts.document_pool(examples)
  ex = examples[1]
  count = lambda pages: tokens.estimate_tokens(prompts.docqa_prompt(ex, pages).messages, pages)
  base = count(ex.pages)
  target = base + (count(ex.pages + ex.pages[:1]) - base) * 5 + 3  # about five pages more
  pages = prompts.extend_pages(ex, pool, target, tokens.estimate_tokens, seed=3)
  assert count(pages) <= target
  assert len(pages) - len(ex.pages) == 5
  assert prompts.extend_pages(ex, pool, base - 1, tokens.estimate_tokens, seed=3) == ex.pages
  with pytest.raises(datasets.DataError, match="the 3 other documents are not enough to pad to"):
    prompts.extend_pages(ex, pool, 10 * target, tokens.estimate_tokens, seed=3)


def test_longer_than_files_pads_the_128k_file(bench):
  unit = tasks.Unit("doc", "slidevqa", 256)
  task = tasks.load_task(unit, bench, bench, _per_image(20_000), seed=0)
  assert [len(task.prompt(ex).images) for ex in task.examples] == [13] * 4  # 262144 // 20000
