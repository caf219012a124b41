"""The record's lifecycle table: the diagram in docs/architecture.md is the one generated from it."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.record_conditions import condition as table_condition
from tiktok_archive.adapters.record_items import ATTRIBUTES
from tiktok_archive.adapters.record_writes import Claimed
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus, Owner, Preparation, Progress
from tiktok_archive.models.record_lifecycle import TRANSITIONS, Event, mermaid
from tiktok_archive.models.tiktok_errors import UpstreamUnavailableError

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_the_documented_state_diagram_is_the_lifecycle_tables() -> None:
    blocks = re.findall(r"```mermaid\n(stateDiagram-v2\n.*?)\n```", ARCHITECTURE.read_text(), flags=re.S)
    assert blocks, "docs/architecture.md has no stateDiagram-v2 block"
    assert blocks[0] == mermaid(), "paste this into docs/architecture.md:\n" + mermaid()


# -- every write the adapter makes is one of the table's transitions ---------------------------------
class _Recording:
    """A DynamoDB client that answers every UpdateItem with an item and remembers the request."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    def update_item(self, **request: Any) -> dict[str, Any]:
        self.updates.append(request)
        return {"Attributes": {"request_id": {"S": "1"}, "status": {"S": "queued"}}}


def _writes(records: DownloadRecords) -> dict[str, Callable[[], object]]:
    """Every write method of the adapter, called once with plausible arguments."""
    now = datetime(2026, 3, 1, tzinfo=UTC)
    prep = Preparation("json", ("all_data",), next_check_at=now, give_up_at=now + timedelta(days=7))
    record = DownloadRecord(1, DownloadStatus.IN_PROGRESS, now, now, 1)
    claim = Claimed(record, "owner")
    error = UpstreamUnavailableError("TikTok down")
    lease = timedelta(minutes=1)
    return {
        "create_waiting": lambda: records.create_waiting(
            1, caller="c", grant_id="g", user_openid="u", preparation=prep, poll_interval=60
        ),
        "advance_schedule": lambda: records.advance_schedule(
            1,
            3,
            tiktok_status="pending",
            apply_time=now,
            collect_time=None,
            next_check_at=now,
            poll_interval=60,
        ),
        "reschedule": lambda: records.reschedule(1, 3, now),
        "mark_ready": lambda: records.mark_ready(1, 3, apply_time=now, collect_time=now, lease=lease),
        "queue_now": lambda: records.queue_now(1, lease),
        "end expired by a check": lambda: records.end(1, DownloadStatus.EXPIRED, seq=3),
        "end cancelled by a check": lambda: records.end(1, DownloadStatus.CANCELLED, seq=3),
        "end failed by a check": lambda: records.end(1, DownloadStatus.FAILED, error=error, seq=3),
        "end failed": lambda: records.end(1, DownloadStatus.FAILED, error=error),
        "end expired": lambda: records.end(1, DownloadStatus.EXPIRED),
        "end cancelled": lambda: records.end(1, DownloadStatus.CANCELLED),
        "end revoked": lambda: records.end(1, DownloadStatus.REVOKED),
        "claim": lambda: records.claim(1, "bucket", "key", lease, Owner("caller")),
        "enqueue": lambda: records.enqueue(1, lease, Owner("caller")),
        "abandon": lambda: records.abandon(1, error),
        "report_progress": lambda: records.report_progress(claim, Progress(1, 1, 1.0, now)),
        "complete": lambda: records.complete(claim, 5, "AAAAAA=="),
        "fail": lambda: records.fail(claim, error),
        "unclaim": lambda: records.unclaim(claim),
    }


# Transitions whose conditions are the same (a waiting record, the check its schedule expects): the
# write's own name says which one it is.
_SAME_CONDITION = {"advance_schedule": Event.CHECKED, "reschedule": Event.REDRIVEN}


def _event_of(name: str, condition: str, values: dict[str, Any]) -> Event | None:
    """The table's event whose derived condition (and target status) write ``name`` carried."""
    found = []
    for event, rule in TRANSITIONS.items():
        derived = table_condition(event, {}, seq=int(values.get(":seq", {}).get("N", 0)), lease_owner="owner")
        target = values.get(":target", {}).get("S")
        exact = condition == derived or condition.endswith(f") AND ({derived})")  # the owner's part first
        if exact and target == (rule.target.value if rule.target else None):
            found.append(event)
    if len(found) > 1:
        return _SAME_CONDITION[name] if _SAME_CONDITION.get(name) in found else None
    return found[0] if found else None


def test_every_write_of_the_adapter_is_a_transition_of_the_table_and_every_transition_is_written() -> None:
    client = _Recording()
    records = DownloadRecords(client, "table", timedelta(days=7))  # type: ignore[arg-type]
    performed: dict[str, Event | None] = {}
    for name, write in _writes(records).items():
        write()
        request = client.updates[-1]
        performed[name] = _event_of(
            name, request["ConditionExpression"], request["ExpressionAttributeValues"]
        )
        # And it removes exactly the fields the table says the transition clears
        event = performed[name]
        assert event is not None, f"{name} writes a condition the table does not have: {request}"
        removed = request["UpdateExpression"].partition(" REMOVE ")[2]
        expected = [name for group in sorted(TRANSITIONS[event].clears) for name in ATTRIBUTES[group]]
        assert (removed.split(", ") if removed else []) == expected, name
    assert set(performed.values()) == set(TRANSITIONS), "transitions of the table no write performs"
