"""TikTok webhook deliveries: the body as received, the signature over it, and the event it carries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiktok_archive.models import webhook_signature
from tiktok_archive.models.errors import AppCredentialsError
from tiktok_archive.models.inputs import INT64_MAX
from tiktok_archive.models.webhook import (
    AUTHORIZATION_REMOVED,
    DOWNLOAD_READY,
    AuthorizationRemoved,
    DownloadReady,
    OtherEvent,
    parse_delivery,
)
from tiktok_archive.models.webhook_errors import (
    UnknownClientKeyError,
    WebhookPayloadError,
    WebhookSignatureError,
    WebhookSignatureMismatchError,
    WebhookTooLargeError,
)
from tiktok_archive.models.webhook_signature import MAX_BODY_BYTES, raw_body, verify_signature

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SECRET = "test-client-secret-0123456789"
CLIENT_KEY = "awtestclientkey"
NOW = 1_760_000_000
REQUEST_ID = 7234567890123456789
OPENID = "723f24d7-e717-40f8-a2b6-cb8464cd23b4"


def sign(client_secret: str, timestamp: int, raw: bytes) -> str:
    """The ``TikTok-Signature`` value TikTok would send with ``raw`` at ``timestamp``: ``t=…,s=<hex>``."""
    digest = hmac.new(client_secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={timestamp},s={digest}"


def delivery_body(
    event: str, user_openid: str | None, content: dict[str, Any], client_key: str, create_time: int
) -> bytes:
    """A delivery body as TikTok documents it; ``user_openid`` None leaves the field out, like the
    documented example; ``content`` is a JSON document serialised as a string."""
    document: dict[str, Any] = {"client_key": client_key, "event": event, "create_time": create_time}
    if user_openid is not None:
        document["user_openid"] = user_openid
    document["content"] = json.dumps(content)
    return json.dumps(document).encode("utf-8")


def ready_body(content: dict[str, Any] | None = None, user_openid: str | None = OPENID) -> bytes:
    return delivery_body(
        DOWNLOAD_READY,
        user_openid,
        {"request_id": REQUEST_ID} if content is None else content,
        CLIENT_KEY,
        NOW - 5,
    )


def envelope(**fields: Any) -> bytes:
    """A body with the documented fields, any of them replaced (or removed with ``None``)."""
    document: dict[str, Any] = {
        "client_key": CLIENT_KEY,
        "event": DOWNLOAD_READY,
        "create_time": NOW - 5,
        "user_openid": OPENID,
        "content": json.dumps({"request_id": REQUEST_ID}),
    }
    document.update(fields)
    return json.dumps({name: value for name, value in document.items() if value is not None}).encode()


def signature_of(header: str) -> str:
    return header.split(",s=")[1]


# -- verify_signature ----------------------------------------------------------------------------
def test_a_valid_signature_is_accepted_and_returns_its_timestamp() -> None:
    body = ready_body()
    assert verify_signature(sign(SECRET, NOW, body), body, SECRET, now=NOW) == NOW


def test_the_signed_string_is_the_timestamp_a_dot_and_the_body_bytes() -> None:
    body = b'{"a": 1}\n'
    # The documented construction, spelled out independently of the module.
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, body) == f"t={NOW},s={expected}"


@pytest.mark.parametrize("position", [0, 1, 17, -2, -1])
def test_a_body_changed_by_one_byte_anywhere_is_refused(position: int) -> None:
    body = ready_body() + b"\n"
    header = sign(SECRET, NOW, body)
    changed = bytearray(body)
    changed[position] ^= 0x01
    with pytest.raises(WebhookSignatureMismatchError) as raised:
        verify_signature(header, bytes(changed), SECRET, now=NOW)
    assert raised.value.error_code == "invalid_signature"
    assert raised.value.status == 401
    assert not raised.value.is_transient


@pytest.mark.parametrize("body", [b'{"a": 1}', b'{"a": 1}\n\n', b'{"a": 1} '])
def test_a_trailing_newline_added_or_removed_is_refused(body: bytes) -> None:
    header = sign(SECRET, NOW, b'{"a": 1}\n')
    with pytest.raises(WebhookSignatureMismatchError):
        verify_signature(header, body, SECRET, now=NOW)


def test_a_signature_made_with_another_key_is_refused() -> None:
    body = ready_body()
    with pytest.raises(WebhookSignatureMismatchError, match="does not match the body"):
        verify_signature(sign("another-secret", NOW, body), body, SECRET, now=NOW)


@pytest.mark.parametrize(("offset", "why"), [(-301, "s old"), (301, "in the future")])
def test_a_timestamp_beyond_the_tolerance_is_refused_before_any_hmac(
    offset: int, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = ready_body()
    header = sign(SECRET, NOW + offset, body)
    monkeypatch.setattr(webhook_signature, "_hmac", _must_not_be_called)
    with pytest.raises(WebhookSignatureError, match=why) as raised:
        verify_signature(header, body, SECRET, now=NOW)
    assert type(raised.value) is WebhookSignatureError


@pytest.mark.parametrize("offset", [-300, -299, 0, 299, 300])
def test_a_timestamp_within_the_tolerance_is_accepted(offset: int) -> None:
    body = ready_body()
    assert verify_signature(sign(SECRET, NOW + offset, body), body, SECRET, now=NOW) == NOW + offset


def test_the_tolerance_is_the_callers_choice() -> None:
    body = ready_body()
    header = sign(SECRET, NOW - 60, body)
    assert verify_signature(header, body, SECRET, now=NOW, tolerance_seconds=60) == NOW - 60
    with pytest.raises(WebhookSignatureError, match="more than 59 s old"):
        verify_signature(header, body, SECRET, now=NOW, tolerance_seconds=59)


@pytest.mark.parametrize("header", [None, "", "   ", "\t"])
def test_a_missing_or_empty_header_is_refused(header: str | None) -> None:
    with pytest.raises(WebhookSignatureError, match="is missing"):
        verify_signature(header, b"{}", SECRET, now=NOW)


def _good_fields() -> tuple[str, str]:
    header = sign(SECRET, NOW, ready_body())
    t, s = header.split(",")
    return t, s


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda t, s: f"{t},{s},v=1", "other than t and s"),
        (lambda t, s: f"{t},{s},x", "not name=value"),
        (lambda t, s: f"{t},{s},", "not name=value"),
        (lambda t, s: f",{t},{s}", "not name=value"),
        (lambda t, s: f"{t},,{s}", "not name=value"),
        (lambda t, s: f"{t},{s},{s}", "s is given twice"),
        (lambda t, s: f"{t},{s},s={'0' * 64}", "s is given twice"),
        (lambda t, s: f"{t},{t},{s}", "t is given twice"),
        (lambda t, s: t, "s is missing"),
        (lambda t, s: s, "t is missing"),
        (lambda t, s: f"{t};{s}", "s is missing"),
        (lambda t, s: f"T{t[1:]},{s}", "other than t and s"),
        (lambda t, s: f"t ={t[2:]},{s}", "other than t and s"),
        (lambda t, s: f"{t},{s}".replace("t=", "v1="), "other than t and s"),
    ],
)
def test_a_header_that_is_not_exactly_t_and_s_is_refused(make: Any, why: str) -> None:
    t, s = _good_fields()
    with pytest.raises(WebhookSignatureError, match=why):
        verify_signature(make(t, s), ready_body(), SECRET, now=NOW)


@pytest.mark.parametrize(
    "make",
    [
        lambda t, s: f"t= {t[2:]},{s}",
        lambda t, s: f"{t} 0,{s}",
        lambda t, s: f"t=+{t[2:]},{s}",
        lambda t, s: f"t=-{t[2:]},{s}",
        lambda t, s: f"t={t[2:]}.0,{s}",
        lambda t, s: f"t=,{s}",
        lambda t, s: f"t={'1' * 13},{s}",
        lambda t, s: f"t=١٧٦٠٠٠٠٠٠٠,{s}",  # Arabic-Indic digits: str.isdigit() would say yes
        lambda t, s: f"t={t[2:]}\n,{s}",
    ],
)
def test_a_timestamp_that_is_not_ascii_decimal_digits_is_refused(make: Any) -> None:
    t, s = _good_fields()
    with pytest.raises(WebhookSignatureError, match="decimal digits"):
        verify_signature(make(t, s), ready_body(), SECRET, now=NOW)


@pytest.mark.parametrize(
    "make",
    [
        lambda t, s: f"{t},{s[:-1]}",
        lambda t, s: f"{t},{s}0",
        lambda t, s: f"{t},s=",
        lambda t, s: f"{t},{s[:-1]}g",
        lambda t, s: f"{t},s= {s[3:]}",
        lambda t, s: f"{t},{s[:20]} {s[21:]}",
        lambda t, s: f"{t},s=0x{s[4:]}",
        lambda t, s: f"{t},s={base64.b64encode(bytes.fromhex(s[2:])).decode()}",
    ],
)
def test_a_signature_that_is_not_64_hex_digits_is_refused(make: Any) -> None:
    t, s = _good_fields()
    with pytest.raises(WebhookSignatureError, match="64 hexadecimal digits"):
        verify_signature(make(t, s), ready_body(), SECRET, now=NOW)


def test_uppercase_hex_is_accepted() -> None:
    body = ready_body()
    header = sign(SECRET, NOW, body)
    assert verify_signature(
        header.replace(signature_of(header), signature_of(header).upper()), body, SECRET, now=NOW
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda t, s: f"{s},{t}",
        lambda t, s: f"{t}, {s}",
        lambda t, s: f"{t} ,\t{s}",
        lambda t, s: f"  {t},{s}\t",
    ],
)
def test_either_order_and_whitespace_around_the_comma_are_tolerated(make: Any) -> None:
    t, s = _good_fields()
    assert verify_signature(make(t, s), ready_body(), SECRET, now=NOW) == NOW


def test_a_refusal_never_echoes_the_header_or_the_secret() -> None:
    body = ready_body()
    good = sign(SECRET, NOW, body)
    for header in [good + ",x=1", sign("wrong-secret", NOW, body), sign(SECRET, NOW - 999, body)]:
        with pytest.raises(WebhookSignatureError) as raised:
            verify_signature(header, body + b" ", SECRET, now=NOW)
        text = json.dumps(
            [raised.value.message, raised.value.to_body(), raised.value.log_fields(), str(raised.value)]
        )
        assert SECRET not in text
        assert signature_of(header)[:16] not in text
        assert str(NOW) not in text


def test_an_empty_client_secret_refuses_every_delivery_as_a_configuration_fault() -> None:
    body = ready_body()
    with pytest.raises(AppCredentialsError) as raised:
        verify_signature(sign("", NOW, body), body, "", now=NOW)
    assert raised.value.is_transient


# -- raw_body ------------------------------------------------------------------------------------
def test_a_base64_body_is_verified_on_its_decoded_bytes() -> None:
    body = ready_body() + b"\n"
    event_body = base64.b64encode(body).decode()
    assert raw_body(event_body, is_base64_encoded=True) == body
    header = sign(SECRET, NOW, body)
    assert verify_signature(header, raw_body(event_body, is_base64_encoded=True), SECRET, now=NOW) == NOW
    with pytest.raises(WebhookSignatureMismatchError):
        verify_signature(header, event_body.encode(), SECRET, now=NOW)


def test_a_text_body_is_its_utf8_bytes() -> None:
    text = '{"user_openid": "é", "content": "{\\"x\\": \\"✓\\"}"}'
    assert raw_body(text, is_base64_encoded=False) == text.encode("utf-8")


def test_no_body_is_empty_bytes_which_no_delivery_parses_from() -> None:
    assert raw_body(None, is_base64_encoded=False) == b""
    with pytest.raises(WebhookPayloadError):
        parse_delivery(b"", client_key=CLIENT_KEY)


@pytest.mark.parametrize("text", ["not base64!", "YQ", "YQ==\n", "YQ= =", "é"])
def test_invalid_base64_is_refused(text: str) -> None:
    with pytest.raises(WebhookPayloadError) as raised:
        raw_body(text, is_base64_encoded=True)
    assert (raised.value.error_code, raised.value.status) == ("invalid_webhook", 400)


def test_text_that_utf8_cannot_encode_is_refused() -> None:
    with pytest.raises(WebhookPayloadError):
        raw_body('{"a": "\ud800"}', is_base64_encoded=False)


@pytest.mark.parametrize("is_base64_encoded", [False, True])
def test_a_body_of_exactly_64_kib_is_accepted(is_base64_encoded: bool) -> None:
    body = b"x" * MAX_BODY_BYTES
    event_body = base64.b64encode(body).decode() if is_base64_encoded else body.decode()
    assert raw_body(event_body, is_base64_encoded) == body


@pytest.mark.parametrize("is_base64_encoded", [False, True])
def test_a_body_over_64_kib_is_refused_before_it_is_decoded_or_hashed(
    is_base64_encoded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"x" * (10 * MAX_BODY_BYTES)
    event_body = base64.b64encode(body).decode() if is_base64_encoded else body.decode()
    # Given decoding, encoding and HMAC that fail if used
    monkeypatch.setattr(webhook_signature.base64, "b64decode", _must_not_be_called)
    monkeypatch.setattr(webhook_signature, "_hmac", _must_not_be_called)
    # When the handler's first step runs on the event, Then it refuses with 413 and nothing else ran
    with pytest.raises(WebhookTooLargeError) as raised:
        raw_body(event_body, is_base64_encoded)
    assert (raised.value.error_code, raised.value.status, raised.value.is_transient) == (
        "webhook_too_large",
        413,
        False,
    )


@pytest.mark.parametrize(
    ("event_body", "is_base64_encoded"),
    [
        ("é" * (MAX_BODY_BYTES // 2 + 1), False),  # few characters, too many UTF-8 bytes
        (base64.b64encode(b"x" * (MAX_BODY_BYTES + 1)).decode(), True),  # just past, within the padding slack
    ],
)
def test_a_body_over_64_kib_once_encoded_or_decoded_is_refused(
    event_body: str, is_base64_encoded: bool
) -> None:
    with pytest.raises(WebhookTooLargeError):
        raw_body(event_body, is_base64_encoded)


def test_max_bytes_is_the_callers_choice() -> None:
    assert raw_body("1234", is_base64_encoded=False, max_bytes=4) == b"1234"
    with pytest.raises(WebhookTooLargeError):
        raw_body("12345", is_base64_encoded=False, max_bytes=4)


# -- parse_delivery ------------------------------------------------------------------------------
@pytest.mark.parametrize("request_id", [REQUEST_ID, str(REQUEST_ID)])
def test_download_ready_reads_request_id_as_integer_or_decimal_string(request_id: int | str) -> None:
    body = ready_body({"request_id": request_id})
    assert parse_delivery(body, client_key=CLIENT_KEY) == DownloadReady(
        request_id=REQUEST_ID,
        user_openid=OPENID,
        create_time=NOW - 5,
        delivery_id=hashlib.sha256(body).hexdigest(),
    )


@pytest.mark.parametrize("request_id", [INT64_MAX, str(INT64_MAX)])
def test_request_id_2_63_minus_1_is_read_exactly(request_id: int | str) -> None:
    event = parse_delivery(ready_body({"request_id": request_id}), client_key=CLIENT_KEY)
    assert isinstance(event, DownloadReady)
    assert event.request_id == INT64_MAX


def test_request_id_past_2_53_is_never_rounded_through_a_float() -> None:
    # The content exactly as documented: a JSON integer inside a JSON string.
    body = envelope(content='{"request_id": 9007199254740993}')
    event = parse_delivery(body, client_key=CLIENT_KEY)
    assert isinstance(event, DownloadReady)
    assert event.request_id == 9007199254740993


@pytest.mark.parametrize(
    "content",
    [
        '{"request_id": 9223372036854775808}',
        '{"request_id": "9223372036854775808"}',
        '{"request_id": 7234567890123456789.0}',
        '{"request_id": 7.234567890123456789e18}',
        '{"request_id": 0}',
        '{"request_id": -1}',
        '{"request_id": true}',
        '{"request_id": " 1"}',
        '{"request_id": null}',
        '{"request_id": NaN}',
        '{"request_id": Infinity}',
        "{}",
        "[1]",
        "not json",
        "",
        '{"request_id": 1, "request_id": 2}',
    ],
)
def test_download_ready_without_an_exact_int64_request_id_is_refused(content: str) -> None:
    with pytest.raises(WebhookPayloadError) as raised:
        parse_delivery(envelope(content=content), client_key=CLIENT_KEY)
    assert (raised.value.error_code, raised.value.status) == ("invalid_webhook", 400)


@pytest.mark.parametrize("content", [None, 7, ["request_id"]])
def test_download_ready_without_a_content_document_is_refused(content: object) -> None:
    with pytest.raises(WebhookPayloadError):
        parse_delivery(envelope(content=content), client_key=CLIENT_KEY)


def test_content_given_as_an_object_instead_of_a_string_is_tolerated() -> None:
    event = parse_delivery(envelope(content={"request_id": REQUEST_ID}), client_key=CLIENT_KEY)
    assert isinstance(event, DownloadReady)
    assert event.request_id == REQUEST_ID


@pytest.mark.parametrize(
    "body", [envelope(user_openid=None), envelope(user_openid=""), ready_body(user_openid=None)]
)
def test_download_ready_without_user_openid_is_accepted(body: bytes) -> None:
    event = parse_delivery(body, client_key=CLIENT_KEY)
    assert isinstance(event, DownloadReady)
    assert event.user_openid is None
    assert event.request_id == REQUEST_ID


def test_authorization_removed_names_the_user_and_the_reason() -> None:
    body = delivery_body(AUTHORIZATION_REMOVED, OPENID, {"reason": 1}, CLIENT_KEY, NOW)
    assert parse_delivery(body, client_key=CLIENT_KEY) == AuthorizationRemoved(
        user_openid=OPENID, reason=1, create_time=NOW, delivery_id=hashlib.sha256(body).hexdigest()
    )


@pytest.mark.parametrize(
    ("content", "reason"), [(None, None), ("", None), ("{}", None), ('{"reason": 9}', 9)]
)
def test_authorization_removed_is_acted_on_whatever_its_reason(
    content: str | None, reason: int | None
) -> None:
    body = envelope(event=AUTHORIZATION_REMOVED, content=content)
    event = parse_delivery(body, client_key=CLIENT_KEY)
    assert isinstance(event, AuthorizationRemoved)
    assert (event.user_openid, event.reason) == (OPENID, reason)


@pytest.mark.parametrize("content", ['{"reason": "1"}', '{"reason": true}', '{"reason": 1.0}', "[]", "oops"])
def test_authorization_removed_with_a_malformed_reason_is_refused(content: str) -> None:
    with pytest.raises(WebhookPayloadError):
        parse_delivery(envelope(event=AUTHORIZATION_REMOVED, content=content), client_key=CLIENT_KEY)


@pytest.mark.parametrize("user_openid", [None, ""])
def test_authorization_removed_without_user_openid_is_refused(user_openid: str | None) -> None:
    body = envelope(event=AUTHORIZATION_REMOVED, user_openid=user_openid, content='{"reason": 0}')
    with pytest.raises(WebhookPayloadError, match="user_openid"):
        parse_delivery(body, client_key=CLIENT_KEY)


def test_an_unknown_event_is_read_as_other_event_without_its_content() -> None:
    body = envelope(event="video.publish.completed", content='{"not": "read"')
    assert parse_delivery(body, client_key=CLIENT_KEY) == OtherEvent(
        event="video.publish.completed",
        user_openid=OPENID,
        create_time=NOW - 5,
        delivery_id=hashlib.sha256(body).hexdigest(),
    )


def test_another_apps_client_key_is_refused_as_unauthorised() -> None:
    with pytest.raises(UnknownClientKeyError) as raised:
        parse_delivery(envelope(client_key="someoneelse"), client_key=CLIENT_KEY)
    assert isinstance(raised.value, WebhookSignatureError)
    assert (raised.value.error_code, raised.value.status, raised.value.is_transient) == (
        "unknown_client_key",
        401,
        False,
    )
    assert "someoneelse" not in raised.value.message


@pytest.mark.parametrize(
    "body",
    [
        envelope(client_key=None),
        envelope(client_key=7),
        envelope(event=None),
        envelope(event=""),
        envelope(event="x" * 129),
        envelope(event="has space"),
        envelope(create_time=None),
        envelope(create_time=str(NOW)),
        envelope(create_time=float(NOW)),
        envelope(create_time=True),
        envelope(create_time=-1),
        envelope(user_openid=7),
        envelope(user_openid="a b"),
        envelope(user_openid="x" * 257),
        b"[]",
        b'"a string"',
        b"\xff\xfe{}",
        b"\xef\xbb\xbf" + envelope(),  # a UTF-8 byte order mark
        envelope().replace(b'"event"', b'"client_key": "x", "event"', 1),  # a repeated key
        envelope().decode().encode("utf-16"),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
)
def test_a_malformed_envelope_is_refused(body: bytes) -> None:
    with pytest.raises(WebhookPayloadError):
        parse_delivery(body, client_key=CLIENT_KEY)


def test_deeply_nested_content_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(WebhookPayloadError, match="nested too deeply"):
        parse_delivery(envelope(content="[" * 100_000 + "]" * 100_000), client_key=CLIENT_KEY)


def test_a_redelivery_has_the_same_delivery_id_whatever_its_signature() -> None:
    body = ready_body()
    first = parse_delivery(body, client_key=CLIENT_KEY)
    verify_signature(sign(SECRET, NOW, body), body, SECRET, now=NOW)
    verify_signature(sign(SECRET, NOW + 60, body), body, SECRET, now=NOW + 60)
    again = parse_delivery(body, client_key=CLIENT_KEY)
    assert first.delivery_id == again.delivery_id
    other = parse_delivery(ready_body({"request_id": REQUEST_ID + 1}), client_key=CLIENT_KEY)
    assert other.delivery_id != first.delivery_id


def test_delivery_body_matches_the_documented_shape() -> None:
    document = json.loads(delivery_body(DOWNLOAD_READY, None, {"request_id": REQUEST_ID}, CLIENT_KEY, NOW))
    assert document == {
        "client_key": CLIENT_KEY,
        "event": DOWNLOAD_READY,
        "create_time": NOW,
        "content": f'{{"request_id": {REQUEST_ID}}}',
    }


def test_a_signed_delivery_flows_through_all_three_steps() -> None:
    # Given the event API Gateway makes of TikTok's delivery
    body = ready_body()
    event = {
        "body": body.decode(),
        "isBase64Encoded": False,
        "headers": {"TikTok-Signature": sign(SECRET, NOW, body)},
    }
    # When it is read, verified and parsed
    raw = raw_body(event["body"], event["isBase64Encoded"])
    verify_signature(event["headers"]["TikTok-Signature"], raw, SECRET, now=NOW + 1.5)
    # Then the download is ready
    assert parse_delivery(raw, client_key=CLIENT_KEY) == DownloadReady(
        REQUEST_ID, OPENID, NOW - 5, hashlib.sha256(body).hexdigest()
    )


# -- properties ----------------------------------------------------------------------------------
def _must_not_be_called(*_args: object, **_kwargs: object) -> bytes:
    raise AssertionError("called, but should not have been")


_HEX = "0123456789abcdefABCDEF"
headers = st.one_of(
    st.none(),
    st.text(),
    st.text(alphabet="ts=,0123456789abcdefABCDEF \t\n-+.;"),
    st.builds(
        lambda t, s, sep: f"t={t}{sep}s={s}",
        st.text(alphabet="0123456789 -+", max_size=14),
        st.text(alphabet=_HEX + "g ", min_size=60, max_size=68),
        st.sampled_from([",", ", ", " ,", ";", ",,", ""]),
    ),
    st.builds(
        lambda t, s: f"t={t},s={s}",
        st.integers(min_value=NOW - 400, max_value=NOW + 400),
        st.text(alphabet=_HEX, min_size=64, max_size=64),
    ),
    st.integers(min_value=0, max_value=10**30).map(lambda t: f"t={t},s={'a' * 64}"),
)


@PROPERTY
@given(headers, st.binary(max_size=256))
def test_any_header_yields_a_timestamp_or_a_signature_refusal(header: str | None, body: bytes) -> None:
    try:
        timestamp = verify_signature(header, body, SECRET, now=NOW)
    except WebhookSignatureError as error:
        assert error.status == 401  # noqa: PT017 - a property over any input
        assert SECRET not in error.message  # noqa: PT017
    else:
        assert abs(timestamp - NOW) <= 300


@PROPERTY
@given(st.binary(max_size=2048), st.integers(min_value=0, max_value=10**11), st.text(min_size=1))
def test_sign_then_verify_round_trips_for_any_body(body: bytes, timestamp: int, secret: str) -> None:
    assert verify_signature(sign(secret, timestamp, body), body, secret, now=timestamp) == timestamp
    with pytest.raises(WebhookSignatureMismatchError):
        verify_signature(sign(secret, timestamp, body), body + b"\x00", secret, now=timestamp)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "client_key": st.one_of(st.just(CLIENT_KEY), json_values),
        "event": st.one_of(st.sampled_from([DOWNLOAD_READY, AUTHORIZATION_REMOVED, "x.y"]), json_values),
        "create_time": st.one_of(st.integers(), json_values),
        "user_openid": st.one_of(st.just(OPENID), json_values),
        "content": st.one_of(
            st.dictionaries(
                st.sampled_from(["request_id", "reason", "x"]), st.one_of(st.integers(), json_values)
            ).map(json.dumps),
            json_values,
        ),
    },
)
delivery_bodies = st.one_of(
    st.binary(),
    st.text().map(str.encode),
    json_values.map(lambda value: json.dumps(value).encode()),
    envelopes.map(lambda document: json.dumps(document).encode()),
    st.integers(min_value=1, max_value=200_000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@PROPERTY
@given(delivery_bodies)
def test_any_body_yields_an_event_or_one_of_the_webhook_refusals(body: bytes) -> None:
    try:
        event = parse_delivery(body, client_key=CLIENT_KEY)
    except (WebhookPayloadError, WebhookTooLargeError, WebhookSignatureError) as error:
        assert error.status in (400, 401, 413)  # noqa: PT017 - a property over any input
    else:
        assert isinstance(event, DownloadReady | AuthorizationRemoved | OtherEvent)
        assert event.delivery_id == hashlib.sha256(body).hexdigest()
        if isinstance(event, DownloadReady):
            assert 0 < event.request_id <= INT64_MAX


@PROPERTY
@given(
    st.one_of(st.none(), st.text(), st.binary().map(lambda b: base64.b64encode(b).decode())), st.booleans()
)
def test_any_event_body_yields_bytes_or_a_webhook_refusal(body: str | None, is_base64_encoded: bool) -> None:
    try:
        data = raw_body(body, is_base64_encoded, max_bytes=512)
    except (WebhookPayloadError, WebhookTooLargeError) as error:
        assert error.status in (400, 413)  # noqa: PT017 - a property over any input
    else:
        assert len(data) <= 512
