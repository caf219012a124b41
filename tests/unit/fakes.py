"""In-memory fakes of the collaborators of ``logic/``: the adapters' contracts without AWS or TikTok.

Each fake subclasses the adapter it stands for, so that ``mypy --strict`` holds it to the same method
names and signatures, and overrides only what the services call (anything else reaches the real
method, which fails loudly for want of a client). Conditional writes keep the adapters' conditions:
a write that the real adapter would refuse answers ``Unchanged`` (or ``None``/``False``) the same way, and
a condition on a missing item raises ``RecordStoreError`` as ``DownloadRecords`` does.

Every fake notes its calls, by name, in a shared :class:`Journal`, so that a test can assert the order
in which a service touched them (``queue.schedule_check`` before ``records.advance_schedule`` …).
Time is a :class:`Clock` that moves only when a test (or a sleeping service) moves it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import pytest

from tiktok_archive.adapters.app_credentials import AppCredentialsSource
from tiktok_archive.adapters.check_floor import CheckFloor
from tiktok_archive.adapters.download_events import DETAIL_TYPES, DownloadEvents, event_detail
from tiktok_archive.adapters.download_jobs import DownloadJobs
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.grant_items import Exchanged, Exchanging, Grant, Lease, SealedTokens
from tiktok_archive.adapters.grants import Grants
from tiktok_archive.adapters.lifecycle_queue import LifecycleQueue
from tiktok_archive.adapters.record_schedule import Position
from tiktok_archive.adapters.record_writes import Claimed, Unchanged
from tiktok_archive.adapters.s3_archive_store import PartListener
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.adapters.tiktok.budget import budget_exhausted
from tiktok_archive.adapters.token_vault import TokenVault
from tiktok_archive.logic import (
    add_request,
    download_progress,
    grant_vault,
    handover,
    purge,
    status_checks,
    sweep,
    token_refresh,
    tokens,
)
from tiktok_archive.logic.transfer import ArchiveTransfer, TransferWatch
from tiktok_archive.models import deadline as deadline_module
from tiktok_archive.models.clock import format_utc
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest, DownloadResult, StoredArchive
from tiktok_archive.models.download_record import (
    DownloadRecord,
    DownloadStatus,
    Owner,
    Preparation,
    Progress,
    RecordedError,
)
from tiktok_archive.models.errors import MissingTokenError, RecordStoreError, ServiceError
from tiktok_archive.models.messages import LifecycleMessage, StatusCheck
from tiktok_archive.models.portability import AppCredentials, RequestStatus, TokenGrant
from tiktok_archive.models.record_lifecycle import Event, Fields, ending, transition
from tiktok_archive.models.tiktok_quota import (
    Endpoint,
    Priority,
    QuotaGate,
    QuotaPlan,
    until_next_window,
    window_key,
    window_start,
)

T = TypeVar("T")
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# -- time and bookkeeping ----------------------------------------------------------------------
class Clock:
    """Wall-clock and monotonic time that move together, only when told to (or when someone sleeps).

    ``while_sleeping`` holds what happens elsewhere during each of the next sleeps, one per sleep.
    """

    def __init__(self, start: datetime = START) -> None:
        self.moment = start
        self.mono = 10_000.0
        self.slept: list[float] = []
        self.while_sleeping: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return self.moment.replace(microsecond=0)

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.moment += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)
        if self.while_sleeping:
            self.while_sleeping.pop(0)()


def freeze_time(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """Make ``logic/`` and :class:`Deadline` read (and sleep on) ``clock`` instead of the real time."""
    monkeypatch.setattr(tokens, "_now", clock.now)
    monkeypatch.setattr(token_refresh, "_now", clock.now)
    monkeypatch.setattr(token_refresh, "time", clock)
    monkeypatch.setattr(grant_vault, "_now", clock.now)
    monkeypatch.setattr(handover, "time", clock)
    monkeypatch.setattr(purge, "_now", clock.now)
    monkeypatch.setattr(add_request, "_now", clock.now)
    monkeypatch.setattr(status_checks, "_now", clock.now)
    monkeypatch.setattr(sweep, "_now", clock.now)
    monkeypatch.setattr(download_progress, "time", clock)
    monkeypatch.setattr(deadline_module, "time", clock)


class Journal:
    """The names of the fakes' calls, in the order they happened (``"records.mark_ready"`` …)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def note(self, call: str) -> None:
        self.calls.append(call)

    def first(self, call: str) -> int:
        """Where ``call`` first happened (fails the test when it never did)."""
        assert call in self.calls, f"{call} never happened: {self.calls}"
        return self.calls.index(call)


class Faults:
    """Errors to raise, once each, from the named methods of a fake (as a failing AWS call would)."""

    def __init__(self) -> None:
        self._armed: dict[str, ServiceError] = {}

    def arm(self, method: str, error: ServiceError) -> None:
        self._armed[method] = error

    def check(self, method: str) -> None:
        error = self._armed.pop(method, None)
        if error is not None:
            raise error


class Script(Generic[T]):
    """Scripted answers of one TikTok endpoint, one per call, and the calls it received.

    An answer that is an exception is raised; ``meanwhile`` runs during that call, before it answers
    (what another invocation does while this one waits for TikTok). A call beyond the script fails the
    test: a service calling TikTok more often than expected is the bug.
    """

    def __init__(self, name: str, journal: Journal) -> None:
        self._name = name
        self._journal = journal
        self._steps: list[tuple[T | BaseException, Callable[[], None] | None]] = []
        self.calls: list[tuple[Any, ...]] = []

    def then(self, answer: T | BaseException, *, meanwhile: Callable[[], None] | None = None) -> Script[T]:
        self._steps.append((answer, meanwhile))
        return self

    @property
    def count(self) -> int:
        return len(self.calls)

    def answer(self, *call: Any) -> T:
        self._journal.note(self._name)
        self.calls.append(call)
        if not self._steps:
            raise AssertionError(f"{self._name} called more often than scripted: {len(self.calls)} calls")
        answer, meanwhile = self._steps.pop(0)
        if meanwhile is not None:
            meanwhile()
        if isinstance(answer, BaseException):
            raise answer
        return answer


# -- TikTok and the app's credentials ----------------------------------------------------------
class FakeQuota:
    """TikTok's shared quota in memory, answering as ``SharedQuota``'s conditional ``UpdateItem`` does.

    One count per ``"<endpoint> <sub-window start>"`` key; a call is counted while the count is under the
    priority's cap (``attribute_not_exists(calls) OR calls < :cap``), else refused with the seconds to
    the next sub-window. ``failing``: DynamoDB fails, and the call goes ahead uncounted (fail open).
    ``granted`` and ``refused`` keep every answer, ``(epoch seconds, endpoint, priority)``, for tests and
    the scale simulation.

    Args:
        plan: the quota's size.
        clock: epoch seconds now (``lambda: clock.now().timestamp()`` with a :class:`Clock`).
    """

    def __init__(self, plan: QuotaPlan, clock: Callable[[], float]) -> None:
        self.plan = plan
        self._clock = clock
        self.counts: dict[str, int] = {}
        self.granted: list[tuple[float, Endpoint, Priority]] = []
        self.refused: list[tuple[float, Endpoint, Priority]] = []
        self.failing = False

    def take(self, endpoint: Endpoint, priority: Priority) -> float | None:
        now = self._clock()
        if self.failing:
            self.granted.append((now, endpoint, priority))
            return None
        key = window_key(endpoint, window_start(now))
        cap = self.plan.cap(priority)
        if cap <= 0 or self.counts.get(key, 0) >= cap:
            self.refused.append((now, endpoint, priority))
            return until_next_window(now)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.granted.append((now, endpoint, priority))
        return None

    def most_in_a_minute(self, endpoint: Endpoint) -> int:
        """The most calls to ``endpoint`` granted in any 60 s window (sliding, as TikTok counts)."""
        times = sorted(at for at, granted, _ in self.granted if granted is endpoint)
        most, first = 0, 0
        for last, at in enumerate(times):
            while times[first] <= at - 60:
                first += 1
            most = max(most, last - first + 1)
        return most


class FakeTikTok(TikTokClient):
    """TikTok's portability and OAuth endpoints, answering from scripts.

    With a ``quota`` (a :class:`FakeQuota`), every call draws from it first at the unit's priority, as
    the real client's tries do: a refused call raises ``TikTokBudgetExhaustedError`` and is not answered.
    """

    def __init__(self, journal: Journal, quota: QuotaGate | None = None) -> None:
        self.max_attempts = 1
        self.quota = quota
        self.checks: Script[RequestStatus | None] = Script("tiktok.check_request", journal)
        self.adds: Script[int] = Script("tiktok.add_request", journal)
        self.cancels: Script[None] = Script("tiktok.cancel_request", journal)
        self.refreshes: Script[TokenGrant] = Script("tiktok.refresh_tokens", journal)
        self.revokes: Script[bool] = Script("tiktok.revoke_tokens", journal)

    def _draw(self, endpoint: Endpoint, deadline: Deadline) -> None:
        if self.quota is not None:
            wait = self.quota.take(endpoint, deadline.priority)
            if wait is not None:
                raise budget_exhausted(endpoint, wait)

    def check_request(self, request: DownloadRequest, deadline: Deadline) -> RequestStatus | None:
        self._draw(Endpoint.CHECK, deadline)
        return self.checks.answer(request.request_id, request.access_token)

    def add_request(
        self, access_token: str, data_format: str, categories: list[str], deadline: Deadline
    ) -> int:
        self._draw(Endpoint.ADD, deadline)
        return self.adds.answer(access_token, data_format, tuple(categories))

    def cancel_request(self, request: DownloadRequest, deadline: Deadline) -> None:
        self._draw(Endpoint.CANCEL, deadline)
        self.cancels.answer(request.request_id, request.access_token)

    def refresh_tokens(self, app: AppCredentials, refresh_token: str, deadline: Deadline) -> TokenGrant:
        self._draw(Endpoint.REFRESH, deadline)
        return self.refreshes.answer(app.client_secret, refresh_token)

    def revoke_tokens(self, app: AppCredentials, token: str, deadline: Deadline) -> bool:
        self._draw(Endpoint.REVOKE, deadline)
        return self.revokes.answer(app.client_secret, token)


class FakeAppCredentials(AppCredentialsSource):
    """The app's secret: the cached value, and what each fresh read finds (a rotated secret)."""

    def __init__(self, *secrets: str) -> None:
        self._secrets = list(secrets) or ["app-secret"]
        self._current = 0
        self.reads: list[bool] = []  # ``fresh`` of each read

    def get(self, *, fresh: bool = False) -> AppCredentials:
        self.reads.append(fresh)
        if fresh:
            self._current = min(self._current + 1, len(self._secrets) - 1)
        return AppCredentials("app-client-key", self._secrets[self._current])


# -- KMS ---------------------------------------------------------------------------------------
class FakeVault(TokenVault):
    """Seals reversibly, bound to purpose and binding: opened with another one, it raises like KMS."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self.faults = Faults()

    def seal(self, token: str, purpose: str, binding: dict[str, str]) -> str:
        self._journal.note("vault.seal")
        self.faults.check("seal")
        document = {"context": {"purpose": purpose, **binding}, "token": token[::-1]}
        return base64.b64encode(json.dumps(document, sort_keys=True).encode()).decode()

    def open(self, sealed: str, purpose: str, binding: dict[str, str]) -> str:
        self._journal.note("vault.open")
        self.faults.check("open")
        try:
            document = json.loads(base64.b64decode(sealed, validate=True))
        except (binascii.Error, ValueError):
            raise MissingTokenError("the encrypted token is not base64") from None
        if document["context"] != {"purpose": purpose, **binding}:
            raise MissingTokenError("the encrypted token does not decrypt for this request")
        return str(document["token"])[::-1]


# -- DynamoDB: the grants table ----------------------------------------------------------------
class FakeGrants(Grants):
    """The grants table in a dict, with its lease and generation conditions."""

    def __init__(self, clock: Clock, journal: Journal) -> None:
        self._clock = clock
        self._journal = journal
        self.items: dict[str, Grant] = {}
        self.handed_tokens: dict[str, tuple[str, str]] = {}
        self.exchanging: dict[str, tuple[str, datetime]] = {}  # digest → (mark's owner, lapses at)
        self.faults = Faults()

    def _call(self, method: str) -> None:
        self._journal.note(f"grants.{method}")
        self.faults.check(method)

    def get(self, grant_id: str) -> Grant | None:
        self._call("get")
        return self.items.get(grant_id)

    def of_user(self, user_openid: str) -> list[Grant]:
        self._call("of_user")
        return [grant for grant in self.items.values() if grant.user_openid == user_openid]

    def handed(self, digest: str) -> Exchanged | Exchanging | None:
        self._call("handed")
        return self._registry(digest)

    def _registry(self, digest: str) -> Exchanged | Exchanging | None:
        if digest in self.handed_tokens:
            return Exchanged(*self.handed_tokens[digest])
        mark = self.exchanging.get(digest)
        return Exchanging() if mark is not None and mark[1] > self._clock.now() else None

    def begin_exchange(self, digest: str, lease: timedelta) -> str | None:
        self._call("begin_exchange")
        if self._registry(digest) is not None:  # the adapter's condition: nothing, or a lapsed item
            return None
        owner = uuid.uuid4().hex
        self.exchanging[digest] = (owner, self._clock.now() + lease)
        return owner

    def end_exchange(self, digest: str, owner: str) -> None:
        self._journal.note("grants.end_exchange")
        if digest in self.exchanging and self.exchanging[digest][0] == owner:  # only its own mark
            del self.exchanging[digest]

    def adopt(self, grant_id: str, caller: str, user_openid: str | None, tokens: SealedTokens) -> Grant:
        self._call("adopt")
        current = self.items.get(grant_id) or Grant(grant_id, "", None, None, None, None, None)
        adopted = dataclasses.replace(
            _with_tokens(current, tokens),
            caller=caller,
            user_openid=user_openid if user_openid is not None else current.user_openid,
            refresh_owner=None,
            refresh_lease_until=None,
            abandoned_refresh_at=None,
            erasing=False,
            adopted_at=self._clock.now(),
        )
        self.items[grant_id] = adopted
        return adopted

    def remember_handed(self, digest: str, grant_id: str, caller: str) -> None:
        self._call("remember_handed")
        self.exchanging.pop(digest, None)
        self.handed_tokens[digest] = (grant_id, caller)

    def touch(self, grant_id: str) -> bool:
        self._call("touch")
        current = self.items.get(grant_id)
        if current is None:
            return False
        self.items[grant_id] = dataclasses.replace(current, generation=uuid.uuid4().hex)
        return True

    def take_refresh_lease(self, grant: Grant, lease: timedelta) -> Lease | None:
        self._call("take_refresh_lease")
        now = self._clock.now()
        current = self.items.get(grant.grant_id)
        if current is None or current.generation != grant.generation:
            return None
        if current.refresh_lease_until is not None and not current.refresh_lease_until < now:
            return None
        abandoned = grant.abandoned_since(now, lease)
        owner = uuid.uuid4().hex
        self.items[grant.grant_id] = dataclasses.replace(
            current,
            refresh_owner=owner,
            refresh_lease_until=now + lease + timedelta(seconds=1),
            abandoned_refresh_at=abandoned,
        )
        return Lease(owner, abandoned)

    def store_refreshed(self, grant: Grant, owner: str, tokens: SealedTokens) -> str | None:
        self._call("store_refreshed")
        current = self.items.get(grant.grant_id)
        if current is None or (
            current.refresh_owner != owner and current.sealed_refresh_token != grant.sealed_refresh_token
        ):
            return None
        stored = dataclasses.replace(
            _with_tokens(current, tokens),
            refresh_owner=None,
            refresh_lease_until=None,
            abandoned_refresh_at=None,
        )
        self.items[grant.grant_id] = stored
        return stored.generation

    def release_refresh_lease(self, grant_id: str, owner: str) -> bool:
        self._journal.note("grants.release_refresh_lease")
        current = self.items.get(grant_id)
        if current is None or current.refresh_owner != owner:
            return False
        self.items[grant_id] = dataclasses.replace(current, refresh_owner=None, refresh_lease_until=None)
        return True

    def erase_refused(self, grant: Grant) -> bool:
        self._call("erase_refused")
        current = self.items.get(grant.grant_id)
        if current is None or current.generation != grant.generation:
            return False
        del self.items[grant.grant_id]
        return True

    def delete(self, grant_id: str, *, generation: str | None = None, forget_handed: bool = False) -> bool:
        self._call("delete")
        current = self.items.get(grant_id)
        if current is None or (generation is not None and current.generation != generation):
            return False
        del self.items[grant_id]
        # A purge takes the grant's handed-token items along (the adapter deletes those the grant lists).
        if forget_handed:  # only then: the scan is over every handed token (100,000 in bench-scale)
            for digest in [d for d, (into, _) in self.handed_tokens.items() if into == grant_id]:
                del self.handed_tokens[digest]
        return True

    def mark_erasing(self, grant_id: str) -> bool:
        self._call("mark_erasing")
        current = self.items.get(grant_id)
        if current is None:
            return False
        self.items[grant_id] = dataclasses.replace(current, erasing=True)
        return True


def _with_tokens(current: Grant, tokens: SealedTokens) -> Grant:
    """``current`` with ``tokens`` (and a new generation) written over it as the adapter's updates do."""
    return dataclasses.replace(
        current,
        generation=uuid.uuid4().hex,
        sealed_access_token=tokens.sealed_access_token,
        access_expires_at=tokens.access_expires_at,
        sealed_refresh_token=tokens.sealed_refresh_token or current.sealed_refresh_token,
        refresh_expires_at=tokens.refresh_expires_at
        if tokens.sealed_refresh_token
        else current.refresh_expires_at,
    )


# -- DynamoDB: the downloads table -------------------------------------------------------------
class FakeDownloadRecords(DownloadRecords):
    """The downloads table in a dict, every change decided by the lifecycle table, as the adapter's are.

    ``owners`` holds each claim's ``lease_owner`` (which a :class:`DownloadRecord` does not show).
    """

    def __init__(self, clock: Clock, journal: Journal) -> None:
        self._clock = clock
        self._journal = journal
        self.items: dict[int, DownloadRecord] = {}
        self.owners: dict[int, str] = {}
        self.progress_reports: list[Progress] = []
        self.faults = Faults()

    def _call(self, method: str) -> None:
        self._journal.note(f"records.{method}")
        self.faults.check(method)

    def _existing(self, request_id: int) -> DownloadRecord:
        # A condition on an item that does not exist fails with nothing to hold on to.
        record = self.items.get(request_id)
        if record is None:
            raise RecordStoreError("the download record does not exist")
        return record

    def _put(self, record: DownloadRecord) -> DownloadRecord:
        self.items[record.request_id] = record
        return record

    def get(self, request_id: int) -> DownloadRecord | None:
        self._call("get")
        return self.items.get(request_id)

    def of_user(self, user_openid: str) -> list[DownloadRecord]:
        self._call("of_user")
        return [record for record in self.items.values() if record.user_openid == user_openid]

    def _of_caller_user(self, caller: str, user_openid: str) -> list[DownloadRecord]:
        mine = [r for r in self.items.values() if r.caller == caller and r.user_openid == user_openid]
        return sorted(mine, key=lambda r: (r.created_at, r.request_id), reverse=True)

    def of_caller_user(self, caller: str, user_openid: str) -> list[DownloadRecord]:
        self._call("of_caller_user")
        return self._of_caller_user(caller, user_openid)

    def page_of(
        self, caller: str, user_openid: str, limit: int, after: tuple[str, int] | None = None
    ) -> tuple[list[DownloadRecord], tuple[str, int] | None]:
        self._call("page_of")
        mine = self._of_caller_user(caller, user_openid)
        if after is not None:
            mine = [r for r in mine if (format_utc(r.created_at), r.request_id) < after]
        page = mine[:limit]
        # DynamoDB answers a LastEvaluatedKey whenever the Limit stopped the query, even when nothing
        # follows: a full page always has a position after it (the next page may be empty).
        full = bool(page) and len(page) == limit
        return page, (format_utc(page[-1].created_at), page[-1].request_id) if full else None

    def _scheduled(self, before: datetime | None) -> list[DownloadRecord]:
        """The by-schedule index: only waiting records (every other write removes their bucket), by their
        next check, then by request id (DynamoDB's order within equal sort keys is its own)."""
        waiting = [
            r
            for r in self.items.values()
            if r.status is DownloadStatus.WAITING
            and r.preparation is not None
            and r.preparation.next_check_at is not None
            and (before is None or r.preparation.next_check_at < before)
        ]
        return sorted(waiting, key=lambda r: (r.preparation.next_check_at, r.request_id))  # type: ignore[union-attr]

    def count_waiting(self, before: datetime | None = None) -> int:
        self._call("count_waiting")
        return len(self._scheduled(before))

    def overdue(
        self, before: datetime, after: Position | None = None, limit: int = 100
    ) -> tuple[list[DownloadRecord], Position | None]:
        self._call("overdue")
        late = self._scheduled(before)
        if after is not None:
            position = (after["next_check_at"], after["request_id"])
            late = [r for r in late if (r.preparation.next_check_at, r.request_id) > position]  # type: ignore[union-attr]
        page = late[:limit]
        # As DynamoDB: a full page has a position after it, even when nothing follows.
        if not page or len(page) < limit:
            return page, None
        last = page[-1]
        return page, {"next_check_at": last.preparation.next_check_at, "request_id": last.request_id}  # type: ignore[union-attr]

    def reschedule(self, request_id: int, seq: int, next_check_at: datetime) -> DownloadRecord | Unchanged:
        def change(base: DownloadRecord) -> DownloadRecord:
            assert base.preparation is not None
            prep = dataclasses.replace(base.preparation, next_check_at=next_check_at)
            return dataclasses.replace(base, preparation=prep)

        return self._apply("reschedule", Event.REDRIVEN, request_id, change, seq=seq)

    # -- writes: each one of the lifecycle table's transitions, decided by the table ------------------
    def _apply(
        self,
        method: str,
        event: Event,
        request_id: int,
        change: Callable[[DownloadRecord], DownloadRecord] = lambda record: record,
        *,
        seq: int | None = None,
        lease_owner: str | None = None,
        owner: Owner | None = None,
    ) -> DownloadRecord | Unchanged:
        """``event`` on ``request_id`` as the adapter writes it: allowed by the table (and ``owner``), the
        table's fields cleared, its status set, then ``change`` (what the write sets besides)."""
        self._call(method)
        rule = transition(event)
        now = self._clock.now()
        record = self.items.get(request_id)
        allowed = rule.allows(
            record, now, seq=seq, lease_owner=lease_owner, held_by=self.owners.get(request_id)
        )
        if owner is not None and not self._owned(record, owner):
            allowed = False
        if not allowed:
            if record is None:  # a condition on an item that does not exist: nothing to hold on to
                raise RecordStoreError("the download record does not exist")
            return Unchanged(record)
        base = record or DownloadRecord(request_id, rule.target or DownloadStatus.QUEUED, now, now, 0)
        if owner is not None:
            base = self._owner_fields(base, owner)
        base = _cleared(base, rule.clears)
        if rule.clears & {Fields.LEASE, Fields.LEASE_OWNER}:
            self.owners.pop(request_id, None)
        if rule.target is not None:
            base = dataclasses.replace(base, status=rule.target)
        return self._put(change(dataclasses.replace(base, updated_at=now)))

    def create_waiting(
        self,
        request_id: int,
        *,
        caller: str,
        grant_id: str,
        user_openid: str | None,
        preparation: Preparation,
        poll_interval: int,
    ) -> DownloadRecord | Unchanged:
        if preparation.next_check_at is None or preparation.give_up_at is None:
            raise ValueError("a waiting request needs its schedule")
        return self._apply(
            "create_waiting",
            Event.ADD,
            request_id,
            lambda base: dataclasses.replace(
                base,
                created_at=self._clock.now(),
                caller=caller,
                user_openid=user_openid or None,
                grant_id=grant_id,
                preparation=Preparation(
                    data_format=preparation.data_format,
                    categories=tuple(preparation.categories),
                    next_check_at=preparation.next_check_at,
                    give_up_at=preparation.give_up_at,
                ),
                poll_seq=0,
                poll_interval=poll_interval,
            ),
        )

    def advance_schedule(
        self,
        request_id: int,
        seq: int,
        *,
        tiktok_status: str | None,
        apply_time: datetime | None,
        collect_time: datetime | None,
        next_check_at: datetime,
        poll_interval: int,
    ) -> DownloadRecord | Unchanged:
        def change(base: DownloadRecord) -> DownloadRecord:
            checked = self._checked(base, seq, tiktok_status, apply_time, collect_time, next_check_at)
            return dataclasses.replace(checked, poll_interval=poll_interval)

        return self._apply("advance_schedule", Event.CHECKED, request_id, change, seq=seq)

    def mark_ready(
        self,
        request_id: int,
        seq: int,
        *,
        apply_time: datetime | None,
        collect_time: datetime | None,
        lease: timedelta,
    ) -> DownloadRecord | Unchanged:
        def change(base: DownloadRecord) -> DownloadRecord:
            checked = self._checked(base, seq, "downloading", apply_time, collect_time, None)
            return dataclasses.replace(checked, lease_expires_at=self._lease(lease))

        return self._apply("mark_ready", Event.READY, request_id, change, seq=seq)

    def queue_now(self, request_id: int, lease: timedelta) -> DownloadRecord | Unchanged:
        return self._apply(
            "queue_now",
            Event.READY_ANNOUNCED,
            request_id,
            lambda base: dataclasses.replace(
                base, lease_expires_at=self._lease(lease), poll_seq=base.poll_seq + 1
            ),
        )

    def _checked(
        self,
        record: DownloadRecord,
        seq: int,
        tiktok_status: str | None,
        apply_time: datetime | None,
        collect_time: datetime | None,
        next_check_at: datetime | None,
    ) -> DownloadRecord:
        prep = record.preparation
        if prep is not None:
            prep = dataclasses.replace(
                prep,
                checks=prep.checks + 1,
                tiktok_status=tiktok_status[:40] if tiktok_status is not None else prep.tiktok_status,
                apply_time=apply_time or prep.apply_time,
                collect_time=collect_time or prep.collect_time,
                next_check_at=next_check_at,
            )
        return dataclasses.replace(record, poll_seq=seq + 1, preparation=prep)

    def _lease(self, lease: timedelta) -> datetime:
        return self._clock.now() + lease + timedelta(seconds=1)

    def end(
        self,
        request_id: int,
        status: DownloadStatus,
        *,
        error: ServiceError | None = None,
        seq: int | None = None,
        tiktok_status: str | None = None,
    ) -> DownloadRecord | Unchanged:
        def change(base: DownloadRecord) -> DownloadRecord:
            prep = base.preparation
            if prep is not None and tiktok_status is not None:
                prep = dataclasses.replace(prep, tiktok_status=tiktok_status)
            return dataclasses.replace(
                base, error=_recorded(error) if error is not None else base.error, preparation=prep
            )

        return self._apply("end", ending(status, scheduled=seq is not None), request_id, change, seq=seq)

    def set_user(self, record: DownloadRecord, user_openid: str) -> None:
        self._journal.note("records.set_user")
        current = self.items.get(record.request_id)
        if current is not None and current.user_openid is None:
            self._put(dataclasses.replace(current, user_openid=user_openid))

    @staticmethod
    def _owned(record: DownloadRecord | None, owner: Owner) -> bool:
        """The adapter's ownership condition (see ``record_conditions.ownership``)."""
        if owner.service:
            return record is not None
        return record is None or record.caller == owner.caller

    @staticmethod
    def _owner_fields(base: DownloadRecord, owner: Owner) -> DownloadRecord:
        if owner.service:
            return base
        return dataclasses.replace(
            base,
            caller=base.caller or owner.caller,
            user_openid=base.user_openid or owner.user_openid,
            grant_id=base.grant_id or owner.grant_id,
        )

    def claim(
        self, request_id: int, bucket: str, key: str, lease: timedelta, owner: Owner
    ) -> Claimed | Unchanged:
        lease_owner = uuid.uuid4().hex

        def change(base: DownloadRecord) -> DownloadRecord:
            return dataclasses.replace(
                base,
                lease_expires_at=self._lease(lease),
                attempts=base.attempts + 1,
                bucket=bucket,
                key=key,
                poll_seq=base.poll_seq + 1,
            )

        claimed = self._apply("claim", Event.CLAIM, request_id, change, owner=owner)
        if isinstance(claimed, Unchanged):
            return claimed
        self.owners[request_id] = lease_owner
        return Claimed(claimed, lease_owner)

    def enqueue(self, request_id: int, lease: timedelta, owner: Owner) -> DownloadRecord | Unchanged:
        return self._apply(
            "enqueue",
            Event.QUEUE,
            request_id,
            lambda base: dataclasses.replace(
                base, lease_expires_at=self._lease(lease), poll_seq=base.poll_seq + 1
            ),
            owner=owner,
        )

    def abandon(self, request_id: int, error: ServiceError) -> None:
        with contextlib.suppress(RecordStoreError):
            self._apply(
                "abandon",
                Event.ABANDON,
                request_id,
                lambda base: dataclasses.replace(base, error=_recorded(error)),
            )

    def report_progress(self, claim: Claimed, progress: Progress) -> Unchanged | None:
        def change(base: DownloadRecord) -> DownloadRecord:
            self.progress_reports.append(progress)
            return dataclasses.replace(base, progress=progress, updated_at=progress.at)

        reported = self._apply(
            "report_progress", Event.PROGRESS, claim.record.request_id, change, lease_owner=claim.owner
        )
        return reported if isinstance(reported, Unchanged) else None

    def complete(
        self, claim: Claimed, size_bytes: int, checksum: str, manifest: dict[str, Any] | None = None
    ) -> DownloadRecord:
        def change(base: DownloadRecord) -> DownloadRecord:
            return dataclasses.replace(
                base,
                size_bytes=size_bytes,
                checksum=checksum,
                completed_at=self._clock.now(),
                manifest=manifest,
            )

        done = self._apply(
            "complete", Event.COMPLETE, claim.record.request_id, change, lease_owner=claim.owner
        )
        return done.record if isinstance(done, Unchanged) else done  # a lost claim: that state stands

    def fail(self, claim: Claimed, error: ServiceError) -> DownloadRecord:
        failed = self._apply(
            "fail",
            Event.FAIL,
            claim.record.request_id,
            lambda base: dataclasses.replace(base, error=_recorded(error)),
            lease_owner=claim.owner,
        )
        return failed.record if isinstance(failed, Unchanged) else failed

    def unclaim(self, claim: Claimed) -> DownloadRecord:
        given = self._apply(
            "unclaim", Event.UNCLAIM, claim.record.request_id, lambda base: base, lease_owner=claim.owner
        )
        return given.record if isinstance(given, Unchanged) else given


def _cleared(record: DownloadRecord, groups: frozenset[Fields]) -> DownloadRecord:
    """``record`` without the fields of ``groups``, as the adapter's ``REMOVE`` leaves it."""
    if Fields.LEASE in groups:
        record = dataclasses.replace(record, lease_expires_at=None)
    if Fields.SCHEDULE in groups:
        prep = record.preparation
        record = dataclasses.replace(
            record,
            poll_interval=None,
            preparation=dataclasses.replace(prep, next_check_at=None) if prep is not None else None,
        )
    if Fields.PROGRESS in groups:
        record = dataclasses.replace(record, progress=None)
    if Fields.ERROR in groups:
        record = dataclasses.replace(record, error=None)
    if Fields.ARCHIVE in groups:
        record = dataclasses.replace(
            record, bucket=None, key=None, size_bytes=None, checksum=None, manifest=None
        )
    return record


def _recorded(error: ServiceError) -> RecordedError:
    return RecordedError(error.error_code, error.message[:1000], error.log_id, error.is_transient)


# -- SQS, EventBridge --------------------------------------------------------------------------
class FakeLifecycleQueue(LifecycleQueue):
    """Records the status checks sent (``(request_id, seq, delay_seconds)`` as asked, not clamped) and
    every other message with its delay."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self.checks: list[tuple[int, int, int]] = []
        self.messages: list[tuple[LifecycleMessage, int]] = []
        self.faults = Faults()
        self.refusing: set[int] = set()  # request ids whose checks a batch send refuses

    def schedule_check(self, request_id: int, seq: int, delay_seconds: int) -> None:
        self._journal.note("queue.schedule_check")
        self.faults.check("schedule_check")
        self.checks.append((request_id, seq, delay_seconds))

    def schedule_checks(self, checks: Sequence[tuple[StatusCheck, int]]) -> set[StatusCheck]:
        self._journal.note("queue.schedule_checks")
        self.faults.check("schedule_checks")
        refused = {check for check, _ in checks if check.request_id in self.refusing}
        self.checks += [(c.request_id, c.seq, delay) for c, delay in checks if c not in refused]
        return refused

    def send(self, message: LifecycleMessage, delay_seconds: int = 0) -> None:
        if isinstance(message, StatusCheck):
            self.schedule_check(message.request_id, message.seq, delay_seconds)
            return
        self._journal.note("queue.send")
        self.faults.check("send")
        self.messages.append((message, delay_seconds))


class FakeCheckFloor(CheckFloor):
    """The checks' floor as the sweeper last stored it (``stored``: every store, with its count)."""

    def __init__(self, journal: Journal, seconds: int = 0) -> None:
        self._journal = journal
        self.floor = seconds
        self.stored: list[tuple[int, int]] = []

    def seconds(self) -> int:
        self._journal.note("floor.seconds")
        return self.floor

    def store(self, waiting: int, floor_seconds: int) -> None:
        self._journal.note("floor.store")
        self.stored.append((waiting, floor_seconds))
        self.floor = floor_seconds


class FakeDownloadJobs(DownloadJobs):
    """Records the download jobs sent (with a token, or for the user's grant)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self.sent: list[tuple[int, str]] = []
        self.for_grant: list[int] = []
        self.faults = Faults()

    def send(self, request_id: int, access_token: str) -> str:
        self._journal.note("jobs.send")
        self.faults.check("send")
        self.sent.append((request_id, access_token))
        return f"message-{len(self.sent)}"

    def send_for_grant(self, request_id: int) -> None:
        self._journal.note("jobs.send_for_grant")
        self.faults.check("send_for_grant")
        self.for_grant.append(request_id)


class FakeEvents(DownloadEvents):
    """Records what would be put on the bus: ``(detail_type, detail)``, as the adapter builds them."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def publish(self, record: DownloadRecord) -> None:
        self._journal.note("events.publish")
        detail_type = DETAIL_TYPES.get(record.status)
        if detail_type is not None:
            self.sent.append((detail_type, event_detail(record)))

    def publish_user_event(self, detail_type: str, detail: dict[str, Any]) -> None:
        self._journal.note("events.publish_user_event")
        self.sent.append((detail_type, detail))

    @property
    def detail_types(self) -> list[str]:
        return [detail_type for detail_type, _ in self.sent]


# -- the transfer (TikTok → S3) ----------------------------------------------------------------
class FakeTransfer(ArchiveTransfer):
    """Stores an archive of ``size`` bytes at once; ``during`` acts inside the transfer.

    ``discard`` notes the request and answers how many of its ``open_uploads`` it aborted.

    ``during(request, on_part)`` may report progress, change the record meanwhile, or raise (a failed
    transfer). The deadline is the real arithmetic (on whatever clock :class:`Deadline` reads).
    """

    BUCKET = "archive-bucket"

    def __init__(self, journal: Journal, size: int = 5 * 1024 * 1024) -> None:
        self._journal = journal
        self._size = size
        self.during: Callable[[DownloadRequest, PartListener | None], None] | None = None
        self.runs: list[DownloadRequest] = []
        self.deadlines: list[Deadline] = []
        self.discarded: list[int] = []
        self.open_uploads: dict[int, int] = {}  # request_id → multipart uploads a crashed download left
        self.faults = Faults()

    def location(self, request_id: int) -> tuple[str, str]:
        return self.BUCKET, f"archives/{request_id}.zip"

    def run(
        self, request: DownloadRequest, deadline: Deadline, watch: TransferWatch | None = None
    ) -> DownloadResult:
        self._journal.note("transfer.run")
        self.runs.append(request)
        self.deadlines.append(deadline)
        if self.during is not None:
            try:
                self.during(request, watch.part_done if watch is not None else None)
            except ServiceError:
                # As the real transfer: a failure the watch says was a stop on purpose is that stop.
                stop = watch.stopped() if watch is not None else None
                if stop is not None:
                    raise stop from None
                raise
        bucket, key = self.location(request.request_id)
        url, expires_at = self.link(request.request_id)
        return DownloadResult(
            request.request_id, StoredArchive(bucket, key, self._size, "AAAAAA=="), url, expires_at
        )

    def discard(self, request_id: int) -> int:
        self._journal.note("transfer.discard")
        self.faults.check("discard")
        self.discarded.append(request_id)
        return self.open_uploads.pop(request_id, 0)

    def link(self, request_id: int) -> tuple[str, datetime]:
        _, key = self.location(request_id)
        return f"https://{self.BUCKET}.example/{key}", START + timedelta(hours=1)
