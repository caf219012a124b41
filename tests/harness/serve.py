"""``make serve``: the API on ``http://127.0.0.1:<port>``, for trying it with curl, without Docker.

What ``sam local start-api`` does, on this machine's Python: each HTTP request becomes the API Gateway
REST proxy event the real handler gets (path and query parameters, headers, the body — base64 when it is
not text — and the stage ``v1`` in ``requestContext.path``), the handler runs with exactly its
template.yaml environment, and its answer is sent back. The API key is checked as API Gateway would
(``x-api-key``, except on ``POST /webhooks/tiktok``). Behind it: moto server and the TikTok emulator, and,
as Lambda's SQS event sources would, the lifecycle and download queues delivered to their functions
every half second — so a request added with ``POST /requests`` is followed to its archive.

Run ``make serve`` (``PORT=8080 make serve`` for a fixed port); it prints the URL, the API key, a user's
TikTok-shaped token and curl examples, and runs until interrupted.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.harness.functions import LambdaFunctions
from tests.harness.lambda_context import FakeLambdaContext
from tests.harness.local_stack import LocalStack, Resources, provision
from tests.harness.tokens import access_token, open_id, refresh_token
from tiktok_archive.handlers import api, lifecycle, sqs, webhook

STAGE = "v1"
API_KEY = "local-api-key-0123456789"
# The routes of template.yaml's REST API: (method, resource template) → function.
ROUTES = (
    ("POST", "/requests", "ApiFunction"),
    ("POST", "/downloads", "ApiFunction"),
    ("GET", "/downloads/{request_id}", "ApiFunction"),
    ("DELETE", "/downloads/{request_id}", "ApiFunction"),
    ("POST", "/webhooks/tiktok", "WebhookFunction"),
)
HANDLERS = {
    "ApiFunction": api.lambda_handler,
    "WebhookFunction": webhook.lambda_handler,
    "LifecycleFunction": lifecycle.lambda_handler,
    "WorkerFunction": sqs.lambda_handler,
}
QUEUES = (("LifecycleQueue", "LifecycleFunction"), ("DownloadQueue", "WorkerFunction"))


def _route(method: str, path: str) -> tuple[str, str, dict[str, str]] | None:
    """The resource template, the function and the path parameters of ``method path``, if any."""
    for route_method, resource, function in ROUTES:
        pattern = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", resource) + "$"
        match = re.match(pattern, path)
        if match and route_method == method:
            return resource, function, match.groupdict()
    return None


class LocalApi:
    """Turns HTTP requests into Lambda invocations of the template's functions, one at a time.

    Args:
        resources: what the template created locally.
        lambdas: the functions with their template environments.
    """

    def __init__(self, resources: Resources, lambdas: LambdaFunctions) -> None:
        self.resources = resources
        self.lambdas = lambdas
        # Handlers share module state (Powertools' resolver) and the process environment: one at a time.
        self.lock = threading.Lock()
        self._stop = threading.Event()

    def handle(
        self, method: str, target: str, headers: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one HTTP request: status, headers, body."""
        parts = urlsplit(target)
        prefix = f"/{STAGE}"
        path = parts.path[len(prefix) :] if parts.path.startswith(prefix + "/") else ""
        found = _route(method, path)
        if found is None:
            # API Gateway's own answer for a route it does not have.
            return 403, {"Content-Type": "application/json"}, b'{"message":"Missing Authentication Token"}'
        resource, function, path_parameters = found
        keys = {k.lower(): v for k, v in headers.items()}
        if function == "ApiFunction" and keys.get("x-api-key", [""])[-1] != API_KEY:
            return 403, {"Content-Type": "application/json"}, b'{"message":"Forbidden"}'
        event = self._event(method, path, parts.query, resource, path_parameters, headers, body)
        with self.lock, self.lambdas.running(function):
            answer = HANDLERS[function](event, FakeLambdaContext(function, 28_000))
        out_headers = {k: v[-1] for k, v in (answer.get("multiValueHeaders") or {}).items()}
        out_headers.update(answer.get("headers") or {})
        payload = answer.get("body") or ""
        data = base64.b64decode(payload) if answer.get("isBase64Encoded") else payload.encode()
        return int(answer["statusCode"]), out_headers, data

    @staticmethod
    def _event(
        method: str,
        path: str,
        query: str,
        resource: str,
        path_parameters: dict[str, str],
        headers: dict[str, list[str]],
        body: bytes,
    ) -> dict[str, Any]:
        try:
            text: str | None = body.decode() if body else None
            encoded = False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode(), True
        multi_query = parse_qs(query, keep_blank_values=True)
        return {
            "resource": resource,
            "path": path,
            "httpMethod": method,
            "headers": {k: v[-1] for k, v in headers.items()},
            "multiValueHeaders": headers,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
            "requestContext": {
                "resourcePath": resource,
                "httpMethod": method,
                "path": f"/{STAGE}{path}",
                "stage": STAGE,
                "requestId": str(uuid.uuid4()),
                "requestTimeEpoch": int(time.time() * 1000),
                "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent", [""])[-1]},
            },
            "body": text,
            "isBase64Encoded": encoded,
        }

    # -- the queues, delivered as Lambda's SQS event sources would -------------------------------------
    def deliver_forever(self, every: float = 0.5) -> None:
        while not self._stop.wait(every):
            for queue, function in QUEUES:
                with contextlib.suppress(Exception):  # a bad batch must not stop the loop; it is logged
                    self.deliver(queue, function)

    def deliver(self, queue: str, function: str) -> int:
        """Deliver ``queue``'s due messages to ``function``; returns how many."""
        client = self.resources.client("sqs")
        url = self.resources.local.ref(queue)
        messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return 0
        arn = self.resources.local.get_att(queue, "Arn")
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "eu-west-1",
            }
            for m in messages
        ]
        timeout_ms = self.resources.template.function_timeout(function) * 1000
        with self.lock, self.lambdas.running(function):
            result = HANDLERS[function]({"Records": records}, FakeLambdaContext(function, timeout_ms))
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for record in records:
            if record["messageId"] not in failed:
                client.delete_message(QueueUrl=url, ReceiptHandle=record["receiptHandle"])
        return len(records)

    def stop(self) -> None:
        self._stop.set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HttpFront

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """One line per request on stderr, like API Gateway's access log (no headers)."""
        sys.stderr.write(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else '?'}\n")

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name, []).append(value)
        status, out_headers, data = self.server.api.handle(self.command, self.path, headers, body)
        self.send_response(status)
        for name, value in out_headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any  # noqa: N815


class HttpFront(ThreadingHTTPServer):
    """The HTTP server in front of :class:`LocalApi`."""

    daemon_threads = True

    def __init__(self, api_: LocalApi, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.api = api_

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{STAGE}"


@contextlib.contextmanager
def serving(api_: LocalApi, port: int = 0, *, deliver: bool = True) -> Iterator[HttpFront]:
    """Serve ``api_`` (and deliver its queues) in background threads until the block ends."""
    front = HttpFront(api_, port)
    threads = [threading.Thread(target=front.serve_forever, daemon=True)]
    if deliver:
        threads.append(threading.Thread(target=api_.deliver_forever, daemon=True))
    for thread in threads:
        thread.start()
    try:
        yield front
    finally:
        api_.stop()
        front.shutdown()
        front.server_close()


def main() -> int:
    """Start everything, print how to use it, serve until interrupted."""
    started = time.monotonic()
    with LocalStack() as stack:
        resources = provision(stack.moto_url, "serve")
        lambdas = LambdaFunctions(
            resources.template,
            resources.local,
            {"StatusPollInitialSeconds": "5", "StatusPollMaxSeconds": "30", **stack.parameters()},
            stack.environment(),
        )
        user = stack.emulator.add_user(
            open_id(), access_token=access_token(), refresh_token=refresh_token(), prepare_seconds=20
        )
        ready = 7_234_567_890_123_456_789
        stack.emulator.register(ready, user["access_token"], size=8 * 1024 * 1024)
        local = LocalApi(resources, lambdas)
        with serving(local, int(os.environ.get("PORT", "0"))) as front:
            print(_usage(front.url, user, ready, time.monotonic() - started), flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                while not stop.wait(1):
                    pass
            except KeyboardInterrupt:
                pass
        lambdas.restore()
    return 0


def _usage(url: str, user: dict[str, Any], ready: int, took: float) -> str:
    token, refresh = user["access_token"], user["refresh_token"]
    return f"""
tiktok-archive is serving on {url} (started in {took:.1f} s; moto server and the TikTok emulator behind it).
Local only: the TikTok user below is the emulator's; TikTok prepares an added request in 20 s here.

export API_URL={url} API_KEY={API_KEY}
export TOKEN='{token}'
export REFRESH_TOKEN='{refresh}' OPEN_ID='{user["open_id"]}'

# add a data request and follow it (waiting → queued → completed, with a link)
curl -sS -i -X POST "$API_URL/requests" -H "x-api-key: $API_KEY" -H "Authorization: Bearer $TOKEN" \\
  -H "Content-Type: application/json" \\
  -d "{{\\"refresh_token\\": \\"$REFRESH_TOKEN\\", \\"open_id\\": \\"$OPEN_ID\\"}}"
curl -sS "$API_URL/downloads/<request_id>" -H "x-api-key: $API_KEY" -H "Authorization: Bearer $TOKEN"

# download a request TikTok already prepared
curl -sS -X POST "$API_URL/downloads" -H "x-api-key: $API_KEY" -H "Authorization: Bearer $TOKEN" \\
  -H "Content-Type: application/json" -d '{{"request_id": "{ready}"}}'

# cancel one
curl -sS -X DELETE "$API_URL/downloads/<request_id>" -H "x-api-key: $API_KEY" \\
  -H "Authorization: Bearer $TOKEN"

Ctrl-C stops it."""


if __name__ == "__main__":
    sys.exit(main())
