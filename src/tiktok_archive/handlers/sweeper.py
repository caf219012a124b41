"""Scheduled entry point (EventBridge Scheduler, every 15 minutes): the checks' floor, lost checks re-driven.

Each waiting request is checked by a chain of delayed messages, spaced so that all waiting requests'
checks fit the check budget. This run counts the waiting requests and stores the floor of that spacing,
then re-drives every chain that was lost (a message that could not be sent, or that ended in the
dead-letter queue), however many, within the invocation's deadline (see :class:`Sweep`).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from tiktok_archive.handlers.entry import lambda_entry
from tiktok_archive.observability import logger, metrics
from tiktok_archive.runtime import start_invocation, sweep


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for the sweeper's schedule."""
    deadline = start_invocation(context)
    outcome = sweep().run(deadline)
    metrics.add_metric(name="ChecksRedriven", unit=MetricUnit.Count, value=outcome.redriven)
    metrics.add_metric(name="WaitingRequests", unit=MetricUnit.Count, value=outcome.waiting)
    metrics.add_metric(name="CheckFloorSeconds", unit=MetricUnit.Seconds, value=outcome.floor_seconds)
    if not outcome.finished:
        metrics.add_metric(name="SweepsUnfinished", unit=MetricUnit.Count, value=1)
    result = {
        "redriven": outcome.redriven,
        "waiting": outcome.waiting,
        "floor_seconds": outcome.floor_seconds,
        "finished": outcome.finished,
    }
    logger.info("sweep done", extra=result)
    return result
