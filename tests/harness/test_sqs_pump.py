"""tests/harness/sqs_pump.py: the template's SQS event sources, and records shaped as Lambda delivers them
(no servers: the pump's delivery itself runs in every integration test that drains a queue)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.harness.cfn_template import SqsEventSource, Template, TemplateError
from tests.harness.events import load_event
from tests.harness.sqs_pump import lambda_record

QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:downloadqueue-test"


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.load()


def test_the_event_sources_are_the_templates(template: Template) -> None:
    assert template.sqs_event_sources() == [
        SqsEventSource("WorkerFunction", "DownloadQueue", 1, True),
        SqsEventSource("LifecycleFunction", "LifecycleQueue", 10, True),
        SqsEventSource("LifecycleFunction", "ReadyQueue", 10, True),
    ]
    # BatchSize follows its parameter
    worker = template.sqs_event_sources(template.parameters({"WorkerBatchSize": "4"}))[0]
    assert (worker.function, worker.batch_size) == ("WorkerFunction", 4)


def test_an_event_source_must_name_a_queue_of_the_template(template: Template) -> None:
    document = template.document
    events = document["Resources"]["WorkerFunction"]["Properties"]["Events"]
    events["Downloads"]["Properties"]["Queue"] = "arn:aws:sqs:eu-west-1:123456789012:elsewhere"
    with pytest.raises(TemplateError, match=r"WorkerFunction\.Events\.Downloads\.Queue"):
        Template(document).sqs_event_sources()
    events["Downloads"]["Properties"]["Queue"] = {"Fn::GetAtt": ["DownloadsTable", "Arn"]}
    with pytest.raises(TemplateError, match="DownloadsTable is not a AWS::SQS::Queue"):
        Template(document).sqs_event_sources()


def received(**extra: Any) -> dict[str, Any]:
    """A message as SQS's ReceiveMessage answers it (AttributeNames and MessageAttributeNames ``All``)."""
    return {
        "MessageId": "9a1c5e2e-0000-4000-8000-000000000001",
        "ReceiptHandle": "AQEB-real-handle==",
        "MD5OfBody": "1d7a3d0c0b0b0b0b0b0b0b0b0b0b0b0b",
        "Body": json.dumps({"kind": "check", "request_id": "1", "seq": 0}),
        "Attributes": {
            "SenderId": "AIDAEXAMPLE",
            "SentTimestamp": "1795802400000",
            "ApproximateReceiveCount": "2",
            "ApproximateFirstReceiveTimestamp": "1795802400001",
            "QueueArn": "not passed on by Lambda",
        },
        **extra,
    }


def test_a_received_message_becomes_the_record_lambda_delivers() -> None:
    record = lambda_record(received(), QUEUE_ARN, "eu-west-1")

    assert record == {
        "messageId": "9a1c5e2e-0000-4000-8000-000000000001",
        "receiptHandle": "AQEB-real-handle==",
        "body": '{"kind": "check", "request_id": "1", "seq": 0}',
        "attributes": {
            "ApproximateReceiveCount": "2",
            "SentTimestamp": "1795802400000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1795802400001",
        },
        "messageAttributes": {},
        "md5OfBody": "1d7a3d0c0b0b0b0b0b0b0b0b0b0b0b0b",
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "eu-west-1",
    }
    # The same keys as the sample event of a delivered record
    assert set(record) == set(load_event("sqs-download.json")["Records"][0])


def test_message_attributes_are_written_as_lambda_writes_them() -> None:
    message = received(
        MessageAttributes={
            "kind": {"StringValue": "check", "DataType": "String"},
            "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
        },
        MD5OfMessageAttributes="0f0f",
    )

    record = lambda_record(message, QUEUE_ARN, "eu-west-1")

    assert record["messageAttributes"] == {
        "kind": {
            "stringValue": "check",
            "binaryValue": None,
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "blob": {
            "stringValue": None,
            "binaryValue": base64.b64encode(b"\x00\x01").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    assert record["md5OfMessageAttributes"] == "0f0f"
