"""Scheduled entry point (EventBridge, every 15 minutes): re-drive lost status checks.

Each waiting request is checked by a chain of delayed messages; a chain can only be lost when a message
could not be sent, or ended in the dead-letter queue. This safety net finds waiting requests whose next
check is more than :data:`OVERDUE_FOR` late and checks them again, so no request waits forever unseen.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from tiktok_archive.handlers.entry import lambda_entry
from tiktok_archive.observability import logger, metrics
from tiktok_archive.runtime import start_invocation, status_checks

OVERDUE_FOR = timedelta(minutes=10)


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    """Lambda entry point for the sweeper's schedule."""
    start_invocation(context)
    redriven = status_checks().redrive(OVERDUE_FOR)
    metrics.add_metric(name="ChecksRedriven", unit=MetricUnit.Count, value=redriven)
    logger.info("sweep done", extra={"redriven": redriven})
    return {"redriven": redriven}
