"""The harness's own tests: the emulator they need runs alone (no moto server), one per test process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.emulator_control import Emulator
from tests.harness.local_stack import LocalStack


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """The TikTok emulator in a process of its own, shared by the session (tests that move its clock or
    change its limits use a private one)."""
    with LocalStack(aws=False) as local:
        yield local.emulator
