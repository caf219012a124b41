"""The lifecycle queue (SQS): status checks on a schedule, webhook work, and users' purges.

A waiting request is checked by a chain of delayed messages: each check sends the next one with
``DelaySeconds`` (SQS allows up to 900 s) before recording itself, so a lost record write repeats a check
instead of losing the chain, and ``seq`` makes every check but the expected one stale. A check due later
than SQS's delay allows is carried by hops: the message comes early, finds the record's ``next_check_at``
ahead and sends itself on. The sweeper sends the checks of lost chains ten to a ``SendMessageBatch``. The
messages' shapes are :mod:`tiktok_archive.models.messages`'s; none holds a token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import aws_failure
from tiktok_archive.models.errors import QueueError
from tiktok_archive.models.messages import LifecycleMessage, StatusCheck

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# SQS's longest message delay, and the most messages of one SendMessageBatch.
MAX_DELAY_SECONDS = 900
MAX_BATCH = 10


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
        self.send(StatusCheck(request_id, seq), delay_seconds)

    def schedule_checks(self, checks: Sequence[tuple[StatusCheck, int]]) -> set[StatusCheck]:
        """Send many checks, each with its delay (0–900), ten to a ``SendMessageBatch``.

        Returns:
            the checks SQS refused (the others were sent).

        Raises:
            QueueError: SQS failed (the batches before it were sent).
        """
        refused: set[StatusCheck] = set()
        for start in range(0, len(checks), MAX_BATCH):
            batch = checks[start : start + MAX_BATCH]
            entries = [
                {
                    "Id": str(number),
                    "MessageBody": json.dumps(check.body()),
                    "DelaySeconds": max(0, min(MAX_DELAY_SECONDS, delay)),
                }
                for number, (check, delay) in enumerate(batch)
            ]
            try:
                answer = self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)  # type: ignore[arg-type]
            except (ClientError, BotoCoreError) as error:
                raise aws_failure(QueueError, "SQS SendMessageBatch", error) from None
            refused.update(batch[int(failure["Id"])][0] for failure in answer.get("Failed", []))
        return refused

    def send(self, message: LifecycleMessage, delay_seconds: int = 0) -> None:
        """Queue ``message``, to be worked on after ``delay_seconds`` (0–900).

        Raises:
            QueueError: SQS failed.
        """
        delay = max(0, min(MAX_DELAY_SECONDS, delay_seconds))
        try:
            self._sqs.send_message(
                QueueUrl=self._queue_url, MessageBody=json.dumps(message.body()), DelaySeconds=delay
            )
        except (ClientError, BotoCoreError) as error:
            raise aws_failure(QueueError, "SQS SendMessage", error) from None
