"""GET /recordings/{id}: a note's stable recording link → 302 to a fresh, short-lived Whereby link.

The id is a credential: it is read from the path parameters and handed on, never logged (the event is not logged).
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.core.observability import logger, metrics
from bridge.whereby import recording_link


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    link_id = str((event.get("pathParameters") or {}).get("id") or "")
    accept_language = str((event.get("headers") or {}).get("accept-language") or "")
    return recording_link.answer(link_id, runtime.recording_links(), accept_language)
