"""Every training config key with the study's defaults (Table 6); other configs start from here.

Not meant to be run directly: `configs/final.py` is the recipe, `configs/demo.py` the CPU demo.
"""
import ml_collections as mlc

from mmprolong_jax.data import sources


def get_config():
  c = mlc.ConfigDict()
  c.seed = 0
  c.distributed = "auto"          # jax.distributed.initialize under SLURM / TPU slices
  c.init_checkpoint = ""          # converted Qwen2.5-VL checkpoint (convert.from_hf); "" = random

  c.model = mlc.ConfigDict()
  c.model.preset = "qwen2_5_vl_7b"   # used when init_checkpoint is empty
  c.model.rope_theta = 4e6           # mRoPE base for 128K (the base model uses 1e6)
  c.model.max_position_embeddings = 131072
  c.model.dtype = "bfloat16"         # activations
  c.model.param_dtype = "float32"    # master weights
  c.model.remat_policy = "full"      # per layer: none | full | dots_saveable | save_attention_out
                                     # | save_attention_kernel | save_attention_qkv
                                     # (see model/layers.py)
  c.model.vision_remat_policy = ""   # the vision tower's, when it differs ("" = the same)
  c.model.mlp_chunks = 1             # LLM and vision MLPs in sequence slices, each remat'd
                                     # (memory at 128K)
  c.model.scan_layers = True         # layers as one scan: remat memory bounded, fast compile
  c.model.overrides = {}             # ModelConfig fields (e.g. image_token_id for a custom tokenizer)
  c.model.text_overrides = {}        # TextConfig fields (e.g. vocab_size)
  c.model.vision_overrides = {}      # VisionConfig fields (e.g. depth)

  c.attention = mlc.ConfigDict()
  c.attention.backend = "ulysses"    # reference | blockwise | cudnn | splash | ring | ulysses
  c.attention.local_backend = "cudnn"
  c.attention.block_q = 512
  c.attention.block_kv = 512
  c.attention.max_segments = 8         # cuDNN packed path: segments per row (per shard row)
  c.attention.vision_backend = "cudnn"   # windows and images as rows; see model/vision.py
  c.attention.vision_block = 64        # blockwise tiles: one 112-px window = 8 x 8 patches

  c.mesh = mlc.ConfigDict()          # the study: Ulysses SP 2 x FSDP 4 per 8-GPU node
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.sequence = 2
  c.mesh.tensor = 1

  c.data = sources.default_config()   # shards, mixture 40/40/20, 128K rows, 4M-token batches
  c.data.source = "shards"           # shards | synthetic
  # Vision geometry per row (num_patches, image_rows, image_row_len, images_per_row): static
  # slots for the tower, see sources.vision_slots. The tower splits a row's images over the
  # `sequence` shards, balanced to within one image, hence the slack over 4 patches per token.
  c.data.patch_dtype = "bfloat16"    # halves host->device traffic; the tower computes in bf16
  c.data.synthetic = mlc.ConfigDict()
  c.data.synthetic.page_grid = (1, 114, 88)      # a US-letter page at 144 DPI: 2,508 tokens
  c.data.synthetic.pages_per_segment = (40,)
  c.data.synthetic.answer_len = 32

  c.optim = mlc.ConfigDict()
  c.optim.peak_lr = 1e-5
  c.optim.final_lr = 1e-6
  c.optim.warmup_fraction = 0.1
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.1
  c.optim.moment_dtype = "float32"   # AdamW moments; "bfloat16" halves the optimizer state
  c.optim.decay_vectors = False
  c.optim.grad_clip_norm = 1.0

  c.train = mlc.ConfigDict()
  c.train.token_budget = 5 * 2**30    # the study's "5B" (it defines B = 2^30): 1280 steps
  c.train.grad_accum_steps = 1       # micro-batches per step (rows split evenly)
  c.train.max_loss_tokens = 8192     # loss positions per global batch (answers are short)
  c.train.log_every = 1
  c.train.checkpoint_every = 50
  c.train.keep_checkpoints = 3
  c.train.async_checkpointing = True
  c.train.wandb_project = ""
  return c
