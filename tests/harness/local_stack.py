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

from tests.harness.emulator_control import Emulator

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
    """moto server and the TikTok emulator, each in its own process; use as a context manager."""

    def __init__(self) -> None:
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
        port = _free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._processes.append(moto)
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
        self.moto_url = f"http://127.0.0.1:{port}"
        _wait_until_up(self.moto_url + "/moto-api/", moto)
        _wait_until_up(self.emulator.url + "/_emulator/health", emulator)

    def close(self) -> None:
        """Stop both servers."""
        for process in reversed(self._processes):
            _stop(process)
        self._processes.clear()

    def environment(self) -> dict[str, str]:
        """AWS and TikTok endpoints for the function and for boto3, with dummy credentials."""
        return {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ENDPOINT_URL_S3": self.moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "TIKTOK_API_BASE_URL": self.emulator.url,
        }

    def reset_aws(self) -> None:
        """Drop every resource moto holds."""
        request = urllib.request.Request(self.moto_url + "/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass


@dataclass
class Resources:
    """What the stack's template creates besides the bucket, created in moto for one test or demo."""

    moto_url: str
    table: str
    queue_url: str
    key_id: str
    events_queue_url: str

    def environment(self) -> dict[str, str]:
        """The function's variables that point at these resources."""
        return {
            "DOWNLOADS_TABLE_NAME": self.table,
            "DOWNLOAD_QUEUE_URL": self.queue_url,
            "TOKEN_KMS_KEY_ID": self.key_id,
            "EVENT_BUS_NAME": "default",
        }

    def client(self, service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def events(self) -> list[dict[str, Any]]:
        """Every completion event published so far (a rule on the default bus copies them to a queue)."""
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

    def queued_messages(self) -> list[dict[str, Any]]:
        """The download queue's messages (left in the queue, visible again after 0 s)."""
        sqs = self.client("sqs")
        answer = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return answer.get("Messages", [])  # type: ignore[no-any-return]

    def item(self, request_id: int) -> dict[str, Any] | None:
        """The raw DynamoDB item of ``request_id``."""
        answer = self.client("dynamodb").get_item(
            TableName=self.table, Key={"request_id": {"S": str(request_id)}}, ConsistentRead=True
        )
        item: dict[str, Any] | None = answer.get("Item")
        return item


def provision(moto_url: str, name: str) -> Resources:
    """Create the downloads table, the download queue, the token key and an event capture in moto."""
    resources = Resources(moto_url, f"downloads-{name}", "", "", "")
    dynamodb, sqs = resources.client("dynamodb"), resources.client("sqs")
    dynamodb.create_table(
        TableName=resources.table,
        KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    resources.queue_url = sqs.create_queue(QueueName=f"downloads-{name}")["QueueUrl"]
    resources.key_id = resources.client("kms").create_key(Description="tokens")["KeyMetadata"]["KeyId"]
    resources.events_queue_url = sqs.create_queue(QueueName=f"events-{name}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=resources.events_queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events = resources.client("events")
    events.put_rule(
        Name=f"capture-{name}", EventPattern=json.dumps({"source": ["tiktok-archive"]}), State="ENABLED"
    )
    events.put_targets(Rule=f"capture-{name}", Targets=[{"Id": "capture", "Arn": arn}])
    return resources
