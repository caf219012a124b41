"""The Lambda functions as the template runs them: queue consumers with batch sizes and concurrency.

:class:`QueueConsumer` is an SQS event source mapping: at most ``concurrency`` invocations at once
(``MaximumConcurrency``), each taking up to ``batch`` visible messages and working them one after the
other; a message's work takes the time its calls took (:class:`Meter`). What the handlers themselves do
is modelled here, explicitly, around the real use cases:

- the lifecycle handler's pacing (one TikTok call per ``STATUS_POLL_PACE_MS`` per invocation: a sleep the
  invocation is billed for), its pause after a 429 (the batch's other TikTok work handed back,
  ``ChangeMessageVisibility``);
- ``settle``: work TikTok's shared budget deferred is sent again with its delay (a new message), a
  permanent failure is acknowledged, a transient one comes back after its ``redeliver_after`` or the
  queue's visibility timeout, and dies after ``MaxReceiveCount`` receives.

Every invocation is billed its wall time (pacing sleeps included) plus :data:`OVERHEAD_SECONDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import ServiceError
from tiktok_archive.models.tiktok_errors import TikTokBudgetExhaustedError

from .aws import LATENCY, CountingJournal, Message, SimQueue
from .tiktok import LATENCY as TIKTOK_LATENCY
from .tiktok import SimTikTok

OVERHEAD_SECONDS = 0.01  # the handler, Powertools, the batch processor: a warm invocation's own time
UNIT_ATTEMPTS = 12  # ATTEMPTS_PER_UNIT's default: 3 × TIKTOK_MAX_ATTEMPTS
# A status check's time as modelled: TikTok's answer; the record and the grant read, the token opened,
# the next check sent and the record written (what the week without webhooks measures, refreshes aside).
CHECK_SECONDS = TIKTOK_LATENCY["check"] + 3 * LATENCY["records"] + LATENCY["vault"] + LATENCY["queue"]


@dataclass
class Billing:
    """One function's invocations and billed seconds."""

    invocations: int = 0
    seconds: float = 0.0

    def bill(self, seconds: float) -> None:
        self.invocations += 1
        self.seconds += max(0.001, seconds) + OVERHEAD_SECONDS


class Meter:
    """How long a piece of work took: its AWS requests' and TikTok calls' time (see their latencies)."""

    def __init__(self, journal: CountingJournal, tiktok: SimTikTok) -> None:
        self._journal = journal
        self._tiktok = tiktok
        self._mark = 0.0

    def start(self) -> None:
        self._tiktok.spent = 0.0
        self._mark = self._journal.busy

    def seconds(self) -> float:
        return self._journal.busy - self._mark + self._tiktok.spent


@dataclass
class Outcome:
    """A message's fate: acknowledged (``back_after`` None) or visible again after ``back_after`` s."""

    seconds: float
    back_after: float | None = None


@dataclass
class Invocation:
    """One invocation of a queue's function: its batch, where it is, and what its messages share."""

    started: float
    messages: list[Message]
    next_at: float
    index: int = 0
    last_call: float = -1e9  # when its last TikTok call began (the pace)
    paused_until: float = 0.0
    deadline: Deadline = field(default_factory=lambda: Deadline.after(0))


Handler = Callable[[Message, Invocation, float], Outcome]


class QueueConsumer:
    """An event source mapping and its function: a :class:`~.loop.Source` for the event loop.

    ``handle(message, invocation, now)`` works one message and says its outcome.
    """

    def __init__(
        self,
        queue: SimQueue,
        handle: Handler,
        *,
        batch: int,
        concurrency: int,
        visibility: float,
        deadline_seconds: float,
        journal: CountingJournal,
    ) -> None:
        self.queue = queue
        self._handle = handle
        self._batch = batch
        self._concurrency = concurrency
        self._visibility = visibility
        self._deadline_seconds = deadline_seconds
        self._journal = journal
        self.running: list[Invocation] = []
        self.billing = Billing()

    def next_time(self) -> float | None:
        due = min((invocation.next_at for invocation in self.running), default=None)
        if len(self.running) < self._concurrency:
            head = self.queue.head_time()
            if head is not None and (due is None or head < due):
                return head
        return due

    def step(self, now: float) -> None:
        running = min(self.running, key=lambda invocation: invocation.next_at, default=None)
        if running is None or running.next_at > now:
            messages = self.queue.receive(now, self._batch)
            if messages:
                # The invocation's deadline (its timeout less the margin), on the simulated clock.
                self.running.append(
                    Invocation(now, messages, now, deadline=Deadline.after(self._deadline_seconds))
                )
            return
        if running.index >= len(running.messages):
            self.running.remove(running)
            self.billing.bill(running.next_at - running.started)
            self._journal.note("sqs.delete_batch")
            return
        message = running.messages[running.index]
        outcome = self._handle(message, running, now)
        running.index += 1
        running.next_at = now + outcome.seconds
        if outcome.back_after is not None:
            self.queue.hand_back(message, now + outcome.back_after)

    def fail(self, error: ServiceError, message: Message) -> float | None:
        """``settle``: when a failed message comes back (None: acknowledged).

        Work the quota had no call for is sent again with its delay as a new message (receive count 0)
        and this one acknowledged; a permanent failure is acknowledged.
        """
        if isinstance(error, TikTokBudgetExhaustedError) and error.redeliver_after is not None:
            self._journal.note("queue.send")
            self.queue.send(message.body, error.redeliver_after)
            return None
        if not error.is_transient:
            return None
        if error.redeliver_after is not None:
            self._journal.note("sqs.change_visibility")
            return float(error.redeliver_after)
        return self._visibility
