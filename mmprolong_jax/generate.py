"""Batched KV-cache generation for Qwen2.5-VL, and the evaluation hook `make_eval_generator`.

  batch = left_pad_batch(cfg, [TokenPrompt(ids, patches, grids), ...])
  tokens_BxN, lengths_B = generate(model, batch, max_new_tokens=128, stop_token_ids=(151645,))

Prompts are left-padded to one length T, so every row's last prompt token sits at slot T - 1 and
generated token i of every row goes to slot T + i: one scalar write index serves the whole batch.
`prefill` runs the prompt through the attention backend of the model (or of the AttentionConfig
passed in: ring/ulysses over a mesh for sequence-parallel prefill of 128K-512K prompts) and keeps
every layer's keys and values in a cache preallocated to its final size; the decode loop then feeds
one token per step through `TextModel.decode` inside `lax.while_loop`, so shapes stay static. A
generated token gets the mRoPE position (p, p, p) with p continuing from the row's largest prompt
position + 1, which is what transformers' rope deltas give.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from mmprolong_jax import params as params_lib
from mmprolong_jax.attention import AttentionConfig, zigzag_permutation
from mmprolong_jax.attention.config import SHARDED_BACKENDS
from mmprolong_jax.attention.sharding import SEQ_AXIS, resolve_mesh
from mmprolong_jax.data.chat import ChatTokenizer
from mmprolong_jax.data.image_processing import preprocess_image
from mmprolong_jax.eval import tokens as eval_tokens
from mmprolong_jax.model.config import ModelConfig
from mmprolong_jax.model.position_ids import mrope_position_ids, rope_deltas
from mmprolong_jax.model.vision_layout import VisionGeometry, pack_vision_rows
from mmprolong_jax.parallel.mesh import BATCH_AXES, axis_size
from mmprolong_jax.parallel.sharding import fit_spec


# ----- sampling ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sampling:
  """temperature 0 is greedy decoding; otherwise tokens are drawn from softmax(logits /
  temperature), restricted to the top_k most likely (0: no limit), then to the smallest set
  whose probability reaches top_p (the order transformers applies them in)."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0 (0 = no limit), got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def sample_tokens(logits_BxV, key, sampling: Sampling):
  """One token per row, int32 [B]."""
  if sampling.temperature == 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  logits_BxV = logits_BxV.astype(jnp.float32) / sampling.temperature
  if sampling.top_k:
    kth_Bx1 = jax.lax.top_k(logits_BxV, min(sampling.top_k, logits_BxV.shape[-1]))[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
  if sampling.top_p < 1:
    sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    # A token stays while the mass ranked above it is still short of top_p.
    keep_B = jnp.sum(jnp.cumsum(probs_BxV, axis=-1) - probs_BxV < sampling.top_p, axis=-1)
    cutoff_Bx1 = jnp.take_along_axis(sorted_BxV, keep_B[:, None] - 1, axis=-1)
    logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
  return jax.random.categorical(key, logits_BxV, axis=-1).astype(jnp.int32)


# ----- batches -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TokenPrompt:
  """A tokenized prompt. `input_ids` already hold t*h*w/4 image tokens per image; `patches` are
  the images' patches in processor order, concatenated in token order, with their `grids_thw`."""
  input_ids: np.ndarray
  patches: np.ndarray | None = None
  grids_thw: tuple[tuple[int, int, int], ...] = ()


@flax.struct.dataclass
class PromptBatch:
  """Left-padded prompts: segment ids are 1 on prompt tokens and 0 on the padding."""
  input_ids_BxT: Any
  segment_ids_BxT: Any
  positions_3xBxT: Any
  patches_BxNxP: Any = None
  vision_layout: Any = None


def bucket(n: int, minimum: int = 64) -> int:
  """`n` rounded up on a ladder of 8 sizes per octave (multiples of `minimum`, a power of two):
  few distinct shapes to compile, and at most 1/8 padding once n > 8 * minimum."""
  if n <= minimum:
    return minimum
  step = max(minimum, 1 << max(n.bit_length() - 4, 0))
  return -(-n // step) * step


def left_pad_batch(cfg: ModelConfig, prompts: Sequence[TokenPrompt], *, pad_token_id: int = 0,
                   length: int | None = None,
                   geometry: VisionGeometry | None = None) -> PromptBatch:
  """Host-side batch (numpy) of `prompts`, left-padded to `length` tokens (default: the longest),
  images in `geometry`'s vision slots (default: the smallest that holds them)."""
  if not prompts:
    raise ValueError("left_pad_batch needs at least one prompt")
  if pad_token_id == cfg.image_token_id:
    raise ValueError("pad_token_id must not be the image token")
  longest = max(len(p.input_ids) for p in prompts)
  length = longest if length is None else length
  if length < longest:
    raise ValueError(f"length={length} is shorter than the longest prompt ({longest} tokens)")
  unit = cfg.vision.merge_unit
  ids_BxT = np.full((len(prompts), length), pad_token_id, np.int32)
  seg_BxT = np.zeros((len(prompts), length), np.int32)
  for i, p in enumerate(prompts):
    n_image_tokens = int(np.sum(np.asarray(p.input_ids) == cfg.image_token_id))
    n_patches = sum(t * h * w for t, h, w in p.grids_thw)
    have = 0 if p.patches is None else len(p.patches)
    if n_image_tokens * unit != n_patches or have != n_patches:
      raise ValueError(f"prompt {i}: {n_image_tokens} image tokens, {have} patches and grids "
                       f"{list(p.grids_thw)} disagree (each image needs t*h*w patches and "
                       f"t*h*w/{unit} tokens)")
    ids_BxT[i, length - len(p.input_ids):] = p.input_ids
    seg_BxT[i, length - len(p.input_ids):] = 1
  grids = [g for p in prompts for g in p.grids_thw]
  positions = mrope_position_ids(
      jnp.asarray(ids_BxT), jnp.asarray(np.array(grids or [(0, 0, 0)], np.int32)),
      segment_ids_BxT=jnp.asarray(seg_BxT), image_token_id=cfg.image_token_id,
      spatial_merge_size=cfg.vision.spatial_merge_size)
  batch = PromptBatch(ids_BxT, seg_BxT, np.asarray(positions))
  if not grids:
    return batch
  grids_per_row = [p.grids_thw for p in prompts]
  geometry = geometry or VisionGeometry.fit(grids_per_row, cfg.vision)
  empty = np.zeros((0, cfg.vision.patch_dim), np.float32)
  patches, layout = pack_vision_rows([empty if p.patches is None else p.patches for p in prompts],
                                     grids_per_row, geometry, cfg.vision)
  return batch.replace(patches_BxNxP=patches, vision_layout=layout)


# ----- prefill and decoding ------------------------------------------------------------------

@flax.struct.dataclass
class KVCache:
  """Every layer's (k_BxSxKxD, v_BxSxKxD) over S slots: the T prompt slots, then one per
  generated token. `valid_BxS` is 0 on left padding only; slots not written yet are kept out of
  attention by causality. `next_pos_B` is the mRoPE position of each row's first new token."""
  kv: list
  valid_BxS: jax.Array
  next_pos_B: jax.Array
  prompt_len: int = flax.struct.field(pytree_node=False)


def _shard_tokens(x_BxTxD, attn_cfg: AttentionConfig):
  """Under sequence-parallel attention, lays activations out over 'sequence' (and the batch
  axes) from the first layer on, rather than letting the compiler replicate them."""
  if attn_cfg.backend not in SHARDED_BACKENDS:
    return x_BxTxD
  spec = fit_spec(P(BATCH_AXES, SEQ_AXIS), x_BxTxD.shape, resolve_mesh(attn_cfg))
  target = spec if attn_cfg.mesh is None else NamedSharding(attn_cfg.mesh, spec)
  return jax.lax.with_sharding_constraint(x_BxTxD, target)


# The jitted functions take the model as (graphdef, state) and never hand state back: nnx.jit
# would write the outputs' copies of the weights into the model, with whatever placement the
# compiler picked for them (e.g. spread over a sequence-parallel mesh).
@functools.partial(jax.jit, static_argnames=("graphdef", "cache_len", "attn_cfg"))
def _prefill(graphdef, state, batch: PromptBatch, cache_len: int, attn_cfg: AttentionConfig):
  model = nnx.merge(graphdef, state)
  ids_BxT, seg_BxT, pos_3xBxT = batch.input_ids_BxT, batch.segment_ids_BxT, batch.positions_3xBxT
  b, t = ids_BxT.shape
  order_T = inverse_T = np.arange(t)
  if attn_cfg.layout == "zigzag":  # ring's load-balanced order; undone on the outputs below
    order_T, inverse_T = zigzag_permutation(t, axis_size(resolve_mesh(attn_cfg), SEQ_AXIS))
    ids_BxT, seg_BxT, pos_3xBxT = ids_BxT[:, order_T], seg_BxT[:, order_T], pos_3xBxT[:, :, order_T]
  token_pos_BxT = jnp.broadcast_to(jnp.asarray(order_T, jnp.int32), (b, t))
  embeds_BxTxD = model.embed(ids_BxT, token_pos_BxT, batch.patches_BxNxP, batch.vision_layout)
  hidden_BxTxD, kv = model.language_model.prefill(
      _shard_tokens(embeds_BxTxD, attn_cfg), pos_3xBxT, seg_BxT, token_pos_BxT, attn_cfg)
  logits_BxV = model.logits(hidden_BxTxD[:, inverse_T[-1]])
  if attn_cfg.layout == "zigzag":
    kv = [(k[:, inverse_T], v[:, inverse_T]) for k, v in kv]
  pad = ((0, 0), (0, cache_len - t), (0, 0), (0, 0))
  kv = [(jnp.pad(k, pad), jnp.pad(v, pad)) for k, v in kv]
  seg_BxT = batch.segment_ids_BxT
  valid_BxS = jnp.pad(seg_BxT, ((0, 0), (0, cache_len - t)), constant_values=1)
  # As transformers: a new token's position is its text index (valid tokens before it) plus the
  # row's rope delta, i.e. the prompt's largest position + 1 for the first one.
  next_pos_B = rope_deltas(batch.positions_3xBxT, seg_BxT) + seg_BxT.sum(axis=1)
  return logits_BxV, KVCache(kv, valid_BxS, next_pos_B.astype(jnp.int32), t)


def prefill(model, batch: PromptBatch, *, cache_len: int, attn_cfg: AttentionConfig | None = None):
  """Runs the prompts; returns (next-token logits_BxV fp32, KVCache of `cache_len` slots).

  `attn_cfg` (default: the model's) picks the prompt's attention; a ring/ulysses config with a
  mesh makes it sequence parallel (T must then divide by the 'sequence' axis, by twice that for
  the zigzag layout; see `prefill_length_multiple`). The vision tower keeps its own config.
  """
  t = batch.input_ids_BxT.shape[1]
  if cache_len < t:
    raise ValueError(f"cache_len={cache_len} cannot hold the {t}-token prompts")
  return _prefill(*nnx.split(model), batch, cache_len, attn_cfg or model.attn_cfg)


def prefill_length_multiple(attn_cfg: AttentionConfig) -> int:
  """What the padded prompt length must be a multiple of for `attn_cfg`."""
  if attn_cfg.backend not in SHARDED_BACKENDS and attn_cfg.layout == "natural":
    return 1
  sp = axis_size(resolve_mesh(attn_cfg), SEQ_AXIS)
  return 2 * sp if attn_cfg.layout == "zigzag" else sp


@functools.partial(jax.jit, donate_argnames=("cache",),
                   static_argnames=("graphdef", "max_new_tokens", "sampling"))
def _decode(graphdef, state, logits_BxV, cache: KVCache, key, stop_K, pad_token_id,
            max_new_tokens: int, sampling: Sampling):
  model = nnx.merge(graphdef, state)
  lm = model.language_model
  b = logits_BxV.shape[0]

  def pick(logits_BxV, i, done_B):
    tok_B = sample_tokens(logits_BxV, jax.random.fold_in(key, i), sampling)
    tok_B = jnp.where(done_B, pad_token_id, tok_B)
    return tok_B, done_B | (tok_B[:, None] == stop_K).any(axis=-1)

  tok_B, done_B = pick(logits_BxV, 0, jnp.zeros((b,), bool))
  tokens_BxN = jnp.full((b, max_new_tokens), pad_token_id, jnp.int32).at[:, 0].set(tok_B)

  def unfinished(carry):
    i, _, _, done_B, _ = carry
    return (i < max_new_tokens) & ~done_B.all()

  def step(carry):
    """Feeds token i - 1 (cache slot T + i - 1) and picks token i."""
    i, tok_B, tokens_BxN, done_B, kv = carry
    pos_3xBx1 = jnp.broadcast_to((cache.next_pos_B + i - 1)[None, :, None], (3, b, 1))
    hidden_Bx1xD, kv = lm.decode(lm.embed(tok_B[:, None]), pos_3xBx1, kv, cache.valid_BxS,
                                 cache.prompt_len + i - 1)
    tok_B, done_B = pick(model.logits(hidden_Bx1xD[:, 0]), i, done_B)
    return i + 1, tok_B, tokens_BxN.at[:, i].set(tok_B), done_B, kv

  carry = (jnp.int32(1), tok_B, tokens_BxN, done_B, cache.kv)
  _, _, tokens_BxN, _, kv = jax.lax.while_loop(unfinished, step, carry)
  # Returning the donated cache lets the loop update it in place instead of copying it.
  return tokens_BxN, cache.replace(kv=kv)


def generate(model, batch: PromptBatch, *, max_new_tokens: int,
             stop_token_ids: Sequence[int] = (), sampling: Sampling = Sampling(), seed: int = 0,
             pad_token_id: int = 0, attn_cfg: AttentionConfig | None = None):
  """Decodes up to `max_new_tokens` per row; returns numpy (tokens_BxN int32, lengths_B).

  Row i's reply is tokens[i, :lengths[i]], its stop token (any of `stop_token_ids`) included;
  the slots after it hold `pad_token_id`. Decoding ends early once every row has stopped.
  Sampled decoding is a function of `seed` (and the batch). `attn_cfg` as in `prefill`.
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  t = batch.input_ids_BxT.shape[1]
  # The last token is never fed back, so it needs no slot.
  logits_BxV, cache = prefill(model, batch, cache_len=t + max_new_tokens - 1, attn_cfg=attn_cfg)
  # Padded with -1 (never a token) to a fixed size, so the stop list does not change the shape.
  stop_K = np.full(-(-max(len(stop_token_ids), 1) // 8) * 8, -1, np.int32)
  stop_K[:len(stop_token_ids)] = stop_token_ids
  tokens_BxN, _ = _decode(*nnx.split(model), logits_BxV, cache, jax.random.key(seed), stop_K,
                          np.int32(pad_token_id), max_new_tokens, sampling)
  tokens_BxN = np.asarray(tokens_BxN)
  stopped_BxN = np.isin(tokens_BxN, stop_K)
  lengths_B = np.where(stopped_BxN.any(axis=1), stopped_BxN.argmax(axis=1) + 1, max_new_tokens)
  return tokens_BxN, lengths_B


# ----- the evaluation hook -------------------------------------------------------------------

def default_attention() -> tuple[AttentionConfig, AttentionConfig]:
  """(LLM, vision) attention for this platform: cuDNN's fused kernel on GPU, blockwise elsewhere."""
  if jax.default_backend() == "gpu":
    return (AttentionConfig(backend="cudnn"),
            AttentionConfig(backend="cudnn", max_segments=1))   # one image per image row
  return AttentionConfig(backend="blockwise"), AttentionConfig(backend="blockwise")


class ModelGenerator:
  """`eval.generators.Generator` over our model: renders each prompt in the Qwen2.5-VL chat
  format (`data.chat`), opens the assistant turn with `Prompt.prefill`, decodes until
  <|im_end|> / <|endoftext|> (or the config's eos) and returns the text after the prefill.

  Padded lengths and patch counts are rounded up with `bucket`, so prompts of similar size share
  one compiled program.
  """

  def __init__(self, model, tokenizer, *, sampling: Sampling = Sampling(), seed: int = 0,
               min_pixels: int, max_pixels: int):
    self.model, self.tokenizer, self.cfg = model, tokenizer, model.cfg
    self.chat = ChatTokenizer(tokenizer)
    self.sampling, self.seed, self.calls = sampling, seed, 0
    self.min_pixels, self.max_pixels = min_pixels, max_pixels
    eos = self.cfg.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    ids = self.chat.ids
    self.stop_token_ids = sorted({ids["<|im_end|>"], ids["<|endoftext|>"], *eos})
    self.pad_token_id = ids["<|endoftext|>"]
    self.length_multiple = prefill_length_multiple(model.attn_cfg)

  def encode(self, prompt) -> TokenPrompt:
    """An `eval.prompts.Prompt` as ids (assistant turn opened and prefilled) and patches."""
    v = self.cfg.vision
    patches, grids = [], []
    for path in prompt.images:
      with PIL.Image.open(path) as image:
        p, g = preprocess_image(image, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                                patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
                                merge_size=v.spatial_merge_size)
      patches.append(p)
      grids.append(tuple(int(x) for x in g))
    ids, _, refs = self.chat.encode(prompt.messages, grids)
    # Special tokens are atomic, so tokenizing the reply opening apart gives the joint ids.
    opening = self.tokenizer.encode(f"<|im_start|>assistant\n{prompt.prefill}",
                                    add_special_tokens=False)
    return TokenPrompt(np.concatenate([ids, np.asarray(opening, np.int32)]),
                       np.concatenate([patches[r] for r in refs]) if refs else None,
                       tuple(grids[r] for r in refs))

  def generate(self, batch, max_new_tokens: int) -> list[str]:
    rows = [self.encode(p) for p in batch]
    length = bucket(max(len(r.input_ids) for r in rows))
    length = -(-length // self.length_multiple) * self.length_multiple
    fit = VisionGeometry.fit([r.grids_thw for r in rows], self.cfg.vision)
    geometry = dataclasses.replace(fit, num_patches=bucket(fit.num_patches, 64),
                                   image_rows=bucket(fit.image_rows, 1),
                                   image_row_len=bucket(fit.image_row_len, 64))
    tokens = left_pad_batch(self.cfg, rows, pad_token_id=self.pad_token_id, length=length,
                            geometry=geometry)
    out_BxN, lengths_B = generate(
        self.model, tokens, max_new_tokens=max_new_tokens, stop_token_ids=self.stop_token_ids,
        sampling=self.sampling, seed=self.seed + self.calls, pad_token_id=self.pad_token_id)
    self.calls += 1
    return [self.tokenizer.decode(row[:n], skip_special_tokens=True)
            for row, n in zip(out_BxN.tolist(), lengths_B)]


def make_eval_generator(ckpt: str, *, tokenizer: str | None = None,
                        attn_cfg: AttentionConfig | None = None,
                        vision_attn_cfg: AttentionConfig | None = None, dtype: str | None = None,
                        sampling: Sampling = Sampling(), seed: int = 0,
                        min_pixels: int | None = None, max_pixels: int | None = None):
  """The `--generator jax` hook of `python -m mmprolong_jax.eval`.

  ckpt: a model checkpoint or training workdir (`params.load_model_checkpoint`). tokenizer: a HF
  tokenizer folder; default: the checkpoint folder itself. attn_cfg / vision_attn_cfg: default
  `default_attention()`; a ring/ulysses `attn_cfg` with a mesh prefills sequence parallel (the
  weights are then replicated over that mesh). dtype: activations; default: the checkpoint's,
  except bfloat16 for a float32 checkpoint under cuDNN (its fused attention takes no float32).
  Pixels default to the eval CLI's defaults, so images cost what its padding counted.
  """
  from transformers import AutoTokenizer  # slow to import: only when asked for
  tok_dir = Path(tokenizer or ckpt)
  if not any((tok_dir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
    raise FileNotFoundError(f"no tokenizer files in {tok_dir}: copy the HF tokenizer there or pass "
                            "tokenizer=DIR")
  default_llm, default_vision = default_attention()
  attn_cfg, vision_attn_cfg = attn_cfg or default_llm, vision_attn_cfg or default_vision
  cfg, flat = params_lib.load_model_checkpoint(ckpt)
  uses_cudnn = "cudnn" in (attn_cfg.backend, attn_cfg.local_backend, vision_attn_cfg.backend)
  if dtype is None and cfg.dtype == "float32" and uses_cudnn:
    dtype = "bfloat16"
  cfg = cfg.replace(dtype=dtype or cfg.dtype)
  model = params_lib.model_from_flat(cfg, flat, attn_cfg=attn_cfg, vision_attn_cfg=vision_attn_cfg)
  if attn_cfg.backend in SHARDED_BACKENDS and attn_cfg.mesh is not None:
    nnx.update(model, jax.device_put(nnx.state(model), NamedSharding(attn_cfg.mesh, P())))
  return ModelGenerator(
      model, AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True), sampling=sampling,
      seed=seed, min_pixels=min_pixels or eval_tokens.MIN_PIXELS,
      max_pixels=max_pixels or eval_tokens.MAX_PIXELS)
