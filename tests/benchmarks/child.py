"""One measured transfer in a fresh process: ``python -m tests.benchmarks.child '<json spec>'``.

The spec names the approach, the archive (request id, token, size), the bucket and key, and the
environment; the process imports only what that approach needs and builds its clients, notes its RSS,
runs the transfer once while a thread samples RSS, and prints one JSON line: wall and CPU seconds (the
process's user + system time less the sampling thread's own), RSS after imports, peak RSS (``VmHWM``),
the RSS samples, the time S3 spent in ``CompleteMultipartUpload`` (timed with botocore's own events on
the default session every client here is made from), and how many bytes S3 holds.

Approaches:

- ``whole_body``: what TikTok's sample does — the whole answer in memory (``preload_content``), then one
  ``PutObject``.
- ``boto3_default`` / ``boto3_matched``: boto3's managed transfer, ``upload_fileobj`` on the urllib3
  response, with its default ``TransferConfig`` or with our part size and concurrency.
- ``handler``: this project, through the SQS worker's real entry point (``lambda_handler``).
- ``download_only`` / ``upload_only``: one leg of ours alone — read the archive and drop it, or upload the
  same number of bytes from memory — for the overlap ratio.
"""

# Imports happen per approach on purpose: "RSS after imports" must hold only what that approach loads.
# ruff: noqa: PLC0415

from __future__ import annotations

import json
import os
import re
import resource
import sys
import threading
import time
from typing import Any

MIB = 1024 * 1024


def rss_kib(field: str = "VmRSS") -> int:
    """A memory figure of this process from ``/proc/self/status``, in KiB."""
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    return int(match.group(1)) if match else 0


class Sampler(threading.Thread):
    """Samples RSS every ``interval`` seconds until stopped; ``cpu_seconds`` is what sampling cost.

    The sampler's own CPU grows with wall time, not with the transfer, so the measured CPU excludes it.
    """

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.cpu_seconds = 0.0
        self._stop_event = threading.Event()
        self._origin = time.monotonic()

    def run(self) -> None:
        started = time.thread_time()
        while not self._stop_event.is_set():
            self.samples.append((round(time.monotonic() - self._origin, 3), rss_kib()))
            self._stop_event.wait(self.interval)
        self.cpu_seconds = time.thread_time() - started

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _tiktok_request(spec: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    url = spec["tiktok_url"] + "/v2/user/data/download/"
    body = json.dumps({"request_id": spec["request_id"]}).encode()
    headers = {
        "Authorization": f"Bearer {spec['token']}",
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",
    }
    return url, body, headers


class CompletionTimer:
    """Sums the time spent in ``CompleteMultipartUpload`` by any client of boto3's default session."""

    def __init__(self) -> None:
        import boto3

        self.seconds = 0.0
        self._started = 0.0
        boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        events = boto3.DEFAULT_SESSION.events
        events.register("before-call.s3.CompleteMultipartUpload", self._before)
        events.register("after-call.s3.CompleteMultipartUpload", self._after)

    def _before(self, **_: Any) -> None:
        self._started = time.monotonic()

    def _after(self, **_: Any) -> None:
        self.seconds += time.monotonic() - self._started


def _prepare(approach: str, spec: dict[str, Any]) -> Any:
    """Import what the approach needs, build its clients, and return the callable that runs it once."""
    if approach == "handler":
        from tests.harness.lambda_context import FakeLambdaContext
        from tiktok_archive import runtime
        from tiktok_archive.handlers import worker

        # Clients are built before measuring, as the other approaches' are (in Lambda this happens
        # once per container, on the first invocation).
        runtime.queued_downloads()

        event = {
            "Records": [
                {
                    "messageId": "bench-0001",
                    "receiptHandle": "bench",
                    "body": json.dumps(
                        {"request_id": str(spec["request_id"]), "access_token": spec["token"]}
                    ),
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "messageAttributes": {},
                    "md5OfBody": "",
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:downloads",
                    "awsRegion": "eu-west-1",
                }
            ]
        }

        def run_handler() -> None:
            result = worker.lambda_handler(event, FakeLambdaContext("WorkerFunction", 900_000))
            if result["batchItemFailures"]:
                raise RuntimeError(f"the worker failed: {result}")

        return run_handler

    import boto3
    import urllib3
    from botocore.config import Config

    # As in Lambda: there boto3 talks to S3 over HTTPS, where botocore sends UNSIGNED-PAYLOAD with the
    # CRC32 it computes; over moto's plain HTTP it would SHA-256 every byte unless told not to. This
    # project's client is told the same (runtime_adapters), so neither side pays for a hash Lambda skips.
    s3 = boto3.client("s3", config=Config(s3={"payload_signing_enabled": False}))
    url, body, headers = _tiktok_request(spec)
    pool = urllib3.PoolManager()

    if approach == "whole_body":

        def run_whole_body() -> None:
            response = pool.request("POST", url, body=body, headers=headers)
            data = response.data
            s3.put_object(Bucket=spec["bucket"], Key=spec["key"], Body=data)

        return run_whole_body

    if approach in ("boto3_default", "boto3_matched"):
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig()
        if approach == "boto3_matched":
            part = spec["part_mib"] * MIB
            config = TransferConfig(
                multipart_threshold=part, multipart_chunksize=part, max_concurrency=spec["concurrency"]
            )

        def run_managed() -> None:
            response = pool.request("POST", url, body=body, headers=headers, preload_content=False)
            s3.upload_fileobj(response, spec["bucket"], spec["key"], Config=config)

        return run_managed

    from tiktok_archive import runtime
    from tiktok_archive.adapters.tiktok import AttemptBudget
    from tiktok_archive.models.deadline import Deadline
    from tiktok_archive.models.download import DownloadRequest

    if approach == "download_only":
        client = runtime.tiktok_client()

        def run_download_only() -> None:
            request = DownloadRequest(spec["request_id"], spec["token"])
            buffer = bytearray(spec["part_mib"] * MIB)
            with client.open_archive(request, AttemptBudget(1, Deadline.after(900))) as stream:
                while stream.readinto(buffer):
                    pass

        return run_download_only

    if approach == "upload_only":
        block = os.urandom(MIB)

        class Synthetic:
            """``size`` bytes of the same random MiB, handed out like the archive stream does."""

            def __init__(self, size: int) -> None:
                self.left = size

            def readinto(self, part: memoryview) -> int:
                size = min(len(part), self.left)
                for start in range(0, size, MIB):
                    end = min(size, start + MIB)
                    part[start:end] = block[: end - start]
                self.left -= size
                return size

        store = runtime.archive_store()

        def run_upload_only() -> None:
            store.write(spec["key"], Synthetic(spec["size"]), "bench.zip", Deadline.after(900))

        return run_upload_only

    raise SystemExit(f"unknown approach {approach!r}")


def main() -> None:
    spec = json.loads(sys.argv[1])
    os.environ.update(spec["environment"])
    completion = CompletionTimer()
    run = _prepare(spec["approach"], spec)
    rss_after_imports = rss_kib()
    sampler = Sampler()
    sampler.start()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    run()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    sampler.stop()
    stored = None
    if spec["approach"] != "download_only":
        import boto3

        stored = boto3.client("s3").head_object(Bucket=spec["bucket"], Key=spec["key"])["ContentLength"]
    print(
        json.dumps(
            {
                "wall_seconds": wall,
                "cpu_seconds": (after.ru_utime - usage.ru_utime)
                + (after.ru_stime - usage.ru_stime)
                - sampler.cpu_seconds,
                "rss_after_imports_kib": rss_after_imports,
                "peak_rss_kib": rss_kib("VmHWM"),
                "samples": sampler.samples,
                "stored_bytes": stored,
                "completion_seconds": completion.seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
