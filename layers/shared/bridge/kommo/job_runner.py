"""The worker's batch loop: each SQS record is one job, failures fail only their own message group.

On a FIFO queue a failed message must not be overtaken by the next event of the same deal, so the FIFO batch
processor fails that message and the rest of its group, and lets the other groups through. SQS then redelivers
the group in order; after the redrive policy's count the message lands in the dead-letter queue.

A job that can never succeed (not a job at all, or a peer's permanent refusal) is not retried: it goes to the
dead-letter queue at once, with its reason as a message attribute, and the group moves on.

Whereby calls are paid from the shared points budget; a job waits for points within this invocation, and one that
cannot get them in time, or that Whereby throttled anyway, is handed back to the queue instead of failing
(``bridge.kommo.job_handback``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from bridge.core.config import Settings
from bridge.core.errors import Rejected, Unauthorized
from bridge.core.observability import count, logger
from bridge.kommo.deal_rooms import DealPorts, changed_something, run_job
from bridge.kommo.job_handback import points_wait_seconds, run_or_hand_back
from bridge.kommo.jobs import Job, JobQueue, MalformedJob
from bridge.whereby.budget import Spender

if TYPE_CHECKING:
    from bridge.whereby.events import EventMessage

# How a Whereby event's message starts (``bridge.whereby.events.MESSAGE_FIELD``): a Kommo job never holds it. The
# events path is imported only for such a message, so a worker that runs Kommo jobs alone does not load it.
EVENT_MARK = re.compile(r'\s*\{\s*"whereby_event"\s*:')


@dataclass(frozen=True)
class WorkerRuntime:
    """What the worker needs from the production ports (``bridge.runtime.worker``)."""

    settings: Callable[[], Settings]
    deal_ports: Callable[[Spender | None], DealPorts]  # the store, Kommo, and Whereby paid from these points
    job_queue: Callable[[], JobQueue]
    dead_letter_queue: Callable[[], JobQueue]
    background_points: Callable[[float], Spender | None]
    # A chat platform's job (a Slack /whereby), ready to run; None for any other message. Raises ValueError for a
    # message that says it is one and cannot be read. Wired in bridge.runtime: this wing never imports the chat one.
    chat_job: Callable[[str], Callable[[], str] | None] = lambda body: None


def handle_record(record: SQSRecord, runtime: WorkerRuntime, points: Spender | None = None) -> str:
    try:
        chat = runtime.chat_job(record.body)
        # A Whereby event and a chat job carry their own fields; anything else is a Kommo job.
        event = _event_of(record.body) if chat is None else None
        job = Job.from_json(record.body) if event is None and chat is None else None
    except ValueError as exc:  # MalformedJob, or a chat or event message that cannot be read
        return dead_letter(record, runtime, str(exc))
    if chat is not None:
        return _chat_job(chat, record)
    ports = runtime.deal_ports(points)
    try:
        if event is not None:
            from bridge.kommo.meeting_story import run_event

            run = partial(run_event, event, runtime.settings().require("whereby"), ports)
            outcome = run_or_hand_back(event, run, partial(_resend_event, runtime.job_queue)) if points else run()
            logger.info("whereby event done", extra={"outcome": outcome, "event_type": event.event.type})
            return outcome
        assert job is not None
        settings = runtime.settings().require("kommo", "whereby")
        run = partial(run_job, job, settings, ports)
        # Without the shared count (WHEREBY_POINTS_PER_MINUTE=0) nothing paces the retries: a 429 fails the job.
        outcome = run_or_hand_back(job, run, lambda later: runtime.job_queue().send_all([later])) if points else run()
    except Rejected as exc:
        if isinstance(exc, Unauthorized):  # credentials an operator can fix: retried, then a redrive
            count("JobsFailed")
            logger.warning("job failed: credentials refused", extra={"reason": f"{type(exc).__name__}: {exc}"})
            raise
        return dead_letter(record, runtime, f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        count("JobsFailed")
        logger.warning(
            "job failed, SQS will retry it or move it to the dead-letter queue",
            extra={
                "reason": f"{type(exc).__name__}: {exc}",
                "receive_count": record.attributes.approximate_receive_count,
            },
        )
        raise
    if job.source != "webhook" and changed_something(outcome):
        # A change that only the reconciliation brought: one now and then is Kommo dropping a hook; many mean the
        # webhook is disabled (MissedWebhooksAlarm).
        count("MissedWebhooksRecovered")
    logger.info("job done", extra={"outcome": outcome, "source": job.source})
    return outcome


def _chat_job(run: Callable[[], str], record: SQSRecord) -> str:
    """A chat command: its failures are retried by SQS (the job keeps its own record of what it did)."""
    try:
        outcome = run()
    except Exception as exc:
        count("JobsFailed")
        logger.warning(
            "chat job failed, SQS will retry it or move it to the dead-letter queue",
            extra={
                "reason": f"{type(exc).__name__}: {exc}",
                "receive_count": record.attributes.approximate_receive_count,
            },
        )
        raise
    logger.info("chat job done", extra={"outcome": outcome})
    return outcome


def _event_of(body: str) -> EventMessage | None:
    if not EVENT_MARK.match(body):
        return None
    from bridge.whereby.events import MalformedEvent, event_message

    try:
        return event_message(body)
    except MalformedEvent as exc:
        raise MalformedJob(str(exc)) from None


def _resend_event(queue: Callable[[], JobQueue], later: EventMessage) -> None:
    queue().send_message(later.to_json(), later.group_id, later.dedup_id)


def dead_letter(record: SQSRecord, runtime: WorkerRuntime, reason: str) -> str:
    attributes = record.attributes
    runtime.dead_letter_queue().dead_letter(
        record.body, attributes.message_group_id or "", attributes.message_deduplication_id or "", reason
    )
    count("PermanentFailures")
    count("JobsDeadLettered")
    logger.error("job refused for good: moved to the dead-letter queue without retrying", extra={"reason": reason})
    return "dead-lettered: " + reason


def process_batch(event: dict[str, Any], context: Any, runtime: WorkerRuntime) -> PartialItemFailureResponse:
    processor = SqsFifoPartialProcessor(skip_group_on_error=True)
    # One deadline for the whole batch: once it passed, the jobs left go back to the queue if points are short.
    points = runtime.background_points(points_wait_seconds(context))
    handler = partial(handle_record, runtime=runtime, points=points)
    return process_partial_response(event=event, record_handler=handler, processor=processor, context=context)
