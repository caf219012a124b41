"""Input validation: request ids, tokens and bodies, before anything is called."""

from __future__ import annotations

import json

import pytest

from tiktok_archive.models.download import (
    INT64_MAX,
    DownloadRequest,
    parse_access_token,
    parse_authorization_header,
    parse_json_object,
    parse_request_id,
    prefers_async,
)
from tiktok_archive.models.errors import InvalidRequestError, MissingTokenError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (1, 1),
        ("1", 1),
        (7234567890123456789, 7234567890123456789),
        ("9223372036854775807", INT64_MAX),
        (INT64_MAX, INT64_MAX),
        (json.loads("9007199254740993"), 9007199254740993),  # 2^53 + 1: a double would round it
    ],
)
def test_request_id_accepts_positive_int64_as_integer_or_decimal_string(given: object, expected: int) -> None:
    assert parse_request_id(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        None,
        0,
        -1,
        INT64_MAX + 1,
        "9223372036854775808",
        1.0,
        7.2345e18,
        True,
        False,
        "",
        "12a",
        " 12",
        "-5",
        "1e3",
        "0x10",
        [1],
        {"id": 1},
    ],
)
def test_request_id_rejects_everything_else(given: object) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        parse_request_id(given)
    assert raised.value.status == 400
    assert raised.value.error_code == "invalid_request"
    assert "request_id" in raised.value.message


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer act.abc123", "act.abc123"),
        ("bearer act.abc123", "act.abc123"),
        ("BEARER  act.x-y_z~/+=", "act.x-y_z~/+="),
    ],
)
def test_bearer_header_yields_the_token_unchanged(header: str, token: str) -> None:
    assert parse_authorization_header(header) == token


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "act.abc123", "Bearer a b", "Bearer a\r\nX: y"],
)
def test_missing_or_malformed_bearer_is_401(header: str | None) -> None:
    with pytest.raises(MissingTokenError) as raised:
        parse_authorization_header(header)
    assert raised.value.status == 401


def test_sqs_token_must_be_a_string_of_bearer_characters() -> None:
    assert parse_access_token("act.1234") == "act.1234"
    for bad in (None, "", 42, "act.12 34", "act.\n"):
        with pytest.raises(MissingTokenError):
            parse_access_token(bad)


@pytest.mark.parametrize("body", [None, "", "   ", "not json", "[1, 2]", '"text"', "{"])
def test_body_must_be_a_json_object(body: str | None) -> None:
    with pytest.raises(InvalidRequestError):
        parse_json_object(body)


def test_request_repr_never_shows_the_token() -> None:
    request = DownloadRequest(42, "act.very-secret-token")
    assert "very-secret" not in repr(request)
    assert "very-secret" not in str(request)
    assert "42" in repr(request)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("respond-async", True),
        ("Respond-Async", True),
        ("return=minimal, respond-async; foo=bar", True),
        ("respond-async, wait=10", True),
        ("wait=10", False),
        ("respond-asynchronously", False),
        ("", False),
        (None, False),
    ],
)
def test_prefer_header_asks_for_respond_async_among_other_preferences(
    header: str | None, expected: bool
) -> None:
    assert prefers_async(header) is expected
