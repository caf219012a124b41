"""The TikTok emulator is as strict as the documented endpoint, so tests that pass against it mean
something: a request_id that is not an exact JSON integer, or a token it does not know, is refused."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import urllib3

from tests.conftest import new_request_id
from tests.harness.local_stack import Emulator


def post(emulator: Emulator, body: str, token: str | None) -> urllib3.BaseHTTPResponse:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return urllib3.request("POST", emulator.url + "/v2/user/data/download/", body=body, headers=headers)


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
    assert len(error["log_id"]) == 34
