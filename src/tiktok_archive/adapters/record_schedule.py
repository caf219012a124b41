"""The waiting records by their next check (the ``by-schedule`` index), and the writes that move a check.

Only a waiting record carries ``schedule_bucket``, so the sparse index holds exactly the requests being
waited for, ordered by ``next_check_at``: the sweeper counts them (the budget's floor) and reads the
overdue ones from its start (chains of checks that were lost), page by page. ``next_check_at`` is the
record's word on when it is checked next; a check message that comes earlier sends itself on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.dynamodb_items import query_pages, store_error
from tiktok_archive.adapters.record_items import checked_sets, record_of
from tiktok_archive.adapters.record_reads import BY_SCHEDULE_INDEX, WAITING_BUCKET
from tiktok_archive.adapters.record_writes import RecordWrites, Unchanged
from tiktok_archive.models.clock import format_utc
from tiktok_archive.models.download_record import DownloadRecord
from tiktok_archive.models.record_lifecycle import Event

# Where a page of overdue records stopped: the index's key of its last record.
Position = dict[str, Any]


class RecordSchedule(RecordWrites):
    """The downloads table's schedule: the waiting records by their next check, and its writes."""

    def count_waiting(self, before: datetime | None = None) -> int:
        """How many records are waiting (whose next check is due before ``before``, when given).

        A ``Select=COUNT`` query of the index, every page (DynamoDB counts 1 MB of items a page).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        query = {**self._schedule_query(before), "Select": "COUNT"}
        return sum(int(page.get("Count", 0)) for page in query_pages(self._client, query))

    def overdue(
        self, before: datetime, after: Position | None = None, limit: int = 100
    ) -> tuple[list[DownloadRecord], Position | None]:
        """A page of the waiting records whose next check was due before ``before``, earliest first.

        ``after``: the position the previous page ended at. Returns the records and the position after
        them (None: nothing follows). Their chain of checks was lost: a message that could not be sent,
        one left in the dead-letter queue.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        query = self._schedule_query(before)
        query["Limit"] = limit
        if after is not None:
            query["ExclusiveStartKey"] = after
        answer = self._query(query)
        records = [record_of(item) for item in answer.get("Items", [])]
        position = answer.get("LastEvaluatedKey")
        return records, position if position and records else None

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
        sets, values = checked_sets(seq, tiktok_status, apply_time, collect_time)
        sets += ["next_check_at = :next_check", "poll_interval = :interval"]
        values.update(
            {":next_check": {"S": format_utc(next_check_at)}, ":interval": {"N": str(poll_interval)}}
        )
        return self._write(Event.CHECKED, request_id, sets, values, seq=seq)

    def reschedule(self, request_id: int, seq: int, next_check_at: datetime) -> DownloadRecord | Unchanged:
        """The sweeper sent check number ``seq`` again, due at ``next_check_at`` (its chain was lost).

        The same check is expected: a slow chain's own message and the re-driven one race, and whichever
        comes second finds itself stale.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        values = {":next_check": {"S": format_utc(next_check_at)}}
        return self._write(Event.REDRIVEN, request_id, ["next_check_at = :next_check"], values, seq=seq)

    def _schedule_query(self, before: datetime | None) -> dict[str, Any]:
        condition = "schedule_bucket = :bucket"
        values = {":bucket": {"S": WAITING_BUCKET}}
        if before is not None:
            condition += " AND next_check_at < :before"
            values[":before"] = {"S": format_utc(before)}
        return {
            "TableName": self._table,
            "IndexName": BY_SCHEDULE_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }

    def _query(self, query: dict[str, Any]) -> Any:
        try:
            return self._client.query(**query)
        except (ClientError, BotoCoreError) as error:
            raise store_error("Query", error) from None
