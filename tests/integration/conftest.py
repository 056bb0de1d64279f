"""The local stack, started once per module in this process: moto server, simulators, gateway, queue pump."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.local import LocalConfig, LocalStack

# Failed jobs are tried again at once and the queue is polled often, so a DLQ round trip takes seconds, not minutes.
FAST = LocalConfig(port=0, sweeper=False, poll_interval=0.05, retry_delay=0.0, metrics=False, access_log=False)


@pytest.fixture(autouse=True)
def _aws_env() -> None:
    """Replaces the unit tier's fixture of the same name: that one removes AWS_ENDPOINT_URL before every test,
    which would send the running stack's functions to real AWS. The stack sets the AWS variables itself."""


@pytest.fixture(scope="module")
def local_stack() -> Iterator[LocalStack]:
    with LocalStack(FAST) as stack:
        yield stack
