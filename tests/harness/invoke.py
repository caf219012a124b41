"""Invoke a handler in a process of its own, as a second Lambda container would.

``python -m tests.harness.invoke api|worker|lifecycle '<event JSON>' [remaining_ms]`` prints the handler's
result as one JSON line. Tests use it for deliveries that run at the same time as one in the test process.
"""

from __future__ import annotations

import json
import sys

from tests.harness.lambda_context import FakeLambdaContext
from tiktok_archive.handlers import api, lifecycle, worker


def main(argv: list[str]) -> None:
    trigger, event = argv[0], json.loads(argv[1])
    remaining_ms = int(argv[2]) if len(argv) > 2 else 900_000
    handler = {"api": api, "worker": worker, "sqs": worker, "lifecycle": lifecycle}[trigger].lambda_handler
    result = handler(event, FakeLambdaContext(f"{trigger}-second-container", remaining_ms))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
