"""KV-cache generation against transformers' `generate` on tiny random models (fp32)."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoTokenizer
from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as hf_ip

from mmprolong_jax import generate as gen
from mmprolong_jax import params as params_lib
from mmprolong_jax.attention import AttentionConfig
from mmprolong_jax.convert import from_hf
from mmprolong_jax.eval.prompts import Prompt
from mmprolong_jax.parallel.mesh import MeshConfig, make_mesh
from tests import hf_reference as ref
from tests.data.conftest import MAX_PIXELS, MIN_PIXELS, tokenizer_dir  # noqa: F401 (fixture)

MAX_NEW = 8
EOS = 2  # tiny config's eos
# (images per row, text run lengths per row). The second: two images in a left-padded row, and
# 32 tokens, a length that the sequence-parallel meshes below divide (one compile serves all).
CASES = {
    "text_only": ([[]], [[11]]),
    "image_and_text_rows": ([[(1, 4, 4), (1, 4, 8)], []], [[2, 3, 1], [32]]),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  hf_model = ref.build_hf_model(ref.tiny_hf_config(), seed=0)
  d = tmp_path_factory.mktemp("hf")
  hf_model.save_pretrained(d)
  cfg, flat = from_hf.convert(d)
  return hf_model, cfg, flat, params_lib.model_from_flat(cfg, flat)


def _case(cfg, case, **kw):
  """Our left-padded batch for a CASES entry, plus the images it holds (for transformers)."""
  images, lens = CASES[case]
  raw = ref.make_batch(images, lens, np.random.default_rng(0))
  prompts, start = [], 0
  for i, grids in enumerate(raw["grids"]):
    n = sum(t * h * w for t, h, w in grids)
    ids = raw["input_ids"][i, raw["attention_mask"][i] == 1]
    patches = raw["pixel_values"][start:start + n] if grids else None
    prompts.append(gen.TokenPrompt(ids, patches, tuple(map(tuple, grids))))
    start += n
  return gen.left_pad_batch(cfg, prompts, **kw), raw


def _hf_generate(hf_model, batch, raw, eos, max_new_tokens=MAX_NEW):
  """transformers' greedy continuation of the same left-padded batch."""
  ids = torch.from_numpy(batch.input_ids_BxT.astype(np.int64))
  mask = torch.from_numpy(batch.segment_ids_BxT.astype(np.int64))
  inputs = dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=(ids == ref.IMAGE).long())
  if len(raw["image_grid_thw"]):
    inputs.update(pixel_values=torch.from_numpy(raw["pixel_values"]),
                  image_grid_thw=torch.from_numpy(raw["image_grid_thw"]))
  with torch.no_grad():
    out = hf_model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                            eos_token_id=list(eos), pad_token_id=0)
  return out[:, ids.shape[1]:].numpy()


def _assert_same(tokens_BxN, lengths_B, want_BxL, stops):
  """Equal up to transformers' length (it stops once every row has), padding after; lengths end
  at each row's first stop token."""
  n = want_BxL.shape[1]
  np.testing.assert_array_equal(tokens_BxN[:, :n], want_BxL)
  assert (tokens_BxN[:, n:] == 0).all()
  for row, length in zip(want_BxL, lengths_B):
    hits = np.flatnonzero(np.isin(row, stops))
    assert length == (hits[0] + 1 if len(hits) else tokens_BxN.shape[1])


@pytest.mark.parametrize("case", CASES)
def test_greedy_matches_transformers(models, case):
  hf_model, cfg, _, model = models
  batch, raw = _case(cfg, case)
  tokens, lengths = gen.generate(model, batch, max_new_tokens=MAX_NEW, stop_token_ids=[EOS])
  assert tokens.shape == (len(batch.input_ids_BxT), MAX_NEW)
  _assert_same(tokens, lengths, _hf_generate(hf_model, batch, raw, [EOS]), [EOS])


def test_stop_tokens_end_rows_early(models):
  hf_model, cfg, _, model = models
  batch, raw = _case(cfg, "image_and_text_rows")
  free, _ = gen.generate(model, batch, max_new_tokens=MAX_NEW, stop_token_ids=[EOS])
  # Stop on row 0's third token and on row 1's second: both rows end, so does the loop.
  stops = [int(free[0, 2]), int(free[1, 1]), EOS]
  tokens, lengths = gen.generate(model, batch, max_new_tokens=MAX_NEW, stop_token_ids=stops)
  assert max(lengths) <= 3
  want = _hf_generate(hf_model, batch, raw, stops)
  assert want.shape[1] <= 3
  _assert_same(tokens, lengths, want, stops)


def test_sampling_is_reproducible_by_seed(models):
  _, cfg, _, model = models
  batch, _ = _case(cfg, "image_and_text_rows")
  sampling = gen.Sampling(temperature=1.0, top_k=40, top_p=0.9)
  run = lambda seed: gen.generate(model, batch, max_new_tokens=MAX_NEW, sampling=sampling,
                                  seed=seed)[0]
  first = run(1)
  np.testing.assert_array_equal(first, run(1))
  assert (first != run(2)).any()


def test_top_k_and_top_p_limit_the_candidates():
  logits_BxV = jnp.log(jnp.tile(jnp.array([[0.05, 0.5, 0.15, 0.3]]), (512, 1)))

  def support(**kw):
    draw = gen.sample_tokens(logits_BxV, jax.random.key(0), gen.Sampling(**kw))
    return set(np.asarray(draw).tolist())

  assert support(temperature=1) == {0, 1, 2, 3}
  assert support(temperature=1, top_k=3) == {1, 2, 3}
  assert support(temperature=1, top_p=0.7) == {1, 3}  # 0.5 alone is short of 0.7


@pytest.mark.parametrize("backend,mesh", [("ring", dict(sequence=8)),
                                          ("ulysses", dict(data=2, sequence=4))])
def test_sequence_parallel_prefill_matches_single_device(models, backend, mesh):
  """Same logits and cache; for ring (the long-prompt path), decoding from its cache too."""
  _, cfg, _, model = models
  mesh = make_mesh(MeshConfig(fsdp=1, **mesh))
  attn = AttentionConfig(backend=backend, mesh=mesh,
                         layout="zigzag" if backend == "ring" else "natural")
  batch, _ = _case(cfg, "image_and_text_rows")
  assert batch.input_ids_BxT.shape[1] % gen.prefill_length_multiple(attn) == 0
  cache_len = batch.input_ids_BxT.shape[1] + MAX_NEW - 1
  want_logits, want_cache = gen.prefill(model, batch, cache_len=cache_len)
  got_logits, got_cache = gen.prefill(model, batch, cache_len=cache_len, attn_cfg=attn)
  np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-5)
  for got, want in zip(jax.tree.leaves(got_cache), jax.tree.leaves(want_cache)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  if backend == "ring":
    np.testing.assert_array_equal(
        gen.generate(model, batch, max_new_tokens=MAX_NEW, attn_cfg=attn)[0],
        gen.generate(model, batch, max_new_tokens=MAX_NEW)[0])


def test_eval_generator_replies_like_transformers(models, tokenizer_dir, tmp_path):  # noqa: F811
  hf_model, cfg, flat, _ = models
  ckpt = tmp_path / "ckpt"
  params_lib.save_model_checkpoint(ckpt, flat, cfg)
  for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(f"{tokenizer_dir}/{f}", ckpt / f)
  rng = np.random.default_rng(3)
  paths = []
  for i, (h, w) in enumerate([(60, 90), (70, 50)]):
    paths.append(str(tmp_path / f"page{i}.png"))
    PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
  text = lambda s: {"type": "text", "text": s}
  prompts = [
      Prompt("doc", [{"role": "user", "content": [text("Pages: "), {"type": "image", "image": 1},
                                                  {"type": "image", "image": 0}, text(" Why?")]}],
             paths),
      Prompt("plain", [{"role": "user", "content": [text("What is the answer to this one?")]}], []),
  ]
  generator = gen.make_eval_generator(str(ckpt), min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
  replies = generator.generate(prompts, max_new_tokens=6)

  # Oracle: the chat template written out, HF's image processor, transformers' generate, one
  # prompt at a time (so without padding).
  tok = AutoTokenizer.from_pretrained(tokenizer_dir)
  proc = hf_ip.Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
  stops = [EOS, tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
  head = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
  tail = "<|im_end|>\n<|im_start|>assistant\nAnswer:"
  for prompt, reply in zip(prompts, replies):
    kw = {}
    body = prompt.messages[0]["content"][0]["text"]
    if prompt.images:
      out = proc(images=[PIL.Image.open(paths[1]), PIL.Image.open(paths[0])], return_tensors="pt")
      pads = [int(g.prod()) // 4 for g in out["image_grid_thw"]]
      body += "".join(f"<|vision_start|>{'<|image_pad|>' * n}<|vision_end|>" for n in pads)
      body += " Why?"
      kw = dict(pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"])
    ids = torch.tensor([tok(head + body + tail, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
      out = hf_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                              mm_token_type_ids=(ids == ref.IMAGE).long(), do_sample=False,
                              max_new_tokens=6, eos_token_id=stops, pad_token_id=stops[-1], **kw)
    assert reply == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), prompt.id
