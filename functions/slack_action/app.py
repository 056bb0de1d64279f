"""POST /slack/action: the Slack app's buttons (Interactivity Request URL), acknowledged at once; the worker ends
the room."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.chat import slack_action
from bridge.core.http_api import ApiRequest
from bridge.core.observability import logger, metrics


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return slack_action.answer(ApiRequest.of(event), runtime.slack_action())
