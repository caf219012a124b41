"""What every tier shares: the callers, the registry of secrets the suite hands out, and a guard that fails
any test whose output holds a token, a signature or a URL signature.

Light on purpose: the unit tier loads this and nothing of AWS, the servers or the handlers. The local
stack (moto server, the TikTok emulator), the functions in their template environments and the calls
through them are ``tests/integration``'s (its conftest and ``support`` module).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest

from tests.harness.events import BACKEND, BACKEND_CALLER, OTHER, OTHER_CALLER, load_event
from tests.harness.tiktok_emulator import DEFAULT_CLIENT_SECRET
from tests.harness.tokens import (
    CHECK_STATUS_EXAMPLE,
    DEMO_REFRESH_TOKEN,
    DEMO_TOKEN,
    access_token,
    refresh_token,
)
from tiktok_archive import observability
from tiktok_archive.observability import REDACTED, logger

__all__ = ["BACKEND", "BACKEND_CALLER", "OTHER", "OTHER_CALLER"]  # the callers, for every tier
# Problems the contract found in the running test's answers (``tests/integration/support.py``).
CONTRACT_PROBLEMS: list[str] = []


# -- secrets guard -------------------------------------------------------------------------------
@dataclass
class SecretRegistry:
    """Every token the suite hands out and every presigned URL it receives."""

    tokens: set[str] = field(default_factory=set)
    signatures: set[str] = field(default_factory=set)
    plain: set[str] = field(default_factory=set)  # secrets without a prefix: the app's client secret

    def token(self, shape: str | None = None) -> str:
        """A fresh TikTok-shaped access token (``act.…!1234.e1``, ``.va``, ``.e2`` or ``act.3.…``)."""
        value = access_token(shape)
        self.tokens.add(value)
        return value

    def refresh_token(self) -> str:
        """A fresh TikTok-shaped refresh token (``rft.…``)."""
        value = refresh_token()
        self.tokens.add(value)
        return value

    def saw_url(self, url: str) -> None:
        for name in ("X-Amz-Signature", "X-Amz-Security-Token"):
            match = re.search(name + r"=([^&]+)", url)
            if match and match.group(1) != "testing":
                self.signatures.add(match.group(1))


SECRETS = SecretRegistry()
# The sample events' token, and TikTok's own example token, are secrets like any other.
SECRETS.tokens.update({DEMO_TOKEN, DEMO_REFRESH_TOKEN, CHECK_STATUS_EXAMPLE})
SECRETS.plain.add(DEFAULT_CLIENT_SECRET)  # the app's secret, as the local stack's secret holds it
# What API Gateway hands over besides the caller: the SigV4 header and the session token (secrets too).
_SIGNED = load_event("api-download.json")["headers"]
SIGV4_SECRETS = {
    _SIGNED["X-Amz-Security-Token"],
    _SIGNED["Authorization"].rsplit("Signature=", 1)[1],
}


class LogCapture(logging.Handler):
    """Collects every record of the service's logger, formatted exactly as Lambda would print it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logger.registered_formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def find(self, message: str) -> list[dict[str, Any]]:
        return [record for record in self.records() if record.get("message") == message]


def spellings(token: str) -> list[str]:
    """How a token may show in output: its secret part (with or without ``act.``), URL-encoded, base64."""
    secret = token.partition(".")[2]
    return [secret, quote(secret, safe=""), base64.b64encode(token.encode()).decode().rstrip("=")]


def find_secrets(text: str) -> list[str]:
    """What in ``text`` should never be there: a token (in any spelling), a signature, or the redaction
    marker (which means code tried to log a secret and only the scrubber caught it)."""
    found = [
        f"token #{n}"
        for n, t in enumerate(sorted(SECRETS.tokens))
        if any(spelling in text for spelling in spellings(t))
    ]
    found += [f"signature header {s[:6]}…" for s in SIGV4_SECRETS if s in text]
    found += [f"signature {s[:8]}…" for s in SECRETS.signatures if s in text]
    found += [f"secret {s[:4]}…" for s in SECRETS.plain if s in text]
    found += [marker for marker in ("X-Amz-Signature=", "X-Amz-Security-Token=", REDACTED) if marker in text]
    return found


@pytest.fixture(autouse=True)
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[LogCapture]:
    """Capture every log line and printed metric of the test, and fail it if either holds a secret (or,
    for a test that called the API, an answer broke docs/openapi.yaml)."""
    capture = LogCapture()
    logger.addHandler(capture)
    CONTRACT_PROBLEMS.clear()
    # The scrubber's registry of secrets starts empty, as in a new container: a value an earlier test
    # registered (a generated token may be an ordinary word, "exceeded") must not redact this test's lines.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(observability, "_KNOWN", observability._KnownSecrets())
        try:
            yield capture
        finally:
            logger.removeHandler(capture)
    out, err = capsys.readouterr()
    leaked = find_secrets("\n".join([*capture.lines, out, err]))
    assert not leaked, f"secrets reached the output: {leaked}"
    problems, CONTRACT_PROBLEMS[:] = list(CONTRACT_PROBLEMS), []
    assert not problems, "answers that break docs/openapi.yaml:\n" + "\n".join(problems[:10])


@pytest.fixture
def token() -> str:
    """A fresh user access token, registered with the secrets guard."""
    return SECRETS.token()


# -- template permissions no test used (a hint at the end of the run, not a failure) -----------------
# tests.harness.functions collects them as the integration tier's functions run; the hooks below read it
# only when a test imported it (the unit tier never does), and gather it from pytest-xdist's workers.
def _unused_report() -> Any:
    module = sys.modules.get("tests.harness.functions")
    return None if module is None else module.UNUSED


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: hand this worker's report to the controller."""
    report = _unused_report()
    if report is not None and hasattr(session.config, "workeroutput"):
        session.config.workeroutput["unused_permissions"] = {f: sorted(u) for f, u in report.unused.items()}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On pytest-xdist's controller: a worker's report joins the run's (unused only if unused in every
    test that ran the function, on any worker)."""
    found = getattr(node, "workeroutput", {}).get("unused_permissions")
    if found:
        from tests.harness.functions import UNUSED  # noqa: PLC0415 - only where the integration tier ran

        for function, unused in found.items():
            UNUSED.add(function, set(unused))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report the template permissions that no test used."""
    report = _unused_report()
    lines = report.lines() if report is not None else []
    if lines:
        terminalreporter.section("template permissions no test used")
        for line in lines:
            terminalreporter.write_line(line)
