"""One Logger and one Metrics for the whole package.

``log_event`` stays off everywhere: the raw events carry the Kommo and Mattermost tokens.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

SERVICE = "whereby-bridge"
NAMESPACE = "WherebyBridge"
REASON = "reason"  # the dimension that splits a refusal count by its cause

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def count(name: str, value: int = 1) -> None:
    """Add to a count metric; zero values are skipped so idle invocations publish nothing."""
    if value:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def count_reason(name: str, reason: str) -> None:
    """Add one to ``name`` and to ``name`` of this ``reason``: the total for alarms, a line per reason for graphs.

    ``reason`` must come from a short fixed list (each value is a metric of its own), never from the request. The
    shared Metrics gives its dimensions to everything it flushes, so the reason's count goes out at once, in a
    record of its own.
    """
    count(name)
    record = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    record.add_dimension(name=REASON, value=reason)
    record.add_metric(name=name, unit=MetricUnit.Count, value=1)
    record.flush_metrics()
