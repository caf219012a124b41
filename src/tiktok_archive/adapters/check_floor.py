"""The budget's floor of the status checks' interval, one item of the downloads table.

The sweeper counts the waiting requests every run and stores the interval at which all of them fit the
check budget (:class:`~tiktok_archive.models.check_schedule.CheckBudget`); each check reads it to space
the next one. It lives beside the records it is about, under a key no request can have (request ids are
numbers), in none of the indexes (it has none of their attributes), and expires a day after it was last
stored (a sweeper that stopped leaves no floor behind for ever). A container reads it at most once every
``cache_seconds``: a floor minutes old is as good, and a thousand checks cost one read.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.dynamodb_items import epoch_value, number_field, store_error
from tiktok_archive.models.clock import format_utc
from tiktok_archive.models.clock import utc_now as _now
from tiktok_archive.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

FLOOR_ITEM = {"request_id": {"S": "check-floor"}}
FLOOR_LIFETIME = timedelta(days=1)
CACHE_SECONDS = 300.0


class CheckFloor:
    """Stores and reads the checks' floor interval.

    Args:
        client: a boto3 DynamoDB client.
        table: the downloads table (``DOWNLOADS_TABLE_NAME``).
        cache_seconds: how long a read floor is used before it is read again.
    """

    def __init__(self, client: DynamoDBClient, table: str, cache_seconds: float = CACHE_SECONDS) -> None:
        self._client = client
        self._table = table
        self._cache_seconds = cache_seconds
        self._seconds = 0
        self._read_at: float | None = None

    def seconds(self) -> int:
        """The floor in seconds (0: none stored, or it could not be read — the back-off alone then)."""
        now = time.monotonic()
        if self._read_at is not None and now - self._read_at < self._cache_seconds:
            return self._seconds
        self._read_at = now  # a failed read is not tried again before the cache's time either
        try:
            item = self._client.get_item(TableName=self._table, Key=FLOOR_ITEM).get("Item") or {}
        except (ClientError, BotoCoreError) as error:
            logger.warning(
                "the checks' floor could not be read; the last one read holds",
                extra=store_error("GetItem", error).log_fields(),
            )
            return self._seconds
        expires = number_field(item, "expires_at") or 0
        self._seconds = (number_field(item, "floor_seconds") or 0) if expires > _now().timestamp() else 0
        return self._seconds

    def store(self, waiting: int, floor_seconds: int) -> None:
        """Store the floor ``floor_seconds`` the sweeper computed for ``waiting`` requests.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        try:
            self._client.update_item(
                TableName=self._table,
                Key=FLOOR_ITEM,
                UpdateExpression=(
                    "SET waiting = :waiting, floor_seconds = :floor, counted_at = :now, expires_at = :expires"
                ),
                ExpressionAttributeValues={
                    ":waiting": {"N": str(waiting)},
                    ":floor": {"N": str(floor_seconds)},
                    ":now": {"S": format_utc(now)},
                    ":expires": epoch_value(now + FLOOR_LIFETIME),
                },
            )
        except (ClientError, BotoCoreError) as error:
            raise store_error("UpdateItem", error) from None
