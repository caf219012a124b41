"""boto3 clients whose every call fits inside the invocation.

Lambda kills an invocation at its timeout without any cleanup, so no AWS call may outlive it. Two
mechanisms make sure none does:

- each client's try is bounded: ``connect_timeout + read_timeout`` (:class:`CallLimits`), small calls
  (DynamoDB, SQS, KMS, EventBridge, Secrets Manager) at 1 + 2 s, S3's derived from
  ``DEADLINE_MARGIN_SECONDS`` (:func:`s3_limits`), so that an in-flight part and the abort that follows
  it fit in the margin;
- a ``before-send`` hook on every client refuses to start a try — the first or a retry — that could
  end after the invocation's end (less :data:`ANSWER_RESERVE_SECONDS` to answer). An S3 call that
  creates or completes an upload must also leave one S3 try for its abort. A refused try raises
  :class:`NoTimeForAwsCallError`, which :func:`aws_failure` turns into ``deadline_exceeded``.

The invocation's end is set once per invocation by :func:`start_invocation` (handlers call it); it is
a process-wide value because a Lambda container runs one invocation at a time, and part uploads on
worker threads must see it too.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.models.errors import DeadlineExceededError, ServiceError

E = TypeVar("E", bound=ServiceError)
# Left at the end of an invocation for the handler to answer after the last AWS call.
ANSWER_RESERVE_SECONDS = 0.5
# S3 operations after which an abort may be needed: they must leave time for one abort try.
_NEEDS_ABORT_AFTER = frozenset({"CreateMultipartUpload", "CompleteMultipartUpload"})


class NoTimeForAwsCallError(BotoCoreError):
    """A try of an AWS call was not started: it could have ended after the invocation."""

    fmt = "no time left in the invocation for {operation}"


@dataclass(frozen=True)
class CallLimits:
    """How long one try of a client's call may take, and how many tries a call gets."""

    connect_timeout: float
    read_timeout: float
    attempts: int

    @property
    def longest_try(self) -> float:
        return self.connect_timeout + self.read_timeout


SMALL_CALLS = CallLimits(connect_timeout=1.0, read_timeout=2.0, attempts=3)
# TikTok's quota counter: asked before every TikTok try, and failing open — a slow answer is worth less
# than the time it costs, so one short try and one more (a stalled table costs a try at most 2 s).
QUOTA_CALLS = CallLimits(connect_timeout=0.5, read_timeout=0.5, attempts=2)


def s3_limits(deadline_margin_seconds: float, attempts: int) -> CallLimits:
    """S3's limits: a part in flight at the deadline and then the abort, one try each, fit in the margin.

    One try lasts at most half of what the margin leaves after the answer reserve (at least 1 s, at
    most 62 s): 4.75 s with the default 10 s margin, 29.75 s with the worker's 60 s.
    """
    longest = min(62.0, max(1.0, (deadline_margin_seconds - ANSWER_RESERVE_SECONDS) / 2))
    connect = min(2.0, longest / 3)
    return CallLimits(connect_timeout=connect, read_timeout=longest - connect, attempts=attempts)


class _InvocationEnd:
    def __init__(self) -> None:
        self._at: float | None = None
        self._lock = threading.Lock()

    def set(self, remaining_ms: int) -> None:
        with self._lock:
            self._at = time.monotonic() + remaining_ms / 1000 - ANSWER_RESERVE_SECONDS

    def left(self) -> float | None:
        with self._lock:
            return None if self._at is None else self._at - time.monotonic()


_END = _InvocationEnd()


def start_invocation(remaining_ms: int) -> None:
    """Record when the current invocation ends (Lambda's ``get_remaining_time_in_millis()``)."""
    _END.set(remaining_ms)


def time_left() -> float | None:
    """Seconds until the invocation's end less the answer reserve; None outside an invocation."""
    return _END.left()


def client(service: str, limits: CallLimits, **config: Any) -> Any:
    """A boto3 client of ``service`` with ``limits`` and the invocation hook (extra botocore ``config``)."""
    made = boto3.client(
        service,  # type: ignore[call-overload]
        config=Config(
            connect_timeout=limits.connect_timeout,
            read_timeout=limits.read_timeout,
            retries={"mode": config.pop("retry_mode", "standard"), "total_max_attempts": limits.attempts},
            **config,
        ),
    )
    reserve_for = _NEEDS_ABORT_AFTER if service == "s3" else frozenset()

    def refuse_late_tries(event_name: str, **_: Any) -> None:
        left = time_left()
        if left is None:
            return
        operation = event_name.rsplit(".", 1)[-1]
        needed = limits.longest_try * (2 if operation in reserve_for else 1)
        if needed > left:
            raise NoTimeForAwsCallError(operation=operation)

    made.meta.events.register("before-send", refuse_late_tries)
    return made


def is_condition_failure(error: BaseException) -> bool:
    """Whether DynamoDB refused a write because its condition did not hold (not a failure of AWS)."""
    return (
        isinstance(error, ClientError)
        and error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
    )


def aws_failure(kind: type[E], operation: str, error: BaseException) -> E | DeadlineExceededError:
    """``kind("<operation> failed: <AWS error code or exception class>")``, or ``deadline_exceeded``.

    ``deadline_exceeded`` when the call was not tried for want of time. The message never carries the
    request or the response body (they may hold a presigned URL or a token), only the operation's name
    and AWS's error code (or the exception's class).
    """
    if isinstance(error, NoTimeForAwsCallError):
        return DeadlineExceededError(f"{operation} was not tried: the invocation's time ran out")
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "Unknown")
        return kind(f"{operation} failed: {code}")
    return kind(f"{operation} failed: {type(error).__name__}")
