"""TikTok's webhooks through the real handlers: only a valid signature over the exact bytes does anything,
a duplicate does nothing, ``portability.download.ready`` queues a waiting request's download at once, and
``authorization.removed`` purges everything of the user under every caller (the lifecycle function's work).

Deliveries are signed as TikTok signs them (``tests/harness/tiktok_emulator.sign``, written from the
reference), with the app secret the stack's secret holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import pytest

from tests.conftest import BACKEND_CALLER, OTHER, OTHER_CALLER
from tests.harness.emulator_control import Emulator
from tests.harness.events import api_event, get_event, webhook_event
from tests.harness.local_stack import APP_SECRET, Resources
from tests.harness.tiktok_emulator import sign, webhook_body
from tests.harness.tokens import new_request_id
from tests.harness.tokens import open_id as new_open_id
from tests.integration.support import (
    MIB,
    Configure,
    added,
    call_api,
    call_lifecycle,
    call_webhook,
    call_worker,
    consent,
    consent_again,
    deliver,
    grants_of_user,
    open_uploads,
    receive,
    run_lifecycle_message,
    second_pass,
    stored_keys,
    take_messages,
)
from tiktok_archive.adapters import webhook_deliveries
from tiktok_archive.adapters.grants import user_grant_id

SECRET = APP_SECRET["client_secret"]
KEY = APP_SECRET["client_key"]


def delivery(event: str, content: dict[str, Any], user: str | None = None, *, client_key: str = KEY) -> bytes:
    return webhook_body(
        event, user or new_open_id(), content, client_key=client_key, create_time=int(time.time())
    )


def signed(raw: bytes, *, secret: str = SECRET, at: float | None = None) -> str:
    return sign(secret, int(at if at is not None else time.time()), raw)


def nothing_done(resources: Resources) -> bool:
    deliveries = resources.client("dynamodb").scan(TableName=resources.local.ref("WebhookDeliveriesTable"))
    return (
        deliveries["Items"] == []
        and receive(resources, "LifecycleQueue", wait_seconds=0) == []
        and receive(resources, "ReadyQueue", wait_seconds=0) == []
    )


def run_lifecycle(resources: Resources) -> None:
    """Deliver the lifecycle queue's messages that are due now (work first, checks as well)."""
    deliver(resources, "LifecycleQueue", wait_seconds=2)


def run_ready(resources: Resources) -> None:
    """Deliver the ready queue's messages (TikTok's ``download.ready`` work) to the lifecycle function."""
    deliver(resources, "ReadyQueue", wait_seconds=2)


# -- signatures ----------------------------------------------------------------------------------------
def test_a_valid_delivery_is_acknowledged_fast_and_its_work_queued(
    configure: Configure, resources: Resources
) -> None:
    raw = delivery("portability.download.ready", {"request_id": new_request_id()})

    started = time.monotonic()
    answer = call_webhook(webhook_event(raw, signed(raw)))
    took = time.monotonic() - started

    assert (answer.status, answer.body) == (200, {"status": "queued"})
    assert took < 1.0  # one secret read, one write, one message
    # on the ready queue: a ready archive waits behind no status check of the lifecycle queue
    [work] = receive(resources, "ReadyQueue")
    assert json.loads(work["body"])["event"] == "portability.download.ready"
    assert receive(resources, "LifecycleQueue", wait_seconds=0) == []


def test_a_base64_encoded_body_is_verified_on_its_bytes(configure: Configure, resources: Resources) -> None:
    raw = delivery("portability.download.ready", {"request_id": new_request_id()})

    answer = call_webhook(webhook_event(raw, signed(raw), base64_encoded=True))

    assert (answer.status, answer.body["status"]) == (200, "queued")


def _one_byte_changed(raw: bytes) -> bytes:
    return raw.replace(b'"create_time": ', b'"create_time":  ', 1)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("a body changed by one byte", lambda raw: webhook_event(_one_byte_changed(raw), signed(raw))),
        ("a trailing newline", lambda raw: webhook_event(raw + b"\n", signed(raw))),
        ("a wrong key", lambda raw: webhook_event(raw, signed(raw, secret="not-the-app-secret"))),
        ("a stale t", lambda raw: webhook_event(raw, signed(raw, at=time.time() - 301))),
        ("a t from the future", lambda raw: webhook_event(raw, signed(raw, at=time.time() + 301))),
        ("no header", lambda raw: webhook_event(raw, None)),
        ("an empty header", lambda raw: webhook_event(raw, "")),
        ("extra fields", lambda raw: webhook_event(raw, signed(raw) + ",v=1")),
        ("two s values", lambda raw: webhook_event(raw, signed(raw) + ",s=" + "0" * 64)),
        (
            "two headers",
            lambda raw: webhook_event(
                raw, signed(raw), headers={"tiktok-signature": [signed(raw), signed(raw)]}
            ),
        ),
    ],
)
def test_a_delivery_without_a_valid_signature_is_401_and_does_nothing(
    configure: Configure, resources: Resources, name: str, make: Any
) -> None:
    raw = delivery("portability.download.ready", {"request_id": new_request_id()})

    answer = call_webhook(make(raw))

    assert (answer.status, answer.body["error"]["code"]) == (401, "invalid_signature"), name
    assert nothing_done(resources)


def test_another_apps_client_key_is_refused(configure: Configure, resources: Resources) -> None:
    raw = delivery("portability.download.ready", {"request_id": new_request_id()}, client_key="someone-else")

    answer = call_webhook(webhook_event(raw, signed(raw)))

    assert (answer.status, answer.body["error"]["code"]) == (401, "unknown_client_key")
    assert nothing_done(resources)


def test_a_body_over_64_kib_is_refused_before_any_work(configure: Configure, resources: Resources) -> None:
    raw = delivery("portability.download.ready", {"request_id": new_request_id(), "pad": "x" * 70_000})

    answer = call_webhook(webhook_event(raw, signed(raw)))

    assert answer.status == 413
    assert nothing_done(resources)


def test_duplicates_do_the_work_once(configure: Configure, resources: Resources) -> None:
    raw = delivery("portability.download.ready", {"request_id": new_request_id()})

    answers = [call_webhook(webhook_event(raw, signed(raw))) for _ in range(3)]

    assert [a.body["status"] for a in answers] == ["queued", "duplicate", "duplicate"]
    assert len(receive(resources, "ReadyQueue")) == 1


def test_a_delivery_whose_first_arrival_is_still_queueing_is_503_then_queued_once_that_one_died(
    configure: Configure, resources: Resources
) -> None:
    # Given a delivery recorded moments ago by an invocation that has not queued its work yet
    raw = delivery("portability.download.ready", {"request_id": new_request_id()})
    dynamodb = resources.client("dynamodb")
    table = resources.local.ref("WebhookDeliveriesTable")

    def recorded(seconds_ago: float) -> None:
        at = time.time() - seconds_ago
        dynamodb.put_item(
            TableName=table,
            Item={
                "delivery_id": {"S": hashlib.sha256(raw).hexdigest()},
                "event": {"S": "portability.download.ready"},
                "state": {"S": "received"},
                "received_at": {"S": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))},
                "received_epoch": {"N": str(int(at))},
                "expires_at": {"N": str(int(at) + 4 * 86400)},
            },
        )

    recorded(seconds_ago=1)

    # When TikTok delivers it again; Then it is not acknowledged (that invocation may still die)
    again = call_webhook(webhook_event(raw, signed(raw)))
    assert (again.status, again.body["error"]["code"]) == (503, "delivery_in_flight")
    assert receive(resources, "ReadyQueue", wait_seconds=0) == []

    # And once that invocation is older than any webhook invocation lives, the next delivery queues the work
    recorded(seconds_ago=webhook_deliveries.STUCK_AFTER.total_seconds() + 5)
    later = [call_webhook(webhook_event(raw, signed(raw))) for _ in range(2)]
    assert [a.body["status"] for a in later] == ["queued", "duplicate"]
    assert len(receive(resources, "ReadyQueue")) == 1


# -- portability.download.ready -------------------------------------------------------------------------
def test_download_ready_queues_a_waiting_request_at_once_and_stops_its_checks(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a request TikTok is preparing, with its first status check pending
    user = consent(emulator, prepare_seconds=3600, archive_size=2 * MIB)
    request_id = added(user)
    resources.events()

    # When TikTok announces it ready (and it is), the lifecycle does the work, and the pending check comes
    emulator.advance_clock(3600)
    raw = delivery("portability.download.ready", {"request_id": request_id}, user["open_id"])
    assert call_webhook(webhook_event(raw, signed(raw))).body["status"] == "queued"
    checks_before = emulator.stats()["calls"].get("check", 0)
    run_ready(resources)
    run_lifecycle(resources)

    # Then the download is queued without a status check, and the pending check does nothing
    item = resources.item(request_id)
    assert item is not None
    assert item["status"]["S"] == "queued"
    assert emulator.stats()["calls"].get("check", 0) == checks_before
    assert [e["detail-type"] for e in resources.events()] == ["Archive Ready"]
    [job] = receive(resources, "DownloadQueue")
    assert call_worker([job]) == {"batchItemFailures": []}
    assert call_api(get_event(request_id)).body["status"] == "completed"


def test_download_ready_for_an_unknown_request_is_acknowledged_and_logged(
    configure: Configure, resources: Resources, logs: Any
) -> None:
    raw = delivery("portability.download.ready", {"request_id": new_request_id()})

    assert call_webhook(webhook_event(raw, signed(raw))).status == 200
    run_ready(resources)

    assert logs.find("TikTok announced an archive ready for a request this service does not know")
    assert resources.client("dynamodb").scan(TableName=resources.table)["Items"] == []
    assert receive(resources, "DownloadQueue", wait_seconds=0) == []


def test_download_ready_for_a_stored_archive_downloads_nothing_and_records_tiktoks_user(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Given an archive the backend downloaded with an access token alone (its user unknown to the service)
    request_id = new_request_id()
    owner = emulator.register(request_id, token)["owner"]
    assert call_api(api_event(request_id, token)).status == 200
    before = resources.item(request_id)
    assert before is not None
    assert "user_openid" not in before
    resources.events()

    # When TikTok announces it ready, naming its user
    raw = delivery("portability.download.ready", {"request_id": request_id}, owner)
    assert call_webhook(webhook_event(raw, signed(raw))).status == 200
    run_ready(resources)

    # Then nothing is downloaded, queued or published; the record only learns its user, as TikTok named
    # it — so that the user's purge finds it
    user_fields = {"user_openid": {"S": owner}, "caller_user": {"S": f"{BACKEND_CALLER} {owner}"}}
    assert resources.item(request_id) == {**before, **user_fields}
    assert resources.events() == []
    assert receive(resources, "DownloadQueue", wait_seconds=0) == []
    assert call_api(get_event(request_id)).body["open_id"] == owner
    # And a later delivery naming someone else changes nothing: the first user TikTok named stays
    raw = delivery("portability.download.ready", {"request_id": request_id}, new_open_id())
    assert call_webhook(webhook_event(raw, signed(raw))).status == 200
    run_ready(resources)
    assert resources.item(request_id) == {**before, **user_fields}


# -- authorization.removed -------------------------------------------------------------------------------
def test_authorization_removed_purges_everything_of_the_user_under_every_caller(
    configure: Configure, emulator: Emulator, resources: Resources, s3: Any, bucket: str
) -> None:
    # Given a user with one archive stored and one request still waiting under the backend, a request
    # waiting under another caller (after a new consent), and another user
    user = consent(emulator, prepare_seconds=3600, archive_size=2 * MIB, scopes=["portability.all.ongoing"])
    stored, waiting = added(user), added(user)
    others = added(consent_again(emulator, user["open_id"]), OTHER)
    emulator.set_request_state(stored, "downloading")
    raw = delivery("portability.download.ready", {"request_id": stored}, user["open_id"])
    call_webhook(webhook_event(raw, signed(raw)))
    run_ready(resources)
    [job] = receive(resources, "DownloadQueue")
    assert call_worker([job]) == {"batchItemFailures": []}
    other = consent(emulator, prepare_seconds=3600)
    kept = added(other)
    assert stored_keys(s3, bucket) == [f"archives/{stored}.zip"]
    assert len(grants_of_user(resources, user["open_id"])) == 2
    resources.events()

    # When TikTok says the user disconnected the app (twice: deliveries are at least once)
    emulator.disconnect_user(user["open_id"])
    raw = delivery("authorization.removed", {"reason": 1}, user["open_id"])
    answers = [call_webhook(webhook_event(raw, signed(raw))) for _ in range(2)]
    work = take_messages(resources, "LifecycleQueue", "webhook")
    assert [a.body["status"] for a in answers] == ["queued", "duplicate"]
    assert len(work) == 1
    assert call_lifecycle(work) == {"batchItemFailures": []}

    # Then the user's archive, schedules and tokens are gone under both callers, their records are
    # tombstones, and each caller is told what it lost
    assert stored_keys(s3, bucket) == []
    assert open_uploads(s3, bucket) == []
    for request_id in (stored, waiting, others):
        record = resources.item(request_id)
        assert record is not None
        assert record["status"]["S"] == "revoked"
        assert "key" not in record
    assert grants_of_user(resources, user["open_id"], [stored, waiting, others]) == []
    assert grants_of_user(resources, other["open_id"]) == [user_grant_id(BACKEND_CALLER, other["open_id"])]
    removed = {e["detail"]["caller"]: e["detail"] for e in resources.events()}
    assert sorted(removed) == sorted([BACKEND_CALLER, OTHER_CALLER])
    assert sorted(removed[BACKEND_CALLER]["request_ids"]) == sorted([str(stored), str(waiting)])
    assert removed[OTHER_CALLER]["request_ids"] == [str(others)]
    assert {(d["open_id"], d["reason"]) for d in removed.values()} == {(user["open_id"], 1)}
    # And nothing else of that user: no link; the other user's request untouched; no token anywhere
    got = call_api(get_event(stored))
    assert (got.body["status"], "url" in got.body) == ("revoked", False)
    other_record = resources.item(kept)
    assert other_record is not None
    assert other_record["status"]["S"] == "waiting"
    scanned = json.dumps(resources.client("dynamodb").scan(TableName=resources.table)["Items"])
    for token in (user["access_token"], user["refresh_token"]):
        assert token.partition(".")[2] not in scanned
    # And the purge's second pass, 15 minutes later, finds nothing more
    assert run_lifecycle_message(second_pass(resources, user["open_id"])) == {"batchItemFailures": []}
    assert resources.events() == []


def test_a_base64_delivery_signature_is_over_the_decoded_bytes(
    configure: Configure, resources: Resources
) -> None:
    raw = delivery("portability.download.ready", {"request_id": new_request_id()})
    encoded = base64.b64encode(raw)

    answer = call_webhook(webhook_event(raw, signed(encoded), base64_encoded=True))

    assert answer.status == 401


def test_a_delivery_whose_work_cannot_be_queued_is_503_and_its_retry_does_the_work(
    configure: Configure, resources: Resources
) -> None:
    # Given the ready queue unavailable (deleted behind the stack's back)
    raw = delivery("portability.download.ready", {"request_id": new_request_id()})
    sqs = resources.client("sqs")
    sqs.delete_queue(QueueUrl=resources.local.ref("ReadyQueue"))

    failed = call_webhook(webhook_event(raw, signed(raw)))

    # Then TikTok is told to retry, and the delivery is not remembered as done
    assert (failed.status, failed.body["error"]["code"]) == (503, "queue_error")
    deliveries = resources.client("dynamodb").scan(TableName=resources.local.ref("WebhookDeliveriesTable"))
    assert deliveries["Items"] == []
