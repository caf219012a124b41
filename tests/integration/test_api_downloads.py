"""POST /downloads end to end: the real handler, moto server and the TikTok emulator over HTTP."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import urllib.request
import zipfile
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import SECRETS, LogCapture
from tests.harness.events import api_event, load_event
from tests.harness.local_stack import Emulator, LocalStack, Resources
from tests.harness.s3_fault_proxy import S3FaultProxy
from tests.harness.tokens import new_request_id
from tests.integration.support import MIB, Configure, assert_nothing_left, call_api, open_uploads

ABSENT = object()
REFRESH = object()  # a fresh refresh token, made in the test


def fetch(url: str) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read(), dict(response.headers)


@pytest.mark.parametrize("transfer", ["chunked", "length"])
def test_archive_spanning_several_parts_arrives_byte_for_byte_through_its_url(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str, transfer: str
) -> None:
    # Given an archive of about 23 MiB ready at TikTok, served chunked or with a Content-Length
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=23 * MIB, transfer=transfer)

    # When the API is asked for it
    answer = call_api(api_event(str(request_id), token))

    # Then it answers with where the archive is and a link that serves exactly TikTok's bytes
    assert answer.status == 200, answer.body
    body = answer.body
    assert body["request_id"] == str(request_id)
    assert (body["bucket"], body["key"]) == (bucket, f"archives/{request_id}.zip")
    assert body["size_bytes"] == ready["size_bytes"]
    data, headers = fetch(body["url"])
    assert hashlib.sha256(data).hexdigest() == ready["sha256"]
    assert headers["Content-Disposition"] == f'attachment; filename="{request_id}.zip"'
    assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    # And the checksum is the CRC32 of those bytes, the same S3 stored with the object
    expected_crc = zlib.crc32(data).to_bytes(4, "big")
    assert body["checksum"] == base64.b64encode(expected_crc).decode()
    head = s3.head_object(Bucket=bucket, Key=body["key"], ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == body["checksum"]
    assert head["ContentType"] == "application/zip"
    assert head["ContentLength"] == ready["size_bytes"]
    # And it went up as a multipart upload that is closed now
    assert head.get("PartsCount", 0) >= 4 or "-" in head["ETag"]
    assert open_uploads(s3, bucket) == []
    assert answer.headers["Cache-Control"] == "no-store"


def test_archive_smaller_than_one_part_is_stored_too(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str
) -> None:
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=200 * 1024)

    answer = call_api(api_event(request_id, token))

    assert answer.status == 200, answer.body
    data, _ = fetch(answer.body["url"])
    assert hashlib.sha256(data).hexdigest() == ready["sha256"]
    assert "-" not in s3.head_object(Bucket=bucket, Key=answer.body["key"])["ETag"]
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize("given", [2**63 - 1, "9223372036854775807"])
def test_request_id_int64_max_reaches_tiktok_exactly(
    configure: Configure, emulator: Emulator, token: str, given: object
) -> None:
    # The emulator refuses any request_id that is not this exact JSON integer.
    emulator.register(2**63 - 1, token, size=64 * 1024)

    answer = call_api(api_event(given, token))

    assert answer.status == 200, answer.body
    assert answer.body["request_id"] == "9223372036854775807"
    assert answer.body["key"] == "archives/9223372036854775807.zip"


def test_url_lifetime_and_key_prefix_follow_the_settings(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    configure(parameters={"PresignedUrlTtlSeconds": "120", "ObjectKeyPrefix": "exports/tiktok/"})
    request_id = new_request_id()
    emulator.register(request_id, token, size=64 * 1024)

    before = datetime.now(UTC)
    answer = call_api(api_event(request_id, token))

    assert answer.status == 200, answer.body
    assert answer.body["key"] == f"exports/tiktok/{request_id}.zip"
    assert "X-Amz-Expires=120&" in answer.body["url"]
    expires_at = datetime.strptime(answer.body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert 118 <= (expires_at - before).total_seconds() <= 122


def test_sample_event_is_served(configure: Configure, emulator: Emulator, token: str) -> None:
    # events/api-download.json as it is (signed by the backend's role), with the demo's token, which
    # its body carries, registered for its request_id.
    event = load_event("api-download.json")
    body = json.loads(event["body"])
    emulator.register(body["request_id"], body["access_token"], size=64 * 1024)

    answer = call_api(event)

    assert answer.status == 200, answer.body
    assert answer.body["request_id"] == body["request_id"]


# -- bad input: a clear JSON error, and TikTok is never called ------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        None,
        "",
        "request_id=5",
        "[]",
        "{}",
        '{"request_id": 1.5}',
        '{"request_id": 7.2345e18}',
        '{"request_id": true}',
        '{"request_id": "abc"}',
        '{"request_id": 0}',
        '{"request_id": -3}',
        '{"request_id": 9223372036854775808}',
        '{"request_id": null}',
    ],
)
def test_bad_body_is_400_and_tiktok_is_never_called(
    configure: Configure,
    logs: LogCapture,
    emulator: Emulator,
    s3: Any,
    bucket: str,
    token: str,
    body: str | None,
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token)
    event = api_event(token=token, body=body or "")
    if body is None:
        event["body"] = None

    answer = call_api(event)

    assert answer.status == 400
    assert answer.body["error"]["code"] == "invalid_request"
    assert answer.body["error"]["message"]
    assert [r["error_code"] for r in logs.find("answered with an error")] == ["invalid_request"]
    assert emulator.downloads(request_id) == 0
    assert_nothing_left(s3, bucket)


@pytest.mark.parametrize("path", ["/downloads", "/requests"])
def test_a_body_that_is_not_utf8_is_400_and_tiktok_is_never_called(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str, path: str
) -> None:
    # API Gateway hands a body it cannot pass as text base64-encoded (a binary media type).
    event = api_event(token=token, body=base64.b64encode(b'{"request_id": "\xff\xfe"}').decode(), path=path)
    event["isBase64Encoded"] = True
    calls = sum(emulator.stats()["calls"].values())

    answer = call_api(event)

    assert (answer.status, answer.body["error"]["code"]) == (400, "invalid_request")
    assert "UTF-8" in answer.body["error"]["message"]
    assert sum(emulator.stats()["calls"].values()) == calls
    assert_nothing_left(s3, bucket)


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(ABSENT, id="absent"),
        pytest.param(None, id="null"),
        pytest.param("", id="empty"),
        pytest.param(12345, id="number"),
        pytest.param(["act.in-a-list"], id="list"),
        pytest.param("Bearer act.with-a-space!1234.e1", id="bearer-prefix"),
        pytest.param("act.tab\there!1234.e1", id="control-character"),
        pytest.param("act.n\u00e4me!1234.e1", id="non-ascii"),
    ],
)
def test_a_missing_or_malformed_body_token_is_400_missing_token_and_tiktok_is_never_called(
    configure: Configure, emulator: Emulator, resources: Resources, token: str, given: object
) -> None:
    # Given a request TikTok would serve to the user's token
    request_id = new_request_id()
    emulator.register(request_id, token)
    document: dict[str, Any] = {"request_id": str(request_id)}
    if given is not ABSENT:
        document["access_token"] = given
    calls = sum(emulator.stats()["calls"].values())

    # When the body's access_token is missing or not a token
    answer = call_api(api_event(body=json.dumps(document)))

    # Then the caller is told before anything is asked or written
    assert (answer.status, answer.body["error"]["code"]) == (400, "missing_token"), answer.body
    assert sum(emulator.stats()["calls"].values()) == calls
    assert resources.item(request_id) is None


@pytest.mark.parametrize("prefer", [None, "respond-async"])
def test_a_bearer_header_is_not_a_token_any_more(
    configure: Configure, emulator: Emulator, resources: Resources, token: str, prefer: str | None
) -> None:
    # Given a client of the old API: the user's token as "Authorization: Bearer", none in the body
    # (API Gateway would not even pass it on: AWS_IAM wants the header for SigV4)
    request_id = new_request_id()
    emulator.register(request_id, token)
    event = api_event(request_id, prefer=prefer)
    event["headers"]["Authorization"] = f"Bearer {token}"
    event["multiValueHeaders"]["Authorization"] = [f"Bearer {token}"]

    answer = call_api(event)

    # Then the header is not read: no token, 400, and TikTok never hears of it
    assert (answer.status, answer.body["error"]["code"]) == (400, "missing_token")
    assert emulator.checks(request_id) == 0
    assert resources.item(request_id) is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"authorization": "x"}, "authorization"),
        ({"token": "x", "prefer": "respond-async"}, "prefer, token"),
        ({"open_id": "-000abc"}, "open_id"),  # open_id without the refresh_token TikTok would confirm it by
        ({"refresh_token": "rft.has a space"}, "refresh_token"),
        ({"refresh_token": 7}, "refresh_token"),
        ({"refresh_token": REFRESH, "open_id": ""}, "open_id"),
        ({"refresh_token": REFRESH, "open_id": "x" * 257}, "open_id"),
    ],
)
def test_unknown_fields_or_malformed_handover_fields_are_400_before_anything(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    token: str,
    fields: dict[str, Any],
    named: str,
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token)
    document = {"request_id": str(request_id), "access_token": token, **fields}
    if document.get("refresh_token") is REFRESH:
        document["refresh_token"] = SECRETS.refresh_token()
    calls = sum(emulator.stats()["calls"].values())

    answer = call_api(api_event(body=json.dumps(document)))

    assert (answer.status, answer.body["error"]["code"]) == (400, "invalid_request"), answer.body
    assert named in answer.body["error"]["message"]
    assert sum(emulator.stats()["calls"].values()) == calls
    assert resources.item(request_id) is None


# -- TikTok's refusals, passed on with their code and log_id --------------------------------------
def test_unknown_request_id_is_404_after_tiktoks_invalid_params(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    emulator.register(new_request_id(), token)  # the token is known, this request_id is not
    request_id = new_request_id()

    answer = call_api(api_event(request_id, token))

    # TikTok's Check Status said invalid_params: the same answer as for someone else's request
    assert answer.status == 404
    assert answer.body["error"]["code"] == "not_found"


def test_unknown_token_is_401_access_token_invalid(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, SECRETS.token())

    answer = call_api(api_event(request_id, token))

    assert answer.status == 401
    assert answer.body["error"]["code"] == "access_token_invalid"


def test_token_without_portability_scope_is_401_scope_not_authorized(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, scopes=["user.info.basic"])

    answer = call_api(api_event(request_id, token))

    assert answer.status == 401
    assert answer.body["error"]["code"] == "scope_not_authorized"


@pytest.mark.parametrize(
    ("fault", "status", "code", "retry_after"),
    [
        (
            {"kind": "error", "status": 400, "code": "scope_permission_missed"},
            400,
            "scope_permission_missed",
            None,
        ),
        (
            # Longer than the function waits: handed on to the caller at once.
            {"kind": "error", "status": 429, "code": "rate_limit_exceeded", "retry_after": "90"},
            429,
            "rate_limit_exceeded",
            "90",
        ),
        ({"kind": "error", "status": 500, "code": "internal_error"}, 502, "internal_error", None),
        ({"kind": "error", "status": 200, "code": "access_token_invalid"}, 401, "access_token_invalid", None),
        ({"kind": "html", "status": 502}, 502, "upstream_unavailable", None),
        ({"kind": "html", "status": 200}, 502, "upstream_bad_response", None),
        ({"kind": "not_zip"}, 502, "upstream_bad_response", None),
        ({"kind": "empty"}, 502, "upstream_bad_response", None),
        # An error document whose code is not a word is not passed on as TikTok's code.
        ({"kind": "error", "status": 400, "code": ""}, 502, "upstream_bad_response", None),
        ({"kind": "error", "status": 403, "code": "<b>denied</b>\n"}, 502, "upstream_bad_response", None),
    ],
)
def test_tiktok_failures_map_to_actionable_answers(
    configure: Configure,
    emulator: Emulator,
    s3: Any,
    bucket: str,
    token: str,
    fault: dict[str, Any],
    status: int,
    code: str,
    retry_after: str | None,
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, fault=fault)

    answer = call_api(api_event(request_id, token))

    assert answer.status == status
    assert answer.body["error"]["code"] == code
    assert answer.headers.get("Retry-After") == retry_after
    if fault["kind"] == "error":
        assert answer.body["error"]["log_id"]
    assert_nothing_left(s3, bucket)


def test_unreachable_tiktok_is_502_upstream_unavailable(
    configure: Configure, s3: Any, bucket: str, token: str
) -> None:
    configure(TIKTOK_API_BASE_URL="http://127.0.0.1:9")  # discard port: nothing listens

    answer = call_api(api_event(new_request_id(), token))

    assert answer.status == 502
    assert answer.body["error"]["code"] == "upstream_unavailable"
    assert_nothing_left(s3, bucket)


def test_missing_bucket_is_a_storage_error_not_a_bare_500(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str
) -> None:
    s3.delete_bucket(Bucket=bucket)  # deleted behind the stack's back
    request_id = new_request_id()
    emulator.register(request_id, token, size=64 * 1024)

    answer = call_api(api_event(request_id, token))

    assert answer.status == 503
    assert answer.body["error"]["code"] == "storage_error"
    assert "NoSuchBucket" in answer.body["error"]["message"]


def test_missing_bucket_setting_is_a_json_500_naming_the_variable(configure: Configure, token: str) -> None:
    configure(BUCKET_NAME=None)

    answer = call_api(api_event(new_request_id(), token))

    assert answer.status == 500
    assert answer.body["error"]["code"] == "configuration_error"
    assert "BUCKET_NAME" in answer.body["error"]["message"]


def test_unknown_route_is_refused_by_api_gateway_and_a_json_404_in_the_function(
    configure: Configure, token: str
) -> None:
    # API Gateway answers a route the API does not have itself; should one reach the function anyway,
    # its answer is a JSON 404 naming the routes it has
    refused = call_api(api_event(1, token, path="/elsewhere"))
    answer = call_api(api_event(1, token, path="/elsewhere"), gateway=False)

    assert (refused.status, refused.body) == (403, {"message": "Missing Authentication Token"})
    assert answer.status == 404
    assert answer.body["error"]["code"] == "not_found"
    assert "POST /downloads" in answer.body["error"]["message"]


# -- observability --------------------------------------------------------------------------------
def test_failure_is_logged_as_a_structured_record_with_tiktoks_log_id(
    configure: Configure, emulator: Emulator, token: str, logs: LogCapture
) -> None:
    request_id = new_request_id()
    emulator.register(
        request_id, token, fault={"kind": "error", "status": 429, "code": "rate_limit_exceeded"}
    )
    event = api_event(request_id, token)

    answer = call_api(event)

    [record] = logs.find("download failed")
    assert record["level"] == "ERROR"
    assert record["request_id"] == str(request_id)
    assert record["error_code"] == "rate_limit_exceeded"
    assert record["tiktok_log_id"] == answer.body["error"]["log_id"]
    assert record["upstream_status"] == 429
    assert record["correlation_id"] == event["requestContext"]["requestId"]


def test_every_record_of_a_download_carries_its_request_id(
    configure: Configure, emulator: Emulator, token: str, logs: LogCapture
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, size=64 * 1024)

    call_api(api_event(request_id, token))

    started, completed = logs.find("download started"), logs.find("download completed")
    assert len(started) == 1
    assert len(completed) == 1
    assert {started[0]["request_id"], completed[0]["request_id"]} == {str(request_id)}
    assert completed[0]["size_bytes"] > 0


# -- S3 failures, over real HTTP through a fault-injecting proxy in front of moto -----------------
@pytest.mark.parametrize("failing_part", [1, 3])
def test_s3_part_failure_aborts_the_upload_and_answers_a_storage_error(
    configure: Configure,
    stack: LocalStack,
    emulator: Emulator,
    s3: Any,
    bucket: str,
    token: str,
    logs: LogCapture,
    failing_part: int,
) -> None:
    # Given S3 refusing one part of a multipart upload
    def refuse_part(method: str, path: str) -> tuple[int, str] | None:
        return (
            (403, "AccessDenied") if method == "PUT" and f"partNumber={failing_part}&" in path + "&" else None
        )

    request_id = new_request_id()
    emulator.register(request_id, token, size=24 * MIB)
    with S3FaultProxy(stack.moto_url, refuse_part) as proxy:
        configure(AWS_ENDPOINT_URL_S3=proxy.url)

        # When the archive is streamed
        answer = call_api(api_event(request_id, token))

    # Then the caller gets a storage error and the upload was aborted: no object, no parts
    assert proxy.failed, "the proxy never failed a part"
    assert len(logs.find("multipart upload aborted")) == 1
    assert answer.status == 503
    assert answer.body["error"]["code"] == "storage_error"
    assert "UploadPart" in answer.body["error"]["message"]
    assert_nothing_left(s3, bucket)


def test_s3_failure_on_completion_aborts_the_upload(
    configure: Configure, stack: LocalStack, emulator: Emulator, s3: Any, bucket: str, token: str
) -> None:
    def refuse_completion(method: str, path: str) -> tuple[int, str] | None:
        return (400, "InvalidPart") if method == "POST" and "uploadId=" in path else None

    request_id = new_request_id()
    emulator.register(request_id, token, size=12 * MIB)
    with S3FaultProxy(stack.moto_url, refuse_completion) as proxy:
        configure(AWS_ENDPOINT_URL_S3=proxy.url)
        answer = call_api(api_event(request_id, token))

    assert answer.status == 503
    assert "CompleteMultipartUpload" in answer.body["error"]["message"]
    assert_nothing_left(s3, bucket)


def test_parts_upload_while_the_download_is_still_running(
    configure: Configure, stack: LocalStack, emulator: Emulator, s3: Any, bucket: str, token: str
) -> None:
    # Given a 24 MiB archive that TikTok sends at 10 MiB/s, watched through a proxy in front of S3
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=24 * MIB, bytes_per_second=10 * MIB)
    with S3FaultProxy(stack.moto_url) as proxy:
        configure(AWS_ENDPOINT_URL_S3=proxy.url)

        # When it is downloaded
        answer = call_api(api_event(request_id, token))

    # Then parts reached S3 before TikTok had finished sending: the legs overlap, nothing is buffered whole
    assert answer.status == 200, answer.body
    body_sent_at = emulator.state(request_id)["last_body_sent_at"]
    part_times = [at for at, method, path in proxy.seen if method == "PUT" and "partNumber=" in path]
    assert len(part_times) == -(-ready["size_bytes"] // (5 * MIB))
    assert sum(at < body_sent_at for at in part_times) >= 3
