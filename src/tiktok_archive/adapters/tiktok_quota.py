"""TikTok's quota, shared by every invocation of every function: one counter per endpoint and sub-window.

One DynamoDB item per endpoint and sub-window (key ``"<endpoint> <sub-window start>"``, see
:mod:`tiktok_archive.models.tiktok_quota`), counted by one conditional ``UpdateItem`` per TikTok try:
``ADD calls :one`` if ``attribute_not_exists(calls) OR calls < :cap``. Atomic, no read, one write unit;
a refused condition is the answer "no call left at this priority". The item expires (TTL) two minutes
after its sub-window began.

If DynamoDB fails (throttled, unreachable, out of time) the call goes ahead — fail open — and the failure
is logged: the quota is then protected by TikTok's own 429, which every caller still handles, and a
budget that blocked all of TikTok whenever its table hiccupped would turn a small outage into a big one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import aws_failure, is_condition_failure
from tiktok_archive.models.errors import RecordStoreError
from tiktok_archive.models.tiktok_quota import (
    KEEP_SECONDS,
    Endpoint,
    Priority,
    QuotaPlan,
    until_next_window,
    window_key,
    window_start,
)
from tiktok_archive.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# The table's key and attributes.
KEY = "window"
CALLS = "calls"
EXPIRES_AT = "expires_at"


class SharedQuota:
    """The quota's counters in DynamoDB (a :class:`~tiktok_archive.models.tiktok_quota.QuotaGate`).

    Args:
        dynamodb: a boto3 DynamoDB client (bounded by the invocation, see ``aws_clients``).
        table_name: the quota table (``TIKTOK_QUOTA_TABLE_NAME``).
        plan: the quota's size and the service's share of it.
        clock: epoch seconds now (tests and the simulation set it; the system's clock by default).
    """

    def __init__(
        self,
        dynamodb: DynamoDBClient,
        table_name: str,
        plan: QuotaPlan,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._dynamodb = dynamodb
        self._table = table_name
        self._plan = plan
        self._clock = clock

    @property
    def plan(self) -> QuotaPlan:
        """The quota's size."""
        return self._plan

    def take(self, endpoint: Endpoint, priority: Priority) -> float | None:
        """Count one call to ``endpoint`` at ``priority`` in the current sub-window.

        Returns:
            None when the call may be made (counted, or DynamoDB failed: fail open); else the seconds to
            the next sub-window (nothing counted).
        """
        now = self._clock() if self._clock is not None else time.time()
        cap = self._plan.cap(priority)
        if cap <= 0:
            return until_next_window(now)
        start = window_start(now)
        try:
            self._dynamodb.update_item(
                TableName=self._table,
                Key={KEY: {"S": window_key(endpoint, start)}},
                UpdateExpression=f"ADD {CALLS} :one SET {EXPIRES_AT} = :expires",
                ConditionExpression=f"attribute_not_exists({CALLS}) OR {CALLS} < :cap",
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":cap": {"N": str(cap)},
                    ":expires": {"N": str(start + KEEP_SECONDS)},
                },
            )
        except (ClientError, BotoCoreError) as error:
            if is_condition_failure(error):
                return until_next_window(now)
            failure = aws_failure(RecordStoreError, "DynamoDB UpdateItem (TikTok quota)", error)
            logger.warning(
                "TikTok quota not counted: calling TikTok all the same (its 429 still protects)",
                extra={"endpoint": endpoint.value, "error_message": failure.message},
            )
        return None
