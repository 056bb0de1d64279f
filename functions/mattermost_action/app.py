"""POST /mattermost/action: a click on the End button of a /whereby room's post, relayed by Mattermost's server."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.chat import mattermost_action
from bridge.core.http_api import ApiRequest
from bridge.core.observability import logger, metrics


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return mattermost_action.answer(ApiRequest.of(event), runtime.mattermost_action())
