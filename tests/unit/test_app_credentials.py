"""AppCredentialsSource over a recording provider: the cache, and how often a fresh read is forced."""

from __future__ import annotations

from typing import Any

import pytest

from tiktok_archive.adapters import app_credentials
from tiktok_archive.adapters.app_credentials import FRESH_READ_EVERY_SECONDS, AppCredentialsSource

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tiktok-app-AbCdEf"


class RecordingProvider:
    """Powertools' SecretsProvider as far as the source uses it: which reads were forced."""

    def __init__(self) -> None:
        self.forced: list[bool] = []

    def get(self, name: str, *, max_age: int, transform: str, force_fetch: bool) -> Any:
        assert (name, transform) == (ARN, "json")
        self.forced.append(force_fetch)
        return {"client_key": "aw1234567890abcd", "client_secret": f"secret-{len(self.forced)}"}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(app_credentials.time, "monotonic", lambda: now[0])
    return now


def test_fresh_reads_are_forced_at_most_once_a_minute(clock: list[float]) -> None:
    # Given a source, and a stranger sending wrong webhook signatures (each asks for a fresh read)
    provider = RecordingProvider()
    source = AppCredentialsSource(provider, ARN)  # type: ignore[arg-type]

    # When fresh reads are asked for many times within a minute, then once more after it
    source.get()
    for _ in range(50):
        source.get(fresh=True)
        clock[0] += 1.0
    clock[0] += FRESH_READ_EVERY_SECONDS
    source.get(fresh=True)

    # Then Secrets Manager was read past the cache twice: once at first, once after the minute
    assert provider.forced.count(True) == 2
    assert provider.forced[:2] == [False, True]
    assert provider.forced[-1] is True
