"""Stage 4: one QA pair per segment and task (extract_single, extract_multi, reasoning).

  python -m data_tools.teach --out WORK --teacher rule
  OPENAI_API_KEY=... python -m data_tools.teach --out WORK --teacher openai \\
      --teacher_base_url https://api.example.com/v1 --teacher_model NAME \\
      --teacher_api_key_env OPENAI_API_KEY

Teachers: `rule` builds questions from the parsed blocks offline (teach_rules.py); `openai` sends
the segment's page images with the prompt of teach_prompt.py to an OpenAI-compatible endpoint
(retries, backoff and a response cache under WORK/cache/chat, so a rerun costs nothing). Every
reply passes the same strict validation (teach_validate.py); a rejected reply is kept with its
reason, and the model teacher is asked again (a new `seed` request parameter) up to
--teacher_attempts times. A document whose request fails for good (after the client's retries)
is not recorded, so the next run asks again. Output: WORK/docs/<doc_id>/teach.json with "qa"
(accepted pairs) and "rejected" (reason, detail and reply of every rejected attempt).

Page numbers: evidence_pages and question anchors use 1-based positions in the full document
(see teach_prompt.py).
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path
from typing import Any, Callable

from data_tools import chat_client, common, teach_prompt, teach_rules, teach_validate


def judge(reply: str, task: str, seg: dict[str, Any], doc_id: str, teacher: str,
          attempt: int = 0) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
  """(accepted QA record, None) or (None, rejection record) for one teacher reply."""
  try:
    qa = teach_validate.check_reply(reply, task, seg)
  except teach_validate.Rejected as e:
    return None, {"segment_id": seg["id"], "task": task, "attempt": attempt,
                  "reason": e.reason, "detail": e.detail[:300], "reply": reply[:2000]}
  return {"id": f"{seg['id']}-{task}", "doc_id": doc_id, "segment_id": seg["id"], "task": task,
          "segment_pages": [seg["start_page"], seg["end_page"]], "teacher": teacher, **qa}, None


def _record(teacher: str, qa: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> dict:
  counts = collections.Counter(r["reason"] for r in rejected)
  return {"teacher": teacher, "qa": qa, "rejected": rejected,
          "counts": {"accepted": len(qa), "rejected": dict(sorted(counts.items()))}}


def rule_task(task: dict[str, Any], beat: Callable[[str], None]) -> dict[str, Any]:
  """Worker: rule-based QA for every segment of one document."""
  out, doc_id = Path(task["out"]), task["doc_id"]
  layout = common.load_record(out, "layout", doc_id)
  qa, rejected = [], []
  for seg in common.load_record(out, "segment", doc_id)["segments"]:
    for name in task["tasks"]:
      beat(f"{seg['id']} {name}")
      rng = common.rng(task["seed"], doc_id, seg["id"], name, "rule")
      try:
        reply = teach_rules.generate(layout, seg, name, rng)
      except teach_rules.NoMaterial as e:
        rejected.append({"segment_id": seg["id"], "task": name, "attempt": 0,
                         "reason": "no_material", "detail": str(e), "reply": ""})
        continue
      good, bad = judge(reply, name, seg, doc_id, "rule")
      qa += [good] if good else []
      rejected += [bad] if bad else []
  return _record("rule", qa, rejected)


def _jobs(out: Path, params: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
  jobs = []
  for doc_id in common.finished_docs(out, "segment"):
    key = common.stage_key(params, common.load_record(out, "segment", doc_id)["key"])
    jobs.append((doc_id, key, {"out": str(out), "doc_id": doc_id, **params}))
  return jobs


def run_rule(out: Path, *, tasks=teach_prompt.TASKS, seed: int = 0,
             workers: int = 1) -> collections.Counter:
  params = {"teacher": "rule", "tasks": list(tasks), "seed": seed}
  return common.run_stage(out, "teach", rule_task, _jobs(out, params), workers_n=workers)


def run_model(out: Path, client: chat_client.ChatClient, *, tasks=teach_prompt.TASKS,
              seed: int = 0, attempts: int = 2, temperature: float = 0.7,
              max_tokens: int = 2048) -> collections.Counter:
  """Model teacher over all segments not done yet, a few documents at a time."""
  params = {"teacher": f"openai:{client.model}", "tasks": list(tasks), "seed": seed,
            "attempts": attempts, "temperature": temperature, "max_tokens": max_tokens}
  counts = collections.Counter()
  todo = []
  for doc_id, key, _ in _jobs(out, params):
    if common.is_done(out, "teach", doc_id, key):
      counts["already_done"] += 1
    else:
      todo.append((doc_id, key))
  chunk = max(4, client.concurrency)
  for i in range(0, len(todo), chunk):
    counts.update(_teach_chunk(out, client, todo[i:i + chunk], params))
  common.log.info("teach: %s; chat client %s", dict(counts), client.stats())
  return counts


def _teach_chunk(out: Path, client: chat_client.ChatClient, docs: list[tuple[str, str]],
                 params: dict[str, Any]) -> collections.Counter:
  """Teaches a few documents; those with a request that failed for good are not recorded, so
  the next run asks again (what did succeed comes from the cache)."""
  requests = []  # (doc_id, segment, task, messages)
  for doc_id, _ in docs:
    render = common.load_record(out, "render", doc_id)
    images = {p["page"]: str(Path(out) / p["image"]) for p in render["pages"]}
    for seg in common.load_record(out, "segment", doc_id)["segments"]:
      for name in params["tasks"]:
        rng = common.rng(params["seed"], doc_id, seg["id"], name, "prompt")
        requests.append((doc_id, seg, name, teach_prompt.build_messages(name, seg, images, rng)))
  qa = collections.defaultdict(list)
  rejected = collections.defaultdict(list)
  failed = {}
  pending = requests
  for attempt in range(params["attempts"]):
    replies = client.complete_many(
        [r[3] for r in pending], temperature=params["temperature"],
        max_tokens=params["max_tokens"], seed=params["seed"] + attempt,
        progress=f"teach (attempt {attempt + 1})")
    retry = []
    for (doc_id, seg, name, msgs), reply in zip(pending, replies):
      if not reply.ok:  # the client already retried; asking again now would not help
        failed[doc_id] = reply.error
        continue
      good, bad = judge(reply.text, name, seg, doc_id, params["teacher"], attempt)
      if good:
        qa[doc_id].append(good)
      else:
        rejected[doc_id].append(bad)
        retry.append((doc_id, seg, name, msgs))
    pending = retry
  counts = collections.Counter()
  for doc_id, key in docs:
    if doc_id in failed:
      common.log.warning("teach: %s left for the next run: %s", doc_id[:16], failed[doc_id][:200])
      counts["request_failed"] += 1
    else:
      common.write_record(out, "teach", doc_id, key,
                          _record(params["teacher"], qa[doc_id], rejected[doc_id]))
      counts["done"] += 1
  return counts


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--teacher", choices=["rule", "openai"], default="rule",
                      help="rule: offline, from the parsed blocks; openai: a chat endpoint")
  parser.add_argument("--tasks", default=",".join(teach_prompt.TASKS),
                      help="comma-separated subset of " + ",".join(teach_prompt.TASKS))
  parser.add_argument("--teacher_base_url", help="OpenAI-compatible base URL (…/v1)")
  parser.add_argument("--teacher_model", help="model name sent in each request")
  parser.add_argument("--teacher_api_key_env",
                      help="name of the environment variable holding the API key (none: no key)")
  parser.add_argument("--teacher_concurrency", type=int, default=8, help="requests in flight")
  parser.add_argument("--teacher_timeout", type=float, default=300.0, help="seconds per request")
  parser.add_argument("--teacher_attempts", type=int, default=2,
                      help="asks per (segment, task) until a reply passes validation")
  parser.add_argument("--teacher_temperature", type=float, default=0.7)
  parser.add_argument("--teacher_max_tokens", type=int, default=2048)


def run_from_args(args: argparse.Namespace) -> collections.Counter:
  tasks = common.parse_choices(args.tasks, teach_prompt.TASKS, "--tasks")
  if args.teacher == "rule":
    return run_rule(args.out, tasks=tasks, seed=args.seed, workers=args.workers)
  if not (args.teacher_base_url and args.teacher_model):
    raise SystemExit("--teacher openai needs --teacher_base_url and --teacher_model")
  client = chat_client.ChatClient(
      args.teacher_base_url, args.teacher_model, api_key_env=args.teacher_api_key_env,
      cache_dir=Path(args.out) / "cache" / "chat", timeout_s=args.teacher_timeout,
      concurrency=args.teacher_concurrency, seed=args.seed)
  return run_model(args.out, client, tasks=tasks, seed=args.seed, attempts=args.teacher_attempts,
                   temperature=args.teacher_temperature, max_tokens=args.teacher_max_tokens)


if __name__ == "__main__":
  common.stage_main(sys.modules[__name__])
