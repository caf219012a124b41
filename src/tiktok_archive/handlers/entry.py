"""What every Lambda entry point does around its handler, in one decorator.

Powertools' three wrappers, always together and always the same way: the Logger's Lambda context, with
its keys cleared at every invocation (a key one invocation appends, such as the caller, never reaches
the next) and never the event (it holds tokens and signatures); the Tracer's handler segment, without
the response (it holds presigned links); and the Metrics flush, with the cold-start count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.typing import LambdaContext

from tiktok_archive.observability import logger, metrics, tracer

R = TypeVar("R")
Handler = Callable[[dict[str, Any], LambdaContext], R]


def lambda_entry(correlation_id_path: str | None = None) -> Callable[[Handler[R]], Handler[R]]:
    """Wrap a Lambda handler with the service's logging, tracing and metrics.

    ``correlation_id_path``: where in the event the correlation id is (an API Gateway request id); a
    queue handler sets its own per message.
    """

    def wrap(handler: Handler[R]) -> Handler[R]:
        measured = metrics.log_metrics(handler, capture_cold_start_metric=True)
        traced = tracer.capture_lambda_handler(measured, capture_response=False)
        logged: Handler[R] = logger.inject_lambda_context(
            traced, correlation_id_path=correlation_id_path, log_event=False, clear_state=True
        )
        return logged

    return wrap
