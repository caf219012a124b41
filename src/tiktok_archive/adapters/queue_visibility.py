"""Bringing a queue message back later (SQS): a failed one after a chosen visibility, a deferred one anew.

A failed message is made visible again sooner or later than the queue's visibility timeout
(``ChangeMessageVisibility``). Deferred work — TikTok's quota had no call left for it, nothing failed — is
sent again as a new message with a delay and the received one acknowledged: changing its visibility
would not do, since SQS counted the receive already, and a message deferred ``maxReceiveCount`` times
would land in the dead-letter queue without ever having failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import aws_failure
from tiktok_archive.models.errors import QueueError
from tiktok_archive.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# SQS's longest visibility timeout: 12 hours; its longest message delay: 15 minutes.
MAX_VISIBILITY_SECONDS = 43_200
MAX_DELAY_SECONDS = 900


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

    def send_again(self, queue_url: str, body: str, seconds: int) -> bool:
        """Send ``body`` to the queue again, delivered in ``seconds`` (0 to 15 min); never raises.

        Returns:
            whether SQS took it (then the received message is to be acknowledged); False: the received
            message must come back by itself (the failure is logged).
        """
        seconds = max(0, min(MAX_DELAY_SECONDS, seconds))
        try:
            self._sqs.send_message(QueueUrl=queue_url, MessageBody=body, DelaySeconds=seconds)
        except (ClientError, BotoCoreError) as error:
            logger.warning(
                "deferred message not sent again; it comes back by itself",
                extra={"error_message": aws_failure(QueueError, "SQS SendMessage", error).message},
            )
            return False
        return True
