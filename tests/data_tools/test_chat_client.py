"""ChatClient against a scripted loopback server: retries, Retry-After, timeouts, cache, errors."""
from __future__ import annotations

import pytest

from data_tools import chat_client as cc
from dt_chat_server import Reply, chat_body


def _client(server, tmp_path, **kw):
  kw.setdefault("backoff_s", 0.01)
  kw.setdefault("max_backoff_s", 0.05)
  return cc.ChatClient(server.base_url, "test-model", cache_dir=tmp_path / "cache", seed=0, **kw)


def test_retries_on_429_500_and_bad_body_then_caches(serve, tmp_path):
  replies = [Reply(429, {"error": "slow down"}, {"Retry-After": "0.01"}), Reply(500, {"e": 1}),
             Reply(200, b"not json"), Reply(200, chat_body("hello"))]
  server = serve(lambda body, n: replies[n] if n < len(replies) else Reply(200, chat_body("other")))
  client = _client(server, tmp_path)
  msgs = [cc.system_msg("sys"), cc.user_msg(["look:", cc.image_part(b"\x89PNG....")])]
  res = client.complete(msgs, temperature=0.0)
  assert res.ok and res.text == "hello" and not res.cached
  assert res.raw["choices"][0]["message"]["content"] == "hello"
  assert client.stats() == {"requests": 4, "cache_hits": 0, "retries": 3, "failures": 0}
  sent = server.requests[-1]["body"]
  assert sent["model"] == "test-model" and sent["temperature"] == 0.0
  assert sent["messages"][1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
  assert server.requests[-1]["path"] == "/v1/chat/completions"

  # A second client (a rerun) with the same inputs is served from disk: zero requests.
  again = _client(server, tmp_path)
  res2 = again.complete(msgs, temperature=0.0)
  assert res2.cached and res2.text == "hello" and res2.raw == res.raw
  assert len(server.requests) == 4 and again.stats()["cache_hits"] == 1
  # Different params are a different request.
  again.complete(msgs, temperature=0.5)
  assert len(server.requests) == 5


def test_timeout_is_retried(serve, tmp_path):
  server = serve(lambda body, n: Reply(200, chat_body("late"), delay_s=1.0 if n == 0 else 0.0))
  client = _client(server, tmp_path, timeout_s=0.2)
  assert client.complete([cc.user_msg("hi")]).text == "late"
  assert client.stats()["retries"] == 1


def test_gives_up_after_max_retries_and_batch_keeps_order(serve, tmp_path):
  def script(body, n):
    q = body["messages"][0]["content"]
    return Reply(503, {"e": "down"}) if q == "bad" else Reply(200, chat_body(q.upper()))

  server = serve(script)
  client = _client(server, tmp_path, max_retries=2, concurrency=3)
  with pytest.raises(cc.ChatError, match="giving up after 3 attempts"):
    client.complete([cc.user_msg("bad")])
  out = client.complete_many([[cc.user_msg(q)] for q in ["a", "bad", "c", "d"]])
  assert [r.text for r in out] == ["A", None, "C", "D"]
  assert not out[1].ok and "HTTP 503" in out[1].error
  assert client.stats()["failures"] == 2


def test_identical_requests_in_flight_are_sent_once(serve, tmp_path):
  server = serve(lambda body, n: Reply(200, chat_body(body["messages"][0]["content"] + f"#{n}"),
                                       delay_s=0.3))
  client = _client(server, tmp_path, concurrency=6)
  out = client.complete_many([[cc.user_msg(q)] for q in ["a", "b", "a", "a", "b", "a"]])
  # One answer per distinct request, shared by its copies, whichever copy was sent.
  texts = [r.text for r in out]
  assert len(server.requests) == 2 and len(set(texts)) == 2
  assert texts[0] == texts[2] == texts[3] == texts[5] and texts[1] == texts[4]
  assert client.stats()["cache_hits"] == 4 and not client._in_flight


def test_client_errors_fail_fast_and_key_comes_from_env(serve, tmp_path, monkeypatch):
  server = serve(lambda body, n: Reply(401, {"error": "bad key"}))
  monkeypatch.setenv("TEST_CHAT_KEY", "sekrit")
  client = _client(server, tmp_path, api_key_env="TEST_CHAT_KEY")
  with pytest.raises(cc.ChatError, match="HTTP 401"):
    client.complete([cc.user_msg("hi")])
  assert len(server.requests) == 1 and server.requests[0]["auth"] == "Bearer sekrit"
  monkeypatch.delenv("TEST_CHAT_KEY")
  with pytest.raises(ValueError, match="TEST_CHAT_KEY"):
    _client(server, tmp_path, api_key_env="TEST_CHAT_KEY")


def test_request_key_is_canonical():
  a = cc.request_key("m", [{"role": "user", "content": "x"}], {"a": 1, "b": 2})
  b = cc.request_key("m", [{"content": "x", "role": "user"}], {"b": 2, "a": 1})
  assert a == b and a != cc.request_key("m2", [{"role": "user", "content": "x"}], {"a": 1, "b": 2})
