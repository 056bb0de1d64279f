"""Handing a throttled job back to the queue without spending one of its five tries.

When Whereby's points are spent (our own count says wait longer than this invocation can, or Whereby answered 429
because someone else spends the organisation's points too), failing the job would burn one of the message's five
receives: a bulk move would push healthy jobs into the dead-letter queue after half an hour and raise the failure
alarm. Instead the worker sends the same job again, as the next generation (a new deduplication id, the same
message group), and reports the message it got as done. Metric ``JobsDeferred``, not ``JobsFailed``.

Order: the copy goes behind the deal's later events, which may now run first. That is safe because every job
checks the deal's newest applied event first: an ensure-room older than a close or a later stage is skipped
(``Lead.is_stale`` and the claim's condition), and a close older than a later stage change is skipped too.

A job handed back ``MAX_HAND_BACKS`` times fails normally, so a job stuck behind a budget that never comes back
still ends in the dead-letter queue with a reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from bridge.core.errors import PeerUnavailable, Throttled
from bridge.core.observability import count, logger


class Resendable(Protocol):
    """A queue message that can be sent again as its next generation: a Kommo job or a Whereby event."""

    @property
    def generation(self) -> int: ...

    def handed_back(self: M) -> M: ...


M = TypeVar("M", bound=Resendable)

MAX_HAND_BACKS = 100
# The worker stops waiting for points when this much of its invocation is left (a third of a short one): the job's
# own calls (Whereby, the note in Kommo) need the rest, and a timed-out invocation would fail its whole batch.
CALL_ALLOWANCE_SECONDS = 20.0


class ThrottledTooLong(PeerUnavailable):
    """A job was handed back ``MAX_HAND_BACKS`` times and is still throttled: it fails like any other."""


def points_wait_seconds(context: Any) -> float:
    """How long the worker may wait for Whereby points in this invocation."""
    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 0.0
    return max(0.0, remaining - min(CALL_ALLOWANCE_SECONDS, remaining / 3))


def run_or_hand_back(message: M, run: Callable[[], str], resend: Callable[[M], None]) -> str:
    """``run()`` the message's work; if it is throttled, ``resend`` it as the next generation and call this one done."""
    try:
        return run()
    except Throttled as exc:
        if message.generation >= MAX_HAND_BACKS:
            raise ThrottledTooLong(f"handed back {message.generation} times and still throttled: {exc}") from exc
        later = message.handed_back()
        resend(later)  # raises if SQS refuses: then the message fails and is retried as before
        count("JobsDeferred")
        logger.info(
            "job handed back to the queue: Whereby's points are spent for now",
            extra={"reason": f"{type(exc).__name__}: {exc}", "generation": later.generation},
        )
        return f"handed back (generation {later.generation})"
