"""Download records: idempotency for both triggers, ownership, GET, async POST, completion events.

Everything over HTTP: the real handlers against moto server (S3, DynamoDB, SQS, KMS, EventBridge) and
the TikTok emulator, whose Check Status endpoint answers a request's owner only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import (
    MIB,
    SECRETS,
    Configure,
    api_event,
    assert_nothing_left,
    call_api,
    call_worker,
    functions,
    get_event,
    new_request_id,
    sqs_record,
    stored_keys,
)
from tests.harness.local_stack import REPO_ROOT, Emulator, LocalStack, Resources
from tests.harness.tokens import CHECK_STATUS_EXAMPLE
from tiktok_archive.adapters.download_records import DownloadRecords


def fetch_digest(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        return hashlib.sha256(response.read()).hexdigest()


def message(request_id: int, token: str) -> str:
    return json.dumps({"request_id": str(request_id), "access_token": token})


def worker_in_another_container(record: dict[str, Any]) -> subprocess.Popen[str]:
    """The same message delivered to a second container, running while the test goes on."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.harness.invoke", "sqs", json.dumps({"Records": [record]})],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            **functions().environment("WorkerFunction"),
            "PYTHONPATH": f"{REPO_ROOT / 'src'}:{REPO_ROOT}",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_status(resources: Resources, request_id: int, status: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        item = resources.item(request_id)
        # moto applies an update in steps: a reader may see the item before its status.
        if item and item.get("status", {}).get("S") == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"the record never became {status}")


# -- idempotency -----------------------------------------------------------------------------------
def test_repeated_post_downloads_once_and_both_answers_carry_working_urls(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Given an archive ready at TikTok
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=7 * MIB)

    # When the API is asked for it twice
    first = call_api(api_event(request_id, token))
    second = call_api(api_event(request_id, token))

    # Then TikTok served it once, each request was confirmed with TikTok first, both links serve it
    assert (first.status, second.status) == (200, 200), (first.body, second.body)
    assert emulator.downloads(request_id) == 1
    assert emulator.checks(request_id) == 2
    assert fetch_digest(first.body["url"]) == fetch_digest(second.body["url"]) == ready["sha256"]
    assert second.body["status"] == "completed"
    assert second.body["attempts"] == 1
    assert (second.body["size_bytes"], second.body["checksum"]) == (
        first.body["size_bytes"],
        first.body["checksum"],
    )


def test_redelivered_message_downloads_once(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any, bucket: str, token: str
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, size=6 * MIB)
    record = sqs_record(message(request_id, token))

    assert call_worker([record]) == {"batchItemFailures": []}
    assert call_worker([record]) == {"batchItemFailures": []}

    assert emulator.downloads(request_id) == 1
    assert stored_keys(s3, bucket) == [f"archives/{request_id}.zip"]
    assert resources.item(request_id)["attempts"]["N"] == "1"  # type: ignore[index]


def test_two_concurrent_deliveries_download_once(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Given an archive TikTok sends slowly, and its message delivered to a second container first
    request_id = new_request_id()
    emulator.register(request_id, token, size=12 * MIB, bytes_per_second=6 * MIB)
    record = sqs_record(message(request_id, token))
    other = worker_in_another_container(record)
    wait_for_status(resources, request_id, "in_progress")

    # When this container gets the same message while the other downloads
    mine = call_worker([record])
    theirs, errors = other.communicate(timeout=60)

    # Then this one hands the message back for later, the other downloads it, TikTok served it once
    assert mine == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert json.loads(theirs.strip().splitlines()[-1]) == {"batchItemFailures": []}, errors[-2000:]
    assert emulator.downloads(request_id) == 1
    assert resources.item(request_id)["status"]["S"] == "completed"  # type: ignore[index]


def test_post_while_another_invocation_downloads_is_409_with_retry_after(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, size=12 * MIB, bytes_per_second=6 * MIB)
    other = worker_in_another_container(sqs_record(message(request_id, token)))
    wait_for_status(resources, request_id, "in_progress")

    answer = call_api(api_event(request_id, token))
    other.communicate(timeout=60)

    assert answer.status == 409
    assert answer.body["error"]["code"] == "download_in_progress"
    assert 1 <= int(answer.headers["Retry-After"]) <= 30
    assert emulator.downloads(request_id) == 1


def test_a_crashed_attempts_claim_expires_and_a_later_delivery_succeeds(
    configure: Configure, emulator: Emulator, resources: Resources, bucket: str, token: str
) -> None:
    # Given an invocation that claimed the download with 1 s left, then died without a word
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=64 * 1024)
    records = DownloadRecords(resources.client("dynamodb"), resources.table, timedelta(days=7))
    records.claim(request_id, bucket, f"archives/{request_id}.zip", timedelta(seconds=1))
    record = sqs_record(message(request_id, token))

    # When the message comes back while the claim holds, and again after it lapsed
    while_held = call_worker([record])
    time.sleep(3.2)  # the lease is kept in whole seconds, rounded up
    after = call_worker([record])

    # Then the first is handed back, the second downloads, and the record counts both attempts
    assert while_held == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert after == {"batchItemFailures": []}
    item = resources.item(request_id)
    assert item is not None
    assert (item["status"]["S"], item["attempts"]["N"], item["size_bytes"]["N"]) == (
        "completed",
        "2",
        str(ready["size_bytes"]),
    )
    assert "lease_owner" not in item


def test_permanent_failure_is_recorded_as_failed_and_not_retried(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any, bucket: str, token: str
) -> None:
    # Given a request whose owner TikTok confirms, but whose download TikTok refuses for good
    request_id = new_request_id()
    emulator.register(
        request_id, token, fault={"kind": "error", "status": 401, "code": "scope_not_authorized"}
    )
    record = sqs_record(message(request_id, token))

    # When the worker gets the message
    result = call_worker([record])

    # Then it is acknowledged (no retry), the record says why, and a failure event says so too
    assert result == {"batchItemFailures": []}
    item = resources.item(request_id)
    assert item is not None
    assert (item["status"]["S"], item["error_code"]["S"], item["error_transient"]["BOOL"]) == (
        "failed",
        "scope_not_authorized",
        False,
    )
    assert item["error_log_id"]["S"]
    [event] = resources.events()
    assert event["detail-type"] == "Download Failed"
    assert event["detail"]["error"]["code"] == "scope_not_authorized"
    assert_nothing_left(s3, bucket)


def test_transient_failure_is_recorded_and_the_message_comes_back(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    configure(TIKTOK_MAX_ATTEMPTS="1")
    request_id = new_request_id()
    fault = {"kind": "error", "status": 503, "code": "internal_error"}
    emulator.register(request_id, token, size=64 * 1024, fault=fault, fault_times=1)
    record = sqs_record(message(request_id, token))

    first = call_worker([record])
    failed = resources.item(request_id)
    second = call_worker([record])

    assert first == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert failed is not None
    assert (failed["status"]["S"], failed["error_code"]["S"]) == ("failed", "internal_error")
    assert second == {"batchItemFailures": []}
    assert resources.item(request_id)["status"]["S"] == "completed"  # type: ignore[index]


# -- ownership and GET ---------------------------------------------------------------------------------
def test_get_after_a_queue_download_returns_the_record_and_a_working_url(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=6 * MIB)
    assert call_worker([sqs_record(message(request_id, token))]) == {"batchItemFailures": []}

    answer = call_api(get_event(request_id, token))

    assert answer.status == 200, answer.body
    body = answer.body
    assert (body["request_id"], body["status"], body["size_bytes"]) == (
        str(request_id),
        "completed",
        ready["size_bytes"],
    )
    assert body["completed_at"]
    assert body["created_at"]
    assert body["error"] is None
    assert fetch_digest(body["url"]) == ready["sha256"]
    assert answer.headers["Cache-Control"] == "no-store"


def test_another_users_token_gets_no_url_from_get_or_post(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Given an archive downloaded by its owner, and another TikTok user with a valid token
    request_id = new_request_id()
    emulator.register(request_id, token, size=64 * 1024)
    assert call_api(api_event(request_id, token)).status == 200
    stranger = SECRETS.token()
    emulator.register(new_request_id(), stranger)

    # When the stranger asks for it by GET and by POST, and so does a token TikTok does not know
    answers = [
        call_api(get_event(request_id, stranger)),
        call_api(api_event(request_id, stranger)),
        call_api(api_event(request_id, stranger, prefer="respond-async")),
    ]
    unknown = call_api(get_event(request_id, SECRETS.token()))

    # Then the stranger gets the same 404 as for an unknown request, and no answer holds a URL
    for answer in answers:
        assert (answer.status, answer.body["error"]["code"]) == (404, "not_found"), answer.body
        assert "url" not in json.dumps(answer.body)
    # And the unknown token is told what TikTok said of it, with TikTok's log_id
    assert (unknown.status, unknown.body["error"]["code"]) == (401, "access_token_invalid")
    assert len(unknown.body["error"]["log_id"]) == 34
    assert "url" not in json.dumps(unknown.body)
    assert emulator.downloads(request_id) == 1


def test_get_of_a_request_without_a_record_is_404_after_asking_tiktok(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    # Given a request TikTok knows for this user, which the service never saw
    request_id = new_request_id()
    emulator.register(request_id, token)

    answer = call_api(get_event(request_id, token))

    # Then the answer is the 404 a stranger gets too, given after TikTok was asked (authorize first)
    assert (answer.status, answer.body["error"]["code"]) == (404, "not_found")
    assert emulator.checks(request_id) == 1


@pytest.mark.parametrize(
    ("request_id", "token", "status", "code"),
    [
        ("123", None, 401, "missing_token"),
        ("12.5", CHECK_STATUS_EXAMPLE, 400, "invalid_request"),
        ("99999999999999999999", CHECK_STATUS_EXAMPLE, 400, "invalid_request"),
    ],
)
def test_get_without_a_token_or_with_a_bad_id_touches_nothing(
    configure: Configure, request_id: str, token: str | None, status: int, code: str
) -> None:
    answer = call_api(get_event(request_id, token))

    assert (answer.status, answer.body["error"]["code"]) == (status, code)


# -- async POST ------------------------------------------------------------------------------------
def test_async_post_queues_the_job_the_worker_completes_it_and_get_shows_it(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Given an archive ready at TikTok
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=6 * MIB)

    # When it is asked for asynchronously
    accepted = call_api(api_event(request_id, token, prefer="respond-async, wait=5"))

    # Then the API answers 202 at once with where to look, and one job is on the queue
    assert accepted.status == 202, accepted.body
    assert accepted.headers["Location"] == f"/v1/downloads/{request_id}"
    assert accepted.headers["Preference-Applied"] == "respond-async"
    assert accepted.body["status"] == "queued"
    assert emulator.downloads(request_id) == 0
    [queued] = resources.queued_messages()
    assert token.partition(".")[2] not in queued["Body"]  # the token travels encrypted
    assert json.loads(queued["Body"])["request_id"] == str(request_id)

    # And while it waits, GET says queued and a repeated async request queues nothing more
    assert call_api(get_event(request_id, token)).body["status"] == "queued"
    assert call_api(api_event(request_id, token, prefer="respond-async")).status == 202
    assert len(resources.queued_messages()) == 1

    # When the worker gets the job
    assert call_worker([sqs_record(queued["Body"])]) == {"batchItemFailures": []}

    # Then GET shows it completed with a working link
    done = call_api(get_event(request_id, token))
    assert done.body["status"] == "completed"
    assert fetch_digest(done.body["url"]) == ready["sha256"]
    # And an async request for a stored archive is answered at once, 200 with a link
    again = call_api(api_event(request_id, token, prefer="respond-async"))
    assert again.status == 200
    assert "url" in again.body


def test_a_queued_token_does_not_open_for_another_request(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Given a job queued for one request
    request_id = new_request_id()
    emulator.register(request_id, token)
    assert call_api(api_event(request_id, token, prefer="respond-async")).status == 202
    [queued] = resources.queued_messages()
    body = json.loads(queued["Body"])

    # When its encrypted token is lifted into a message for another request
    other = new_request_id()
    emulator.register(other, token)
    forged = json.dumps({"request_id": str(other), "encrypted_access_token": body["encrypted_access_token"]})
    result = call_worker([sqs_record(forged)])

    # Then KMS refuses it (its context names the first request): acknowledged, nothing downloaded
    assert result == {"batchItemFailures": []}
    assert emulator.downloads(other) == 0


def test_async_post_without_a_queue_configured_is_a_json_500_naming_the_variables(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    configure(DOWNLOAD_QUEUE_URL=None)
    request_id = new_request_id()
    emulator.register(request_id, token)

    answer = call_api(api_event(request_id, token, prefer="respond-async"))

    assert (answer.status, answer.body["error"]["code"]) == (500, "configuration_error")
    assert "DOWNLOAD_QUEUE_URL" in answer.body["error"]["message"]


def test_a_job_that_cannot_be_queued_is_503_and_recorded_failed(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Given a queue that no longer exists (deleted behind the stack's back)
    resources.client("sqs").delete_queue(QueueUrl=resources.queue_url)
    request_id = new_request_id()
    emulator.register(request_id, token)

    answer = call_api(api_event(request_id, token, prefer="respond-async"))

    # Then the caller is told, and the record does not claim a job is waiting
    assert (answer.status, answer.body["error"]["code"]) == (503, "queue_error")
    item = resources.item(request_id)
    assert item is not None
    assert (item["status"]["S"], item["error_code"]["S"]) == ("failed", "queue_error")


# -- events and secrets ----------------------------------------------------------------------------
def test_completion_event_describes_the_archive_without_url_or_token(
    configure: Configure, emulator: Emulator, resources: Resources, bucket: str, token: str
) -> None:
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=6 * MIB)
    answer = call_api(api_event(request_id, token))

    [event] = resources.events()

    assert (event["source"], event["detail-type"]) == ("tiktok-archive", "Download Completed")
    assert event["detail"] == {
        "request_id": str(request_id),
        "status": "completed",
        "bucket": bucket,
        "key": f"archives/{request_id}.zip",
        "size_bytes": ready["size_bytes"],
        "checksum": answer.body["checksum"],
        "checksum_algorithm": "CRC32",
        "attempts": 1,
        "error": None,
        "manifest": answer.body["manifest"],
    }
    assert event["detail"]["manifest"]["entries"] == ready["entry_count"]


def test_no_token_in_any_table_item_event_or_queue_message(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Every path that writes: sync success, queued job, permanent failure, transient failure
    ok, queued, refused, flaky = (new_request_id() for _ in range(4))
    emulator.register(ok, token)
    emulator.register(queued, token)
    emulator.register(refused, token, fault={"kind": "error", "status": 401, "code": "scope_not_authorized"})
    emulator.register(flaky, token, fault={"kind": "error", "status": 500, "code": "internal_error"})
    call_api(api_event(ok, token))
    call_api(api_event(queued, token, prefer="respond-async"))
    call_api(api_event(refused, token))
    call_api(api_event(flaky, token))

    items = resources.client("dynamodb").scan(TableName=resources.table)["Items"]
    written = json.dumps([items, resources.events(), resources.queued_messages()])
    assert len(items) == 4
    assert token.partition(".")[2] not in written
    assert "X-Amz-Signature" not in written


def test_stack_without_the_table_is_a_configuration_error(
    configure: Configure, stack: LocalStack, token: str
) -> None:
    configure(DOWNLOADS_TABLE_NAME=None)

    answer = call_api(api_event(new_request_id(), token))

    assert (answer.status, answer.body["error"]["code"]) == (500, "configuration_error")
    assert "DOWNLOADS_TABLE_NAME" in answer.body["error"]["message"]


def test_a_token_refused_at_check_status_is_acknowledged_and_writes_nothing(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Given a token TikTok refuses the portability scope to
    request_id = new_request_id()
    emulator.register(request_id, token, scopes=["user.info.basic"])

    result = call_worker([sqs_record(message(request_id, token))])

    # Then the message is acknowledged (permanent), and nothing was recorded or published for it
    assert result == {"batchItemFailures": []}
    assert resources.item(request_id) is None
    assert resources.events() == []
