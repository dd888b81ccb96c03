r"""`python -m mmprolong_jax.eval`: generate, score, judge and tabulate MMLongBench-format tasks.

  python -m mmprolong_jax.eval --data_dir mmlb_data --image_dir mmlb_image --tasks doc,niah \
      --lengths 64K,128K --out runs/eval --generator jax --ckpt ckpts/final \
      --judge_url http://127.0.0.1:8000/v1 --judge_model Qwen/Qwen2.5-72B-Instruct

Three stages, each resumable: replies go to <out>/generations (examples already there are
skipped), the documentQA judge to <out>/judge (same), and the tables are rebuilt from every
record in both every time. `--generator none` skips generation, e.g. to judge or report an
earlier run.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from data_tools.chat_client import ChatClient
from mmprolong_jax.eval import generators, outputs, report, tasks
from mmprolong_jax.eval.datasets import DataError, parse_length
from mmprolong_jax.eval.judge import Judge
from mmprolong_jax.eval.tokens import MAX_PIXELS, MIN_PIXELS, TokenCounter, make_token_counter


def select(task: tasks.Task, max_samples: int | None, seed: int) -> list:
  """All examples, or a seeded subset in file order. The draw depends on the dataset name only,
  so files that share ids (one question at several lengths) keep the same questions."""
  if max_samples is None or max_samples >= len(task.examples):
    return task.examples
  ids = sorted(ex.id for ex in task.examples)
  keep = set(random.Random(f"{seed}:{task.unit.name}").sample(ids, max_samples))
  return [ex for ex in task.examples if ex.id in keep]


def generate_unit(task: tasks.Task, generator: generators.Generator, out_dir: str | Path, *,
                  batch_size: int = 1, max_new_tokens: int = 128,
                  max_samples: int | None = None, seed: int = 0) -> None:
  """Replies and rule scores for the examples of `task` not yet in its generations file."""
  path = outputs.generations_path(out_dir, task.unit.stem)
  done = {r["id"] for r in outputs.read_records(path)}
  pending = [ex for ex in select(task, max_samples, seed) if ex.id not in done]
  with tqdm(total=len(pending), desc=task.unit.stem, unit="ex") as bar:
    for start in range(0, len(pending), batch_size):
      batch = pending[start:start + batch_size]
      prompts = [task.prompt(ex) for ex in batch]
      replies = generator.generate(prompts, max_new_tokens)
      if len(replies) != len(prompts):
        raise RuntimeError(f"the generator returned {len(replies)} replies for {len(prompts)} prompts")
      outputs.append_records(path, [task.record(ex, p, r) for ex, p, r in zip(batch, prompts, replies)])
      bar.update(len(batch))


def judge_unit(unit: tasks.Unit, judge: Judge, out_dir: str | Path) -> int:
  """Judges the generated documentQA replies not judged yet; returns how many requests failed."""
  path = outputs.judge_path(out_dir, unit.stem)
  judged = {r["id"] for r in outputs.read_records(path)}
  pending = [r for r in outputs.read_records(outputs.generations_path(out_dir, unit.stem))
             if r["id"] not in judged]
  cases = [{"question": r["question"], "answer": r["answer"], "answer_format": r["answer_format"],
            "prediction": r["parsed"]} for r in pending]
  verdicts = judge.score_many(cases, progress=f"judge {unit.stem}") if cases else []
  outputs.append_records(path, [
      {"id": r["id"], "score": v.score, "raw": v.raw, "parsed": v.parsed, "error": v.error,
       "judge_model": judge.client.model} for r, v in zip(pending, verdicts) if v is not None])
  return sum(v is None for v in verdicts)


def collect_scores(units: Sequence[tasks.Unit], out_dir: str | Path) -> list[report.UnitScore]:
  scores = []
  for unit in units:
    generated = outputs.read_records(outputs.generations_path(out_dir, unit.stem))
    ids = {r["id"] for r in generated}
    judged = [r for r in outputs.read_records(outputs.judge_path(out_dir, unit.stem))
              if r["id"] in ids]
    for metric, records in (("rule", generated), ("judge", judged)):
      if records:
        mean = 100 * sum(r["score"] for r in records) / len(records)
        scores.append(report.UnitScore(unit.benchmark, unit.name, unit.k, metric, mean, len(records)))
  return scores


def _token_counter(args: argparse.Namespace) -> TokenCounter:
  if args.tokenizer is None:
    return make_token_counter(min_pixels=args.min_pixels, max_pixels=args.max_pixels)
  from transformers import AutoTokenizer  # only when asked: slow to import
  tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
  return make_token_counter(lambda s: len(tokenizer.encode(s, add_special_tokens=False)),
                            args.min_pixels, args.max_pixels)


def _generator(args: argparse.Namespace) -> generators.Generator:
  if args.generator == "jax":
    if args.ckpt is None:
      raise SystemExit("--generator jax needs --ckpt DIR")
    return generators.load_jax_generator(args.ckpt, tokenizer=args.tokenizer,
                                         min_pixels=args.min_pixels, max_pixels=args.max_pixels)
  return generators.EchoGenerator()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m mmprolong_jax.eval", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data_dir", required=True, help="holds documentQA/ and NIAH/")
  p.add_argument("--image_dir", help="root of the image paths in the files (default: data_dir)")
  p.add_argument("--tasks", default="doc",
                 help="comma list of doc, niah, or single datasets/variants (slidevqa, counting-image)")
  p.add_argument("--lengths", default="64K,128K", help="e.g. 64K,128K,256K,512K")
  p.add_argument("--out", required=True)
  p.add_argument("--generator", choices=["jax", "echo", "none"], required=True,
                 help="jax: our model (mmprolong_jax.generate); echo: replies with the question")
  p.add_argument("--ckpt", help="checkpoint for --generator jax")
  p.add_argument("--model_name", help="row label of the tables (default: from the generator)")
  p.add_argument("--batch_size", type=int, default=1)
  p.add_argument("--max_new_tokens", type=int, default=128)
  p.add_argument("--max_samples", type=int, help="seeded subset per file (MMLongBench: 100 doc, 50 NIAH)")
  p.add_argument("--seed", type=int, default=0, help="subset draw and 256K/512K padding")
  p.add_argument("--tokenizer", help="HF tokenizer folder: exact text counts when padding, and the "
                 "JAX generator's tokenizer (default: the one in --ckpt)")
  p.add_argument("--min_pixels", type=int, default=MIN_PIXELS)
  p.add_argument("--max_pixels", type=int, default=MAX_PIXELS)
  p.add_argument("--judge_url", help="OpenAI-compatible base URL; without it there is no judge")
  p.add_argument("--judge_model", help="model name the judge endpoint serves")
  p.add_argument("--judge_api_key_env", help="environment variable holding the judge's API key")
  p.add_argument("--judge_concurrency", type=int, default=8)
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  if args.judge_url and not args.judge_model:
    raise SystemExit("error: --judge_url needs --judge_model")
  try:
    lengths = [parse_length(x) for x in args.lengths.split(",")]
    units = tasks.expand_units([t.strip() for t in args.tasks.split(",")], lengths)
    loaded = []
    if args.generator != "none":  # read and check every file before the (slow) model load
      counter = _token_counter(args)
      loaded = [tasks.load_task(u, args.data_dir, args.image_dir or args.data_dir, counter,
                                args.seed) for u in units]
  except ValueError as e:  # bad arguments or benchmark files (DataError)
    raise SystemExit(f"error: {e}") from None
  if loaded:
    generator = _generator(args)
    try:
      for task in loaded:
        generate_unit(task, generator, args.out, batch_size=args.batch_size,
                      max_new_tokens=args.max_new_tokens, max_samples=args.max_samples,
                      seed=args.seed)
    except DataError as e:  # padding found too few documents; what was done so far is kept
      raise SystemExit(f"error: {e}") from None
  if args.judge_url:
    client = ChatClient(args.judge_url, args.judge_model, api_key_env=args.judge_api_key_env,
                        cache_dir=Path(args.out) / "judge_cache",
                        concurrency=args.judge_concurrency)
    failed = sum(judge_unit(u, Judge(client), args.out)
                 for u in units if u.benchmark == "doc")
    if failed:
      print(f"warning: {failed} judge requests failed; rerun to retry them", file=sys.stderr)
  model = args.model_name or (Path(args.ckpt).name if args.ckpt else args.generator)
  print(report.write(args.out, model, collect_scores(units, args.out), lengths))
  return 0
