"""A scripted loopback OpenAI-compatible chat server for tests."""
from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any, Callable


def chat_body(text: str) -> dict[str, Any]:
  """A minimal chat-completions response carrying `text`."""
  return {"id": "x", "object": "chat.completion",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                       "finish_reason": "stop"}]}


class Reply:
  """One scripted reply: status, JSON body (or raw bytes), headers, and an optional delay."""

  def __init__(self, status: int = 200, body: Any = None, headers: dict[str, str] | None = None,
               delay_s: float = 0.0):
    self.status, self.body, self.headers, self.delay_s = status, body, headers or {}, delay_s


class ScriptedServer:
  """OpenAI-compatible chat server on 127.0.0.1:<free port>.

  `script(request_json, n)` returns the Reply for the n-th request (0-based). Every request body is
  kept in `requests`.
  """

  def __init__(self, script: Callable[[dict[str, Any], int], Reply]):
    self.script = script
    self.requests: list[dict[str, Any]] = []
    self._lock = threading.Lock()
    outer = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with outer._lock:
          n = len(outer.requests)
          outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                 "body": body})
        reply = outer.script(body, n)
        if reply.delay_s:
          time.sleep(reply.delay_s)
        data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
          self.send_response(reply.status)
          for k, v in reply.headers.items():
            self.send_header(k, v)
          self.send_header("Content-Type", "application/json")
          self.send_header("Content-Length", str(len(data)))
          self.end_headers()
          self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
          pass  # the client timed out and went away, as scripted

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.httpd.daemon_threads = True
    self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
    self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self._thread.start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()

