"""MMProLong: the study's final LongPT recipe (Table 6, Appendix A.1) on Qwen2.5-VL-7B-Instruct.

Run it (from the repository root; `configs` is imported from there):

  python -m mmprolong_jax.convert.from_hf --hf_dir /hf/Qwen2.5-VL-7B-Instruct \\
      --out /ckpt/qwen2_5_vl_7b_converted
  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/final.py /ckpt/mmprolong \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted --config.data.root=/data/shards

which runs, on every node,

  python -m mmprolong_jax.train --config configs/final.py --workdir /ckpt/mmprolong \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted --config.data.root=/data/shards

`data.root` is the `--out` folder of `python -m data_tools.build_shards`; every shard set's glob
follows it (`schema.shard_glob(root, set)`). Both paths below are placeholders: left as they are,
the run stops at start-up naming the missing checkpoint folder.

Hardware: the 4M-token batch is 32 rows of 128K, one row per (data x fsdp) group and each row
split over `sequence`=2 devices, so the recipe as written wants 64 GPUs (the study: 8 nodes of
8 H20, Ulysses SP 2 x FSDP 4 per node). On fewer devices keep the 4M-token batch with gradient
accumulation, e.g. one node: --config.train.grad_accum_steps=8 (4 rows per micro-batch, one per
FSDP group); see launch/README.md.

Recipe (Table 6): pure long-document VQA, pool-native lengths (32-50 page documents, 32K-128K
tokens), 40% extract-single / 40% extract-multi / 20% reasoning (8:2 extraction:reasoning);
mRoPE base 1e6 -> 4e6 (Dynamic-NTK for 32K -> 128K); max length 131,072; batch 4M tokens
(32 x 131,072); AdamW (wd 0.1, betas 0.9/0.95), LR 1e-5 with 10% linear warmup and cosine decay
to 1e-6; 5B-token budget with the study's binary prefixes (B = 2^30, M = 2^20):
5,368,709,120 / 4,194,304 = 1280 steps.

Reported for MMProLong (MMLongBench document category, LLM-judged; MMLB-D / LD-URL / SLIDE):
  Table 4   64K  36.00 / 62.69 / 80.00, avg 59.56;  128K  34.19 / 56.33 / 77.00, avg 55.84;
            overall 57.70 (Qwen2.5-VL-7B: 50.59, i.e. +7.1).
  Table 5   256K avg 55.09, 512K avg 52.52 without further training (Qwen2.5-VL-7B: 38.12, 19.49).
  Table 17  MM-NIAH avg 56.61 at 64K, 42.28 at 128K (Figure 4: 49.4 vs 20.0 for the base model).
  Table 18  VTCBench-Wild overall 52.73 (base 48.23).
  Table 19  Video-MME 67.78, MLVU 73.55, LongVideoBench 62.08 (base 65.1 / 70.2 / 60.43).
  Table 3   short-context avg 65.48 (the 0% row; base 66.47).
  Table 6   cost: 2.9K H20 GPU-hours.
"""
from configs import base
from mmprolong_jax.data import schema, sources

INIT_CHECKPOINT = "/path/to/qwen2_5_vl_7b_converted"  # --config.init_checkpoint=...
DATA_ROOT = "/path/to/shards"                         # --config.data.root=...
# Table 6: 8:2 extraction-to-reasoning, the extraction share split evenly between the two tasks.
MIXTURE = {"extract_single": 0.4, "extract_multi": 0.4, "reasoning": 0.2}


def set_mixture(c, mixture, root=None):
  """Sets data.mixture and one shard glob per set. The globs are lazy references to data.root,
  so `--config.data.root=...` re-points all of them (a single `--config.data.shards.X=...` still
  overrides one)."""
  if root is not None:
    c.data.root = root
  c.data.mixture = dict(mixture)
  root_ref = c.data.get_ref("root")
  c.data.shards = {name: root_ref + schema.shard_glob("", name) for name in mixture}
  return c


def loss_positions(batch_tokens, supervised_fraction):
  """A train.max_loss_tokens for data whose supervised share is about `supervised_fraction`:
  the next power of two, never below the VQA default (answers are a few dozen tokens)."""
  need = int(batch_tokens * supervised_fraction)
  return max(8192, 1 << max(need - 1, 1).bit_length())


def with_short_data(c, fraction):
  """Replaces `fraction` of the rows (and so of the token budget: rows are near-full) by the
  "short" set (LLaVA-OneVision), keeping the long part's 40/40/20 proportions (Section 5.3)."""
  mixture = {name: round(w * (1 - fraction), 6) for name, w in MIXTURE.items()}
  mixture["short"] = fraction
  set_mixture(c, mixture)
  # Short conversations are answer-heavy (assumed <= 1/4 of their tokens supervised); the
  # trainer stops with a message if a batch has more loss positions than this.
  c.train.max_loss_tokens = loss_positions(c.data.global_batch_tokens, fraction / 4)
  return c


def get_config():
  c = base.get_config()
  c.init_checkpoint = INIT_CHECKPOINT
  c.model.preset = "qwen2_5_vl_7b"   # random init only; shapes come from the checkpoint
  c.model.rope_theta = 4e6
  c.model.max_position_embeddings = 131072

  c.data.root = DATA_ROOT
  set_mixture(c, MIXTURE)
  c.data.max_len = 131072
  c.data.update(sources.vision_slots(c.data.max_len))
  c.data.global_batch_tokens = 32 * c.data.max_len

  # The study's parallelism: Ulysses SP 2, FSDP over the rest (FSDP 4 on one 8-GPU node,
  # 32 on 8 nodes). Cross-node FSDP traffic is small next to a ~2 min step; see launch/README.md.
  c.attention.backend = "ulysses"
  c.attention.local_backend = "cudnn"
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.sequence = 2
  c.mesh.tensor = 1

  c.optim.peak_lr = 1e-5
  c.optim.final_lr = 1e-6
  c.optim.warmup_fraction = 0.1
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.weight_decay = 0.1
  c.train.token_budget = 5 * 2**30
  return c
