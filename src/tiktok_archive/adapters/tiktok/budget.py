"""One attempt budget per TikTok operation, and the urllib3 retry policy that draws on it.

An operation is one thing the service asks of TikTok: a download (its first request, the retries
before the archive starts, the ranged requests that resume a broken stream, the fresh starts), a
status check, an added request, a cancellation, a token refresh. Its :class:`AttemptBudget` counts every
request it makes, however they fail, so ``TIKTOK_MAX_ATTEMPTS`` means exactly how many times TikTok is
called at most; and every wait draws on the invocation's :class:`Deadline`.

It is also where every try draws from TikTok's quota, shared by every invocation of every function
(:class:`QuotaGate`, at the unit's priority): a try the quota refuses is not made, is no failure and
raises :class:`TikTokBudgetExhaustedError`, which defers the work. A first try refused takes no attempt;
a retry is counted when it is about to be made, after its wait.
"""

from __future__ import annotations

import math
import random
import time
from types import TracebackType
from typing import Any, Self

import urllib3
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError, ResponseError

from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.tiktok_errors import TikTokBudgetExhaustedError
from tiktok_archive.models.tiktok_quota import WINDOW_SECONDS, Endpoint, QuotaGate
from tiktok_archive.observability import logger

# Statuses that say "try again": rate limited, or TikTok's side failing before it answered.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# A request that must not be sent twice once TikTok may have acted on it (adding a request, rotating
# a refresh token) is only tried again when TikTok certainly did not: a rate limit, or no connection.
UNSENT_STATUSES = frozenset({429})
# Backoff between tries: full jitter, uniform in [0, min(BACKOFF_MAX, BACKOFF_BASE * 2^(n-1))].
BACKOFF_BASE_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 8.0
# A Retry-After longer than this is not waited for in an invocation, which would pay for idle time: it
# is passed on to the caller (the API answers 429 with it; a queued job comes back after it).
RETRY_AFTER_MAX_SECONDS = 10.0


class AttemptBudget:
    """How many requests one operation may still make, and the deadline every one of them must meet.

    Each request also draws from the unit of work's count of attempts (``deadline.take_attempt``), so
    the operations of one unit — a check, a refresh, the check made again, a download — are bounded
    together as well as each alone; and from TikTok's shared quota (``quota``), at the unit's priority.

    Args:
        attempts: requests allowed in all, the first one included (at least 1).
        deadline: when every request and wait of the operation must have ended (and the unit's calls).
        quota: TikTok's quota shared by every invocation; None: not budgeted (tests, local runs).
    """

    def __init__(self, attempts: int, deadline: Deadline, quota: QuotaGate | None = None) -> None:
        self.limit = max(1, attempts)
        self.used = 0
        self.deadline = deadline
        self.quota = quota

    @property
    def left(self) -> int:
        """Requests still allowed."""
        return self.limit - self.used

    def take(self, endpoint: Endpoint | None = None) -> bool:
        """Spend one request to ``endpoint``; False (nothing spent) when none is left or time has run out.

        None is left when the operation spent its own, or the unit of work spent its attempts. The
        request is counted against ``endpoint``'s quota (None: not counted) only when an attempt is left.

        Raises:
            TikTokBudgetExhaustedError: the quota has no call left for this unit's priority; no attempt
                was spent.
        """
        unit_left = self.deadline.attempts_left
        if self.used >= self.limit or self.deadline.expired() or (unit_left is not None and unit_left <= 0):
            return False
        if endpoint is not None and self.quota is not None:
            wait = self.quota.take(endpoint, self.deadline.priority)
            if wait is not None:
                raise budget_exhausted(endpoint, wait)
        if not self.deadline.take_attempt():
            return False
        self.used += 1
        return True


def budget_exhausted(endpoint: Endpoint, wait: float) -> TikTokBudgetExhaustedError:
    """The refusal of a try by the quota: ``Retry-After`` when the next sub-window starts.

    A queued message comes back up to one sub-window later than that (jitter), so that the messages
    deferred together do not all come back at the same second.
    """
    seconds = max(1, math.ceil(wait))
    # Jitter spreads deferred work apart; it is no secret.
    jitter = random.randint(0, WINDOW_SECONDS)  # noqa: S311
    return TikTokBudgetExhaustedError(
        f"the service's share of TikTok's {endpoint.value} quota is spent for now; try again later",
        retry_after=str(seconds),
        redeliver_after=seconds + jitter,
    )


class BudgetedRetry(urllib3.Retry):
    """urllib3's ``Retry`` with full-jitter backoff, drawing every retry from an :class:`AttemptBudget`.

    A retry is only made if the budget has a request left and its wait — ``Retry-After`` when the answer
    has one, the backoff otherwise — ends before the deadline; ``Retry-After`` is only waited for up to
    :data:`RETRY_AFTER_MAX_SECONDS`. Otherwise the last answer is what the request returns (a 429 keeps
    its ``Retry-After`` for the caller) or its error is raised.
    """

    def __init__(
        self,
        *args: Any,
        budget: AttemptBudget | None = None,
        endpoint: Endpoint | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget
        self.endpoint = endpoint
        self.planned_wait = 0.0

    @classmethod
    def drawing_on(
        cls, budget: AttemptBudget, *, endpoint: Endpoint | None = None, idempotent: bool = True
    ) -> BudgetedRetry:
        """Retries of one POST to ``endpoint``, paid from ``budget`` (whose first request the caller took).

        ``idempotent=False``: only a 429 or a failed connection is tried again — never a 5xx or a
        timeout after the request was sent, which TikTok may already have acted on. Each retry draws from
        ``endpoint``'s quota too; one the quota refuses is not made.
        """
        return cls(
            total=max(0, budget.left),
            connect=None,
            read=None if idempotent else 0,
            other=0,
            redirect=False,
            allowed_methods=frozenset({"POST"}),
            status_forcelist=RETRY_STATUSES if idempotent else UNSENT_STATUSES,
            backoff_factor=BACKOFF_BASE_SECONDS,
            backoff_max=BACKOFF_MAX_SECONDS,
            # Parsed without urllib3's cap: a longer Retry-After is not shortened but handed on.
            retry_after_max=float("inf"),
            raise_on_status=False,
            respect_retry_after_header=True,
            budget=budget,
            endpoint=endpoint,
        )

    @classmethod
    def for_attempts(cls, attempts: int, deadline: Deadline) -> BudgetedRetry:
        """A policy for a request of its own: ``attempts`` tries in all, the first one taken."""
        budget = AttemptBudget(attempts, deadline)
        budget.take()
        return cls.drawing_on(budget)

    def new(self, **kw: Any) -> Self:
        return super().new(budget=self.budget, endpoint=self.endpoint, **kw)

    def get_backoff_time(self) -> float:
        """Full jitter: uniform between 0 and the exponential ceiling of the failures so far."""
        failures = len(self.history)
        if failures == 0:
            return 0.0
        # Jitter spreads retries of many invocations apart; it is no secret.
        ceiling = min(self.backoff_max, self.backoff_factor * 2 ** (failures - 1))
        return random.uniform(0, ceiling)  # noqa: S311

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: urllib3.BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        retry_after = self.get_retry_after(response) if response is not None else None
        wait = retry.get_backoff_time() if retry_after is None else retry_after
        deadline = self.budget.deadline if self.budget else None
        reason = "no time left to wait" if deadline and wait >= deadline.remaining() else None
        if retry_after is not None and retry_after > RETRY_AFTER_MAX_SECONDS:
            reason = "Retry-After is too long to wait for"
        if reason is None and self.budget is not None and not self.budget.take():
            reason = "no attempt left"
        if reason is not None:
            raise MaxRetryError(_pool, url, error or ResponseError(reason))  # type: ignore[arg-type]
        logger.warning(
            "TikTok request failed before it was answered; trying again",
            extra={
                "attempt": self.budget.used if self.budget else len(retry.history) + 1,
                "upstream_status": response.status if response is not None else None,
                "error_type": type(error).__name__ if error else None,
                "wait_seconds": round(wait, 3),
            },
        )
        retry.planned_wait = wait
        return retry

    def sleep(self, response: urllib3.BaseHTTPResponse | None = None) -> None:
        """Wait what :meth:`increment` planned (and checked against the deadline), then draw the quota.

        The retry's call is counted when it is about to be made, not before its wait, so that it counts
        in the sub-window it is made in.

        Raises:
            TikTokBudgetExhaustedError: the quota has no call left for the retry; the operation ends
                there and its work is deferred.
        """
        if self.planned_wait > 0:
            time.sleep(self.planned_wait)
        budget = self.budget
        if budget is not None and budget.quota is not None and self.endpoint is not None:
            wait = budget.quota.take(self.endpoint, budget.deadline.priority)
            if wait is not None:
                raise budget_exhausted(self.endpoint, wait)
