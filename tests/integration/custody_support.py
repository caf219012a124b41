"""Shared ground of the custody tests: users who consent at the emulator, the service's state as it is
stored (records, grants, archives, uploads, queues), and TikTok's side (the emulator's counts, its OAuth).

Everything here reads or drives the real handlers and the local servers; nothing replaces a part of the
service. Where a helper hands a lifecycle message to the function directly instead of receiving it from
SQS (a status check, a purge's second pass), it says so, and the body is exactly the one the service
sends.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.conftest import (
    BACKEND,
    SECRETS,
    ApiAnswer,
    acknowledge,
    call_api,
    call_lifecycle,
    functions,
    receive,
    request_event,
    sqs_record,
)
from tests.harness.emulator_control import Emulator
from tests.harness.functions import RECORDER
from tests.harness.local_stack import APP_SECRET, REPO_ROOT, Resources
from tests.harness.tokens import open_id as new_open_id
from tiktok_archive.adapters.grants import request_grant_id, user_grant_id
from tiktok_archive.adapters.token_vault import REFRESH_TOKEN_PURPOSE

MIB = 1024 * 1024
HOUR = 3600
DAY = 24 * HOUR
QUEUES = ("DownloadQueue", "LifecycleQueue")


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
    """The request_id of a request ``caller`` added for ``user`` (202 asserted)."""
    answer = add_request(user, caller, **body)
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


def stored_refresh_token(resources: Resources, grant_id: str) -> str:
    """The refresh token a grant holds, opened with the stack's key as a function would."""
    item = grant_items(resources)[grant_id]
    plaintext = resources.client("kms").decrypt(
        CiphertextBlob=base64.b64decode(item["sealed_refresh_token"]["S"]),
        EncryptionContext={"purpose": REFRESH_TOKEN_PURPOSE, "grant_id": grant_id},
    )["Plaintext"]
    return str(plaintext.decode())


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


def in_queue(resources: Resources, queue: str) -> int:
    """Messages in ``queue``: visible, received and not yet deleted, or still delayed."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = resources.client("sqs").get_queue_attributes(
        QueueUrl=resources.local.ref(queue), AttributeNames=names
    )["Attributes"]
    return sum(int(attributes[name]) for name in names)


def sent_messages(resources: Resources, queue: str) -> list[tuple[dict[str, Any], int]]:
    """What the functions of this test sent to ``queue`` so far (bodies and their ``DelaySeconds``), as
    the harness's recorder of AWS calls saw the SendMessage calls (read, not taken: the permission check
    at the end of the test still judges them)."""
    url = resources.local.ref(queue)
    return [
        (json.loads(call.params["MessageBody"]), int(call.params.get("DelaySeconds", 0)))
        for call in list(RECORDER.calls)
        if call.operation == "SendMessage" and call.params.get("QueueUrl") == url
    ]


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
    return _invoke("sqs", "WorkerFunction", record)


def lifecycle_in_another_container(record: dict[str, Any]) -> subprocess.Popen[str]:
    """The lifecycle function run on ``record`` in a process of its own."""
    return _invoke("lifecycle", "LifecycleFunction", record)


def _invoke(trigger: str, function: str, record: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.harness.invoke", trigger, json.dumps({"Records": [record]})],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            **functions().environment(function),
            "PYTHONPATH": f"{REPO_ROOT / 'src'}:{REPO_ROOT}",
        },
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
