"""SQS entry point: each message asks for one download; partial batch responses report failures.

A message is ``{"request_id", "access_token"}`` (sent by a backend) or ``{"request_id",
"encrypted_access_token"}`` (queued by ``POST /downloads`` with ``Prefer: respond-async``). A download
already completed is acknowledged without downloading again; one that another invocation is running,
and any transient failure (rate limit, TikTok 5xx, network, broken stream, S3, the deadline), are
reported in ``batchItemFailures`` so SQS delivers the message again (when the failure says when —
TikTok's ``Retry-After``, a running download's claim — the message's visibility is changed to come back
then); a permanent one (a malformed
message, a refused token or scope, an unknown request) is recorded, logged as a structured error and
acknowledged so it does not loop until the dead-letter queue. A job TikTok's shared quota has no call
for is no failure: it is sent again, delayed, and the message acknowledged (``settle``), so its receive
count does not grow. Each message is judged on its own.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from tiktok_archive.handlers.entry import lambda_entry
from tiktok_archive.handlers.queue_failures import settle
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import ServiceError
from tiktok_archive.models.inputs import parse_json_object, parse_request_id
from tiktok_archive.models.messages import parse_download_job
from tiktok_archive.models.tiktok_quota import Priority
from tiktok_archive.observability import hide, logger
from tiktok_archive.runtime import queued_downloads, start_invocation, unit_of_work

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


_deadline: list[Deadline] = []


def download_message(record: SQSRecord) -> None:
    """Run one message's download, within the invocation's deadline.

    Raises:
        ServiceError: only transient ones, so that the message is delivered again.
    """
    logger.set_correlation_id(record.message_id)
    request_id: int | None = None
    try:
        document = parse_json_object(record.body)
        request_id = parse_request_id(document.get("request_id"))
        job = parse_download_job(request_id, document)
        hide(job.access_token)
        # Each message is a unit of work of its own on the invocation's deadline.
        queued_downloads().run(job, unit_of_work(_deadline[-1], Priority.DOWNLOAD))
    except ServiceError as error:
        request = {"request_id": None if request_id is None else str(request_id)}
        settle(error, record, request, postpone=True)


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    """Lambda entry point for the download queue."""
    _deadline[:] = [start_invocation(context)]
    return process_partial_response(
        event=event, record_handler=download_message, processor=processor, context=context
    )
