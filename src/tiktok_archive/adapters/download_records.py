"""Download records in DynamoDB (boto3), every change a conditional write.

One item per ``request_id`` (partition key, a decimal string). The claim is a lease: a conditional
update succeeds only when nobody holds the download (no item, ``waiting``, ``queued``, ``failed``, or
``in_progress`` with a lapsed lease), records who holds it and until when, and counts the attempt. The
holder alone may then report progress, complete or fail it — and learns from a refused write that the
download was cancelled meanwhile. The status schedule of a waiting request advances only from the check
it expects (``poll_seq``), so a duplicated or late check changes nothing. ``expires_at`` is the table's
TTL attribute: the record goes when its archive does.

Every record names the caller that created it (``caller``); claims and queued downloads are conditional
on it too (:class:`Owner`), so a caller never takes over another's record, even in a race. Two sparse
indexes find a user's records: ``by-user`` (``user_openid``: every caller's, for TikTok's
``authorization.removed``) and ``by-caller-user`` (``caller_user``, newest first by ``created_at``: one
caller's, for its list and its erasure).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import is_condition_failure
from tiktok_archive.adapters.dynamodb_items import (
    Item,
    epoch_value,
    lease_value,
    number_field,
    store_error,
    string_field,
)
from tiktok_archive.models.clock import format_utc, parse_utc
from tiktok_archive.models.clock import utc_now as _now
from tiktok_archive.models.download_record import (
    ENDED,
    DownloadRecord,
    DownloadStatus,
    Owner,
    Preparation,
    Progress,
    RecordedError,
    caller_user,
)
from tiktok_archive.models.errors import RecordStoreError, ServiceError
from tiktok_archive.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BY_USER_INDEX = "by-user"
BY_CALLER_USER_INDEX = "by-caller-user"
_NAMES = {"#status": "status", "#key": "key", "#bucket": "bucket"}
_ERROR_FIELDS = "error_code, error_message, error_log_id, error_transient"
_LEASE_FIELDS = "lease_expires_at, lease_owner"
_PROGRESS_FIELDS = "progress_bytes, progress_parts, progress_mib_s, progress_at"
_SCHEDULE_FIELDS = "next_check_at, poll_interval, schedule_bucket"
BY_SCHEDULE_INDEX = "by-schedule"
# The one value of ``schedule_bucket``: only a waiting record has it, so the index holds only them.
WAITING_BUCKET = "waiting"
# Statuses after which nothing changes but by the owner's or TikTok's word.


@dataclass(frozen=True)
class Claimed:
    """The download is ours until ``record.lease_expires_at``; ``owner`` proves it."""

    record: DownloadRecord
    owner: str


@dataclass(frozen=True)
class Unchanged:
    """The write did not happen: the record is not in the state it needed (its state is ``record``)."""

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

    # -- reading -----------------------------------------------------------------------------------
    def get(self, request_id: int) -> DownloadRecord | None:
        """The record of ``request_id``, or None.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        try:
            answer = self._client.get_item(TableName=self._table, Key=_key(request_id), ConsistentRead=True)
        except (ClientError, BotoCoreError) as error:
            raise store_error("GetItem", error) from None
        item = answer.get("Item")
        return _record(item) if item else None

    def of_user(self, user_openid: str) -> list[DownloadRecord]:
        """Every record of ``user_openid`` (the ``by-user`` index; eventually consistent).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        records: list[DownloadRecord] = []
        start: dict[str, Any] | None = None
        while True:
            query: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": BY_USER_INDEX,
                "KeyConditionExpression": "user_openid = :user",
                "ExpressionAttributeValues": {":user": {"S": user_openid}},
            }
            if start:
                query["ExclusiveStartKey"] = start
            try:
                answer = self._client.query(**query)
            except (ClientError, BotoCoreError) as error:
                raise store_error("Query", error) from None
            records += [_record(item) for item in answer.get("Items", [])]
            start = answer.get("LastEvaluatedKey")
            if not start:
                return records

    def page_of(
        self, caller: str, user_openid: str, limit: int, after: tuple[str, int] | None = None
    ) -> tuple[list[DownloadRecord], tuple[str, int] | None]:
        """One page of ``caller``'s records of ``user_openid``, newest first (the ``by-caller-user`` index).

        ``after``: the ``(created_at, request_id)`` of the last record of the previous page. Returns the
        records and the position after them (None on the last page).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        partition = caller_user(caller, user_openid)
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": BY_CALLER_USER_INDEX,
            "KeyConditionExpression": "caller_user = :user",
            "ExpressionAttributeValues": {":user": {"S": partition}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if after is not None:
            # Rebuilt from the caller's own partition: a position cannot point into another's records.
            query["ExclusiveStartKey"] = {
                "caller_user": {"S": partition},
                "created_at": {"S": after[0]},
                "request_id": {"S": str(after[1])},
            }
        try:
            answer = self._client.query(**query)
        except (ClientError, BotoCoreError) as error:
            raise store_error("Query", error) from None
        records = [_record(item) for item in answer.get("Items", [])]
        last = answer.get("LastEvaluatedKey")
        position = None
        if last and records:
            position = (str(last["created_at"]["S"]), int(last["request_id"]["S"]))
        return records, position

    def of_caller_user(self, caller: str, user_openid: str) -> list[DownloadRecord]:
        """Every record of ``caller``'s of ``user_openid`` (``by-caller-user``; eventually consistent).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        records: list[DownloadRecord] = []
        after: tuple[str, int] | None = None
        while True:
            page, after = self.page_of(caller, user_openid, 100, after)
            records += page
            if after is None:
                return records

    def overdue(self, before: datetime, limit: int = 500) -> list[DownloadRecord]:
        """Waiting records whose next check was due before ``before`` (the ``by-schedule`` index).

        Their chain of checks was lost: a message that could not be sent, one left in the dead-letter queue.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        try:
            answer = self._client.query(
                TableName=self._table,
                IndexName=BY_SCHEDULE_INDEX,
                KeyConditionExpression="schedule_bucket = :bucket AND next_check_at < :before",
                ExpressionAttributeValues={
                    ":bucket": {"S": WAITING_BUCKET},
                    ":before": {"S": format_utc(before)},
                },
                Limit=limit,
            )
        except (ClientError, BotoCoreError) as error:
            raise store_error("Query", error) from None
        return [_record(item) for item in answer.get("Items", [])]

    # -- a request added with POST /requests ----------------------------------------------------------
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
        """Record a request TikTok just accepted: ``waiting``, its first check at ``next_check_at``.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        values: dict[str, Any] = {
            ":waiting": {"S": DownloadStatus.WAITING.value},
            ":now": {"S": format_utc(now)},
            ":zero": {"N": "0"},
            ":origin": {"S": "request"},
            ":caller": {"S": caller},
            ":grant": {"S": grant_id},
            ":format": {"S": preparation.data_format},
            ":categories": {"L": [{"S": c} for c in preparation.categories]},
            ":next": {"S": format_utc(_required(preparation.next_check_at))},
            ":give_up": {"S": format_utc(_required(preparation.give_up_at))},
            ":interval": {"N": str(poll_interval)},
            ":bucket": {"S": WAITING_BUCKET},
            ":expires": epoch_value(_required(preparation.give_up_at) + self._retention),
        }
        user = ""
        if user_openid:
            values[":user"] = {"S": user_openid}
            values[":caller_user"] = {"S": caller_user(caller, user_openid)}
            user = ", user_openid = :user, caller_user = :caller_user"
        expression = (
            "SET #status = :waiting, created_at = :now, updated_at = :now, attempts = :zero, "
            "origin = :origin, caller = :caller, grant_id = :grant, data_format = :format, "
            "categories = :categories, "
            "next_check_at = :next, give_up_at = :give_up, poll_interval = :interval, poll_seq = :zero, "
            "schedule_bucket = :bucket, "
            f"checks = :zero, expires_at = :expires{user}"
        )
        return self._conditional_update(request_id, expression, "attribute_not_exists(request_id)", values)

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
        """Record a status check (number ``seq``) that found the request still being prepared.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        values = self._check_values(seq, tiktok_status, apply_time, collect_time)
        values[":next_check"] = {"S": format_utc(next_check_at)}
        values[":interval"] = {"N": str(poll_interval)}
        expression = (
            f"{self._check_expression(values)}, next_check_at = :next_check, poll_interval = :interval"
        )
        return self._on_schedule(request_id, expression, values)

    def mark_ready(
        self,
        request_id: int,
        seq: int,
        *,
        apply_time: datetime | None,
        collect_time: datetime | None,
        lease: timedelta,
    ) -> DownloadRecord | Unchanged:
        """A status check (number ``seq``) found the archive ready: ``waiting`` → ``queued``.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        values = self._check_values(seq, "downloading", apply_time, collect_time)
        values[":queued"] = {"S": DownloadStatus.QUEUED.value}
        values[":lease"] = lease_value(_now(), lease)
        expression = (
            f"{self._check_expression(values)}, #status = :queued, lease_expires_at = :lease "
            f"REMOVE {_SCHEDULE_FIELDS}"
        )
        return self._on_schedule(request_id, expression, values)

    def queue_now(self, request_id: int, lease: timedelta) -> DownloadRecord | Unchanged:
        """TikTok announced the archive ready (a webhook): ``waiting`` → ``queued``, whatever the check.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        values = {
            ":waiting": {"S": DownloadStatus.WAITING.value},
            ":queued": {"S": DownloadStatus.QUEUED.value},
            ":now": {"S": format_utc(now)},
            ":lease": lease_value(now, lease),
            ":one": {"N": "1"},
        }
        expression = (
            "SET #status = :queued, updated_at = :now, lease_expires_at = :lease, "
            f"poll_seq = poll_seq + :one REMOVE {_SCHEDULE_FIELDS}"
        )
        return self._conditional_update(request_id, expression, "#status = :waiting", values)

    def end(
        self,
        request_id: int,
        status: DownloadStatus,
        *,
        error: ServiceError | None = None,
        seq: int | None = None,
        tiktok_status: str | None = None,
    ) -> DownloadRecord | Unchanged:
        """End the download: ``expired``, ``cancelled``, ``revoked``, or ``failed`` for a waiting request.

        ``error`` says why it failed. The archive's location is forgotten, the claim and the schedule
        dropped.

        ``seq``: only if the schedule expects that check (a status check ending it); otherwise from any
        status not already ended (a failure only from ``waiting`` or ``queued``).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        values: dict[str, Any] = {
            ":status": {"S": status.value},
            ":now": {"S": format_utc(now)},
            ":expires": epoch_value(now + self._retention),
        }
        sets = ["#status = :status", "updated_at = :now", "expires_at = :expires"]
        removes = [_LEASE_FIELDS, _SCHEDULE_FIELDS, _PROGRESS_FIELDS]
        if error is not None:
            values.update(_error_values(error))
            sets.append("error_code = :code, error_message = :message, error_transient = :transient")
            if error.log_id is not None:
                sets.append("error_log_id = :log_id")
        else:
            removes.append(_ERROR_FIELDS)
        if tiktok_status is not None:
            values[":tiktok_status"] = {"S": tiktok_status}
            sets.append("tiktok_status = :tiktok_status")
        if status is not DownloadStatus.FAILED:
            removes.append("#key, #bucket, size_bytes, checksum, manifest")
        if seq is not None:
            values.update({":waiting": {"S": DownloadStatus.WAITING.value}, ":seq": {"N": str(seq)}})
            condition = "#status = :waiting AND poll_seq = :seq"
        elif status is DownloadStatus.FAILED:
            # A request added with POST /requests fails while it waits or its job is queued (a refused
            # refresh); a running download fails through its claim instead.
            values[":waiting"] = {"S": DownloadStatus.WAITING.value}
            values[":queued"] = {"S": DownloadStatus.QUEUED.value}
            condition = "#status IN (:waiting, :queued)"
        else:
            ended = {f":ended{i}": {"S": s.value} for i, s in enumerate(sorted(ENDED))}
            values.update(ended)
            condition = f"attribute_exists(request_id) AND NOT #status IN ({', '.join(ended)})"
        expression = f"SET {', '.join(sets)} REMOVE {', '.join(removes)}"
        return self._conditional_update(request_id, expression, condition, values)

    def set_user(self, record: DownloadRecord, user_openid: str) -> None:
        """Record the request's user, as TikTok named it (its webhook); never raises: purge is best effort."""
        values: dict[str, Any] = {":user": {"S": user_openid}}
        expression = "SET user_openid = :user"
        if record.caller is not None:
            values[":caller_user"] = {"S": caller_user(record.caller, user_openid)}
            expression += ", caller_user = :caller_user"
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_key(record.request_id),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(request_id) AND attribute_not_exists(user_openid)",
                ExpressionAttributeValues=values,
            )
        except (ClientError, BotoCoreError) as error:
            if not is_condition_failure(error):
                logger.warning(
                    "the request's user was not recorded",
                    extra=store_error("UpdateItem", error).log_fields(),
                )

    # -- a download ------------------------------------------------------------------------------
    def claim(
        self, request_id: int, bucket: str, key: str, lease: timedelta, owner: Owner
    ) -> Claimed | Unchanged:
        """Take the download of ``request_id`` for ``lease``, unless it is final, held, or not ``owner``'s.

        A ``Unchanged`` record that ``owner`` may not act on belongs to someone else (see :class:`Owner`).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        lease_owner = uuid.uuid4().hex
        values = {
            ":in_progress": {"S": DownloadStatus.IN_PROGRESS.value},
            ":waiting": {"S": DownloadStatus.WAITING.value},
            ":queued": {"S": DownloadStatus.QUEUED.value},
            ":failed": {"S": DownloadStatus.FAILED.value},
            ":now": {"S": format_utc(now)},
            ":now_epoch": epoch_value(now),
            ":lease": lease_value(now, lease),
            ":owner": {"S": lease_owner},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":bucket": {"S": bucket},
            ":key": {"S": key},
            ":expires": epoch_value(now + self._retention),
        }
        owned, owner_condition = _ownership(owner, values)
        expression = (
            "SET #status = :in_progress, lease_expires_at = :lease, lease_owner = :owner, "
            "updated_at = :now, created_at = if_not_exists(created_at, :now), "
            "attempts = if_not_exists(attempts, :zero) + :one, #bucket = :bucket, #key = :key, "
            f"poll_seq = if_not_exists(poll_seq, :zero) + :one, {owned}"
            f"expires_at = :expires REMOVE {_ERROR_FIELDS}, {_PROGRESS_FIELDS}, {_SCHEDULE_FIELDS}"
        )
        condition = (
            f"({owner_condition}) AND (attribute_not_exists(request_id) "
            "OR #status IN (:waiting, :queued, :failed) "
            "OR (#status = :in_progress AND lease_expires_at < :now_epoch))"
        )
        updated = self._conditional_update(request_id, expression, condition, values)
        if isinstance(updated, Unchanged):
            return updated
        return Claimed(updated, lease_owner)

    def enqueue(self, request_id: int, lease: timedelta, owner: Owner) -> DownloadRecord | Unchanged:
        """Mark ``request_id`` queued for the worker and ``owner``, unless it is final, held or another's.

        A queued record is claimable by any invocation; its lease only says how long a repeated async
        request waits before queueing the download again (the claim makes a duplicate message harmless).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        values = {
            ":queued": {"S": DownloadStatus.QUEUED.value},
            ":in_progress": {"S": DownloadStatus.IN_PROGRESS.value},
            ":waiting": {"S": DownloadStatus.WAITING.value},
            ":failed": {"S": DownloadStatus.FAILED.value},
            ":now": {"S": format_utc(now)},
            ":now_epoch": epoch_value(now),
            ":lease": lease_value(now, lease),
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":expires": epoch_value(now + self._retention),
        }
        owned, owner_condition = _ownership(owner, values)
        expression = (
            "SET #status = :queued, lease_expires_at = :lease, updated_at = :now, "
            "created_at = if_not_exists(created_at, :now), attempts = if_not_exists(attempts, :zero), "
            f"poll_seq = if_not_exists(poll_seq, :zero) + :one, {owned}"
            f"expires_at = :expires REMOVE lease_owner, {_ERROR_FIELDS}, {_SCHEDULE_FIELDS}"
        )
        condition = (
            f"({owner_condition}) AND (attribute_not_exists(request_id) OR #status IN (:waiting, :failed) "
            "OR (#status IN (:queued, :in_progress) AND lease_expires_at < :now_epoch))"
        )
        return self._conditional_update(request_id, expression, condition, values)

    def report_progress(self, claim: Claimed, progress: Progress) -> Unchanged | None:
        """Record a running download's progress.

        Returns:
            ``Unchanged`` when the claim is no longer ours (the download was cancelled or revoked meanwhile,
            or taken over), else None.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        values = {
            ":owner": {"S": claim.owner},
            ":in_progress": {"S": DownloadStatus.IN_PROGRESS.value},
            ":bytes": {"N": str(progress.bytes_received)},
            ":parts": {"N": str(progress.parts_uploaded)},
            ":rate": {"N": str(progress.mib_per_second)},
            ":at": {"S": format_utc(progress.at)},
        }
        expression = (
            "SET progress_bytes = :bytes, progress_parts = :parts, progress_mib_s = :rate, "
            "progress_at = :at, updated_at = :at"
        )
        condition = "lease_owner = :owner AND #status = :in_progress"
        updated = self._conditional_update(claim.record.request_id, expression, condition, values)
        return updated if isinstance(updated, Unchanged) else None

    def complete(
        self, claim: Claimed, size_bytes: int, checksum: str, manifest: dict[str, Any] | None = None
    ) -> DownloadRecord:
        """Record the stored archive; the record then lives as long as the archive.

        Returns:
            the completed record — or the record as it is when the claim was lost meanwhile (another
            status: the caller must not hand the archive out then).

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
            ":expires": epoch_value(now + self._retention),
        }
        manifest_field = ""
        if manifest is not None:
            values[":manifest"] = {"S": json.dumps(manifest, separators=(",", ":"))}
            manifest_field = ", manifest = :manifest"
        expression = (
            "SET #status = :completed, size_bytes = :size, checksum = :checksum, completed_at = :now, "
            f"updated_at = :now, expires_at = :expires{manifest_field} "
            f"REMOVE {_LEASE_FIELDS}, {_ERROR_FIELDS}, {_PROGRESS_FIELDS}"
        )
        return self._finish(claim, expression, values)

    def fail(self, claim: Claimed, error: ServiceError) -> DownloadRecord:
        """Record why the download failed (it may be claimed again by a later request).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        values = {
            ":failed": {"S": DownloadStatus.FAILED.value},
            ":now": {"S": format_utc(now)},
            ":owner": {"S": claim.owner},
            ":expires": epoch_value(now + self._retention),
            **_error_values(error),
        }
        log_id = "" if error.log_id is None else ", error_log_id = :log_id"
        expression = (
            "SET #status = :failed, error_code = :code, error_message = :message, "
            f"error_transient = :transient{log_id}, updated_at = :now, expires_at = :expires "
            f"REMOVE {_LEASE_FIELDS}, {_PROGRESS_FIELDS}"
        )
        return self._finish(claim, expression, values)

    def abandon(self, request_id: int, error: ServiceError) -> None:
        """A queued download whose message could not be sent: record it failed (never raises)."""
        now = _now()
        values = {
            ":failed": {"S": DownloadStatus.FAILED.value},
            ":queued": {"S": DownloadStatus.QUEUED.value},
            ":now": {"S": format_utc(now)},
            **_error_values(error),
        }
        expression = (
            "SET #status = :failed, error_code = :code, error_message = :message, "
            f"error_transient = :transient, updated_at = :now REMOVE {_LEASE_FIELDS}"
        )
        try:
            self._conditional_update(request_id, expression, "#status = :queued", values)
        except RecordStoreError as store_error:
            logger.error("queued download not marked failed", extra=store_error.log_fields())

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _check_values(
        seq: int, tiktok_status: str | None, apply_time: datetime | None, collect_time: datetime | None
    ) -> dict[str, Any]:
        values: dict[str, Any] = {
            ":waiting": {"S": DownloadStatus.WAITING.value},
            ":seq": {"N": str(seq)},
            ":one": {"N": "1"},
            ":now": {"S": format_utc(_now())},
        }
        if tiktok_status is not None:
            values[":tiktok_status"] = {"S": tiktok_status[:40]}
        if apply_time is not None:
            values[":apply"] = {"S": format_utc(apply_time)}
        if collect_time is not None:
            values[":collect"] = {"S": format_utc(collect_time)}
        return values

    @staticmethod
    def _check_expression(values: Mapping[str, Any]) -> str:
        sets = ["SET poll_seq = :seq + :one", "checks = checks + :one", "updated_at = :now"]
        for value, field in (
            (":tiktok_status", "tiktok_status"),
            (":apply", "apply_time"),
            (":collect", "collect_time"),
        ):
            if value in values:
                sets.append(f"{field} = {value}")
        return ", ".join(sets)

    def _on_schedule(
        self, request_id: int, expression: str, values: dict[str, Any]
    ) -> DownloadRecord | Unchanged:
        condition = "#status = :waiting AND poll_seq = :seq"
        return self._conditional_update(request_id, expression, condition, values)

    def _finish(self, claim: Claimed, expression: str, values: dict[str, Any]) -> DownloadRecord:
        request_id = claim.record.request_id
        updated = self._conditional_update(request_id, expression, "lease_owner = :owner", values)
        if isinstance(updated, Unchanged):
            # The claim lapsed and another invocation took the download over, or the owner cancelled
            # it meanwhile: that state stands; ours is only logged.
            logger.warning(
                "download record changed before this invocation finished",
                extra={"status": updated.record.status.value},
            )
            return updated.record
        return updated

    def _conditional_update(
        self, request_id: int, expression: str, condition: str, values: dict[str, Any]
    ) -> DownloadRecord | Unchanged:
        names = {name: field for name, field in _NAMES.items() if name in expression + condition}
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": _key(request_id),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if names:
            request["ExpressionAttributeNames"] = names
        try:
            answer = self._client.update_item(**request)
        except ClientError as error:
            if not is_condition_failure(error):
                raise store_error("UpdateItem", error) from None
            # With ReturnValuesOnConditionCheckFailure, the item as it was comes with the error.
            item: Item | None = error.response.get("Item")  # type: ignore[assignment]
            record = _record(item) if item else self.get(request_id)
            if record is None:  # no such record (or deleted in between, TTL): nothing to hold on to
                raise RecordStoreError("the download record does not exist") from None
            return Unchanged(record)
        except BotoCoreError as error:
            raise store_error("UpdateItem", error) from None
        return _record(answer["Attributes"])


def _ownership(owner: Owner, values: dict[str, Any]) -> tuple[str, str]:
    """The SET clauses (each ending with ``, ``) and the condition that make a write ``owner``'s.

    Adds their values to ``values``.
    """
    if owner.service:
        return "", "attribute_exists(request_id)"
    sets = ""
    if owner.caller is None:
        condition = "attribute_not_exists(request_id) OR attribute_not_exists(caller)"
    else:
        values[":caller"] = {"S": owner.caller}
        sets += "caller = if_not_exists(caller, :caller), "
        condition = "attribute_not_exists(request_id) OR caller = :caller"
        if owner.user_openid is not None:
            values[":caller_user"] = {"S": caller_user(owner.caller, owner.user_openid)}
            sets += "caller_user = if_not_exists(caller_user, :caller_user), "
    if owner.user_openid is not None:
        values[":user"] = {"S": owner.user_openid}
        sets += "user_openid = if_not_exists(user_openid, :user), "
    if owner.grant_id is not None:
        values[":grant"] = {"S": owner.grant_id}
        sets += "grant_id = if_not_exists(grant_id, :grant), "
    return sets, condition


def _key(request_id: int) -> dict[str, Any]:
    return {"request_id": {"S": str(request_id)}}


def _required(moment: datetime | None) -> datetime:
    if moment is None:
        raise ValueError("a waiting request needs its schedule")
    return moment


def _error_values(error: ServiceError) -> dict[str, Any]:
    values: dict[str, Any] = {
        ":code": {"S": error.error_code},
        ":message": {"S": error.message[:1000]},
        ":transient": {"BOOL": error.is_transient},
    }
    if error.log_id is not None:
        values[":log_id"] = {"S": error.log_id}
    return values


def _parse_time(item: Item, name: str) -> datetime | None:
    value = item.get(name, {}).get("S")
    return parse_utc(value) if value else None


def _record(item: Item) -> DownloadRecord:
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
