"""The CPU demo's training config: a tiny random Qwen2.5-VL on shards built from real PDFs.

Run the whole demo (data tools -> shards -> train -> resume -> export -> transformers):
  python -m mmprolong_jax.demo
which trains with this file after filling in the shard globs and the tokenizer-dependent ids
(configs/demo.py alone has no shards: `python -m mmprolong_jax.train --config configs/demo.py`
needs --config.data.shards and the token ids the demo sets). Measured on 2 cores: the loss falls
from ~6.3 (ln of the ~510-token vocabulary) to ~4.1-4.7 in 40 steps, ~2.5 s per step.
The study reported nothing for this config: it is a smoke run, not an experiment.
"""
from configs import tiny_cpu


def get_config():
  c = tiny_cpu.get_config()           # tiny model, ring over data 2 x fsdp 2 x sequence 2
  c.model.max_position_embeddings = 8192
  c.attention.block_q = 128
  c.attention.block_kv = 128
  c.attention.vision_block = 64
  c.data.source = "shards"
  c.data.shards = {}                # set by the demo from the built shard sets
  c.data.mixture = {}
  c.data.max_len = 4096
  c.data.num_patches = 8192           # 128 window slots: a 16-token page spans 1-2 windows
  c.data.image_rows = 64              # >= pages per row (demo shards: <= 3,072 patches)
  c.data.image_row_len = 128
  c.data.global_batch_tokens = 4 * 4096
  c.data.image_max_pixels = 28 * 28 * 16   # ~16 tokens per page keeps the demo CPU-sized
  c.optim.peak_lr = 2e-3
  c.optim.final_lr = 2e-4
  c.train.token_budget = 40 * 4 * 4096
  c.train.max_loss_tokens = 4096
  c.train.checkpoint_every = 20
  return c
