"""A download record as DynamoDB holds it: the item's attributes, their groups, and the record they make.

The groups of :class:`~tiktok_archive.models.record_lifecycle.Fields` map to the attributes a transition
removes together (the adapter's ``REMOVE``); :func:`record_of` reads an item back into a
:class:`DownloadRecord`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tiktok_archive.adapters.dynamodb_items import Item, number_field, string_field
from tiktok_archive.models.clock import format_utc, parse_utc
from tiktok_archive.models.clock import utc_now as _now
from tiktok_archive.models.download_record import (
    DownloadRecord,
    DownloadStatus,
    Preparation,
    Progress,
    RecordedError,
)
from tiktok_archive.models.errors import ServiceError
from tiktok_archive.models.record_lifecycle import Fields

# The attributes of each group; ``#key``/``#bucket`` are reserved words, named in expressions.
ATTRIBUTES: dict[Fields, tuple[str, ...]] = {
    Fields.LEASE: ("lease_expires_at", "lease_owner"),
    Fields.LEASE_OWNER: ("lease_owner",),
    Fields.SCHEDULE: ("next_check_at", "poll_interval", "schedule_bucket"),
    Fields.PROGRESS: ("progress_bytes", "progress_parts", "progress_mib_s", "progress_at"),
    Fields.ERROR: ("error_code", "error_message", "error_log_id", "error_transient"),
    Fields.ARCHIVE: ("#key", "#bucket", "size_bytes", "checksum", "manifest"),
}
NAMES = {"#status": "status", "#key": "key", "#bucket": "bucket"}


def key_of(request_id: int) -> dict[str, Any]:
    """The item key of ``request_id``'s record."""
    return {"request_id": {"S": str(request_id)}}


def error_values(error: ServiceError) -> dict[str, Any]:
    """The values of an error's attributes (``:code``, ``:message``, ``:transient``, ``:log_id``)."""
    values: dict[str, Any] = {
        ":code": {"S": error.error_code},
        ":message": {"S": error.message[:1000]},
        ":transient": {"BOOL": error.is_transient},
    }
    if error.log_id is not None:
        values[":log_id"] = {"S": error.log_id}
    return values


def error_sets(error: ServiceError) -> list[str]:
    """The SET clauses writing an error (with :func:`error_values`)."""
    sets = ["error_code = :code", "error_message = :message", "error_transient = :transient"]
    if error.log_id is not None:
        sets.append("error_log_id = :log_id")
    return sets


def checked_sets(
    seq: int, tiktok_status: str | None, apply_time: datetime | None, collect_time: datetime | None
) -> tuple[list[str], dict[str, Any]]:
    """The SET clauses and values recording status check number ``seq`` and what TikTok said."""
    sets = ["poll_seq = :seq + :one", "checks = checks + :one"]
    values: dict[str, Any] = {":one": {"N": "1"}}
    for value, field, given in (
        (":tiktok_status", "tiktok_status", tiktok_status[:40] if tiktok_status is not None else None),
        (":apply", "apply_time", format_utc(apply_time) if apply_time is not None else None),
        (":collect", "collect_time", format_utc(collect_time) if collect_time is not None else None),
    ):
        if given is not None:
            values[value] = {"S": given}
            sets.append(f"{field} = {value}")
    return sets, values


def _parse_time(item: Item, name: str) -> datetime | None:
    value = item.get(name, {}).get("S")
    return parse_utc(value) if value else None


def record_of(item: Item) -> DownloadRecord:
    """The record an item holds."""
    lease = number_field(item, "lease_expires_at")
    error = None
    code = string_field(item, "error_code")
    if code is not None:
        error = RecordedError(
            code,
            string_field(item, "error_message") or "",
            string_field(item, "error_log_id"),
            bool(item.get("error_transient", {}).get("BOOL", False)),
        )
    preparation = None
    data_format = string_field(item, "data_format")
    if data_format is not None:
        preparation = Preparation(
            data_format=data_format,
            categories=tuple(c.get("S", "") for c in item.get("categories", {}).get("L", [])),
            tiktok_status=string_field(item, "tiktok_status"),
            apply_time=_parse_time(item, "apply_time"),
            collect_time=_parse_time(item, "collect_time"),
            next_check_at=_parse_time(item, "next_check_at"),
            checks=number_field(item, "checks") or 0,
            give_up_at=_parse_time(item, "give_up_at"),
        )
    progress = None
    progress_at = _parse_time(item, "progress_at")
    if progress_at is not None:
        progress = Progress(
            bytes_received=number_field(item, "progress_bytes") or 0,
            parts_uploaded=number_field(item, "progress_parts") or 0,
            mib_per_second=float(item.get("progress_mib_s", {}).get("N", "0")),
            at=progress_at,
        )
    manifest_text = string_field(item, "manifest")
    created = _parse_time(item, "created_at") or _now()
    return DownloadRecord(
        request_id=int(item["request_id"]["S"]),
        # moto applies an update in steps; a reader may see an item before its status (treated queued).
        status=DownloadStatus(string_field(item, "status") or DownloadStatus.QUEUED.value),
        created_at=created,
        updated_at=_parse_time(item, "updated_at") or created,
        attempts=number_field(item, "attempts") or 0,
        bucket=string_field(item, "bucket"),
        key=string_field(item, "key"),
        size_bytes=number_field(item, "size_bytes"),
        checksum=string_field(item, "checksum"),
        completed_at=_parse_time(item, "completed_at"),
        error=error,
        lease_expires_at=datetime.fromtimestamp(lease, UTC) if lease is not None else None,
        caller=string_field(item, "caller"),
        user_openid=string_field(item, "user_openid"),
        grant_id=string_field(item, "grant_id"),
        preparation=preparation,
        poll_seq=number_field(item, "poll_seq") or 0,
        poll_interval=number_field(item, "poll_interval"),
        progress=progress,
        manifest=json.loads(manifest_text) if manifest_text else None,
    )
