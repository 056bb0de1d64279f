"""EventBridge Scheduler: a recurring meeting is due; make its room and post it in its channel."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.chat.schedule_fire import fire
from bridge.core.observability import logger, metrics


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    return {"outcome": fire(event, runtime.schedule_fire_ports())}
