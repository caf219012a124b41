"""What the DynamoDB adapters share: an item's typed fields, and DynamoDB's failures as the taxonomy's."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import aws_failure
from tiktok_archive.models.errors import RecordStoreError, ServiceError

Item = Mapping[str, Any]


def query_pages(client: Any, query: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """DynamoDB's answers to ``query``, one a page, until its last (``LastEvaluatedKey`` followed).

    Raises:
        RecordStoreError: DynamoDB failed.
    """
    asked = dict(query)
    while True:
        try:
            answer: dict[str, Any] = client.query(**asked)
        except (ClientError, BotoCoreError) as error:
            raise store_error("Query", error) from None
        yield answer
        start = answer.get("LastEvaluatedKey")
        if not start:
            return
        asked["ExclusiveStartKey"] = start


def string_field(item: Item, name: str) -> str | None:
    """The item's string attribute ``name``, or None."""
    value = item.get(name, {}).get("S")
    return str(value) if value is not None else None


def number_field(item: Item, name: str) -> int | None:
    """The item's (whole) number attribute ``name``, or None."""
    value = item.get(name, {}).get("N")
    return int(value) if value is not None else None


def store_error(operation: str, error: BaseException) -> ServiceError:
    """``RecordStoreError("DynamoDB <operation> failed: …")`` (or ``deadline_exceeded``)."""
    return aws_failure(RecordStoreError, f"DynamoDB {operation}", error)


def epoch_value(moment: datetime) -> dict[str, str]:
    """``moment`` as a DynamoDB number of Unix seconds (what TTL and the lease conditions compare)."""
    return {"N": str(int(moment.timestamp()))}


def lease_value(now: datetime, lease: timedelta) -> dict[str, str]:
    """When a lease of ``lease`` taken ``now`` lapses, rounded up to the next whole second."""
    return {"N": str(int((now + lease).timestamp()) + 1)}
