"""Properties that must hold for any input: parsers raise only the service's own errors, and the
scrubber removes any token however it is embedded in a log line."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiktok_archive.adapters.tiktok.transport import json_object
from tiktok_archive.models.download import (
    MAX_TOKEN_LENGTH,
    parse_access_token,
    parse_authorization_header,
    parse_json_object,
    parse_queued_job,
    parse_request_id,
    prefers_async,
)
from tiktok_archive.models.errors import TransferError
from tiktok_archive.observability import REDACTED, hide, redact_secrets

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

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
    except TransferError as error:
        assert error.status == 400  # noqa: PT017 - a property over any input
    else:
        assert isinstance(document, dict)


@PROPERTY
@given(json_values)
def test_request_id_parser_raises_only_the_services_errors(value: Any) -> None:
    try:
        request_id = parse_request_id(value)
    except TransferError as error:
        assert error.status == 400  # noqa: PT017 - a property over any input
    else:
        assert 0 < request_id < 2**63


@PROPERTY
@given(st.one_of(st.none(), st.text(), st.builds(lambda t: f"Bearer {t}", st.text())))
def test_authorization_parser_raises_only_the_services_errors(header: str | None) -> None:
    try:
        token = parse_authorization_header(header)
    except TransferError as error:
        assert error.status == 401  # noqa: PT017 - a property over any input
    else:
        assert 0 < len(token) <= MAX_TOKEN_LENGTH
        assert all(0x21 <= ord(c) <= 0x7E for c in token)


@PROPERTY
@given(json_values)
def test_queue_message_parser_raises_only_the_services_errors(document: Any) -> None:
    if not isinstance(document, dict):
        document = {"access_token": document}
    try:
        job = parse_queued_job(1, document)
    except TransferError as error:
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
    assert parse_authorization_header(f"Bearer {token}") == token


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
