"""SQS FIFO consumer: runs the Kommo jobs (open a deal's room, close a deal's rooms)."""

from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.core.observability import logger, metrics
from bridge.kommo import job_runner


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return job_runner.process_batch(event, context, runtime.worker())
