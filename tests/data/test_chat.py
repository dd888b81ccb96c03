"""Chat formatting: ids equal the Qwen2.5-VL template rendered by transformers + expanded pads."""
import numpy as np
import pytest
from transformers import AutoTokenizer

from mmprolong_jax.data.chat import ChatTokenizer
from mmprolong_jax.data.image_processing import num_image_tokens
from tests.data.conftest import words

# The released Qwen2.5-VL template's behaviour for image/text parts (add_vision_id off), written
# out here as the oracle: default system turn, role header, parts concatenated, <|im_end|>\n.
QWEN25VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}")


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
  return AutoTokenizer.from_pretrained(tokenizer_dir)


def _oracle(tok, messages, grids):
  text = tok.apply_chat_template(messages, chat_template=QWEN25VL_TEMPLATE, tokenize=False)
  pieces = text.split("<|image_pad|>")
  refs = [p["image"] for m in messages if not isinstance(m["content"], str)
          for p in m["content"] if p["type"] == "image"]
  expanded = pieces[0] + "".join("<|image_pad|>" * num_image_tokens(grids[r]) + rest
                                 for r, rest in zip(refs, pieces[1:]))
  return np.asarray(tok(expanded, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("with_system", [False, True])
def test_matches_template_and_masks_answers(tok, with_system):
  rng = np.random.default_rng(1)
  grids = [(1, 4, 6), (1, 8, 4), (1, 2, 2)]
  answers = [words(rng, 7), " " + words(rng, 3) + "\n\n"]
  messages = [
      {"role": "user", "content": [{"type": "image", "image": 0}, {"type": "image", "image": 2},
                                   {"type": "text", "text": words(rng, 12)}]},
      {"role": "assistant", "content": [{"type": "text", "text": answers[0]}]},
      {"role": "user", "content": [{"type": "text", "text": "and " + words(rng, 4)},
                                   {"type": "image", "image": 1}]},
      {"role": "assistant", "content": answers[1]},
  ]
  if with_system:
    messages.insert(0, {"role": "system", "content": [{"type": "text", "text": "Be brief."}]})
  chat = ChatTokenizer(tok)
  ids, mask, refs = chat.encode(messages, grids)
  np.testing.assert_array_equal(ids, _oracle(tok, messages, grids))
  assert refs == [0, 2, 1]
  assert (ids == chat.image_token_id).sum() == 6 + 8 + 1
  # Supervised tokens are exactly the answers, each followed by its <|im_end|>.
  assert tok.decode(ids[mask == 1]) == "".join(a + "<|im_end|>" for a in answers)
  assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}


def test_rejects_bad_instances(tok):
  chat = ChatTokenizer(tok)
  with pytest.raises(ValueError, match="unknown role"):
    chat.encode([{"role": "bot", "content": "x"}], [])
  with pytest.raises(ValueError, match="out of range"):
    chat.encode([{"role": "user", "content": [{"type": "image", "image": 3}]}], [(1, 2, 2)])
