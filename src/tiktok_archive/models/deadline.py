"""The invocation's time budget: Lambda's deadline less a safety margin, on the monotonic clock."""

from __future__ import annotations

import time

from tiktok_archive.models.errors import DeadlineExceededError


class Deadline:
    """A moment by which the work must have stopped, so that there is time left to clean up and answer.

    Every wait in a transfer — a retry's backoff, a socket read, a part upload — draws on the same
    deadline, so no path can run into Lambda's own timeout, which kills the process without cleanup.
    """

    def __init__(self, at: float) -> None:
        self._at = at

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline ``seconds`` from now (zero or negative: already passed)."""
        return cls(time.monotonic() + seconds)

    @classmethod
    def for_invocation(cls, remaining_ms: int, margin_seconds: float) -> Deadline:
        """The deadline of an invocation with ``remaining_ms`` left, stopping ``margin_seconds`` early."""
        return cls.after(remaining_ms / 1000 - margin_seconds)

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self._at - time.monotonic()

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.remaining() <= 0

    def bound(self, seconds: float) -> float:
        """``seconds``, shortened so as not to run past the deadline (never below a millisecond)."""
        return max(0.001, min(seconds, self.remaining()))

    def check(self, doing: str) -> None:
        """Raise if the deadline has passed.

        Raises:
            DeadlineExceededError: naming what could not be done in time.
        """
        if self.expired():
            raise DeadlineExceededError(f"the invocation's time budget ran out {doing}; nothing was stored")
