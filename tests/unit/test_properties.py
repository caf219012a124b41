"""Properties that must hold for any input: parsers raise only the service's own errors, what a producer
writes its parser reads back, and the scrubber removes any token however it is embedded in a log line."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiktok_archive.adapters.tiktok.transport import json_object
from tiktok_archive.models.caller import caller_of
from tiktok_archive.models.errors import (
    CallerNotIdentifiedError,
    InvalidRequestError,
    MissingTokenError,
    ServiceError,
)
from tiktok_archive.models.inputs import (
    MAX_TOKEN_LENGTH,
    parse_access_token,
    parse_json_object,
    parse_request_id,
    prefers_async,
)
from tiktok_archive.models.messages import (
    MAX_SEQ,
    ArchiveReadyWork,
    AuthorizationRemovedWork,
    EraseUser,
    LifecycleMessage,
    PurgeAgain,
    RevokeAtTikTok,
    StatusCheck,
    parse_download_job,
    parse_lifecycle_message,
)
from tiktok_archive.models.paging import MAX_PAGE, format_position, parse_page_size, parse_position
from tiktok_archive.models.portability import (
    CATEGORIES,
    DATA_FORMATS,
    HandedTokens,
    parse_handed_tokens,
    parse_new_request,
)
from tiktok_archive.observability import REDACTED, hide, redact_secrets

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The parsers of small documents (handed tokens, a caller, a page, a lifecycle message): fewer, cheaper
# examples keep the unit suite within its minute.
SMALL = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)
# Bodies a caller or a queue may send: JSON documents, their near misses, deep nesting, raw bytes.
bodies = st.one_of(
    st.none(),
    st.text(),
    st.binary(),
    json_values.map(json.dumps),
    st.integers(min_value=1, max_value=200_000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(min_value=1, max_value=200_000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
)

# TikTok's shapes (shared/reference): act. + letters, digits, _ and - then !NNNN.e1/.va/.e2; act.3. + b64url.
_BODY = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=60, max_size=100
)
_B64URL = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=80, max_size=180
)
tiktok_tokens = st.one_of(
    st.builds(
        lambda kind, body, digits, suffix: f"{kind}.{body}!{digits}{suffix}",
        st.sampled_from(["act", "rft"]),
        _BODY,
        st.integers(min_value=1000, max_value=9999),
        st.sampled_from([".e1", ".va", ".e2"]),
    ),
    st.builds(lambda kind, body: f"{kind}.3.{body}", st.sampled_from(["act", "rft"]), _B64URL),
)
visible_ascii_tokens = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=16, max_size=200)


def embeddings(token: str) -> list[str]:
    """The ways a token may reach a log line."""
    return [
        token,
        f"Authorization: Bearer {token}",
        f"\n{token} at a line start",
        f"token={token}&next=1",
        f"url?x=1%20{quote(token, safe='')}",
        f"Bearer%20{quote(token, safe='')}",
        f"form refresh_token={quote_plus(token)}&client_key=k",
        json.dumps({"message": f"failed with\n{token}", "nested": [token]}),
        json.dumps(f"escaped {token}"),
        repr((token, {"token": token})),
        f"'{token}'",
        f"({token})",
    ]


def secret_part(token: str) -> str:
    return token.split(".", 1)[1]


@PROPERTY
@given(bodies)
def test_json_body_parser_raises_only_the_services_errors(body: str | bytes | None) -> None:
    try:
        document = parse_json_object(body)
    except ServiceError as error:
        assert error.status == 400  # noqa: PT017 - a property over any input
    else:
        assert isinstance(document, dict)


@PROPERTY
@given(json_values)
def test_request_id_parser_raises_only_the_services_errors(value: Any) -> None:
    try:
        request_id = parse_request_id(value)
    except ServiceError as error:
        assert error.status == 400  # noqa: PT017 - a property over any input
    else:
        assert 0 < request_id < 2**63


# Bodies of POST /requests and POST /downloads: the known fields with any JSON value, or anything else.
_HANDOVER_VALUES = st.one_of(json_values, st.text(alphabet=[chr(c) for c in range(0x20, 0x80)], max_size=40))
handover_bodies = st.one_of(
    st.dictionaries(
        st.sampled_from(["access_token", "refresh_token", "open_id", "data_format", "categories", "other"]),
        st.one_of(
            _HANDOVER_VALUES,
            st.sampled_from(DATA_FORMATS),
            st.lists(st.sampled_from(CATEGORIES), max_size=4),
        ),
    ),
    st.dictionaries(st.text(), json_values, max_size=4),
)


def _visible_ascii(value: str, longest: int) -> bool:
    return 0 < len(value) <= longest and all(0x21 <= ord(c) <= 0x7E for c in value)


@SMALL
@given(handover_bodies)
def test_handed_tokens_parser_raises_only_the_services_errors(body: dict[str, Any]) -> None:
    try:
        handed = parse_handed_tokens(body)
    except (MissingTokenError, InvalidRequestError) as error:
        assert error.status == 400  # noqa: PT017 - a property over any input
    else:
        assert _visible_ascii(handed.access_token, MAX_TOKEN_LENGTH)
        assert handed.refresh_token is None or _visible_ascii(handed.refresh_token, MAX_TOKEN_LENGTH)
        # an open_id is only ever the caller's word next to a refresh token TikTok will name the user for
        assert handed.open_id is None or (
            handed.refresh_token is not None and _visible_ascii(handed.open_id, 256)
        )


@SMALL
@given(handover_bodies)
def test_new_request_parser_raises_only_the_services_errors(body: dict[str, Any]) -> None:
    try:
        new = parse_new_request(body)
    except (MissingTokenError, InvalidRequestError) as error:
        assert error.status == 400  # noqa: PT017 - a property over any input
    else:
        assert new.data_format in DATA_FORMATS
        assert new.categories
        assert set(new.categories) <= set(CATEGORIES)
        assert "all_data" not in new.categories or new.categories == ("all_data",)
        assert new.tokens == parse_handed_tokens(body)


@SMALL
@given(
    st.builds(
        lambda access, refresh, open_id: {
            "access_token": access,
            **({"refresh_token": refresh} if refresh else {}),
            **({"open_id": open_id} if refresh and open_id else {}),
        },
        visible_ascii_tokens,
        st.none() | visible_ascii_tokens,
        st.none() | st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=1, max_size=256),
    )
)
def test_any_well_formed_handover_is_taken_as_given(body: dict[str, str]) -> None:
    assert parse_handed_tokens(body) == HandedTokens(
        body["access_token"], body.get("refresh_token"), body.get("open_id")
    )


# -- the caller ------------------------------------------------------------------------------------
_ROLE_PART = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+=,.@-_", min_size=1, max_size=64
)
_ACCOUNT = st.text(alphabet="0123456789", min_size=12, max_size=12)
user_arns = st.one_of(
    st.none(),
    st.integers(),
    st.text(),
    st.builds(lambda rest: f"arn:aws:sts::123456789012:{rest}", st.text()),
    st.builds(
        lambda account, role, session: f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
        _ACCOUNT,
        _ROLE_PART,
        _ROLE_PART,
    ),
)


@SMALL
@given(user_arns)
def test_caller_parser_raises_only_caller_not_identified(user_arn: object) -> None:
    try:
        caller = caller_of(user_arn)
    except CallerNotIdentifiedError as error:
        assert error.status == 403  # noqa: PT017 - a property over any input
    else:
        assert isinstance(user_arn, str)
        assert user_arn.startswith(caller)
        assert caller_of(caller) == caller


@SMALL
@given(_ACCOUNT, _ROLE_PART, _ROLE_PART, _ROLE_PART)
def test_two_sessions_of_one_role_are_one_caller_and_two_roles_are_two(
    account: str, role: str, session: str, other_session: str
) -> None:
    prefix = f"arn:aws:sts::{account}:assumed-role"
    caller = caller_of(f"{prefix}/{role}/{session}")
    assert caller == caller_of(f"{prefix}/{role}/{other_session}") == f"{prefix}/{role}"
    assert caller != caller_of(f"{prefix}/{role}x/{session}")


# -- pages -----------------------------------------------------------------------------------------
@SMALL
@given(st.none() | st.text(max_size=30))
def test_page_size_parser_raises_only_invalid_request(limit: str | None) -> None:
    try:
        size = parse_page_size(limit)
    except InvalidRequestError as error:
        assert error.status == 400  # noqa: PT017 - a property over any input
    else:
        assert 1 <= size <= MAX_PAGE


@SMALL
@given(
    st.none()
    | st.text(max_size=120)
    | st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode())
)
def test_next_parser_raises_only_invalid_request(token: str | None) -> None:
    try:
        parse_position(token)
    except InvalidRequestError as error:
        assert error.status == 400  # noqa: PT017 - a property over any input


@SMALL
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(9999, 12, 31)),
    st.integers(min_value=1, max_value=2**63 - 1),
)
def test_every_next_token_reads_back_as_its_position(moment: datetime, request_id: int) -> None:
    position = (moment.strftime("%Y-%m-%dT%H:%M:%SZ"), request_id)
    token = format_position(position)
    assert token is not None
    assert parse_position(token) == position


# -- the lifecycle queue's messages ----------------------------------------------------------------
_IDS = st.integers(min_value=1, max_value=2**63 - 1)
_OPEN_IDS = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=1, max_size=256)
_CALLERS = st.text(min_size=1, max_size=2048)
_REASONS = st.none() | st.integers(min_value=-(2**63 - 1), max_value=2**63 - 1)
_MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))
lifecycle_messages: st.SearchStrategy[LifecycleMessage] = st.one_of(
    st.builds(StatusCheck, _IDS, st.integers(min_value=0, max_value=MAX_SEQ)),
    st.builds(ArchiveReadyWork, _IDS, st.none() | _OPEN_IDS, st.none() | st.text()),
    st.builds(AuthorizationRemovedWork, _OPEN_IDS, _REASONS, st.none() | st.text()),
    st.builds(EraseUser, _CALLERS, _OPEN_IDS),
    st.builds(PurgeAgain, _OPEN_IDS, st.none() | _CALLERS, _REASONS, _MOMENTS),
    st.builds(RevokeAtTikTok, _CALLERS, _OPEN_IDS, st.lists(_IDS, max_size=20).map(tuple)),
)


@SMALL
@given(lifecycle_messages)
def test_every_lifecycle_message_reads_back_as_its_producer_wrote_it(message: LifecycleMessage) -> None:
    # What LifecycleQueue.send puts on the queue, and what the lifecycle handler reads from it
    assert parse_lifecycle_message(parse_json_object(json.dumps(message.body()))) == message


@SMALL
@given(
    st.one_of(
        st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "kind",
                    "request_id",
                    "seq",
                    "event",
                    "user_openid",
                    "reason",
                    "delivery_id",
                    "caller",
                    "open_id",
                    "started_at",
                    "cancel",
                ]
            ),
            st.one_of(
                st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                st.sampled_from(
                    [
                        "check",
                        "webhook",
                        "erase",
                        "purge",
                        "revoke",
                        "portability.download.ready",
                        "authorization.removed",
                        "2026-03-01T12:00:00Z",
                        "openid-1",
                        "7",
                    ]
                ),
                st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
            ),
        ),
    )
)
def test_lifecycle_message_parser_raises_only_invalid_request(document: dict[str, Any]) -> None:
    try:
        parse_lifecycle_message(document)
    except InvalidRequestError as error:
        assert not error.is_transient  # noqa: PT017 - a property over any input


@PROPERTY
@given(json_values)
def test_queue_message_parser_raises_only_the_services_errors(document: Any) -> None:
    if not isinstance(document, dict):
        document = {"access_token": document}
    try:
        job = parse_download_job(1, document)
    except ServiceError as error:
        assert not error.is_transient  # noqa: PT017 - a property over any input
    else:
        assert job.access_token or job.encrypted_access_token


@PROPERTY
@given(st.one_of(st.none(), st.text()))
def test_prefer_parser_never_raises(header: str | None) -> None:
    assert prefers_async(header) in (True, False)


@PROPERTY
@given(bodies)
def test_tiktok_answer_parser_never_raises(body: str | bytes | None) -> None:
    raw = body.encode() if isinstance(body, str) else (body or b"")
    document = json_object(raw)
    assert document is None or isinstance(document, dict)


@PROPERTY
@given(tiktok_tokens)
def test_every_tiktok_shaped_token_is_accepted_as_it_is(token: str) -> None:
    assert parse_access_token(token) == token
    assert parse_handed_tokens({"access_token": token, "refresh_token": token}) == HandedTokens(token, token)


@PROPERTY
@given(tiktok_tokens, st.sampled_from(range(12)))
def test_scrubber_removes_any_tiktok_shaped_token_by_its_shape(token: str, where: int) -> None:
    # Not registered with hide(): recognised by its shape alone.
    text = embeddings(token)[where]
    cleaned = redact_secrets(text)
    assert secret_part(token) not in cleaned
    assert quote(secret_part(token), safe="") not in cleaned
    assert REDACTED in cleaned


@PROPERTY
@given(visible_ascii_tokens, st.sampled_from(range(12)))
def test_scrubber_removes_any_registered_token_however_embedded(token: str, where: int) -> None:
    # Any visible ASCII is a valid token; once registered, every spelling of it goes.
    hide(token)
    text = embeddings(token)[where]
    cleaned = redact_secrets(text)
    assert token not in cleaned
    assert quote(token, safe="") not in cleaned
    assert json.dumps(token)[1:-1] not in cleaned


@PROPERTY
@given(visible_ascii_tokens)
def test_scrubber_removes_the_base64_of_a_registered_token(token: str) -> None:
    # What a DEBUG line of botocore would hold for a KMS Encrypt request: the plaintext in base64.
    hide(token)
    line = json.dumps({"KeyId": "k", "Plaintext": base64.b64encode(token.encode()).decode()})
    assert base64.b64encode(token.encode()).decode().rstrip("=") not in redact_secrets(line)


@pytest.mark.parametrize(
    "text",
    [
        "contact.example.org and exact.science stay",
        "the request_id 7234567890123456789 and status downloading",
        "X-Amz-Expires=3600&X-Amz-Date=20261128T000000Z",
    ],
)
def test_scrubber_leaves_ordinary_text_alone(text: str) -> None:
    assert redact_secrets(text) == text
