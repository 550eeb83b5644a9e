"""A scripted OpenAI-compatible chat server on 127.0.0.1, for the litellm path.

Each test queues the answers it wants (`reply`, `reply_tool_call`, `error`,
`hang`; a reply may come late, `delay_s`, or be cut at the token limit,
`finish_reason="length"`) and reads back what was asked (`requests`). It is a real HTTP server in
a thread, so litellm and the OpenAI client run exactly as they would against
vLLM or llama.cpp.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "openai/scripted"

COUNT_QUERY = "Count the words in: one two three"
"""A query, and (`COUNT_PLAN`) a plan the tests script the model to answer it with."""
COUNT_PLAN: dict[str, Any] = {
    "strategy": "Count the words.",
    "steps": [
        {
            "id": "s1",
            "server": "text",
            "tool": "word_count",
            "description": "Count them",
            "arguments": {"text": "one two three"},
            "depends_on": [],
        }
    ],
}


@dataclass(frozen=True)
class _Scripted:
    status: int
    body: dict[str, Any]
    hang: bool = False
    delay_s: float = 0.0


class FakeOpenAI:
    """The server; use as a context manager (see the `fake_openai` fixture)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.unexpected: list[str] = []
        self._queue: deque[_Scripted] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The `api_base` to give litellm."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- scripting

    def reply(
        self, content: str | dict[str, Any], *, finish_reason: str = "stop", delay_s: float = 0.0
    ) -> None:
        """Queue a chat completion whose message content is `content` (dicts as JSON).

        Args:
            content: The answer's text, or a dict sent as JSON.
            finish_reason: `length` for an answer cut at the token limit.
            delay_s: Seconds to wait before answering (a slow model).
        """
        text = content if isinstance(content, str) else json.dumps(content)
        message = {"role": "assistant", "content": text}
        self._push(200, _completion(message, finish_reason), delay_s=delay_s)

    def reply_tool_call(self, arguments: dict[str, Any], name: str = "submit_plan") -> None:
        """Queue a completion that calls the function `name` with `arguments`."""
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
            ],
        }
        self._push(200, _completion(message, "tool_calls"))

    def error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        """Queue an HTTP error with an OpenAI-style error body."""
        self._push(status, {"error": {"message": message, "type": kind, "code": None}})

    def hang(self) -> None:
        """Queue a request that gets no answer until the server closes."""
        self._queue.append(_Scripted(200, {}, hang=True))

    def _push(self, status: int, body: dict[str, Any], *, delay_s: float = 0.0) -> None:
        with self._lock:
            self._queue.append(_Scripted(status, body, delay_s=delay_s))

    # -- serving

    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> _Scripted:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            if self._queue:
                return self._queue.popleft()
        self.unexpected.append("a request arrived with no scripted answer left")
        return _Scripted(500, {"error": {"message": "no scripted answer left", "type": "test"}})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if not self.path.endswith("/chat/completions"):
                    fake.unexpected.append(f"POST to {self.path}")
                    self._send(404, {"error": {"message": "not found"}})
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                scripted = fake._next(json.loads(raw), headers)
                if scripted.hang:
                    fake._release.wait(timeout=60)
                    return
                if scripted.delay_s and fake._release.wait(timeout=scripted.delay_s):
                    return  # the server is closing
                self._send(scripted.status, scripted.body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test): nothing to answer

        return Handler


def _completion(message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 123, "completion_tokens": 45, "total_tokens": 168},
    }
