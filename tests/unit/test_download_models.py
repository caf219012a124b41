"""Input validation: request ids, the caller, tokens in the body, pages and queue messages, before anything
is called."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import BACKEND, BACKEND_CALLER, OTHER, OTHER_CALLER
from tiktok_archive.models.caller import caller_of
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.errors import CallerNotIdentifiedError, InvalidRequestError, MissingTokenError
from tiktok_archive.models.inputs import (
    INT64_MAX,
    parse_access_token,
    parse_json_object,
    parse_request_id,
    prefers_async,
)
from tiktok_archive.models.messages import (
    ArchiveReadyWork,
    AuthorizationRemovedWork,
    EraseUser,
    LifecycleMessage,
    PurgeAgain,
    RevokeAtTikTok,
    StatusCheck,
    parse_lifecycle_message,
)
from tiktok_archive.models.paging import (
    DEFAULT_PAGE,
    MAX_PAGE,
    format_position,
    parse_page_size,
    parse_position,
)
from tiktok_archive.models.portability import HandedTokens, parse_handed_tokens, parse_new_request


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


def test_sqs_token_must_be_a_string_of_visible_ascii() -> None:
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


# -- the caller ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user_arn", "caller"),
    [
        (BACKEND, BACKEND_CALLER),
        (OTHER, OTHER_CALLER),
        (f"{BACKEND_CALLER}/i-0abc1234", BACKEND_CALLER),  # another session of the same role
        (
            "arn:aws-us-gov:sts::123456789012:assumed-role/Role/s",
            "arn:aws-us-gov:sts::123456789012:assumed-role/Role",
        ),
        ("arn:aws:iam::123456789012:user/ops/alice", "arn:aws:iam::123456789012:user/ops/alice"),
        ("arn:aws:iam::123456789012:root", "arn:aws:iam::123456789012:root"),
        ("arn:aws:sts::123456789012:federated-user/bob", "arn:aws:sts::123456789012:federated-user/bob"),
    ],
)
def test_the_caller_is_the_verified_principal_with_its_session_folded_away(
    user_arn: str, caller: str
) -> None:
    assert caller_of(user_arn) == caller
    assert caller_of(caller) == caller  # folding is stable: a folded caller names itself


@pytest.mark.parametrize(
    "user_arn",
    [
        None,
        "",
        42,
        "anonymous",
        "arn:aws:s3:::bucket",  # not a principal
        "arn:aws:sts::12345:assumed-role/Role/s",  # not a 12-digit account
        "arn:aws:sts::123456789012:assumed-role/Role/a session",  # a space
        "arn:aws:iam::123456789012:user/x" + "y" * 2048,  # too long
    ],
)
def test_an_event_without_a_verified_principal_is_403_caller_not_identified(user_arn: object) -> None:
    with pytest.raises(CallerNotIdentifiedError) as raised:
        caller_of(user_arn)
    assert (raised.value.status, raised.value.error_code) == (403, "caller_not_identified")


# -- the user's tokens in the body ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "handed"),
    [
        ({"access_token": "act.abc!1234.e1"}, HandedTokens("act.abc!1234.e1")),
        (
            {"access_token": "act.a", "refresh_token": "rft.b", "open_id": "openid-1"},
            HandedTokens("act.a", "rft.b", "openid-1"),
        ),
        ({"access_token": "act.a", "refresh_token": "rft.b"}, HandedTokens("act.a", "rft.b", None)),
        ({"access_token": "act.a", "request_id": "1"}, HandedTokens("act.a")),  # other fields: not looked at
    ],
)
def test_the_handed_tokens_come_from_the_body_as_given(body: dict[str, Any], handed: HandedTokens) -> None:
    assert parse_handed_tokens(body) == handed


def test_handed_tokens_never_show_in_their_repr() -> None:
    text = repr(parse_handed_tokens({"access_token": "act.secret-a", "refresh_token": "rft.secret-r"}))
    assert "secret" not in text


@pytest.mark.parametrize(
    "access_token",
    [None, "", 42, ["act.a"], "act.a b", "act.\n", "act.é", "a" * 2049],
)
def test_a_missing_or_malformed_access_token_is_400_missing_token(access_token: object) -> None:
    body = {} if access_token is None else {"access_token": access_token}
    with pytest.raises(MissingTokenError) as raised:
        parse_handed_tokens(body)
    assert (raised.value.status, raised.value.error_code) == (400, "missing_token")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"refresh_token": ""}, "refresh_token"),
        ({"refresh_token": 7}, "refresh_token"),
        ({"refresh_token": "rft.a b"}, "refresh_token"),
        ({"refresh_token": "r" * 2049}, "refresh_token"),
        ({"refresh_token": "rft.b", "open_id": ""}, "open_id"),
        ({"refresh_token": "rft.b", "open_id": "o" * 257}, "open_id"),
        ({"refresh_token": "rft.b", "open_id": ["openid-1"]}, "open_id"),
        ({"open_id": "openid-1"}, "open_id"),  # the caller's word alone: nothing to check it against
    ],
)
def test_a_malformed_refresh_token_or_a_lone_open_id_is_400_invalid_request(
    extra: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        parse_handed_tokens({"access_token": "act.a", **extra})
    assert raised.value.status == 400
    assert named in raised.value.message


def test_a_new_request_defaults_to_all_data_as_json() -> None:
    new = parse_new_request({"access_token": "act.a"})
    assert (new.tokens, new.data_format, new.categories) == (HandedTokens("act.a"), "json", ("all_data",))


def test_all_data_overrides_the_other_categories_as_tiktok_documents() -> None:
    new = parse_new_request(
        {"access_token": "act.a", "data_format": "text", "categories": ["video", "all_data"]}
    )
    assert (new.data_format, new.categories) == ("text", ("all_data",))


@pytest.mark.parametrize(
    "body",
    [
        {"access_token": "act.a", "token": "x"},  # an unknown field
        {"access_token": "act.a", "data_format": "xml"},
        {"access_token": "act.a", "categories": []},
        {"access_token": "act.a", "categories": "video"},
        {"access_token": "act.a", "categories": ["video", "video"]},
        {"access_token": "act.a", "categories": ["photos"]},
        {"access_token": "act.a", "categories": [1]},
        {"access_token": "act.a", "open_id": "openid-1"},
    ],
)
def test_a_new_request_out_of_range_is_400_invalid_request(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        parse_new_request(body)


def test_a_new_request_without_a_token_is_400_missing_token() -> None:
    with pytest.raises(MissingTokenError):
        parse_new_request({"data_format": "json"})


# -- pages -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("limit", "size"), [(None, DEFAULT_PAGE), ("1", 1), ("100", MAX_PAGE), ("007", 7)])
def test_a_page_holds_limit_items_or_twenty(limit: str | None, size: int) -> None:
    assert parse_page_size(limit) == size


@pytest.mark.parametrize("limit", ["", "0", "101", "-1", "1.5", " 5", "ten", "\u0661", "9" * 30])
def test_a_limit_out_of_range_is_400(limit: str) -> None:
    with pytest.raises(InvalidRequestError, match="limit"):
        parse_page_size(limit)


def test_a_next_token_stands_for_the_position_it_was_made_of() -> None:
    position = ("2026-03-01T12:00:00Z", 7_234_567_890_123_456_789)
    token = format_position(position)
    assert token is not None
    assert not set(token) & set("=/+")  # safe in a query string as it is
    assert parse_position(token) == position
    assert (format_position(None), parse_position(None)) == (None, None)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a token",
        "MjAyNi0wMy0wMVQxMjowMDowMFo",  # a time without a request id
        f"{format_position(('2026-03-01T12:00:00Z', 1))}{'A' * 80}",  # too long
        "2026-03-01T12:00:00Z/1",  # the position, not its token
        "é",
    ],
)
def test_a_next_that_this_api_did_not_give_is_400(token: str) -> None:
    with pytest.raises(InvalidRequestError, match="next"):
        parse_position(token)


# -- lifecycle queue messages --------------------------------------------------------------------
STARTED = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
MESSAGES: list[LifecycleMessage] = [
    StatusCheck(7_234_567_890_123_456_789, 3),
    ArchiveReadyWork(7_234_567_890_123_456_789),
    ArchiveReadyWork(7_234_567_890_123_456_789, "openid-1", "delivery-1"),
    AuthorizationRemovedWork("openid-1", 1, "delivery-2"),
    AuthorizationRemovedWork("openid-1", None),
    EraseUser(BACKEND_CALLER, "openid-1"),
    PurgeAgain("openid-1", None, 2, STARTED),
    PurgeAgain("openid-1", BACKEND_CALLER, None, STARTED),
    RevokeAtTikTok(BACKEND_CALLER, "openid-1", (7_234_567_890_123_456_789, 1)),
    RevokeAtTikTok(BACKEND_CALLER, "openid-1", ()),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_lifecycle_message_reads_back_as_it_was_sent(message: LifecycleMessage) -> None:
    # Given a message as its producer writes it on the queue (JSON); When the handler parses it;
    # Then it is the same message
    assert parse_lifecycle_message(json.loads(json.dumps(message.body()))) == message


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"kind": "nothing"},
        {"kind": "check", "request_id": "1", "seq": -1},
        {"kind": "check", "request_id": "1", "seq": True},
        {"kind": "check", "request_id": "0", "seq": 1},
        {"kind": "webhook", "event": "authorization.removed", "user_openid": ""},
        {"kind": "webhook", "event": "video.publish.completed", "request_id": "1"},
        {"kind": "erase", "caller": "", "open_id": "openid-1"},
        {"kind": "erase", "caller": BACKEND_CALLER, "open_id": "open id"},
        {"kind": "purge", "open_id": "openid-1", "started_at": "2026-03-01"},
        {"kind": "purge", "open_id": "openid-1", "started_at": None},
        {"kind": "purge", "open_id": "openid-1", "started_at": "2026-03-01T12:00:00Z", "caller": 5},
        {"kind": "revoke", "caller": BACKEND_CALLER, "open_id": "openid-1", "cancel": "1"},
        {"kind": "revoke", "caller": BACKEND_CALLER, "open_id": "openid-1", "cancel": ["x"]},
        {"kind": "revoke", "caller": BACKEND_CALLER, "open_id": "openid-1", "cancel": ["1"] * 1001},
    ],
)
def test_a_malformed_lifecycle_message_is_refused_for_good(document: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        parse_lifecycle_message(document)
    assert not raised.value.is_transient


def test_a_ready_webhook_naming_no_valid_user_still_queues_the_download() -> None:
    message = parse_lifecycle_message(
        {"kind": "webhook", "event": "portability.download.ready", "request_id": "5", "user_openid": ""}
    )
    assert message == ArchiveReadyWork(5, None, None)


@pytest.mark.parametrize("text", ["1" * 25, "9" * 10_000, "000" + "9" * 19])
def test_a_request_id_of_too_many_digits_is_out_of_range_not_malformed(text: str) -> None:
    # A decimal string of 25 (or 10,000) digits is a number, only too large
    with pytest.raises(InvalidRequestError, match="between 1 and 9223372036854775807"):
        parse_request_id(text)


def test_a_request_id_given_with_leading_zeros_is_the_same_id() -> None:
    assert parse_request_id("0007234567890123456789") == 7_234_567_890_123_456_789


@pytest.mark.parametrize("digits", [25, 4301, 10_000])
def test_a_huge_json_integer_is_out_of_range_not_invalid_json(digits: int) -> None:
    # Python reads at most 4,300 digits; the body is valid JSON all the same
    document = parse_json_object('{"request_id": ' + "7" * digits + "}")
    with pytest.raises(InvalidRequestError, match="between 1 and 9223372036854775807"):
        parse_request_id(document["request_id"])
