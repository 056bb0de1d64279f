"""How patient a caller is with a peer. Apart from ``peer_http`` so that building the ports does not load
``requests`` in a function that never calls a peer over HTTP."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    connect_timeout: float = 3.05
    read_timeout: float = 10.0
    backoff: float = 0.3
    max_wait: float = 5.0
