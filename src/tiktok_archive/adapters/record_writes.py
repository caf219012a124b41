"""The downloads table's one kind of write: a transition of the record's lifecycle, as a conditional update.

Each write is one :class:`~tiktok_archive.models.record_lifecycle.Transition`: its condition (the states
it may happen from, a lapsed lease, the schedule's ``poll_seq`` or the claim's ``lease_owner``) and the
fields it removes come from the table; what it sets besides is the write's own. A write the record's
state does not allow changes nothing and answers :class:`Unchanged` with the record as it is. Claims and
queued downloads are also conditional on who acts (:class:`Owner`), so a caller never takes over
another's record, even in a race.

The writes themselves, one per transition, are ``DownloadRecords``' (:mod:`download_records`); ending a
record, which every phase does, is here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import is_condition_failure
from tiktok_archive.adapters.dynamodb_items import Item, epoch_value, store_error
from tiktok_archive.adapters.record_conditions import condition as table_condition
from tiktok_archive.adapters.record_conditions import ownership
from tiktok_archive.adapters.record_items import (
    ATTRIBUTES,
    NAMES,
    error_sets,
    error_values,
    key_of,
    record_of,
)
from tiktok_archive.adapters.record_reads import RecordReads
from tiktok_archive.models.clock import format_utc
from tiktok_archive.models.clock import utc_now as _now
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus, Owner
from tiktok_archive.models.errors import RecordStoreError, ServiceError
from tiktok_archive.models.record_lifecycle import Event, ending, transition
from tiktok_archive.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass(frozen=True)
class Claimed:
    """The download is ours until ``record.lease_expires_at``; ``owner`` proves it."""

    record: DownloadRecord
    owner: str


@dataclass(frozen=True)
class Unchanged:
    """The write did not happen: the record is not in a state it allows (its state is ``record``)."""

    record: DownloadRecord


class RecordWrites(RecordReads):
    """The downloads table's transitions.

    Args:
        client: a boto3 DynamoDB client.
        table: the table's name (``DOWNLOADS_TABLE_NAME``).
        retention: how long a record outlives its last change (the archives' lifetime).
    """

    def __init__(self, client: DynamoDBClient, table: str, retention: timedelta) -> None:
        self._client = client
        self._table = table
        self._retention = retention

    def end(
        self,
        request_id: int,
        status: DownloadStatus,
        *,
        error: ServiceError | None = None,
        seq: int | None = None,
        tiktok_status: str | None = None,
    ) -> DownloadRecord | Unchanged:
        """End the record ``expired``, ``cancelled``, ``revoked``, or ``failed`` (``error`` says why).

        ``seq``: a status check ending it (only if the schedule expects that check); otherwise from
        outside (see :func:`~tiktok_archive.models.record_lifecycle.ending`).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        values: dict[str, Any] = {":expires": epoch_value(_now() + self._retention)}
        sets = ["expires_at = :expires"]
        if error is not None:
            values.update(error_values(error))
            sets += error_sets(error)
        if tiktok_status is not None:
            values[":tiktok_status"] = {"S": tiktok_status}
            sets.append("tiktok_status = :tiktok_status")
        return self._write(ending(status, scheduled=seq is not None), request_id, sets, values, seq=seq)

    def _finish(
        self, event: Event, claim: Claimed, sets: list[str], values: dict[str, Any]
    ) -> DownloadRecord:
        updated = self._write(event, claim.record.request_id, sets, values, lease_owner=claim.owner)
        if isinstance(updated, Unchanged):
            # The claim lapsed and another invocation took the download over, or the owner cancelled
            # it meanwhile: that state stands; ours is only logged.
            logger.warning(
                "download record changed before this invocation finished",
                extra={"status": updated.record.status.value},
            )
            return updated.record
        return updated

    def _write(
        self,
        event: Event,
        request_id: int,
        sets: list[str],
        values: dict[str, Any],
        *,
        seq: int | None = None,
        lease_owner: str | None = None,
        owner: Owner | None = None,
    ) -> DownloadRecord | Unchanged:
        """``event``'s conditional write: the table's condition and removals, ``sets`` and ``updated_at``."""
        rule = transition(event)
        values[":now"] = {"S": format_utc(_now())}
        sets = ["updated_at = :now", *sets]
        if rule.target is not None:
            values[":target"] = {"S": rule.target.value}
            sets.insert(0, "#status = :target")
        condition = table_condition(event, values, seq=seq, lease_owner=lease_owner)
        if owner is not None:
            owned, owner_condition = ownership(owner, values)
            sets += owned
            condition = f"({owner_condition}) AND ({condition})"
        removes = [name for group in sorted(rule.clears) for name in ATTRIBUTES[group]]
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        return self._conditional_update(request_id, expression, condition, values)

    def _conditional_update(
        self, request_id: int, expression: str, condition: str, values: dict[str, Any]
    ) -> DownloadRecord | Unchanged:
        names = {name: field for name, field in NAMES.items() if name in expression + condition}
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": key_of(request_id),
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
            record = record_of(item) if item else self.get(request_id)
            if record is None:  # no such record (or deleted in between, TTL): nothing to hold on to
                raise RecordStoreError("the download record does not exist") from None
            return Unchanged(record)
        except BotoCoreError as error:
            raise store_error("UpdateItem", error) from None
        return record_of(answer["Attributes"])
