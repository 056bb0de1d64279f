"""The few domain errors every adapter translates its failures into.

The worker decides retry or give-up from these alone: ``Throttled`` and ``PeerUnavailable`` are worth retrying,
``Rejected`` is not (the peer refused what we sent), ``NotFound`` is an answer, not a failure. A ``Throttled`` job is
handed back to the queue rather than failed: waiting for Whereby's points is not a fault.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of the domain errors."""


class PeerUnavailable(BridgeError):
    """A peer timed out, refused the connection or answered 5xx; worth retrying later."""


class AnswerLost(PeerUnavailable):
    """The request may have been carried out but its answer never came (a read timeout, a dropped connection)."""


class Throttled(PeerUnavailable):
    """A peer answered 429; ``retry_after`` is how long it asked us to wait, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExhausted(Throttled):
    """Our own count of Whereby's points says wait (``retry_after`` seconds) before calling: no 429 was risked."""


class Rejected(BridgeError):
    """A peer refused the request itself (4xx other than 404/429): retrying the same request will not help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(BridgeError):
    """The thing asked for does not exist at the peer."""


class Unauthorized(Rejected):
    """The peer refused our credentials (401)."""
