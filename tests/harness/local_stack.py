"""Starts and stops moto server and the TikTok emulator on free loopback ports.

Both run as child processes, so the code under test talks to them over real HTTP and does not share
their interpreter lock. ``LocalStack.environment()`` is what the function needs to use them.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from tests.harness.cfn_template import LocalResources, Template
from tests.harness.emulator_control import Emulator
from tests.harness.tiktok_emulator import DEFAULT_CLIENT_KEY, DEFAULT_CLIENT_SECRET

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"


def _wait_until_up(url: str, process: subprocess.Popen[str], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {seconds} s")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LocalStack:
    """moto server and the TikTok emulator, each in its own process; use as a context manager.

    ``aws=False`` starts the emulator alone (the emulator's own tests need no AWS)."""

    def __init__(self, *, aws: bool = True) -> None:
        self._aws = aws
        self._processes: list[subprocess.Popen[str]] = []
        self.moto_url = ""
        self.emulator = Emulator("")

    def __enter__(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        moto = None
        if self._aws:
            port = _free_port()
            moto = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._processes.append(moto)
            self.moto_url = f"http://127.0.0.1:{port}"
        emulator = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.tiktok_emulator", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        self._processes.append(emulator)
        assert emulator.stdout is not None
        match = re.search(r"listening on (\S+)", emulator.stdout.readline())
        if not match:
            raise RuntimeError("the TikTok emulator did not start")
        self.emulator = Emulator(match.group(1))
        if moto is not None:
            _wait_until_up(self.moto_url + "/moto-api/", moto)
        _wait_until_up(self.emulator.url + "/_emulator/health", emulator)

    def close(self) -> None:
        """Stop both servers."""
        for process in reversed(self._processes):
            _stop(process)
        self._processes.clear()

    def environment(self) -> dict[str, str]:
        """What the local stack adds to a function's template environment: the AWS endpoints (moto) and
        credentials Lambda would provide, and TikTok's origin (the emulator)."""
        return {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ENDPOINT_URL_S3": self.moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def parameters(self) -> dict[str, str]:
        """Template parameters that point the stack at the local TikTok (the emulator)."""
        return {"TikTokApiBaseUrl": self.emulator.url}

    def reset_aws(self) -> None:
        """Drop every resource moto holds."""
        request = urllib.request.Request(self.moto_url + "/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass


@dataclass
class Resources:
    """What template.yaml creates, made in moto for one test or one demo run.

    ``local`` says what each logical id of the template is locally (its Ref value and attributes), so
    that :class:`tests.harness.functions.LambdaFunctions` can resolve each function's environment and
    policies from the template itself.
    """

    moto_url: str
    template: Template
    local: LocalResources
    events_queue_url: str = ""

    @property
    def table(self) -> str:
        return self.local.ref("DownloadsTable")

    @property
    def queue_url(self) -> str:
        return self.local.ref("DownloadQueue")

    @property
    def key_id(self) -> str:
        return self.local.ref("TokenKey")

    @property
    def bucket(self) -> str:
        return self.local.ref("ArchiveBucket")

    def client(self, service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def events(self) -> list[dict[str, Any]]:
        """Every event published so far (a rule on the default bus copies them to a queue)."""
        sqs = self.client("sqs")
        found: list[dict[str, Any]] = []
        while True:
            answer = sqs.receive_message(QueueUrl=self.events_queue_url, MaxNumberOfMessages=10)
            messages = answer.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.events_queue_url, ReceiptHandle=message["ReceiptHandle"])

    def queued_messages(self, queue: str = "DownloadQueue") -> list[dict[str, Any]]:
        """A queue's messages (left in the queue, visible again after 0 s)."""
        sqs = self.client("sqs")
        answer = sqs.receive_message(
            QueueUrl=self.local.ref(queue), MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        return answer.get("Messages", [])  # type: ignore[no-any-return]

    def item(self, request_id: int | str, table: str = "DownloadsTable") -> dict[str, Any] | None:
        """The raw DynamoDB item of ``request_id``."""
        answer = self.client("dynamodb").get_item(
            TableName=self.local.ref(table), Key={"request_id": {"S": str(request_id)}}, ConsistentRead=True
        )
        item: dict[str, Any] | None = answer.get("Item")
        return item


def provision(
    moto_url: str, suffix: str, *, bucket: str | None = None, template: Template | None = None
) -> Resources:
    """Create in moto every resource of template.yaml that the functions use, named ``…-{suffix}``.

    Tables get the template's key schema and indexes, queues its attributes, the secret a test value
    (:data:`APP_SECRET`). The archive bucket is ``bucket`` when given (already created). Resources the
    functions do not touch (roles, the API, log groups …) get a placeholder name. Also creates an event
    capture: a rule on the default bus that copies the stack's events to a queue.
    """
    template = template or Template.load()
    parameters = template.parameters()
    local = LocalResources()
    client = Resources(moto_url, template, local).client
    for logical_id, resource in template.document["Resources"].items():
        kind = resource["Type"]
        properties = resource.get("Properties") or {}
        name = f"{logical_id.lower()}-{suffix}"[:63]
        if kind == "AWS::S3::Bucket":
            if bucket is None:
                client("s3").create_bucket(
                    Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION}
                )
            local = local.with_bucket(logical_id, bucket or name)
        elif kind == "AWS::DynamoDB::Table":
            _create_table(client("dynamodb"), name, template.resolve(properties, local, parameters))
            local = local.with_table(logical_id, name)
        elif kind == "AWS::SQS::Queue":
            url = client("sqs").create_queue(QueueName=name)["QueueUrl"]
            local = local.with_queue(logical_id, url)
        elif kind == "AWS::KMS::Key":
            key = client("kms").create_key(Description=logical_id)["KeyMetadata"]
            local = local.with_key(logical_id, key["Arn"])
        elif kind == "AWS::SecretsManager::Secret":
            arn = client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(APP_SECRET))[
                "ARN"
            ]
            local = local.with_resource(logical_id, arn, Id=arn)
        elif kind == "AWS::Logs::LogGroup":
            local = local.with_log_group(logical_id, name)
        elif kind == "AWS::Serverless::Function":
            # The execution role SAM makes for it, which the key policy names.
            role = f"arn:aws:iam::{local.account_id}:role/{logical_id}Role-{suffix}"
            local = local.with_resource(
                logical_id, name, Arn=f"arn:aws:lambda:{REGION}:{local.account_id}:function:{name}"
            )
            local = local.with_resource(f"{logical_id}Role", f"{logical_id}Role-{suffix}", Arn=role)
        else:
            arn = f"arn:aws:{kind.split('::')[1].lower()}:{REGION}:{local.account_id}:{name}"
            local = local.with_resource(logical_id, name, Arn=arn)
    resources = Resources(moto_url, template, local)
    resources.events_queue_url = _event_capture(resources, suffix)
    return resources


# The app's credentials in the local secret (the emulator's defaults: see tiktok_emulator).
APP_SECRET = {"client_key": DEFAULT_CLIENT_KEY, "client_secret": DEFAULT_CLIENT_SECRET}


def _create_table(dynamodb: Any, name: str, properties: dict[str, Any]) -> None:
    spec: dict[str, Any] = {
        "TableName": name,
        "KeySchema": properties["KeySchema"],
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if properties.get("GlobalSecondaryIndexes"):
        spec["GlobalSecondaryIndexes"] = [
            {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
            for index in properties["GlobalSecondaryIndexes"]
        ]
    dynamodb.create_table(**spec)


def _event_capture(resources: Resources, suffix: str) -> str:
    sqs, events = resources.client("sqs"), resources.client("events")
    url: str = sqs.create_queue(QueueName=f"events-{suffix}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name=f"capture-{suffix}", EventPattern=json.dumps({"source": ["tiktok-archive"]}), State="ENABLED"
    )
    events.put_targets(Rule=f"capture-{suffix}", Targets=[{"Id": "capture", "Arn": arn}])
    return url
