"""What the Kommo routes do between the HTTP request and the queue: authenticate, parse, choose, enqueue.

Kommo waits at most 2 s and disables a webhook after 100 failed deliveries in 2 hours, so nothing slow happens
here: every change becomes a job on the queue and the worker does the rest. Events the bridge does not act on
still get a 200, because a 4xx would count against the webhook too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bridge.core.config import Settings
from bridge.core.errors import PeerUnavailable
from bridge.core.http_api import ApiRequest, BadRequest, body_bytes, json_response, token_matches
from bridge.core.observability import count, count_reason, logger
from bridge.kommo.jobs import CLOSE_ROOMS, ENSURE_ROOM, LEAVE_STAGE, MEETING_TIME, RESTORE_LEAD, Job, JobQueue
from bridge.kommo.webhook import MAX_BODY_BYTES, KommoWebhook, LeadEvent, MalformedWebhook, parse_webhook
from bridge.store.credentials import SecretError

STAGE_ACTIONS = ("status", "add")

# Why a webhook was refused, as the ``reason`` dimension of ``WebhooksRejected`` (the dashboard draws one line each).
RejectKind = Literal["token", "too-large", "malformed", "other-account"]
REJECT_KINDS: tuple[RejectKind, ...] = get_args(RejectKind)


class WebhookRefused(Exception):
    """The request is refused as a whole; nothing was enqueued. ``reason`` is safe to show the caller."""

    def __init__(self, status: int, reason: str, kind: RejectKind) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class Intake:
    accepted: int
    ignored: int


Classifier = Callable[[LeadEvent, Settings], str | None]


def stage_job_kind(event: LeadEvent, settings: Settings) -> str | None:
    if event.action == "restore":
        return RESTORE_LEAD
    if event.action in STAGE_ACTIONS and event.status_id in settings.stage_rules:
        return ENSURE_ROOM
    if event.action == "update":
        # Every edit of a deal fires this, our own writes included; only a stage that follows a meeting-time field
        # cares, and the worker does nothing when the time is the one the room already has.
        rule = settings.stage_rules.get(event.status_id or 0)
        return MEETING_TIME if rule is not None and rule.meeting_time_field_id else None
    if event.action == "status" and leaves_for_no_rule(event.status_id, settings):
        return LEAVE_STAGE
    return None


def leaves_for_no_rule(status: int | None, settings: Settings) -> bool:
    """A move to an open stage with no rule, in an account where some rule closes its room on leaving."""
    if status is None or status in settings.stage_rules or status in settings.closed_status_ids:
        return False
    return any(rule.close_on_leave for rule in settings.stage_rules.values())


def meeting_field_of(event: LeadEvent, settings: Settings) -> int | None:
    rule = settings.stage_rules.get(event.status_id or 0)
    return rule.meeting_time_field_id if rule is not None else None


def close_job_kind(event: LeadEvent, settings: Settings) -> str | None:
    # A restore may be subscribed on either URL; both give the same job, which SQS or the worker deduplicates.
    if event.action == "restore":
        return RESTORE_LEAD
    if event.action == "delete":
        return CLOSE_ROOMS
    if event.action == "status" and event.status_id in settings.closed_status_ids:
        return CLOSE_ROOMS
    return None


def check_account(webhook: KommoWebhook, settings: Settings) -> None:
    if webhook.subdomain and webhook.subdomain == settings.kommo_subdomain:
        return
    if webhook.account_id is not None and webhook.account_id == settings.kommo_account_id:
        return
    raise WebhookRefused(403, "webhook is from another Kommo account", "other-account")


def accept_webhook(
    body: bytes,
    token: str | None,
    expected_tokens: Sequence[str],
    classify: Classifier,
    settings: Settings,
    queue: JobQueue,
    received_at: int,
) -> Intake:
    if not token_matches(token, expected_tokens):
        raise WebhookRefused(401, "missing or wrong token", "token")
    if len(body) > MAX_BODY_BYTES:
        raise WebhookRefused(413, f"body larger than {MAX_BODY_BYTES} bytes", "too-large")
    try:
        webhook = parse_webhook(body)
    except MalformedWebhook as exc:
        raise WebhookRefused(400, str(exc), "malformed") from None
    check_account(webhook, settings)
    jobs: list[Job] = []
    for event in webhook.events:
        kind = classify(event, settings)
        if kind:
            field_id = meeting_field_of(event, settings)
            jobs.append(Job.for_event(kind, settings.kommo_subdomain, event, received_at, field_id))
    unique = list({job.dedup_id: job for job in jobs}.values())
    queue.send_all(unique)
    return Intake(accepted=len(unique), ignored=webhook.ignored + len(webhook.events) - len(unique))


@dataclass(frozen=True)
class IntakeRuntime:
    """What a Kommo route needs from the production ports (``bridge.runtime.intake``)."""

    settings: Callable[[], Settings]
    tokens: Callable[[], Sequence[str]]  # the webhook tokens, read from the secret store
    queue: Callable[[], JobQueue]


def answer(event: ApiRequest, classify: Classifier, ports: IntakeRuntime) -> dict[str, Any]:
    """The whole Kommo route: refusals are 4xx with a short reason, outages 503 so Kommo delivers again."""
    try:
        intake = accept_webhook(
            body=body_bytes(event),
            token=(event.query_string_parameters or {}).get("token"),
            expected_tokens=ports.tokens(),
            classify=classify,
            settings=ports.settings().require("kommo"),
            queue=ports.queue(),
            received_at=int(time.time()),
        )
    except BadRequest as exc:
        count_reason("WebhooksRejected", "malformed")
        return json_response(400, {"error": str(exc)})
    except WebhookRefused as exc:
        count_reason("WebhooksRejected", exc.kind)
        logger.warning("kommo webhook refused", extra={"status": exc.status, "reason": exc.reason})
        return json_response(exc.status, {"error": exc.reason})
    except (SecretError, PeerUnavailable) as exc:
        logger.error("kommo webhook not accepted, Kommo will retry", extra={"reason": str(exc)})
        return json_response(503, {"error": "temporarily unavailable, retry later"})
    count("JobsEnqueued", intake.accepted)
    logger.info("kommo webhook accepted", extra={"accepted": intake.accepted, "ignored": intake.ignored})
    return json_response(200, {"accepted": intake.accepted, "ignored": intake.ignored})
