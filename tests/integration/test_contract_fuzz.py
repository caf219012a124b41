"""Fuzzing the contract: generated requests against `make serve`'s HTTP front, every answer checked.

Schemathesis reads docs/openapi.yaml and generates, for each operation, requests that fit the document
(``positive``) and requests that break it (``negative``: wrong types, missing fields, bad patterns, odd
headers), some with a real user's token in the body so that they go as far as TikTok. They are sent over
HTTP to :mod:`tests.harness.serve` — API Gateway's checks (SigV4, the resource policy), then the real
handlers with their template environment, moto server and the emulator behind. Most are signed with
SigV4 by the backend (botocore's ``SigV4Auth``, as a requests auth hook), some by another caller, some
not at all or with a wrong secret (API Gateway's 403s). Every answer must:

- not be a 5xx (the backends are healthy here: a 5xx is a bug);
- conform to the document (status declared for the operation, headers, body schema);
- leave no traceback and no ``unexpected error`` in the logs;
- for the webhook, a third of the bodies signed with the app's secret and a third also addressed to
  the app, so that generated bodies get past the signature to the events' handling;
- not have reached TikTok when the service refused the input itself (``invalid_request``,
  ``missing_token``, ``invalid_signature``, ``invalid_webhook``, ``caller_not_identified``, API
  Gateway's 403): invalid input never costs a TikTok call.

The problems of all generated requests are collected and reported together (no shrinking: the request
that failed is printed as it was sent).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from tests.conftest import LogCapture
from tests.harness.contract import Contract
from tests.harness.gateway import LocalCredential
from tests.harness.local_stack import APP_SECRET, REGION, Emulator, Resources
from tests.harness.serve import LocalApi, serving
from tests.harness.tiktok_emulator import sign
from tests.harness.tokens import access_token, open_id, refresh_token
from tests.integration.support import Configure, functions

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml")
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
EXAMPLES = 60  # per operation, spread over the three kinds of request below
MIN_REQUESTS = 200
# Answers by which the service refused the input before calling TikTok.
REFUSED_BEFORE_TIKTOK = {
    "invalid_request",
    "missing_token",
    "invalid_signature",
    "invalid_webhook",
    "caller_not_identified",
}
SENT: Counter[str] = Counter()
# How a generated request is signed: mostly by the backend, so that it reaches the handlers.
SIGNINGS = ["backend", "backend", "backend", "backend", "other", "wrong secret", "unsigned"]


class SigV4(requests.auth.AuthBase):
    """Signs a request with SigV4 for API Gateway (``execute-api``), with botocore's ``SigV4Auth``, as a
    backend does: ``host``, ``content-type`` (when sent) and ``x-amz-date`` signed, the body hashed."""

    SIGNED = ("host", "content-type")

    def __init__(self, credential: LocalCredential | None, *, secret: str | None = None) -> None:
        self.credential = credential
        self.secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            request.headers.pop(name, None)
        if self.credential is None:
            return request
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("iso-8859-1")  # what http.client sends for a str body
        headers = {k: v for k, v in request.headers.items() if k.lower() in self.SIGNED}
        signed = AWSRequest(method=request.method, url=request.url, data=body, headers=headers)
        secret = self.secret or self.credential.secret_access_key
        SigV4Auth(Credentials(self.credential.access_key_id, secret), "execute-api", REGION).add_auth(signed)
        request.headers["X-Amz-Date"] = signed.headers["X-Amz-Date"]
        request.headers["Authorization"] = signed.headers["Authorization"]
        return request


@dataclass
class Served:
    url: str
    real_token: str
    auth: dict[str, SigV4]


@pytest.fixture
def served(configure: Configure, resources: Resources, emulator: Emulator) -> Iterator[Served]:
    """The HTTP front on a free port (queues not delivered: only the answers are under test), the token
    of an emulator user with a grantable consent, and a signer per way of signing."""
    user = emulator.add_user(open_id(), access_token=access_token(), refresh_token=refresh_token())
    api = LocalApi(resources, functions())
    backend, other = api.credentials
    auth = {
        "backend": SigV4(backend),
        "other": SigV4(other),
        "wrong secret": SigV4(backend, secret="not-the-secret"),
        "unsigned": SigV4(None),
    }
    with serving(api, deliver=False) as front:
        yield Served(front.url, user["access_token"], auth)


def _cases(operation: Any) -> st.SearchStrategy[Any]:
    return st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )


def _with_real_token(case: Any, token: str) -> None:
    """Put the user's real access token in the body, so that the request goes as far as TikTok."""
    if isinstance(case.body, dict) and "access_token" in case.body:
        case.body = {**case.body, "access_token": token}


def _signed_call(url: str, case: Any, *, our_app: bool) -> requests.Response:
    """Send ``case``'s body to the webhook signed with the app's secret, so it gets past the signature
    to the body's validation (``our_app``: addressed to the app, so on to the events' handling)."""
    body = case.body
    if our_app and isinstance(body, dict):
        body = {**body, "client_key": APP_SECRET["client_key"]}
    raw = (
        body
        if isinstance(body, bytes)
        else body.encode()
        if isinstance(body, str)
        else json.dumps(body).encode()
    )
    signature = sign(APP_SECRET["client_secret"], int(time.time()), raw)
    headers = {"Content-Type": "application/json", "TikTok-Signature": signature}
    return requests.post(f"{url}{case.formatted_path}", data=raw, headers=headers, timeout=60)


def _tiktok_calls(emulator: Emulator) -> int:
    return sum(emulator.stats()["calls"].values())


def _error_code(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    return error.get("code") if isinstance(error, dict) else None


@pytest.mark.timeout(600)
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_generated_requests_get_documented_answers_and_invalid_ones_never_reach_tiktok(
    served: Served, operation: Any, emulator: Emulator, logs: LogCapture
) -> None:
    url = served.url
    contract = Contract.load()
    problems: list[str] = []
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every problem is collected as sent
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=_cases(operation),
        real_token=st.sampled_from([False, False, True]),
        webhook_signing=st.sampled_from(["none", "signed", "our_app"]),
        signing=st.sampled_from(SIGNINGS),
    )
    def send(case: Any, real_token: bool, webhook_signing: str, signing: str) -> None:
        calls_before = _tiktok_calls(emulator)
        if real_token:
            _with_real_token(case, served.real_token)
        if webhook_signing != "none" and operation.path == "/webhooks/tiktok" and case.body is not None:
            response = _signed_call(url, case, our_app=webhook_signing == "our_app")
        else:
            response = case.call(base_url=url, auth=served.auth[signing], timeout=60)
        reached_tiktok = _tiktok_calls(emulator) - calls_before
        SENT[operation.label] += 1
        statuses[response.status_code] += 1
        sent = (
            f"{case.method} {case.formatted_path} ({signing}) headers={case.headers} body={case.body!r:.300}"
        )
        answer = f"{response.status_code} {response.content[:300]!r}"
        if response.status_code >= 500:
            problems.append(f"5xx: {sent} -> {answer}")
        path = case.formatted_path
        found = contract.check(
            case.method, path, response.status_code, dict(response.headers), response.content
        )
        problems.extend(f"{problem}: {sent} -> {answer}" for problem in found)
        code = _error_code(response.content)
        refused = code in REFUSED_BEFORE_TIKTOK or response.status_code == 403
        if refused and reached_tiktok:
            problems.append(f"refused input reached TikTok ({reached_tiktok} calls): {sent} -> {answer}")

    send()

    assert not problems, f"{len(problems)} problems in {sum(statuses.values())} requests:\n" + "\n".join(
        problems[:20]
    )
    assert sum(statuses.values()) >= EXAMPLES // 2, statuses
    # Both the service's refusals and its answers past validation were exercised.
    assert any(status >= 400 for status in statuses), statuses
    broken = [line for line in logs.lines if "Traceback" in line or '"unexpected error"' in line]
    assert not broken, broken[:3]


def test_the_fuzzing_sent_enough_requests() -> None:
    """Runs after the operations (pytest keeps file order): at least 200 generated requests in all."""
    if len(SENT) < len(OPERATIONS):
        pytest.skip("the fuzzing tests did not all run in this session (selected out)")
    assert sum(SENT.values()) >= MIN_REQUESTS, SENT
