"""POST /whereby/events: Whereby's webhook → verified, and enqueued for the worker when it is one of our rooms."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.core.http_api import ApiRequest
from bridge.core.observability import logger, metrics
from bridge.whereby import events


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return events.answer(ApiRequest.of(event), runtime.whereby_events())
