"""Download records in DynamoDB (boto3), claimed with conditional writes.

One item per ``request_id`` (partition key, a decimal string). The claim is a lease: a conditional
update succeeds only when nobody holds the download (no item, ``queued``, ``failed``, or
``in_progress`` with a lapsed lease), records who holds it and until when, and counts the attempt. The
holder alone may then complete or fail it. A completed download is never claimed again. ``expires_at``
is the table's TTL attribute: the record goes when its archive does.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import aws_failure
from tiktok_archive.models.download import format_utc, parse_utc
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus, RecordedError
from tiktok_archive.models.errors import RecordStoreError, TransferError
from tiktok_archive.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Item = Mapping[str, Any]
_NAMES = {"#status": "status", "#key": "key", "#bucket": "bucket"}
_ERROR_FIELDS = "error_code, error_message, error_log_id, error_transient"
_LEASE_FIELDS = "lease_expires_at, lease_owner"


@dataclass(frozen=True)
class Claimed:
    """The download is ours until ``record.lease_expires_at``; ``owner`` proves it."""

    record: DownloadRecord
    owner: str


@dataclass(frozen=True)
class Held:
    """The download cannot be claimed: it is completed, or another invocation holds it."""

    record: DownloadRecord


class DownloadRecords:
    """The downloads table.

    Args:
        client: a boto3 DynamoDB client.
        table: the table's name (``DOWNLOADS_TABLE_NAME``).
        retention: how long a record outlives its last change (the archives' lifetime).
    """

    def __init__(self, client: DynamoDBClient, table: str, retention: timedelta) -> None:
        self._client = client
        self._table = table
        self._retention = retention

    def get(self, request_id: int) -> DownloadRecord | None:
        """The record of ``request_id``, or None.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        try:
            answer = self._client.get_item(TableName=self._table, Key=_key(request_id), ConsistentRead=True)
        except (ClientError, BotoCoreError) as error:
            raise _store_error("GetItem", error) from None
        item = answer.get("Item")
        return _record(item) if item else None

    def claim(self, request_id: int, bucket: str, key: str, lease: timedelta) -> Claimed | Held:
        """Take the download of ``request_id`` for ``lease``, unless it is completed or held.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        owner = uuid.uuid4().hex
        values = {
            ":in_progress": {"S": DownloadStatus.IN_PROGRESS.value},
            ":queued": {"S": DownloadStatus.QUEUED.value},
            ":failed": {"S": DownloadStatus.FAILED.value},
            ":now": {"S": format_utc(now)},
            ":now_epoch": {"N": str(int(now.timestamp()))},
            ":lease": {"N": str(int((now + lease).timestamp()) + 1)},
            ":owner": {"S": owner},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":bucket": {"S": bucket},
            ":key": {"S": key},
            ":expires": {"N": str(int((now + self._retention).timestamp()))},
        }
        expression = (
            "SET #status = :in_progress, lease_expires_at = :lease, lease_owner = :owner, "
            "updated_at = :now, created_at = if_not_exists(created_at, :now), "
            "attempts = if_not_exists(attempts, :zero) + :one, #bucket = :bucket, #key = :key, "
            f"expires_at = :expires REMOVE {_ERROR_FIELDS}"
        )
        condition = (
            "attribute_not_exists(request_id) OR #status IN (:queued, :failed) "
            "OR (#status = :in_progress AND lease_expires_at < :now_epoch)"
        )
        updated = self._conditional_update(request_id, expression, condition, values)
        if isinstance(updated, Held):
            return updated
        return Claimed(_record(updated), owner)

    def enqueue(self, request_id: int, lease: timedelta) -> DownloadRecord | Held:
        """Mark ``request_id`` queued for the worker, unless it is completed or held.

        A queued record is claimable by any invocation; its lease only says how long a repeated async
        request waits before queueing the download again (the claim makes a duplicate message harmless).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        values = {
            ":queued": {"S": DownloadStatus.QUEUED.value},
            ":in_progress": {"S": DownloadStatus.IN_PROGRESS.value},
            ":failed": {"S": DownloadStatus.FAILED.value},
            ":now": {"S": format_utc(now)},
            ":now_epoch": {"N": str(int(now.timestamp()))},
            ":lease": {"N": str(int((now + lease).timestamp()) + 1)},
            ":zero": {"N": "0"},
            ":expires": {"N": str(int((now + self._retention).timestamp()))},
        }
        expression = (
            "SET #status = :queued, lease_expires_at = :lease, updated_at = :now, "
            "created_at = if_not_exists(created_at, :now), attempts = if_not_exists(attempts, :zero), "
            f"expires_at = :expires REMOVE lease_owner, {_ERROR_FIELDS}"
        )
        condition = (
            "attribute_not_exists(request_id) OR #status = :failed "
            "OR (#status IN (:queued, :in_progress) AND lease_expires_at < :now_epoch)"
        )
        updated = self._conditional_update(request_id, expression, condition, values)
        return updated if isinstance(updated, Held) else _record(updated)

    def complete(self, claim: Claimed, size_bytes: int, checksum: str) -> DownloadRecord:
        """Record the stored archive; the record then lives as long as the archive.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        values = {
            ":completed": {"S": DownloadStatus.COMPLETED.value},
            ":now": {"S": format_utc(now)},
            ":size": {"N": str(size_bytes)},
            ":checksum": {"S": checksum},
            ":owner": {"S": claim.owner},
            ":expires": {"N": str(int((now + self._retention).timestamp()))},
        }
        expression = (
            "SET #status = :completed, size_bytes = :size, checksum = :checksum, completed_at = :now, "
            f"updated_at = :now, expires_at = :expires REMOVE {_LEASE_FIELDS}, {_ERROR_FIELDS}"
        )
        return self._finish(claim, expression, values)

    def fail(self, claim: Claimed, error: TransferError) -> DownloadRecord:
        """Record why the download failed (it may be claimed again by a later request).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        values = {
            ":failed": {"S": DownloadStatus.FAILED.value},
            ":now": {"S": format_utc(now)},
            ":code": {"S": error.error_code},
            ":message": {"S": error.message[:1000]},
            ":transient": {"BOOL": error.is_transient},
            ":owner": {"S": claim.owner},
            ":expires": {"N": str(int((now + self._retention).timestamp()))},
        }
        log_id = "" if error.log_id is None else ", error_log_id = :log_id"
        if error.log_id is not None:
            values[":log_id"] = {"S": error.log_id}
        expression = (
            "SET #status = :failed, error_code = :code, error_message = :message, "
            f"error_transient = :transient{log_id}, updated_at = :now, expires_at = :expires "
            f"REMOVE {_LEASE_FIELDS}"
        )
        return self._finish(claim, expression, values)

    def abandon(self, request_id: int, error: TransferError) -> None:
        """A queued download whose message could not be sent: record it failed (never raises)."""
        now = _now()
        values = {
            ":failed": {"S": DownloadStatus.FAILED.value},
            ":queued": {"S": DownloadStatus.QUEUED.value},
            ":now": {"S": format_utc(now)},
            ":code": {"S": error.error_code},
            ":message": {"S": error.message[:1000]},
            ":transient": {"BOOL": error.is_transient},
        }
        expression = (
            "SET #status = :failed, error_code = :code, error_message = :message, "
            f"error_transient = :transient, updated_at = :now REMOVE {_LEASE_FIELDS}"
        )
        try:
            self._conditional_update(request_id, expression, "#status = :queued", values)
        except RecordStoreError as store_error:
            logger.error("queued download not marked failed", extra=store_error.log_fields())

    def _finish(self, claim: Claimed, expression: str, values: dict[str, Any]) -> DownloadRecord:
        request_id = claim.record.request_id
        updated = self._conditional_update(request_id, expression, "lease_owner = :owner", values)
        if isinstance(updated, Held):
            # The claim lapsed and another invocation took the download over; its outcome will be
            # recorded by that invocation. Ours is only logged.
            logger.warning(
                "download record was taken over before this invocation finished",
                extra={"status": updated.record.status.value},
            )
            return updated.record
        return _record(updated)

    def _conditional_update(
        self, request_id: int, expression: str, condition: str, values: dict[str, Any]
    ) -> Item | Held:
        names = {name: field for name, field in _NAMES.items() if name in expression + condition}
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key=_key(request_id),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise _store_error("UpdateItem", error) from None
            # With ReturnValuesOnConditionCheckFailure, the item as it was comes with the error.
            item: Item | None = error.response.get("Item")  # type: ignore[assignment]
            record = _record(item) if item else self.get(request_id)
            if record is None:  # deleted in between (TTL): nothing to hold on to
                raise RecordStoreError("the download record changed while it was updated") from None
            return Held(record)
        except BotoCoreError as error:
            raise _store_error("UpdateItem", error) from None
        return answer["Attributes"]


def _key(request_id: int) -> dict[str, Any]:
    return {"request_id": {"S": str(request_id)}}


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _parse_time(item: Item, name: str) -> datetime | None:
    value = item.get(name, {}).get("S")
    return parse_utc(value) if value else None


def _number(item: Item, name: str) -> int | None:
    value = item.get(name, {}).get("N")
    return int(value) if value is not None else None


def _string(item: Item, name: str) -> str | None:
    value = item.get(name, {}).get("S")
    return str(value) if value is not None else None


def _record(item: Item) -> DownloadRecord:
    lease = _number(item, "lease_expires_at")
    error = None
    code = _string(item, "error_code")
    if code is not None:
        error = RecordedError(
            code,
            _string(item, "error_message") or "",
            _string(item, "error_log_id"),
            bool(item.get("error_transient", {}).get("BOOL", False)),
        )
    created = _parse_time(item, "created_at") or _now()
    return DownloadRecord(
        request_id=int(item["request_id"]["S"]),
        status=DownloadStatus(item["status"]["S"]),
        created_at=created,
        updated_at=_parse_time(item, "updated_at") or created,
        attempts=_number(item, "attempts") or 0,
        bucket=_string(item, "bucket"),
        key=_string(item, "key"),
        size_bytes=_number(item, "size_bytes"),
        checksum=_string(item, "checksum"),
        completed_at=_parse_time(item, "completed_at"),
        error=error,
        lease_expires_at=datetime.fromtimestamp(lease, UTC) if lease is not None else None,
    )


def _store_error(operation: str, error: BaseException) -> TransferError:
    return aws_failure(RecordStoreError, f"DynamoDB {operation}", error)
