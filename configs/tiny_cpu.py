"""A tiny random model on synthetic packed rows: the training code end to end on a CPU.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
    python -m mmprolong_jax.train --config configs/tiny_cpu.py --workdir /tmp/tiny

The synthetic tokens are random, so the loss stays near ln(512) = 6.24: this config checks the
machinery (ring + FSDP + data parallel, checkpoints), not learning. About 0.5 s per step on 2 cores.
"""
from configs import base


def get_config():
  c = base.get_config()
  c.model.preset = "tiny"
  c.model.rope_theta = 1e6
  c.model.max_position_embeddings = 4096
  c.model.dtype = "float32"
  c.model.remat_policy = "full"
  c.attention.backend = "ring"
  c.attention.local_backend = "blockwise"
  c.attention.block_q = 32
  c.attention.block_kv = 32
  c.attention.vision_backend = "blockwise"
  c.attention.vision_block = 32
  c.mesh.data = 2
  c.mesh.fsdp = 2
  c.mesh.sequence = 2
  c.data.source = "synthetic"
  c.data.max_len = 256
  c.data.num_patches = 512           # 8 window slots of 64 patches; pages are one window each
  c.data.image_rows = 8
  c.data.image_row_len = 64
  c.data.global_batch_tokens = 4 * 256
  c.data.worker_count = 0
  c.data.patch_dtype = "float32"
  c.data.synthetic.page_grid = (1, 8, 8)
  c.data.synthetic.pages_per_segment = (2, 1)
  c.data.synthetic.answer_len = 8
  c.optim.peak_lr = 3e-3
  c.optim.final_lr = 3e-4
  c.train.token_budget = 20 * 4 * 256
  c.train.max_loss_tokens = 64
  c.train.checkpoint_every = 10
  c.train.async_checkpointing = False
  return c
