"""A unit of work's budget: the invocation's deadline, in time, and its calls to TikTok, in count.

The handler makes one deadline per invocation (Lambda's deadline less a safety margin, on the monotonic
clock) and gives each unit of work — an API request, a queue message — its own count of attempts on that
deadline (:meth:`Deadline.unit`) and its priority on TikTok's shared quota (:mod:`tiktok_quota`). Every
try of every TikTok operation of the unit draws from it — the retries and resumptions of an operation,
the refresh of a token and the call made again with it — and so does every store the service tries again
itself (a rotated token's). AWS calls retry inside botocore, bounded by the invocation's end
(``adapters/aws_clients``). A unit that runs out answers with what it has; a message delivered again is
a new unit (so a message costs at most ``MaxReceiveCount`` units).
"""

from __future__ import annotations

import time

from tiktok_archive.models.errors import DeadlineExceededError
from tiktok_archive.models.tiktok_quota import Priority


class Deadline:
    """A moment by which the work must have stopped, so that there is time left to clean up and answer.

    Every wait in a transfer — a retry's backoff, a socket read, a part upload — draws on the same
    deadline, so no path can run into Lambda's own timeout, which kills the process without cleanup.
    """

    def __init__(
        self,
        at: float,
        attempts: int | None = None,
        *,
        unit: Deadline | None = None,
        priority: Priority = Priority.CHECK,
        ends_at: float | None = None,
    ) -> None:
        self._at = at
        self._attempts = attempts
        self._unit = unit  # whose attempts this one draws (a shorter deadline of the same unit)
        self._priority = priority
        self._ends_at = at if ends_at is None else max(at, ends_at)  # when Lambda ends the invocation

    def unit(self, attempts: int, priority: Priority = Priority.CHECK) -> Deadline:
        """A unit of work on this deadline (the same moment) that may make ``attempts`` attempts.

        ``priority``: its share of TikTok's quota (:mod:`tiktok_quota`); the lowest unless the handler,
        which knows what the unit is (an API route, a worker job, a lifecycle message), says otherwise.
        """
        return Deadline(self._at, max(1, attempts), priority=priority, ends_at=self._ends_at)

    def within(self, seconds: float) -> Deadline:
        """The same unit, its deadline brought no later than ``seconds`` from now (its attempts shared).

        For a part of the work that must end sooner (a refresh within its lease): what it tries draws
        from the unit's count of attempts, as the rest of the unit's work does.
        """
        return Deadline(
            min(self._at, time.monotonic() + seconds), unit=self._unit or self, ends_at=self._ends_at
        )

    def take_attempt(self) -> bool:
        """Spend one of the unit's attempts; False (nothing spent) when none is left."""
        if self._unit is not None:
            return self._unit.take_attempt()
        if self._attempts is None:
            return True
        if self._attempts <= 0:
            return False
        self._attempts -= 1
        return True

    @property
    def priority(self) -> Priority:
        """The unit's priority on TikTok's quota."""
        return self._unit.priority if self._unit is not None else self._priority

    @property
    def attempts_left(self) -> int | None:
        """The unit's attempts still allowed (None: not counted)."""
        return self._unit.attempts_left if self._unit is not None else self._attempts

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline ``seconds`` from now (zero or negative: already passed)."""
        return cls(time.monotonic() + seconds)

    @classmethod
    def for_invocation(cls, remaining_ms: int, margin_seconds: float) -> Deadline:
        """The deadline of an invocation with ``remaining_ms`` left, stopping ``margin_seconds`` early."""
        now = time.monotonic()
        return cls(now + remaining_ms / 1000 - margin_seconds, ends_at=now + remaining_ms / 1000)

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self._at - time.monotonic()

    def invocation_left(self) -> float:
        """Seconds until Lambda ends the invocation (the deadline plus its margin).

        No code of the invocation runs later: a mark that must outlive whatever it still does lasts at
        least this long.
        """
        return self._ends_at - time.monotonic()

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
