"""An OpenAI-compatible chat endpoint on loopback that replies from a script."""
import http.server
import json
import re
import threading


class ScriptedJudge:
  """Replies by the student answer of the judged case: `replies[answer]` is the reply text, or an
  int HTTP status to fail with. Records every request body it receives."""

  def __init__(self, replies: dict):
    self.replies = replies
    self.requests: list[dict] = []
    script = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        script.requests.append(body)
        prompt = body["messages"][-1]["content"]
        answer = re.findall(r"\[Student Answer\]: (.*)", prompt)[-1]
        reply = script.replies[answer]
        if isinstance(reply, int):
          self.send_response(reply)
          self.end_headers()
          return
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())

      def log_message(self, *args):
        pass

    self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

  def __enter__(self):
    threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
    return self

  def __exit__(self, *exc):
    self.server.shutdown()
    self.server.server_close()
