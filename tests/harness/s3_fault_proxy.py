"""An HTTP proxy in front of moto server that makes chosen AWS calls fail or stall, over real HTTP.

Point ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``, for every service) at it; every request is
forwarded to moto unchanged except those that match ``fail_when``, which are answered with an S3 error
document instead, and those that match ``stall_when``, which are held (see :class:`Stall`). ``seen``
records when each request arrived, so tests can order calls against other events. JSON-protocol
services (DynamoDB, EventBridge, KMS, SQS) are told apart by their ``X-Amz-Target`` header, which
``stall_when`` receives.
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


@dataclass(frozen=True)
class Stall:
    """How to hold a request: ``seconds`` before forwarding it (a slow server that has not acted yet),
    or — ``answer_late`` — forward it at once and hold the answer (a server that acted but answers
    late), or — ``swallow`` — hold it and never forward it (the connection is closed after)."""

    seconds: float
    answer_late: bool = False
    swallow: bool = False


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: S3FaultProxy

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((time.time(), self.command, self.path))
        stall = self.server.stall_when(self.command, self.path, self.headers.get("X-Amz-Target") or "")
        if stall is not None and not stall.answer_late:
            time.sleep(stall.seconds)
            if stall.swallow:
                self.close_connection = True
                return
        failure = self.server.failure_for(self.command, self.path)
        if failure is not None:
            status, code = failure
            document = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>injected</Message></Error>"
            self._answer(status, {"Content-Type": "application/xml"}, document.encode())
            return
        upstream = http.client.HTTPConnection(self.server.target_host, self.server.target_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            if stall is not None and stall.answer_late:
                time.sleep(stall.seconds)
            answer_headers = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            self._answer(response.status, answer_headers, data)
        finally:
            upstream.close()

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        if self.command == "HEAD":
            # A HEAD answer has no body but tells the length of the object's.
            self.send_header(
                "Content-Length", headers.get("Content-Length") or headers.get("content-length") or "0"
            )
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815 - http.server names


class S3FaultProxy(ThreadingHTTPServer):
    """The proxy; ``fail_when(method, path)`` returns ``(status, S3 error code)`` to fail a call."""

    daemon_threads = True

    def __init__(
        self,
        target_url: str,
        fail_when: Callable[[str, str], tuple[int, str] | None] = lambda *_: None,
        stall_when: Callable[[str, str, str], Stall | None] = lambda *_: None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        target = urlsplit(target_url)
        self.target_host = target.hostname or "127.0.0.1"
        self.target_port = target.port or 80
        self._fail_when = fail_when
        self.stall_when = stall_when
        self._lock = threading.Lock()
        self.failed: list[str] = []
        self.seen: list[tuple[float, str, str]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def failure_for(self, method: str, path: str) -> tuple[int, str] | None:
        failure = self._fail_when(method, path)
        if failure is not None:
            with self._lock:
                self.failed.append(f"{method} {path}")
        return failure

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up on a held request is what a stall is for, not an error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> S3FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
