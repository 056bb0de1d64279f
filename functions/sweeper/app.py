"""EventBridge schedule: delete rooms whose time is up and rooms no record owns."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.observability import logger, metrics
from bridge.sweeper import sweep


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The scheduler's input carries nothing the sweep needs; every run looks at the table and at Whereby afresh.
    summary = sweep(runtime.store(), runtime.whereby(), runtime.settings()).as_dict()
    # Kommo OAuth refresh tokens die after 3 months unused: each run renews the pair when it is due.
    if runtime.settings().kommo_subdomain:
        runtime.kommo_tokens().access_token()
    return summary
