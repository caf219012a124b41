"""``make demo``: the whole service on this machine, with no AWS account.

Starts moto server and the TikTok emulator on free loopback ports, creates what template.yaml declares,
and runs every function with exactly its template environment, as Lambda would; every API call goes
through API Gateway's checks first (:mod:`tests.harness.gateway`: the route, the caller's identity, the
resource policy), as the sample events in ``events/`` — signed by a backend, the user's tokens in the body:

1. the paths for a ``request_id`` TikTok already prepared: ``POST /downloads`` and its repeat,
   ``Prefer: respond-async``, the worker's mixed batch, the refusals (no user token, a bad
   ``request_id``, an unsigned call);
2. a user's consent to their archive: ``POST /requests`` (``events/api-create-request.json``) hands the
   user's tokens over — TikTok names the user and the service holds their only live lineage; the backend
   reads its record with no TikTok call while the schedule checks TikTok (time compressed: checks 1 s
   apart, TikTok's clock moved); three hours later the backend's own tokens are dead (the access token
   expired, the refresh token rotated by the service) and it still reads its record and fetches the
   link; another caller gets 404 for it;
3. a request cancelled with ``DELETE`` (at TikTok too, with the token the service holds);
4. TikTok's signed ``portability.download.ready`` webhook queues a waiting request at once, and the
   archive's manifest shows what it holds;
5. the user's requests (``GET /users/{open_id}/requests``), then the user consents again and later asks
   the backend to forget them: ``DELETE /users/{open_id}``, worked by the lifecycle function — no archive,
   no open upload and no grant of the user left, the user's authorization revoked at TikTok;
6. every event the service published.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import sys
import time
import urllib.request
import uuid
import zipfile
from typing import Any

from tests.harness.events import BACKEND, OTHER, load_event
from tests.harness.functions import LambdaFunctions
from tests.harness.gateway import Gateway
from tests.harness.local_stack import APP_SECRET, LocalStack, Resources, provision
from tests.harness.sqs_pump import SqsPump
from tests.harness.tiktok_emulator import sign, webhook_body
from tests.harness.tokens import DEMO_OPEN_ID, DEMO_REFRESH_TOKEN, DEMO_TOKEN, access_token, refresh_token
from tiktok_archive.observability import logger

API_REQUEST_ID = 7234567890123456789
SQS_REQUEST_ID = 7234567890123456790
SQS_RATE_LIMITED_REQUEST_ID = 7234567890123456791
ASYNC_REQUEST_ID = 7234567890123456792
ARCHIVE_BYTES = 20 * 1024 * 1024
HOUR = 3600


class DemoFailedError(Exception):
    """A check of the demo did not hold."""


def _event(name: str) -> dict[str, Any]:
    document = load_event(name)
    document.setdefault("requestContext", {})["requestId"] = str(uuid.uuid4())
    return document


def _for_request(event: dict[str, Any], request_id: int) -> dict[str, Any]:
    """A ``/downloads/{request_id}`` sample event for another ``request_id``."""
    event["path"] = f"/downloads/{request_id}"
    event["pathParameters"] = {"request_id": str(request_id)}
    event["requestContext"]["path"] = f"/v1/downloads/{request_id}"
    return event


def _as(event: dict[str, Any], caller: str | None) -> dict[str, Any]:
    """``event`` as API Gateway hands it over for another verified ``caller`` (None: not signed)."""
    event = copy.deepcopy(event)
    identity = event["requestContext"]["identity"]
    if caller is None:
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            event["headers"].pop(name, None)
            event["multiValueHeaders"].pop(name, None)
        for name in ("accountId", "caller", "user", "userArn", "accessKey"):
            identity[name] = None
        return event
    identity["userArn"] = caller
    session = caller.rsplit("/", 1)[-1]
    identity["caller"] = identity["user"] = f"AROAQXAMPLEOTHERROLE:{session}"
    identity["accessKey"] = "ASIAQXAMPLEOTHER91C2"
    return event


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailedError(what)


class Demo:
    """The local stack, and each function invoked in its own template environment behind API Gateway."""

    def __init__(self, stack: LocalStack, resources: Resources, lambdas: LambdaFunctions) -> None:
        self.stack = stack
        self.emulator = stack.emulator
        self.resources = resources
        self.lambdas = lambdas
        self.gateway = Gateway(resources.template, lambdas.parameters, resources.local)
        self.pump = SqsPump(resources, lambdas)
        self.user_requests: dict[str, int] = {}  # the demo user's requests, by what they are for

    def api(self, event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """API Gateway's checks (route, identity, resource policy), then the API function."""
        answer = self.gateway.refusal(event)
        if answer is None:
            answer = self.lambdas.invoke("ApiFunction", event)
        headers = {k: v[-1] for k, v in (answer.get("multiValueHeaders") or {}).items()}
        return answer["statusCode"], json.loads(answer["body"]), {**headers, **(answer.get("headers") or {})}

    def webhook(self, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        answer = self.gateway.refusal(event) or self.lambdas.invoke("WebhookFunction", event)
        return answer["statusCode"], json.loads(answer["body"])

    def worker(self, event: dict[str, Any]) -> Any:
        queue_arn = self.lambdas.local.get_att("DownloadQueue", "Arn")  # the samples name a deployed one
        event = {**event, "Records": [{**r, "eventSourceARN": queue_arn} for r in event["Records"]]}
        return self.lambdas.invoke("WorkerFunction", event)

    def checks(self) -> int:
        """One batch of the lifecycle queue's due messages, delivered as Lambda's SQS event source would."""
        return self.pump.deliver("LifecycleQueue", wait_seconds=3)

    def downloads(self) -> int:
        """One batch of the download queue's due jobs, delivered to the worker."""
        return self.pump.deliver("DownloadQueue", wait_seconds=3)

    def get(self, request_id: int, caller: str = BACKEND) -> tuple[int, dict[str, Any]]:
        """``GET /downloads/{request_id}`` (events/api-get-download.json) as ``caller``."""
        status, body, _ = self.api(_as(_for_request(_event("api-get-download.json"), request_id), caller))
        return status, body

    def record(self, request_id: int) -> dict[str, Any]:
        """The backend's record of ``request_id``, read with no TikTok call."""
        calls = self._tiktok_calls()
        status, body = self.get(request_id)
        _expect(status == 200, f"the backend reads {request_id}")
        _expect(self._tiktok_calls() == calls, "a read asks TikTok nothing")
        return body

    # -- the acts ----------------------------------------------------------------------------------
    def downloads_of_ready_archives(self) -> None:
        ready = self.emulator.register(API_REQUEST_ID, DEMO_TOKEN, size=ARCHIVE_BYTES, transfer="chunked")
        _say(
            "For a request_id already ready: POST /downloads, signed by a backend (events/api-download.json)"
        )
        status, body, _ = self.api(_event("api-download.json"))
        print(f"HTTP {status}, status {body.get('status')}, {body.get('size_bytes')} bytes")
        _expect(status == 200, "downloaded")
        data = self._fetch(body["url"], ready["size_bytes"])
        _expect(hashlib.sha256(data).hexdigest() == ready["sha256"], "identical to TikTok's bytes")

        _say("The same POST again: no second download, a fresh link")
        status, again, _ = self.api(_event("api-download.json"))
        print(
            f"HTTP {status}, {again['status']}, TikTok's downloads: {self.emulator.downloads(API_REQUEST_ID)}"
        )

        _say(
            "Async: Prefer: respond-async (events/api-download-async.json); the worker in its own environment"
        )
        self.emulator.register(ASYNC_REQUEST_ID, DEMO_TOKEN, size=ARCHIVE_BYTES // 4, transfer="chunked")
        status, body, headers = self.api(_event("api-download-async.json"))
        print(f"HTTP {status}, Location: {headers.get('Location')}, status {body['status']}")
        self.downloads()
        record = self.record(ASYNC_REQUEST_ID)
        print(f"GET /downloads/{ASYNC_REQUEST_ID}: status {record['status']} (TikTok not asked)")
        _expect(record["status"] == "completed", "the queued download completed")

        _say("Refusals: no user token in the body, an invalid request_id, a call not signed with SigV4")
        for name in ("api-missing-token.json", "api-invalid-request-id.json"):
            status, body, _ = self.api(_event(name))
            print(f"{name}: HTTP {status} {json.dumps(body)}")
        status, body, _ = self.api(_as(_event("api-download.json"), None))
        print(f"unsigned (API Gateway answers, the function never runs): HTTP {status} {json.dumps(body)}")
        _expect(status == 403, "API Gateway refuses an unsigned call")

        _say("SQS worker: a mixed batch (events/sqs-mixed-batch.json)")
        self.emulator.register(SQS_REQUEST_ID, DEMO_TOKEN, size=ARCHIVE_BYTES // 2, transfer="length")
        self.emulator.register(
            SQS_RATE_LIMITED_REQUEST_ID,
            DEMO_TOKEN,
            size=1024,
            fault={"kind": "error", "status": 429, "code": "rate_limit_exceeded", "retry_after": "30"},
        )
        print("message 1: ready archive; 2: malformed id; 3: unknown id; 4: TikTok rate-limits")
        print(f"batch response: {json.dumps(self.worker(_event('sqs-mixed-batch.json')))}")
        print("(4 comes back after TikTok's Retry-After; 2 and 3 are permanent, logged and acknowledged)")
        print("(a backend's own queue messages make records no API caller owns: it follows them by events)")

    def consent_to_archive(self) -> None:
        _say(
            "A user consents; the backend adds a data request, their tokens in the body "
            "(events/api-create-request.json)"
        )
        status, body, headers = self.api(_event("api-create-request.json"))
        _expect(status == 202 and body["status"] == "waiting", "the request is waiting")
        request_id = self.user_requests["consent"] = int(body["request_id"])
        user = self.emulator.user(DEMO_OPEN_ID)
        print(f"HTTP {status}, Location: {headers.get('Location')}, status {body['status']}")
        print(
            f"the refresh token was exchanged at TikTok at once ({user['refreshes']} refresh): TikTok named "
            f"the user {body.get('open_id')}; the service now holds the user's only live tokens"
        )
        _expect(user["refreshes"] == 1 and body.get("open_id") == DEMO_OPEN_ID, "TikTok named the user")

        _say("Nobody polls TikTok: the lifecycle queue checks on a schedule; the backend reads its record")
        for _ in range(2):
            self.checks()
            record = self.record(request_id)
            tiktok = record["tiktok"]
            print(
                f"check #{tiktok['checks']}: TikTok says {tiktok['status']}; GET /downloads/{request_id}: "
                f"{record['status']}, 0 TikTok calls"
            )
        _expect(record["status"] == "waiting", "still waiting while TikTok prepares")

        _say("The user asks for a second archive: the backend hands the same refresh token over again")
        self.emulator.add_user(DEMO_OPEN_ID, prepare_seconds=6 * HOUR)  # TikTok takes longer for this one
        status, body, _ = self.api(_event("api-create-request.json"))
        _expect(status == 202, "the second request is waiting")
        self.user_requests["webhook"] = int(body["request_id"])
        refreshes = self.emulator.user(DEMO_OPEN_ID)["refreshes"]
        print(
            f"HTTP {status}, request {body['request_id']} {body['status']}: the token went into the user's "
            f"grant before, so it joins it ({refreshes} refresh at TikTok still: a rotated token is never "
            "sent again)"
        )
        _expect(refreshes == 1, "no second exchange")

        _say("Three hours pass at TikTok: the first archive is prepared, and the backend's tokens are dead")
        self.emulator.advance_clock(3 * HOUR)
        user = self.emulator.user(DEMO_OPEN_ID)
        expired = self.emulator.clock() - user["access_expires_at"]
        print(
            f"TikTok's access tokens last 2 hours: the backend's expired {expired / 60:.0f} min ago, and its "
            "refresh token is the one the service exchanged (TikTok would refuse it)"
        )
        while self._status(request_id) == "waiting":
            self.checks()
        user = self.emulator.user(DEMO_OPEN_ID)
        print(
            f"the service refreshed on the way: {user['refreshes']} refreshes, "
            f"{user['refused_refreshes']} refused"
        )
        print("TikTok says downloading: the download is queued; the worker runs it with the user's grant")
        self.downloads()

        _say("The backend reads its record and fetches the link, with no user token and no TikTok call")
        record = self.record(request_id)
        print(f"GET /downloads/{request_id}: status {record['status']}, {record['size_bytes']} bytes")
        _expect(record["status"] == "completed", "the archive is stored")
        self._fetch(record["url"], record["size_bytes"])
        status, body = self.get(request_id, OTHER)
        print(f"another caller ({OTHER.rsplit('/', 2)[1]}): HTTP {status} {json.dumps(body)}")
        _expect(status == 404, "another caller learns nothing")

    def cancel(self) -> None:
        _say("A third request, cancelled: DELETE /downloads/{request_id} (events/api-cancel-download.json)")
        status, body, _ = self.api(_event("api-create-request.json"))
        _expect(status == 202, "the third request is waiting")
        request_id = self.user_requests["cancel"] = int(body["request_id"])
        event = _for_request(_event("api-cancel-download.json"), request_id)
        status, body, _ = self.api(_as(event, OTHER))
        print(f"another caller's DELETE: HTTP {status} {body['error']['code']}; nothing changes")
        _expect(status == 404 and self._status(request_id) == "waiting", "another caller changes nothing")
        status, body, _ = self.api(event)
        at_tiktok = self.emulator.state(request_id)["status"]
        print(f"the backend's DELETE: HTTP {status}, status {body['status']}; at TikTok: {at_tiktok}")
        print("(cancelled at TikTok with the token the service holds: the backend sent none)")
        _expect(body["status"] == "cancelled" and at_tiktok == "cancelled", "cancelled, at TikTok too")
        self.checks()  # the pending check finds it cancelled and stops

    def webhook_and_manifest(self) -> None:
        _say("TikTok's webhook: a signed portability.download.ready queues the waiting request at once")
        request_id = self.user_requests["webhook"]
        self.emulator.advance_clock(3 * HOUR)
        raw = webhook_body(
            "portability.download.ready",
            DEMO_OPEN_ID,
            {"request_id": request_id},
            client_key=APP_SECRET["client_key"],
            create_time=int(time.time()),
        )
        event = _event("api-webhook-download-ready.json")
        event["body"] = raw.decode()
        event["headers"]["TikTok-Signature"] = sign(APP_SECRET["client_secret"], int(time.time()), raw)
        event["multiValueHeaders"]["TikTok-Signature"] = [event["headers"]["TikTok-Signature"]]
        started = time.monotonic()
        answer = self.webhook(event)
        print(f"POST /webhooks/tiktok: HTTP {answer[0]} {answer[1]} in {time.monotonic() - started:.3f} s")
        again = self.webhook(event)
        print(f"the same delivery again (TikTok delivers at least once): HTTP {again[0]} {again[1]}")
        self.pump.deliver("ReadyQueue", wait_seconds=3)  # the webhook's work: the download queued at once
        while self.checks():  # the pending status check finds the request moved on: no TikTok call
            pass
        self.downloads()
        record = self.record(request_id)
        _expect(record["status"] == "completed", "the webhook's archive is stored")
        manifest = record.get("manifest")
        if manifest:
            print(
                f"the archive's manifest (from its central directory only): {json.dumps(manifest, indent=2)}"
            )
        grants = self._grants()
        print(f"no request of the user needs their tokens now: grants held for them: {len(grants)}")
        _expect(not grants, "grants no request needs are deleted")

    def erase_user(self) -> None:
        _say(
            "The backend's view of the user: GET /users/{open_id}/requests "
            "(events/api-list-user-requests.json)"
        )
        listed = self._list()
        for item in listed:
            print(f"  {item['request_id']}: {item['status']} (created {item['created_at']})")
        _expect(
            {int(item["request_id"]) for item in listed} == set(self.user_requests.values()),
            "every request of the user, newest first",
        )
        status, body, _ = self.api(_as(_event("api-list-user-requests.json"), OTHER))
        print(f"another caller's list of the same user: HTTP {status}, {len(body['requests'])} requests")

        _say("Days later the user consents again and asks for one more archive; before it is ready they ask")
        print("the backend to forget them: DELETE /users/{open_id} (events/api-erase-user.json)")
        tokens = self.emulator.add_user(
            DEMO_OPEN_ID,
            access_token=access_token(),
            refresh_token=refresh_token(),
            prepare_seconds=24 * HOUR,
        )
        event = _event("api-create-request.json")
        event["body"] = json.dumps(
            {
                "access_token": tokens["access_token"],
                "refresh_token": tokens["refresh_token"],
                "open_id": DEMO_OPEN_ID,
            }
        )
        status, body, _ = self.api(event)
        _expect(status == 202, "the new consent's request is waiting")
        pending = self.user_requests["erased while waiting"] = int(body["request_id"])
        print(f"POST /requests with the new tokens: HTTP {status}, request {pending} {body['status']}")
        status, body, _ = self.api(_event("api-erase-user.json"))
        print(f"DELETE /users/{DEMO_OPEN_ID}: HTTP {status} {json.dumps(body)}")
        _expect(status == 202 and body["status"] == "erasing", "the erasure is queued")
        worked = 0
        while drained := self.checks():
            worked += drained
        print(f"the lifecycle function worked it ({worked} messages; a second pass comes 15 minutes later)")

        listed = self._list()
        keys = [f"{self._prefix()}{item['request_id']}.zip" for item in listed]
        s3 = self.resources.client("s3")
        objects = [
            key
            for key in keys
            if s3.list_objects_v2(Bucket=self.resources.bucket, Prefix=key).get("KeyCount")
        ]
        uploads = [
            upload
            for upload in s3.list_multipart_uploads(Bucket=self.resources.bucket).get("Uploads", [])
            if upload["Key"] in keys
        ]
        grants = self._grants()
        user = self.emulator.user(DEMO_OPEN_ID)
        print("what is left of the user:")
        for item in listed:
            print(f"  {item['request_id']}: {item['status']} (a tombstone: no link, no archive)")
        ended = {item["status"] for item in listed}
        print(f"  archives: {len(objects)}, open uploads: {len(uploads)}, grants: {len(grants)}")
        print(
            f"  at TikTok: the pending request is {self.emulator.state(pending)['status']}, "
            f"the user's authorization revoked: {user['revoked']}"
        )
        _expect(
            ended <= {"revoked", "cancelled"} and not any("url" in item for item in listed),
            "every request of the user ended (the one cancelled before stays cancelled)",
        )
        _expect(not objects and not uploads and not grants, "nothing of the user left")
        _expect(
            user["revoked"] and self.emulator.state(pending)["status"] == "cancelled", "revoked at TikTok"
        )

    def events(self) -> None:
        _say("Events on EventBridge (a rule copies them to a queue here): no token, no link in any")
        for event in self.resources.events():
            detail = event["detail"]
            if "request_id" in detail:
                print(f"{event['detail-type']}: request {detail['request_id']} {detail.get('status', '')}")
            else:
                revoked = detail.get("requests_revoked")
                print(f"{event['detail-type']}: user {detail.get('open_id')}, {revoked} requests revoked")

    # -- helpers -----------------------------------------------------------------------------------
    def _status(self, request_id: int) -> str:
        """The record's status as an operator sees it in the table (the backend follows the events)."""
        item = self.resources.item(request_id) or {}
        return str(item.get("status", {}).get("S"))

    def _tiktok_calls(self) -> int:
        return sum(self.emulator.stats()["calls"].values())

    def _list(self) -> list[dict[str, Any]]:
        status, body, _ = self.api(_event("api-list-user-requests.json"))
        _expect(status == 200, "the user's requests are listed")
        requests: list[dict[str, Any]] = body["requests"]
        return requests

    def _grants(self) -> list[dict[str, Any]]:
        """The grants held for the demo user (their own, or one of their requests')."""
        table = self.resources.local.ref("GrantsTable")
        items = self.resources.client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
        mine = {f"request {request_id}" for request_id in self.user_requests.values()}
        return [
            item
            for item in items
            if item.get("user_openid", {}).get("S") == DEMO_OPEN_ID or item["grant_id"]["S"] in mine
        ]

    def _prefix(self) -> str:
        return self.lambdas.parameters["ObjectKeyPrefix"]

    @staticmethod
    def _fetch(url: str, size: int) -> bytes:
        with urllib.request.urlopen(url, timeout=60) as response:
            data: bytes = response.read()
        archive = zipfile.ZipFile(io.BytesIO(data))
        bad = archive.testzip()
        print(
            f"link fetched: {len(data)} bytes, zip test {'ok' if bad is None else 'BAD ' + bad}, "
            f"{len(archive.namelist())} entries"
        )
        _expect(len(data) == size and bad is None, "the link serves the whole archive")
        return data


def main() -> int:
    """Run the demo; 0 when every check held."""
    with LocalStack() as stack:
        resources = provision(stack.moto_url, "demo")
        # Each function runs with exactly its template.yaml environment (parameters as a deployment
        # would set them, but checks 1 s apart), pointed at moto and the emulator.
        lambdas = LambdaFunctions(
            resources.template,
            resources.local,
            {
                "PartSizeMiB": "5",
                "LogLevel": "WARNING",
                "StatusPollInitialSeconds": "1",
                "StatusPollMaxSeconds": "2",
                **stack.parameters(),
            },
            stack.environment(),
        )
        logger.setLevel(logging.WARNING)  # the demo narrates; warnings and errors still print
        _say(f"moto server at {stack.moto_url}, TikTok emulator at {stack.emulator.url}")
        stack.emulator.add_user(
            DEMO_OPEN_ID,
            access_token=DEMO_TOKEN,
            refresh_token=DEMO_REFRESH_TOKEN,
            scopes=["portability.all.ongoing"],
            prepare_seconds=3600,
            archive_size=ARCHIVE_BYTES // 4,
        )
        demo = Demo(stack, resources, lambdas)
        try:
            demo.downloads_of_ready_archives()
            demo.consent_to_archive()
            demo.cancel()
            demo.webhook_and_manifest()
            demo.erase_user()
            demo.events()
        except DemoFailedError as failure:
            print(f"\nDEMO FAILED: {failure}", flush=True)
            return 1
        finally:
            lambdas.restore()
    _say("demo finished; moto server and the emulator are stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
