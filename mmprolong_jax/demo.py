"""The product end to end on a CPU, in a few minutes:

  python -m mmprolong_jax.demo [--out demo_out] [--pdf_dir DIR] [--steps 40]

PDFs (the bundled test documents by default) -> data tools with the rule-based teacher ->
packed ArrayRecord shards (tiny offline tokenizer) -> training a tiny random Qwen2.5-VL on 8
simulated devices (data 2 x fsdp 2 x sequence 2, ring attention) -> stop, resume from the
checkpoint -> export to Hugging Face format -> reload with transformers and compare logits.
"""
from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUNDLED_PDFS = REPO.parent / "shared" / "testdata" / "pdfs"
VQA_TASKS = ("extract_single", "extract_multi", "reasoning")


def _step(title: str):
  print(f"\n=== {title}", flush=True)
  return time.perf_counter()


def make_data(pdf_dir: Path, out: Path, seed: int) -> tuple[Path, Path, dict]:
  from data_tools import build_shards, pipeline
  from mmprolong_jax.data import schema as shard_schema
  from mmprolong_jax.data.tiny_tokenizer import build_tiny_tokenizer
  from configs import demo as demo_config

  t = _step(f"data tools: {pdf_dir} -> {out / 'work'}")
  pipeline.main(["--pdf_dir", str(pdf_dir), "--out", str(out / "work"), "--teacher", "rule",
                 "--workers", "2", "--dpi", "36", "--pages", "any", "--seed", str(seed),
                 "--assemble_tasks", ",".join(VQA_TASKS)])
  instances = out / "work" / "instances" / "long.jsonl"
  records = [json.loads(l) for l in instances.read_text().splitlines()]
  print(f"{len(records)} instances ({time.perf_counter() - t:.0f}s); report: {out / 'work' / 'report'}")

  t = _step("tokenizer (offline BPE with Qwen's special tokens)")
  corpus = [p["text"] for r in records for m in r["messages"] for p in m["content"]
            if p["type"] == "text"]
  tok_dir = build_tiny_tokenizer(out / "tokenizer", corpus)

  t = _step(f"shards -> {out / 'shards'}")
  c = demo_config.get_config()
  build_shards.main(["--work", str(out / "work"), "--out", str(out / "shards"),
                     "--tokenizer_dir", str(tok_dir), "--max_len", str(c.data.max_len),
                     # Slack under the slots: windows cut by page edges take whole window
                     # slots, and the 2 sequence shards balance to within one image.
                     "--max_patches", str(3 * c.data.num_patches // 8),
                     "--image_max_pixels", str(c.data.image_max_pixels), "--seed", str(seed)])
  sets = {}
  for task in VQA_TASKS:
    pattern = shard_schema.shard_glob(str(out / "shards"), task)
    if glob.glob(pattern):
      sets[task] = pattern
  if not sets:
    raise SystemExit(f"no shards were built in {out / 'shards'}; see {out / 'work' / 'report'}")
  print(f"shard sets: {sorted(sets)} ({time.perf_counter() - t:.0f}s)")
  return tok_dir, out / "shards", sets


def train_config(tok_dir: Path, sets: dict, steps: int):
  from transformers import AutoTokenizer
  from configs import demo as demo_config
  tok = AutoTokenizer.from_pretrained(str(tok_dir))
  ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
      ("image_token_id", "<|image_pad|>"), ("vision_start_token_id", "<|vision_start|>"),
      ("vision_end_token_id", "<|vision_end|>"), ("eos_token_id", "<|im_end|>"))}
  c = demo_config.get_config()
  c.model.overrides = {**ids, "video_token_id": ids["image_token_id"] + 100, "bos_token_id": None}
  c.model.text_overrides = {"vocab_size": len(tok)}
  c.data.shards = dict(sets)
  c.data.mixture = {k: 1.0 / len(sets) for k in sets}
  c.train.token_budget = steps * c.data.global_batch_tokens
  c.train.checkpoint_every = max(1, steps // 2)
  return c


def export_and_check(workdir: Path, tok_dir: Path, out: Path):
  import numpy as np
  import torch
  from transformers import Qwen2_5_VLForConditionalGeneration
  from mmprolong_jax import params as params_lib
  from mmprolong_jax.convert import to_hf

  t = _step(f"export -> {out}")
  to_hf.main(["--ckpt", str(workdir), "--out", str(out), "--base_hf_dir", str(tok_dir)])
  hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(out).eval()
  cfg, flat = params_lib.load_model_checkpoint(workdir)
  ours = params_lib.model_from_flat(cfg.replace(attention_backend="reference"), flat)
  ids = np.arange(3, 40, dtype=np.int32)[None]
  pos = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int32), (3, 1, ids.shape[1]))
  got = np.asarray(ours(ids, pos))
  with torch.no_grad():
    want = hf(input_ids=torch.from_numpy(ids.astype(np.int64)),
              mm_token_type_ids=torch.zeros(ids.shape, dtype=torch.long)).logits.numpy()
  err = float(np.abs(got - want).max() / np.abs(want).max())
  print(f"transformers reloaded {out}; max relative logit difference vs ours: {err:.1e} "
        f"({time.perf_counter() - t:.0f}s)")
  if err > 1e-4:
    raise SystemExit("exported model disagrees with ours")
  return err


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", default="demo_out", help="everything goes here")
  ap.add_argument("--pdf_dir", default=str(BUNDLED_PDFS), help="folder of PDFs")
  ap.add_argument("--steps", type=int, default=40)
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args(argv)
  out = Path(a.out).absolute()
  if not Path(a.pdf_dir).is_dir():
    raise SystemExit(f"no PDF folder at {a.pdf_dir}; pass --pdf_dir with a few PDFs")
  start = time.perf_counter()
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  tok_dir, shard_dir, sets = make_data(Path(a.pdf_dir), out, a.seed)

  from mmprolong_jax import train
  config = train_config(tok_dir, sets, a.steps)
  workdir = out / "run"
  t = _step(f"train {a.steps // 2} steps, then stop (checkpoint) -> {workdir}")
  train.run(config, workdir, stop_after=a.steps // 2)
  _step("resume from the checkpoint and finish")
  last = train.run(config, workdir)
  print(f"training done ({time.perf_counter() - t:.0f}s): final loss {last.get('loss', float('nan')):.3f}")

  export_and_check(workdir, tok_dir, out / "hf_export")
  print(f"\nAll done in {time.perf_counter() - start:.0f}s. Where things went:\n"
        f"  rendered pages, layout, QA, instances: {out / 'work'}\n"
        f"  data report (Table 10/11 style):       {out / 'work' / 'report'}\n"
        f"  tokenizer:                             {tok_dir}\n"
        f"  packed ArrayRecord shards + stats:     {shard_dir}\n"
        f"  checkpoints, metrics.jsonl, TensorBoard: {workdir}\n"
        f"  Hugging Face export:                   {out / 'hf_export'}")


if __name__ == "__main__":
  main()
