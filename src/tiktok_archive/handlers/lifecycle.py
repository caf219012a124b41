"""Lifecycle and ready queues' entry point: status checks of waiting requests, webhook work, users' purges.

TikTok's ``download.ready`` work comes on a queue of its own (the ready queue, its own event source), so
that it never waits behind the status checks of many waiting requests; the rest on the lifecycle queue.

Thin on purpose: each message is parsed and handed to its use case (:class:`StatusChecks`,
:class:`ArchiveReady`, :class:`UserPurge`).
Two things are the trigger's own:

- pacing: one invocation makes at most one status check per ``STATUS_POLL_PACE_MS``; with the template's
  cap on concurrent invocations, that bounds the checks offered a minute whatever the number of waiting
  users; how many reach TikTok is TikTok's shared quota's to say (checks at its lowest priority, the
  purges' cancels and revocations at its highest; see docs/configuration.md);
- a 429: the batch's other TikTok work (status checks, an erasure's revocation) is handed back to come in
  after TikTok's ``Retry-After`` (their visibility is changed), so one rate limit does not cost a call per
  message. Purges and webhook work call no TikTok endpoint: they are never held back.

A malformed message is logged and acknowledged; a transient failure of AWS hands the message back.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from tiktok_archive.handlers.entry import lambda_entry
from tiktok_archive.handlers.queue_failures import settle
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import HandedBackError, ServiceError
from tiktok_archive.models.inputs import parse_json_object
from tiktok_archive.models.messages import (
    TIKTOK_WORK,
    ArchiveReadyWork,
    AuthorizationRemovedWork,
    EraseUser,
    LifecycleMessage,
    PurgeAgain,
    RevokeAtTikTok,
    StatusCheck,
    parse_lifecycle_message,
)
from tiktok_archive.models.tiktok_quota import Priority
from tiktok_archive.observability import logger
from tiktok_archive.runtime import archive_ready, start_invocation, status_checks, unit_of_work, user_purge
from tiktok_archive.runtime_adapters import message_visibility, settings

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class _Invocation:
    """What one invocation's messages share: when TikTok was last called, and a rate limit's pause."""

    def __init__(self) -> None:
        self.last_call = 0.0
        self.paused_until = 0.0
        self.deadline = Deadline.after(0)

    def pace(self) -> None:
        gap = settings().status_poll_pace_ms / 1000 - (time.monotonic() - self.last_call)
        if gap > 0:
            time.sleep(gap)
        self.last_call = time.monotonic()


_invocation = _Invocation()


def lifecycle_message(record: SQSRecord) -> None:
    """Work one lifecycle message.

    Raises:
        ServiceError: only transient ones, so that the message is delivered again.
    """
    logger.set_correlation_id(record.message_id)
    try:
        message = parse_lifecycle_message(parse_json_object(record.body))
        if isinstance(message, TIKTOK_WORK):
            pause = _invocation.paused_until - time.monotonic()
            if pause > 0:
                message_visibility().postpone(record.queue_url, record.receipt_handle, int(pause) + 1)
                raise HandedBackError("TikTok rate-limited this invocation; the message comes back later")
        _work(message)
    except ServiceError as error:
        if isinstance(error, HandedBackError):
            raise
        if error.upstream_status == 429 and error.redeliver_after:
            _invocation.paused_until = time.monotonic() + error.redeliver_after
        settle(error, record, {}, postpone=True)


def _work(message: LifecycleMessage) -> None:
    """Hand ``message`` to the service that does its work."""
    # Each message: a unit of work of its own. Status checks are the quota's lowest priority; the rest
    # of what this queue does with TikTok is a purge's (cancels, revocations), its highest.
    priority = Priority.CHECK if isinstance(message, StatusCheck) else Priority.PURGE
    deadline = unit_of_work(_invocation.deadline, priority)
    if isinstance(message, StatusCheck):
        # Paced only when it calls TikTok: a stale check, or an early one sending itself on, calls nobody.
        outcome = status_checks().check(message.request_id, message.seq, deadline, pace=_invocation.pace)
        if outcome.rate_limited_for:
            _invocation.paused_until = time.monotonic() + outcome.rate_limited_for
    elif isinstance(message, ArchiveReadyWork):  # from the ready queue (the lifecycle queue before it)
        archive_ready().queue(message)
    elif isinstance(message, AuthorizationRemovedWork):
        user_purge().authorization_removed(message.user_openid, message.reason)
    elif isinstance(message, EraseUser):
        user_purge().erase(message)
    elif isinstance(message, PurgeAgain):
        user_purge().again(message)
    elif isinstance(message, RevokeAtTikTok):
        _invocation.pace()
        user_purge().revoke_at_tiktok(message, deadline)


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    """Lambda entry point for the lifecycle queue."""
    _invocation.deadline = start_invocation(context)
    _invocation.paused_until = 0.0
    return process_partial_response(
        event=event, record_handler=lifecycle_message, processor=processor, context=context
    )
