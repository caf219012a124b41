"""``make serve``: the API on ``http://127.0.0.1:<port>``, for trying it with curl, without Docker.

What ``sam local start-api`` does, on this machine's Python, with API Gateway's own checks in front
(:mod:`tests.harness.gateway`): the routes and their authorization are read from the SAM-expanded
template; a backend route's request must carry a SigV4 ``Authorization`` header (service
``execute-api``, region ``eu-west-1``) signed with one of the local credentials printed at start — two
callers, the backend and another principal of the account, each an access key id and secret standing for
an assumed role's session; the API's resource policy (template.yaml's, for the ``CallerRoleArns`` given)
judges the caller; ``POST /webhooks/tiktok`` is open. Each admitted request becomes the API Gateway REST
proxy event the real handler gets (path and query parameters, headers, the body — base64 when it is not
text —, the stage ``v1`` and the caller's identity in ``requestContext``), the handler runs with exactly
its template.yaml environment, and its answer is sent back. Behind it: moto server and the TikTok
emulator, and, as Lambda's SQS event sources would, the lifecycle and download queues delivered to their
functions every half second — so a request added with ``POST /requests`` is followed to its archive.

Run ``make serve`` (``PORT=8080 make serve`` for a fixed port); it prints the URL, the two callers'
credentials, a user's TikTok-shaped tokens, ``curl --aws-sigv4`` lines and a Python snippet signing with
botocore's ``SigV4Auth``, and runs until interrupted.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.harness.functions import LambdaFunctions
from tests.harness.gateway import (
    MISSING_AUTHENTICATION_TOKEN,
    Gateway,
    GatewayAnswer,
    LocalCredential,
    SigV4Verifier,
)
from tests.harness.local_stack import REGION, Emulator, LocalStack, Resources, provision
from tests.harness.sqs_pump import SqsPump
from tests.harness.tokens import access_token, open_id, refresh_token

# The two callers the local credentials stand for: the backend, and another principal of the account
# that may call the API too (it sees none of the backend's records).
BACKEND_ARN = "arn:aws:sts::123456789012:assumed-role/tiktok-archive-backend/local-backend"
OTHER_ARN = "arn:aws:sts::123456789012:assumed-role/another-backend/local-other"
BACKEND_KEY_ID = "AKIALOCALBACKEND0001"
OTHER_KEY_ID = "AKIALOCALOTHER000002"
Answer = tuple[int, dict[str, str], bytes]


def local_credentials() -> tuple[LocalCredential, LocalCredential]:
    """The backend's and the other caller's credentials, with secrets fresh for this run."""
    return (
        LocalCredential(BACKEND_KEY_ID, secrets.token_urlsafe(30), BACKEND_ARN),
        LocalCredential(OTHER_KEY_ID, secrets.token_urlsafe(30), OTHER_ARN),
    )


def _gateway_answer(answer: GatewayAnswer) -> Answer:
    return answer.status, answer.headers, answer.data


class LocalApi:
    """Turns HTTP requests into Lambda invocations of the template's functions, one at a time, after
    API Gateway's checks: the route, the SigV4 signature, the resource policy.

    Args:
        resources: what the template created locally.
        lambdas: the functions with their template environments (and the template parameters, which
            shape the resource policy: ``CallerRoleArns``).
        credentials: the local access keys (:func:`local_credentials` when None).
    """

    def __init__(
        self,
        resources: Resources,
        lambdas: LambdaFunctions,
        credentials: Sequence[LocalCredential] | None = None,
    ) -> None:
        self.resources = resources
        self.lambdas = lambdas
        self.credentials = tuple(credentials or local_credentials())
        self.gateway = Gateway(resources.template, lambdas.parameters, resources.local)
        self.verifier = SigV4Verifier(self.credentials, region=REGION)
        # Handlers share module state (Powertools' resolver) and the process environment: one at a time.
        self.lock = threading.Lock()
        self.pump = SqsPump(resources, lambdas, lock=self.lock)
        self._stop = threading.Event()

    def handle(self, method: str, target: str, headers: Mapping[str, Sequence[str]], body: bytes) -> Answer:
        """Answer one HTTP request (``target``: the request line's path and query, as sent): status,
        headers, body."""
        parts = urlsplit(target)
        prefix = f"/{self.gateway.stage}"
        path = parts.path[len(prefix) :] if parts.path.startswith(prefix + "/") else ""
        found = self.gateway.route(method, path)
        if found is None:
            return _gateway_answer(MISSING_AUTHENTICATION_TOKEN)
        route, _ = found
        caller = key_id = None
        if route.authorization == "AWS_IAM":
            verified = self.verifier.verify(method, target, headers, body)
            if isinstance(verified, GatewayAnswer):
                return _gateway_answer(verified)
            caller, key_id = verified.arn, verified.access_key_id
        refused = self.gateway.authorize(method, path, caller)
        if refused is not None:
            return _gateway_answer(refused)
        event = self.gateway.event(
            method, path, query=parts.query, headers=headers, body=body, caller=caller, access_key=key_id
        )
        with self.lock:
            answer = self.lambdas.invoke(route.function, event)
        out_headers = {k: v[-1] for k, v in (answer.get("multiValueHeaders") or {}).items()}
        out_headers.update(answer.get("headers") or {})
        payload = answer.get("body") or ""
        data = base64.b64decode(payload) if answer.get("isBase64Encoded") else payload.encode()
        return int(answer["statusCode"]), out_headers, data

    # -- the queues, delivered as Lambda's SQS event sources would -------------------------------------
    def deliver_forever(self, every: float = 0.5) -> None:
        self.pump.deliver_forever(self._stop, every)

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
        return f"http://127.0.0.1:{self.server_address[1]}/{self.api.gateway.stage}"


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
        for thread in threads:  # a delivery under way finishes before the block ends
            thread.join(timeout=120)


# Template parameters `make serve` runs with: status checks 5 s after a request, then up to 30 s apart.
SERVE_PARAMETERS = {"StatusPollInitialSeconds": "5", "StatusPollMaxSeconds": "30"}
# The request TikTok already prepared for the local user (``READY_REQUEST_ID`` in ``ENV_FILE``).
READY_REQUEST_ID = 7_234_567_890_123_456_789


def local_user(emulator: Emulator) -> dict[str, Any]:
    """The TikTok user ``make serve`` prints: fresh tokens, a request prepared 20 s after it is added,
    and an 8 MiB archive already prepared as ``READY_REQUEST_ID``."""
    user = emulator.add_user(
        open_id(), access_token=access_token(), refresh_token=refresh_token(), prepare_seconds=20
    )
    emulator.register(READY_REQUEST_ID, user["access_token"], size=8 * 1024 * 1024)
    return user


def main() -> int:
    """Start everything, print how to use it, serve until interrupted."""
    started = time.monotonic()
    with LocalStack() as stack:
        resources = provision(stack.moto_url, "serve")
        lambdas = LambdaFunctions(
            resources.template,
            resources.local,
            {**SERVE_PARAMETERS, **stack.parameters()},
            stack.environment(),
        )
        user = local_user(stack.emulator)
        ready = READY_REQUEST_ID
        local = LocalApi(resources, lambdas)
        with serving(local, int(os.environ.get("PORT", "0"))) as front:
            ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
            ENV_FILE.write_text(environment(front.url, local.credentials, user, ready))
            print(usage(front.url, local.credentials, user, ready, time.monotonic() - started), flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                while not stop.wait(1):
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                ENV_FILE.unlink(missing_ok=True)
        lambdas.restore()
    return 0


# What another terminal sources to talk to this server (the README's and docs' examples read it);
# SERVE_ENV_FILE puts it elsewhere (a second server, or a test's own file).
ENV_FILE = Path(
    os.environ.get("SERVE_ENV_FILE") or Path(__file__).resolve().parents[2] / ".local" / "serve.env"
)


def environment(url: str, credentials: Sequence[LocalCredential], user: Mapping[str, Any], ready: int) -> str:
    """``ENV_FILE``'s text: the server's URL, both callers' local credentials, the user's tokens."""
    backend, other = credentials[0], credentials[1]
    values = {
        "API_URL": url,
        "AWS_ACCESS_KEY_ID": backend.access_key_id,
        "AWS_SECRET_ACCESS_KEY": backend.secret_access_key,
        "OTHER_ACCESS_KEY_ID": other.access_key_id,
        "OTHER_SECRET_ACCESS_KEY": other.secret_access_key,
        "TOKEN": user["access_token"],
        "REFRESH_TOKEN": user["refresh_token"],
        "OPEN_ID": user["open_id"],
        "READY_REQUEST_ID": str(ready),
    }
    lines = [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
    header = [
        "# written by make serve, removed when it stops: local values only",
        "unset AWS_SESSION_TOKEN AWS_PROFILE",
    ]
    return "\n".join(header + lines) + "\n"


# What the printed curl lines sign with: the backend's credentials, for API Gateway in eu-west-1.
SIGV4 = '--aws-sigv4 "aws:amz:eu-west-1:execute-api" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY"'
PYTHON_SNIPPET = """\
import json, os, urllib.error, urllib.request
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = AWSRequest(method, os.environ["API_URL"] + path, data=data,
                         headers={"Content-Type": "application/json"} if data else {})
    credentials = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    SigV4Auth(credentials, "execute-api", "eu-west-1").add_auth(request)
    signed = request.prepare()
    try:
        with urllib.request.urlopen(urllib.request.Request(
                signed.url, data=signed.body, headers=dict(signed.headers), method=signed.method)) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())

print(call("GET", "/users/" + os.environ["OPEN_ID"] + "/requests"))
"""


def usage(
    url: str, credentials: Sequence[LocalCredential], user: Mapping[str, Any], ready: int, took: float
) -> str:
    """What ``make serve`` prints: the URL, the callers' credentials, the user's tokens, lines to paste."""
    backend, other = credentials[0], credentials[1]
    token, refresh = user["access_token"], user["refresh_token"]
    sigv4 = SIGV4
    return f"""
tiktok-archive is serving on {url} (started in {took:.1f} s; moto server and the TikTok emulator behind it).
Local only: the TikTok user below is the emulator's; TikTok prepares an added request in 20 s here.
Calls are signed with SigV4 (service execute-api, region eu-west-1), as API Gateway's AWS_IAM
authorization wants them; these local credentials stand for two callers (fresh secrets each run):
  the backend:      {backend.arn}
  another backend:  {other.arn}

export API_URL={url}
export AWS_ACCESS_KEY_ID={backend.access_key_id} AWS_SECRET_ACCESS_KEY={backend.secret_access_key}
export OTHER_ACCESS_KEY_ID={other.access_key_id} OTHER_SECRET_ACCESS_KEY={other.secret_access_key}
export TOKEN='{token}'
export REFRESH_TOKEN='{refresh}' OPEN_ID='{user["open_id"]}'

# the user consents: add a data request with their tokens in the body (waiting -> queued -> completed)
curl -sS -i -X POST "$API_URL/requests" \\
  {sigv4} \\
  -H "Content-Type: application/json" \\
  -d "{{\\"access_token\\": \\"$TOKEN\\",
       \\"refresh_token\\": \\"$REFRESH_TOKEN\\", \\"open_id\\": \\"$OPEN_ID\\"}}"
# read it (no TikTok call; a link once completed)
curl -sS "$API_URL/downloads/<request_id>" \\
  {sigv4}
# the user's requests of this caller, newest first
curl -sS "$API_URL/users/$OPEN_ID/requests" \\
  {sigv4}
# another caller does not see them: 404
curl -sS "$API_URL/downloads/<request_id>" --aws-sigv4 "aws:amz:eu-west-1:execute-api" \\
  --user "$OTHER_ACCESS_KEY_ID:$OTHER_SECRET_ACCESS_KEY"

# download a request TikTok already prepared
curl -sS -X POST "$API_URL/downloads" \\
  {sigv4} \\
  -H "Content-Type: application/json" \\
  -d "{{\\"request_id\\": \\"{ready}\\", \\"access_token\\": \\"$TOKEN\\"}}"

# cancel one; erase the user (their requests, archives and grant; revoked at TikTok)
curl -sS -X DELETE "$API_URL/downloads/<request_id>" \\
  {sigv4}
curl -sS -X DELETE "$API_URL/users/$OPEN_ID" \\
  {sigv4}

# from Python, signing with botocore's SigV4Auth (the same call, as the backend)
.venv/bin/python - <<'EOF'
{PYTHON_SNIPPET}EOF

Unsigned calls get API Gateway's 403 Missing Authentication Token; a wrong secret, its signature mismatch.
Ctrl-C stops it."""


if __name__ == "__main__":
    sys.exit(main())
