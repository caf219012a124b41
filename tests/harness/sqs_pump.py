"""Lambda's SQS event sources, locally: the one pump the tests, ``make demo`` and ``make serve`` share.

For each ``Type: SQS`` event of template.yaml (the function, its queue, its ``BatchSize``), Lambda polls
the queue, invokes the function with a batch of records and deletes the messages the batch response did
not report failed (``ReportBatchItemFailures``); a failed message becomes visible again after its
visibility timeout (or sooner, when the function changed it). :class:`SqsPump` does the same against
moto's SQS, step by step for tests that look between the steps:

- :meth:`SqsPump.receive`: up to a batch of the queue's due messages, as the records Lambda delivers
  (real receipt handles, the message's attributes, ``eventSourceARN`` the local queue's), hidden for the
  queue's visibility timeout;
- :meth:`SqsPump.invoke`: the queue's function on those records, in exactly its template environment
  (:meth:`tests.harness.functions.LambdaFunctions.invoke`), its Timeout as the remaining time;
- :meth:`SqsPump.acknowledge`: delete what the batch response did not report failed;
- :meth:`SqsPump.deliver`: the three at once, for one batch; :meth:`SqsPump.deliver_forever` for every
  queue, until stopped (``make serve``).

The pump's own SQS calls (receive, delete) are Lambda's, not the function's: they go through a boto3
session of their own, so the permission check of :mod:`tests.harness.functions` never judges them.
"""

from __future__ import annotations

import base64
import contextlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import boto3

from tests.harness.cfn_template import SqsEventSource
from tests.harness.functions import LambdaFunctions
from tests.harness.local_stack import Resources

# The system attributes Lambda passes on in a record's ``attributes`` (those SQS has for the message).
_RECORD_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "DeadLetterQueueSourceArn",
)
Record = dict[str, Any]


def lambda_record(message: Mapping[str, Any], queue_arn: str, region: str) -> Record:
    """A message of SQS's ``ReceiveMessage`` answer as Lambda hands it to the function."""
    attributes = message.get("Attributes") or {}
    record: Record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {name: attributes[name] for name in _RECORD_ATTRIBUTES if name in attributes},
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """A message attribute as Lambda writes it (camelCase, binary values base64)."""
    binary = value.get("BinaryValue")
    return {
        "stringValue": value.get("StringValue"),
        "binaryValue": None if binary is None else base64.b64encode(binary).decode(),
        "stringListValues": list(value.get("StringListValues") or []),
        "binaryListValues": [base64.b64encode(b).decode() for b in value.get("BinaryListValues") or []],
        "dataType": value["DataType"],
    }


_CLIENTS: dict[tuple[str, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _lambdas_sqs(endpoint: str, region: str) -> Any:
    """Lambda's own SQS client for ``endpoint``: from a boto3 session of its own, so that the recorder of
    the functions' AWS calls (installed on boto3's default session) never sees Lambda's polling, even
    while another thread runs a function. Made once per process (a session is slow to make)."""
    with _CLIENTS_LOCK:
        if (endpoint, region) not in _CLIENTS:
            _CLIENTS[endpoint, region] = boto3.session.Session().client(
                "sqs",
                endpoint_url=endpoint,
                region_name=region,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return _CLIENTS[endpoint, region]


class SqsPump:
    """The template's SQS event sources over one set of local resources.

    Args:
        resources: the queues (what the template created locally).
        lambdas: the functions, each run in its template environment.
        lock: held around each invocation (``make serve`` runs handlers one at a time: they share the
            process environment); none by default.
    """

    def __init__(
        self, resources: Resources, lambdas: LambdaFunctions, *, lock: threading.Lock | None = None
    ) -> None:
        self.resources = resources
        self.lambdas = lambdas
        self._lock = lock
        self._sqs = _lambdas_sqs(resources.moto_url, resources.local.region)

    @property
    def sources(self) -> dict[str, SqsEventSource]:
        """The template's SQS event sources (for the current template parameters), by queue."""
        return {
            source.queue: source
            for source in self.lambdas.template.sqs_event_sources(self.lambdas.parameters)
        }

    def source(self, queue: str) -> SqsEventSource:
        """The event source that polls ``queue`` (a logical id); ``KeyError`` when no function does."""
        sources = self.sources
        if queue not in sources:
            raise KeyError(
                f"no function of template.yaml has an SQS event on {queue} (only {sorted(sources)})"
            )
        return sources[queue]

    def receive(self, queue: str, wait_seconds: int = 0, max_messages: int | None = None) -> list[Record]:
        """Up to ``max_messages`` (the event source's ``BatchSize``, at most SQS's 10 a call) of
        ``queue``'s due messages, waiting up to ``wait_seconds`` for the first; as Lambda's records, hidden
        for the queue's visibility timeout."""
        if max_messages is None:
            max_messages = self.source(queue).batch_size
        answer = self._sqs.receive_message(
            QueueUrl=self.resources.local.ref(queue),
            MaxNumberOfMessages=min(max_messages, 10),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        arn = self.resources.local.get_att(queue, "Arn")
        region = self.resources.local.region
        return [lambda_record(message, arn, region) for message in answer.get("Messages", [])]

    def invoke(self, queue: str, records: list[Record], remaining_ms: int | None = None) -> dict[str, Any]:
        """The function polling ``queue`` invoked on ``records`` (``remaining_ms``: its Timeout when
        None); its batch response."""
        function = self.source(queue).function
        with self._lock or contextlib.nullcontext():
            result: dict[str, Any] = self.lambdas.invoke(function, {"Records": records}, remaining_ms)
        return result

    def acknowledge(self, queue: str, records: Iterable[Record], result: Mapping[str, Any] | None) -> None:
        """Delete the messages of ``records`` that ``result`` (a batch response) does not report failed
        (all of them when the event source does not take ``ReportBatchItemFailures``)."""
        failed: set[str] = set()
        if self.source(queue).reports_batch_item_failures:
            failed = {failure["itemIdentifier"] for failure in (result or {}).get("batchItemFailures") or []}
        url = self.resources.local.ref(queue)
        for record in records:
            if record["messageId"] not in failed:
                self._sqs.delete_message(QueueUrl=url, ReceiptHandle=record["receiptHandle"])

    def deliver(self, queue: str, wait_seconds: int = 0) -> int:
        """One batch of ``queue``'s due messages delivered to its function and acknowledged; how many
        messages it held (0: none was due within ``wait_seconds``)."""
        records = self.receive(queue, wait_seconds)
        if records:
            self.acknowledge(queue, records, self.invoke(queue, records))
        return len(records)

    def deliver_forever(self, stop: threading.Event, every: float = 0.5) -> None:
        """Deliver every queue's due messages every ``every`` seconds until ``stop`` is set. A batch that
        raises is left to its visibility timeout, as Lambda leaves a failed invocation's batch (the
        function logged why); the loop goes on."""
        queues = list(self.sources)
        while not stop.wait(every):
            for queue in queues:
                if stop.is_set():
                    return
                with contextlib.suppress(Exception):
                    self.deliver(queue)
