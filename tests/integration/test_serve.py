"""``make serve``'s HTTP front, called by this machine's real ``curl --aws-sigv4``.

The front (:mod:`tests.harness.serve`) runs in-process on a free port, over the test's local resources
and the emulator; curl signs its requests with the local credentials the front prints, as a developer
pasting the printed lines would. Pinned: curl's signatures are accepted and name the caller; a wrong
secret, an unknown key and an unsigned request get API Gateway's 403s and reach neither the function
nor TikTok; another caller cannot see the backend's record; the printed curl lines and Python snippet
work as printed; ``CallerRoleArns`` turns the other caller away at the gateway.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import SECRETS
from tests.harness.local_stack import Emulator, Resources
from tests.harness.serve import LocalApi, serving, usage
from tests.harness.tokens import open_id
from tests.integration.support import Configure, functions

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="no curl on this machine")
SIGV4 = "aws:amz:eu-west-1:execute-api"
READY = 7_234_567_890_123_456_789


@dataclass
class Served:
    url: str
    api: LocalApi
    user: dict[str, Any]

    @property
    def backend(self) -> str:
        credential = self.api.credentials[0]
        return f"{credential.access_key_id}:{credential.secret_access_key}"

    @property
    def other(self) -> str:
        credential = self.api.credentials[1]
        return f"{credential.access_key_id}:{credential.secret_access_key}"


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def curl(method: str, url: str, user: str | None, body: dict[str, Any] | None = None) -> Reply:
    """The real curl binary; ``user``: ``key id:secret`` to sign with (``--aws-sigv4``), None unsigned."""
    assert CURL is not None
    command = [CURL, "-sS", "-i", "-X", method, url, "--max-time", "60"]
    if user is not None:
        command += ["--aws-sigv4", SIGV4, "--user", user]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    done = subprocess.run(command, capture_output=True, check=True, timeout=90)
    head, _, payload = done.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Reply(status, json.loads(payload), headers)


def _curl_version() -> tuple[int, ...]:
    assert CURL is not None
    first = subprocess.run([CURL, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.match(r"curl (\d+)\.(\d+)\.(\d+)", first)
    assert match, first
    return tuple(int(part) for part in match.groups())


@pytest.fixture
def served(configure: Configure, resources: Resources, emulator: Emulator) -> Iterator[Served]:
    """The HTTP front on a free port (queues not delivered: the answers are under test), and an
    emulator user with a grantable consent and a request TikTok already prepared."""
    user = emulator.add_user(
        open_id(), access_token=SECRETS.token(), refresh_token=SECRETS.refresh_token(), prepare_seconds=3600
    )
    emulator.register(READY, user["access_token"], size=1024 * 1024)
    api = LocalApi(resources, functions())
    with serving(api, deliver=False) as front:
        yield Served(front.url, api, user)


def test_this_machines_curl_signs_with_aws_sigv4() -> None:
    # --aws-sigv4 came with curl 7.75.0.
    assert _curl_version() >= (7, 75, 0)


def test_the_backend_signs_with_curl_and_reads_its_own_records(served: Served, emulator: Emulator) -> None:
    user = served.user
    added = curl(
        "POST",
        f"{served.url}/requests",
        served.backend,
        {
            "access_token": user["access_token"],
            "refresh_token": user["refresh_token"],
            "open_id": user["open_id"],
        },
    )
    assert added.status == 202, added.body
    request_id = added.body["request_id"]
    assert added.body["status"] == "waiting"

    calls_before = sum(emulator.stats()["calls"].values())
    read = curl("GET", f"{served.url}/downloads/{request_id}", served.backend)
    assert (read.status, read.body["request_id"], read.body["status"]) == (200, request_id, "waiting")
    listed = curl("GET", f"{served.url}/users/{user['open_id']}/requests?limit=5", served.backend)
    assert listed.status == 200, listed.body
    assert [r["request_id"] for r in listed.body["requests"]] == [request_id]
    assert sum(emulator.stats()["calls"].values()) == calls_before  # reads ask TikTok nothing

    downloaded = curl(
        "POST",
        f"{served.url}/downloads",
        served.backend,
        {"request_id": str(READY), "access_token": user["access_token"]},
    )
    assert (downloaded.status, downloaded.body["status"]) == (200, "completed"), downloaded.body

    cancelled = curl("DELETE", f"{served.url}/downloads/{request_id}", served.backend)
    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled"), cancelled.body
    erased = curl("DELETE", f"{served.url}/users/{user['open_id']}", served.backend)
    assert (erased.status, erased.body) == (202, {"open_id": user["open_id"], "status": "erasing"})


def test_the_other_caller_cannot_see_the_backends_record(served: Served, resources: Resources) -> None:
    user = served.user
    added = curl("POST", f"{served.url}/requests", served.backend, {"access_token": user["access_token"]})
    assert added.status == 202, added.body
    request_id = added.body["request_id"]
    before = resources.item(request_id)

    for method in ("GET", "DELETE"):
        answer = curl(method, f"{served.url}/downloads/{request_id}", served.other)
        assert answer.status == 404, (method, answer.body)
        assert answer.body["error"]["code"] == "not_found"
    listed = curl("GET", f"{served.url}/users/{user['open_id']}/requests", served.other)
    assert (listed.status, listed.body["requests"]) == (200, [])
    assert resources.item(request_id) == before  # nothing changed
    assert curl("GET", f"{served.url}/downloads/{request_id}", served.backend).status == 200


@pytest.mark.parametrize(
    ("signing", "message"),
    [
        ("wrong secret", "The request signature we calculated does not match the signature you provided."),
        ("unknown key", "The security token included in the request is invalid."),
        ("unsigned", "Missing Authentication Token"),
    ],
)
def test_a_wrong_secret_an_unknown_key_or_no_signature_is_refused_before_anything_runs(
    served: Served, emulator: Emulator, resources: Resources, signing: str, message: str
) -> None:
    key_id = served.api.credentials[0].access_key_id
    user = {
        "wrong secret": f"{key_id}:not-the-secret",
        "unknown key": "AKIAUNKNOWNKEY000000:whatever",
        "unsigned": None,
    }[signing]
    calls_before = sum(emulator.stats()["calls"].values())
    body = {"request_id": str(READY), "access_token": served.user["access_token"]}
    for method, path, sent in (
        ("POST", "/downloads", body),
        ("POST", "/requests", {"access_token": served.user["access_token"]}),
        ("GET", f"/downloads/{READY}", None),
        ("GET", f"/users/{served.user['open_id']}/requests", None),
        ("DELETE", f"/users/{served.user['open_id']}", None),
    ):
        answer = curl(method, f"{served.url}{path}", user, sent)
        assert answer.status == 403, (method, path, answer.body)
        assert answer.body["message"].startswith(message), (method, path, answer.body)
        assert answer.headers["x-amzn-errortype"]
    assert sum(emulator.stats()["calls"].values()) == calls_before
    assert resources.item(READY) is None
    assert resources.queued_messages("LifecycleQueue") == []


def test_an_unknown_route_is_api_gateways_missing_authentication_token(served: Served) -> None:
    for method, path in (("GET", "/nowhere"), ("PUT", "/downloads"), ("GET", "/webhooks/tiktok")):
        for user in (served.backend, None):
            answer = curl(method, f"{served.url}{path}", user)
            assert (answer.status, answer.body) == (403, {"message": "Missing Authentication Token"})
    # Outside the stage too.
    assert curl("GET", served.url.removesuffix("/v1") + "/downloads/1", served.backend).status == 403


def test_the_webhook_route_is_open(served: Served) -> None:
    # No SigV4: TikTok's own signature is what the function checks (here it is missing).
    answer = curl("POST", f"{served.url}/webhooks/tiktok", None, {"event": "x"})
    assert answer.status != 403 or "message" not in answer.body
    assert answer.body["error"]["code"] == "invalid_signature"


def test_caller_role_arns_turns_the_other_caller_away_at_the_gateway(
    configure: Configure, resources: Resources, emulator: Emulator
) -> None:
    configure({"CallerRoleArns": "arn:aws:iam::123456789012:role/tiktok-archive-backend"})
    user = emulator.add_user(open_id(), access_token=SECRETS.token())
    api = LocalApi(resources, functions())
    backend, other = (f"{c.access_key_id}:{c.secret_access_key}" for c in api.credentials)
    with serving(api, deliver=False) as front:
        added = curl("POST", f"{front.url}/requests", backend, {"access_token": user["access_token"]})
        assert added.status == 202, added.body
        refused = curl("GET", f"{front.url}/downloads/{added.body['request_id']}", other)
    assert refused.status == 403
    assert refused.body == {
        "Message": f"User: {api.credentials[1].arn} is not authorized to perform: execute-api:Invoke on "
        f"resource: {api.gateway.resource_arn('GET', '/downloads/' + added.body['request_id'])} "
        "with an explicit deny"
    }


def test_the_printed_lines_work_as_printed(served: Served) -> None:
    """The curl lines and the Python snippet ``make serve`` prints, pasted into bash."""
    text = usage(served.url, served.api.credentials, served.user, READY, 0.0)
    exports = [line for line in text.splitlines() if line.startswith("export ")]
    lines = text.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith('curl -sS -i -X POST "$API_URL/requests"')
    )
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\") and lines[i].endswith('"'))
    add = "\n".join(lines[start : end + 1])
    snippet = text[text.index(".venv/bin/python - <<'EOF'") : text.index("\nEOF\n") + 5]
    script = "\n".join([*exports, "set -e", add.replace("curl -sS -i", "curl -sS", 1), "echo", snippet])
    assert CURL is not None
    environment = {
        "PATH": f"{os.path.dirname(CURL)}:{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    done = subprocess.run(
        ["bash", "-c", script.replace(".venv/bin/python", sys.executable)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    added_line, listed_line = done.stdout.strip().splitlines()[-2:]
    added = json.loads(added_line)
    assert added["status"] == "waiting", added
    # The snippet lists the user's requests as the backend: the one the curl line added.
    assert listed_line.startswith("(200, ")
    assert added["request_id"] in listed_line
