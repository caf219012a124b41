"""Custody through the real handlers: the backend is the caller, the user is the open_id TikTok names, and
nothing a user gave is lost or left behind (issue 15's "Done when").

- another caller changes nothing and learns nothing, whatever the route and the record's state;
- the backend reads and cancels its requests days after the user's access token expired and the service
  rotated the refresh token, with no TikTok call for a read;
- a forged ``open_id`` changes nothing for the real user;
- the lineage survives any interleaving of adds, re-sent tokens, refreshes and checks (a stateful property
  test against the emulator's OAuth, which refuses a replayed refresh token);
- purges (``authorization.removed``, ``DELETE /users/{open_id}``) finish under a 429 storm and during a
  download, leave no object, upload or grant of the user, and their second pass finds what the index
  missed.

TikTok is the emulator (its clock moved, never slept on); AWS is moto server.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import BACKEND, BACKEND_CALLER, OTHER, OTHER_CALLER
from tests.harness.emulator_control import Emulator
from tests.harness.events import (
    api_event,
    delete_event,
    erase_event,
    get_event,
    request_event,
    user_requests_event,
    webhook_event,
)
from tests.harness.local_stack import APP_SECRET, Resources
from tests.harness.tiktok_emulator import sign, webhook_body
from tests.harness.tokens import new_request_id
from tests.harness.tokens import open_id as new_open_id
from tests.integration.support import (
    DAY,
    HOUR,
    MIB,
    QUEUES,
    ApiAnswer,
    Configure,
    acknowledge,
    add_request,
    added,
    call_api,
    call_webhook,
    call_worker,
    calls_since,
    check_now,
    consent,
    consent_again,
    functions,
    grant,
    grant_items,
    grants_of_user,
    handed,
    hide_from_indexes,
    in_queue,
    index_catches_up,
    objects,
    receive,
    record,
    records,
    run_lifecycle_message,
    run_taken,
    second_pass,
    sqs_record,
    status_of,
    stored_keys,
    stored_refresh_token,
    take_messages,
    tiktok_calls,
    tiktok_check,
    tiktok_refresh,
    tokens_now,
    uploads,
    wait_for_progress,
    worker_in_another_container,
)
from tiktok_archive import runtime
from tiktok_archive.adapters.grants import user_grant_id
from tiktok_archive.models.download_record import Owner


# -- helpers ----------------------------------------------------------------------------------------------
def made_ready(emulator: Emulator, resources: Resources, request_id: int) -> None:
    """TikTok prepared the request; the next status check finds it and queues its download."""
    emulator.set_request_state(request_id, "downloading")
    assert check_now(resources, request_id) == {"batchItemFailures": []}
    assert status_of(resources, request_id) == "queued"


def download_job(resources: Resources, request_id: int) -> list[dict[str, Any]]:
    """The download queue's job for ``request_id`` (received; other jobs are put back)."""
    jobs = take_messages(resources, "DownloadQueue", None, lambda body: body["request_id"] == str(request_id))
    assert len(jobs) == 1, jobs
    return jobs


def stored(emulator: Emulator, resources: Resources, request_id: int) -> None:
    """The request's archive downloaded by the worker from the user's grant: ``completed``."""
    made_ready(emulator, resources, request_id)
    assert call_worker(download_job(resources, request_id)) == {"batchItemFailures": []}
    assert status_of(resources, request_id) == "completed"


def disconnected(emulator: Emulator, open_id: str) -> bytes:
    """The user disconnects the app at TikTok; the ``authorization.removed`` delivery TikTok sends."""
    emulator.disconnect_user(open_id)
    return webhook_body(
        "authorization.removed",
        open_id,
        {"reason": 1},
        client_key=APP_SECRET["client_key"],
        create_time=int(time.time()),
    )


def deliver(raw: bytes) -> ApiAnswer:
    """TikTok's delivery of ``raw``, signed with the app's secret, to the webhook function."""
    answer = call_webhook(webhook_event(raw, sign(APP_SECRET["client_secret"], int(time.time()), raw)))
    assert answer.status == 200, answer.body
    return answer


def purge_on_removal(emulator: Emulator, resources: Resources, open_id: str) -> dict[str, Any]:
    """The user disconnects; the webhook function queues the work; the lifecycle function purges."""
    assert deliver(disconnected(emulator, open_id)).body["status"] == "queued"
    work = take_messages(resources, "LifecycleQueue", "webhook")
    assert [json.loads(w["body"])["event"] for w in work] == ["authorization.removed"]
    return run_taken(resources, work)


def erase(resources: Resources, open_id: str, caller: str = BACKEND) -> ApiAnswer:
    """``DELETE /users/{open_id}`` and the lifecycle's work: the local purge, then the TikTok side."""
    answer = call_api(erase_event(open_id, caller))
    assert (answer.status, answer.body) == (202, {"open_id": open_id, "status": "erasing"})
    work = take_messages(resources, "LifecycleQueue", "erase")
    assert len(work) == 1
    assert run_taken(resources, work) == {"batchItemFailures": []}
    revoke = take_messages(resources, "LifecycleQueue", "revoke", wait_seconds=1)
    if revoke:
        assert run_taken(resources, revoke) == {"batchItemFailures": []}
    return answer


def claimed_by_a_running_worker(resources: Resources, s3: Any, request_id: int) -> None:
    """``in_progress``, frozen: the claim a worker makes when its download starts (the worker's own adapter
    call, in the worker's environment), and the multipart upload it opened with its first part."""
    with functions().running("WorkerFunction"):
        bucket, key = runtime.transfer_service().location(request_id)
        runtime.download_records().claim(
            request_id, bucket, key, timedelta(minutes=15), Owner(None, service=True)
        )
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"\0" * (5 * MIB))


# -- another caller changes nothing and learns nothing ----------------------------------------------------
STATES = ("waiting", "queued", "in_progress", "completed", "failed", "cancelled", "revoked")
ROUTES = (
    "GET /downloads/{id}",
    "DELETE /downloads/{id}",
    "POST /downloads",
    "POST /downloads (respond-async)",
    "GET /users/{open_id}/requests",
    "GET /users/{open_id}/requests?next=<the backend's>",
    "DELETE /users/{open_id}",
)


@dataclass
class Scene:
    """The backend's record of a user's request in one state, a token TikTok accepts for that user, and
    where the second page of the backend's list of the user's requests starts."""

    open_id: str
    request_id: int
    user_token: str
    backend_next: str


def scene_in(state: str, emulator: Emulator, resources: Resources, s3: Any) -> Scene:
    """A record of the backend's in ``state``, beside a waiting request of the same user (so that the
    user's grant lives, as it does while any request needs it)."""
    user = consent(emulator, prepare_seconds=HOUR, archive_size=MIB)
    added(user)  # keeps the grant
    request_id = added(user)
    token = user["access_token"]  # the backend's copy: TikTok accepts it until its own expiry
    if state in ("queued", "in_progress"):
        made_ready(emulator, resources, request_id)
    if state == "in_progress":
        claimed_by_a_running_worker(resources, s3, request_id)
    if state in ("completed", "revoked"):
        stored(emulator, resources, request_id)
    if state == "failed":
        emulator.register(request_id, token, size=MIB, fault={"kind": "not_zip"})
        made_ready(emulator, resources, request_id)
        call_worker(download_job(resources, request_id))
    if state == "cancelled":
        assert call_api(delete_event(request_id)).body["status"] == "cancelled"
    if state == "revoked":
        erase(resources, user["open_id"])
        token = consent_again(emulator, user["open_id"])["access_token"]  # a new consent: a valid token
    assert status_of(resources, request_id) == state
    first_page = call_api(user_requests_event(user["open_id"], limit="1")).body
    assert first_page["next"]
    return Scene(user["open_id"], request_id, token, first_page["next"])


def as_other(route: str, scene: Scene) -> ApiAnswer:
    """``route`` called by the other caller about the backend's record (or its user)."""
    if route == "GET /downloads/{id}":
        return call_api(get_event(scene.request_id, OTHER))
    if route == "DELETE /downloads/{id}":
        return call_api(delete_event(scene.request_id, OTHER))
    if route == "POST /downloads":
        return call_api(api_event(scene.request_id, scene.user_token, caller=OTHER))
    if route == "POST /downloads (respond-async)":
        return call_api(api_event(scene.request_id, scene.user_token, caller=OTHER, prefer="respond-async"))
    if route == "GET /users/{open_id}/requests":
        return call_api(user_requests_event(scene.open_id, OTHER))
    if route.startswith("GET /users/{open_id}/requests?next"):
        return call_api(user_requests_event(scene.open_id, OTHER, next_page=scene.backend_next))
    assert route == "DELETE /users/{open_id}"
    return call_api(erase_event(scene.open_id, OTHER))


def as_if_unknown(route: str, scene: Scene, emulator: Emulator, resources: Resources) -> ApiAnswer:
    """What the other caller gets for the same call about something the service has no record of: an
    unknown id or user; for ``POST /downloads`` of a request TikTok does not offer, a twin request of the
    user's in the same state at TikTok (that answer is TikTok's, given before any record is read)."""
    unknown_user = new_open_id()
    if route == "GET /downloads/{id}":
        return call_api(get_event(new_request_id(), OTHER))
    if route == "DELETE /downloads/{id}":
        return call_api(delete_event(new_request_id(), OTHER))
    if route.startswith("POST /downloads"):
        prefer = "respond-async" if "async" in route else None
        tiktok_status = emulator.state(scene.request_id)["status"]
        twin = new_request_id()
        if tiktok_status != "downloading":
            emulator.register(twin, scene.user_token, status=tiktok_status)
        return call_api(api_event(twin, scene.user_token, caller=OTHER, prefer=prefer))
    if route == "GET /users/{open_id}/requests":
        answer = call_api(user_requests_event(unknown_user, OTHER))
    elif route.startswith("GET /users/{open_id}/requests?next"):
        answer = call_api(user_requests_event(unknown_user, OTHER, next_page=scene.backend_next))
    else:
        answer = call_api(erase_event(unknown_user, OTHER))
        run_taken(resources, take_messages(resources, "LifecycleQueue", "erase"))
    assert answer.body["open_id"] == unknown_user
    return ApiAnswer(answer.status, {**answer.body, "open_id": scene.open_id}, answer.headers)


@dataclass
class World:
    """Everything of the service's and TikTok's that a call might change (TikTok's calls apart)."""

    records: dict[str, Any]
    grants: dict[str, Any]
    objects: list[tuple[str, str]]
    uploads: list[tuple[str, str]]
    queues: dict[str, int]
    user: dict[str, Any]
    requests: dict[str, Any]


def world(resources: Resources, s3: Any, emulator: Emulator, open_id: str) -> World:
    at_tiktok = {}
    for request_id in emulator.user(open_id)["requests"]:
        state = emulator.state(int(request_id))
        at_tiktok[request_id] = (state["status"], state["downloads"], state["cancels"])
    return World(
        records=records(resources),
        grants=grant_items(resources),
        objects=objects(s3, resources.bucket),
        uploads=uploads(s3, resources.bucket),
        queues={queue: in_queue(resources, queue) for queue in QUEUES},
        user=tokens_now(emulator, open_id),
        requests=at_tiktok,
    )


@pytest.mark.parametrize("state", STATES)
def test_another_caller_changes_nothing_and_learns_nothing(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any, state: str
) -> None:
    # Given the backend's record of a user's request in ``state``, and another caller of the API that
    # holds a token TikTok accepts for that user
    scene = scene_in(state, emulator, resources, s3)
    expected = {route: as_if_unknown(route, scene, emulator, resources) for route in ROUTES}

    for route in ROUTES:
        resources.events()
        before, calls = world(resources, s3, emulator, scene.open_id), tiktok_calls(emulator)

        # When the other caller calls the route about the backend's record (or its user)
        answer = as_other(route, scene)
        if route == "DELETE /users/{open_id}":  # the erasure is the lifecycle's work: run it all
            run_taken(resources, take_messages(resources, "LifecycleQueue", "erase"))
            assert take_messages(resources, "LifecycleQueue", "revoke", wait_seconds=0) == []
            assert run_lifecycle_message(second_pass(resources, scene.open_id, OTHER_CALLER)) == {
                "batchItemFailures": []
            }

        # Then it learns nothing: the very answer it gets when the service knows nothing of it
        unknown = expected[route]
        learned = (answer.status, answer.body, answer.headers)
        assert learned == (unknown.status, unknown.body, unknown.headers), (state, route)
        # And nothing changed: records, grants, archives, uploads, queues, TikTok's side, events
        after = world(resources, s3, emulator, scene.open_id)
        events = resources.events()
        if route == "DELETE /users/{open_id}":
            # its own erasure of nobody: its second pass stays queued (delayed), its event names nothing
            after.queues["LifecycleQueue"] -= 1
            assert [(e["detail-type"], e["detail"]) for e in events] == [
                (
                    "User Erased",
                    {
                        "caller": OTHER_CALLER,
                        "open_id": scene.open_id,
                        "requests_revoked": 0,
                        "request_ids": [],
                    },
                )
            ]
        else:
            assert events == [], (state, route)
        assert after == before, (state, route)
        # TikTok was asked nothing — but POST /downloads' one Check Status with the caller's token, which
        # confirms the token's user before anything else happens
        allowed = {"check": 1} if route.startswith("POST /downloads") else {}
        assert calls_since(emulator, calls) == allowed, (state, route)

    # And the backend still has its record as it was, and its user's requests
    mine = call_api(get_event(scene.request_id))
    assert (mine.status, mine.body["status"]) == (200, state)
    listed = call_api(user_requests_event(scene.open_id)).body["requests"]
    assert str(scene.request_id) in [r["request_id"] for r in listed]


# -- across days ------------------------------------------------------------------------------------------
def test_the_backend_reads_and_cancels_its_requests_days_after_handing_the_tokens_over(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a user's request TikTok prepares in two days, and another it prepares in a month, both added
    # with the user's tokens; the backend keeps its copies of them
    user = consent(emulator, prepare_seconds=2 * DAY, archive_size=MIB)
    ready_in_two_days = added(user)
    emulator.add_user(user["open_id"], prepare_seconds=30 * DAY)
    still_waiting = added(user)  # the same tokens again: the service joins the grant it made

    # When days pass at TikTok and the schedule checks the requests: each check after the 2-hour access
    # token expired refreshes it (the refresh token rotates every time)
    for hours in (3, 21, 24):
        emulator.advance_clock(hours * HOUR)
        for request_id in (ready_in_two_days, still_waiting):
            assert check_now(resources, request_id) == {"batchItemFailures": []}
    assert status_of(resources, ready_in_two_days) == "queued"
    assert call_worker(download_job(resources, ready_in_two_days)) == {"batchItemFailures": []}
    now = tokens_now(emulator, user["open_id"])
    assert now["refreshes"] >= 4  # the handover, then once a day
    assert now["refused_refreshes"] == 0
    grant_id = user_grant_id(BACKEND_CALLER, user["open_id"])
    assert stored_refresh_token(resources, grant_id) == now["refresh_token"]

    # Then the backend's own tokens are dead: its refresh token was rotated away, its access token expired
    status, refused = tiktok_refresh(emulator, user["refresh_token"])
    assert (status, refused["error"]) == (400, "invalid_grant")
    status, expired = tiktok_check(emulator, user["access_token"], ready_in_two_days)
    assert (status, expired["error"]["code"]) == (401, "access_token_invalid")

    # And still it reads its records — a working link to the archive — without one call to TikTok
    calls = tiktok_calls(emulator)
    done = call_api(get_event(ready_in_two_days))
    waiting = call_api(get_event(still_waiting))
    listed = call_api(user_requests_event(user["open_id"]))
    assert calls_since(emulator, calls) == {}
    assert (done.status, done.body["status"]) == (200, "completed")
    with urllib.request.urlopen(done.body["url"], timeout=30) as response:
        assert len(response.read()) == done.body["size_bytes"]
    assert (waiting.status, waiting.body["status"]) == (200, "waiting")
    assert sorted(r["request_id"] for r in listed.body["requests"]) == sorted(
        [str(still_waiting), str(ready_in_two_days)]
    )

    # And it cancels the request still waiting: at TikTok, with the tokens the service holds
    calls = tiktok_calls(emulator)
    cancelled = call_api(delete_event(still_waiting))
    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled")
    assert calls_since(emulator, calls) == {"cancel": 1}
    assert (emulator.state(still_waiting)["status"], emulator.state(still_waiting)["cancels"]) == (
        "cancelled",
        1,
    )
    # TikTok refused one refresh in all: the backend's own, just now
    assert tokens_now(emulator, user["open_id"])["refused_refreshes"] == 1


# -- a forged open_id ---------------------------------------------------------------------------------------
def test_tokens_of_one_user_with_another_users_open_id_change_nothing_for_that_user(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given user B with a waiting request (B's grant holds B's lineage), and user A's tokens
    b = consent(emulator, prepare_seconds=6 * HOUR)
    b_request = added(b)
    a = consent(emulator, prepare_seconds=6 * HOUR)
    resources.events()
    b_grant = grant(resources, BACKEND_CALLER, b["open_id"])
    before_records, b_before = records(resources), tokens_now(emulator, b["open_id"])
    a_adds = emulator.user(a["open_id"])["adds"]
    a_request = new_request_id()
    emulator.register(a_request, a["access_token"])

    # When a caller hands A's tokens over naming B's open_id: to add a request, and to download one of A's
    forged = {"refresh_token": a["refresh_token"], "open_id": b["open_id"]}
    on_add = call_api(request_event(forged, a["access_token"]))
    # (A's lineage was exchanged at TikTok, then dropped: A consents again)
    a_again = consent_again(emulator, a["open_id"])
    on_download = call_api(
        api_event(
            a_request, a_again["access_token"], refresh_token=a_again["refresh_token"], open_id=b["open_id"]
        )
    )

    # Then both are refused, and nothing of B's changed: grant, records, TikTok's tokens; no event
    for answer in (on_add, on_download):
        assert (answer.status, answer.body["error"]["code"]) == (400, "open_id_mismatch")
    assert grant(resources, BACKEND_CALLER, b["open_id"]) == b_grant
    assert records(resources) == before_records
    assert grants_of_user(resources, a["open_id"]) == []
    assert resources.events() == []
    assert emulator.user(a["open_id"])["adds"] == a_adds
    assert emulator.state(a_request)["downloads"] == 0
    b_now = tokens_now(emulator, b["open_id"])
    assert (b_now["refresh_token"], b_now["refreshes"], b_now["refused_refreshes"]) == (
        b_before["refresh_token"],
        b_before["refreshes"],
        0,
    )

    # When A consents again, A's tokens are handed over for A, and then come again naming B: refused
    # without asking TikTok
    a_third = consent_again(emulator, a["open_id"])
    added(a_third)
    a_grant = grant(resources, BACKEND_CALLER, a["open_id"])
    calls = tiktok_calls(emulator)
    again = call_api(request_event(handed(a_third, open_id=b["open_id"]), a_third["access_token"]))
    assert (again.status, again.body["error"]["code"]) == (400, "open_id_mismatch")
    assert calls_since(emulator, calls) == {}
    assert grant(resources, BACKEND_CALLER, a["open_id"]) == a_grant
    assert grant(resources, BACKEND_CALLER, b["open_id"]) == b_grant

    # And B's request goes on with B's lineage, refreshed when its access token expired
    emulator.advance_clock(3 * HOUR)
    assert check_now(resources, b_request) == {"batchItemFailures": []}
    b_now = tokens_now(emulator, b["open_id"])
    assert (b_now["refreshes"], b_now["refused_refreshes"]) == (b_before["refreshes"] + 1, 0)
    assert (
        stored_refresh_token(resources, user_grant_id(BACKEND_CALLER, b["open_id"])) == b_now["refresh_token"]
    )
    assert (status_of(resources, b_request), record(resources, b_request)["checks"]["N"]) == ("waiting", "1")


# -- the lineage, as a state machine ----------------------------------------------------------------------
# Time that passes at TikTok before a step: none, or past the access token's 2 hours (a day and more).
LATER = st.sampled_from([0, 0, 3 * HOUR, 27 * HOUR])


class Lineage(RuleBasedStateMachine):
    """One user's tokens through the real handlers, against the emulator's OAuth (one live refresh token
    per user; a rotated or replayed one refused).

    The backend adds requests with new consents, sends tokens it handed over before again (a retry of a
    lost answer), adds with an access token alone, and tries its own copy of a refresh token it handed
    over; the schedule checks the user's requests. Before any step, time may pass at TikTok, beyond the
    access token's life: the next use of the service's token is refused and refreshes it (rotation).
    """

    emulator: Emulator
    resources: Resources

    def __init__(self) -> None:
        super().__init__()
        self.open_id = ""
        self.handed_over: list[dict[str, Any]] = []  # consents handed over with their refresh token
        self.requests: list[int] = []  # the requests on the user's grant
        self.own_refusals = 0  # refresh tokens the test itself sent TikTok, knowing they were dead

    def _later(self, seconds: int) -> None:
        if seconds:
            self.emulator.advance_clock(seconds)

    @initialize()
    def first_consent(self) -> None:
        self.open_id = consent(self.emulator, prepare_seconds=365 * DAY)["open_id"]
        self.new_consent(0)

    @rule(later=LATER)
    def new_consent(self, later: int) -> None:
        self._later(later)
        tokens = consent_again(self.emulator, self.open_id)
        answer = add_request(tokens)
        assert answer.status == 202, answer.body
        assert answer.body["open_id"] == self.open_id
        self.handed_over.append(tokens)
        self.requests.append(int(answer.body["request_id"]))

    @rule(later=LATER, which=st.integers(min_value=0))
    def send_handed_tokens_again(self, later: int, which: int) -> None:
        self._later(later)
        tokens = self.handed_over[which % len(self.handed_over)]
        answer = add_request(tokens)
        assert answer.status == 202, answer.body
        assert answer.body["open_id"] == self.open_id
        self.requests.append(int(answer.body["request_id"]))

    @rule(later=LATER)
    def add_with_the_access_token_alone(self, later: int) -> None:
        self._later(later)
        tokens = self.handed_over[-1]
        alive = self.emulator.clock() < tokens["access_expires_at"]
        answer = call_api(request_event({}, tokens["access_token"]))
        if alive:
            assert answer.status == 202, answer.body
            assert answer.body["open_id"] is None  # no refresh token: the user stays unknown
        else:
            assert (answer.status, answer.body["error"]["code"]) == (401, "access_token_invalid")

    @rule(later=LATER, which=st.integers(min_value=0))
    def status_check(self, later: int, which: int) -> None:
        self._later(later)
        request_id = self.requests[which % len(self.requests)]
        checks = int(record(self.resources, request_id)["checks"]["N"])
        assert check_now(self.resources, request_id) == {"batchItemFailures": []}
        assert status_of(self.resources, request_id) == "waiting"
        assert int(record(self.resources, request_id)["checks"]["N"]) == checks + 1

    @rule(which=st.integers(min_value=0))
    def backend_refreshes_with_its_own_copy(self, which: int) -> None:
        tokens = self.handed_over[which % len(self.handed_over)]
        status, answer = tiktok_refresh(self.emulator, tokens["refresh_token"])
        assert (status, answer.get("error")) == (400, "invalid_grant")  # the service exchanged it
        self.own_refusals += 1

    @invariant()
    def the_service_holds_the_users_only_live_lineage(self) -> None:
        if not self.open_id:
            return
        now = tokens_now(self.emulator, self.open_id)
        assert now["refused_refreshes"] == self.own_refusals, "TikTok refused a refresh the service made"
        grant_id = user_grant_id(BACKEND_CALLER, self.open_id)
        assert stored_refresh_token(self.resources, grant_id) == now["refresh_token"]

    def teardown(self) -> None:
        if self.requests:  # the service still acts for the user, a day later
            self.status_check(DAY, len(self.requests) - 1)


def test_the_lineage_is_never_lost_nor_replayed(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    Lineage.emulator, Lineage.resources = emulator, resources
    run_state_machine_as_test(
        Lineage,
        settings=settings(
            max_examples=10,
            stateful_step_count=12,
            deadline=None,
            database=None,  # nothing written into the checkout
            # No shrinking: each step is real HTTP; a failure is reported as it was found (≤ 12 steps)
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
        ),
    )


@pytest.mark.parametrize("route", ["POST /requests", "POST /downloads"])
def test_tokens_handed_over_again_work_after_tiktok_expired_the_stored_access_token(
    configure: Configure, emulator: Emulator, resources: Resources, route: str
) -> None:
    # Given a user's tokens handed over (a request waits on them), and three hours later at TikTok: the
    # access token the service stored is expired there (the service's own clock says it is fresh)
    user = consent(emulator, prepare_seconds=30 * DAY, archive_size=MIB)
    first = added(user)
    ready = new_request_id()
    emulator.register(ready, user["access_token"], size=MIB)
    emulator.advance_clock(3 * HOUR)

    # When the backend sends the same tokens again (it lost the first answer, or downloads another request)
    if route == "POST /requests":
        again = add_request(user)
    else:
        again = call_api(api_event(ready, user["access_token"], refresh_token=user["refresh_token"]))

    # Then the service acts for the user: the grant's token is refreshed on TikTok's refusal, as it is for
    # status checks, cancellations and downloads
    assert again.status == (202 if route == "POST /requests" else 200), again.body
    assert int(again.body["request_id"]) != first
    now = tokens_now(emulator, user["open_id"])
    assert (now["refreshes"], now["refused_refreshes"]) == (2, 0)


# -- purges -----------------------------------------------------------------------------------------------
def crashed_download(emulator: Emulator, resources: Resources, user: dict[str, Any]) -> int:
    """A request whose download crashed mid-way (its container killed): ``in_progress``, an upload open."""
    request_id = added(user)
    emulator.register(request_id, user["access_token"], size=24 * MIB, bytes_per_second=4 * MIB)
    made_ready(emulator, resources, request_id)
    [job] = download_job(resources, request_id)
    worker = worker_in_another_container(sqs_record(job["body"]))
    try:
        wait_for_progress(resources, request_id)
    finally:
        worker.kill()
        worker.communicate(timeout=30)
    return request_id


def test_authorization_removed_under_a_429_storm_leaves_nothing_of_the_user(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any
) -> None:
    # Given a user with records under two callers: the other caller's stored archive and waiting request,
    # and — after a new consent — the backend's stored archive, a waiting request, and a download that
    # crashed with its upload open
    user = consent(emulator, prepare_seconds=HOUR, archive_size=MIB)
    others_waiting = added(user, OTHER)
    others_stored = new_request_id()
    emulator.register(others_stored, user["access_token"], size=MIB)
    answer = call_api(
        api_event(others_stored, user["access_token"], caller=OTHER, refresh_token=user["refresh_token"])
    )
    assert (answer.status, answer.body["open_id"]) == (200, user["open_id"])
    user = consent_again(emulator, user["open_id"])
    waiting, mine_stored = added(user), added(user)
    stored(emulator, resources, mine_stored)
    crashed = crashed_download(emulator, resources, user)
    ids = [others_waiting, others_stored, waiting, mine_stored, crashed]
    assert len(stored_keys(s3, resources.bucket)) == 2
    assert uploads(s3, resources.bucket) != []
    assert len(grants_of_user(resources, user["open_id"])) == 2
    resources.events()

    # When TikTok refuses every call (429), and the user disconnects the app: the delivery is queued, and
    # the lifecycle gets it in a batch behind the status checks that came due
    emulator.set_rate_limit(0)
    assert deliver(disconnected(emulator, user["open_id"])).body["status"] == "queued"
    time.sleep(2)  # the checks' delays (1 s) run out
    batch = []
    while not any(json.loads(m["body"])["kind"] == "webhook" for m in batch):
        more = receive(resources, "LifecycleQueue")
        assert more, "the delivery's work never came"
        batch += more
    batch.sort(key=lambda m: json.loads(m["body"])["kind"] != "check")
    kinds = [json.loads(m["body"])["kind"] for m in batch]
    assert kinds[-1] == "webhook", kinds
    assert "check" in kinds, kinds
    calls = tiktok_calls(emulator)
    result = run_taken(resources, batch)

    # Then the purge went through — only TikTok's work came back — and nothing of the user is left
    handed_back = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    assert handed_back, "the 429 paused the invocation's TikTok work"
    assert batch[-1]["messageId"] not in handed_back
    assert all(json.loads(m["body"])["kind"] == "check" for m in batch if m["messageId"] in handed_back)
    assert stored_keys(s3, resources.bucket) == []
    assert uploads(s3, resources.bucket) == []
    assert grants_of_user(resources, user["open_id"], ids) == []
    assert {str(i): status_of(resources, i) for i in ids} == {str(i): "revoked" for i in ids}
    assert set(calls_since(emulator, calls)) == {"check"}
    assert emulator.stats()["rate_limited"]["check"] == calls_since(emulator, calls).get("check", 0)
    removed = {
        e["detail"]["caller"]: e["detail"]
        for e in resources.events()
        if e["detail-type"] == "Authorization Removed"
    }
    assert sorted(removed) == sorted([BACKEND_CALLER, OTHER_CALLER])
    assert sorted(removed[OTHER_CALLER]["request_ids"]) == sorted([str(others_waiting), str(others_stored)])
    assert sorted(removed[BACKEND_CALLER]["request_ids"]) == sorted(
        [str(waiting), str(mine_stored), str(crashed)]
    )
    assert {d["reason"] for d in removed.values()} == {1}

    # And its second pass, 15 minutes later, finds nothing more
    assert run_lifecycle_message(second_pass(resources, user["open_id"])) == {"batchItemFailures": []}
    assert resources.events() == []
    assert {str(i): status_of(resources, i) for i in ids} == {str(i): "revoked" for i in ids}


def test_delete_users_under_a_429_storm_purges_at_once_and_revokes_once_tiktok_admits_calls(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any
) -> None:
    # Given a user's stored archive and waiting request, and TikTok refusing every call (429)
    user = consent(emulator, prepare_seconds=HOUR, archive_size=MIB)
    waiting, done = added(user), added(user)
    stored(emulator, resources, done)
    resources.events()
    emulator.set_rate_limit(0)

    # When the backend erases the user
    assert call_api(erase_event(user["open_id"])).status == 202
    assert run_taken(resources, take_messages(resources, "LifecycleQueue", "erase")) == {
        "batchItemFailures": []
    }

    # Then the local purge is done at once: tombstones, no archive, no upload, the user erased
    assert (status_of(resources, waiting), status_of(resources, done)) == ("revoked", "revoked")
    assert stored_keys(s3, resources.bucket) == []
    assert uploads(s3, resources.bucket) == []
    assert [e["detail-type"] for e in resources.events()] == ["User Erased"]
    # And the TikTok side waits for TikTok: handed back, the grant kept for it (and only for it)
    revoke = take_messages(resources, "LifecycleQueue", "revoke")
    assert run_taken(resources, revoke) == {"batchItemFailures": [{"itemIdentifier": revoke[0]["messageId"]}]}
    assert emulator.user(user["open_id"])["revoked"] is False
    assert grant(resources, BACKEND_CALLER, user["open_id"])["erasing_at"]

    # When TikTok admits calls again and the message comes back (its visibility postponed by the 429's
    # Retry-After: handed to the function now, then deleted as Lambda would)
    emulator.set_rate_limit(1000)
    emulator.advance_clock(61)
    assert run_lifecycle_message(json.loads(revoke[0]["body"])) == {"batchItemFailures": []}
    acknowledge(resources, "LifecycleQueue", revoke, {"batchItemFailures": []})

    # Then the waiting request is cancelled and the user revoked at TikTok, and no grant of the user is left
    assert emulator.state(waiting)["status"] == "cancelled"
    assert emulator.user(user["open_id"])["revoked"] is True
    assert grants_of_user(resources, user["open_id"], [waiting, done]) == []


@pytest.mark.parametrize("purge", ["authorization.removed", "DELETE /users/{open_id}"])
def test_a_purge_during_a_download_stops_it_and_leaves_nothing(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any, purge: str
) -> None:
    # Given a download of the user's archive running in another container, slowly (24 MiB at 2 MiB/s)
    user = consent(emulator, prepare_seconds=HOUR)
    request_id = added(user)
    emulator.register(request_id, user["access_token"], size=24 * MIB, bytes_per_second=2 * MIB)
    made_ready(emulator, resources, request_id)
    [job] = download_job(resources, request_id)
    worker = worker_in_another_container(sqs_record(job["body"]))
    try:
        wait_for_progress(resources, request_id)
        assert uploads(s3, resources.bucket) != []

        # When the user's data is purged meanwhile
        if purge == "authorization.removed":
            assert purge_on_removal(emulator, resources, user["open_id"]) == {"batchItemFailures": []}
        else:
            erase(resources, user["open_id"])
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate(timeout=30)

    # Then the download stopped at its next progress report, and nothing of the user is left
    assert worker.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"batchItemFailures": []}, out[-3000:]
    assert stored_keys(s3, resources.bucket) == []
    assert uploads(s3, resources.bucket) == []
    assert grants_of_user(resources, user["open_id"], [request_id]) == []
    assert status_of(resources, request_id) == "revoked"
    assert "key" not in record(resources, request_id)


def test_delete_users_erases_the_user_under_the_caller_at_tiktok_too_and_is_idempotent(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any
) -> None:
    # Given the other caller's stored archive of the user, and — after a new consent — the backend's
    # stored archive, a waiting request, a queued download, a cancelled request, and a request added
    # with the access token alone whose user TikTok's webhook named
    user = consent(emulator, prepare_seconds=HOUR, archive_size=MIB)
    others = new_request_id()
    emulator.register(others, user["access_token"], size=MIB)
    assert (
        call_api(
            api_event(others, user["access_token"], caller=OTHER, refresh_token=user["refresh_token"])
        ).status
        == 200
    )
    user = consent_again(emulator, user["open_id"])
    done, waiting, queued, cancelled = added(user), added(user), added(user), added(user)
    stored(emulator, resources, done)
    made_ready(emulator, resources, queued)
    assert call_api(delete_event(cancelled)).body["status"] == "cancelled"
    unknown_user = int(call_api(request_event({}, user["access_token"])).body["request_id"])
    emulator.set_request_state(unknown_user, "downloading")
    ready = webhook_body(
        "portability.download.ready",
        user["open_id"],
        {"request_id": unknown_user},
        client_key=APP_SECRET["client_key"],
        create_time=int(time.time()),
    )
    deliver(ready)
    run_taken(resources, take_messages(resources, "ReadyQueue", "webhook"), "ReadyQueue")
    assert (status_of(resources, unknown_user), record(resources, unknown_user)["user_openid"]["S"]) == (
        "queued",
        user["open_id"],
    )
    mine = [done, waiting, queued, cancelled, unknown_user]
    resources.events()

    # When the backend erases the user
    first = erase(resources, user["open_id"])

    # Then its records are tombstones (revoked; the one cancelled before stays cancelled), its archive is
    # gone, the unfinished requests were cancelled at TikTok and the user's authorization revoked there,
    # and no grant of the user is left under the backend
    assert {i: status_of(resources, i) for i in mine} == {
        done: "revoked",
        waiting: "revoked",
        queued: "revoked",
        cancelled: "cancelled",
        unknown_user: "revoked",
    }
    assert all("key" not in record(resources, i) for i in mine)
    assert stored_keys(s3, resources.bucket) == [f"archives/{others}.zip"]
    assert uploads(s3, resources.bucket) == []
    for request_id in (waiting, queued, unknown_user):
        assert emulator.state(request_id)["status"] == "cancelled", request_id
    assert emulator.user(user["open_id"])["revoked"] is True
    assert grants_of_user(resources, user["open_id"], mine) == []
    [erased] = resources.events()
    assert erased["detail-type"] == "User Erased"
    assert erased["detail"]["caller"] == BACKEND_CALLER
    assert sorted(erased["detail"]["request_ids"]) == sorted(
        str(i) for i in (done, waiting, queued, unknown_user)
    )
    # And the other caller's record of the user is its own: untouched
    assert status_of(resources, others) == "completed"
    # And what was still queued does nothing: the download job, the pending checks
    calls = tiktok_calls(emulator)
    for request_id in (queued, unknown_user):
        assert call_worker(download_job(resources, request_id)) == {"batchItemFailures": []}
    assert check_now(resources, waiting) == {"batchItemFailures": []}
    assert calls_since(emulator, calls) == {}
    assert stored_keys(s3, resources.bucket) == [f"archives/{others}.zip"]
    listed = call_api(user_requests_event(user["open_id"])).body["requests"]
    assert sorted(r["request_id"] for r in listed) == sorted(str(i) for i in mine)
    assert all("url" not in r and r["status"] in ("revoked", "cancelled") for r in listed)

    # When it erases the user again, and the second pass comes 15 minutes later
    before = records(resources)
    again = erase(resources, user["open_id"])
    assert run_lifecycle_message(second_pass(resources, user["open_id"], BACKEND_CALLER)) == {
        "batchItemFailures": []
    }

    # Then nothing more happens: the same answer, the same tombstones, no call to TikTok
    assert (again.status, again.body) == (first.status, first.body)
    assert records(resources) == before
    assert calls_since(emulator, calls) == {}
    assert [(e["detail-type"], e["detail"]["requests_revoked"]) for e in resources.events()] == [
        ("User Erased", 0)
    ]


def test_an_erasure_of_a_user_who_already_disconnected_at_tiktok_still_finishes(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any
) -> None:
    # Given a user's stored archive and waiting request, and the user disconnected at TikTok (the webhook
    # not processed yet): every token the service holds is dead
    user = consent(emulator, prepare_seconds=HOUR, archive_size=MIB)
    waiting, done = added(user), added(user)
    stored(emulator, resources, done)
    emulator.disconnect_user(user["open_id"])

    # When the backend erases the user
    erase(resources, user["open_id"])

    # Then the TikTok side ends without anything left to cancel or revoke, and nothing of the user is kept
    assert (status_of(resources, waiting), status_of(resources, done)) == ("revoked", "revoked")
    assert stored_keys(s3, resources.bucket) == []
    assert uploads(s3, resources.bucket) == []
    assert grants_of_user(resources, user["open_id"], [waiting, done]) == []


@pytest.mark.parametrize("purge", ["authorization.removed", "DELETE /users/{open_id}"])
def test_the_second_pass_finds_a_record_the_index_did_not_show_yet(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any, purge: str
) -> None:
    # Given a user's waiting request, and a stored archive written just before the purge — the user
    # indexes do not show it yet (simulated: its index attributes are held back; the table has it)
    user = consent(emulator, prepare_seconds=HOUR, archive_size=MIB)
    waiting, late = added(user), added(user)
    stored(emulator, resources, late)
    hidden = hide_from_indexes(resources, late)
    resources.events()

    # When the purge's first pass runs
    if purge == "authorization.removed":
        assert purge_on_removal(emulator, resources, user["open_id"]) == {"batchItemFailures": []}
        caller = None
    else:
        erase(resources, user["open_id"])
        caller = BACKEND_CALLER

    # Then it purged what the index showed, and missed the late record
    assert status_of(resources, waiting) == "revoked"
    assert (status_of(resources, late), stored_keys(s3, resources.bucket)) == (
        "completed",
        [f"archives/{late}.zip"],
    )
    first_events = resources.events()
    assert [e["detail"]["request_ids"] for e in first_events] == [[str(waiting)]]

    # When the user consents again and the backend adds a request (after the purge began), the index
    # catches up, and the second pass comes
    again = consent_again(emulator, user["open_id"])
    # (in the next second: records and the purge's start carry whole seconds, so a request made in the
    # second the purge began cannot be told from one made just before it — and is purged too)
    time.sleep(1 - time.time() % 1)
    later = added(again)
    resources.events()
    index_catches_up(resources, late, hidden)
    assert run_lifecycle_message(second_pass(resources, user["open_id"], caller)) == {"batchItemFailures": []}

    # Then the late record is purged — archive gone, a tombstone, announced — and the new request is not
    assert status_of(resources, late) == "revoked"
    assert stored_keys(s3, resources.bucket) == []
    assert uploads(s3, resources.bucket) == []
    [announced] = resources.events()
    assert (announced["detail-type"], announced["detail"]["request_ids"]) == (
        first_events[0]["detail-type"],
        [str(late)],
    )
    assert announced["detail"]["caller"] == BACKEND_CALLER
    assert status_of(resources, later) == "waiting"
    assert grant(resources, BACKEND_CALLER, user["open_id"]) != {}
