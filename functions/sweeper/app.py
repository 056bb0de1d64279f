"""EventBridge schedule: delete rooms whose time is up and rooms no record owns."""

import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bridge import runtime
from bridge.core.observability import logger, metrics
from bridge.whereby.sweeper import close_all_clock, scheduled_run


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The schedule's input says nothing; an operator removing the stack sends {"mode": "close-all"} to end every room.
    closing_all = event.get("mode") == "close-all"
    clock = close_all_clock if closing_all else time.time
    settings = runtime.settings().require("sweep", "whereby")
    # Kommo OAuth refresh tokens die after 3 months unused: each run renews the pair when it is due.
    keep_alive = runtime.kommo_tokens().access_token if settings.kommo_subdomain else None
    # Never waits for Whereby points: a spent budget ends the run, and the next one goes on.
    whereby = lambda: runtime.whereby(points=runtime.background_points())  # noqa: E731
    # Rooms ended by a close-all did not run their time: nobody missed a meeting in them.
    expired = None if closing_all else runtime.room_expired()
    return scheduled_run(runtime.store(), whereby, settings, keep_alive, clock=clock, expired=expired)
