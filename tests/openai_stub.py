"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, run in a thread for tests and
benchmarks.

It is a test double for the transport and its failure modes (HTTP errors, 429 with Retry-After, hung
connections, slow or garbled replies), not a model: a test gives it a ``responder`` that decides each
reply from the request body. The client benchmark uses it as a server with a fixed service time.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# request body → (status, response body) or (status, response body, extra headers)
Responder = Callable[[dict[str, Any]], tuple[int, str] | tuple[int, str, dict[str, str]]]

POLL_S = 0.02  # how soon shutdown() is noticed
_PASSAGE = re.compile(r'Passage:\n"""\n(.*?)\n"""', re.DOTALL)


def chat_response(content: str | None, finish_reason: str = "stop") -> str:
    """A chat-completions response body carrying ``content``."""
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": finish_reason}
    return json.dumps({"id": "stub", "object": "chat.completion", "choices": [choice]})


def passage_of(body: dict[str, Any]) -> str:
    """The chunk text the backend put in its user message."""
    found = _PASSAGE.search(body["messages"][-1]["content"])
    if found is None:
        raise AssertionError("no passage in the request's user message")
    return found.group(1)


def sentence_pairs(body: dict[str, Any], n: int = 2) -> list[dict[str, str]]:
    """Pairs built from the passage's first sentences: deterministic, distinct per passage."""
    sentences = [
        s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(passage_of(body).split())) if s.strip()
    ]
    pairs = []
    for sentence in sentences[:n]:
        words = sentence.split()
        pairs.append(
            {"question": f"What is stated about {' '.join(words[:8])}?", "answer": " ".join(words[:40])}
        )
    return pairs


def json_pairs_responder(body: dict[str, Any]) -> tuple[int, str]:
    return 200, chat_response(json.dumps(sentence_pairs(body)))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a deliberately hung handler must not hold up shutdown


class StubServer:
    """``with StubServer(responder) as server:`` serves ``server.base_url``, records ``server.requests``."""

    def __init__(self, responder: Responder = json_pairs_responder) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests the server was handling at once
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(POLL_S,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def passages(self) -> list[str]:
        return [passage_of(r["body"]) for r in self.requests]

    def _record(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body, "at": time.monotonic()})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub._record(self.path, dict(self.headers), body)
                try:
                    reply = (
                        (404, "not found") if self.path != "/v1/chat/completions" else stub.responder(body)
                    )
                    status, text, headers = reply if len(reply) == 3 else (*reply, {})
                    payload = text.encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer
                finally:
                    stub._done()

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        return Handler
