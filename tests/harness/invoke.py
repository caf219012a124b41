"""Invoke a function in a process of its own, as a second Lambda container would.

``python -m tests.harness.invoke '<event JSON>' [remaining_ms]``, run in the function's environment
(:meth:`tests.harness.functions.LambdaFunctions.environment`): the handler is the one ``_HANDLER`` names,
as Lambda's runtime finds it. Prints the handler's result as one JSON line. Tests use it for deliveries
that run at the same time as one in the test process.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from tests.harness.lambda_context import FakeLambdaContext


def main(argv: list[str]) -> None:
    event = json.loads(argv[0])
    remaining_ms = int(argv[1]) if len(argv) > 1 else 900_000
    module, _, name = os.environ["_HANDLER"].rpartition(".")
    handler = getattr(importlib.import_module(module), name)
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
    result = handler(event, FakeLambdaContext(f"{function}-second-container", remaining_ms))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
