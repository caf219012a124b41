"""Shared fixtures: moto server and the TikTok emulator over real HTTP, the function's environment,
event builders, and a guard that fails any test whose output holds a token or a URL signature."""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import pytest

from tests.harness.contract import Contract
from tests.harness.demo import DEMO_REFRESH_TOKEN, DEMO_TOKEN
from tests.harness.functions import RECORDER, UNUSED, LambdaFunctions
from tests.harness.gateway import Gateway
from tests.harness.lambda_context import FakeLambdaContext
from tests.harness.local_stack import APP_SECRET, REGION, Emulator, LocalStack, Resources, provision
from tests.harness.tokens import CHECK_STATUS_EXAMPLE, access_token, refresh_token
from tiktok_archive.handlers import api, lifecycle, sweeper, webhook, worker
from tiktok_archive.observability import REDACTED, logger

EVENTS = Path(__file__).resolve().parents[1] / "events"
MIB = 1024 * 1024
# Problems the contract found in the running test's answers (see `_against_contract`).
CONTRACT_PROBLEMS: list[str] = []


# -- secrets guard -------------------------------------------------------------------------------
@dataclass
class SecretRegistry:
    """Every token the suite hands out and every presigned URL it receives."""

    tokens: set[str] = field(default_factory=set)
    signatures: set[str] = field(default_factory=set)
    plain: set[str] = field(default_factory=set)  # secrets without a prefix: the app's client secret

    def token(self, shape: str | None = None) -> str:
        """A fresh TikTok-shaped access token (``act.…!1234.e1``, ``.va``, ``.e2`` or ``act.3.…``)."""
        value = access_token(shape)
        self.tokens.add(value)
        return value

    def refresh_token(self) -> str:
        """A fresh TikTok-shaped refresh token (``rft.…``)."""
        value = refresh_token()
        self.tokens.add(value)
        return value

    def saw_url(self, url: str) -> None:
        for name in ("X-Amz-Signature", "X-Amz-Security-Token"):
            match = re.search(name + r"=([^&]+)", url)
            if match and match.group(1) != "testing":
                self.signatures.add(match.group(1))


SECRETS = SecretRegistry()
# The sample events' token, and TikTok's own example token, are secrets like any other.
SECRETS.tokens.update({DEMO_TOKEN, DEMO_REFRESH_TOKEN, CHECK_STATUS_EXAMPLE})
SECRETS.plain.add(APP_SECRET["client_secret"])
# The callers: a backend's role, and another principal of the account that may call the API too.
BACKEND = "arn:aws:sts::123456789012:assumed-role/tiktok-archive-backend/backend-7f3a"
OTHER = "arn:aws:sts::123456789012:assumed-role/another-backend/other-91c2"
BACKEND_CALLER = "arn:aws:sts::123456789012:assumed-role/tiktok-archive-backend"
OTHER_CALLER = "arn:aws:sts::123456789012:assumed-role/another-backend"
# What API Gateway hands over besides the caller: the SigV4 header and the session token (secrets too).
_SIGNED = json.loads((EVENTS / "api-download.json").read_text())["headers"]
SIGV4_SECRETS = {
    _SIGNED["X-Amz-Security-Token"],
    _SIGNED["Authorization"].rsplit("Signature=", 1)[1],
}


class LogCapture(logging.Handler):
    """Collects every record of the service's logger, formatted exactly as Lambda would print it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logger.registered_formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def find(self, message: str) -> list[dict[str, Any]]:
        return [record for record in self.records() if record.get("message") == message]


def spellings(token: str) -> list[str]:
    """How a token may show in output: its secret part (with or without ``act.``), URL-encoded, base64."""
    secret = token.partition(".")[2]
    return [secret, quote(secret, safe=""), base64.b64encode(token.encode()).decode().rstrip("=")]


def find_secrets(text: str) -> list[str]:
    """What in ``text`` should never be there: a token (in any spelling), a signature, or the redaction
    marker (which means code tried to log a secret and only the scrubber caught it)."""
    found = [
        f"token #{n}"
        for n, t in enumerate(sorted(SECRETS.tokens))
        if any(spelling in text for spelling in spellings(t))
    ]
    found += [f"signature header {s[:6]}…" for s in SIGV4_SECRETS if s in text]
    found += [f"signature {s[:8]}…" for s in SECRETS.signatures if s in text]
    found += [f"secret {s[:4]}…" for s in SECRETS.plain if s in text]
    found += [marker for marker in ("X-Amz-Signature=", "X-Amz-Security-Token=", REDACTED) if marker in text]
    return found


@pytest.fixture(autouse=True)
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[LogCapture]:
    """Capture every log line and printed metric of the test, and fail it if either holds a secret."""
    capture = LogCapture()
    logger.addHandler(capture)
    CONTRACT_PROBLEMS.clear()
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
    out, err = capsys.readouterr()
    leaked = find_secrets("\n".join([*capture.lines, out, err]))
    assert not leaked, f"secrets reached the output: {leaked}"
    problems, CONTRACT_PROBLEMS[:] = list(CONTRACT_PROBLEMS), []
    assert not problems, "answers that break docs/openapi.yaml:\n" + "\n".join(problems[:10])


@pytest.fixture
def token() -> str:
    """A fresh user access token, registered with the secrets guard."""
    return SECRETS.token()


def new_request_id() -> int:
    """A random positive int64 beyond 2^53, so any double rounding would show."""
    return secrets.randbelow(2**63 - 2**60) + 2**60


# -- local AWS and TikTok ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    RECORDER.install()  # before the service builds any client
    with LocalStack() as local:
        yield local


@pytest.fixture(scope="session")
def emulator(stack: LocalStack) -> Emulator:
    return stack.emulator


@pytest.fixture(scope="session")
def s3(stack: LocalStack) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack.moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"archives-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


Configure = Callable[..., None]


@pytest.fixture
def resources(stack: LocalStack, bucket: str) -> Resources:
    """Everything template.yaml creates (tables, queues, key, secret), fresh in moto, with the test's
    bucket as the archive bucket, and an event capture."""
    return provision(stack.moto_url, bucket.removeprefix("archives-"), bucket=bucket)


Configure = Callable[..., None]
# Template parameters every test starts from: the emulator as TikTok, and 5 MiB parts (S3's minimum)
# so that multipart paths run on small archives.
TEST_PARAMETERS = {
    "PartSizeMiB": "5",
    "UploadConcurrency": "3",
    # Status checks come fast in tests (a real deployment: 60 s, doubling to 900 s) and unpaced.
    "StatusPollInitialSeconds": "1",
    "StatusPollMaxSeconds": "2",
    "StatusPollPaceMs": "0",
}
_FUNCTIONS: list[LambdaFunctions] = []


def functions() -> LambdaFunctions:
    """The functions of the running test (set up by the ``configure`` fixture)."""
    assert _FUNCTIONS, "this test needs the configure fixture"
    return _FUNCTIONS[-1]


@pytest.fixture
def configure(stack: LocalStack, resources: Resources) -> Iterator[Configure]:
    """Run each function with exactly its template.yaml environment over the test's local resources;
    call it to change variables on purpose (``None`` removes one). At the end, every AWS call a
    function made must be allowed by that function's template permissions."""
    RECORDER.take()
    lambdas = LambdaFunctions(
        resources.template,
        resources.local,
        {**TEST_PARAMETERS, **stack.parameters()},
        stack.environment(),
    )
    _FUNCTIONS.append(lambdas)
    try:
        yield lambdas.override
    finally:
        _FUNCTIONS.remove(lambdas)
        lambdas.restore()
        # Archives live in both servers' memory: drop them so a long session stays small.
        stack.emulator.reset()
        stack.reset_aws()
    refused = lambdas.violations(RECORDER.take())
    assert not refused, "AWS calls the template's policies do not allow:\n" + "\n".join(refused)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report the template permissions that no test used (a hint, not a failure)."""
    lines = UNUSED.lines()
    if lines:
        terminalreporter.section("template permissions no test used")
        for line in lines:
            terminalreporter.write_line(line)


# -- events ---------------------------------------------------------------------------------------
def load_event(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return document


def _signed(event: dict[str, Any], caller: str | None) -> dict[str, Any]:
    """``event`` as API Gateway hands it over for ``caller`` (an assumed role's session ARN), or for a
    request API Gateway would not have authorized (``None``: no identity)."""
    identity = event["requestContext"].setdefault("identity", {})
    if caller is None:
        for name in ("userArn", "caller", "user", "accessKey", "accountId"):
            identity.pop(name, None)
    else:
        identity["userArn"] = caller
        identity["accountId"] = caller.split(":")[4]
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    return event


def _with_tokens(
    document: dict[str, Any], token: str | None, refresh: str | None, open_id: str | None
) -> str:
    if token is not None:
        document["access_token"] = token
    if refresh is not None:
        document["refresh_token"] = refresh
    if open_id is not None:
        document["open_id"] = open_id
    return json.dumps(document)


def api_event(
    request_id: object = None,
    token: str | None = None,
    *,
    body: str | None = None,
    caller: str | None = BACKEND,
    refresh_token: str | None = None,
    open_id: str | None = None,
    path: str = "/downloads",
    method: str = "POST",
    prefer: str | None = None,
) -> dict[str, Any]:
    """``events/api-download.json`` for ``caller`` with another body (``request_id`` and the user's
    ``token`` in it, unless ``body`` is given whole) and Prefer header."""
    event = copy.deepcopy(load_event("api-download.json"))
    event["path"] = event["resource"] = path
    event["httpMethod"] = method
    if body is None:
        body = _with_tokens({"request_id": request_id}, token, refresh_token, open_id)
    event["body"] = body
    if prefer is not None:
        event["headers"]["Prefer"] = prefer
    return _signed(event, caller)


def request_event(
    body: dict[str, Any] | str | None,
    token: str | None,
    *,
    caller: str | None = BACKEND,
    refresh_token: str | None = None,
    open_id: str | None = None,
) -> dict[str, Any]:
    """``events/api-create-request.json`` (``POST /requests``) for ``caller``: the ``body``'s fields with
    the user's ``token`` (and ``refresh_token``, ``open_id``) added, or a ``body`` text given whole."""
    event = copy.deepcopy(load_event("api-create-request.json"))
    if isinstance(body, dict) or (body is None and token is not None):
        body = _with_tokens(dict(body or {}), token, refresh_token, open_id)
    event["body"] = body
    return _signed(event, caller)


def delete_event(request_id: object, caller: str | None = BACKEND) -> dict[str, Any]:
    """``events/api-cancel-download.json`` (``DELETE /downloads/{id}``) for another id and caller."""
    event = get_event(request_id, caller)
    event["httpMethod"] = event["requestContext"]["httpMethod"] = "DELETE"
    return event


def get_event(request_id: object, caller: str | None = BACKEND) -> dict[str, Any]:
    """``events/api-get-download.json`` for another ``request_id`` and caller."""
    event = copy.deepcopy(load_event("api-get-download.json"))
    event["path"] = f"/downloads/{request_id}"
    event["pathParameters"] = {"request_id": str(request_id)}
    event["requestContext"]["path"] = f"/v1/downloads/{request_id}"
    return _signed(event, caller)


def user_requests_event(
    open_id: str, caller: str | None = BACKEND, *, limit: str | None = None, next_page: str | None = None
) -> dict[str, Any]:
    """``events/api-list-user-requests.json`` (``GET /users/{open_id}/requests``)."""
    event = copy.deepcopy(load_event("api-list-user-requests.json"))
    event["path"] = f"/users/{quote(open_id, safe='')}/requests"
    event["pathParameters"] = {"open_id": open_id}
    event["requestContext"]["path"] = f"/v1{event['path']}"
    query = {k: v for k, v in (("limit", limit), ("next", next_page)) if v is not None}
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} or None
    return _signed(event, caller)


def erase_event(open_id: str, caller: str | None = BACKEND) -> dict[str, Any]:
    """``events/api-erase-user.json`` (``DELETE /users/{open_id}``)."""
    event = copy.deepcopy(load_event("api-erase-user.json"))
    event["path"] = f"/users/{quote(open_id, safe='')}"
    event["pathParameters"] = {"open_id": open_id}
    event["requestContext"]["path"] = f"/v1{event['path']}"
    return _signed(event, caller)


@dataclass
class ApiAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def _against_contract(event: dict[str, Any], answer: dict[str, Any]) -> None:
    """Check a handler's answer against docs/openapi.yaml; problems fail the test (``logs`` fixture).

    A path the document does not have (tests of unknown routes) is left out: API Gateway answers those
    itself when deployed."""
    contract = Contract.load()
    path = str(event.get("path") or "")
    if contract.match(str(event.get("httpMethod") or ""), path) is None:
        return
    headers: dict[str, list[str]] = {k: list(v) for k, v in (answer.get("multiValueHeaders") or {}).items()}
    for name, value in (answer.get("headers") or {}).items():
        headers.setdefault(name, [value])
    found = contract.check(event["httpMethod"], path, answer["statusCode"], headers, answer.get("body") or "")
    CONTRACT_PROBLEMS.extend(found)


def call_api(event: dict[str, Any], remaining_ms: int = 28_000, *, gateway: bool = True) -> ApiAnswer:
    """Invoke the API handler as Lambda would (``remaining_ms`` before its timeout), and decode its answer
    (checked against the contract).

    The event first passes API Gateway as the template configures it (``AWS_IAM`` on every route but the
    webhook, the resource policy of the test's ``CallerRoleArns``): a request it would refuse gets its own
    403 and never reaches the function. ``gateway=False`` reaches the function anyway (what a deployment
    without that authorization would do: the function must still refuse)."""
    lambdas = functions()
    if gateway:
        refused = Gateway(lambdas.template, lambdas.parameters, lambdas.local).refusal(event)
        if refused is not None:
            return ApiAnswer(refused["statusCode"], json.loads(refused["body"]), dict(refused["headers"]))
    with lambdas.running("ApiFunction"):
        answer = api.lambda_handler(event, FakeLambdaContext("ApiFunction", remaining_ms))
    _against_contract(event, answer)
    body = json.loads(answer["body"])
    if "url" in body:
        SECRETS.saw_url(body["url"])
    headers = {
        k: v[-1] if isinstance(v, list) else v for k, v in (answer.get("multiValueHeaders") or {}).items()
    }
    headers.update(answer.get("headers") or {})
    return ApiAnswer(answer["statusCode"], body, headers)


def sqs_record(body: str, message_id: str | None = None, queue: str = "DownloadQueue") -> dict[str, Any]:
    """``events/sqs-download.json``'s record with another body, from the test's own ``queue``."""
    record = copy.deepcopy(load_event("sqs-download.json")["Records"][0])
    record["messageId"] = message_id or str(uuid.uuid4())
    record["body"] = body
    if _FUNCTIONS:
        record["eventSourceARN"] = functions().local.get_att(queue, "Arn")
    return record


def call_worker(records: list[dict[str, Any]], remaining_ms: int = 900_000) -> dict[str, Any]:
    """Invoke the SQS worker with a batch of records, ``remaining_ms`` before its timeout."""
    context = FakeLambdaContext("WorkerFunction", remaining_ms)
    with functions().running("WorkerFunction"):
        result: dict[str, Any] = worker.lambda_handler({"Records": records}, context)
    return result


def webhook_event(
    raw: bytes,
    signature: str | None,
    *,
    base64_encoded: bool = False,
    headers: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """``events/api-webhook-download-ready.json`` with another raw body and ``TikTok-Signature``."""
    event = copy.deepcopy(load_event("api-webhook-download-ready.json"))
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["body"] = base64.b64encode(raw).decode() if base64_encoded else raw.decode()
    event["isBase64Encoded"] = base64_encoded
    multi = {k: v for k, v in event["multiValueHeaders"].items() if k != "TikTok-Signature"}
    if signature is not None:
        multi["TikTok-Signature"] = [signature]
    multi.update(headers or {})
    event["multiValueHeaders"] = multi
    event["headers"] = {k: v[-1] for k, v in multi.items() if v}
    return event


def call_webhook(event: dict[str, Any]) -> ApiAnswer:
    """Invoke the webhook function as API Gateway would."""
    with functions().running("WebhookFunction"):
        answer = webhook.lambda_handler(event, FakeLambdaContext("WebhookFunction", 10_000))
    _against_contract(event, answer)
    return ApiAnswer(answer["statusCode"], json.loads(answer["body"]), answer.get("headers") or {})


def call_sweeper() -> dict[str, Any]:
    """Invoke the sweeper as its schedule would."""
    event = {"source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": {}}
    with functions().running("SweeperFunction"):
        result: dict[str, Any] = sweeper.lambda_handler(event, FakeLambdaContext("SweeperFunction", 60_000))
    return result


def call_lifecycle(records: list[dict[str, Any]], remaining_ms: int = 60_000) -> dict[str, Any]:
    """Invoke the lifecycle function with a batch of records, ``remaining_ms`` before its timeout."""
    context = FakeLambdaContext("LifecycleFunction", remaining_ms)
    with functions().running("LifecycleFunction"):
        result: dict[str, Any] = lifecycle.lambda_handler({"Records": records}, context)
    return result


def acknowledge(
    resources: Resources, queue: str, records: list[dict[str, Any]], result: dict[str, Any]
) -> None:
    """Delete the messages the function did not report failed, as Lambda's SQS event source does."""
    failed = {failure["itemIdentifier"] for failure in result["batchItemFailures"]}
    sqs = resources.client("sqs")
    for record in records:
        if record["messageId"] not in failed:
            sqs.delete_message(QueueUrl=resources.local.ref(queue), ReceiptHandle=record["receiptHandle"])


def receive(resources: Resources, queue: str, wait_seconds: int = 3) -> list[dict[str, Any]]:
    """The messages of ``queue`` visible within ``wait_seconds``, as SQS records of that queue (with real
    receipt handles), received and so hidden for the queue's visibility timeout."""
    sqs = resources.client("sqs")
    answer = sqs.receive_message(
        QueueUrl=resources.local.ref(queue),
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait_seconds,
        AttributeNames=["All"],
    )
    records = []
    for message in answer.get("Messages", []):
        record = sqs_record(message["Body"], message["MessageId"], queue)
        record["receiptHandle"] = message["ReceiptHandle"]
        records.append(record)
    return records


# -- S3 assertions -------------------------------------------------------------------------------
def open_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return uploads


def stored_keys(s3: Any, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def assert_nothing_left(s3: Any, bucket: str) -> None:
    """No object and no multipart upload (and so no orphaned part) in the bucket."""
    assert stored_keys(s3, bucket) == []
    assert open_uploads(s3, bucket) == []
