"""One Logger and one Metrics for the whole package.

``log_event`` stays off everywhere: the raw events carry the Kommo and Mattermost tokens.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "whereby-bridge"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="WherebyBridge", service=SERVICE)


def count(name: str, value: int = 1) -> None:
    """Add to a count metric; zero values are skipped so idle invocations publish nothing."""
    if value:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
