"""The TikTok emulator is as strict as the documented endpoints, so tests that pass against it mean
something: a request_id that is not an exact JSON integer, or a token it does not know, is refused.

Beyond the download endpoint these pin the whole portability flow the emulator plays, over real HTTP:
Add Data Request, Check Status, Cancel and Download on an emulated clock, OAuth refresh with rotating
refresh tokens, revocation, signed webhooks, rate limits, and the hostile archive variants. Tests that
move the clock or change limits run against a private emulator (``tiktok``) in a thread, so they
cannot disturb the session's shared one.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import urllib3

from tests.conftest import SECRETS
from tests.harness import tokens
from tests.harness.emulator_control import Emulator
from tests.harness.tiktok_emulator import (
    DEFAULT_CLIENT_KEY,
    DEFAULT_CLIENT_SECRET,
    EmulatorServer,
    sign,
    webhook_body,
)
from tests.harness.tokens import new_request_id

ADD = "/v2/user/data/add/"
CHECK = "/v2/user/data/check/"
CANCEL = "/v2/user/data/cancel/"
DOWNLOAD = "/v2/user/data/download/"
TOKEN = "/v2/oauth/token/"
REVOKE = "/v2/oauth/revoke/"
ALL_FIELDS = "request_id,apply_time,collect_time,status,data_format,category_selection_list"
DAY = 24 * 3600
LOG_ID = re.compile(r"[0-9]{14}[0-9A-F]{20}")


# -- helpers ---------------------------------------------------------------------------------------
def post(emulator: Emulator, body: str, token: str | None) -> urllib3.BaseHTTPResponse:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return urllib3.request("POST", emulator.url + "/v2/user/data/download/", body=body, headers=headers)


def call(
    emulator: Emulator,
    path: str,
    token: str | None,
    body: dict[str, Any] | str | None = None,
    query: dict[str, str] | None = None,
) -> urllib3.BaseHTTPResponse:
    """A portability call as TikTok's docs write it: POST, a bearer token, a JSON body."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    data = body if isinstance(body, str) or body is None else json.dumps(body)
    url = emulator.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    return urllib3.request("POST", url, body=data, headers=headers, timeout=60)


def form(emulator: Emulator, path: str, fields: dict[str, str]) -> urllib3.BaseHTTPResponse:
    """An OAuth call: a form-encoded body."""
    return urllib3.request(
        "POST",
        emulator.url + path,
        body=urllib.parse.urlencode(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def refresh(emulator: Emulator, refresh_token: str) -> urllib3.BaseHTTPResponse:
    return form(
        emulator,
        TOKEN,
        {
            "client_key": DEFAULT_CLIENT_KEY,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        },
    )


def new_user(emulator: Emulator, **settings: Any) -> dict[str, Any]:
    """A user with generated TikTok-shaped tokens, all known to the secrets guard."""
    user = emulator.add_user(tokens.open_id(), **settings)
    SECRETS.tokens.update({user["access_token"], user["refresh_token"]})
    return user


def add(emulator: Emulator, token: str, categories: list[str] | None = None) -> urllib3.BaseHTTPResponse:
    body = {"data_format": "json", "category_selection_list": categories or ["all_data"]}
    return call(emulator, ADD, token, body, {"fields": "request_id"})


def added(emulator: Emulator, token: str) -> int:
    response = add(emulator, token)
    assert response.status == 200, response.data
    request_id: int = response.json()["data"]["request_id"]
    return request_id


def check(emulator: Emulator, token: str, request_id: int, fields: str = "status") -> dict[str, Any]:
    response = call(emulator, CHECK, token, {"request_id": request_id}, {"fields": fields})
    assert response.status == 200, response.data
    data: dict[str, Any] = response.json()["data"]
    return data


def error_code(response: urllib3.BaseHTTPResponse) -> tuple[int, str]:
    return response.status, response.json()["error"]["code"]


@pytest.fixture
def tiktok() -> Iterator[Emulator]:
    """A private emulator in a thread: its clock, limits and app are this test's alone."""
    server = EmulatorServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Emulator(server.url)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class Receiver:
    """A webhook endpoint on loopback that records each POST (headers and raw body) and answers 200."""

    def __init__(self) -> None:
        received: list[tuple[dict[str, str], bytes]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/tiktok"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, seconds: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + seconds
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)  # real time: the delivery thread's, not TikTok's
        return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()


def verified(headers: dict[str, str], body: bytes, secret: str) -> bool:
    """The receiver's check, written from the docs: ``t=<ts>,s=<hex HMAC-SHA256 of "<t>." + body>``."""
    match = re.fullmatch(r"t=([0-9]+),s=([0-9a-f]{64})", headers["tiktok-signature"])
    assert match, headers["tiktok-signature"]
    expected = hmac.new(secret.encode(), match.group(1).encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(2)) and abs(time.time() - int(match.group(1))) < 300


# -- the download endpoint ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "render",
    [
        lambda i: json.dumps({"request_id": str(i)}),  # a string, not an integer
        lambda i: json.dumps({"request_id": float(i)}),  # a double: rounded and written as a float
        lambda i: json.dumps({"request_id": i + 1}),  # off by one, as double rounding would make it
        lambda i: json.dumps({"id": i}),
    ],
)
def test_request_id_must_be_the_exact_json_integer(
    emulator: Emulator, token: str, render: Callable[[int], str]
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token)

    response = post(emulator, render(request_id), token)

    assert response.status == 400
    assert response.json()["error"]["code"] == "invalid_params"


def test_exact_integer_gets_the_archive_chunked(emulator: Emulator, token: str) -> None:
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=100_000)

    response = post(emulator, json.dumps({"request_id": request_id}), token)

    assert response.status == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.data[:4] == b"PK\x03\x04"
    assert len(response.data) == ready["size_bytes"]


@pytest.mark.parametrize("token", [None, "act.unknown-to-the-emulator"])
def test_missing_or_unknown_token_is_access_token_invalid(emulator: Emulator, token: str | None) -> None:
    response = post(emulator, json.dumps({"request_id": 1}), token)

    assert response.status == 401
    error = response.json()["error"]
    assert error["code"] == "access_token_invalid"
    assert LOG_ID.fullmatch(error["log_id"])
    assert response.headers["X-Tt-Logid"] == error["log_id"]
    assert error["http_status_code"] == 401


# -- registered requests -----------------------------------------------------------------------------
def test_a_registered_request_is_downloading_since_its_registration(emulator: Emulator, token: str) -> None:
    request_id = new_request_id()
    ready = emulator.register(request_id, token)

    data = check(emulator, token, request_id, ALL_FIELDS)

    assert data["status"] == "downloading"
    assert data["apply_time"] == data["collect_time"] > 0
    assert (data["data_format"], data["category_selection_list"]) == ("json", ["all_data"])
    assert str(request_id) in emulator.user(ready["owner"])["requests"]
    assert emulator.state(request_id)["owner"] == ready["owner"]


def test_check_fault_answers_tiktoks_error_for_the_next_calls(tiktok: Emulator, token: str) -> None:
    request_id = new_request_id()
    fault = {"status": 429, "code": "rate_limit_exceeded", "retry_after": "7", "times": 1}
    tiktok.register(request_id, token, check_fault=fault)

    first = call(tiktok, CHECK, token, {"request_id": request_id})
    second = call(tiktok, CHECK, token, {"request_id": request_id})

    assert error_code(first) == (429, "rate_limit_exceeded")
    assert first.headers["Retry-After"] == "7"
    assert second.status == 200
    assert tiktok.checks(request_id) == 2


# -- Add Data Request, Check Status, Download on the emulated clock ----------------------------------
def test_a_request_goes_pending_downloading_expired_as_the_clock_advances(tiktok: Emulator) -> None:
    user = new_user(tiktok, prepare_seconds=600, archive_size=80_000, access_expires_in=30 * DAY)
    token = user["access_token"]

    response = add(tiktok, token)
    request_id = response.json()["data"]["request_id"]
    # The int64 arrives as a JSON integer, digit for digit, above 2^60.
    assert isinstance(request_id, int)
    assert request_id > 2**60
    assert f'"request_id": {request_id}' in response.data.decode()
    assert response.json()["error"]["code"] == "ok"
    assert check(tiktok, token, request_id)["status"] == "pending"
    assert error_code(call(tiktok, DOWNLOAD, token, {"request_id": request_id})) == (400, "invalid_params")

    tiktok.advance_clock(599)
    assert check(tiktok, token, request_id)["status"] == "pending"
    tiktok.advance_clock(1)
    assert check(tiktok, token, request_id)["status"] == "downloading"
    download = call(tiktok, DOWNLOAD, token, {"request_id": request_id})
    assert download.status == 200
    assert zipfile.ZipFile(io.BytesIO(download.data)).testzip() is None

    tiktok.advance_clock(4 * DAY - 1)
    assert check(tiktok, token, request_id)["status"] == "downloading"
    tiktok.advance_clock(1)
    assert check(tiktok, token, request_id)["status"] == "expired"
    assert error_code(call(tiktok, DOWNLOAD, token, {"request_id": request_id})) == (400, "invalid_params")
    assert tiktok.state(request_id)["status"] == "expired"


def test_check_answers_exactly_the_fields_asked_for(tiktok: Emulator) -> None:
    user = new_user(tiktok, prepare_seconds=30)
    token = user["access_token"]
    body = {"data_format": "text", "category_selection_list": ["activity", "profile"]}
    request_id = call(tiktok, ADD, token, body, {"fields": "request_id"}).json()["data"]["request_id"]
    applied = int(tiktok.clock())

    pending = check(tiktok, token, request_id, ALL_FIELDS)
    only_status = check(tiktok, token, request_id, "status")
    two = check(tiktok, token, request_id, "collect_time,request_id")
    tiktok.advance_clock(30)
    ready = check(tiktok, token, request_id, "collect_time,status")

    assert pending == {
        "request_id": request_id,
        "apply_time": pending["apply_time"],
        "collect_time": 0,
        "status": "pending",
        "data_format": "text",
        "category_selection_list": ["activity", "profile"],
    }
    assert abs(pending["apply_time"] - applied) <= 1
    assert only_status == {"status": "pending"}
    assert two == {"collect_time": 0, "request_id": request_id}
    assert ready["status"] == "downloading"
    assert abs(ready["collect_time"] - (pending["apply_time"] + 30)) <= 1
    unknown = call(tiktok, CHECK, token, {"request_id": request_id}, {"fields": "status,owner"})
    assert error_code(unknown) == (400, "invalid_params")


@pytest.mark.parametrize(
    "body",
    [
        {"category_selection_list": ["all_data"]},
        {"data_format": "xml", "category_selection_list": ["all_data"]},
        {"data_format": "json"},
        {"data_format": "json", "category_selection_list": []},
        {"data_format": "json", "category_selection_list": ["everything"]},
        {"data_format": "json", "category_selection_list": "all_data"},
        "not json",
    ],
)
def test_add_refuses_a_body_the_docs_do_not_allow(tiktok: Emulator, body: dict[str, Any] | str) -> None:
    token = new_user(tiktok)["access_token"]

    response = call(tiktok, ADD, token, body, {"fields": "request_id"})

    assert error_code(response) == (400, "invalid_params")
    assert response.json()["data"] == {}


def test_a_single_scope_allows_one_add_and_ongoing_many(tiktok: Emulator) -> None:
    single = new_user(tiktok, scopes=["portability.all.single", "user.info.basic"])["access_token"]
    ongoing = new_user(tiktok, scopes=["portability.all.ongoing"])["access_token"]

    first, second = add(tiktok, single), add(tiktok, single)
    many = [add(tiktok, ongoing).status for _ in range(3)]

    assert first.status == 200
    assert error_code(second) == (400, "scope_permission_missed")
    assert many == [200, 200, 200]


def test_add_without_a_portability_scope_is_scope_not_authorized(tiktok: Emulator) -> None:
    token = new_user(tiktok, scopes=["user.info.basic"])["access_token"]

    assert error_code(add(tiktok, token)) == (401, "scope_not_authorized")


def test_a_category_needs_its_own_scope(tiktok: Emulator) -> None:
    token = new_user(tiktok, scopes=["portability.activity.ongoing"])["access_token"]

    assert add(tiktok, token, ["activity"]).status == 200
    assert error_code(add(tiktok, token, ["direct_message"])) == (400, "scope_permission_missed")
    assert error_code(add(tiktok, token, ["all_data"])) == (400, "scope_permission_missed")


def test_another_users_request_is_invalid_params_on_every_endpoint(tiktok: Emulator) -> None:
    owner = new_user(tiktok, prepare_seconds=0)["access_token"]
    stranger = new_user(tiktok)["access_token"]
    request_id = added(tiktok, owner)

    answers = [call(tiktok, path, stranger, {"request_id": request_id}) for path in (CHECK, CANCEL, DOWNLOAD)]

    assert [error_code(answer) for answer in answers] == [(400, "invalid_params")] * 3
    assert check(tiktok, owner, request_id)["status"] == "downloading"


# -- Cancel ---------------------------------------------------------------------------------------------
def test_cancel_takes_request_id_from_the_body_or_the_query(tiktok: Emulator) -> None:
    token = new_user(tiktok, prepare_seconds=60)["access_token"]
    pending, ready = added(tiktok, token), added(tiktok, token)
    tiktok.set_request_state(ready, "downloading")

    by_body = call(tiktok, CANCEL, token, {"request_id": pending})
    by_query = call(tiktok, CANCEL, token, None, {"request_id": str(ready)})

    for answer in (by_body, by_query):
        assert answer.status == 200
        document = answer.json()
        assert set(document) == {"error"}
        assert document["error"]["code"] == "ok"
        assert LOG_ID.fullmatch(document["error"]["log_id"])
    assert check(tiktok, token, pending)["status"] == "cancelled"
    assert check(tiktok, token, ready, "status,collect_time")["status"] == "cancelled"
    assert check(tiktok, token, pending, "collect_time") == {"collect_time": 0}
    assert error_code(call(tiktok, DOWNLOAD, token, {"request_id": ready})) == (400, "invalid_params")
    assert tiktok.state(pending)["cancels"] == 1


def test_cancel_of_a_cancelled_or_expired_request_is_invalid_params(tiktok: Emulator) -> None:
    token = new_user(tiktok, prepare_seconds=0, access_expires_in=30 * DAY)["access_token"]
    cancelled, expired = added(tiktok, token), added(tiktok, token)
    assert call(tiktok, CANCEL, token, {"request_id": cancelled}).status == 200
    tiktok.advance_clock(4 * DAY)

    again = call(tiktok, CANCEL, token, {"request_id": cancelled})
    too_late = call(tiktok, CANCEL, token, None, {"request_id": str(expired)})

    assert error_code(again) == (400, "invalid_params")
    assert error_code(too_late) == (400, "invalid_params")
    assert check(tiktok, token, expired)["status"] == "expired"


@pytest.mark.parametrize(
    ("body", "query"),
    [
        (None, None),
        ({"request_id": "1234"}, None),
        (None, {"request_id": "12ab"}),
        (None, {"request_id": "-5"}),
    ],
)
def test_cancel_without_a_valid_request_id_is_invalid_params(
    tiktok: Emulator, body: dict[str, Any] | None, query: dict[str, str] | None
) -> None:
    token = new_user(tiktok)["access_token"]

    assert error_code(call(tiktok, CANCEL, token, body or "", query)) == (400, "invalid_params")


def test_cancel_with_a_body_and_a_query_that_disagree_is_invalid_params(tiktok: Emulator) -> None:
    token = new_user(tiktok)["access_token"]
    first, second = added(tiktok, token), added(tiktok, token)

    answer = call(tiktok, CANCEL, token, {"request_id": first}, {"request_id": str(second)})

    assert error_code(answer) == (400, "invalid_params")
    assert check(tiktok, token, first)["status"] == "pending"


def test_cancel_with_an_unknown_token_is_access_token_invalid(tiktok: Emulator) -> None:
    assert error_code(call(tiktok, CANCEL, tokens.access_token(), {"request_id": 5})) == (
        401,
        "access_token_invalid",
    )


# -- tokens over time -------------------------------------------------------------------------------------
def test_an_expired_access_token_is_refused_everywhere(tiktok: Emulator) -> None:
    user = new_user(tiktok, access_expires_in=3600, prepare_seconds=0)
    token = user["access_token"]
    request_id = added(tiktok, token)

    tiktok.advance_clock(3600)

    calls: list[tuple[str, dict[str, Any]]] = [
        (ADD, {"data_format": "json", "category_selection_list": ["all_data"]}),
        (CHECK, {"request_id": request_id}),
        (CANCEL, {"request_id": request_id}),
        (DOWNLOAD, {"request_id": request_id}),
    ]
    for path, body in calls:
        assert error_code(call(tiktok, path, token, body)) == (401, "access_token_invalid"), path


def test_an_implicit_users_token_expires_two_hours_after_registration(tiktok: Emulator) -> None:
    token = tokens.access_token()
    SECRETS.tokens.add(token)
    request_id = new_request_id()
    tiktok.register(request_id, token)

    tiktok.advance_clock(2 * 3600 - 5)
    assert check(tiktok, token, request_id)["status"] == "downloading"
    tiktok.advance_clock(5)
    assert error_code(call(tiktok, CHECK, token, {"request_id": request_id})) == (401, "access_token_invalid")


def test_refresh_rotates_the_refresh_token_and_refuses_a_replay(tiktok: Emulator) -> None:
    user = new_user(tiktok, scopes=["portability.all.ongoing", "user.info.basic"], access_expires_in=7200)

    response = refresh(tiktok, user["refresh_token"])
    fresh = response.json()
    SECRETS.tokens.update({fresh["access_token"], fresh["refresh_token"]})
    replay = refresh(tiktok, user["refresh_token"])

    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert set(fresh) == {
        "access_token",
        "expires_in",
        "open_id",
        "refresh_expires_in",
        "refresh_token",
        "scope",
        "token_type",
    }
    assert fresh["access_token"].startswith("act.")
    assert fresh["refresh_token"].startswith("rft.")
    assert fresh["access_token"] != user["access_token"]
    assert fresh["refresh_token"] != user["refresh_token"]
    assert (fresh["open_id"], fresh["expires_in"], fresh["token_type"]) == (user["open_id"], 7200, "Bearer")
    assert fresh["scope"] == "portability.all.ongoing,user.info.basic"
    assert fresh["refresh_expires_in"] == 15_552_000
    # The replayed refresh token: OAuth's own error shape, no data.
    assert replay.status == 400
    refused = replay.json()
    assert set(refused) == {"error", "error_description", "log_id"}
    assert refused["error"] == "invalid_grant"
    assert LOG_ID.fullmatch(refused["log_id"])
    # The new refresh token works (once); both access tokens work until their own expiry.
    assert refresh(tiktok, fresh["refresh_token"]).status == 200
    assert add(tiktok, user["access_token"]).status == 200
    assert add(tiktok, fresh["access_token"]).status == 200
    tiktok.advance_clock(7200)
    assert error_code(add(tiktok, user["access_token"])) == (401, "access_token_invalid")
    record = tiktok.user(user["open_id"])
    assert (record["refreshes"], record["refused_refreshes"], record["revoked"]) == (2, 1, False)
    assert record["access_token"] not in (user["access_token"], fresh["access_token"])
    SECRETS.tokens.update({record["access_token"], record["refresh_token"]})


@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        ({"client_secret": "wrong-secret"}, 401, "invalid_client"),
        ({"client_key": "someoneelseskey"}, 401, "invalid_client"),
        ({"grant_type": "authorization_code"}, 400, "invalid_request"),
        ({"grant_type": ""}, 400, "invalid_request"),
        ({"refresh_token": ""}, 400, "invalid_request"),
        ({"refresh_token": "rft.never-issued-by-this-emulator!1234.e1"}, 400, "invalid_grant"),
    ],
)
def test_refresh_refusals_have_oauths_shape(
    tiktok: Emulator, fields: dict[str, str], status: int, error: str
) -> None:
    user = new_user(tiktok)
    body = {
        "client_key": DEFAULT_CLIENT_KEY,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "grant_type": "refresh_token",
        "refresh_token": user["refresh_token"],
        **fields,
    }

    response = form(tiktok, TOKEN, {key: value for key, value in body.items() if value})

    assert response.status == status
    document = response.json()
    assert (document["error"], "data" in document) == (error, False)
    assert LOG_ID.fullmatch(document["log_id"])
    assert tiktok.user(user["open_id"])["refresh_token"] == user["refresh_token"]


def test_refresh_with_a_json_body_is_invalid_request(tiktok: Emulator) -> None:
    user = new_user(tiktok)
    body = {
        "client_key": DEFAULT_CLIENT_KEY,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "grant_type": "refresh_token",
        "refresh_token": user["refresh_token"],
    }

    as_json = urllib3.request("POST", tiktok.url + TOKEN, json=body)
    json_labelled_as_form = urllib3.request(
        "POST",
        tiktok.url + TOKEN,
        body=json.dumps(body),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert (as_json.status, as_json.json()["error"]) == (400, "invalid_request")
    assert (json_labelled_as_form.status, json_labelled_as_form.json()["error"]) == (400, "invalid_request")
    assert tiktok.user(user["open_id"])["refreshes"] == 0


def test_an_expired_refresh_token_is_invalid_grant(tiktok: Emulator) -> None:
    user = new_user(tiktok, refresh_expires_in=1000)
    tiktok.advance_clock(1000)

    response = refresh(tiktok, user["refresh_token"])

    assert (response.status, response.json()["error"]) == (400, "invalid_grant")
    assert tiktok.user(user["open_id"])["refused_refreshes"] == 1


def test_set_app_changes_the_credentials_refresh_checks(tiktok: Emulator) -> None:
    user = new_user(tiktok)
    tiktok.set_app("awotherclientkey", "another-secret")

    refused = refresh(tiktok, user["refresh_token"])
    accepted = form(
        tiktok,
        TOKEN,
        {
            "client_key": "awotherclientkey",
            "client_secret": "another-secret",
            "grant_type": "refresh_token",
            "refresh_token": user["refresh_token"],
        },
    )
    SECRETS.tokens.update({accepted.json()["access_token"], accepted.json()["refresh_token"]})

    assert (refused.status, refused.json()["error"]) == (401, "invalid_client")
    assert accepted.status == 200
    tiktok.reset()
    assert tiktok.app() == {"client_key": DEFAULT_CLIENT_KEY, "client_secret": DEFAULT_CLIENT_SECRET}


def test_oauth_fault_answers_html_then_the_refresh_works(tiktok: Emulator) -> None:
    user = new_user(tiktok, oauth_fault={"status": 500, "times": 1})

    failed = refresh(tiktok, user["refresh_token"])
    recovered = refresh(tiktok, user["refresh_token"])
    SECRETS.tokens.update({recovered.json()["access_token"], recovered.json()["refresh_token"]})

    assert failed.status == 500
    assert failed.headers["Content-Type"].startswith("text/html")
    assert recovered.status == 200


def test_oauth_fault_after_rotation_loses_the_new_refresh_token(tiktok: Emulator) -> None:
    user = new_user(tiktok)
    tiktok.set_oauth_fault(user["open_id"], 502, 1, rotate=True)

    failed = refresh(tiktok, user["refresh_token"])
    retried = refresh(tiktok, user["refresh_token"])

    assert failed.status == 502
    assert (retried.status, retried.json()["error"]) == (400, "invalid_grant")
    record = tiktok.user(user["open_id"])
    SECRETS.tokens.update({record["access_token"], record["refresh_token"]})
    assert (record["refreshes"], record["refused_refreshes"]) == (1, 1)


# -- revocation and webhooks ----------------------------------------------------------------------------
def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"event": "portability.download.ready"}'

    header = sign("the-client-secret", 1_700_000_000, body)

    digest = hmac.new(b"the-client-secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,s={digest}"


def test_webhook_body_serialises_content_as_a_string_with_an_integer_request_id() -> None:
    request_id = 7234567890123456789

    body = webhook_body(
        "portability.download.ready",
        "-000abc",
        {"request_id": request_id},
        client_key="awkey",
        create_time=1_700_000_000,
    )

    document = json.loads(body)
    assert document == {
        "client_key": "awkey",
        "event": "portability.download.ready",
        "create_time": 1_700_000_000,
        "user_openid": "-000abc",
        "content": document["content"],
    }
    assert isinstance(document["content"], str)
    assert f'"request_id": {request_id}' in document["content"]
    assert json.loads(document["content"]) == {"request_id": request_id}


def test_a_ready_request_sends_one_signed_webhook(tiktok: Emulator, receiver: Receiver) -> None:
    tiktok.set_app("awhookclientkey", "hook-secret-0001")
    tiktok.set_webhook_url(receiver.url)
    user = new_user(tiktok, prepare_seconds=120)
    request_id = added(tiktok, user["access_token"])

    assert check(tiktok, user["access_token"], request_id)["status"] == "pending"
    tiktok.advance_clock(120)
    [(headers, body)] = receiver.wait_for(1)
    assert check(tiktok, user["access_token"], request_id)["status"] == "downloading"

    assert verified(headers, body, "hook-secret-0001")
    assert not verified(headers, body, DEFAULT_CLIENT_SECRET)
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert (document["event"], document["client_key"], document["user_openid"]) == (
        "portability.download.ready",
        "awhookclientkey",
        user["open_id"],
    )
    assert abs(document["create_time"] - tiktok.clock()) < 5
    assert f'"request_id": {request_id}' in document["content"]
    log = tiktok.webhooks()
    assert log["url"] == receiver.url
    [delivery] = log["deliveries"]
    assert (delivery["event"], delivery["status"], delivery["request_id"]) == (
        "portability.download.ready",
        200,
        str(request_id),
    )
    time.sleep(0.3)  # real time: nothing more may arrive
    assert len(receiver.received) == 1


def test_a_failed_delivery_is_retried_and_logged(tiktok: Emulator, receiver: Receiver) -> None:
    tiktok.set_webhook_url(receiver.url.replace("/webhooks/tiktok", "") + "-nowhere:1/")
    user = new_user(tiktok, prepare_seconds=0)
    added(tiktok, user["access_token"])

    deadline = time.monotonic() + 10
    while len(tiktok.webhooks()["deliveries"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)

    deliveries = tiktok.webhooks()["deliveries"]
    assert [(d["attempt"], d["status"]) for d in deliveries] == [(1, None), (2, None), (3, None)]


def test_revoke_stops_every_token_and_sends_authorization_removed(
    tiktok: Emulator, receiver: Receiver
) -> None:
    tiktok.set_webhook_url(receiver.url)
    user = new_user(tiktok)
    credentials = {"client_key": DEFAULT_CLIENT_KEY, "client_secret": DEFAULT_CLIENT_SECRET}

    revoked = form(tiktok, REVOKE, {**credentials, "token": user["access_token"]})
    [(headers, body)] = receiver.wait_for(1)

    assert (revoked.status, revoked.json()) == (200, {})
    assert error_code(add(tiktok, user["access_token"])) == (401, "access_token_invalid")
    assert refresh(tiktok, user["refresh_token"]).json()["error"] == "invalid_grant"
    assert tiktok.user(user["open_id"])["revoked"] is True
    assert verified(headers, body, DEFAULT_CLIENT_SECRET)
    document = json.loads(body)
    assert (document["event"], document["user_openid"]) == ("authorization.removed", user["open_id"])
    assert json.loads(document["content"]) == {"reason": 1}
    again = form(tiktok, REVOKE, {**credentials, "token": user["access_token"]})
    assert (again.status, again.json()["error"]) == (400, "invalid_request")
    wrong_app = form(tiktok, REVOKE, {**credentials, "client_secret": "nope", "token": "act.x"})
    assert (wrong_app.status, wrong_app.json()["error"]) == (401, "invalid_client")
    assert tiktok.stats()["calls"]["revoke"] == 3


def test_re_consent_after_revocation_gives_fresh_tokens(tiktok: Emulator) -> None:
    user = new_user(tiktok)
    tiktok.disconnect_user(user["open_id"], reason=5)

    again = tiktok.add_user(user["open_id"])
    SECRETS.tokens.update({again["access_token"], again["refresh_token"]})

    assert again["access_token"] != user["access_token"]
    assert add(tiktok, again["access_token"]).status == 200
    assert error_code(add(tiktok, user["access_token"])) == (401, "access_token_invalid")
    assert tiktok.user(user["open_id"])["revoked"] is False


# -- rate limits, stats, control ------------------------------------------------------------------------
def test_rate_limit_is_a_sliding_minute_per_endpoint(tiktok: Emulator) -> None:
    token = new_user(tiktok)["access_token"]
    request_id = added(tiktok, token)
    tiktok.set_rate_limit(3, "check")

    answers = [call(tiktok, CHECK, token, {"request_id": request_id}) for _ in range(4)]
    other_endpoint = call(tiktok, DOWNLOAD, token, {"request_id": request_id})

    assert [answer.status for answer in answers] == [200, 200, 200, 429]
    limited = answers[-1]
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.json()["error"]["http_status_code"] == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert error_code(other_endpoint) == (400, "invalid_params")  # pending: limited only per endpoint
    stats = tiktok.stats()
    assert (stats["calls"]["check"], stats["rate_limited"]["check"], stats["calls"]["add"]) == (4, 1, 1)
    tiktok.advance_clock(int(limited.headers["Retry-After"]))
    assert call(tiktok, CHECK, token, {"request_id": request_id}).status == 200


def test_rate_limit_on_oauth_has_oauths_shape(tiktok: Emulator) -> None:
    tiktok.set_rate_limit(0, "oauth")

    response = refresh(tiktok, "rft.whatever")

    assert response.status == 429
    assert response.json()["error"] == "rate_limit_exceeded"
    assert int(response.headers["Retry-After"]) >= 1


def test_reset_forgets_the_clock_limits_and_counts(tiktok: Emulator) -> None:
    before = time.time()
    advanced = tiktok.advance_clock(10 * DAY)
    tiktok.set_rate_limit(1)
    new_user(tiktok)

    tiktok.reset()

    assert advanced - before >= 10 * DAY
    assert abs(tiktok.clock() - time.time()) < 5
    stats = tiktok.stats()
    assert set(stats["calls"]) == {"add", "check", "cancel", "download", "oauth", "revoke"}
    assert not any(stats["calls"].values())
    assert set(stats["per_minute"].values()) == {1000}


def test_forced_states_follow_the_control_endpoint(tiktok: Emulator) -> None:
    user = new_user(tiktok, prepare_seconds=3600)
    token = user["access_token"]
    request_id = added(tiktok, token)

    states = []
    for status in ("downloading", "expired", "pending", "cancelled"):
        states.append(tiktok.set_request_state(request_id, status)["status"])
        states.append(check(tiktok, token, request_id)["status"])

    assert states == ["downloading"] * 2 + ["expired"] * 2 + ["pending"] * 2 + ["cancelled"] * 2
    record = tiktok.state(request_id)
    assert (record["owner"], record["checks"]) == (user["open_id"], 4)
    assert tiktok.user(user["open_id"])["requests"] == [str(request_id)]


# -- archive variants -----------------------------------------------------------------------------------
def download_archive(emulator: Emulator, archive: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    token = tokens.access_token()
    SECRETS.tokens.add(token)
    request_id = new_request_id()
    ready = emulator.register(request_id, token, archive=archive, transfer="length")
    response = call(emulator, DOWNLOAD, token, {"request_id": request_id})
    assert response.status == 200
    assert hashlib.sha256(response.data).hexdigest() == ready["sha256"]
    return ready, response.data


def test_many_entries_builds_a_zip64_archive_of_100000_entries_quickly(emulator: Emulator) -> None:
    started = time.monotonic()
    ready, data = download_archive(emulator, {"kind": "many_entries", "count": 100_000})
    elapsed = time.monotonic() - started

    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert len(names) == ready["entry_count"] == 100_000
    assert ready["entries"] == names[:1000]
    assert b"PK\x06\x06" in data[-200:]  # the ZIP64 end record
    assert b"PK\x06\x07" in data[-200:]  # and its locator
    assert len({name.split("/")[0] for name in names}) <= 6
    assert elapsed < 30


def test_hostile_names_open_with_zipfile_and_are_hostile(emulator: Emulator) -> None:
    ready, data = download_archive(emulator, {"kind": "hostile_names"})

    archive = zipfile.ZipFile(io.BytesIO(data))
    names = archive.namelist()
    assert names == ready["entries"]
    assert any(name.startswith("../") for name in names)
    assert any(name.startswith("/") for name in names)
    assert any("\\" in name for name in names)
    assert any("\x1b[31m" in name for name in names)
    assert any("\n" in name for name in names)
    assert "" in names
    assert max(len(name) for name in names) > 4096
    raw = [info for info in archive.infolist() if not info.flag_bits & 0x800 and not info.filename.isascii()]
    assert raw, "a name stored without the UTF-8 flag, not valid as UTF-8"
    with pytest.raises(UnicodeDecodeError):
        raw[0].filename.encode("cp437").decode("utf-8")
    bombs = [info for info in archive.infolist() if info.file_size >= 50 * 1024 * 1024]
    assert len(bombs) >= 2
    assert all(info.compress_size * 500 < info.file_size for info in bombs)
    assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in bombs)
    with archive.open(bombs[0]) as stream:
        assert stream.read(1024 * 1024) == bytes(1024 * 1024)


def test_big_central_directory_is_larger_than_a_mebibyte(emulator: Emulator) -> None:
    ready, data = download_archive(emulator, {"kind": "big_central_directory", "count": 3000})

    archive = zipfile.ZipFile(io.BytesIO(data))
    assert len(archive.namelist()) == ready["entry_count"] == 3000
    assert len(data) - archive.start_dir > 1024 * 1024
    assert archive.testzip() is None


def test_an_unknown_archive_kind_is_refused(emulator: Emulator, token: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        emulator.register(new_request_id(), token, archive={"kind": "tarball"})

    assert refused.value.code == 400


def test_added_requests_serve_the_users_archive(tiktok: Emulator) -> None:
    token = new_user(tiktok, prepare_seconds=0, archive={"kind": "many_entries", "count": 50})["access_token"]
    request_id = added(tiktok, token)

    response = call(tiktok, DOWNLOAD, token, {"request_id": request_id})

    assert response.status == 200
    assert len(zipfile.ZipFile(io.BytesIO(response.data)).namelist()) == 50
