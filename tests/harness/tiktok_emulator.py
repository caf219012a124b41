"""A local emulator of TikTok's Data Portability download endpoint, including its failures.

Run it with ``python -m tests.harness.tiktok_emulator [--port N]``; it prints ``listening on
http://127.0.0.1:N`` once ready. What it serves is set over HTTP, so tests and the demo drive it the
same way whether it runs in a thread or in its own process:

- ``PUT /_emulator/requests/{request_id}`` with ``{"token", "size", "transfer": "chunked"|"length",
  "chunk_size", "bytes_per_second", "scopes", "ranges": "ignore"|"honour", "fault", "fault_times"}``
  registers a ready archive for one user's token and answers ``{"size_bytes", "sha256", "entries"}``.
- ``GET /_emulator/requests/{request_id}`` answers ``{"downloads": <calls to the download endpoint>,
  "calls": [{"at": <Unix time>, "range": <Range header or null>, "fault": <kind or null>}],
  "last_body_sent_at": <Unix time the last complete archive body was sent, or null>}``.
- ``POST /_emulator/reset`` forgets everything.

``POST /v2/user/data/check/`` answers ``{"data": {"request_id", "status"}}`` (the registration's
``status``, ``downloading`` by default) to the request's owner only: another known token gets
``invalid_params``, an unknown one ``access_token_invalid``. ``GET`` of a registration counts these
``checks`` too.

``POST /v2/user/data/download/`` behaves like the documented endpoint: it checks the bearer token, the
JSON body and its int64 ``request_id``, and answers the zip (chunked, or with Content-Length) or
TikTok's JSON error. TikTok documents no Range support, so by default a ``Range`` header is ignored
(200 and the whole archive); with ``"ranges": "honour"`` a ``Range: bytes=N-`` is answered 206 with
``Content-Range: bytes N-last/size`` and the rest of the archive. A registered ``fault`` replaces the
answer for the first ``fault_times`` calls (all calls when omitted):

- ``{"kind": "error", "status": 429, "code": "rate_limit_exceeded", "retry_after": "7"}``: a JSON error
  with any status, 200 included.
- ``{"kind": "html", "status": 502}``: an HTML error page.
- ``{"kind": "not_zip"}`` / ``{"kind": "empty"}``: 200 with bytes that are not an archive, or none.
- ``{"kind": "reset", "after_bytes": N}``: the archive up to byte N, then a TCP reset.
- ``{"kind": "truncate", "after_bytes": N}``: the archive up to byte N, then a clean close before
  the end.
- ``{"kind": "stall", "after_bytes": N, "seconds": S}``: the archive up to byte N, then silence for S
  seconds. (A ranged answer starting beyond byte N fails at once.)
- ``{"kind": "drop"}``: the request is read, then the connection reset before any answer.
- ``{"kind": "no_central_directory"}``: a complete, well-framed 200 body holding the archive without
  its central directory and end record — a zip that was cut, served as if whole.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness.archives import build_archive

DOWNLOAD_PATH = "/v2/user/data/download/"
CHECK_PATH = "/v2/user/data/check/"
_CONTROL = re.compile(r"/_emulator/requests/([0-9]+)")
_INT64_MAX = 2**63 - 1
_RANGE = re.compile(r"bytes=([0-9]+)-")


@dataclass
class Registration:
    """One ready archive and how to serve it."""

    token: str
    data: bytes
    transfer: str = "chunked"
    chunk_size: int = 64 * 1024
    scopes: tuple[str, ...] = ("portability.all.single",)
    fault: dict[str, Any] | None = None
    fault_times: int | None = None
    bytes_per_second: float | None = None
    ranges: str = "ignore"
    status: str = "downloading"
    downloads: int = 0
    checks: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    last_body_sent_at: float | None = None


@dataclass
class State:
    """Everything the emulator knows, shared by its request threads."""

    requests: dict[int, Registration] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    log_counter: int = 0

    def next_log_id(self) -> str:
        with self.lock:
            self.log_counter += 1
            counter = self.log_counter
        return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + f"{counter:020X}"


class EmulatorHandler(BaseHTTPRequestHandler):
    """Serves the download endpoint and the control endpoints."""

    protocol_version = "HTTP/1.1"
    server: EmulatorServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: tests read their own output."""

    # -- control plane -------------------------------------------------------------------------
    def do_PUT(self) -> None:
        match = _CONTROL.fullmatch(self.path)
        if not match:
            self._send_json(404, {"error": "unknown control path"})
            return
        spec = json.loads(self._read_body() or b"{}")
        request_id = int(match.group(1))
        archive = build_archive(request_id, int(spec.get("size", 64 * 1024)))
        registration = Registration(
            token=spec["token"],
            data=archive.data,
            transfer=spec.get("transfer", "chunked"),
            chunk_size=int(spec.get("chunk_size", 64 * 1024)),
            scopes=tuple(spec.get("scopes", ("portability.all.single",))),
            fault=spec.get("fault"),
            fault_times=spec.get("fault_times"),
            bytes_per_second=spec.get("bytes_per_second"),
            ranges=spec.get("ranges", "ignore"),
            status=spec.get("status", "downloading"),
        )
        with self.server.state.lock:
            self.server.state.requests[request_id] = registration
        self._send_json(
            200,
            {
                "size_bytes": len(archive.data),
                "sha256": hashlib.sha256(archive.data).hexdigest(),
                "entries": list(archive.entries),
            },
        )

    def do_GET(self) -> None:
        match = _CONTROL.fullmatch(self.path)
        if self.path == "/_emulator/health":
            self._send_json(200, {"ok": True})
            return
        registration = self.server.state.requests.get(int(match.group(1))) if match else None
        if registration is None:
            self._send_json(404, {"error": "not registered"})
            return
        with self.server.state.lock:
            document = {
                "downloads": registration.downloads,
                "checks": registration.checks,
                "calls": list(registration.calls),
                "last_body_sent_at": registration.last_body_sent_at,
            }
        self._send_json(200, document)

    # -- the API ---------------------------------------------------------------------------------
    def do_POST(self) -> None:
        if self.path == "/_emulator/reset":
            with self.server.state.lock:
                self.server.state.requests.clear()
            self._send_json(200, {"ok": True})
            return
        body = self._read_body()
        endpoint = self.path.split("?")[0]
        if endpoint not in (DOWNLOAD_PATH, CHECK_PATH):
            self._send_tiktok_error(404, "invalid_params", "Unknown endpoint.")
            return
        token = self._bearer_token()
        if token is None:
            self._send_tiktok_error(
                401, "access_token_invalid", "The access token is invalid or not found in the request."
            )
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            self._send_tiktok_error(400, "invalid_params", "Content-Type must be application/json.")
            return
        request_id = _request_id(body)
        if request_id is None:
            self._send_tiktok_error(
                400, "invalid_params", "Incorrect `request_id`. Please validate the request."
            )
            return
        if endpoint == CHECK_PATH:
            self._check(token, request_id)
            return
        state = self.server.state
        with state.lock:
            registration = state.requests.get(request_id)
            owners = {r.token for r in state.requests.values()}
            if registration is not None:
                registration.downloads += 1
                fault = registration.fault
                if fault is not None and registration.fault_times is not None:
                    if registration.fault_times <= 0:
                        fault = None
                    else:
                        registration.fault_times -= 1
                registration.calls.append(
                    {
                        "at": time.time(),
                        "range": self.headers.get("Range"),
                        "fault": (fault or {}).get("kind"),
                    }
                )
        if not self._owned(registration, token, owners):
            return
        assert registration is not None
        if not any(scope.startswith("portability.") for scope in registration.scopes):
            self._send_tiktok_error(
                401,
                "scope_not_authorized",
                "The user did not authorize the scope required for completing this request.",
            )
            return
        self._serve(registration, fault)

    def _owned(self, registration: Registration | None, token: str, owners: set[str]) -> bool:
        """Whether ``token`` owns the request; answers TikTok's error when it does not."""
        if token not in owners:
            self._send_tiktok_error(
                401, "access_token_invalid", "The access token is invalid or not found in the request."
            )
            return False
        if registration is None or registration.token != token:
            self._send_tiktok_error(
                400, "invalid_params", "Incorrect `request_id`. Please validate the request."
            )
            return False
        return True

    def _check(self, token: str, request_id: int) -> None:
        """Check Status: only the request's owner learns its status; anyone else gets invalid_params."""
        state = self.server.state
        with state.lock:
            registration = state.requests.get(request_id)
            owners = {r.token for r in state.requests.values()}
            if registration is not None:
                registration.checks += 1
        if not self._owned(registration, token, owners):
            return
        assert registration is not None
        log_id = state.next_log_id()
        document = {
            "data": {"request_id": request_id, "status": registration.status},
            "error": {"code": "ok", "message": "", "log_id": log_id},
        }
        self._send(200, json.dumps(document).encode(), "application/json", {"X-Tt-Logid": log_id})

    def _serve(self, registration: Registration, fault: dict[str, Any] | None) -> None:
        kind = (fault or {}).get("kind")
        if kind == "error":
            assert fault is not None
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
            self._send_tiktok_error(
                int(fault.get("status", 400)),
                fault["code"],
                fault.get("message", "Emulated failure."),
                headers,
            )
        elif kind == "html":
            assert fault is not None
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            self._send(int(fault.get("status", 502)), page, "text/html")
        elif kind == "not_zip":
            self._send(200, b"this is not a zip archive, just some bytes\n" * 20, "application/octet-stream")
        elif kind == "empty":
            self._send(200, b"", "application/zip")
        elif kind == "drop":
            self._reset()
        elif kind == "no_central_directory":
            data = registration.data
            self._send(
                200, data[: data.rindex(b"PK\x01\x02", 0, data.rindex(b"PK\x05\x06"))], "application/zip"
            )
        else:
            self._stream_archive(registration, fault)

    def _reset(self) -> None:
        """Close the connection with a TCP reset (RST), not a clean FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _stream_archive(self, registration: Registration, fault: dict[str, Any] | None) -> None:
        data = memoryview(registration.data)
        total = len(data)
        status, first = 200, 0
        wanted = _RANGE.fullmatch((self.headers.get("Range") or "").strip())
        if wanted and registration.ranges == "honour":
            first = int(wanted.group(1))
            if first >= total:
                self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{total}"})
                return
            status, data = 206, data[first:]
        kind = (fault or {}).get("kind")
        # A fault's cut point is a byte of the archive: a resumed answer past it breaks at once.
        stop_at = int(fault.get("after_bytes", 0)) - first if fault and kind else len(data)
        stop_at = max(0, min(stop_at, len(data)))
        chunked = registration.transfer == "chunked"
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("X-Tt-Logid", self.server.state.next_log_id())
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{total - 1}/{total}")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        step = registration.chunk_size
        started = time.monotonic()
        try:
            for offset in range(0, stop_at, step):
                piece = data[offset : min(offset + step, stop_at)]
                if chunked:
                    self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
                if registration.bytes_per_second:
                    # Pace the stream like a slow network: never ahead of the configured rate.
                    due = started + (offset + len(piece)) / registration.bytes_per_second
                    time.sleep(max(0.0, due - time.monotonic()))
            if kind == "reset":
                self._reset()
            elif kind == "stall":
                assert fault is not None
                time.sleep(float(fault.get("seconds", 60)))
            elif kind != "truncate" and chunked:
                self.wfile.write(b"0\r\n\r\n")
            if not kind:
                registration.last_body_sent_at = time.time()
        except (BrokenPipeError, ConnectionResetError):
            pass
        if kind:
            self.close_connection = True

    # -- helpers ---------------------------------------------------------------------------------
    def _bearer_token(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_tiktok_error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        log_id = self.server.state.next_log_id()
        document = {
            "data": {},
            "error": {"code": code, "http_status_code": status, "log_id": log_id, "message": message},
        }
        self._send(
            status,
            json.dumps(document).encode(),
            "application/json",
            {"X-Tt-Logid": log_id, **(headers or {})},
        )

    def _send_json(self, status: int, document: dict[str, Any]) -> None:
        self._send(status, json.dumps(document).encode(), "application/json")

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _request_id(body: bytes) -> int | None:
    """The body's ``request_id`` if it is a JSON integer in int64 range, exactly as TikTok wants it."""
    try:
        document = json.loads(body, parse_float=lambda _: None, parse_constant=lambda _: None)
    except (ValueError, UnicodeDecodeError):
        return None
    value = document.get("request_id") if isinstance(document, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _INT64_MAX:
        return None
    return value


class EmulatorServer(ThreadingHTTPServer):
    """The emulator's HTTP server; ``state`` holds the registered archives."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), EmulatorHandler)
        self.state = State()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (as the function does when it abandons a stream) is not an error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> None:
    """Run the emulator until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    server = EmulatorServer(args.port)
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
