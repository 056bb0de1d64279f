"""POST /kommo/close: a deal was won, lost or deleted → a "close rooms" job in that deal's queue group."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.core.http_api import ApiRequest
from bridge.core.observability import logger, metrics
from bridge.kommo import intake as kommo_intake


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return kommo_intake.answer(ApiRequest.of(event), kommo_intake.close_job_kind, runtime.intake())
