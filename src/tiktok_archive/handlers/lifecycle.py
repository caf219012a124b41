"""Lifecycle queue entry point: scheduled status checks of waiting requests (and webhook work).

Thin on purpose: each message is parsed and handed to :class:`RequestLifecycle`. Two things are the
trigger's own:

- pacing: one invocation makes at most one TikTok call per ``STATUS_POLL_PACE_MS``; with the template's
  cap on concurrent invocations, that bounds the calls a minute whatever the number of waiting users
  (see the README's arithmetic);
- a 429: the rest of the batch is handed back to come in after TikTok's ``Retry-After`` (their
  visibility is changed), so one rate limit does not cost a call per message.

A malformed message is logged and acknowledged; a transient failure of AWS hands the message back.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from tiktok_archive.handlers.queue_failures import settle
from tiktok_archive.models.download import parse_json_object
from tiktok_archive.models.errors import HandedBackError, TransferError
from tiktok_archive.models.lifecycle import (
    ArchiveReadyWork,
    AuthorizationRemovedWork,
    parse_lifecycle_message,
)
from tiktok_archive.observability import logger, metrics, tracer
from tiktok_archive.runtime import message_visibility, request_lifecycle, settings, start_invocation

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class _Invocation:
    """What one invocation's messages share: when TikTok was last called, and a rate limit's pause."""

    def __init__(self) -> None:
        self.last_call = 0.0
        self.paused_until = 0.0

    def pace(self) -> None:
        gap = settings().status_poll_pace_ms / 1000 - (time.monotonic() - self.last_call)
        if gap > 0:
            time.sleep(gap)
        self.last_call = time.monotonic()


_invocation = _Invocation()


def lifecycle_message(record: SQSRecord, lambda_context: LambdaContext) -> None:
    """Work one lifecycle message.

    Raises:
        TransferError: only transient ones, so that the message is delivered again.
    """
    logger.set_correlation_id(record.message_id)
    pause = _invocation.paused_until - time.monotonic()
    if pause > 0:
        message_visibility().postpone(record.queue_url, record.receipt_handle, int(pause) + 1)
        raise HandedBackError("TikTok rate-limited this invocation; the message comes back later")
    try:
        message = parse_lifecycle_message(parse_json_object(record.body))
        lifecycle = request_lifecycle()
        if isinstance(message, ArchiveReadyWork):
            lifecycle.archive_ready(message.request_id)
            return
        if isinstance(message, AuthorizationRemovedWork):
            lifecycle.revoke_user(message.user_openid, message.reason)
            return
        _invocation.pace()
        outcome = lifecycle.check(
            message.request_id, message.seq, lambda_context.get_remaining_time_in_millis()
        )
    except TransferError as error:
        settle(error, record, {}, postpone=False)
        return
    if outcome.rate_limited_for:
        _invocation.paused_until = time.monotonic() + outcome.rate_limited_for


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    """Lambda entry point for the lifecycle queue."""
    start_invocation(context.get_remaining_time_in_millis())
    _invocation.paused_until = 0.0
    return process_partial_response(
        event=event, record_handler=lifecycle_message, processor=processor, context=context
    )
