"""A small client for OpenAI-compatible chat-completions endpoints (vLLM, SGLang, commercial APIs).

Public API:

  client = ChatClient(base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-VL-72B-Instruct",
                      api_key_env="OPENAI_API_KEY", cache_dir="out/cache/chat")
  msgs = [system_msg("You are ..."),
          user_msg(["Page 1:", image_part("p1.webp"), "What is the title?"])]
  res = client.complete(msgs, temperature=0.0, max_tokens=512)   # -> ChatResult, raises ChatError
  results = client.complete_many([msgs, msgs2], max_tokens=512)   # -> [ChatResult], never raises
  client.stats()   # {'requests': .., 'cache_hits': .., 'retries': .., 'failures': ..}

Behaviour:
- POST {base_url}/chat/completions with a JSON body {model, messages, **params}.
- The API key is read from the environment variable the caller names (never from a file); the
  Authorization header is omitted when no variable is named (local vLLM/SGLang servers).
- Retries on HTTP 408/409/429/5xx, connection errors, timeouts and unparseable response bodies,
  waiting a Retry-After header's time (seconds or HTTP date) when given, else an exponential
  backoff d = backoff_s * 2^attempt (capped at max_backoff_s) with jitter: a wait drawn from
  [d/2, d]. Other 4xx errors fail at once: retrying a bad request only costs money.
- `timeout_s` is the per-request socket timeout.
- With `cache_dir`, every successful raw response is stored on disk under the SHA-256 of
  (model, messages, params); a rerun with the same inputs makes no request at all. Identical
  requests in flight at once are sent once: the others wait and read its cache entry, so identical
  inputs (blank scanned pages, say) get one answer whatever the thread timing.
- `complete_many` runs requests on a thread pool (`concurrency` at a time) and keeps input order.
"""
from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import email.utils
import hashlib
import json
import mimetypes
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any, Iterable, Sequence

from data_tools import io_utils

_RETRY_STATUS = frozenset({408, 409, 429})


class ChatError(RuntimeError):
  """A request that failed for good (non-retryable status, or retries exhausted)."""


@dataclasses.dataclass
class ChatResult:
  """One chat completion. `text` is the first choice's message content; `raw` the full JSON."""
  text: str | None
  raw: dict[str, Any] | None
  cached: bool = False
  error: str | None = None

  @property
  def ok(self) -> bool:
    return self.error is None


def text_part(text: str) -> dict[str, Any]:
  return {"type": "text", "text": text}


def image_part(image: str | os.PathLike | bytes, mime: str | None = None) -> dict[str, Any]:
  """An image content part as a base64 data URL, from a file path or encoded bytes."""
  if isinstance(image, bytes):
    data = image
    mime = mime or _sniff_mime(data)
  else:
    data = Path(image).read_bytes()
    mime = mime or mimetypes.guess_type(str(image))[0] or _sniff_mime(data)
  url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
  return {"type": "image_url", "image_url": {"url": url}}


def _sniff_mime(data: bytes) -> str:
  if data.startswith(b"\x89PNG"):
    return "image/png"
  if data.startswith(b"\xff\xd8"):
    return "image/jpeg"
  if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
    return "image/webp"
  raise ValueError("cannot tell the image type from its bytes; pass mime=")


def _content(parts: str | Sequence[str | dict[str, Any]]) -> str | list[dict[str, Any]]:
  if isinstance(parts, str):
    return parts
  return [text_part(p) if isinstance(p, str) else p for p in parts]


def system_msg(parts: str | Sequence[str | dict[str, Any]]) -> dict[str, Any]:
  return {"role": "system", "content": _content(parts)}


def user_msg(parts: str | Sequence[str | dict[str, Any]]) -> dict[str, Any]:
  """A user turn; plain strings in `parts` become text parts, dicts are kept as given."""
  return {"role": "user", "content": _content(parts)}


def request_key(model: str, messages: Any, params: dict[str, Any]) -> str:
  """The cache key: SHA-256 of the canonical JSON of (model, messages, params)."""
  blob = json.dumps([model, messages, params], sort_keys=True, ensure_ascii=False,
                    separators=(",", ":"))
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class _Retryable(Exception):

  def __init__(self, reason: str, retry_after: float | None = None):
    super().__init__(reason)
    self.retry_after = retry_after


def _parse_retry_after(value: str | None) -> float | None:
  if not value:
    return None
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError):
    return None
  return max(0.0, when.timestamp() - time.time())


def _message_text(raw: dict[str, Any]) -> str:
  content = raw["choices"][0]["message"]["content"]
  if content is None:
    return ""
  if isinstance(content, list):  # some servers return content parts
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))
  return str(content)


class ChatClient:
  """Thread-safe chat-completions client with retries and an on-disk response cache."""

  def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None,
               cache_dir: str | os.PathLike | None = None, timeout_s: float = 120.0,
               max_retries: int = 6, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
               concurrency: int = 8, default_params: dict[str, Any] | None = None,
               seed: int | None = None):
    self.url = base_url.rstrip("/") + "/chat/completions"
    self.model = model
    self.timeout_s = timeout_s
    self.max_retries = max_retries
    self.backoff_s = backoff_s
    self.max_backoff_s = max_backoff_s
    self.concurrency = max(1, concurrency)
    self.default_params = dict(default_params or {})
    self.cache_dir = Path(cache_dir) if cache_dir is not None else None
    self._headers = {"Content-Type": "application/json"}
    if api_key_env:
      key = os.environ.get(api_key_env)
      if not key:
        raise ValueError(f"environment variable {api_key_env!r} (the API key) is not set")
      self._headers["Authorization"] = f"Bearer {key}"
    self._rng = random.Random(seed)
    self._lock = threading.Lock()
    self._in_flight: weakref.WeakValueDictionary[str, threading.Lock] = (
        weakref.WeakValueDictionary())
    self._stats = {"requests": 0, "cache_hits": 0, "retries": 0, "failures": 0}

  def stats(self) -> dict[str, int]:
    """Counters since construction: HTTP attempts, cache hits, retried attempts, final failures."""
    with self._lock:
      return dict(self._stats)

  def _count(self, name: str) -> None:
    with self._lock:
      self._stats[name] += 1

  def _cache_path(self, key: str) -> Path | None:
    return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

  def complete(self, messages: list[dict[str, Any]], **params: Any) -> ChatResult:
    """One chat completion (served from the cache when possible). Raises ChatError on failure."""
    params = {**self.default_params, **params}
    key = request_key(self.model, messages, params)
    path = self._cache_path(key)
    with contextlib.nullcontext() if path is None else self._one_at_a_time(key):
      if path is not None and path.exists():
        raw = json.loads(path.read_text(encoding="utf-8"))["response"]
        self._count("cache_hits")
        return ChatResult(text=_message_text(raw), raw=raw, cached=True)
      raw = self._post_with_retries({"model": self.model, "messages": messages, **params})
      if path is not None:
        record = {"key": key, "model": self.model, "params": params, "response": raw}
        io_utils.write_json_atomic(path, record)
    return ChatResult(text=_message_text(raw), raw=raw)

  def _one_at_a_time(self, key: str) -> threading.Lock:
    """`key`'s lock, shared by every caller that holds it or waits for it (a weak entry: it
    goes when they do)."""
    with self._lock:
      return self._in_flight.setdefault(key, threading.Lock())

  def complete_many(self, requests: Iterable[list[dict[str, Any]]], progress: str | None = None,
                    **params: Any) -> list[ChatResult]:
    """Many completions on a thread pool, results in input order; failures come back as
    ChatResult(error=...) instead of raising. `progress` is a tqdm description (None: no bar)."""
    requests = list(requests)

    def one(msgs):
      try:
        return self.complete(msgs, **params)
      except ChatError as e:
        return ChatResult(text=None, raw=None, error=str(e))

    with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
      results = pool.map(one, requests)
      if progress is not None:
        from tqdm import tqdm
        results = tqdm(results, total=len(requests), desc=progress)
      return list(results)

  def _post_with_retries(self, body: dict[str, Any]) -> dict[str, Any]:
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    for attempt in range(self.max_retries + 1):
      try:
        return self._post_once(data)
      except _Retryable as e:
        if attempt == self.max_retries:
          self._count("failures")
          raise ChatError(f"{self.url}: giving up after {attempt + 1} attempts; last error: {e}")
        self._count("retries")
        time.sleep(self._delay(attempt, e.retry_after))
    raise AssertionError("unreachable")

  def _delay(self, attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
      return min(retry_after, self.max_backoff_s)
    ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
    with self._lock:
      return self._rng.uniform(0.5 * ceiling, ceiling)

  def _post_once(self, data: bytes) -> dict[str, Any]:
    self._count("requests")
    req = urllib.request.Request(self.url, data=data, headers=self._headers, method="POST")
    try:
      with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
        body = resp.read()
    except urllib.error.HTTPError as e:
      detail = e.read()[:300].decode("utf-8", "replace")
      if e.code in _RETRY_STATUS or e.code >= 500:
        retry_after = _parse_retry_after(e.headers.get("Retry-After"))
        raise _Retryable(f"HTTP {e.code}: {detail}", retry_after)
      self._count("failures")
      raise ChatError(f"{self.url}: HTTP {e.code} (not retried): {detail}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
      raise _Retryable(f"{type(e).__name__}: {e}")
    try:
      raw = json.loads(body)
      _message_text(raw)
    except (ValueError, KeyError, IndexError, TypeError):
      raise _Retryable(f"unparseable response body: {body[:200]!r}")
    return raw
