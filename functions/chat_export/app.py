"""GET /chat/export: the CSV of a channel's meetings, for a signed link that /whereby export gave.

The query string is a credential: it is read from the event and handed on, never logged (the event is not logged).
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.chat import export
from bridge.core.http_api import ApiRequest
from bridge.core.observability import logger, metrics


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return export.answer(ApiRequest.of(event), runtime.chat_export())
