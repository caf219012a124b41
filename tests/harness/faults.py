"""``make faults``: every fault kind through the real handlers, several runs each, cut points at random.

For each fault the suite registers an archive of random size with the TikTok emulator (or puts a
fault-injecting proxy in front of moto server), invokes the real API or SQS handler — alternating — as
Lambda would, then checks what a user would: the stored object's bytes against TikTok's, the bucket's
open multipart uploads, and every log line and metric printed during the run for a token or a URL
signature. It prints one row per fault::

    fault | runs | succeeded | failed cleanly | corrupt objects stored | multipart uploads left open |
    secrets in logs

(the last column also scans the DynamoDB record and the completion event of each run)
and exits non-zero unless the last three columns are all 0 and every run ended as its fault should
(recovered, or failed with the expected error code). ``--seed`` replays a run; ``--runs`` sets the runs
per fault (at least 3).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import random
import re
import secrets
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from tests.harness.functions import LambdaFunctions
from tests.harness.lambda_context import FakeLambdaContext
from tests.harness.local_stack import REGION, LocalStack, Resources, provision
from tests.harness.s3_fault_proxy import S3FaultProxy
from tests.harness.tokens import access_token
from tiktok_archive.handlers import api, worker
from tiktok_archive.observability import logger

MIB = 1024 * 1024
PART_MIB = 5
EVENTS = Path(__file__).resolve().parents[2] / "events"
S3Failure = Callable[[str, str], tuple[int, str] | None]


@dataclass
class Scenario:
    """One run of a fault: what TikTok and S3 do, the function's settings, and the expected end."""

    size: int
    emulator: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    s3_failure: S3Failure | None = None
    remaining_ms: int | None = None  # the function's template timeout when None
    expect: str = "ok"  # "ok", or the error code the caller must get


def _cut(rng: random.Random, size: int) -> int:
    """A random byte of the archive past its signature and before its last byte."""
    return rng.randrange(5, size - 1)


def _size(rng: random.Random, low_mib: float = 0.1, high_mib: float = 24) -> int:
    return int(rng.uniform(low_mib, high_mib) * MIB)


def _part_call(part: int) -> Callable[[str, str], bool]:
    return lambda method, path: method == "PUT" and f"partNumber={part}&" in path + "&"


def _once(matches: Callable[[str, str], bool], failure: tuple[int, str]) -> S3Failure:
    done: list[bool] = []

    def fail(method: str, path: str) -> tuple[int, str] | None:
        if matches(method, path) and not done:
            done.append(True)
            return failure
        return None

    return fail


def _always(matches: Callable[[str, str], bool], failure: tuple[int, str]) -> S3Failure:
    return lambda method, path: failure if matches(method, path) else None


def _rate_limited(rng: random.Random) -> Scenario:
    fault = {"kind": "error", "status": 429, "code": "rate_limit_exceeded", "retry_after": "1"}
    return Scenario(_size(rng), {"fault": fault, "fault_times": rng.randint(1, 2)})


def _server_errors(rng: random.Random) -> Scenario:
    status = rng.choice([500, 502, 503, 504])
    fault = (
        {"kind": "error", "status": status, "code": "internal_error"}
        if rng.random() < 0.5
        else {"kind": "html", "status": status}
    )
    return Scenario(_size(rng), {"fault": fault, "fault_times": rng.randint(1, 3)})


def _drop_before_headers(rng: random.Random) -> Scenario:
    return Scenario(_size(rng), {"fault": {"kind": "drop"}, "fault_times": rng.randint(1, 3)})


def _break_mid_body(kind: str, ranges: str) -> Callable[[random.Random], Scenario]:
    def scenario(rng: random.Random) -> Scenario:
        size = _size(rng, 1, 30)
        fault = {"kind": kind, "after_bytes": _cut(rng, size)}
        return Scenario(size, {"fault": fault, "fault_times": rng.randint(1, 2), "ranges": ranges})

    return scenario


def _always_breaks(kind: str, code: str) -> Callable[[random.Random], Scenario]:
    def scenario(rng: random.Random) -> Scenario:
        size = _size(rng, 1, 20)
        fault = {"kind": kind, "after_bytes": _cut(rng, size)}
        ranges = rng.choice(["honour", "ignore"])
        return Scenario(size, {"fault": fault, "ranges": ranges}, expect=code)

    return scenario


def _stall_once(rng: random.Random) -> Scenario:
    size = _size(rng, 1, 16)
    fault = {"kind": "stall", "after_bytes": _cut(rng, size), "seconds": 5}
    return Scenario(
        size,
        {"fault": fault, "fault_times": 1, "ranges": rng.choice(["honour", "ignore"])},
        {"TIKTOK_READ_TIMEOUT_SECONDS": "1"},
    )


def _fixed_fault(fault: dict[str, Any], code: str) -> Callable[[random.Random], Scenario]:
    return lambda rng: Scenario(_size(rng, 0.1, 16), {"fault": fault}, expect=code)


def _deadline(rng: random.Random) -> Scenario:
    size = _size(rng, 12, 24)
    return Scenario(
        size,
        {"bytes_per_second": 2 * MIB},
        # Room in the margin for an in-flight part and the abort (one S3 try of 1.25 s each).
        {"DEADLINE_MARGIN_SECONDS": "3"},
        remaining_ms=rng.randint(6_000, 7_000),
        expect="deadline_exceeded",
    )


def _s3_slowdown_once(rng: random.Random) -> Scenario:
    size = _size(rng, 11, 24)
    part = rng.randint(1, size // (PART_MIB * MIB))
    return Scenario(size, s3_failure=_once(_part_call(part), (503, "SlowDown")))


def _s3_part_fails(rng: random.Random) -> Scenario:
    size = _size(rng, 11, 24)
    part = rng.randint(1, size // (PART_MIB * MIB))
    failure = rng.choice([(500, "InternalError"), (503, "SlowDown")])
    return Scenario(size, s3_failure=_always(_part_call(part), failure), expect="storage_error")


def _s3_completion_fails(rng: random.Random) -> Scenario:
    size = _size(rng, 6, 20)
    return Scenario(
        size,
        s3_failure=_always(lambda m, p: m == "POST" and "uploadId=" in p, (500, "InternalError")),
        expect="storage_error",
    )


FAULTS: dict[str, Callable[[random.Random], Scenario]] = {
    "429 with Retry-After, then the archive": _rate_limited,
    "5xx (JSON or HTML), then the archive": _server_errors,
    "reset before the headers, then the archive": _drop_before_headers,
    "reset mid-body once, Range honoured": _break_mid_body("reset", "honour"),
    "reset mid-body once, Range ignored": _break_mid_body("reset", "ignore"),
    "truncated body once, Range honoured": _break_mid_body("truncate", "honour"),
    "truncated body once, Range ignored": _break_mid_body("truncate", "ignore"),
    "stall once (1 s read timeout)": _stall_once,
    "reset mid-body every time": _always_breaks("reset", "upstream_stream_broken"),
    "truncated body every time": _always_breaks("truncate", "archive_truncated"),
    "zip without central directory": _fixed_fault({"kind": "no_central_directory"}, "archive_invalid"),
    "HTML page with 200": _fixed_fault({"kind": "html", "status": 200}, "upstream_bad_response"),
    "bytes that are not a zip": _fixed_fault({"kind": "not_zip"}, "upstream_bad_response"),
    "deadline during a slow stream": _deadline,
    "S3 SlowDown on one part, once": _s3_slowdown_once,
    "S3 failing one part every time": _s3_part_fails,
    "S3 failing the completion": _s3_completion_fails,
}


@dataclass
class Outcome:
    """What one run ended in, judged from outside the function."""

    code: str  # "ok" or the error code
    corrupt_objects: int
    open_uploads: int
    secrets_in_logs: int
    stored_objects: int

    def succeeded(self) -> bool:
        return self.code == "ok" and self.stored_objects == 1 and self.corrupt_objects == 0

    def failed_cleanly(self) -> bool:
        return self.code != "ok" and self.stored_objects == 0 and self.open_uploads == 0


@dataclass
class Row:
    fault: str
    runs: int = 0
    succeeded: int = 0
    failed_cleanly: int = 0
    corrupt: int = 0
    left_open: int = 0
    secrets: int = 0
    unexpected: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _captured_output() -> Iterator[io.StringIO]:
    """Everything the function prints — log records, EMF metrics, warnings — into one buffer."""
    buffer = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(buffer)  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]


def _api_event(request_id: int, token: str) -> dict[str, Any]:
    """``events/api-download.json`` (signed by a backend: API Gateway's identity in its requestContext)
    for another request, the user's token in the body."""
    event: dict[str, Any] = json.loads((EVENTS / "api-download.json").read_text())
    event["body"] = json.dumps({"request_id": str(request_id), "access_token": token})
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    return event


def _sigv4_secrets() -> tuple[str, str]:
    headers = json.loads((EVENTS / "api-download.json").read_text())["headers"]
    return headers["Authorization"].rsplit("Signature=", 1)[1], headers["X-Amz-Security-Token"]


_SIGV4_SECRETS = _sigv4_secrets()


def _sqs_event(request_id: int, token: str, resources: Resources) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "sqs-download.json").read_text())
    [record] = event["Records"][:1]
    record["messageId"] = str(uuid.uuid4())
    record["eventSourceARN"] = resources.local.get_att("DownloadQueue", "Arn")
    record["body"] = json.dumps({"request_id": str(request_id), "access_token": token})
    event["Records"] = [record]
    return event


def _signatures(text: str) -> set[str]:
    return {m for m in re.findall(r"X-Amz-Signature=([0-9a-f]+)", text) if m != "testing"}


def run_once(stack: LocalStack, scenario: Scenario, trigger: str, s3: Any) -> Outcome:
    """Invoke the handler once under ``scenario`` and judge the result."""
    bucket = f"faults-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    resources = provision(stack.moto_url, bucket.removeprefix("faults-"), bucket=bucket)
    token = access_token()
    request_id = secrets.randbelow(2**63 - 2**60) + 2**60
    ready = stack.emulator.register(request_id, token, size=scenario.size, **scenario.emulator)
    # Each function with its template.yaml environment, and the scenario's changes on purpose.
    lambdas = LambdaFunctions(
        resources.template,
        resources.local,
        {"PartSizeMiB": str(PART_MIB), "UploadConcurrency": "3", **stack.parameters()},
        stack.environment(),
        scenario.environment,
    )
    signatures: set[str] = set()
    with contextlib.ExitStack() as cleanup:
        if scenario.s3_failure is not None:
            proxy = cleanup.enter_context(S3FaultProxy(stack.moto_url, scenario.s3_failure))
            lambdas.override(AWS_ENDPOINT_URL_S3=proxy.url)
        cleanup.callback(lambdas.restore)
        function = "ApiFunction" if trigger == "api" else "WorkerFunction"
        cleanup.enter_context(lambdas.running(function))
        remaining_ms = scenario.remaining_ms or resources.template.function_timeout(function) * 1000
        with _captured_output() as output:
            if trigger == "api":
                answer = api.lambda_handler(
                    _api_event(request_id, token), FakeLambdaContext("ApiFunction", remaining_ms)
                )
                body = json.loads(answer["body"])
                code = "ok" if answer["statusCode"] == 200 else body["error"]["code"]
                if "url" in body:
                    signatures |= _signatures(body["url"])
                    with urllib.request.urlopen(body["url"], timeout=60) as response:
                        fetched = hashlib.sha256(response.read()).hexdigest()
                    if fetched != ready["sha256"]:
                        code = "url served other bytes"
            else:
                worker.lambda_handler(
                    _sqs_event(request_id, token, resources),
                    FakeLambdaContext("WorkerFunction", remaining_ms),
                )
                code = "ok"
        logged = output.getvalue()
        for line in logged.splitlines():
            if '"download failed' in line:
                code = json.loads(line).get("error_code", "unknown")
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    corrupt = 0
    for key in keys:
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        corrupt += hashlib.sha256(data).hexdigest() != ready["sha256"]
    uploads = len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    # What the function stored besides the archive: the download's record and its completion event.
    logged += json.dumps([resources.item(request_id), resources.events()])
    # The token's secret part (with or without "act."), a URL signature, or the scrubber's marker (which
    # means code tried to log a secret and only the formatter caught it).
    leaked = int(token.partition(".")[2] in logged) + sum(s in logged for s in signatures)
    leaked += logged.count("X-Amz-Signature=") + logged.count("[REDACTED]")
    # The API event's SigV4 signature and session token (API Gateway hands the headers over).
    leaked += sum(secret in logged for secret in _SIGV4_SECRETS)
    return Outcome(code, corrupt, uploads, leaked, len(keys))


def main(argv: list[str] | None = None) -> int:
    """Run the suite; 0 when no run stored a corrupt object, left an upload open or leaked a secret."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per fault (at least 3)")
    parser.add_argument("--seed", type=int, default=None, help="replay the cut points of an earlier run")
    parser.add_argument("--only", default="", help="run only faults whose name contains this text")
    args = parser.parse_args(argv)
    runs = max(3, args.runs)
    seed = args.seed if args.seed is not None else secrets.randbelow(10**9)
    rng = random.Random(seed)
    print(
        f"fault-injection suite: {runs} runs per fault, seed {seed} (replay with --seed {seed})", flush=True
    )
    rows: list[Row] = []
    started = time.monotonic()
    with LocalStack() as stack:
        s3 = boto3.client(
            "s3",
            endpoint_url=stack.moto_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for name, make in FAULTS.items():
            if args.only not in name:
                continue
            row = Row(name)
            for index in range(runs):
                scenario = make(rng)
                trigger = "api" if index % 2 == 0 else "sqs"
                outcome = run_once(stack, scenario, trigger, s3)
                row.runs += 1
                row.succeeded += outcome.succeeded()
                row.failed_cleanly += outcome.failed_cleanly()
                row.corrupt += outcome.corrupt_objects
                row.left_open += outcome.open_uploads
                row.secrets += outcome.secrets_in_logs
                if outcome.code != scenario.expect or not (outcome.succeeded() or outcome.failed_cleanly()):
                    row.unexpected.append(
                        f"run {index + 1} ({trigger}, {scenario.size} bytes): expected {scenario.expect}, "
                        f"got {outcome.code} with {outcome.stored_objects} object(s) stored "
                        f"({outcome.corrupt_objects} corrupt) and {outcome.open_uploads} upload(s) open"
                    )
                stack.emulator.reset()
                stack.reset_aws()
            rows.append(row)
            print(f"  {name}: {row.succeeded} succeeded, {row.failed_cleanly} failed cleanly", flush=True)
    print()
    print(render_table(rows))
    print(f"\n{sum(r.runs for r in rows)} runs in {time.monotonic() - started:.0f} s, seed {seed}")
    unexpected = [f"{row.fault}: {line}" for row in rows for line in row.unexpected]
    for line in unexpected:
        print("UNEXPECTED", line)
    unsafe = sum(r.corrupt + r.left_open + r.secrets for r in rows)
    print("PASS" if not unsafe and not unexpected else "FAIL")
    return 0 if not unsafe and not unexpected else 1


def render_table(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    header = (
        "| fault | runs | succeeded | failed cleanly | corrupt objects stored | "
        "multipart uploads left open | secrets in logs |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r.fault} | {r.runs} | {r.succeeded} | {r.failed_cleanly} | {r.corrupt} | "
            f"{r.left_open} | {r.secrets} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
