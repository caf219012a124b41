"""The integration tier's ground: each function invoked as Lambda would (through API Gateway's model for
the API), with exactly its template environment over the test's local resources (the ``configure`` fixture
of this folder's conftest); users who consent at the emulator; the service's state as it is stored
(records, grants, archives, uploads, queues); TikTok's side (the emulator's counts, its OAuth); and a
function run in a second container.

Everything here reads or drives the real handlers and the local servers; nothing replaces a part of the
service. Where a helper hands a lifecycle message to the function directly instead of receiving it from
SQS (a status check, a purge's second pass), it says so, and the body is exactly the one the service
sends. The events are :mod:`tests.harness.events`'s, the queues are delivered by
:mod:`tests.harness.sqs_pump`.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.conftest import BACKEND, CONTRACT_PROBLEMS, SECRETS
from tests.harness import events
from tests.harness.contract import Contract
from tests.harness.emulator_control import Emulator
from tests.harness.events import request_event
from tests.harness.functions import RECORDER, LambdaFunctions
from tests.harness.gateway import Gateway
from tests.harness.local_stack import APP_SECRET, REPO_ROOT, Resources
from tests.harness.sqs_pump import SqsPump
from tests.harness.tokens import open_id as new_open_id
from tiktok_archive.adapters.grants import request_grant_id, user_grant_id
from tiktok_archive.adapters.token_vault import REFRESH_TOKEN_PURPOSE

MIB = 1024 * 1024
HOUR = 3600
DAY = 24 * HOUR
QUEUES = ("DownloadQueue", "LifecycleQueue")
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
# The functions of the running test (pushed and popped by the ``configure`` fixture).
FUNCTIONS: list[LambdaFunctions] = []


def functions() -> LambdaFunctions:
    """The functions of the running test (set up by the ``configure`` fixture)."""
    assert FUNCTIONS, "this test needs the configure fixture"
    return FUNCTIONS[-1]


# -- the API ----------------------------------------------------------------------------------------------
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


_GATEWAYS: weakref.WeakKeyDictionary[LambdaFunctions, tuple[dict[str, str], Gateway]] = (
    weakref.WeakKeyDictionary()
)


def _gateway(lambdas: LambdaFunctions) -> Gateway:
    """API Gateway as the template configures it for the test's functions (their parameters now)."""
    cached = _GATEWAYS.get(lambdas)
    if cached is None or cached[0] != lambdas.parameters:
        cached = _GATEWAYS[lambdas] = (
            dict(lambdas.parameters),
            Gateway(lambdas.template, lambdas.parameters, lambdas.local),
        )
    return cached[1]


def call_api(event: dict[str, Any], remaining_ms: int = 28_000, *, gateway: bool = True) -> ApiAnswer:
    """Invoke the API handler as Lambda would (``remaining_ms`` before its timeout), and decode its answer
    (checked against the contract).

    The event first passes API Gateway as the template configures it (``AWS_IAM`` on every route but the
    webhook, the resource policy of the test's ``CallerRoleArns``): a request it would refuse gets its own
    403 and never reaches the function. ``gateway=False`` reaches the function anyway (what a deployment
    without that authorization would do: the function must still refuse)."""
    lambdas = functions()
    if gateway:
        refused = _gateway(lambdas).refusal(event)
        if refused is not None:
            return ApiAnswer(refused["statusCode"], json.loads(refused["body"]), dict(refused["headers"]))
    answer = lambdas.invoke("ApiFunction", event, remaining_ms)
    _against_contract(event, answer)
    body = json.loads(answer["body"])
    if "url" in body:
        SECRETS.saw_url(body["url"])
    headers = {
        k: v[-1] if isinstance(v, list) else v for k, v in (answer.get("multiValueHeaders") or {}).items()
    }
    headers.update(answer.get("headers") or {})
    return ApiAnswer(answer["statusCode"], body, headers)


def call_webhook(event: dict[str, Any]) -> ApiAnswer:
    """Invoke the webhook function as API Gateway would."""
    answer = functions().invoke("WebhookFunction", event)
    _against_contract(event, answer)
    return ApiAnswer(answer["statusCode"], json.loads(answer["body"]), answer.get("headers") or {})


def call_sweeper() -> dict[str, Any]:
    """Invoke the sweeper as its schedule would."""
    event = {"source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": {}}
    result: dict[str, Any] = functions().invoke("SweeperFunction", event)
    return result


# -- the queues -------------------------------------------------------------------------------------------
def sqs_record(body: str, message_id: str | None = None, queue: str = "DownloadQueue") -> dict[str, Any]:
    """A record of the test's own ``queue`` with ``body``, handed to a function directly (never received
    from SQS: :func:`receive` gives received ones)."""
    arn = functions().local.get_att(queue, "Arn") if FUNCTIONS else None
    return events.sqs_record(body, message_id, arn)


def call_worker(records: list[dict[str, Any]], remaining_ms: int | None = None) -> dict[str, Any]:
    """Invoke the worker with a batch of records, ``remaining_ms`` before its timeout (its Timeout when
    None)."""
    result: dict[str, Any] = functions().invoke("WorkerFunction", {"Records": records}, remaining_ms)
    return result


def call_lifecycle(records: list[dict[str, Any]], remaining_ms: int | None = None) -> dict[str, Any]:
    """Invoke the lifecycle function with a batch of records, ``remaining_ms`` before its timeout (its
    Timeout when None)."""
    result: dict[str, Any] = functions().invoke("LifecycleFunction", {"Records": records}, remaining_ms)
    return result


def pump(resources: Resources) -> SqsPump:
    """The template's SQS event sources over the test's resources and functions."""
    return SqsPump(resources, functions())


def receive(
    resources: Resources, queue: str, wait_seconds: int = 3, max_messages: int = 10
) -> list[dict[str, Any]]:
    """Up to ``max_messages`` of ``queue``'s messages visible within ``wait_seconds``, as Lambda's records
    of that queue (real receipt handles), received and so hidden for the queue's visibility timeout."""
    return pump(resources).receive(queue, wait_seconds, max_messages)


def acknowledge(
    resources: Resources, queue: str, records: list[dict[str, Any]], result: dict[str, Any]
) -> None:
    """Delete the messages the function did not report failed, as Lambda's SQS event source does."""
    pump(resources).acknowledge(queue, records, result)


def deliver(resources: Resources, queue: str, wait_seconds: int = 3) -> int:
    """One batch of ``queue``'s due messages delivered to its function and acknowledged, as Lambda's SQS
    event source would; how many messages it held."""
    return pump(resources).deliver(queue, wait_seconds)


# -- S3 ---------------------------------------------------------------------------------------------------
def open_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return uploads


def stored_keys(s3: Any, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def assert_nothing_left(s3: Any, bucket: str) -> None:
    """No object and no multipart upload (and so no orphaned part) in the bucket."""
    assert stored_keys(s3, bucket) == []
    assert open_uploads(s3, bucket) == []


# -- users ---------------------------------------------------------------------------------------------
def consent(emulator: Emulator, **user: Any) -> dict[str, Any]:
    """A user who granted the app a portability scope: their open_id and fresh tokens (secrets)."""
    granted = emulator.add_user(new_open_id(), **user)
    SECRETS.tokens.update({granted["access_token"], granted["refresh_token"]})
    return granted


def consent_again(emulator: Emulator, open_id: str) -> dict[str, Any]:
    """The user consents again: TikTok issues new tokens (the previous refresh token stops working)."""
    granted = emulator.add_user(open_id, access_token=SECRETS.token(), refresh_token=SECRETS.refresh_token())
    SECRETS.tokens.update({granted["access_token"], granted["refresh_token"]})
    return granted


def tokens_now(emulator: Emulator, open_id: str) -> dict[str, Any]:
    """The emulator's record of the user, its current tokens registered with the secrets guard."""
    now = emulator.user(open_id)
    SECRETS.tokens.update(t for t in (now["access_token"], now["refresh_token"]) if t)
    return now


def handed(user: dict[str, Any], **body: Any) -> dict[str, Any]:
    """A request body handing the user's refresh token (and its open_id) over."""
    return {"refresh_token": user["refresh_token"], "open_id": user["open_id"], **body}


def add_request(user: dict[str, Any], caller: str | None = BACKEND, **body: Any) -> ApiAnswer:
    """``POST /requests`` by ``caller`` with the user's tokens (refresh token and open_id included)."""
    return call_api(request_event(handed(user, **body), user["access_token"], caller=caller))


def added(user: dict[str, Any], caller: str | None = BACKEND, **body: Any) -> int:
    """The request_id of a request ``caller`` added for ``user`` (202 asserted).

    As a backend does, an add the shared TikTok quota deferred (``503 tiktok_budget_exhausted``, on a
    machine fast enough to add more than a sub-window's share) is asked again after its Retry-After.
    """
    for _ in range(30):
        answer = add_request(user, caller, **body)
        if answer.status != 503 or answer.body["error"]["code"] != "tiktok_budget_exhausted":
            break
        time.sleep(float(answer.headers.get("Retry-After", "1")))
    assert answer.status == 202, answer.body
    return int(answer.body["request_id"])


# -- the service's state, as stored ---------------------------------------------------------------------
def record(resources: Resources, request_id: int) -> dict[str, Any]:
    found = resources.item(request_id)
    assert found is not None, f"no record of {request_id}"
    return found


def status_of(resources: Resources, request_id: int) -> str:
    return str(record(resources, request_id).get("status", {}).get("S"))


def records(resources: Resources) -> dict[str, dict[str, Any]]:
    """Every item of the downloads table, by request_id."""
    items = _scan(resources, "DownloadsTable")
    return {item["request_id"]["S"]: item for item in items}


def grant_items(resources: Resources) -> dict[str, dict[str, Any]]:
    """Every item of the grants table (grants, and the ``handed <sha256>`` registry), by id."""
    return {item["grant_id"]["S"]: item for item in _scan(resources, "GrantsTable")}


def grant(resources: Resources, caller: str, open_id: str) -> dict[str, Any]:
    """The user's grant under ``caller`` (a folded caller, e.g. ``BACKEND_CALLER``); {} when none."""
    return grant_items(resources).get(user_grant_id(caller, open_id), {})


def grants_of_user(
    resources: Resources, open_id: str, request_ids: list[int] | tuple[int, ...] = ()
) -> list[str]:
    """Every grant that holds tokens of the user: theirs under any caller, and the own grants of their
    requests (``request <id>``). The ``handed <sha256>`` registry items hold no token and are not grants."""
    own = {request_grant_id(request_id) for request_id in request_ids}
    return sorted(
        grant_id
        for grant_id, item in grant_items(resources).items()
        if not grant_id.startswith("handed ")
        and (
            item.get("user_openid", {}).get("S") == open_id
            or grant_id.endswith(f" {open_id}")
            or grant_id in own
        )
    )


def stored_token(resources: Resources, grant_id: str, purpose: str = REFRESH_TOKEN_PURPOSE) -> str:
    """A token a grant holds (its refresh token, or with ``ACCESS_TOKEN_PURPOSE`` its access token),
    opened with the stack's key as a function would."""
    item = grant_items(resources)[grant_id]
    field = "sealed_refresh_token" if purpose == REFRESH_TOKEN_PURPOSE else "sealed_access_token"
    plaintext = resources.client("kms").decrypt(
        CiphertextBlob=base64.b64decode(item[field]["S"]),
        EncryptionContext={"purpose": purpose, "grant_id": grant_id},
    )["Plaintext"]
    return str(plaintext.decode())


def stored_refresh_token(resources: Resources, grant_id: str) -> str:
    """The refresh token a grant holds, opened with the stack's key as a function would."""
    return stored_token(resources, grant_id, REFRESH_TOKEN_PURPOSE)


def _scan(resources: Resources, table: str) -> list[dict[str, Any]]:
    """Every item of one of the stack's tables (a strongly consistent scan, every page)."""
    client, items, start = resources.client("dynamodb"), [], None
    while True:
        page = client.scan(
            TableName=resources.local.ref(table),
            ConsistentRead=True,
            **({"ExclusiveStartKey": start} if start else {}),
        )
        items += page.get("Items", [])
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


def objects(s3: Any, bucket: str) -> list[tuple[str, str]]:
    """The bucket's objects (key, ETag)."""
    return [(o["Key"], o["ETag"]) for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def uploads(s3: Any, bucket: str) -> list[tuple[str, str]]:
    """The bucket's open multipart uploads (key, upload id)."""
    found = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted((u["Key"], u["UploadId"]) for u in found)


def in_queue(resources: Resources, queue: str, *, received: bool = True) -> int:
    """Messages in ``queue``: visible, still delayed, or (unless ``received`` is False) received and not
    yet deleted. ``in_queue(…, received=False) == 0``: nothing is due now or scheduled for later."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesDelayed",
        *(["ApproximateNumberOfMessagesNotVisible"] if received else []),
    ]
    sqs = resources.client("sqs")

    def count() -> int:
        attributes = sqs.get_queue_attributes(QueueUrl=resources.local.ref(queue), AttributeNames=names)
        return sum(int(attributes["Attributes"][name]) for name in names)

    # The counts are approximate (moto's, like SQS's, are read one after the other while messages move
    # between them): two reads in a row that agree.
    last, now = count(), count()
    for _ in range(10):
        if now == last:
            break
        time.sleep(0.05)
        last, now = now, count()
    return now


def sent_messages(resources: Resources, queue: str) -> list[tuple[dict[str, Any], int]]:
    """What the functions of this test sent to ``queue`` so far (bodies and their ``DelaySeconds``), as
    the harness's recorder of AWS calls saw the SendMessage and SendMessageBatch calls (read, not taken:
    the permission check at the end of the test still judges them)."""
    # By the queue's name: a message sent again to the queue it was received from is addressed by the
    # URL Lambda's record names (https://sqs.<region>.amazonaws.com/<account>/<name>), not moto's.
    name = resources.local.ref(queue).rsplit("/", 1)[-1]
    sent = []
    for call in list(RECORDER.calls):
        if str(call.params.get("QueueUrl")).rsplit("/", 1)[-1] != name:
            continue
        if call.operation == "SendMessage":
            entries = [call.params]
        elif call.operation == "SendMessageBatch":
            entries = list(call.params["Entries"])
        else:
            continue
        sent += [(json.loads(e["MessageBody"]), int(e.get("DelaySeconds", 0))) for e in entries]
    return sent


def second_pass(resources: Resources, open_id: str, caller: str | None = None) -> dict[str, Any]:
    """The body of the purge's second pass for ``open_id`` (and ``caller``, an erasure's), as the lifecycle
    function queued it: delayed by SQS's longest delay (900 s), so it is read from the SendMessage call
    (SQS hands no delayed message out before its time) and the queue is asserted to hold it back."""
    found = [
        (body, delay)
        for body, delay in sent_messages(resources, "LifecycleQueue")
        if body.get("kind") == "purge" and body.get("open_id") == open_id and body.get("caller") == caller
    ]
    assert found, f"no second pass queued for {open_id} ({caller})"
    body, delay = found[-1]
    assert delay == 900
    held_back = resources.client("sqs").get_queue_attributes(
        QueueUrl=resources.local.ref("LifecycleQueue"), AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
    assert int(held_back) >= 1
    return body


def run_lifecycle_message(body: dict[str, Any]) -> dict[str, Any]:
    """Hand one lifecycle message, exactly as the service sends it, to the lifecycle function."""
    return call_lifecycle([sqs_record(json.dumps(body), queue="LifecycleQueue")])


def check_now(resources: Resources, request_id: int) -> dict[str, Any]:
    """Run the status check the request's schedule expects next (the body its chain sends, without
    waiting out the message's delay)."""
    seq = int(record(resources, request_id)["poll_seq"]["N"])
    return run_lifecycle_message({"kind": "check", "request_id": str(request_id), "seq": seq})


def take_messages(
    resources: Resources,
    queue: str,
    kind: str | None,
    wanted: Callable[[dict[str, Any]], bool] | None = None,
    wait_seconds: int = 3,
) -> list[dict[str, Any]]:
    """Receive the visible messages of ``queue`` whose body is of ``kind`` (and ``wanted``); the others
    are put back at once."""
    taken, others = [], []
    for message in receive(resources, queue, wait_seconds):
        body = json.loads(message["body"])
        mine = (kind is None or body.get("kind") == kind) and (wanted is None or wanted(body))
        (taken if mine else others).append(message)
    sqs = resources.client("sqs")
    for message in others:
        sqs.change_message_visibility(
            QueueUrl=resources.local.ref(queue), ReceiptHandle=message["receiptHandle"], VisibilityTimeout=0
        )
    return taken


def run_taken(
    resources: Resources, messages: list[dict[str, Any]], queue: str = "LifecycleQueue"
) -> dict[str, Any]:
    """Run received lifecycle messages as Lambda would, and delete those that did not fail."""
    result = call_lifecycle(messages)
    acknowledge(resources, queue, messages, result)
    return result


def hide_from_indexes(resources: Resources, request_id: int) -> dict[str, Any]:
    """Make a record invisible to the user indexes, as a write the index has not caught up with yet.

    The ``by-user`` and ``by-caller-user`` indexes are sparse: an item without ``user_openid`` and
    ``caller_user`` is in neither, while the table itself still holds it. Returns what was removed, for
    :func:`index_catches_up`.
    """
    item = record(resources, request_id)
    hidden = {name: item[name] for name in ("user_openid", "caller_user")}
    resources.client("dynamodb").update_item(
        TableName=resources.table,
        Key={"request_id": {"S": str(request_id)}},
        UpdateExpression="REMOVE user_openid, caller_user",
    )
    return hidden


def index_catches_up(resources: Resources, request_id: int, hidden: dict[str, Any]) -> None:
    """The index shows the record at last: its index attributes, exactly as written, are back."""
    resources.client("dynamodb").update_item(
        TableName=resources.table,
        Key={"request_id": {"S": str(request_id)}},
        UpdateExpression="SET user_openid = :user, caller_user = :caller_user",
        ExpressionAttributeValues={":user": hidden["user_openid"], ":caller_user": hidden["caller_user"]},
    )


# -- TikTok, called as a backend would ----------------------------------------------------------------
def tiktok_refresh(emulator: Emulator, refresh_token: str) -> tuple[int, dict[str, Any]]:
    """The backend itself refreshes at TikTok with ``refresh_token``: (HTTP status, answer)."""
    form = urllib.parse.urlencode(
        {**APP_SECRET, "grant_type": "refresh_token", "refresh_token": refresh_token}
    ).encode()
    request = urllib.request.Request(
        emulator.url + "/v2/oauth/token/",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    answer = _send(request)
    if answer[0] == 200:
        SECRETS.tokens.update({answer[1]["access_token"], answer[1]["refresh_token"]})
    return answer


def tiktok_check(emulator: Emulator, access_token: str, request_id: int) -> tuple[int, dict[str, Any]]:
    """The backend itself asks TikTok's Check Status with ``access_token``: (HTTP status, answer)."""
    request = urllib.request.Request(
        emulator.url + "/v2/user/data/check/?fields=request_id,status",
        data=json.dumps({"request_id": request_id}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {access_token}"},
        method="POST",
    )
    return _send(request)


def _send(request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def tiktok_calls(emulator: Emulator) -> dict[str, int]:
    """Every call that reached TikTok so far, per endpoint (rate-limited ones included)."""
    return dict(emulator.stats()["calls"])


def calls_since(emulator: Emulator, before: dict[str, int]) -> dict[str, int]:
    """The calls TikTok received since ``before``, per endpoint (endpoints not called left out)."""
    now = tiktok_calls(emulator)
    return {name: count - before.get(name, 0) for name, count in now.items() if count != before.get(name, 0)}


# -- another container ----------------------------------------------------------------------------------
def worker_in_another_container(record: dict[str, Any]) -> subprocess.Popen[str]:
    """The worker function run on ``record`` in a process of its own, as a second Lambda container."""
    return _invoke("WorkerFunction", record)


def lifecycle_in_another_container(record: dict[str, Any]) -> subprocess.Popen[str]:
    """The lifecycle function run on ``record`` in a process of its own."""
    return _invoke("LifecycleFunction", record)


def _invoke(function: str, record: dict[str, Any]) -> subprocess.Popen[str]:
    lambdas = functions()
    timeout_ms = lambdas.template.function_timeout(function, lambdas.parameters) * 1000
    return subprocess.Popen(
        [sys.executable, "-m", "tests.harness.invoke", json.dumps({"Records": [record]}), str(timeout_ms)],
        cwd=REPO_ROOT,
        env={**lambdas.process_environment(function), "PYTHONPATH": f"{REPO_ROOT / 'src'}:{REPO_ROOT}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_progress(resources: Resources, request_id: int, seconds: float = 20) -> None:
    """Until the running download of ``request_id`` reported an uploaded part."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if int((resources.item(request_id) or {}).get("progress_parts", {}).get("N", "0")) >= 1:
            return
        time.sleep(0.2)
    raise AssertionError("the download never reported a part")
