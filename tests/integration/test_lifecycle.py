"""From consent to archive through the real handlers: POST /requests (the user's tokens in the body), the
status schedule on the lifecycle queue, token refresh, the download from the user's grant, GET, DELETE and
the events.

TikTok is the emulator (its clock moved, never slept on); AWS is moto server. Status checks are real
delayed SQS messages (1 s, doubling to 2 s, in tests); each test receives them and hands them to the
lifecycle function as Lambda would. The backend (``BACKEND``) signs every call; reads ask TikTok nothing.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import BACKEND_CALLER, OTHER
from tests.harness.emulator_control import Emulator
from tests.harness.events import api_event, delete_event, get_event, request_event
from tests.harness.local_stack import Resources
from tests.harness.tokens import new_request_id
from tests.integration.support import (
    MIB,
    Configure,
    acknowledge,
    add_request,
    added,
    assert_nothing_left,
    call_api,
    call_lifecycle,
    call_sweeper,
    call_worker,
    consent,
    deliver,
    grant,
    grants_of_user,
    in_queue,
    lifecycle_in_another_container,
    open_uploads,
    receive,
    record,
    sqs_record,
    status_of,
    stored_keys,
    stored_refresh_token,
    tokens_now,
    worker_in_another_container,
)
from tiktok_archive.adapters.grants import user_grant_id

# Waiting requests of the scale test (LIFECYCLE_COUNT=100 for a quick run while developing).
COUNT = int(os.environ.get("LIFECYCLE_COUNT", "1000"))


def check_until(resources: Resources, predicate: Any, rounds: int = 6) -> None:
    """Deliver the lifecycle queue's checks as they come due until ``predicate()`` holds."""
    for _ in range(rounds):
        deliver(resources, "LifecycleQueue")
        if predicate():
            return
    raise AssertionError("the schedule never got there")


def item(resources: Resources, request_id: int) -> dict[str, Any]:
    return record(resources, request_id)


def grant_item(resources: Resources, user: dict[str, Any]) -> dict[str, Any]:
    """The user's grant under the backend, as stored ({} when none)."""
    return grant(resources, BACKEND_CALLER, user["open_id"])


def kept_refresh_token(resources: Resources, user: dict[str, Any]) -> str:
    """The refresh token the service holds for ``user`` under the backend."""
    return stored_refresh_token(resources, user_grant_id(BACKEND_CALLER, user["open_id"]))


# -- POST /requests ------------------------------------------------------------------------------------
def test_a_request_is_added_at_tiktok_and_answered_202_waiting(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    user = consent(emulator, prepare_seconds=600)

    answer = add_request(user, categories=["video", "activity"])

    # Then TikTok has the request, and the caller the record of it, waiting, with where to look, for
    # the user TikTok named
    assert answer.status == 202, answer.body
    request_id = int(answer.body["request_id"])
    assert answer.body["open_id"] == user["open_id"]
    assert answer.body["request_id"] in emulator.user(user["open_id"])["requests"]
    assert answer.headers["Location"] == f"/v1/downloads/{request_id}"
    assert answer.body["status"] == "waiting"
    assert answer.body["tiktok"]["data_format"] == "json"
    assert answer.body["tiktok"]["categories"] == ["video", "activity"]
    assert answer.body["next_check_at"]
    # And the first check is on the lifecycle queue, one event says the request was added
    [check] = receive(resources, "LifecycleQueue")
    assert json.loads(check["body"]) == {"kind": "check", "request_id": str(request_id), "seq": 0}
    [event] = resources.events()
    assert (event["detail-type"], event["detail"]["request_id"]) == ("Request Added", str(request_id))
    assert (event["detail"]["caller"], event["detail"]["open_id"]) == (BACKEND_CALLER, user["open_id"])
    # And the service holds the user's only live lineage now: TikTok rotated the refresh token handed over
    now = tokens_now(emulator, user["open_id"])
    assert (now["refreshes"], now["refused_refreshes"]) == (1, 0)
    assert kept_refresh_token(resources, user) == now["refresh_token"] != user["refresh_token"]
    # And the user's tokens are kept sealed only: no token in the grant, the record, the event
    written = json.dumps([grant_item(resources, user), item(resources, request_id), event])
    for token in (user["access_token"], user["refresh_token"]):
        assert token.partition(".")[2] not in written


@pytest.mark.parametrize(
    "body",
    [
        {"data_format": "xml"},
        {"categories": []},
        {"categories": ["video", "video"]},
        {"categories": ["photos"]},
        {"categories": "all_data"},
        {"refresh_token": "rft.has a space"},
        {"open_id": 12},
        {"open_id": "-000d1f5e2a"},  # an open_id is only compared with TikTok's: never alone
        {"surprise": True},
        "[1, 2]",
        "not json",
    ],
)
def test_a_bad_body_is_400_before_tiktok_is_called(
    configure: Configure, emulator: Emulator, resources: Resources, body: Any
) -> None:
    user = consent(emulator)
    before = emulator.stats()["calls"]

    answer = call_api(request_event(body, user["access_token"]))

    assert (answer.status, answer.body["error"]["code"]) == (400, "invalid_request")
    assert emulator.stats()["calls"] == before  # no Add, and no refresh of a handed-over token either
    assert resources.client("dynamodb").scan(TableName=resources.table)["Items"] == []
    assert grants_of_user(resources, user["open_id"]) == []


@pytest.mark.parametrize(
    "body", [{}, {"access_token": ""}, {"access_token": "act.has a space"}, {"access_token": 7}]
)
def test_a_request_without_a_well_formed_access_token_is_400_missing_token(
    configure: Configure, emulator: Emulator, resources: Resources, body: dict[str, Any]
) -> None:
    before = emulator.stats()["calls"]

    answer = call_api(request_event(json.dumps(body), None))

    assert (answer.status, answer.body["error"]["code"]) == (400, "missing_token")
    assert emulator.stats()["calls"] == before
    assert resources.client("dynamodb").scan(TableName=resources.table)["Items"] == []


def test_tiktoks_refusals_pass_through_and_keep_nothing(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a user whose single-use scope already made its one request, and one without the scope
    single = consent(emulator, scopes=["portability.all.single"])
    assert add_request(single).status == 202
    resources.events()
    no_scope = consent(emulator, scopes=["user.info.basic"])

    again, refused = add_request(single), add_request(no_scope)

    assert (again.status, again.body["error"]["code"]) == (400, "scope_permission_missed")
    assert (refused.status, refused.body["error"]["code"]) == (401, "scope_not_authorized")
    assert len(again.body["error"]["log_id"]) == 34
    assert len(resources.client("dynamodb").scan(TableName=resources.table)["Items"]) == 1
    assert resources.events() == []
    # The user TikTok refused for good keeps no grant; the other's grant serves its waiting request
    assert grants_of_user(resources, no_scope["open_id"]) == []
    assert grant_item(resources, single) != {}


# -- waiting, then the archive -----------------------------------------------------------------------
def test_from_consent_to_archive_without_anyone_polling(
    configure: Configure, emulator: Emulator, resources: Resources, bucket: str
) -> None:
    # Given a request TikTok takes an hour to prepare
    user = consent(emulator, prepare_seconds=3600, archive_size=6 * MIB)
    request_id = int(add_request(user).body["request_id"])
    resources.events()

    # When the schedule checks it twice while TikTok prepares it
    check_until(resources, lambda: int(item(resources, request_id)["checks"]["N"]) >= 2)

    # Then the record is waiting, TikTok's times are known, and the interval doubled (1 s, then 2 s)
    waiting = call_api(get_event(request_id)).body
    assert waiting["status"] == "waiting"
    assert waiting["tiktok"]["status"] == "pending"
    assert waiting["tiktok"]["apply_time"]
    assert item(resources, request_id)["poll_interval"]["N"] == "2"

    # When TikTok has prepared it and the next check finds it ready
    emulator.advance_clock(3600)
    check_until(resources, lambda: status_of(resources, request_id) == "queued")

    # Then the download is queued (once), "Archive Ready" published, and no further check is scheduled
    jobs = receive(resources, "DownloadQueue")
    assert [json.loads(j["body"]) for j in jobs] == [{"request_id": str(request_id), "source": "grant"}]
    assert [e["detail-type"] for e in resources.events()] == ["Archive Ready"]
    assert in_queue(resources, "LifecycleQueue", received=False) == 0

    # When the worker runs the job with the user's stored tokens
    assert call_worker(jobs) == {"batchItemFailures": []}

    # Then the archive is stored, announced, and GET hands out a link to exactly TikTok's bytes
    done = call_api(get_event(request_id)).body
    assert done["status"] == "completed"
    with urllib.request.urlopen(done["url"], timeout=30) as response:
        assert len(response.read()) == done["size_bytes"]
    [completed] = resources.events()
    assert completed["detail-type"] == "Download Completed"
    assert completed["detail"]["open_id"] == user["open_id"]
    assert "url" not in json.dumps(completed)
    assert stored_keys(resources.client("s3"), bucket) == [f"archives/{request_id}.zip"]
    assert grant_item(resources, user) == {}  # the user's tokens go with the last request that needed them


@pytest.mark.parametrize(
    ("state", "status", "detail_type"),
    [("expired", "expired", "Request Expired"), ("cancelled", "cancelled", "Request Cancelled")],
)
def test_a_check_that_finds_the_request_ended_at_tiktok_ends_it_and_stops(
    configure: Configure, emulator: Emulator, resources: Resources, state: str, status: str, detail_type: str
) -> None:
    user = consent(emulator, prepare_seconds=3600)
    request_id = int(add_request(user).body["request_id"])
    resources.events()
    emulator.set_request_state(request_id, state)

    check_until(resources, lambda: status_of(resources, request_id) == status)

    assert [e["detail-type"] for e in resources.events()] == [detail_type]
    assert in_queue(resources, "LifecycleQueue", received=False) == 0  # the polling stopped
    answer = call_api(get_event(request_id)).body
    assert answer["status"] == status
    assert "url" not in answer
    assert grant_item(resources, user) == {}  # no request needs the user's tokens any longer


def test_a_rate_limited_check_slows_the_schedule_and_hands_the_batch_back(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given three waiting requests, and TikTok admitting one Check Status a minute
    user = consent(emulator, prepare_seconds=3600)
    ids = [int(add_request(user).body["request_id"]) for _ in range(3)]
    records = receive(resources, "LifecycleQueue")
    assert len(records) == 3
    emulator.set_rate_limit(1, endpoint="check")
    before = emulator.stats()["calls"]["check"]

    result = call_lifecycle(records)

    # Then the first check goes through, the second is refused 429 and its request's schedule slows
    # to TikTok's Retry-After, and the third comes back without a call
    first, second, third = (int(json.loads(r["body"])["request_id"]) for r in records)
    assert sorted([first, second, third]) == sorted(ids)
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == [records[2]["messageId"]]
    assert item(resources, first)["poll_interval"]["N"] == "2"
    assert int(item(resources, second)["poll_interval"]["N"]) >= 30
    assert item(resources, third)["checks"]["N"] == "0"
    stats = emulator.stats()
    # three messages, two calls
    assert (stats["calls"]["check"] - before, stats["rate_limited"]["check"]) == (2, 1)


# -- tokens that outlive a wait ------------------------------------------------------------------------
def test_an_expired_access_token_is_refreshed_and_the_rotated_refresh_token_kept(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a request, and three hours later: TikTok's 2-hour access token has expired
    user = consent(emulator, prepare_seconds=6 * 3600)
    request_id = int(add_request(user).body["request_id"])
    emulator.advance_clock(3 * 3600)

    # When the schedule checks the request
    check_until(resources, lambda: int(item(resources, request_id)["checks"]["N"]) >= 1)

    # Then the token was refreshed once more than at the handover, the check went through, and the
    # service holds the rotated token
    now = tokens_now(emulator, user["open_id"])
    assert (now["refreshes"], now["refused_refreshes"]) == (2, 0)
    assert kept_refresh_token(resources, user) == now["refresh_token"]
    assert item(resources, request_id)["status"]["S"] == "waiting"


def test_racing_refreshes_of_one_user_keep_a_working_refresh_token(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given one user with two waiting requests (one grant), whose access token expired
    user = consent(emulator, prepare_seconds=6 * 3600)
    ids = [int(add_request(user).body["request_id"]) for _ in range(2)]
    emulator.advance_clock(3 * 3600)
    records = receive(resources, "LifecycleQueue")
    assert len(records) == 2

    # When both checks run at the same moment in two containers
    others = [lifecycle_in_another_container(record) for record in records]
    outputs = [other.communicate(timeout=120) for other in others]

    # Then TikTok refreshed once (besides the handover) — nobody replayed a rotated token — and both
    # checks went through
    assert all(other.returncode == 0 for other in others), outputs
    now = tokens_now(emulator, user["open_id"])
    assert (now["refreshes"], now["refused_refreshes"]) == (2, 0)
    assert kept_refresh_token(resources, user) == now["refresh_token"]
    assert sorted(int(item(resources, i)["checks"]["N"]) for i in ids) == [1, 1]


def test_a_refused_refresh_ends_the_request_reauthorization_required(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a user who disconnected the app at TikTok (their tokens stop working) before the next check
    user = consent(emulator, prepare_seconds=3600)
    request_id = int(add_request(user).body["request_id"])
    resources.events()
    emulator.disconnect_user(user["open_id"])

    check_until(resources, lambda: status_of(resources, request_id) == "failed")

    failed = item(resources, request_id)
    assert (failed["error_code"]["S"], failed["error_transient"]["BOOL"]) == (
        "reauthorization_required",
        False,
    )
    [event] = resources.events()
    assert (event["detail-type"], event["detail"]["error"]["code"]) == (
        "Download Failed",
        "reauthorization_required",
    )
    assert grant_item(resources, user) == {}  # the dead tokens are gone
    assert in_queue(resources, "LifecycleQueue", received=False) == 0


def test_a_request_waiting_past_the_give_up_time_fails(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    user = consent(emulator, prepare_seconds=30 * 24 * 3600)
    request_id = int(add_request(user).body["request_id"])
    resources.client("dynamodb").update_item(  # as if the week had passed
        TableName=resources.table,
        Key={"request_id": {"S": str(request_id)}},
        UpdateExpression="SET give_up_at = :past",
        ExpressionAttributeValues={":past": {"S": "2026-01-01T00:00:00Z"}},
    )
    calls = emulator.stats()["calls"].get("check", 0)

    check_until(resources, lambda: status_of(resources, request_id) == "failed")

    assert item(resources, request_id)["error_code"]["S"] == "preparation_timed_out"
    assert emulator.stats()["calls"].get("check", 0) == calls  # TikTok was not asked any more


# -- DELETE --------------------------------------------------------------------------------------------
def test_delete_of_a_waiting_request_cancels_it_at_tiktok_and_stops_the_polling(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    user = consent(emulator, prepare_seconds=3600)
    request_id = int(add_request(user).body["request_id"])
    resources.events()

    first = call_api(delete_event(request_id))
    second = call_api(delete_event(request_id))

    assert (first.status, first.body["status"]) == (200, "cancelled")
    assert (second.status, second.body) == (200, first.body)  # idempotent
    assert emulator.state(request_id)["status"] == "cancelled"
    assert emulator.state(request_id)["cancels"] == 1
    assert [e["detail-type"] for e in resources.events()] == ["Request Cancelled"]
    # The pending check is stale now: it asks TikTok nothing and schedules nothing
    calls = emulator.stats()["calls"].get("check", 0)
    check_records = receive(resources, "LifecycleQueue")
    assert call_lifecycle(check_records) == {"batchItemFailures": []}
    assert emulator.stats()["calls"].get("check", 0) == calls
    assert in_queue(resources, "LifecycleQueue", received=False) == 0


def test_delete_of_a_stored_archive_deletes_it_and_no_link_is_ever_handed_out(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any, bucket: str, token: str
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, size=6 * MIB)
    assert call_api(api_event(request_id, token)).status == 200

    cancelled = call_api(delete_event(request_id))

    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled")
    assert_nothing_left(s3, bucket)
    got = call_api(get_event(request_id))
    assert (got.body["status"], "url" in got.body) == ("cancelled", False)
    again = call_api(api_event(request_id, token))
    assert (again.status, again.body["error"]["code"]) == (410, "request_cancelled")
    # Asked to queue it, the answer is the same: nothing is queued for an ended request
    queued = call_api(api_event(request_id, token, prefer="respond-async"))
    assert (queued.status, queued.body["error"]["code"]) == (410, "request_cancelled")
    assert "Location" not in queued.headers
    assert resources.queued_messages() == []
    assert emulator.downloads(request_id) == 1


def test_delete_by_another_caller_changes_nothing(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any, bucket: str, token: str
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token)
    assert call_api(api_event(request_id, token)).status == 200
    before = resources.item(request_id)

    answer = call_api(delete_event(request_id, OTHER))

    # The same answer as for an id nobody knows; the archive and the record stay (see test_custody.py
    # for every route and state)
    assert (answer.status, answer.body) == (404, call_api(delete_event(new_request_id(), OTHER)).body)
    assert resources.item(request_id) == before
    assert stored_keys(s3, bucket) == [f"archives/{request_id}.zip"]


def test_delete_during_a_running_download_stops_it_and_leaves_nothing(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any, bucket: str, token: str
) -> None:
    # Given the backend's download queued (Prefer: respond-async), running in another container, slowly
    # (24 MiB at 2 MiB/s)
    request_id = new_request_id()
    emulator.register(request_id, token, size=24 * MIB, bytes_per_second=2 * MIB)
    assert call_api(api_event(request_id, token, prefer="respond-async")).status == 202
    [job] = receive(resources, "DownloadQueue")
    other = worker_in_another_container(sqs_record(job["body"]))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "progress_bytes" not in (resources.item(request_id) or {}):
        time.sleep(0.2)

    # When GET shows its progress, and then the backend deletes it
    running = call_api(get_event(request_id)).body
    assert running["status"] == "in_progress"
    assert running["progress"]["bytes_received"] > 0
    assert running["progress"]["parts_uploaded"] >= 1
    cancelled = call_api(delete_event(request_id))
    out, err = other.communicate(timeout=60)

    # Then the running download stopped — the job is done with, not handed back — and left nothing behind
    assert cancelled.body["status"] == "cancelled"
    assert other.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"batchItemFailures": []}, out[-3000:]
    assert stored_keys(s3, bucket) == []
    assert open_uploads(s3, bucket) == []
    assert status_of(resources, request_id) == "cancelled"


def test_an_access_token_near_its_expiry_is_refreshed_before_use(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a stored access token with 10 minutes left (less than the 20 a download may need)
    user = consent(emulator, prepare_seconds=3600)
    request_id = int(add_request(user).body["request_id"])
    resources.client("dynamodb").update_item(
        TableName=resources.local.ref("GrantsTable"),
        Key={"grant_id": {"S": user_grant_id(BACKEND_CALLER, user["open_id"])}},
        UpdateExpression="SET access_expires_at = :soon",
        ExpressionAttributeValues={":soon": {"N": str(int(time.time()) + 600)}},
    )

    check_until(resources, lambda: int(item(resources, request_id)["checks"]["N"]) >= 1)

    # Then it was refreshed before the check (once more than at the handover), though TikTok would still
    # have taken it
    now = tokens_now(emulator, user["open_id"])
    assert now["refreshes"] == 2
    assert int(grant_item(resources, user)["access_expires_at"]["N"]) > time.time() + 3600


@pytest.mark.slow
@pytest.mark.timeout(900)  # moto's SQS slows down with a thousand messages in a queue (~130 ms a check)
def test_a_thousand_waiting_requests_cost_one_check_each_per_interval(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given 1,000 requests TikTok is preparing (one user with an ongoing scope), added through the API as
    # fast as it answers — under a TikTok quota large enough for that (the shared budget is not what this
    # test is about: tests/integration/test_tiktok_quota.py is)
    configure({"TikTokCallsPerMinute": "1000000"})
    user = consent(emulator, prepare_seconds=24 * 3600, scopes=["portability.all.ongoing"])
    started = time.monotonic()
    ids = {added(user) for _ in range(COUNT)}
    added_in = time.monotonic() - started
    before = emulator.stats()["calls"].get("check", 0)

    # When the schedule runs a check of each (ten messages to an invocation, as the template says)
    started = time.monotonic()
    ran, most_in_queue = 0, 0
    while ran < COUNT:
        records = receive(resources, "LifecycleQueue", wait_seconds=5)
        assert records, f"only {ran} checks arrived"
        result = call_lifecycle(records)
        assert result == {"batchItemFailures": []}
        acknowledge(resources, "LifecycleQueue", records, result)
        ran += len(records)
        most_in_queue = max(most_in_queue, in_queue(resources, "LifecycleQueue"))
    took = time.monotonic() - started

    # Then each message cost exactly one TikTok call, each request was checked exactly once, and each
    # request's chain never held more than its one next check: no loop, no multiplication
    calls = emulator.stats()["calls"]["check"] - before
    checks = {int(item(resources, i)["checks"]["N"]) for i in ids}
    print(f"\n{COUNT} requests added in {added_in:.1f} s; {ran} checks in {took:.1f} s; {calls} TikTok calls")
    assert calls == ran == COUNT
    assert checks == {1}
    assert most_in_queue <= COUNT
    # And the next round is one check each again, not due before the interval (2 s in tests)
    next_checks = [json.loads(r["body"]) for r in receive(resources, "LifecycleQueue", wait_seconds=0)]
    assert all(check["seq"] == 1 for check in next_checks)


def test_the_sweeper_redrives_a_request_whose_chain_of_checks_was_lost(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a waiting request whose scheduled check was lost (gone from the queue), now 20 minutes late
    user = consent(emulator, prepare_seconds=3600)
    request_id = int(add_request(user).body["request_id"])
    lost = receive(resources, "LifecycleQueue")
    acknowledge(resources, "LifecycleQueue", lost, {"batchItemFailures": []})
    resources.client("dynamodb").update_item(
        TableName=resources.table,
        Key={"request_id": {"S": str(request_id)}},
        UpdateExpression="SET next_check_at = :late",
        ExpressionAttributeValues={":late": {"S": "2026-01-01T00:00:00Z"}},
    )
    other = int(add_request(user).body["request_id"])  # on time: not re-driven

    # When the sweeper runs
    assert call_sweeper() == {"redriven": 1, "waiting": 2, "floor_seconds": 1, "finished": True}

    # Then the lost check is back with the expected seq, and it runs
    records = receive(resources, "LifecycleQueue")
    checks = [json.loads(r["body"]) for r in records]
    assert {"kind": "check", "request_id": str(request_id), "seq": 0} in checks
    assert all(c["request_id"] in (str(request_id), str(other)) for c in checks)
    assert call_lifecycle(records) == {"batchItemFailures": []}
    assert int(item(resources, request_id)["checks"]["N"]) == 1


def test_a_queued_download_whose_token_expired_meanwhile_refreshes_it_in_the_worker(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a request found ready, whose job waits while the user's access token expires
    user = consent(emulator, prepare_seconds=60, archive_size=MIB)
    request_id = int(add_request(user).body["request_id"])
    emulator.advance_clock(120)
    check_until(resources, lambda: status_of(resources, request_id) == "queued")
    emulator.advance_clock(3 * 3600)

    # When the worker runs the job
    assert call_worker(receive(resources, "DownloadQueue")) == {"batchItemFailures": []}

    # Then it refreshed the token itself (once more than at the handover; no rotated token replayed),
    # stored the archive, and let the grant go: no request of the user needs it any longer
    now = tokens_now(emulator, user["open_id"])
    assert (now["refreshes"], now["refused_refreshes"]) == (2, 0)
    assert status_of(resources, request_id) == "completed"
    assert grant_item(resources, user) == {}
