"""TikTok's webhook deliveries, as they arrived (DynamoDB): what makes a duplicate do nothing.

TikTok delivers at least once and retries for up to 72 hours; a delivery is recorded by its id (the
SHA-256 of its body) with a conditional write the moment it is verified, and marked ``queued`` once its
work is on the lifecycle queue. A second delivery finds it and does nothing once that work is queued.
While it is not, the second one is told the first is in flight (it must not be acknowledged: the first
invocation may still die before queueing); once the first is older than any invocation of the webhook
function lives, it died in between, and the second one queues the work again. Items expire (TTL) four
days after they arrived, past TikTok's retries.
"""

from __future__ import annotations

import contextlib
import enum
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import is_condition_failure
from tiktok_archive.adapters.dynamodb_items import store_error
from tiktok_archive.models.clock import format_utc, utc_now

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

KEEP_FOR = timedelta(days=4)
# A delivery recorded this long ago whose work is still not queued: its invocation died in between
# (the webhook function's timeout is 10 s in template.yaml).
STUCK_AFTER = timedelta(seconds=15)


class Arrival(enum.Enum):
    """What recording a delivery found."""

    NEW = "new"  # first seen (or its first invocation died before queueing): queue its work
    DONE = "done"  # seen, and its work queued: a duplicate
    IN_FLIGHT = "in_flight"  # seen moments ago, its work not queued yet: ask TikTok to deliver it again


class WebhookDeliveries:
    """The deliveries table.

    Args:
        client: a boto3 DynamoDB client.
        table: the table's name (``WEBHOOK_DELIVERIES_TABLE_NAME``).
    """

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def arrived(self, delivery_id: str, event: str) -> Arrival:
        """Record the delivery, and say whether it is new, done or in flight.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = utc_now()
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "delivery_id": {"S": delivery_id},
                    "event": {"S": event[:128]},
                    "state": {"S": "received"},
                    "received_at": {"S": format_utc(now)},
                    "received_epoch": {"N": str(int(now.timestamp()))},
                    "expires_at": {"N": str(int((now + KEEP_FOR).timestamp()))},
                },
                ConditionExpression=(
                    "attribute_not_exists(delivery_id) OR (#state = :received AND received_epoch < :stuck)"
                ),
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":received": {"S": "received"},
                    ":stuck": {"N": str(int((now - STUCK_AFTER).timestamp()))},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if is_condition_failure(error):
                first: Any = error.response.get("Item") or {}
                state = first.get("state", {}).get("S")
                return Arrival.IN_FLIGHT if state == "received" else Arrival.DONE
            raise store_error("PutItem", error) from None
        except BotoCoreError as error:
            raise store_error("PutItem", error) from None
        return Arrival.NEW

    def queued(self, delivery_id: str) -> None:
        """Mark the delivery's work queued (never raises: a later duplicate would queue it again)."""
        with contextlib.suppress(ClientError, BotoCoreError):
            self._client.update_item(
                TableName=self._table,
                Key={"delivery_id": {"S": delivery_id}},
                UpdateExpression="SET #state = :queued",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":queued": {"S": "queued"}},
            )

    def forget(self, delivery_id: str) -> None:
        """Drop the delivery whose work could not be queued, so that TikTok's retry does it (never raises)."""
        with contextlib.suppress(ClientError, BotoCoreError):
            self._client.delete_item(TableName=self._table, Key={"delivery_id": {"S": delivery_id}})
