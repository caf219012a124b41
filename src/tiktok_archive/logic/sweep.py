"""The sweeper's run: the budget's floor from the number of waiting requests, and lost chains re-driven.

Every run (EventBridge Scheduler, every few minutes):

1. counts the waiting requests and stores the floor interval at which all their checks fit the check
   budget (:class:`CheckFloor`): every check spaces the next one at least that far apart;
2. finds the waiting requests whose next check is :data:`OVERDUE_FOR` late — their chain of delayed
   messages was lost (a message that could not be sent, one left in the dead-letter queue) — page by
   page, however many, and sends each its expected check again, ten to a ``SendMessageBatch``, their
   delays spread so that they use what the lost chains would have (one floor interval for all of them:
   :meth:`CheckBudget.redrive_spacing`). Each record then says when its check is due, so it is no longer
   overdue: a run that runs out of time stops between two pages and the next run goes on from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from tiktok_archive.adapters.check_floor import CheckFloor
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.lifecycle_queue import MAX_DELAY_SECONDS, LifecycleQueue
from tiktok_archive.models.check_schedule import CheckBudget
from tiktok_archive.models.clock import utc_now as _now  # tests freeze this module's clock
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download_record import DownloadRecord
from tiktok_archive.models.messages import StatusCheck
from tiktok_archive.observability import logger

# A check this late was lost (a chain's message is late by seconds at most, or by TikTok's Retry-After,
# which the record's next_check_at already includes).
OVERDUE_FOR = timedelta(minutes=10)
# Records read, sent and rescheduled at a time, and the time a page may take at most (a query, the
# batches, a conditional write each): a run starts no page it may not finish.
PAGE_SIZE = 100
PAGE_SECONDS = 10.0


@dataclass(frozen=True)
class SweepOutcome:
    """What a run did.

    ``waiting`` requests, their ``floor_seconds``, ``redriven`` lost checks sent again, and whether it went
    through every overdue one (``finished``; else the next run goes on).
    """

    waiting: int
    floor_seconds: int
    redriven: int
    finished: bool


class Sweep:
    """The sweeper's use case.

    Args:
        records: the downloads table.
        queue: the lifecycle queue.
        floor: where the checks read the floor.
        budget: the status checks' share of TikTok's quota.
        page_size: overdue records a page.
    """

    def __init__(
        self,
        records: DownloadRecords,
        queue: LifecycleQueue,
        floor: CheckFloor,
        budget: CheckBudget,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._records = records
        self._queue = queue
        self._floor = floor
        self._budget = budget
        self._page_size = page_size

    def run(self, deadline: Deadline) -> SweepOutcome:
        """Count, store the floor, re-drive every overdue check that fits before ``deadline``.

        Raises:
            ServiceError: only transient failures of AWS (the next run does it again).
        """
        overdue_before = _now() - OVERDUE_FOR
        waiting = self._records.count_waiting()
        floor = self._budget.floor_seconds(waiting)
        self._floor.store(waiting, floor)
        overdue = self._records.count_waiting(before=overdue_before)
        spacing = self._budget.redrive_spacing(waiting, overdue)
        logger.info("waiting requests counted", extra={"waiting": waiting, "floor_seconds": floor})
        redriven, seen, position = 0, 0, None
        while deadline.remaining() > PAGE_SECONDS:
            page, position = self._records.overdue(overdue_before, position, self._page_size)
            redriven += self._redrive(page, seen, spacing)
            seen += len(page)
            if position is None:
                return SweepOutcome(waiting, floor, redriven, finished=True)
        logger.warning(
            "the sweep ran out of time; the next run goes on with the checks still overdue",
            extra={"redriven": redriven, "overdue": overdue},
        )
        return SweepOutcome(waiting, floor, redriven, finished=False)

    def _redrive(self, page: list[DownloadRecord], before: int, spacing: float) -> int:
        """Send ``page``'s expected checks again, the n-th of the run after n × ``spacing`` seconds."""
        now = _now()
        planned = [
            (StatusCheck(record.request_id, record.poll_seq), round((before + number) * spacing))
            for number, record in enumerate(page)
        ]
        refused = self._queue.schedule_checks(
            [(check, min(delay, MAX_DELAY_SECONDS)) for check, delay in planned]
        )
        sent = 0
        for check, delay in planned:
            if check in refused:
                continue  # still overdue: the next run sends it
            # Sent first, then recorded: a lost write sends it once more next run, never loses it.
            self._records.reschedule(check.request_id, check.seq, now + timedelta(seconds=delay))
            sent += 1
        if page:
            logger.warning(
                "status checks re-driven: their chains were lost",
                extra={
                    "redriven": sent,
                    "refused": len(refused),
                    "first_request_id": str(page[0].request_id),
                    "last_in_seconds": planned[-1][1],
                },
            )
        return sent
