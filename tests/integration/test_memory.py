"""Memory, not time: a streamed archive must not raise the handler process's peak RSS beyond its parts.

Each measurement runs in a fresh process (``tests.benchmarks.child``) so that its peak RSS (``VmHWM``)
belongs to that one transfer: the process imports the handler and builds its clients (what a warm
container holds), notes its RSS, runs the SQS handler on a 256 MiB archive from the emulator into moto
server, and reports its peak.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.benchmarks.run import run_child
from tests.harness.functions import LambdaFunctions
from tests.harness.local_stack import Emulator, LocalStack, Resources
from tests.harness.tokens import new_request_id
from tests.integration.support import MIB

PART_MIB = 8
CONCURRENCY = 4


def measure(
    stack: LocalStack, resources: Resources, emulator: Emulator, bucket: str, token: str, approach: str
) -> dict[str, Any]:
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=256 * MIB, transfer="chunked")
    spec = {
        "approach": approach,
        "tiktok_url": emulator.url,
        "request_id": request_id,
        "token": token,
        "size": ready["size_bytes"],
        "bucket": bucket,
        "key": f"archives/{request_id}.zip",
        "part_mib": PART_MIB,
        "concurrency": CONCURRENCY,
        # The worker's environment from template.yaml, quiet.
        "environment": LambdaFunctions(
            resources.template,
            resources.local,
            {
                "PartSizeMiB": str(PART_MIB),
                "UploadConcurrency": str(CONCURRENCY),
                "LogLevel": "WARNING",
                **stack.parameters(),
            },
            stack.environment(),
            {"POWERTOOLS_METRICS_DISABLED": "true"},
        ).environment("WorkerFunction"),
    }
    result = run_child(spec)
    assert result["stored_bytes"] == ready["size_bytes"]
    return result


def streaming_mib(result: dict[str, Any]) -> float:
    return (result["peak_rss_kib"] - result["rss_after_imports_kib"]) / 1024


def test_a_256_mib_archive_raises_peak_rss_by_at_most_its_parts_in_flight(
    stack: LocalStack, resources: Resources, emulator: Emulator, bucket: str, token: str
) -> None:
    result = measure(stack, resources, emulator, bucket, token, "handler")

    # (concurrency uploading + 1 being filled + 1 of slack) × part size = 48 MiB, for 256 MiB of archive
    assert streaming_mib(result) <= (CONCURRENCY + 2) * PART_MIB, result["peak_rss_kib"]


@pytest.mark.parametrize("approach", ["whole_body"])
def test_the_probe_sees_an_archive_held_in_memory(
    stack: LocalStack, resources: Resources, emulator: Emulator, bucket: str, token: str, approach: str
) -> None:
    # The same measurement on TikTok's sample approach, which holds the whole body: proof the probe
    # would catch a transfer that buffers the archive.
    result = measure(stack, resources, emulator, bucket, token, approach)

    assert streaming_mib(result) >= 256
