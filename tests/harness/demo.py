"""``make demo``: the whole service on this machine, with no AWS account.

Starts moto server and the TikTok emulator on free loopback ports, creates what template.yaml declares,
and runs every function with exactly its template environment, as Lambda would:

1. the paths for a ``request_id`` TikTok already prepared: ``POST /downloads`` and its repeat,
   ``Prefer: respond-async``, the worker's mixed batch, two error answers;
2. a user's consent to their archive: ``POST /requests`` (``events/api-create-request.json``) → waiting;
   the schedule checks TikTok while it prepares (time compressed: checks 1 s apart, TikTok's clock moved),
   the user's 2-hour access token expires on the way and is refreshed, the archive is found ready,
   downloaded by the worker from the user's grant, its link fetched and verified;
3. TikTok's signed ``portability.download.ready`` webhook for a second request queues it at once, and
   the archive's manifest shows what it holds;
4. a third request cancelled with ``DELETE``;
5. every event the service published.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.functions import LambdaFunctions
from tests.harness.lambda_context import FakeLambdaContext
from tests.harness.local_stack import APP_SECRET, LocalStack, Resources, provision
from tests.harness.tiktok_emulator import sign, webhook_body
from tiktok_archive.handlers import api, lifecycle, sqs, webhook
from tiktok_archive.observability import logger

EVENTS = Path(__file__).resolve().parents[2] / "events"
DEMO_REFRESH_TOKEN = "rft.DEMOr9Kq2Lx7Vn4Tb8Wm3Zc6Hd1Pf5Gs0Ja-Ue_Yi2Oo7Rh4Sl9Nk3Xe8Qv6Bt1Cy5Dw0Fm-Jg!4667.e1"
DEMO_OPEN_ID = "-000DEMO0a1b2c3d4e5f60718293a4b5c6d"
DEMO_TOKEN = "act.DEMO7hQ2xK9pLm4Rt8Vw3Yz6Bc1Nf5Gj0Sd-Ua_Ei2Ok7Ph4Tl9Xm3Qr8Wv6Zy1Cb5Dg0Fn-Jp!4667.e1"
API_REQUEST_ID = 7234567890123456789
SQS_REQUEST_ID = 7234567890123456790
SQS_RATE_LIMITED_REQUEST_ID = 7234567890123456791
ASYNC_REQUEST_ID = 7234567890123456792
ARCHIVE_BYTES = 20 * 1024 * 1024
Handler = Callable[[dict[str, Any], Any], Any]


class DemoFailedError(Exception):
    """A check of the demo did not hold."""


def _event(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return document


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailedError(what)


class Demo:
    """The local stack, and each function invoked in its own template environment."""

    def __init__(self, stack: LocalStack, resources: Resources, lambdas: LambdaFunctions) -> None:
        self.stack = stack
        self.emulator = stack.emulator
        self.resources = resources
        self.lambdas = lambdas

    def _run(self, function: str, handler: Handler, event: dict[str, Any], remaining_ms: int) -> Any:
        with self.lambdas.running(function):
            return handler(event, FakeLambdaContext(function, remaining_ms))

    def api(self, event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
        answer = self._run("ApiFunction", api.lambda_handler, event, 28_000)
        headers = {k: v[-1] for k, v in (answer.get("multiValueHeaders") or {}).items()}
        return answer["statusCode"], json.loads(answer["body"]), {**headers, **(answer.get("headers") or {})}

    def webhook(self, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        answer = self._run("WebhookFunction", webhook.lambda_handler, event, 10_000)
        return answer["statusCode"], json.loads(answer["body"])

    def worker(self, event: dict[str, Any]) -> Any:
        queue_arn = self.lambdas.local.get_att("DownloadQueue", "Arn")  # the samples name a deployed one
        event = {**event, "Records": [{**r, "eventSourceARN": queue_arn} for r in event["Records"]]}
        return self._run("WorkerFunction", sqs.lambda_handler, event, 900_000)

    def drain(self, queue: str, function: str, handler: Handler, wait_seconds: int = 3) -> int:
        """Deliver ``queue``'s due messages to ``function`` as Lambda's SQS event source would."""
        sqs_client = self.resources.client("sqs")
        url = self.resources.local.ref(queue)
        messages = sqs_client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
        ).get("Messages", [])
        if not messages:
            return 0
        template = _event("sqs-download.json")["Records"][0]
        records = [
            {
                **template,
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "eventSourceARN": self.resources.local.get_att(queue, "Arn"),
            }
            for m in messages
        ]
        result = self._run(
            function, handler, {"Records": records}, 900_000 if function == "WorkerFunction" else 60_000
        )
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for record in records:
            if record["messageId"] not in failed:
                sqs_client.delete_message(QueueUrl=url, ReceiptHandle=record["receiptHandle"])
        return len(records)

    def checks(self) -> int:
        return self.drain("LifecycleQueue", "LifecycleFunction", lifecycle.lambda_handler)

    def downloads(self) -> int:
        return self.drain("DownloadQueue", "WorkerFunction", sqs.lambda_handler)

    def get(self, request_id: int, token: str = DEMO_TOKEN) -> dict[str, Any]:
        event = _event("api-get-download.json")
        event["path"] = f"/downloads/{request_id}"
        event["pathParameters"] = {"request_id": str(request_id)}
        event["headers"]["Authorization"] = f"Bearer {token}"
        event["multiValueHeaders"]["Authorization"] = [f"Bearer {token}"]
        return self.api(event)[1]

    # -- the acts ----------------------------------------------------------------------------------
    def consent_to_archive(self) -> None:
        _say("A user consents; the backend adds a data request (events/api-create-request.json)")
        status, body, headers = self.api(_event("api-create-request.json"))
        request_id = int(body["request_id"])
        print(f"HTTP {status}, Location: {headers.get('Location')}")
        print(f"status {body['status']}, TikTok: {json.dumps(body['tiktok'])}, next {body['next_check_at']}")
        _expect(status == 202 and body["status"] == "waiting", "the request is waiting")

        _say("Nobody polls: the lifecycle queue checks TikTok on a schedule (1 s, then 2 s apart here)")
        for _ in range(2):
            self.checks()
            record = self.get(request_id)
            tiktok = record["tiktok"]
            print(f"check #{tiktok['checks']}: {tiktok['status']}; next at {record['next_check_at']}")
        _expect(record["status"] == "waiting", "still waiting while TikTok prepares")

        _say(
            "Three hours pass at TikTok: the archive is prepared, and the user's 2-hour access token expired"
        )
        self.emulator.advance_clock(3 * 3600)
        while self._status(request_id) == "waiting":
            self.checks()
        user = self.emulator.user(DEMO_OPEN_ID)
        print(
            f"the service refreshed the token on the way: {user['refreshes']} refresh, "
            f"{user['refused_refreshes']} refused (the rotated refresh token was stored before use)"
        )
        _expect(user["refreshes"] == 1, "one refresh")
        print("TikTok says downloading: the download is queued; the worker runs it with the user's grant")
        self.downloads()
        record = self.get(request_id, self._current_token())
        print(f"GET /downloads/{request_id}: status {record['status']}, {record['size_bytes']} bytes")
        _expect(record["status"] == "completed", "the archive is stored")
        self._fetch(record["url"], record["size_bytes"])

    def webhook_and_manifest(self) -> None:
        _say("TikTok's webhook: a signed portability.download.ready queues a waiting request at once")
        token = self._current_token()
        _, body, _ = self.api(self._request_event(token))
        request_id = int(body["request_id"])
        self.emulator.advance_clock(3 * 3600)
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
        while self.checks():
            pass
        self.downloads()
        record = self.get(request_id, self._current_token())
        _expect(record["status"] == "completed", "the webhook's archive is stored")
        manifest = record.get("manifest")
        if manifest:
            print(
                f"the archive's manifest (from its central directory only): {json.dumps(manifest, indent=2)}"
            )

    def cancel(self) -> None:
        _say("Another request cancelled: DELETE /downloads/{request_id} (events/api-cancel-download.json)")
        token = self._current_token()
        _, body, _ = self.api(self._request_event(token))
        request_id = int(body["request_id"])
        event = _event("api-cancel-download.json")
        event["path"] = f"/downloads/{request_id}"
        event["pathParameters"] = {"request_id": str(request_id)}
        event["headers"]["Authorization"] = event["multiValueHeaders"]["Authorization"][0] = f"Bearer {token}"
        status, body, _ = self.api(event)
        print(
            f"HTTP {status}, status {body['status']}; at TikTok: {self.emulator.state(request_id)['status']}"
        )
        _expect(body["status"] == "cancelled", "cancelled")
        self.checks()  # the pending check finds it cancelled and stops

    def downloads_of_ready_archives(self) -> None:
        ready = self.emulator.register(API_REQUEST_ID, DEMO_TOKEN, size=ARCHIVE_BYTES, transfer="chunked")
        _say("For a request_id already ready: POST /downloads (events/api-download.json)")
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
        record = self.get(ASYNC_REQUEST_ID)
        print(f"GET /downloads/{ASYNC_REQUEST_ID}: status {record['status']}")
        _expect(record["status"] == "completed", "the queued download completed")

        _say("Errors: missing token, invalid request_id")
        for name in ("api-missing-token.json", "api-invalid-request-id.json"):
            status, body, _ = self.api(_event(name))
            print(f"{name}: HTTP {status} {json.dumps(body)}")

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

    def events(self) -> None:
        _say("Events on EventBridge (a rule copies them to a queue here): no token, no link in any")
        for event in self.resources.events():
            detail = event["detail"]
            print(f"{event['detail-type']}: request {detail.get('request_id')} {detail.get('status', '')}")

    def _status(self, request_id: int) -> str:
        """The record's status as an operator sees it in the table (the backend follows the events)."""
        item = self.resources.item(request_id) or {}
        return str(item.get("status", {}).get("S"))

    # -- helpers -----------------------------------------------------------------------------------
    def _current_token(self) -> str:
        """An access token TikTok accepts for the user now, as the backend gets one when the user signs in
        again (the backend handed its refresh token over to the service with the first request)."""
        return str(self.emulator.user(DEMO_OPEN_ID)["access_token"])

    def _request_event(self, token: str) -> dict[str, Any]:
        event = _event("api-create-request.json")
        event["body"] = json.dumps({"open_id": DEMO_OPEN_ID})
        event["headers"]["Authorization"] = event["multiValueHeaders"]["Authorization"][0] = f"Bearer {token}"
        return event

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
            demo.webhook_and_manifest()
            demo.cancel()
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
