"""The lifecycle queue (SQS): status checks on a schedule, and work that arrived by webhook.

A waiting request is checked by a chain of delayed messages: each check sends the next one with
``DelaySeconds`` (SQS allows up to 900 s) before recording itself, so a lost record write repeats a check
instead of losing the chain, and ``seq`` makes every check but the expected one stale. Messages are
small JSON documents without any token:

- ``{"kind": "check", "request_id": "<decimal>", "seq": <n>}``;
- ``{"kind": "webhook", "delivery_id": "…", "event": "…", …}`` (see :mod:`handlers.webhook`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import aws_failure
from tiktok_archive.models.errors import QueueError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# SQS's longest message delay.
MAX_DELAY_SECONDS = 900


class LifecycleQueue:
    """Sends lifecycle work.

    Args:
        sqs: a boto3 SQS client.
        queue_url: the lifecycle queue (``LIFECYCLE_QUEUE_URL``).
    """

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    def schedule_check(self, request_id: int, seq: int, delay_seconds: int) -> None:
        """Check ``request_id`` again in ``delay_seconds`` (0–900), as check number ``seq``.

        Raises:
            QueueError: SQS failed.
        """
        body = {"kind": "check", "request_id": str(request_id), "seq": seq}
        self._send(body, max(0, min(MAX_DELAY_SECONDS, delay_seconds)))

    def send_work(self, work: dict[str, Any]) -> None:
        """Queue work that arrived by webhook, to be done at once.

        Raises:
            QueueError: SQS failed.
        """
        self._send({"kind": "webhook", **work}, 0)

    def _send(self, body: dict[str, Any], delay: int) -> None:
        try:
            self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(body), DelaySeconds=delay)
        except (ClientError, BotoCoreError) as error:
            raise aws_failure(QueueError, "SQS SendMessage", error) from None
