"""Lifecycle events on EventBridge (boto3), one per state change a backend cares about.

``Request Added`` (a request is waiting for TikTok), ``Archive Ready`` (TikTok says ``downloading``),
``Download Completed``, ``Download Failed``, ``Request Expired``, ``Request Cancelled`` — and, per user
and caller, ``Authorization Removed`` (the user disconnected the app) and ``User Erased`` (the caller
erased the user), see :meth:`publish_user_event`. Other systems subscribe with a rule on
``source = tiktok-archive`` (and ``detail.caller``, when several backends share a stack). An event says
what happened to a request — its id, its caller, status, where the archive is, its size, checksum and
manifest, or the error — never a URL or a token. Publishing is best effort after the record is written:
a failure is logged as an error (the record still holds the state) and counted, it never fails the work.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus
from tiktok_archive.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

EVENT_SOURCE = "tiktok-archive"
DETAIL_TYPES = {
    DownloadStatus.WAITING: "Request Added",
    DownloadStatus.QUEUED: "Archive Ready",
    DownloadStatus.COMPLETED: "Download Completed",
    DownloadStatus.FAILED: "Download Failed",
    DownloadStatus.EXPIRED: "Request Expired",
    DownloadStatus.CANCELLED: "Request Cancelled",
}


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
        """Publish ``record``'s state: its status names the event (see :data:`DETAIL_TYPES`)."""
        detail_type = DETAIL_TYPES.get(record.status)
        if detail_type is not None:
            self._put(detail_type, event_detail(record))

    def publish_user_event(self, detail_type: str, detail: dict[str, Any]) -> None:
        """Publish an event about a user rather than one request (``Authorization Removed``)."""
        self._put(detail_type, detail)

    def _put(self, detail_type: str, detail: dict[str, Any]) -> None:
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
            _not_published(detail_type, type(error).__name__)
            return
        if answer.get("FailedEntryCount"):
            _not_published(detail_type, answer["Entries"][0].get("ErrorCode"))


def _not_published(detail_type: str, error_type: str | None) -> None:
    logger.error("event not published", extra={"detail_type": detail_type, "error_type": error_type})
    metrics.add_metric(name="EventsNotPublished", unit=MetricUnit.Count, value=1)


def event_detail(record: DownloadRecord) -> dict[str, Any]:
    """The event's ``detail``: the record's state without anything secret."""
    detail: dict[str, Any] = {
        "request_id": str(record.request_id),
        "caller": record.caller,
        "status": record.status.value,
        "bucket": record.bucket,
        "key": record.key,
        "size_bytes": record.size_bytes,
        "checksum": record.checksum,
        "checksum_algorithm": "CRC32" if record.checksum else None,
        "attempts": record.attempts,
        "error": record.error.to_body() if record.error else None,
    }
    if record.user_openid:
        detail["open_id"] = record.user_openid
    if record.preparation is not None:
        detail["tiktok"] = record.preparation.to_body()
    if record.manifest is not None:
        detail["manifest"] = record.manifest
    return detail
