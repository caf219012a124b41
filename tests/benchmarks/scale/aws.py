"""AWS for the simulation: the unit tests' fakes, counted, indexed for 100,000 records, and queues with time.

- :class:`CountingJournal` replaces the fakes' journal (a list of every call, too big at this scale) with
  a counter of the same names; :func:`aws_requests` turns those names into billed requests.
- :class:`IndexedRecords` is :class:`FakeDownloadRecords` with the indexes DynamoDB has (by caller and
  user, by schedule) kept beside the items, so that a query costs what it returns, not a scan of every
  record; the writes and their conditions are the fake's own (the lifecycle table's).
- :class:`SimQueue` is an SQS queue: messages visible after their delay, received in batches, handed back
  with a new visibility, dead after ``max_receives``; the lifecycle and download queues' adapters
  (:class:`SimLifecycleQueue`, :class:`SimDownloadJobs`) send into one each.
- :class:`SimTransfer` stands for the transfer (TikTok's download endpoint → S3 multipart): one call
  against the download quota, the S3 requests of a multipart upload, and a duration from the size.
- :class:`SimDeliveries` is the webhook deliveries table; :class:`SimEvents` the event bus.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tests.unit.fakes import START, Clock, FakeDownloadRecords, FakeQuota, FakeTransfer, Journal
from tiktok_archive.adapters.check_floor import CheckFloor
from tiktok_archive.adapters.download_events import DETAIL_TYPES, DownloadEvents
from tiktok_archive.adapters.download_jobs import DownloadJobs
from tiktok_archive.adapters.lifecycle_queue import MAX_BATCH, MAX_DELAY_SECONDS, LifecycleQueue
from tiktok_archive.adapters.record_schedule import Position
from tiktok_archive.adapters.webhook_deliveries import Arrival, WebhookDeliveries
from tiktok_archive.logic.transfer import TransferWatch
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest, DownloadResult, StoredArchive
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus
from tiktok_archive.models.messages import DownloadJob, LifecycleMessage, StatusCheck
from tiktok_archive.models.tiktok_quota import Endpoint, Priority, QuotaPlan

from .tiktok import SimTikTok

MIB = 1048576
PART_BYTES = 8 * MIB  # PART_SIZE_MIB derived for 512 MB
RECORD_KB = 1.0  # a download record's size (RRU: 4 KB each)


# Seconds one request takes from Lambda in the same region (an assumption, for the functions' durations).
LATENCY = {
    "records": 0.006,
    "grants": 0.006,
    "deliveries": 0.006,
    "vault": 0.008,
    "queue": 0.012,
    "jobs": 0.012,
    "sqs": 0.012,
    "events": 0.015,
    "s3": 0.02,
}


class CountingJournal(Journal):
    """The fakes' journal as a counter of call names (``records.get`` …) and the time they took."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.busy = 0.0

    def note(self, call: str) -> None:
        self.counts[call] += 1
        self.busy += LATENCY.get(call.partition(".")[0], 0.0)


# Journal names → (service, request kind). Reads are strongly consistent GetItem/Query (1 RRU per 4 KB),
# writes conditional PutItem/UpdateItem/DeleteItem (1 WRU per KB, charged when the condition fails too).
_DYNAMODB_READS = {"get", "of_user", "of_caller_user", "page_of", "overdue", "handed", "count_waiting"}


def aws_requests(counts: Counter[str]) -> Counter[str]:
    """The billed AWS requests behind the fakes' call names."""
    billed: Counter[str] = Counter()
    for name, count in counts.items():
        table, _, method = name.partition(".")
        if table in ("records", "grants", "deliveries", "floor", "quota"):
            billed["dynamodb.read" if method in _DYNAMODB_READS else "dynamodb.write"] += count
        elif table == "vault":
            billed["kms"] += count
        elif table in ("queue", "jobs"):
            billed["sqs.send"] += count
        elif table == "events":
            billed["eventbridge"] += count
        elif table in ("sqs", "s3", "dynamodb", "apigateway", "eventbridge"):
            billed[name] += count
    return billed


class IndexedRecords(FakeDownloadRecords):
    """The fake downloads table with its by-user and by-schedule indexes kept as it changes."""

    def __init__(self, clock: Clock, journal: Journal) -> None:
        super().__init__(clock, journal)
        self._by_caller_user: dict[tuple[str | None, str | None], set[int]] = {}
        self._waiting: set[int] = set()
        self._late: list[tuple[datetime, int]] = []
        self._late_before: datetime | None = None

    def _put(self, record: DownloadRecord) -> DownloadRecord:
        old = self.items.get(record.request_id)
        if old is not None and (old.caller, old.user_openid) != (record.caller, record.user_openid):
            self._by_caller_user.get((old.caller, old.user_openid), set()).discard(record.request_id)
        self._by_caller_user.setdefault((record.caller, record.user_openid), set()).add(record.request_id)
        if record.status is DownloadStatus.WAITING:
            self._waiting.add(record.request_id)
        else:
            self._waiting.discard(record.request_id)
        return super()._put(record)

    def _of_caller_user(self, caller: str, user_openid: str) -> list[DownloadRecord]:
        mine = [self.items[i] for i in self._by_caller_user.get((caller, user_openid), ())]
        return sorted(mine, key=lambda r: (r.created_at, r.request_id), reverse=True)

    def _due(self, record: DownloadRecord) -> datetime | None:
        return record.preparation.next_check_at if record.preparation is not None else None

    def count_waiting(self, before: datetime | None = None) -> int:
        """A ``Select=COUNT`` query of the by-schedule index: it reads every item it counts."""
        self._call("count_waiting")
        if before is None:
            count = sum(1 for i in self._waiting if self._due(self.items[i]) is not None)
        else:
            count = sum(
                1 for i in self._waiting if (due := self._due(self.items[i])) is not None and due < before
            )
        # Eventually consistent, about 1 KB a record: half a read unit per 4 KB (the first is the call's).
        self._journal.counts["dynamodb.read"] += max(0, math.ceil(count * RECORD_KB / 8) - 1)
        return count

    def overdue(
        self, before: datetime, after: Position | None = None, limit: int = 100
    ) -> tuple[list[DownloadRecord], Position | None]:
        """A page of the by-schedule index before ``before`` (the sweep's run sorts it once)."""
        self._call("overdue")
        if self._late_before != before:
            late = []
            for request_id in self._waiting:
                record = self.items[request_id]
                due = self._due(record)
                if due is not None and due < before:
                    late.append((due, request_id))
            late.sort()
            self._late, self._late_before = late, before
        start = (
            0
            if after is None
            else bisect.bisect_right(self._late, (after["next_check_at"], after["request_id"]))
        )
        keys = self._late[start : start + limit]
        page = [self.items[request_id] for _, request_id in keys]
        if not page or len(page) < limit:
            return page, None
        return page, {"next_check_at": keys[-1][0], "request_id": keys[-1][1]}

    @property
    def waiting(self) -> int:
        return len(self._waiting)


@dataclass(order=True)
class Message:
    """An SQS message: visible from ``visible_at``; ``receives`` so far."""

    visible_at: float
    order: int
    body: Any = field(compare=False)
    sent_at: float = field(compare=False, default=0.0)
    receives: int = field(compare=False, default=0)


class SimQueue:
    """An SQS standard queue in time (oldest visible first), with its dead-letter count."""

    def __init__(self, name: str, journal: CountingJournal, now: Callable[[], float], max_receives: int = 5):
        self.name = name
        self._journal = journal
        self._now = now
        self.max_receives = max_receives
        self._heap: list[Message] = []
        self._order = itertools.count()
        self.dead: list[Message] = []

    def __len__(self) -> int:
        return len(self._heap)

    def send(self, body: Any, delay: float = 0.0) -> None:
        now = self._now()
        heapq.heappush(self._heap, Message(now + delay, next(self._order), body, now))

    def head_time(self) -> float | None:
        return self._heap[0].visible_at if self._heap else None

    def receive(self, now: float, batch: int) -> list[Message]:
        """Up to ``batch`` visible messages (one ReceiveMessage)."""
        taken: list[Message] = []
        while self._heap and self._heap[0].visible_at <= now and len(taken) < batch:
            message = heapq.heappop(self._heap)
            message.receives += 1
            taken.append(message)
        self._journal.note("sqs.receive")
        return taken

    def hand_back(self, message: Message, visible_at: float) -> None:
        """A failed message: visible again at ``visible_at``, or dead after ``max_receives``."""
        if message.receives >= self.max_receives:
            self.dead.append(message)
            return
        message.visible_at = visible_at
        message.order = next(self._order)
        heapq.heappush(self._heap, message)


class SimLifecycleQueue(LifecycleQueue):
    """The lifecycle queue's adapter, sending into a :class:`SimQueue` (delays clamped as SQS does)."""

    def __init__(self, journal: CountingJournal, queue: SimQueue) -> None:
        self._journal = journal
        self.queue = queue

    def schedule_check(self, request_id: int, seq: int, delay_seconds: int) -> None:
        self.send(StatusCheck(request_id, seq), delay_seconds)

    def send(self, message: LifecycleMessage, delay_seconds: int = 0) -> None:
        self._journal.note("queue.send")
        self.queue.send(message, max(0, min(delay_seconds, MAX_DELAY_SECONDS)))

    def schedule_checks(self, checks: Sequence[tuple[StatusCheck, int]]) -> set[StatusCheck]:
        """Ten to a ``SendMessageBatch`` (one request each); SQS refuses none here."""
        self._journal.counts["queue.send_batch"] += math.ceil(len(checks) / MAX_BATCH)
        for check, delay in checks:
            self.queue.send(check, max(0, min(delay, MAX_DELAY_SECONDS)))
        return set()


class SimQuota(FakeQuota):
    """The shared quota (``SharedQuota``'s arithmetic, as the unit tests' fake answers it), counted.

    Each try is one conditional ``UpdateItem`` (charged when refused too); ``refusals`` per endpoint.
    The fake's lists of every answer are not kept (millions at this scale).
    """

    def __init__(self, plan: QuotaPlan, clock: Callable[[], float], journal: CountingJournal) -> None:
        super().__init__(plan, clock)
        self._journal = journal
        self.refusals: Counter[str] = Counter()
        self._window = 0.0

    def take(self, endpoint: Endpoint, priority: Priority) -> float | None:
        self._journal.note("quota.take")
        wait = super().take(endpoint, priority)
        if wait is not None:
            self.refusals[endpoint.value] += 1
        self.granted.clear()
        self.refused.clear()
        now = self._clock()
        if now - self._window > 600:  # the table's TTL: counters of sub-windows long gone
            self._window = now
            self.counts = {k: v for k, v in self.counts.items() if float(k.rpartition(" ")[2]) > now - 120}
        return wait


class SimCheckFloor(CheckFloor):
    """The checks' floor: one item of the downloads table, read by a container at most every 5 minutes."""

    def __init__(self, journal: CountingJournal, now: Callable[[], float]) -> None:
        self._journal = journal
        self._now = now
        self.floor = 0
        self._read_at = -1e9

    def seconds(self) -> int:
        if self._now() - self._read_at >= 300:
            self._read_at = self._now()
            self._journal.note("floor.get")
        return self.floor

    def store(self, waiting: int, floor_seconds: int) -> None:
        self._journal.note("floor.store")
        self.floor = floor_seconds


class SimDownloadJobs(DownloadJobs):
    """The download queue's adapter, sending into a :class:`SimQueue`."""

    def __init__(self, journal: CountingJournal, queue: SimQueue) -> None:
        self._journal = journal
        self.queue = queue

    def send_for_grant(self, request_id: int) -> None:
        self._journal.note("jobs.send_for_grant")
        self.queue.send(DownloadJob(request_id, from_grant=True))


class SimEvents(DownloadEvents):
    """The event bus: counts the events the adapter would put (one PutEvents each)."""

    def __init__(self, journal: CountingJournal) -> None:
        self._journal = journal

    def publish(self, record: DownloadRecord) -> None:
        if DETAIL_TYPES.get(record.status) is not None:
            self._journal.note("events.put")

    def publish_user_event(self, detail_type: str, detail: dict[str, Any]) -> None:
        self._journal.note("events.put")


class SimDeliveries(WebhookDeliveries):
    """The webhook deliveries table: a conditional put per arrival, an update once queued."""

    def __init__(self, journal: CountingJournal) -> None:
        self._journal = journal
        self.state: dict[str, str] = {}

    def arrived(self, delivery_id: str, event: str) -> Arrival:
        self._journal.note("deliveries.put")
        if delivery_id in self.state:
            return Arrival.DONE if self.state[delivery_id] == "queued" else Arrival.IN_FLIGHT
        self.state[delivery_id] = "received"
        return Arrival.NEW

    def queued(self, delivery_id: str) -> None:
        self._journal.note("deliveries.update")
        self.state[delivery_id] = "queued"

    def forget(self, delivery_id: str) -> None:
        self._journal.note("deliveries.delete")
        self.state.pop(delivery_id, None)


class SimTransfer(FakeTransfer):
    """TikTok's download endpoint into S3 multipart: one download call, the S3 requests, the time.

    ``throughput`` in bytes a second; the time is added to the client's ``spent``; progress is recorded
    every 3 s of it (one UpdateItem each), as :class:`ClaimedDownload`'s reporter does.
    """

    def __init__(self, journal: CountingJournal, tiktok: SimTikTok, throughput: float) -> None:
        super().__init__(journal)
        self._counts = journal
        self._sim = tiktok
        self._throughput = throughput
        self.stored_bytes = 0

    def run(
        self, request: DownloadRequest, deadline: Deadline, watch: TransferWatch | None = None
    ) -> DownloadResult:
        size = self._sim.download(request, deadline)
        seconds = size / self._throughput
        self._sim.spent += seconds
        parts = max(1, math.ceil(size / PART_BYTES))
        self._counts.note("s3.create_multipart")
        self._counts.counts["s3.upload_part"] += parts
        self._counts.note("s3.complete_multipart")
        self._counts.counts["records.report_progress"] += int(seconds // 3)
        self.stored_bytes += size
        bucket, key = self.location(request.request_id)
        return DownloadResult(
            request.request_id,
            StoredArchive(bucket, key, size, "AAAAAA=="),
            f"https://{bucket}.example/{key}",
            START + timedelta(hours=1),
        )
