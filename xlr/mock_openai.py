"""A loopback OpenAI-compatible Chat Completions server for tests and benchmarks of the API judge.

Speaks the ``/v1/chat/completions`` shape with ``logprobs.content[0].top_logprobs``. Each request is answered by the
next scripted mode (then ``default``): ``ok`` (labels' log-probs from a hash of the prompt, so answers are stable),
``429``, ``500``, ``401``, ``sleep`` (longer than a client timeout), ``malformed`` (invalid JSON), ``nologprobs``,
``missing_M`` (only ``m`` among the top log-probs), ``nolabels`` (neither label). It counts requests and the peak
number in flight, and keeps no request bodies or headers (so no key can leak through it).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def label_logprobs(prompt: str) -> tuple[float, float]:
    """Deterministic (logprob m, logprob M) for a prompt: P(m) from its hash, in (0.02, 0.98)."""
    u = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "little") / 2**32
    import math

    p = 0.02 + 0.96 * u
    return math.log(p), math.log(1 - p)


class MockServer:
    def __init__(self, default: str = "ok", latency_s: float = 0.0, sleep_s: float = 5.0):
        self.default, self.latency_s, self.sleep_s = default, latency_s, sleep_s
        self.script: deque[str] = deque()
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.modes_served: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                    mode = server.script.popleft() if server.script else server.default
                    server.modes_served.append(mode)
                try:
                    server._answer(self, mode, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> MockServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        try:
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _answer(self, h: BaseHTTPRequestHandler, mode: str, body: dict[str, Any]) -> None:
        if self.latency_s:
            time.sleep(self.latency_s)
        if mode == "429":
            return self._send(h, 429, b'{"error": {"message": "rate limited", "type": "rate_limit"}}', {"retry-after-ms": "10"})
        if mode == "500":
            return self._send(h, 500, b'{"error": {"message": "server error"}}', {"retry-after-ms": "10"})
        if mode == "401":
            return self._send(h, 401, b'{"error": {"message": "invalid api key", "type": "invalid_request_error"}}')
        if mode == "sleep":
            time.sleep(self.sleep_s)
            return self._send(h, 504, b"{}")
        if mode == "malformed":
            return self._send(h, 200, b'{"id": "x", "choices": [ {"message": ')
        prompt = "\n".join(m.get("content", "") for m in body.get("messages", []))
        lm, lM = label_logprobs(prompt)
        top = [
            {"token": "m", "logprob": lm, "bytes": [109]},
            {"token": "M", "logprob": lM, "bytes": [77]},
            {"token": "Both", "logprob": -15.0, "bytes": None},
        ]
        if mode == "missing_M":
            top = [t for t in top if t["token"] != "M"]
        if mode == "nolabels":
            top = [t for t in top if t["token"] not in ("m", "M")]
        best = max(top, key=lambda t: t["logprob"])
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": best["token"]}}
        if mode != "nologprobs":
            choice["logprobs"] = {"content": [{"token": best["token"], "logprob": best["logprob"], "bytes": None, "top_logprobs": top}]}
        else:
            choice["logprobs"] = None
        n_in = sum(len(m.get("content", "")) for m in body.get("messages", [])) // 4
        reply = {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "mock"),
            "choices": [choice],
            "usage": {"prompt_tokens": n_in, "completion_tokens": 1, "total_tokens": n_in + 1},
        }
        return self._send(h, 200, json.dumps(reply).encode())
