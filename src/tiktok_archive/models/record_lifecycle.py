"""The download record's lifecycle, in one table: every event, the states it may happen from, where it leads.

This table is the one home of the state machine. The DynamoDB adapter builds each conditional write's
condition from it (``adapters/download_records.py``), the in-memory fake of the tests decides with it
(``tests/unit/fakes.py``), and the state diagram in docs/architecture.md is generated from it (a test
checks the two agree). A change of the lifecycle is a change of this table.

Each :class:`Transition` says:

- ``sources``: the statuses it may happen from (:data:`ABSENT`: no record yet);
- ``lapsed``: statuses it may happen from only once the record's lease lapsed (a crashed attempt's);
- ``target``: the status it leads to (``None``: the status stays);
- ``guard``: what else the write must match — :data:`SCHEDULE` (the status check the schedule expects,
  ``poll_seq``) or :data:`CLAIM` (the download's claim, ``lease_owner``);
- ``clears``: the groups of fields it removes (:class:`Fields`): the lease, the schedule, the progress,
  the last error, the stored archive's location — what each write sets besides is its own;
- ``what``: why it happens, as the diagram labels it.

Who may act on a record (its caller, a backend's queue message, the service) is a condition of its own,
:class:`~tiktok_archive.models.download_record.Owner`, added to the claim and queue writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus

ABSENT = "absent"
SCHEDULE = "schedule"
CLAIM = "claim"

Source = DownloadStatus | str


class Fields(StrEnum):
    """Groups of a record's fields that transitions clear together."""

    LEASE = "lease"  # who holds the download and until when
    LEASE_OWNER = "lease_owner"  # who holds it (a queued record keeps its lease's end)
    SCHEDULE = "schedule"  # the next status check
    PROGRESS = "progress"  # a running download's progress
    ERROR = "error"  # the last failure
    ARCHIVE = "archive"  # where the archive is, its size, checksum and manifest


class Event(StrEnum):
    """What happens to a record."""

    ADD = "add"
    CHECKED = "checked"
    REDRIVEN = "redriven"
    READY = "ready"
    READY_ANNOUNCED = "ready_announced"
    EXPIRED_AT_TIKTOK = "expired_at_tiktok"
    CANCELLED_AT_TIKTOK = "cancelled_at_tiktok"
    GIVEN_UP = "given_up"
    JOB_FAILED = "job_failed"
    CLAIM = "claim"
    QUEUE = "queue"
    ABANDON = "abandon"
    PROGRESS = "progress"
    COMPLETE = "complete"
    FAIL = "fail"
    UNCLAIM = "unclaim"
    EXPIRE = "expire"
    CANCEL = "cancel"
    REVOKE = "revoke"


@dataclass(frozen=True)
class Transition:
    """One event: from which states, to which, under which guard (see the module's docstring)."""

    event: Event
    sources: tuple[Source, ...]
    target: DownloadStatus | None
    what: str
    lapsed: tuple[DownloadStatus, ...] = ()
    guard: str | None = None
    clears: frozenset[Fields] = frozenset()

    def allows(
        self,
        record: DownloadRecord | None,
        now: datetime,
        *,
        seq: int | None = None,
        lease_owner: str | None = None,
        held_by: str | None = None,
    ) -> bool:
        """Whether the event may happen to ``record`` (None: no record) at ``now``.

        ``seq``: the check a schedule guard expects; ``lease_owner``: the claim a claim guard needs;
        ``held_by``: the record's actual ``lease_owner`` (a record does not show it).
        """
        if record is None:
            return ABSENT in self.sources
        status = record.status
        lapsed = record.lease_expires_at is not None and record.lease_expires_at < now
        if status not in self.sources and not (status in self.lapsed and lapsed):
            return False
        if self.guard == SCHEDULE:
            return record.poll_seq == seq
        if self.guard == CLAIM:
            return held_by is not None and held_by == lease_owner
        return True


_W, _Q, _P = DownloadStatus.WAITING, DownloadStatus.QUEUED, DownloadStatus.IN_PROGRESS
_C, _F = DownloadStatus.COMPLETED, DownloadStatus.FAILED
_NOT_ENDED = (_W, _Q, _P, _C, _F)

_ENDING = frozenset({Fields.LEASE, Fields.SCHEDULE, Fields.PROGRESS, Fields.ERROR, Fields.ARCHIVE})
_FAILING = frozenset({Fields.LEASE, Fields.SCHEDULE, Fields.PROGRESS})

TRANSITIONS: dict[Event, Transition] = {
    t.event: t
    for t in (
        Transition(Event.ADD, (ABSENT,), _W, "POST /requests"),
        Transition(Event.CHECKED, (_W,), None, "status check: TikTok says pending", guard=SCHEDULE),
        Transition(Event.REDRIVEN, (_W,), None, "sweeper: a lost check sent again", guard=SCHEDULE),
        Transition(
            Event.READY,
            (_W,),
            _Q,
            "status check: TikTok says downloading",
            guard=SCHEDULE,
            clears=frozenset({Fields.SCHEDULE}),
        ),
        Transition(
            Event.READY_ANNOUNCED, (_W,), _Q, "webhook: download.ready", clears=frozenset({Fields.SCHEDULE})
        ),
        Transition(
            Event.EXPIRED_AT_TIKTOK,
            (_W,),
            DownloadStatus.EXPIRED,
            "status check: expired",
            guard=SCHEDULE,
            clears=_ENDING,
        ),
        Transition(
            Event.CANCELLED_AT_TIKTOK,
            (_W,),
            DownloadStatus.CANCELLED,
            "status check: cancelled",
            guard=SCHEDULE,
            clears=_ENDING,
        ),
        Transition(Event.GIVEN_UP, (_W,), _F, "check refused, or given up", guard=SCHEDULE, clears=_FAILING),
        Transition(Event.JOB_FAILED, (_W, _Q), _F, "queued job failed for good", clears=_FAILING),
        Transition(
            Event.CLAIM,
            (ABSENT, _W, _Q, _F),
            _P,
            "a download claims it",
            lapsed=(_P,),
            clears=frozenset({Fields.ERROR, Fields.PROGRESS, Fields.SCHEDULE}),
        ),
        Transition(
            Event.QUEUE,
            (ABSENT, _W, _F),
            _Q,
            "POST /downloads, respond-async",
            lapsed=(_Q, _P),
            clears=frozenset({Fields.LEASE_OWNER, Fields.ERROR, Fields.SCHEDULE}),
        ),
        Transition(Event.ABANDON, (_Q,), _F, "job not sent", clears=frozenset({Fields.LEASE})),
        Transition(Event.PROGRESS, (_P,), None, "progress report", guard=CLAIM),
        Transition(
            Event.COMPLETE,
            (_P,),
            _C,
            "archive stored",
            guard=CLAIM,
            clears=frozenset({Fields.LEASE, Fields.ERROR, Fields.PROGRESS}),
        ),
        Transition(
            Event.FAIL,
            (_P,),
            _F,
            "download failed",
            guard=CLAIM,
            clears=frozenset({Fields.LEASE, Fields.PROGRESS}),
        ),
        Transition(
            Event.UNCLAIM,
            (_P,),
            _Q,
            "TikTok refused the token, or said later, before the download began",
            guard=CLAIM,
            clears=frozenset({Fields.LEASE_OWNER, Fields.PROGRESS}),
        ),
        Transition(
            Event.EXPIRE, _NOT_ENDED, DownloadStatus.EXPIRED, "TikTok's window closed", clears=_ENDING
        ),
        Transition(
            Event.CANCEL, _NOT_ENDED, DownloadStatus.CANCELLED, "DELETE /downloads/{id}", clears=_ENDING
        ),
        Transition(
            Event.REVOKE, _NOT_ENDED, DownloadStatus.REVOKED, "user removed or erased", clears=_ENDING
        ),
    )
}


def transition(event: Event) -> Transition:
    """The table's transition for ``event``."""
    return TRANSITIONS[event]


def ending(status: DownloadStatus, *, scheduled: bool) -> Event:
    """The event that ends a record in ``status``: by a status check (``scheduled``), or from outside.

    Raises:
        ValueError: ``status`` is not one a record is ended in.
    """
    events = {
        (DownloadStatus.EXPIRED, True): Event.EXPIRED_AT_TIKTOK,
        (DownloadStatus.CANCELLED, True): Event.CANCELLED_AT_TIKTOK,
        (DownloadStatus.FAILED, True): Event.GIVEN_UP,
        (DownloadStatus.FAILED, False): Event.JOB_FAILED,
        (DownloadStatus.EXPIRED, False): Event.EXPIRE,
        (DownloadStatus.CANCELLED, False): Event.CANCEL,
        (DownloadStatus.REVOKED, False): Event.REVOKE,
    }
    try:
        return events[(status, scheduled)]
    except KeyError:
        raise ValueError(
            f"a record is not ended {status.value}{' by a check' if scheduled else ''}"
        ) from None


def mermaid() -> str:
    """The state diagram of :data:`TRANSITIONS` (Mermaid ``stateDiagram-v2``), one edge per source.

    Edges that share source and target are merged, their labels joined.
    """
    edges: dict[tuple[str, str], list[str]] = {}
    for item in TRANSITIONS.values():
        sources = [str(s) for s in item.sources] + [f"{s}" for s in item.lapsed]
        for source in dict.fromkeys(sources):
            target = str(item.target) if item.target is not None else source
            if source == ABSENT and target == ABSENT:
                continue
            label = item.what + (" (lease lapsed)" if source in [str(s) for s in item.lapsed] else "")
            edges.setdefault(("[*]" if source == ABSENT else source, target), []).append(label)
    lines = ["stateDiagram-v2"]
    for (source, target), labels in edges.items():
        lines.append(f"    {source} --> {target}: {'; '.join(dict.fromkeys(labels))}")
    return "\n".join(lines)
