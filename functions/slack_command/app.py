"""POST /slack/command: the Slack /whereby slash command, acknowledged at once; the worker makes the room."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.chat import slack as slack_command
from bridge.core.http_api import ApiRequest
from bridge.core.observability import logger, metrics


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return slack_command.answer(ApiRequest.of(event), runtime.slack())
