"""Bringing a failed queue message back sooner or later than the queue's visibility timeout (SQS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import aws_failure
from tiktok_archive.models.errors import QueueError
from tiktok_archive.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# SQS's longest visibility timeout: 12 hours.
MAX_VISIBILITY_SECONDS = 43_200


class MessageVisibility:
    """Changes when a received message becomes visible again.

    Args:
        sqs: a boto3 SQS client.
    """

    def __init__(self, sqs: SQSClient) -> None:
        self._sqs = sqs

    def postpone(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        """Make the message visible again in ``seconds`` (0 to 12 h); never raises.

        If SQS refuses, the message keeps the queue's visibility timeout: it still comes back, later.
        """
        seconds = max(0, min(MAX_VISIBILITY_SECONDS, seconds))
        try:
            self._sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            )
        except (ClientError, BotoCoreError) as error:
            logger.warning(
                "message keeps the queue's visibility timeout",
                extra={
                    "error_message": aws_failure(QueueError, "SQS ChangeMessageVisibility", error).message
                },
            )
