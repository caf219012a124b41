"""The archive's manifest through the real handlers: on the answer, the record and `Download Completed`.

The archives are the emulator's variants (``tests.harness.archives``): TikTok-shaped, hostile names and a
zip bomb, 100,000 entries with ZIP64 end records, a central directory larger than the tail the stream
keeps (read back from S3 with one ranged GET).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest

from tests.conftest import LogCapture
from tests.harness.events import api_event, get_event
from tests.harness.local_stack import Emulator, LocalStack, Resources
from tests.harness.s3_fault_proxy import S3FaultProxy
from tests.harness.tokens import new_request_id
from tests.integration.support import (
    Configure,
    assert_nothing_left,
    call_api,
    call_worker,
    open_uploads,
    sqs_record,
)


def _zip_facts(s3: Any, bucket: str, key: str) -> list[zipfile.ZipInfo]:
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return zipfile.ZipFile(io.BytesIO(data)).infolist()


def test_the_answer_the_record_and_the_event_carry_the_same_manifest(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any, bucket: str, token: str
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, size=3 * 1024 * 1024)

    answer = call_api(api_event(request_id, token))

    assert answer.status == 200, answer.body
    manifest = answer.body["manifest"]
    infos = _zip_facts(s3, bucket, answer.body["key"])
    assert manifest["entries"] == manifest["listed_entries"] == len(infos)
    assert manifest["uncompressed_bytes"] == sum(info.file_size for info in infos)
    assert {folder["name"] for folder in manifest["folders"]} == {
        info.filename.split("/", 1)[0] if "/" in info.filename else "." for info in infos
    }
    assert manifest["truncated"] is False
    # GET shows it, and the backend's event carries it
    assert call_api(get_event(request_id)).body["manifest"] == manifest
    [event] = resources.events()
    assert event["detail-type"] == "Download Completed"
    assert event["detail"]["manifest"] == manifest


def test_hostile_names_and_a_zip_bomb_are_described_never_unpacked(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str, logs: LogCapture
) -> None:
    request_id = new_request_id()
    ready = emulator.register(request_id, token, archive={"kind": "hostile_names"})

    answer = call_api(api_event(request_id, token))

    assert answer.status == 200, answer.body
    manifest = answer.body["manifest"]
    assert manifest["entries"] == ready["entry_count"]
    assert manifest["suspicious_names"] >= 9
    assert manifest["max_compression_ratio"] > 1000
    shown = [folder["name"] for folder in manifest["folders"]] + manifest["suspicious_examples"]
    assert "../../../../../../tmp/evil.txt" in shown
    for name in shown:
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name), name
    # The archive is stored as TikTok sent it; only the bucket holds its bytes, and nothing else was written.
    objects = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in objects if str(request_id) in o["Key"]] == [answer.body["key"]]
    assert objects[[o["Key"] for o in objects].index(answer.body["key"])]["Size"] == ready["size_bytes"]
    # And the log line about it carries counts, not names
    [read] = logs.find("archive manifest read")
    assert read["suspicious_names"] == manifest["suspicious_names"]
    assert "evil" not in json.dumps(read)


def test_a_hundred_thousand_entries_with_zip64_records_are_summarized_as_truncated(
    configure: Configure, emulator: Emulator, resources: Resources, token: str, logs: LogCapture
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, archive={"kind": "many_entries", "count": 100_000})

    result = call_worker([sqs_record(json.dumps({"request_id": request_id, "access_token": token}))])

    # A backend's own message: no API caller reads its record; the backend learns from the event
    assert result == {"batchItemFailures": []}
    [event] = resources.events()
    manifest = event["detail"]["manifest"]
    assert manifest["entries"] == 100_000
    assert manifest["truncated"] is True
    assert manifest["truncated_reason"] == "size"
    assert 50_000 < manifest["listed_entries"] < 100_000
    [read] = logs.find("archive manifest read")
    assert read["directory_from"] == "s3"  # 8 MiB of directory: beyond the tail, read by a ranged GET


@pytest.mark.parametrize("route", ["api", "worker"])
def test_a_directory_beyond_the_held_tail_is_read_back_with_one_ranged_get(
    configure: Configure,
    stack: LocalStack,
    emulator: Emulator,
    token: str,
    logs: LogCapture,
    route: str,
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, archive={"kind": "big_central_directory"})
    with S3FaultProxy(stack.moto_url) as proxy:
        configure(AWS_ENDPOINT_URL_S3=proxy.url)
        if route == "api":
            assert call_api(api_event(request_id, token)).status == 200
        else:
            message = json.dumps({"request_id": request_id, "access_token": token})
            assert call_worker([sqs_record(message)]) == {"batchItemFailures": []}
    reads = [(method, path) for _, method, path in proxy.seen if method == "GET" and "/archives/" in path]
    assert len(reads) == 1, reads  # one ranged GET of the directory, never the whole archive
    [read] = logs.find("archive manifest read")
    assert (read["directory_from"], read["entries"], read["truncated"]) == ("s3", 5_000, False)
    assert read["directory_bytes"] > 1024 * 1024


def test_an_unreadable_directory_leaves_a_complete_download_without_a_manifest(
    configure: Configure,
    stack: LocalStack,
    emulator: Emulator,
    s3: Any,
    bucket: str,
    token: str,
    logs: LogCapture,
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, archive={"kind": "big_central_directory"})

    def refuse_reads(method: str, path: str) -> tuple[int, str] | None:
        return (403, "AccessDenied") if method == "GET" and "/archives/" in path else None

    with S3FaultProxy(stack.moto_url, refuse_reads) as proxy:
        configure(AWS_ENDPOINT_URL_S3=proxy.url)
        answer = call_api(api_event(request_id, token))

    assert proxy.failed
    assert answer.status == 200, answer.body
    assert answer.body["status"] == "completed"
    assert "manifest" not in answer.body
    [warning] = logs.find("archive stored without its manifest")
    assert warning["level"] == "WARNING"
    assert warning["error_code"] == "storage_error"
    assert open_uploads(s3, bucket) == []


def test_a_failed_download_has_no_manifest_and_leaves_nothing(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, fault={"kind": "no_central_directory"})

    answer = call_api(api_event(request_id, token))

    assert answer.body["error"]["code"] == "archive_invalid"
    assert "manifest" not in call_api(get_event(request_id)).body
    assert_nothing_left(s3, bucket)
