"""Download records in DynamoDB (boto3), every change a conditional write the lifecycle table allows.

One item per ``request_id`` (partition key, a decimal string). Each write below is one transition of
:mod:`~tiktok_archive.models.record_lifecycle` (how a transition becomes a conditional update, and the
record's end: :class:`RecordWrites`); a write the record's state does not allow changes nothing and
answers :class:`Unchanged` with the record as it is.

The claim is a lease: it succeeds only when nobody holds the download, records who holds it and until
when, and counts the attempt; the holder alone may then report progress, complete or fail it — and learns
from a refused write that the download was cancelled meanwhile. Claims and queued downloads are also
conditional on who acts (:class:`Owner`), so a caller never takes over another's record, even in a race.
``expires_at`` is the table's TTL attribute: the record goes when its archive does.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import is_condition_failure
from tiktok_archive.adapters.dynamodb_items import epoch_value, lease_value, store_error
from tiktok_archive.adapters.record_items import checked_sets, error_sets, error_values, key_of
from tiktok_archive.adapters.record_reads import WAITING_BUCKET
from tiktok_archive.adapters.record_schedule import RecordSchedule
from tiktok_archive.adapters.record_writes import Claimed, Unchanged
from tiktok_archive.models.clock import format_utc
from tiktok_archive.models.clock import utc_now as _now
from tiktok_archive.models.download_record import (
    DownloadRecord,
    Owner,
    Preparation,
    Progress,
    caller_user,
)
from tiktok_archive.models.errors import RecordStoreError, ServiceError
from tiktok_archive.models.record_lifecycle import Event
from tiktok_archive.observability import logger


class DownloadRecords(RecordSchedule):
    """The downloads table: its reads, and a write for each step of a record's lifecycle.

    Args:
        client: a boto3 DynamoDB client.
        table: the table's name (``DOWNLOADS_TABLE_NAME``).
        retention: how long a record outlives its last change (the archives' lifetime).
    """

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
        if preparation.next_check_at is None or preparation.give_up_at is None:
            raise ValueError("a waiting request needs its schedule")
        values: dict[str, Any] = {
            ":zero": {"N": "0"},
            ":origin": {"S": "request"},
            ":caller": {"S": caller},
            ":grant": {"S": grant_id},
            ":format": {"S": preparation.data_format},
            ":categories": {"L": [{"S": c} for c in preparation.categories]},
            ":next": {"S": format_utc(preparation.next_check_at)},
            ":give_up": {"S": format_utc(preparation.give_up_at)},
            ":interval": {"N": str(poll_interval)},
            ":bucket": {"S": WAITING_BUCKET},
            ":expires": epoch_value(preparation.give_up_at + self._retention),
        }
        sets = [
            "created_at = :now",
            "attempts = :zero",
            "origin = :origin",
            "caller = :caller",
            "grant_id = :grant",
            "data_format = :format",
            "categories = :categories",
            "next_check_at = :next",
            "give_up_at = :give_up",
            "poll_interval = :interval",
            "poll_seq = :zero",
            "schedule_bucket = :bucket",
            "checks = :zero",
            "expires_at = :expires",
        ]
        if user_openid:
            values[":user"] = {"S": user_openid}
            values[":caller_user"] = {"S": caller_user(caller, user_openid)}
            sets += ["user_openid = :user", "caller_user = :caller_user"]
        return self._write(Event.ADD, request_id, sets, values)

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
        sets, values = checked_sets(seq, "downloading", apply_time, collect_time)
        sets.append("lease_expires_at = :lease")
        values[":lease"] = lease_value(_now(), lease)
        return self._write(Event.READY, request_id, sets, values, seq=seq)

    def queue_now(self, request_id: int, lease: timedelta) -> DownloadRecord | Unchanged:
        """TikTok announced the archive ready (a webhook): ``waiting`` → ``queued``, whatever the check.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        values = {":lease": lease_value(_now(), lease), ":one": {"N": "1"}}
        sets = ["lease_expires_at = :lease", "poll_seq = poll_seq + :one"]
        return self._write(Event.READY_ANNOUNCED, request_id, sets, values)

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
                Key=key_of(record.request_id),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(request_id) AND attribute_not_exists(user_openid)",
                ExpressionAttributeValues=values,
            )
        except (ClientError, BotoCoreError) as error:
            if not is_condition_failure(error):
                logger.warning(
                    "the request's user was not recorded", extra=store_error("UpdateItem", error).log_fields()
                )

    # -- a download ------------------------------------------------------------------------------
    def claim(
        self, request_id: int, bucket: str, key: str, lease: timedelta, owner: Owner
    ) -> Claimed | Unchanged:
        """Take the download of ``request_id`` for ``lease``, unless it is final, held, or not ``owner``'s.

        An :class:`Unchanged` record that ``owner`` may not act on belongs to someone else.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        lease_owner = uuid.uuid4().hex
        values = {
            ":lease": lease_value(_now(), lease),
            ":owner": {"S": lease_owner},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":bucket": {"S": bucket},
            ":key": {"S": key},
            ":expires": epoch_value(_now() + self._retention),
        }
        sets = [
            "lease_expires_at = :lease",
            "lease_owner = :owner",
            "created_at = if_not_exists(created_at, :now)",
            "attempts = if_not_exists(attempts, :zero) + :one",
            "#bucket = :bucket",
            "#key = :key",
            "poll_seq = if_not_exists(poll_seq, :zero) + :one",
            "expires_at = :expires",
        ]
        updated = self._write(Event.CLAIM, request_id, sets, values, owner=owner)
        return updated if isinstance(updated, Unchanged) else Claimed(updated, lease_owner)

    def enqueue(self, request_id: int, lease: timedelta, owner: Owner) -> DownloadRecord | Unchanged:
        """Mark ``request_id`` queued for the worker and ``owner``, unless it is final, held or another's.

        A queued record is claimable by any invocation; its lease only says how long a repeated async
        request waits before queueing the download again (the claim makes a duplicate message harmless).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        values = {
            ":lease": lease_value(_now(), lease),
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":expires": epoch_value(_now() + self._retention),
        }
        sets = [
            "lease_expires_at = :lease",
            "created_at = if_not_exists(created_at, :now)",
            "attempts = if_not_exists(attempts, :zero)",
            "poll_seq = if_not_exists(poll_seq, :zero) + :one",
            "expires_at = :expires",
        ]
        return self._write(Event.QUEUE, request_id, sets, values, owner=owner)

    def report_progress(self, claim: Claimed, progress: Progress) -> Unchanged | None:
        """Record a running download's progress.

        Returns:
            :class:`Unchanged` when the claim is no longer ours (the download was cancelled or revoked
            meanwhile, or taken over), else None.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        values = {
            ":bytes": {"N": str(progress.bytes_received)},
            ":parts": {"N": str(progress.parts_uploaded)},
            ":rate": {"N": str(progress.mib_per_second)},
            ":at": {"S": format_utc(progress.at)},
        }
        sets = [
            "progress_bytes = :bytes",
            "progress_parts = :parts",
            "progress_mib_s = :rate",
            "progress_at = :at",
        ]
        updated = self._write(Event.PROGRESS, claim.record.request_id, sets, values, lease_owner=claim.owner)
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
        values: dict[str, Any] = {
            ":size": {"N": str(size_bytes)},
            ":checksum": {"S": checksum},
            ":expires": epoch_value(_now() + self._retention),
        }
        sets = ["size_bytes = :size", "checksum = :checksum", "completed_at = :now", "expires_at = :expires"]
        if manifest is not None:
            values[":manifest"] = {"S": json.dumps(manifest, separators=(",", ":"))}
            sets.append("manifest = :manifest")
        return self._finish(Event.COMPLETE, claim, sets, values)

    def fail(self, claim: Claimed, error: ServiceError) -> DownloadRecord:
        """Record why the download failed (it may be claimed again by a later request).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        values = {":expires": epoch_value(_now() + self._retention), **error_values(error)}
        return self._finish(Event.FAIL, claim, ["expires_at = :expires", *error_sets(error)], values)

    def unclaim(self, claim: Claimed) -> DownloadRecord:
        """Give a claim back before its download began: the record is ``queued`` again, nothing else changed.

        Returns:
            the queued record — or the record as it is when the claim was lost meanwhile.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        return self._finish(Event.UNCLAIM, claim, [], {})

    def abandon(self, request_id: int, error: ServiceError) -> None:
        """A queued download whose message could not be sent: record it failed (never raises)."""
        try:
            self._write(Event.ABANDON, request_id, error_sets(error), error_values(error))
        except RecordStoreError as store_failure:
            logger.error("queued download not marked failed", extra=store_failure.log_fields())
