"""Authorize before writing: a record is its caller's, and TikTok confirms the token's user first.

Two locks, both pinned here through the real handler:

- the caller (the SigV4 principal API Gateway verified): a record answers only the caller that created
  it. Another caller — even one holding the user's own token — gets the same 404 as for an unknown id;
- the user's token: ``POST /downloads`` acts only once TikTok's Check Status, asked with the body's
  token, confirms that its user owns the request.

The matrix: a stranger (the owner's caller with another user's token, another caller, another caller
with the user's token) × the state the owner's record is in × every route that takes a ``request_id``.
Whatever the cell, the stranger gets the same 404 as for an unknown id, and the record, the events, the
queue, the stored archive and TikTok's download and cancel endpoints are as they were.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import BACKEND, BACKEND_CALLER, OTHER, SECRETS, LogCapture
from tests.harness.emulator_control import Emulator
from tests.harness.events import api_event, delete_event, get_event
from tests.harness.local_stack import Resources
from tests.harness.tokens import new_request_id
from tests.integration.support import ApiAnswer, Configure, call_api, stored_keys
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.logic.ownership import NOT_FOUND_MESSAGE
from tiktok_archive.models.download_record import Owner

STATES = ["absent", "queued", "in_progress", "failed", "completed"]
# (who asks, the route): the owner's caller with another TikTok user's token; another caller (with
# another user's token where a route takes one); another caller with the owner's own token.
CELLS = [
    ("another user's token", "sync POST"),
    ("another user's token", "async POST"),
    ("another caller", "sync POST"),
    ("another caller", "async POST"),
    ("another caller", "GET"),
    ("another caller", "DELETE"),
    ("another caller with the user's token", "sync POST"),
    ("another caller with the user's token", "async POST"),
]
ROUTES = ["sync POST", "async POST", "GET", "DELETE"]
SLUGS = {
    "another user's token": "other-users-token",
    "another caller": "other-caller",
    "another caller with the user's token": "other-caller-with-the-users-token",
}


def bring_to(state: str, request_id: int, owner: str, emulator: Emulator, resources: Resources) -> None:
    """Put the backend's download of ``request_id`` (for the user of ``owner``, a token) in ``state``,
    the way the service itself gets there."""
    if state == "absent":
        emulator.register(request_id, owner)
    elif state == "queued":
        emulator.register(request_id, owner)
        assert call_api(api_event(request_id, owner, prefer="respond-async")).status == 202
    elif state == "in_progress":
        emulator.register(request_id, owner)
        records = DownloadRecords(resources.client("dynamodb"), resources.table, timedelta(days=7))
        records.claim(request_id, "bucket", "key", timedelta(minutes=10), Owner(BACKEND_CALLER))
    elif state == "failed":
        emulator.register(request_id, owner, fault={"kind": "error", "status": 500, "code": "internal_error"})
        assert call_api(api_event(request_id, owner)).status == 502
    elif state == "completed":
        emulator.register(request_id, owner)
        assert call_api(api_event(request_id, owner)).status == 200


def ask(
    route: str, request_id: int, token: str | None, caller: str | None, *, gateway: bool = True
) -> ApiAnswer:
    """``route`` for ``request_id`` as ``caller`` (through API Gateway, unless ``gateway`` is False)."""
    if route == "sync POST":
        event = api_event(request_id, token, caller=caller)
    elif route == "async POST":
        event = api_event(request_id, token, caller=caller, prefer="respond-async")
    elif route == "GET":
        event = get_event(request_id, caller)
    else:
        event = delete_event(request_id, caller)
    return call_api(event, gateway=gateway)


def snapshot(request_id: int, emulator: Emulator, resources: Resources) -> dict[str, Any]:
    state = emulator.state(request_id)
    return {
        "item": resources.item(request_id),
        "messages": sorted(m["Body"] for m in resources.queued_messages()),
        "downloads": state["downloads"],
        "cancels": state["cancels"],
        "objects": stored_keys(resources.client("s3"), resources.bucket),
    }


def unknown_answer() -> dict[str, Any]:
    """What any caller gets for a ``request_id`` it has no record of, or TikTok does not confirm."""
    return {"error": {"code": "not_found", "message": NOT_FOUND_MESSAGE, "log_id": None}}


@pytest.mark.parametrize(
    ("state", "stranger", "route"),
    [
        pytest.param(state, stranger, route, id=f"{state}-{SLUGS[stranger]}-{route.replace(' ', '-')}")
        for state in STATES
        for stranger, route in CELLS
        # Without a record, another caller with the user's token is simply the request's first caller.
        if not (state == "absent" and stranger == "another caller with the user's token")
    ],
)
def test_a_stranger_changes_nothing_and_learns_nothing(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    token: str,
    state: str,
    stranger: str,
    route: str,
) -> None:
    # Given the backend's download in the given state, and another TikTok user with a valid token
    request_id = new_request_id()
    bring_to(state, request_id, token, emulator, resources)
    someone = SECRETS.token()
    emulator.register(new_request_id(), someone)
    resources.events()  # what the backend's own calls published
    before = snapshot(request_id, emulator, resources)
    caller, their_token = {
        "another user's token": (BACKEND, someone),
        "another caller": (OTHER, someone),
        "another caller with the user's token": (OTHER, token),
    }[stranger]

    # When the stranger asks for the backend's request
    answer = ask(route, request_id, their_token, caller)

    # Then the answer is the 404 an unknown request gets, with no link and nothing of the record
    assert (answer.status, answer.body) == (404, unknown_answer()), answer.body
    assert "url" not in json.dumps(answer.body)
    # And no record changed, nothing was published, queued, downloaded, cancelled or deleted
    assert snapshot(request_id, emulator, resources) == before
    assert resources.events() == []


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("caller", [BACKEND, OTHER], ids=["backend", "other-caller"])
def test_an_unknown_request_id_answers_exactly_like_someone_elses(
    configure: Configure, emulator: Emulator, resources: Resources, token: str, route: str, caller: str
) -> None:
    # Given a user with a valid token, and a request_id nobody has
    emulator.register(new_request_id(), token)

    answer = ask(route, new_request_id(), token, caller)

    assert (answer.status, answer.body) == (404, unknown_answer())
    assert resources.client("dynamodb").scan(TableName=resources.table)["Items"] == []


@pytest.mark.parametrize("reaching", ["api gateway", "the function"])
@pytest.mark.parametrize("route", ROUTES)
def test_an_unsigned_call_is_403_and_touches_nothing(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    token: str,
    logs: LogCapture,
    route: str,
    reaching: str,
) -> None:
    # Given the backend's stored archive, and a call without an identity: refused by API Gateway
    # (AWS_IAM), or reaching the function anyway (a route deployed without that authorization)
    request_id = new_request_id()
    bring_to("completed", request_id, token, emulator, resources)
    resources.events()
    before = snapshot(request_id, emulator, resources)
    checks = emulator.checks(request_id)

    answer = ask(route, request_id, token, None, gateway=reaching == "api gateway")

    # Then it is refused before anything, TikTok included, is asked
    if reaching == "api gateway":
        assert (answer.status, answer.body) == (403, {"message": "Missing Authentication Token"})
    else:
        assert (answer.status, answer.body["error"]["code"]) == (403, "caller_not_identified")
        # And its log record is not put down to the caller the container served before
        [refused] = [
            r for r in logs.find("answered with an error") if r["error_code"] == "caller_not_identified"
        ]
        assert "caller" not in refused
    assert "url" not in json.dumps(answer.body)
    assert snapshot(request_id, emulator, resources) == before
    assert emulator.checks(request_id) == checks
    assert resources.events() == []


@pytest.mark.parametrize("route", ROUTES)
def test_two_sessions_of_one_role_are_one_caller(
    configure: Configure, emulator: Emulator, token: str, route: str
) -> None:
    # Given the backend's stored archive, asked for by another session of the backend's role (another
    # container, another task)
    request_id = new_request_id()
    emulator.register(request_id, token)
    assert call_api(api_event(request_id, token)).status == 200
    session = BACKEND.rsplit("/", 1)[0] + "/i-0abc123def4567890"

    answer = ask(route, request_id, token, session)

    # Then it is the same caller: its record, its link, its cancel
    assert answer.status == 200, answer.body
    assert answer.body["status"] == ("cancelled" if route == "DELETE" else "completed")


@pytest.mark.parametrize("route", ["sync POST", "async POST"])
@pytest.mark.parametrize(
    ("code", "status"),
    [("access_token_invalid", 401), ("scope_not_authorized", 401), ("scope_permission_missed", 400)],
)
def test_tiktoks_token_errors_keep_their_code_status_and_log_id_on_every_post(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    token: str,
    route: str,
    code: str,
    status: int,
) -> None:
    # Given an archive already downloaded (the repeat paths), whose owner's token TikTok now refuses
    request_id = new_request_id()
    emulator.register(request_id, token)
    assert call_api(api_event(request_id, token)).status == 200
    before = snapshot(request_id, emulator, resources)
    resources.events()
    emulator.register(request_id, token, check_fault={"status": status, "code": code})

    answer = ask(route, request_id, token, BACKEND)

    # Then the caller learns what TikTok said, with TikTok's log_id, and nothing changed
    assert (answer.status, answer.body["error"]["code"]) == (status, code), answer.body
    assert len(answer.body["error"]["log_id"]) == 34
    assert "url" not in json.dumps(answer.body)
    assert snapshot(request_id, emulator, resources)["item"] == before["item"]
    assert resources.events() == []


def test_get_and_delete_ask_tiktok_nothing_and_need_no_token(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Given an archive downloaded by the backend, whose user's token TikTok now refuses everywhere
    request_id = new_request_id()
    emulator.register(request_id, token)
    assert call_api(api_event(request_id, token)).status == 200
    emulator.register(
        request_id, token, check_fault={"status": 401, "code": "access_token_invalid"}, size=64 * 1024
    )
    calls = emulator.stats()["calls"]

    # When the backend reads its record twice, then cancels it
    reads = [call_api(get_event(request_id)) for _ in range(2)]
    cancelled = call_api(delete_event(request_id))

    # Then the reads answer from the record with a link, the cancel ends it, and TikTok heard nothing
    assert [(a.status, a.body["status"]) for a in reads] == [(200, "completed")] * 2
    assert all("X-Amz-Signature=" in a.body["url"] for a in reads)
    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled")
    assert "url" not in cancelled.body
    assert emulator.stats()["calls"] == calls
    assert stored_keys(resources.client("s3"), resources.bucket) == []
