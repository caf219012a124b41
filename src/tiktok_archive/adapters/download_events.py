"""Completion events on EventBridge (boto3): ``Download Completed`` and ``Download Failed``.

Other systems subscribe with a rule on ``source = tiktok-archive``. An event says what happened to a
download — request id, where the archive is, its size and checksum, or the error — never a URL or a
token. Publishing is best effort after the record is written: a failure is logged as an error (and
the record still holds the outcome), it never fails the download.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus
from tiktok_archive.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

EVENT_SOURCE = "tiktok-archive"
DETAIL_TYPES = {DownloadStatus.COMPLETED: "Download Completed", DownloadStatus.FAILED: "Download Failed"}


class DownloadEvents:
    """Publishes a record's outcome to one event bus.

    Args:
        client: a boto3 EventBridge client.
        bus_name: the bus (``EVENT_BUS_NAME``, the account's ``default`` bus in the template).
    """

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, record: DownloadRecord) -> None:
        """Publish ``record``'s outcome (completed or failed); anything else is not an outcome."""
        detail_type = DETAIL_TYPES.get(record.status)
        if detail_type is None:
            return
        detail = event_detail(record)
        try:
            answer = self._client.put_events(
                Entries=[
                    {
                        "Source": EVENT_SOURCE,
                        "DetailType": detail_type,
                        "Detail": json.dumps(detail),
                        "EventBusName": self._bus_name,
                    }
                ]
            )
        except (ClientError, BotoCoreError) as error:
            logger.error(
                "completion event not published",
                extra={"detail_type": detail_type, "error_type": type(error).__name__},
            )
            return
        if answer.get("FailedEntryCount"):
            entry = answer["Entries"][0]
            logger.error(
                "completion event not published",
                extra={"detail_type": detail_type, "error_type": entry.get("ErrorCode")},
            )


def event_detail(record: DownloadRecord) -> dict[str, Any]:
    """The event's ``detail``: the record's outcome without anything secret."""
    return {
        "request_id": str(record.request_id),
        "status": record.status.value,
        "bucket": record.bucket,
        "key": record.key,
        "size_bytes": record.size_bytes,
        "checksum": record.checksum,
        "checksum_algorithm": "CRC32" if record.checksum else None,
        "attempts": record.attempts,
        "error": record.error.to_body() if record.error else None,
    }
