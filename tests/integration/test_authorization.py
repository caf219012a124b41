"""Authorize before writing: a caller's token changes nothing for a request it does not own.

The matrix: a stranger's token (a real TikTok user's, owning other requests) × the state the owner's
record is in × every route that takes a ``request_id``. Whatever the cell, the stranger gets the same
404 as for an unknown id, and the record, the events, the queue and TikTok's download endpoint are as
they were.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import (
    SECRETS,
    ApiAnswer,
    Configure,
    api_event,
    call_api,
    get_event,
    new_request_id,
)
from tests.harness.emulator_control import Emulator
from tests.harness.local_stack import Resources
from tiktok_archive.adapters.download_records import DownloadRecords

STATES = ["absent", "queued", "in_progress", "failed", "completed"]
ROUTES = ["sync POST", "async POST", "GET"]


def bring_to(state: str, request_id: int, owner: str, emulator: Emulator, resources: Resources) -> None:
    """Put the owner's download of ``request_id`` in ``state``, the way the service itself gets there."""
    if state == "absent":
        emulator.register(request_id, owner)
    elif state == "queued":
        emulator.register(request_id, owner)
        assert call_api(api_event(request_id, owner, prefer="respond-async")).status == 202
    elif state == "in_progress":
        emulator.register(request_id, owner)
        records = DownloadRecords(resources.client("dynamodb"), resources.table, timedelta(days=7))
        records.claim(request_id, "bucket", "key", timedelta(minutes=10))
    elif state == "failed":
        emulator.register(request_id, owner, fault={"kind": "error", "status": 500, "code": "internal_error"})
        assert call_api(api_event(request_id, owner)).status == 502
    elif state == "completed":
        emulator.register(request_id, owner)
        assert call_api(api_event(request_id, owner)).status == 200


def ask_as(route: str, request_id: int, token: str) -> ApiAnswer:
    if route == "sync POST":
        return call_api(api_event(request_id, token))
    if route == "async POST":
        return call_api(api_event(request_id, token, prefer="respond-async"))
    return call_api(get_event(request_id, token))


def snapshot(request_id: int, emulator: Emulator, resources: Resources) -> dict[str, Any]:
    return {
        "item": resources.item(request_id),
        "messages": sorted(m["Body"] for m in resources.queued_messages()),
        "downloads": emulator.downloads(request_id),
    }


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("state", STATES)
def test_a_strangers_token_changes_nothing_and_learns_nothing(
    configure: Configure, emulator: Emulator, resources: Resources, token: str, state: str, route: str
) -> None:
    # Given the owner's download in the given state, and a stranger: a TikTok user with a valid token
    request_id = new_request_id()
    bring_to(state, request_id, token, emulator, resources)
    stranger = SECRETS.token()
    emulator.register(new_request_id(), stranger)
    resources.events()  # what the owner's own calls published
    before = snapshot(request_id, emulator, resources)

    # When the stranger asks for the owner's request
    answer = ask_as(route, request_id, stranger)

    # Then the answer is the 404 an unknown request gets, with no link and nothing of the record
    assert (answer.status, answer.body) == (404, unknown_answer()), answer.body
    assert "url" not in json.dumps(answer.body)
    # And no record changed, no event was published, nothing was queued, nothing was downloaded
    assert snapshot(request_id, emulator, resources) == before
    assert resources.events() == []


def unknown_answer() -> dict[str, Any]:
    """What any caller gets for a ``request_id`` that TikTok does not confirm for its token."""
    return {
        "error": {
            "code": "not_found",
            "message": "no download of this request_id is known for this token",
            "log_id": None,
        }
    }


@pytest.mark.parametrize("route", ROUTES)
def test_an_unknown_request_id_answers_exactly_like_someone_elses(
    configure: Configure, emulator: Emulator, resources: Resources, token: str, route: str
) -> None:
    # Given a user with a valid token, and a request_id nobody has
    emulator.register(new_request_id(), token)

    answer = ask_as(route, new_request_id(), token)

    assert (answer.status, answer.body) == (404, unknown_answer())
    assert resources.client("dynamodb").scan(TableName=resources.table)["Items"] == []


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("code", "status"),
    [("access_token_invalid", 401), ("scope_not_authorized", 401), ("scope_permission_missed", 400)],
)
def test_tiktoks_token_errors_keep_their_code_status_and_log_id_on_every_route(
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

    answer = ask_as(route, request_id, token)

    # Then the caller learns what TikTok said, with TikTok's log_id, and nothing changed
    assert (answer.status, answer.body["error"]["code"]) == (status, code), answer.body
    assert len(answer.body["error"]["log_id"]) == 34
    assert "url" not in json.dumps(answer.body)
    assert snapshot(request_id, emulator, resources)["item"] == before["item"]
    assert resources.events() == []
