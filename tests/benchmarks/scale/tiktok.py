"""A model of TikTok at scale: requests prepared over time, webhooks, the quota, outages, rotating tokens.

- **Preparation** takes a log-normal time (median ``prep_median_hours``, spread ``prep_sigma``: a tail to
  days); a share ``never_ready`` is never prepared and turns ``expired`` then. A ready archive stays
  ``downloading`` for four days, then ``expired``.
- **Quota**: every endpoint (add, check, cancel, download, oauth) accepts at most ``quota`` calls in any
  sliding 60 s (:class:`QuotaWindow`); beyond it TikTok answers 429 ``rate_limit_exceeded`` with a
  ``Retry-After`` of the seconds until the window has room (an assumption: TikTok's pages promise no
  header). A refused call does not count against the window; it is counted as a 429.
- **Outages**: during each outage every call answers 500 ``internal_error``; webhooks wait for its end.
- **Tokens**: access tokens live 2 h, refresh tokens rotate (a replayed one is refused ``invalid_grant``),
  and a call with an expired or unknown access token is refused ``access_token_invalid``.

:class:`SimTikTok` stands for :class:`TikTokClient` as the logic sees it, including what its urllib3
retry policy does (``BudgetedRetry``): a 429 whose ``Retry-After`` is at most 10 s and a 5xx of an
idempotent call are tried again (backoff with full jitter) while the operation's and the unit's attempts
last; every try is a call against the quota. Before each try it draws from the service's shared budget
(``quota``, TikTok's quota as ``SharedQuota`` counts it, at the unit's priority): a try the budget refuses
is not made and raises ``TikTokBudgetExhaustedError``. Time an invocation spends on TikTok (latency,
waits) is added up in ``spent`` for the Lambda model to bill.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.adapters.tiktok.budget import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    RETRY_AFTER_MAX_SECONDS,
    budget_exhausted,
)
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.errors import ReauthorizationRequiredError, ServiceError
from tiktok_archive.models.portability import AppCredentials, RequestStatus, TokenGrant
from tiktok_archive.models.tiktok_errors import TikTokApiError
from tiktok_archive.models.tiktok_quota import Endpoint, QuotaGate

ENDPOINTS = ("add", "check", "cancel", "download", "oauth")
FIRST_REQUEST_ID = 7_000_000_000_000_000_000  # beyond 2^53, as TikTok's are
ACCESS_LIFETIME = 7200
REFRESH_LIFETIME = 180 * 86400
DOWNLOADABLE_FOR = 4 * 86400
# Seconds one answered call takes (an assumption: TikTok's API from eu-west-1).
LATENCY = {"add": 0.3, "check": 0.15, "cancel": 0.2, "download": 0.3, "oauth": 0.25}
# The shared quota's name of each endpoint.
QUOTA_ENDPOINT = {
    "add": Endpoint.ADD,
    "check": Endpoint.CHECK,
    "cancel": Endpoint.CANCEL,
    "download": Endpoint.DOWNLOAD,
    "oauth": Endpoint.REFRESH,
}


class QuotaWindow:
    """One endpoint's quota: at most ``limit`` calls accepted in any sliding ``window`` seconds."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._accepted: deque[float] = deque()

    def try_call(self, at: float) -> float | None:
        """Accept a call at ``at`` (None), or refuse it: the seconds until the window has room."""
        accepted = self._accepted
        while accepted and accepted[0] <= at - self.window:
            accepted.popleft()
        if len(accepted) >= self.limit:
            return accepted[0] + self.window - at
        accepted.append(at)
        return None


class CallLog:
    """TikTok calls per endpoint per minute: every try, and the tries answered 429."""

    def __init__(self) -> None:
        self.calls: dict[str, list[int]] = {endpoint: [] for endpoint in ENDPOINTS}
        self.refused: dict[str, list[int]] = {endpoint: [] for endpoint in ENDPOINTS}

    @staticmethod
    def _bump(series: list[int], at: float) -> None:
        minute = int(at // 60)
        if minute >= len(series):
            series.extend([0] * (minute + 1 - len(series)))
        series[minute] += 1

    def call(self, endpoint: str, at: float, *, refused: bool) -> None:
        self._bump(self.calls[endpoint], at)
        if refused:
            self._bump(self.refused[endpoint], at)


@dataclass
class Prepared:
    """One data request as TikTok sees it (times in simulation seconds)."""

    owner: str
    added_at: float
    ready_at: float
    never_ready: bool
    size_bytes: int


@dataclass
class TikTokModel:
    """TikTok's side of the simulation; ``on_ready(request_id, at)`` hears of each archive prepared."""

    quota: int
    rng: random.Random
    prep_median_hours: float = 2.0
    prep_sigma: float = 1.2
    never_ready: float = 0.01
    size_median_mib: float = 20.0
    outages: list[tuple[float, float]] = field(default_factory=list)
    on_ready: Callable[[int, float], None] | None = None
    requests: dict[int, Prepared] = field(default_factory=dict)
    log: CallLog = field(default_factory=CallLog)
    windows: dict[str, QuotaWindow] = field(default_factory=dict)
    # open_id → (current access token, its end, current refresh token, its generation)
    lineage: dict[str, tuple[str, float, str, int]] = field(default_factory=dict)
    refused_grants: int = 0

    def __post_init__(self) -> None:
        self.windows = {endpoint: QuotaWindow(self.quota) for endpoint in ENDPOINTS}

    def consent(self, open_id: str, at: float) -> tuple[str, str]:
        """A user consents in the backend's app: their first access and refresh tokens."""
        tokens = (f"act.{open_id}.0", at + ACCESS_LIFETIME, f"rft.{open_id}.0", 0)
        self.lineage[open_id] = tokens
        return tokens[0], tokens[2]

    def in_outage(self, at: float) -> float | None:
        """The end of the outage ``at`` falls in, or None."""
        for start, end in self.outages:
            if start <= at < end:
                return end
        return None

    def status(self, request_id: int, at: float) -> str:
        prepared = self.requests[request_id]
        if at < prepared.ready_at:
            return "pending"
        if prepared.never_ready or at >= prepared.ready_at + DOWNLOADABLE_FOR:
            return "expired"
        return "downloading"

    def add(self, owner: str, at: float) -> int:
        request_id = FIRST_REQUEST_ID + len(self.requests)
        prep = 3600 * self.prep_median_hours * math.exp(self.rng.gauss(0, self.prep_sigma))
        size = int(1048576 * self.size_median_mib * math.exp(self.rng.gauss(0, 1.0)))
        never = self.rng.random() < self.never_ready
        self.requests[request_id] = Prepared(owner, at, at + prep, never, max(size, 4096))
        if self.on_ready is not None and not never:
            self.on_ready(request_id, at + prep)
        return request_id

    def user_of(self, access_token: str, at: float) -> str | None:
        """The user whose current, unexpired access token this is."""
        _, _, rest = access_token.partition(".")
        open_id = rest.rpartition(".")[0]
        current = self.lineage.get(open_id)
        if current is None or current[0] != access_token or at >= current[1]:
            return None
        return open_id

    def refresh(self, refresh_token: str, at: float) -> TokenGrant:
        _, _, rest = refresh_token.partition(".")
        open_id = rest.rpartition(".")[0]
        current = self.lineage.get(open_id)
        if current is None or current[2] != refresh_token:
            self.refused_grants += 1
            raise ReauthorizationRequiredError("invalid_grant: the refresh token was rotated")
        generation = current[3] + 1
        access, refresh = f"act.{open_id}.{generation}", f"rft.{open_id}.{generation}"
        self.lineage[open_id] = (access, at + ACCESS_LIFETIME, refresh, generation)
        return TokenGrant(
            access, ACCESS_LIFETIME, refresh, REFRESH_LIFETIME, open_id, "portability.all.single"
        )


def _error(code: str, status: int, retry_after: float | None = None) -> TikTokApiError:
    return TikTokApiError(
        code,
        f"TikTok answered {code}",
        log_id="20260301120000SIMULATED00000000",
        upstream_status=status,
        retry_after=str(math.ceil(retry_after)) if retry_after is not None else None,
    )


class SimTikTok(TikTokClient):
    """The client the logic calls, answered by the model at the simulation's moment.

    ``now()`` is the invocation's moment; ``spent`` the seconds its TikTok calls took so far.
    """

    def __init__(
        self, model: TikTokModel, now: Callable[[], float], rng: random.Random, quota: QuotaGate | None = None
    ) -> None:
        self.max_attempts = 4  # TIKTOK_MAX_ATTEMPTS's default
        self.model = model
        self.quota = quota
        self._now = now
        self._rng = rng
        self.spent = 0.0

    def call(self, endpoint: str, deadline: Deadline, *, idempotent: bool = True) -> float:
        """One operation's tries; the moment TikTok answered it, or its last error raised."""
        error: ServiceError | None = None
        for attempt in range(1, self.max_attempts + 1):
            left = deadline.attempts_left
            if left is not None and left <= 0:
                break
            if self.quota is not None:
                # The shared budget first, at the unit's priority: a refused try is not made, takes no
                # attempt, and defers the work (TikTokBudgetExhaustedError).
                wait = self.quota.take(QUOTA_ENDPOINT[endpoint], deadline.priority)
                if wait is not None:
                    raise budget_exhausted(QUOTA_ENDPOINT[endpoint], wait)
            deadline.take_attempt()
            at = self._now() + self.spent
            outage_end = self.model.in_outage(at)
            room = None if outage_end is not None else self.model.windows[endpoint].try_call(at)
            self.model.log.call(endpoint, at, refused=room is not None)
            self.spent += LATENCY[endpoint]
            if outage_end is None and room is None:
                return at
            if outage_end is not None:
                error = _error("internal_error", 500)
                wait = self._rng.uniform(
                    0, min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
                )
                if not idempotent:
                    break
            else:
                error = _error("rate_limit_exceeded", 429, room)
                if room is not None and room > RETRY_AFTER_MAX_SECONDS:
                    break
                wait = room or 0.0
            if attempt < self.max_attempts:
                self.spent += wait
        raise error or _error("internal_error", 500)

    def check_request(self, request: DownloadRequest, deadline: Deadline) -> RequestStatus | None:
        at = self.call("check", deadline)
        user = self.model.user_of(request.access_token, at)
        if user is None:
            raise _error("access_token_invalid", 401)
        prepared = self.model.requests.get(request.request_id)
        if prepared is None or prepared.owner != user:
            raise _error("invalid_params", 400)
        status = self.model.status(request.request_id, at)
        collect = int(prepared.ready_at) if status != "pending" else None
        return RequestStatus(
            request.request_id, status, apply_time=int(prepared.added_at), collect_time=collect
        )

    def add_request(
        self, access_token: str, data_format: str, categories: list[str], deadline: Deadline
    ) -> int:
        at = self.call("add", deadline, idempotent=False)
        user = self.model.user_of(access_token, at)
        if user is None:
            raise _error("access_token_invalid", 401)
        return self.model.add(user, at)

    def refresh_tokens(self, app: AppCredentials, refresh_token: str, deadline: Deadline) -> TokenGrant:
        at = self.call("oauth", deadline, idempotent=False)
        return self.model.refresh(refresh_token, at)

    def download(self, request: DownloadRequest, deadline: Deadline) -> int:
        """Open the archive's stream (the transfer's one call): its size."""
        at = self.call("download", deadline)
        if self.model.user_of(request.access_token, at) is None:
            raise _error("access_token_invalid", 401)
        status = self.model.status(request.request_id, at)
        if status != "downloading":
            raise _error("invalid_params", 400)
        return self.model.requests[request.request_id].size_bytes
