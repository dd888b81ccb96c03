"""Stage 6: statistics of the training instances (like the study's Tables 10/11 and Figure 7).

  python -m data_tools.report --out WORK [--tokenizer DIR]

Per task: samples, mean pages (images), mean tokens (K), total tokens (B), page range, token
range (K), and the share of samples with at least 100K tokens; K = 2^10, B = 2^30 as in the study.
Token counts (tokens.py): images by Qwen2.5-VL's resize rule; text exactly with --tokenizer
(Qwen2.5-VL chat template), else estimated as chars/4. Also: skips by stage and reason, teacher
acceptance and rejection reasons, the short importer's summary. Output in WORK/report/:
report.json, report.md, and hist_<task>.png (token-length histogram per task).
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path
from typing import Any

from data_tools import common, io_utils, schema, tokens

K, B = 2 ** 10, 2 ** 30
LONG_THRESHOLD = 100 * K


def image_sizes(out: Path, instances: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
  """(width, height) of every image: from render records, else read from the file header."""
  sizes = {}
  for doc_id in common.finished_docs(out, "render"):
    for p in common.load_record(out, "render", doc_id)["pages"]:
      sizes[p["image"]] = (p["width"], p["height"])
  missing = {path for inst in instances for path in inst["images"]} - sizes.keys()
  if missing:
    from PIL import Image
    for path in sorted(missing):
      with Image.open(Path(out) / path) as im:
        sizes[path] = im.size
  return sizes


def task_stats(rows: list[tuple[int, int]]) -> dict[str, Any]:
  """rows: (pages, tokens) per sample."""
  pages = [p for p, _ in rows]
  toks = [t for _, t in rows]
  return {"samples": len(rows), "mean_pages": sum(pages) / len(rows),
          "mean_tokens_k": sum(toks) / len(rows) / K, "total_tokens_b": sum(toks) / B,
          "page_range": [min(pages), max(pages)],
          "token_range_k": [min(toks) / K, max(toks) / K],
          "share_ge_100k": sum(t >= LONG_THRESHOLD for t in toks) / len(rows)}


def teacher_counts(out: Path) -> dict[str, Any]:
  accepted = collections.Counter()
  rejected = collections.Counter()
  for doc_id in common.finished_docs(out, "teach"):
    rec = common.load_record(out, "teach", doc_id)
    accepted.update(q["task"] for q in rec["qa"])
    rejected.update(r["reason"] for r in rec["rejected"])
  return {"accepted": dict(sorted(accepted.items())), "rejected": dict(sorted(rejected.items()))}


def histogram(path: Path, task: str, toks: list[int]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
  ax.hist([t / K for t in toks], bins=40, color="#4878a8", edgecolor="white")
  ax.axvline(LONG_THRESHOLD / K, color="#c44e52", linestyle="--", linewidth=1, label="100K")
  ax.set_xlabel("tokens (K)")
  ax.set_ylabel("samples")
  ax.set_title(f"{task}: {len(toks)} samples")
  ax.legend(frameon=False)
  fig.tight_layout()
  fig.savefig(path, metadata={"Software": None})  # no version stamp: reruns are identical
  plt.close(fig)


def _markdown(rep: dict[str, Any]) -> str:
  lines = ["# Data report", "", f"Token counts: images by Qwen2.5-VL's resize rule; text by "
           f"{rep['text_tokens']}. K = 2^10, B = 2^30.", "",
           "| Task | # Samples | # Pages | # Tokens (K) | Total Tokens (B) | Page Range | "
           "Token Range (K) | >= 100K |", "|---|---|---|---|---|---|---|---|"]
  for task, s in rep["tasks"].items():
    lines.append(
        f"| {task} | {s['samples']:,} | {s['mean_pages']:.1f} | {s['mean_tokens_k']:.1f} | "
        f"{s['total_tokens_b']:.4f} | [{s['page_range'][0]}, {s['page_range'][1]}] | "
        f"[{s['token_range_k'][0]:.1f}, {s['token_range_k'][1]:.1f}] | "
        f"{100 * s['share_ge_100k']:.1f}% |")
  lines += ["", "## Skipped documents", ""]
  for stage, reasons in rep["skips"].items() or []:
    lines.append(f"- {stage}: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
  if not rep["skips"]:
    lines.append("- none")
  t = rep["teacher"]
  lines += ["", "## Teacher", "", f"- accepted: {t['accepted']}", f"- rejected: {t['rejected']}"]
  if rep.get("short"):
    lines += ["", "## Short-context import", "", f"- {rep['short']}"]
  lines += ["", "## Histograms", ""] + [f"![{task}](hist_{task}.png)" for task in rep["tasks"]
                                        if task != "total"]
  return "\n".join(lines) + "\n"


def run(out: Path, tokenizer: str | None = None) -> dict[str, Any]:
  out = Path(out)
  instances = []
  for path in sorted((out / "instances").glob("*.jsonl")):
    for rec in io_utils.read_jsonl(path):
      schema.validate_instance(rec)
      instances.append(rec)
  sizes = image_sizes(out, instances)
  count = tokens.Counter(tokenizer)
  per_task = collections.defaultdict(list)
  for inst in instances:
    per_task[inst["task"]].append((len(inst["images"]), count(inst, sizes)))
  order = [t for t in schema.TASKS if t in per_task]
  rep = {"text_tokens": count.method,
         "tasks": {t: task_stats(per_task[t]) for t in order},
         "skips": common.skip_counts(out), "teacher": teacher_counts(out)}
  if per_task:
    rep["tasks"]["total"] = task_stats([r for t in order for r in per_task[t]])
  summary = out / "instances" / "short.summary.json"
  if summary.exists():
    rep["short"] = io_utils.read_json(summary)
  report_dir = out / "report"
  report_dir.mkdir(parents=True, exist_ok=True)
  for t in order:
    histogram(report_dir / f"hist_{t}.png", t, [tok for _, tok in per_task[t]])
  io_utils.write_json_atomic(report_dir / "report.json", rep)
  io_utils.write_text_atomic(report_dir / "report.md", _markdown(rep))
  common.log.info("report: %s", report_dir / "report.md")
  return rep


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--tokenizer",
                      help="local tokenizer folder for text tokens (default: chars/4 estimate)")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
  return run(args.out, args.tokenizer)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m data_tools.report", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", type=Path, required=True, help="the work folder")
  add_args(parser)
  common.setup_logging()
  run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
  main()
