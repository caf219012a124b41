"""``make demo``: the whole job on this machine, with no AWS account.

Starts moto server and the TikTok emulator on free loopback ports, creates the bucket, runs the API
handler on ``events/api-download.json``, fetches the presigned URL it answers with and checks the
archive, asks again (no second download, a fresh link), queues a download with ``Prefer:
respond-async`` and lets the worker run it, reads its record with ``GET /downloads/{request_id}``,
shows the completion events, runs the SQS worker on ``events/sqs-mixed-batch.json`` and stops what it
started.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.functions import LambdaFunctions
from tests.harness.lambda_context import FakeLambdaContext
from tests.harness.local_stack import LocalStack, provision
from tiktok_archive.handlers import api, sqs

EVENTS = Path(__file__).resolve().parents[2] / "events"
DEMO_REFRESH_TOKEN = "rft.DEMOr9Kq2Lx7Vn4Tb8Wm3Zc6Hd1Pf5Gs0Ja-Ue_Yi2Oo7Rh4Sl9Nk3Xe8Qv6Bt1Cy5Dw0Fm-Jg!4667.e1"
DEMO_OPEN_ID = "-000DEMO0a1b2c3d4e5f60718293a4b5c6d"
DEMO_TOKEN = "act.DEMO7hQ2xK9pLm4Rt8Vw3Yz6Bc1Nf5Gj0Sd-Ua_Ei2Ok7Ph4Tl9Xm3Qr8Wv6Zy1Cb5Dg0Fn-Jp!4667.e1"
API_REQUEST_ID = 7234567890123456789
SQS_REQUEST_ID = 7234567890123456790
SQS_RATE_LIMITED_REQUEST_ID = 7234567890123456791
ASYNC_REQUEST_ID = 7234567890123456792
ARCHIVE_BYTES = 20 * 1024 * 1024


def _event(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return document


def _invokers(
    lambdas: LambdaFunctions,
) -> tuple[Callable[[dict[str, Any]], dict[str, Any]], Callable[[dict[str, Any]], dict[str, Any]]]:
    """Call the API function and the worker as Lambda would: each in its own environment."""

    def api_call(event: dict[str, Any]) -> dict[str, Any]:
        with lambdas.running("ApiFunction"):
            answer: dict[str, Any] = api.lambda_handler(event, FakeLambdaContext("ApiFunction"))
        return answer

    def worker_call(event: dict[str, Any]) -> dict[str, Any]:
        queue_arn = lambdas.local.get_att("DownloadQueue", "Arn")  # the sample events name a deployed one
        event = {**event, "Records": [{**r, "eventSourceARN": queue_arn} for r in event["Records"]]}
        with lambdas.running("WorkerFunction"):
            answer: dict[str, Any] = sqs.lambda_handler(event, FakeLambdaContext("WorkerFunction", 900_000))
        return answer

    return api_call, worker_call


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    """Run the demo; 0 when every check held."""
    with LocalStack() as stack:
        resources = provision(stack.moto_url, "demo")
        s3 = resources.client("s3")
        # Each function runs with exactly its template.yaml environment (parameters as a deployment
        # would set them), pointed at moto and the emulator.
        lambdas = LambdaFunctions(
            resources.template,
            resources.local,
            {"PartSizeMiB": "5", "LogLevel": "WARNING", **stack.parameters()},
            stack.environment(),
        )
        api_call, worker_call = _invokers(lambdas)
        _say(f"moto server at {stack.moto_url}, TikTok emulator at {stack.emulator.url}")
        print("(the function's JSON log records and EMF metrics print as they happen, as in CloudWatch)")
        ready = stack.emulator.register(API_REQUEST_ID, DEMO_TOKEN, size=ARCHIVE_BYTES, transfer="chunked")
        print(f"TikTok has archive {API_REQUEST_ID} ready: {ready['size_bytes']} bytes, chunked")

        _say("API Gateway: POST /downloads (events/api-download.json)")
        answer = api_call(_event("api-download.json"))
        body = json.loads(answer["body"])
        print(f"HTTP {answer['statusCode']}")
        print(json.dumps(body, indent=2))
        if answer["statusCode"] != 200:
            return 1

        _say("Fetching the presigned URL")
        with urllib.request.urlopen(body["url"], timeout=60) as response:
            data = response.read()
            disposition = response.headers.get("Content-Disposition")
        archive = zipfile.ZipFile(io.BytesIO(data))
        corrupt = archive.testzip()
        same = hashlib.sha256(data).hexdigest() == ready["sha256"]
        print(f"{len(data)} bytes, Content-Disposition: {disposition}")
        print(
            f"zip test: {'ok' if corrupt is None else 'BAD ENTRY ' + corrupt}; identical to TikTok's: {same}"
        )
        names = archive.namelist()
        print(f"{len(names)} entries: " + ", ".join(names[:4]) + (", …" if len(names) > 4 else ""))
        if corrupt is not None or not same:
            return 1

        _say("The same POST again: the record says completed, so no second download, a fresh link")
        answer = api_call(_event("api-download.json"))
        again = json.loads(answer["body"])
        downloads = stack.emulator.downloads(API_REQUEST_ID)
        print(f"HTTP {answer['statusCode']}, status {again['status']}, TikTok downloads so far: {downloads}")
        if answer["statusCode"] != 200 or downloads != 1 or "url" not in again:
            return 1

        _say("Async: POST /downloads with Prefer: respond-async (events/api-download-async.json)")
        stack.emulator.register(ASYNC_REQUEST_ID, DEMO_TOKEN, size=ARCHIVE_BYTES // 4, transfer="chunked")
        answer = api_call(_event("api-download-async.json"))
        location = (answer.get("multiValueHeaders") or {}).get("Location", ["?"])[0]
        print(f"HTTP {answer['statusCode']}, Location: {location}")
        print(answer["body"])
        [message] = resources.queued_messages()
        print(f"queued message (the token is KMS-encrypted): {message['Body'][:90]}…")
        job = {"Records": [{**_event("sqs-download.json")["Records"][0], "body": message["Body"]}]}
        batch = worker_call(job)
        print(f"worker: {json.dumps(batch)}")
        answer = api_call(_event("api-get-download.json"))
        record = json.loads(answer["body"])
        print(
            f"GET /downloads/{ASYNC_REQUEST_ID}: HTTP {answer['statusCode']}, status {record.get('status')}"
        )
        if record.get("status") != "completed" or "url" not in record:
            return 1

        _say("Completion events on EventBridge (a rule copies them to a queue here)")
        for event in resources.events():
            print(f"{event['detail-type']}: {json.dumps(event['detail'])}")

        _say("Errors: missing token, invalid request_id")
        for name in ("api-missing-token.json", "api-invalid-request-id.json"):
            answer = api_call(_event(name))
            print(f"{name}: HTTP {answer['statusCode']} {answer['body']}")

        _say("SQS worker: a mixed batch (events/sqs-mixed-batch.json)")
        stack.emulator.register(SQS_REQUEST_ID, DEMO_TOKEN, size=ARCHIVE_BYTES // 2, transfer="length")
        stack.emulator.register(
            SQS_RATE_LIMITED_REQUEST_ID,
            DEMO_TOKEN,
            size=1024,
            fault={"kind": "error", "status": 429, "code": "rate_limit_exceeded", "retry_after": "30"},
        )
        print("message 1: ready archive; 2: malformed id; 3: unknown id; 4: TikTok rate-limits")
        batch = worker_call(_event("sqs-mixed-batch.json"))
        print(f"batch response: {json.dumps(batch)}")
        print("(message 4 will be delivered again; 2 and 3 are permanent and were logged and acknowledged)")
        stored = s3.head_object(Bucket=resources.bucket, Key=f"archives/{SQS_REQUEST_ID}.zip")
        print(f"stored by the worker: archives/{SQS_REQUEST_ID}.zip, {stored['ContentLength']} bytes")
    _say("demo finished; moto server and the emulator are stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
