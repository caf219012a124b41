"""What a queue handler does with a message's failure: the verdict, logged once, the same way."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from tiktok_archive.models.errors import ServiceError
from tiktok_archive.models.tiktok_errors import TikTokBudgetExhaustedError
from tiktok_archive.observability import logger
from tiktok_archive.runtime_adapters import message_visibility


def settle(error: ServiceError, record: SQSRecord, fields: dict[str, Any], *, postpone: bool) -> None:
    """Acknowledge a permanent failure (logged as an error); raise a transient one so it comes back.

    ``postpone``: a transient failure that says when to try again (TikTok's ``Retry-After``, a running
    download's claim) comes back then, not after the queue's whole visibility timeout.

    Work TikTok's quota had no call for (``tiktok_budget_exhausted``) did not fail: the message is sent
    again with the quota's delay and this one acknowledged, so that its receive count — what sends a
    message to the dead-letter queue — does not grow. If it cannot be sent again, it comes back as a
    transient failure does.

    Raises:
        ServiceError: ``error``, when it is transient.
    """
    fields = {**error.log_fields(), "message_id": record.message_id, **fields}
    delay = error.redeliver_after if isinstance(error, TikTokBudgetExhaustedError) else None
    if delay is not None and message_visibility().send_again(record.queue_url, record.body, delay):
        logger.info(
            "message deferred: TikTok's quota has no call left for it now; sent again",
            extra={**fields, "redelivered_after_seconds": delay},
        )
        return
    if not error.is_transient:
        logger.error("message acknowledged without retry: permanent failure", extra=fields)
        return
    if postpone and error.redeliver_after is not None:
        message_visibility().postpone(record.queue_url, record.receipt_handle, error.redeliver_after)
        fields["redelivered_after_seconds"] = error.redeliver_after
    logger.warning("message will be delivered again", extra=fields)
    raise error
