"""One scenario of the scale simulation: the real use cases on counted fakes, TikTok's model, the functions.

:func:`run` builds the world (:func:`build`), schedules the users' ``POST /requests`` and TikTok's
webhooks, lets the lifecycle function, the worker and the sweeper do their work on the simulated clock,
and returns what was measured (:class:`Result`). The use cases are built in one place,
:func:`use_cases`, as ``runtime.py`` builds them: wiring a new piece of the service in is a change there.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from tests.conftest import BACKEND_CALLER
from tests.harness.tiktok_emulator import sign, webhook_body
from tests.unit.fakes import START, FakeAppCredentials, FakeGrants, FakeVault, freeze_time
from tiktok_archive.logic.add_request import AddRequest
from tiktok_archive.logic.claimed_download import ClaimedDownload
from tiktok_archive.logic.handover import TokenHandover
from tiktok_archive.logic.queued_downloads import QueuedDownloads
from tiktok_archive.logic.status_checks import ArchiveReady, StatusChecks
from tiktok_archive.logic.sweep import Sweep
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.logic.webhooks import WebhookReceiver
from tiktok_archive.models.check_schedule import CheckBudget, Schedule
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download_record import DownloadStatus
from tiktok_archive.models.errors import ServiceError
from tiktok_archive.models.messages import TIKTOK_WORK, ArchiveReadyWork, DownloadJob, StatusCheck
from tiktok_archive.models.portability import HandedTokens, NewRequest
from tiktok_archive.models.tiktok_quota import Priority, QuotaPlan
from tiktok_archive.observability import logger, metrics

from . import speed
from .aws import (
    CountingJournal,
    IndexedRecords,
    Message,
    SimCheckFloor,
    SimDeliveries,
    SimDownloadJobs,
    SimEvents,
    SimLifecycleQueue,
    SimQueue,
    SimQuota,
    SimTransfer,
)
from .functions import UNIT_ATTEMPTS, Billing, Invocation, Meter, Outcome, QueueConsumer
from .loop import EventLoop, SimClock
from .tiktok import SimTikTok, TikTokModel

APP_SECRET = "simulated-app-secret"
DAY = 86400.0


@dataclass(frozen=True)
class Scenario:
    """What to simulate. Times in seconds; ``arrival_seconds``: the adds are spread over that long."""

    name: str
    users: int
    arrival_seconds: float
    horizon: float
    webhooks: bool
    quota: int = 1000
    seed: int = 17
    prep_median_hours: float = 2.0
    prep_sigma: float = 1.2
    never_ready: float = 0.01
    outages: int = 3
    poll_initial: int = 60
    poll_longest: int = 900  # STATUS_POLL_MAX_SECONDS: without webhooks
    poll_backstop: int = 21_600  # STATUS_POLL_BACKSTOP_SECONDS: with webhooks (WebhooksConfigured)
    budget: bool = True  # the shared quota (TIKTOK_QUOTA_TABLE_NAME set)
    quota_share_percent: int = 90  # TIKTOK_QUOTA_SHARE_PERCENT
    lifecycle_concurrency: int = 2
    pace_ms: int = 150
    worker_concurrency: int = 10
    throughput_mib: float = 60.0


@dataclass
class Result:
    """What one run measured."""

    scenario: Scenario
    calls: dict[str, list[int]]
    refused: dict[str, list[int]]
    ready_to_stored: list[float]
    # The same from when TikTok could serve the archive (ready during an outage: from the outage's end).
    servable_to_stored: list[float]
    billing: dict[str, Billing]
    counts: dict[str, int]
    archives: int
    stored_bytes: int
    waiting: list[tuple[float, int]] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    lost_refresh_tokens: int = 0
    lateness: list[float] = field(default_factory=list)
    deferred: dict[str, int] = field(default_factory=dict)  # tries the shared budget refused, by endpoint
    check_seconds: float = 0.0  # a status check's mean time (TikTok's answer and the AWS calls around it)
    wall_seconds: float = 0.0
    events: int = 0


@dataclass
class World:
    """Everything one run holds."""

    scenario: Scenario
    clock: SimClock
    loop: EventLoop
    journal: CountingJournal
    model: TikTokModel
    tiktok: SimTikTok
    records: IndexedRecords
    lifecycle_queue: SimQueue
    ready_queue: SimQueue  # TikTok's download.ready work, the lifecycle function's second event source
    download_queue: SimQueue
    transfer: SimTransfer
    meter: Meter
    rng: random.Random


@dataclass
class UseCases:
    add_request: AddRequest
    status_checks: StatusChecks
    archive_ready: ArchiveReady
    queued_downloads: QueuedDownloads
    webhook_receiver: WebhookReceiver
    sweep: Sweep
    schedule: Schedule
    budget: CheckBudget


def build(scenario: Scenario) -> World:
    rng = random.Random(scenario.seed)
    clock = SimClock()
    loop = EventLoop(clock)
    journal = CountingJournal()
    outages = []
    for _ in range(scenario.outages):
        start = rng.uniform(0, scenario.horizon)
        outages.append((start, start + rng.uniform(5, 30) * 60))
    model = TikTokModel(
        scenario.quota,
        rng,
        prep_median_hours=scenario.prep_median_hours,
        prep_sigma=scenario.prep_sigma,
        never_ready=scenario.never_ready,
        outages=sorted(outages),
    )
    tiktok = SimTikTok(model, lambda: clock.elapsed, rng)
    if scenario.budget:
        plan = QuotaPlan(scenario.quota, scenario.quota_share_percent)
        tiktok.quota = SimQuota(plan, lambda: START.timestamp() + clock.elapsed + tiktok.spent, journal)
    return World(
        scenario,
        clock,
        loop,
        journal,
        model,
        tiktok,
        IndexedRecords(clock, journal),
        SimQueue("lifecycle", journal, lambda: clock.elapsed),
        SimQueue("ready", journal, lambda: clock.elapsed),
        SimQueue("download", journal, lambda: clock.elapsed),
        SimTransfer(journal, tiktok, scenario.throughput_mib * 1048576),
        Meter(journal, tiktok),
        rng,
    )


def use_cases(world: World) -> UseCases:
    """The service's use cases over the world's fakes, wired as ``runtime.py`` wires them."""
    journal = world.journal
    scenario = world.scenario
    grants = FakeGrants(world.clock, journal)
    vault = FakeVault(journal)
    app = FakeAppCredentials(APP_SECRET)
    tokens = TokenService(grants, vault, world.tiktok, lambda: app)
    handover = TokenHandover(tokens, grants)
    events = SimEvents(journal)
    lifecycle = SimLifecycleQueue(journal, world.lifecycle_queue)
    ready = SimLifecycleQueue(journal, world.ready_queue)
    jobs = SimDownloadJobs(journal, world.download_queue)
    longest = scenario.poll_backstop if scenario.webhooks else scenario.poll_longest
    schedule = Schedule(
        scenario.poll_initial,
        max(scenario.poll_initial, longest),
        timedelta(hours=168),
        webhooks=scenario.webhooks,
    )
    budget = CheckBudget.of(QuotaPlan(scenario.quota, scenario.quota_share_percent))
    floor = SimCheckFloor(journal, lambda: world.clock.elapsed)
    records = world.records
    claimed = ClaimedDownload(world.transfer, records, world.tiktok, events, lambda: tokens)
    deliveries = SimDeliveries(journal)
    return UseCases(
        AddRequest(world.tiktok, records, tokens, handover, events, lifecycle, schedule),
        StatusChecks(world.tiktok, records, tokens, events, lifecycle, lambda: jobs, schedule, floor.seconds),
        ArchiveReady(records, events, lambda: jobs),
        QueuedDownloads(claimed, records, events, lambda: vault, lambda: tokens),
        WebhookReceiver(lambda: app, lambda: deliveries, lambda: lifecycle, lambda: ready),
        Sweep(records, lifecycle, floor, budget),
        schedule,
        budget,
    )


class Run:
    """One scenario's run: the functions around the use cases, and what they measure."""

    def __init__(self, world: World, cases: UseCases) -> None:
        self.world = world
        self.cases = cases
        scenario = world.scenario
        journal = world.journal
        # The lifecycle function's two SQS event sources (the lifecycle and the ready queue): the same
        # handler, each its own MaximumConcurrency, billed as one function.
        self.lifecycle, self.ready = (
            QueueConsumer(
                queue,
                self.lifecycle_message,
                batch=10,
                concurrency=scenario.lifecycle_concurrency,
                visibility=360,
                deadline_seconds=50,
                journal=journal,
            )
            for queue in (world.lifecycle_queue, world.ready_queue)
        )
        self.ready.billing = self.lifecycle.billing
        self.worker = QueueConsumer(
            world.download_queue,
            self.download_message,
            batch=1,
            concurrency=scenario.worker_concurrency,
            visibility=5400,
            deadline_seconds=840,
            journal=journal,
        )
        self.billing = {
            "api": Billing(),
            "webhook": Billing(),
            "sweeper": Billing(),
            "lifecycle": self.lifecycle.billing,
            "worker": self.worker.billing,
        }
        self.handed: dict[int, tuple[str, str]] = {}
        self.ready_at: dict[int, float] = {}
        self.servable_at: dict[int, float] = {}  # ready, and TikTok up: the end of an outage it fell in
        self.stored: dict[int, float] = {}
        self.outcomes: dict[str, int] = {}
        self.waiting: list[tuple[float, int]] = []
        self.lateness: list[float] = []
        self.check_seconds: list[float] = []
        self.floors: list[tuple[float, int]] = []
        world.loop.add_source(self.lifecycle)
        world.loop.add_source(self.ready)
        world.loop.add_source(self.worker)
        world.model.on_ready = self.archive_prepared

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    # -- the API: POST /requests ------------------------------------------------------------------
    def add(self, user: int, tries: int = 1) -> None:
        world = self.world
        open_id = f"user{user}"
        if tries == 1:
            self.handed[user] = world.model.consent(open_id, world.clock.elapsed)
        access, refresh = self.handed[user]
        new = NewRequest(HandedTokens(access, refresh, open_id))
        world.meter.start()
        try:
            self.cases.add_request.add(
                BACKEND_CALLER, new, Deadline.after(18).unit(UNIT_ATTEMPTS, Priority.INTERACTIVE)
            )
            self.count("added")
            del self.handed[user]
        except ServiceError as error:
            if error.is_transient and tries < 10:
                self.count("add retried")
                world.loop.schedule(world.clock.elapsed + 60 * tries, lambda: self.add(user, tries + 1))
            else:
                self.count(f"add refused: {error.error_code}")
        self.billing["api"].bill(world.meter.seconds())
        world.journal.note("apigateway.request")

    # -- TikTok's webhook -------------------------------------------------------------------------
    def archive_prepared(self, request_id: int, at: float) -> None:
        self.ready_at[request_id] = at
        self.servable_at[request_id] = self.world.model.in_outage(at) or at
        if not self.world.scenario.webhooks:
            return
        delay = self.world.rng.uniform(1, 10)
        outage_end = self.world.model.in_outage(at + delay)
        self.world.loop.schedule(
            (outage_end or at) + delay,
            lambda: self.webhook(request_id, self.world.model.requests[request_id].owner),
        )

    def webhook(self, request_id: int, open_id: str) -> None:
        world = self.world
        now = int(START.timestamp() + world.clock.elapsed)
        raw = webhook_body(
            "portability.download.ready",
            open_id,
            {"request_id": request_id},
            client_key="app-client-key",
            create_time=now,
        )
        world.meter.start()
        self.cases.webhook_receiver.receive(sign(APP_SECRET, now, raw), raw, float(now))
        self.billing["webhook"].bill(world.meter.seconds())
        world.journal.note("apigateway.request")

    # -- the lifecycle function (handlers/lifecycle.py) ---------------------------------------------
    def lifecycle_message(self, message: Message, invocation: Invocation, now: float) -> Outcome:
        world = self.world
        body = message.body
        tiktok_work = isinstance(body, TIKTOK_WORK)
        if tiktok_work and invocation.paused_until > now:
            world.journal.note("sqs.change_visibility")
            return Outcome(0.001, invocation.paused_until - now + 1)
        world.meter.start()
        # Status checks are the quota's lowest priority; the rest of this queue's TikTok work a purge's.
        priority = Priority.CHECK if isinstance(body, StatusCheck) else Priority.PURGE
        unit = invocation.deadline.unit(UNIT_ATTEMPTS, priority)
        back: float | None = None
        try:
            if isinstance(body, StatusCheck):
                outcome = self.cases.status_checks.check(
                    body.request_id, body.seq, unit, pace=lambda: self.pace(invocation, now)
                )
                self.count(f"check {outcome.action}")
                if outcome.action not in ("stale", "early"):
                    self.late(now, now - message.visible_at)
                    self.check_seconds.append(world.meter.seconds())
                if outcome.rate_limited_for:
                    invocation.paused_until = now + outcome.rate_limited_for
            elif isinstance(body, ArchiveReadyWork):
                self.count(f"ready webhook {self.cases.archive_ready.queue(body)}")
        except ServiceError as error:
            if error.upstream_status == 429 and error.redeliver_after:
                invocation.paused_until = now + error.redeliver_after
            back = self.lifecycle.fail(error, message)
        return Outcome(world.meter.seconds(), back)

    # -- the worker (handlers/worker.py) ------------------------------------------------------------
    def download_message(self, message: Message, invocation: Invocation, now: float) -> Outcome:
        world = self.world
        job: DownloadJob = message.body
        world.meter.start()
        back: float | None = None
        try:
            self.cases.queued_downloads.run(job, invocation.deadline.unit(UNIT_ATTEMPTS, Priority.DOWNLOAD))
        except ServiceError as error:
            self.count(f"download failed: {error.error_code}")
            back = self.worker.fail(error, message)
        seconds = world.meter.seconds()
        record = world.records.items.get(job.request_id)
        if (
            record is not None
            and record.status is DownloadStatus.COMPLETED
            and job.request_id not in self.stored
        ):
            self.stored[job.request_id] = now + seconds
        return Outcome(seconds, back)

    # -- the sweeper (handlers/sweeper.py), every 15 minutes ---------------------------------------
    def sweep(self) -> None:
        world = self.world
        world.meter.start()
        outcome = self.cases.sweep.run(Deadline.after(290))
        self.outcomes["checks re-driven"] = self.outcomes.get("checks re-driven", 0) + outcome.redriven
        self.floors.append((world.clock.elapsed, outcome.floor_seconds))
        self.billing["sweeper"].bill(world.meter.seconds())
        world.journal.note("eventbridge.scheduled")
        world.loop.schedule(world.clock.elapsed + 900, self.sweep)

    def pace(self, invocation: Invocation, now: float) -> None:
        """The handler's pace: one TikTok call per ``STATUS_POLL_PACE_MS`` per invocation (a billed sleep)."""
        at = now + self.world.meter.seconds()
        gap = invocation.last_call + self.world.scenario.pace_ms / 1000 - at
        if gap > 0:
            self.world.tiktok.spent += gap
            at += gap
        invocation.last_call = at

    def late(self, now: float, seconds: float) -> None:
        """A check ``seconds`` after its message became visible: the worst per minute is kept."""
        minute = int(now // 60)
        if minute >= len(self.lateness):
            self.lateness.extend([0.0] * (minute + 1 - len(self.lateness)))
        self.lateness[minute] = max(self.lateness[minute], seconds)

    def sample(self) -> None:
        self.waiting.append((self.world.clock.elapsed, self.world.records.waiting))
        self.world.loop.schedule(self.world.clock.elapsed + 300, self.sample)


def _silent(*args: object, **kwargs: object) -> None:
    """A log call that logs nothing."""


def run(scenario: Scenario) -> Result:
    """Simulate ``scenario`` and measure it (the logic's clock frozen on the simulation's meanwhile)."""
    started = time.monotonic()
    world = build(scenario)
    monkeypatch = pytest.MonkeyPatch()
    try:
        freeze_time(monkeypatch, world.clock)
        monkeypatch.setattr(dataclasses, "replace", speed.replace)
        # Nothing is logged: the service's log calls cost a tenth of a check's time and say nothing here.
        for method in ("debug", "info", "warning", "error", "exception", "append_keys", "remove_keys"):
            monkeypatch.setattr(logger, method, _silent)
        # Nor counted in metrics: the simulation counts for itself (and a metrics buffer prints when full).
        monkeypatch.setattr(metrics, "add_metric", _silent)
        simulation = Run(world, use_cases(world))
        spacing = scenario.arrival_seconds / max(1, scenario.users)
        for user in range(scenario.users):
            world.loop.schedule(user * spacing, lambda user=user: simulation.add(user))
        world.loop.schedule(900, simulation.sweep)
        world.loop.schedule(0, simulation.sample)
        world.loop.run(scenario.horizon)
    finally:
        monkeypatch.undo()
    return Result(
        scenario,
        world.model.log.calls,
        world.model.log.refused,
        [simulation.stored[i] - ready for i, ready in simulation.ready_at.items() if i in simulation.stored],
        [simulation.stored[i] - up for i, up in simulation.servable_at.items() if i in simulation.stored],
        simulation.billing,
        dict(world.journal.counts),
        len(simulation.stored),
        world.transfer.stored_bytes,
        simulation.waiting,
        simulation.outcomes,
        {
            "lifecycle": len(world.lifecycle_queue.dead) + len(world.ready_queue.dead),
            "download": len(world.download_queue.dead),
        },
        world.model.refused_grants,
        simulation.lateness,
        dict(world.tiktok.quota.refusals) if isinstance(world.tiktok.quota, SimQuota) else {},
        sum(simulation.check_seconds) / max(1, len(simulation.check_seconds)),
        time.monotonic() - started,
        world.loop.processed,
    )
