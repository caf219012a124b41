"""Download records: idempotency for both triggers, ownership, GET, async POST, the user handed over,
completion events.

Everything over HTTP: the real handlers against moto server (S3, DynamoDB, SQS, KMS, EventBridge) and
the TikTok emulator, whose Check Status endpoint answers a request's owner only. A record is its
caller's (the SigV4 principal): ``GET`` reads it without asking TikTok anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.request
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import BACKEND, BACKEND_CALLER, OTHER, SECRETS
from tests.harness.events import api_event, delete_event, get_event, user_requests_event
from tests.harness.local_stack import Emulator, LocalStack, Resources
from tests.harness.tokens import new_request_id
from tests.integration.support import (
    MIB,
    Configure,
    assert_nothing_left,
    call_api,
    call_worker,
    consent,
    grant_items,
    sqs_record,
    stored_keys,
    stored_token,
    tokens_now,
    worker_in_another_container,
)
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE
from tiktok_archive.models.download_record import Owner


def fetch_digest(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        return hashlib.sha256(response.read()).hexdigest()


def message(request_id: int, token: str) -> str:
    return json.dumps({"request_id": str(request_id), "access_token": token})


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
    # Given the backend's async download, whose job a worker in another container is running
    request_id = new_request_id()
    emulator.register(request_id, token, size=12 * MIB, bytes_per_second=6 * MIB)
    assert call_api(api_event(request_id, token, prefer="respond-async")).status == 202
    [job] = resources.queued_messages()
    other = worker_in_another_container(sqs_record(job["Body"]))
    wait_for_status(resources, request_id, "in_progress")

    # When the backend asks for it again, and so does another caller holding the user's token
    answer = call_api(api_event(request_id, token))
    stranger = call_api(api_event(request_id, token, caller=OTHER))
    theirs, errors = other.communicate(timeout=60)

    # Then the backend is told to come back, the other caller learns nothing, TikTok served it once
    assert answer.status == 409
    assert answer.body["error"]["code"] == "download_in_progress"
    assert 1 <= int(answer.headers["Retry-After"]) <= 30
    assert (stranger.status, stranger.body["error"]["code"]) == (404, "not_found")
    assert json.loads(theirs.strip().splitlines()[-1]) == {"batchItemFailures": []}, errors[-2000:]
    assert emulator.downloads(request_id) == 1


def test_a_crashed_attempts_claim_expires_and_a_later_delivery_succeeds(
    configure: Configure, emulator: Emulator, resources: Resources, bucket: str, token: str
) -> None:
    # Given an invocation that claimed the download with 1 s left, then died without a word
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=64 * 1024)
    records = DownloadRecords(resources.client("dynamodb"), resources.table, timedelta(days=7))
    records.claim(request_id, bucket, f"archives/{request_id}.zip", timedelta(seconds=1), Owner(None))
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
    assert event["detail"]["caller"] is None  # a backend's own message: no API caller's record
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
def test_get_returns_the_callers_record_and_a_fresh_working_url_without_asking_tiktok(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    # Given an archive the backend downloaded
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=6 * MIB)
    posted = call_api(api_event(request_id, token))
    assert posted.status == 200, posted.body
    calls = emulator.stats()["calls"]

    # When the backend reads its record
    answer = call_api(get_event(request_id))

    # Then it gets the record with a link signed for it, and TikTok was not asked
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
    assert body["open_id"] is None  # only an access token was handed over: the user is not known
    assert fetch_digest(body["url"]) == ready["sha256"]
    assert answer.headers["Cache-Control"] == "no-store"
    assert emulator.stats()["calls"] == calls


def test_no_one_but_the_caller_with_a_confirmed_token_gets_a_url(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Given an archive downloaded by the backend, and another TikTok user with a valid token
    request_id = new_request_id()
    emulator.register(request_id, token, size=64 * 1024)
    assert call_api(api_event(request_id, token)).status == 200
    stranger = SECRETS.token()
    emulator.register(new_request_id(), stranger)

    # When another caller reads it, the stranger's token asks for it, another caller asks with the
    # user's own token, and so does a token TikTok does not know
    answers = [
        call_api(get_event(request_id, OTHER)),
        call_api(api_event(request_id, stranger)),
        call_api(api_event(request_id, stranger, prefer="respond-async")),
        call_api(api_event(request_id, token, caller=OTHER)),
        call_api(api_event(request_id, token, caller=OTHER, prefer="respond-async")),
    ]
    unknown = call_api(api_event(request_id, SECRETS.token()))

    # Then each gets the same 404 as for an unknown request, and no answer holds a URL
    for answer in answers:
        assert (answer.status, answer.body["error"]["code"]) == (404, "not_found"), answer.body
        assert "url" not in json.dumps(answer.body)
    # And the unknown token is told what TikTok said of it, with TikTok's log_id
    assert (unknown.status, unknown.body["error"]["code"]) == (401, "access_token_invalid")
    assert len(unknown.body["error"]["log_id"]) == 34
    assert "url" not in json.dumps(unknown.body)
    assert emulator.downloads(request_id) == 1
    assert resources.item(request_id)["caller"]["S"] == BACKEND_CALLER  # type: ignore[index]


def test_get_of_a_request_without_a_record_is_404_and_asks_tiktok_nothing(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    # Given a request TikTok knows for this user, which the service never saw
    request_id = new_request_id()
    emulator.register(request_id, token)

    answer = call_api(get_event(request_id))

    # Then the answer is the 404 a stranger gets too, from the table alone
    assert (answer.status, answer.body["error"]["code"]) == (404, "not_found")
    assert emulator.checks(request_id) == 0


@pytest.mark.parametrize(
    ("request_id", "caller", "status", "code"),
    [
        ("123", None, 403, "caller_not_identified"),
        ("123", BACKEND, 404, "not_found"),
        ("12.5", BACKEND, 400, "invalid_request"),
        ("99999999999999999999", BACKEND, 400, "invalid_request"),
    ],
)
def test_get_unsigned_unknown_or_with_a_bad_id_touches_nothing(
    configure: Configure, resources: Resources, request_id: str, caller: str | None, status: int, code: str
) -> None:
    # (an unsigned call reaches the function only where a route lacks AWS_IAM authorization)
    answer = call_api(get_event(request_id, caller), gateway=False)

    assert (answer.status, answer.body["error"]["code"]) == (status, code)
    assert resources.client("dynamodb").scan(TableName=resources.table)["Items"] == []


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
    assert call_api(get_event(request_id)).body["status"] == "queued"
    assert call_api(api_event(request_id, token, prefer="respond-async")).status == 202
    assert len(resources.queued_messages()) == 1

    # When the worker gets the job
    assert call_worker([sqs_record(queued["Body"])]) == {"batchItemFailures": []}

    # Then GET shows it completed with a working link
    done = call_api(get_event(request_id))
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


# -- the user handed over ------------------------------------------------------------------------------
def test_a_refresh_token_handed_over_records_the_user_and_its_grant(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a TikTok user's ready archive, and the user's tokens as the backend holds them
    user = consent(emulator)
    open_id = user["open_id"]
    request_id = new_request_id()
    ready = emulator.register(request_id, user["access_token"], size=6 * MIB)

    # When the backend asks for it asynchronously, handing over the refresh token and naming the user
    accepted = call_api(
        api_event(
            request_id,
            user["access_token"],
            refresh_token=user["refresh_token"],
            open_id=open_id,
            prefer="respond-async",
        )
    )

    # Then TikTok exchanged the refresh token at once (the backend's copy is dead now) and named the user
    assert accepted.status == 202, accepted.body
    assert accepted.body["open_id"] == open_id
    now = tokens_now(emulator, user["open_id"])
    assert emulator.user(open_id)["refreshes"] == 1
    assert now["refresh_token"] != user["refresh_token"]
    # And the record is the backend's and the user's, under the user's grant
    grant_id = f"user {BACKEND_CALLER} {open_id}"
    item = resources.item(request_id)
    assert item is not None
    assert (item["caller"]["S"], item["user_openid"]["S"], item["grant_id"]["S"]) == (
        BACKEND_CALLER,
        open_id,
        grant_id,
    )
    assert item["caller_user"]["S"] == f"{BACKEND_CALLER} {open_id}"
    # And the grant holds the rotated lineage, sealed, and the handed token is remembered by its digest
    kept = grant_items(resources)
    grant = kept[grant_id]
    assert (grant["caller"]["S"], grant["user_openid"]["S"]) == (BACKEND_CALLER, open_id)
    assert stored_token(resources, grant["grant_id"]["S"], REFRESH_TOKEN_PURPOSE) == now["refresh_token"]
    assert stored_token(resources, grant["grant_id"]["S"], ACCESS_TOKEN_PURPOSE) == now["access_token"]
    digest = hashlib.sha256(user["refresh_token"].encode()).hexdigest()
    assert kept[f"handed {digest}"]["into"]["S"] == grant_id
    # And the job names no token: the worker takes the grant's
    [job] = resources.queued_messages()
    assert json.loads(job["Body"]) == {"request_id": str(request_id), "source": "grant"}
    # And the backend finds the request among the user's
    listed = call_api(user_requests_event(open_id))
    assert [r["request_id"] for r in listed.body["requests"]] == [str(request_id)], listed.body
    # And the same call again (a retry of an answer the backend lost) joins that grant: the refresh
    # token, which TikTok rotated, is not sent again, and nothing is queued twice
    again = call_api(
        api_event(
            request_id,
            user["access_token"],
            refresh_token=user["refresh_token"],
            open_id=open_id,
            prefer="respond-async",
        )
    )
    assert (again.status, again.body["status"], again.body["open_id"]) == (202, "queued", open_id), again.body
    assert emulator.user(open_id)["refreshes"] == 1
    assert len(resources.queued_messages()) == 1

    # When the worker runs the job
    assert call_worker([sqs_record(job["Body"])]) == {"batchItemFailures": []}

    # Then the archive is stored, the event names the caller and the user, and the grant, which no
    # request needs any more, is gone
    done = call_api(get_event(request_id))
    assert (done.body["status"], done.body["open_id"]) == ("completed", open_id)
    assert fetch_digest(done.body["url"]) == ready["sha256"]
    [event] = resources.events()
    assert event["detail-type"] == "Download Completed"
    assert (event["detail"]["caller"], event["detail"]["open_id"]) == (BACKEND_CALLER, open_id)
    assert grant_id not in grant_items(resources)


def test_a_sync_download_with_a_refresh_token_keeps_the_user_and_lets_the_grant_go(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    user = consent(emulator)
    request_id = new_request_id()
    emulator.register(request_id, user["access_token"], size=64 * 1024)

    answer = call_api(api_event(request_id, user["access_token"], refresh_token=user["refresh_token"]))
    tokens_now(emulator, user["open_id"])

    # The user is TikTok's word (no open_id was given), the record keeps it; the grant had nothing left
    # to do once the archive was stored
    assert answer.status == 200, answer.body
    assert answer.body["open_id"] == user["open_id"]
    item = resources.item(request_id)
    assert item is not None
    assert item["user_openid"]["S"] == user["open_id"]
    assert not [g for g in grant_items(resources) if g.startswith("user ")]


def test_the_backend_reads_and_cancels_its_download_after_the_users_token_expired(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a download the backend queued with the user's tokens handed over, whose job has not run
    user = consent(emulator)
    request_id = new_request_id()
    emulator.register(request_id, user["access_token"])
    queued = call_api(
        api_event(
            request_id, user["access_token"], refresh_token=user["refresh_token"], prefer="respond-async"
        )
    )
    assert queued.status == 202, queued.body
    [job] = resources.queued_messages()
    resources.events()
    # And three hours later: every access token of the user has expired, and the backend's refresh
    # token was rotated away by the handover
    emulator.advance_clock(3 * 3600)
    calls = emulator.stats()["calls"]

    # When the backend reads its record, then cancels it, with no token of the user's
    read = call_api(get_event(request_id))
    assert emulator.stats()["calls"] == calls  # a read asks TikTok nothing
    cancelled = call_api(delete_event(request_id))
    tokens_now(emulator, user["open_id"])

    # Then the read answered from the record, and the cancel reached TikTok with the grant's tokens
    # (refreshed once TikTok refused the expired one)
    assert (read.status, read.body["status"], read.body["open_id"]) == (200, "queued", user["open_id"])
    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled"), cancelled.body
    assert emulator.state(request_id)["status"] == "cancelled"
    assert emulator.state(request_id)["cancels"] == 1
    assert emulator.user(user["open_id"])["refreshes"] == 2
    [event] = resources.events()
    assert (event["detail-type"], event["detail"]["caller"]) == ("Request Cancelled", BACKEND_CALLER)
    # And the grant, which no request needs any more, is gone; the job that comes later does nothing
    assert not [g for g in grant_items(resources) if g.startswith("user ")]
    assert call_worker([sqs_record(job["Body"])]) == {"batchItemFailures": []}
    assert emulator.downloads(request_id) == 0
    assert resources.item(request_id)["status"]["S"] == "cancelled"  # type: ignore[index]


def test_an_open_id_tiktok_contradicts_is_400_and_keeps_nothing(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given the user's tokens, handed over by a backend that names another user
    user, someone = consent(emulator), consent(emulator)
    request_id = new_request_id()
    emulator.register(request_id, user["access_token"])

    answer = call_api(
        api_event(
            request_id,
            user["access_token"],
            refresh_token=user["refresh_token"],
            open_id=someone["open_id"],
            prefer="respond-async",
        )
    )
    tokens_now(emulator, user["open_id"])

    # Then nothing is kept for either user: no record, no grant, nothing queued or published. Only the
    # exchanged token's mark stays until it lapses (TikTok rotated the token: nobody may send it again)
    assert (answer.status, answer.body["error"]["code"]) == (400, "open_id_mismatch"), answer.body
    assert resources.item(request_id) is None
    [(name, mark)] = grant_items(resources).items()
    assert name.startswith("handed ")
    assert set(mark) == {"grant_id", "exchange_owner", "expires_at"}
    assert resources.queued_messages() == []
    assert resources.events() == []
    assert emulator.downloads(request_id) == 0
    assert call_api(user_requests_event(someone["open_id"])).body["requests"] == []


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
        "caller": BACKEND_CALLER,
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
    # Every path that writes: sync success, queued job, permanent failure, transient failure, a refresh
    # token handed over (grants), a backend's own message, and a cancel
    ok, queued, refused, flaky, handed, sent = (new_request_id() for _ in range(6))
    user = consent(emulator)
    emulator.register(ok, token)
    emulator.register(queued, token)
    emulator.register(refused, token, fault={"kind": "error", "status": 401, "code": "scope_not_authorized"})
    emulator.register(flaky, token, fault={"kind": "error", "status": 500, "code": "internal_error"})
    emulator.register(handed, user["access_token"])
    emulator.register(sent, token)
    call_api(api_event(ok, token))
    call_api(api_event(queued, token, prefer="respond-async"))
    call_api(api_event(refused, token))
    call_api(api_event(flaky, token))
    call_api(
        api_event(handed, user["access_token"], refresh_token=user["refresh_token"], prefer="respond-async")
    )
    call_worker([sqs_record(message(sent, token))])
    call_api(delete_event(flaky))
    now = tokens_now(emulator, user["open_id"])

    dynamodb = resources.client("dynamodb")
    items = dynamodb.scan(TableName=resources.table)["Items"]
    grant_items = dynamodb.scan(TableName=resources.local.ref("GrantsTable"))["Items"]
    written = json.dumps([items, grant_items, resources.events(), resources.queued_messages()])
    assert len(items) == 6
    assert len(grant_items) == 2  # the user's grant and its handed-over token's digest
    for secret in (
        token,
        user["access_token"],
        user["refresh_token"],
        now["access_token"],
        now["refresh_token"],
    ):
        secret_part = secret.partition(".")[2]
        assert secret_part not in written
        assert base64.b64encode(secret.encode()).decode()[:24] not in written
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
