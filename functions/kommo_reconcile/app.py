"""EventBridge schedule: enqueue the Kommo jobs whose webhooks never arrived, from Kommo's event log."""

import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.core.observability import logger, metrics
from bridge.kommo.reconcile import reconcile


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = runtime.settings().require("kommo", "reconcile")
    summary = reconcile(
        runtime.kommo_reconcile(),
        runtime.job_queue(),
        runtime.store(),
        settings,
        clock=time.time,
        max_pages=settings.reconcile_max_pages,
    )
    return summary.as_dict()
