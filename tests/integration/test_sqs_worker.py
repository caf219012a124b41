"""The SQS worker: partial batch responses, transient retried, permanent acknowledged; a backend's own
message makes a record of no API caller's, followed by its events."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.conftest import BACKEND, OTHER, LogCapture
from tests.harness.events import api_event, delete_event, get_event, load_event
from tests.harness.local_stack import Emulator, Resources
from tests.harness.tokens import new_request_id
from tests.integration.support import (
    MIB,
    Configure,
    call_api,
    call_worker,
    open_uploads,
    sqs_record,
    stored_keys,
)


def message(request_id: object, token: object) -> str:
    return json.dumps({"request_id": request_id, "access_token": token})


def test_mixed_batch_reports_only_the_transient_failures(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str, logs: LogCapture
) -> None:
    # Given a batch: two good messages, three permanent failures and two transient ones
    good_a, good_b = new_request_id(), new_request_id()
    emulator.register(good_a, token, size=12 * MIB, transfer="chunked")
    emulator.register(good_b, token, size=64 * 1024, transfer="length")
    rate_limited, reset = new_request_id(), new_request_id()
    emulator.register(
        rate_limited, token, fault={"kind": "error", "status": 429, "code": "rate_limit_exceeded"}
    )
    emulator.register(reset, token, size=12 * MIB, fault={"kind": "reset", "after_bytes": 7 * MIB})
    refused = new_request_id()
    emulator.register(refused, token, fault={"kind": "error", "status": 401, "code": "scope_not_authorized"})
    records = [
        sqs_record(message(good_a, token), "good-a"),
        sqs_record(message(rate_limited, token), "transient-429"),
        sqs_record("{not json", "permanent-malformed"),
        sqs_record(message(reset, token), "transient-reset"),
        sqs_record(message(str(refused), token), "permanent-scope"),
        sqs_record(message(new_request_id(), token), "permanent-unknown-id"),
        sqs_record(message(str(good_b), token), "good-b"),
    ]

    # When the worker processes it
    result = call_worker(records)

    # Then exactly the transient messages come back for redelivery
    assert result == {
        "batchItemFailures": [{"itemIdentifier": "transient-429"}, {"itemIdentifier": "transient-reset"}]
    }
    # And both good archives are stored whole, with nothing left open by the broken one
    assert sorted(stored_keys(s3, bucket)) == sorted([f"archives/{good_a}.zip", f"archives/{good_b}.zip"])
    assert open_uploads(s3, bucket) == []
    # And each permanent failure was logged once as a structured error, with its message id
    dropped = logs.find("message acknowledged without retry: permanent failure")
    assert sorted(r["message_id"] for r in dropped) == [
        "permanent-malformed",
        "permanent-scope",
        "permanent-unknown-id",
    ]
    codes = {r["message_id"]: r["error_code"] for r in dropped}
    assert codes == {
        "permanent-malformed": "invalid_request",
        "permanent-scope": "scope_not_authorized",
        "permanent-unknown-id": "not_found",
    }
    assert {r["correlation_id"] for r in dropped} == set(codes)
    by_id = {r["message_id"]: r.get("request_id") for r in dropped}
    assert (by_id["permanent-malformed"], by_id["permanent-scope"]) == (None, str(refused))


def test_good_message_is_stored_byte_for_byte(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str
) -> None:
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=11 * MIB)

    result = call_worker([sqs_record(message(str(request_id), token))])

    assert result == {"batchItemFailures": []}
    data = s3.get_object(Bucket=bucket, Key=f"archives/{request_id}.zip")["Body"].read()
    assert hashlib.sha256(data).hexdigest() == ready["sha256"]


def test_message_without_token_is_acknowledged_and_tiktok_never_called(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token)

    result = call_worker([sqs_record(json.dumps({"request_id": request_id}))])

    assert result == {"batchItemFailures": []}
    assert emulator.downloads(request_id) == 0


def test_batch_where_everything_is_transient_fails_every_item_without_raising(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    ids = [new_request_id(), new_request_id()]
    for request_id in ids:
        emulator.register(request_id, token, fault={"kind": "error", "status": 500, "code": "internal_error"})

    result = call_worker([sqs_record(message(i, token), f"m{n}") for n, i in enumerate(ids)])

    assert result == {"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]}


def test_misconfigured_function_sends_messages_back_instead_of_dropping_them(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    configure(PART_SIZE_MIB="1")
    request_id = new_request_id()
    emulator.register(request_id, token)

    result = call_worker([sqs_record(message(request_id, token), "m")])

    assert result == {"batchItemFailures": [{"itemIdentifier": "m"}]}
    assert emulator.downloads(request_id) == 0


def test_sample_sqs_event_parses_into_a_download(configure: Configure, emulator: Emulator) -> None:
    event = load_event("sqs-download.json")
    document = json.loads(event["Records"][0]["body"])
    emulator.register(int(document["request_id"]), document["access_token"], size=64 * 1024)

    result = call_worker(event["Records"])

    assert result == {"batchItemFailures": []}


def test_a_backends_message_makes_a_record_no_api_caller_sees_but_its_events_tell(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any, bucket: str, token: str
) -> None:
    # Given two archives a backend asks for through the download queue (the user's token in clear),
    # one of which TikTok refuses for good
    stored, refused = new_request_id(), new_request_id()
    ready = emulator.register(stored, token, size=6 * MIB)
    emulator.register(refused, token, fault={"kind": "error", "status": 401, "code": "scope_not_authorized"})

    # When the worker runs both messages
    result = call_worker([sqs_record(message(str(i), token)) for i in (stored, refused)])

    # Then the archive is stored, and each outcome is published, naming no caller and no link
    assert result == {"batchItemFailures": []}
    assert stored_keys(s3, bucket) == [f"archives/{stored}.zip"]
    events = {e["detail"]["request_id"]: e for e in resources.events()}
    done, failed = events[str(stored)], events[str(refused)]
    assert (done["detail-type"], done["detail"]["status"]) == ("Download Completed", "completed")
    assert (done["detail"]["key"], done["detail"]["size_bytes"]) == (
        f"archives/{stored}.zip",
        ready["size_bytes"],
    )
    assert (failed["detail-type"], failed["detail"]["error"]["code"]) == (
        "Download Failed",
        "scope_not_authorized",
    )
    assert done["detail"]["caller"] is failed["detail"]["caller"] is None
    assert "url" not in json.dumps(list(events.values()))
    # And the records belong to no API caller: neither the backend's role nor another caller may read,
    # cancel or take them — not even with the user's token — and nothing of them changes
    items = {i: resources.item(i) for i in (stored, refused)}
    assert all(item is not None and "caller" not in item for item in items.values())
    for request_id in (stored, refused):
        answers = [
            call_api(get_event(request_id, BACKEND)),
            call_api(get_event(request_id, OTHER)),
            call_api(delete_event(request_id, BACKEND)),
            call_api(api_event(request_id, token)),
            call_api(api_event(request_id, token, prefer="respond-async")),
        ]
        assert [(a.status, a.body["error"]["code"]) for a in answers] == [(404, "not_found")] * 5
    assert {i: resources.item(i) for i in (stored, refused)} == items
    assert stored_keys(s3, bucket) == [f"archives/{stored}.zip"]
    assert emulator.downloads(stored) == 1
    assert resources.events() == []
