"""Reading download records (boto3): one by its id, a user's, a caller's page.

The waiting ones by their next check are :mod:`record_schedule`'s.

Two sparse indexes find a user's records: ``by-user`` (``user_openid``: every caller's, for TikTok's
``authorization.removed``) and ``by-caller-user`` (``caller_user``, newest first by ``created_at``: one
caller's, for its list and its erasure); ``by-schedule`` holds the waiting records by their next check.
The indexes are eventually consistent: a record written a moment ago may not show yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.dynamodb_items import query_pages, store_error
from tiktok_archive.adapters.record_items import key_of, record_of
from tiktok_archive.models.download_record import DownloadRecord, caller_user

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BY_USER_INDEX = "by-user"
BY_CALLER_USER_INDEX = "by-caller-user"
BY_SCHEDULE_INDEX = "by-schedule"
# The one value of ``schedule_bucket``: only a waiting record has it, so the index holds only them.
WAITING_BUCKET = "waiting"


class RecordReads:
    """The downloads table's reads (``DownloadRecords`` adds the writes)."""

    _client: DynamoDBClient
    _table: str

    # -- reading -----------------------------------------------------------------------------------
    def get(self, request_id: int) -> DownloadRecord | None:
        """The record of ``request_id``, or None.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        try:
            answer = self._client.get_item(TableName=self._table, Key=key_of(request_id), ConsistentRead=True)
        except (ClientError, BotoCoreError) as error:
            raise store_error("GetItem", error) from None
        item = answer.get("Item")
        return record_of(item) if item else None

    def of_user(self, user_openid: str) -> list[DownloadRecord]:
        """Every record of ``user_openid`` (the ``by-user`` index; eventually consistent).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        query = {
            "TableName": self._table,
            "IndexName": BY_USER_INDEX,
            "KeyConditionExpression": "user_openid = :user",
            "ExpressionAttributeValues": {":user": {"S": user_openid}},
        }
        return [
            record_of(item) for page in query_pages(self._client, query) for item in page.get("Items", [])
        ]

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
        records = [record_of(item) for item in answer.get("Items", [])]
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
