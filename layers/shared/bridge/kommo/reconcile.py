"""Missed webhooks: Kommo's event log, read on a schedule, becomes the jobs a lost webhook would have enqueued.

Kommo drops a status webhook now and then. Without this, a deal that entered a stage gets no room, and a lost
deal's room lives until it expires. Every ``ReconcileSchedule`` the lead events since the saved checkpoint are read
and their jobs go through the same queue and worker as the webhooks' ones. A job's identity is the change's
(account, lead, action, status, time), and every step of the worker checks what is already done, so a webhook and
its reconciliation never make two rooms or two notes. A dropped webhook costs at most one period.

- Reading starts at the checkpoint minus ``OVERLAP_SECONDS`` (Kommo may list an event a little after its
  ``created_at``) and ends ``DELAY_SECONDS`` before now, in windows of at most an hour. Events enqueued by the
  previous run are remembered by id, so the overlap enqueues nothing twice.
- A window is all or nothing: its jobs are enqueued in (created_at, id) order once every page was read, and only
  then does the checkpoint move. A Kommo 429 or 5xx, or the page cap, ends the run and leaves the checkpoint where
  it was; the next run goes on. A window the cap cut short is made smaller for the next run, so a burst of events
  cannot stall the reading for good.
- Kommo allows 7 requests a second per integration, and the two workers use up to 6 of them: the reconciler's
  client is spaced at ``KOMMO_RECONCILE_REQUESTS_PER_SECOND`` (1 by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from bridge.core.config import Settings
from bridge.core.errors import BridgeError, PeerUnavailable, Throttled
from bridge.core.observability import count, logger
from bridge.kommo.client import LEAD_DELETED, LEAD_RESTORED, LEAD_STATUS_CHANGED, EventsPage, KommoEvent
from bridge.kommo.intake import leaves_for_no_rule
from bridge.kommo.jobs import CLOSE_ROOMS, ENSURE_ROOM, LEAVE_STAGE, RESTORE_LEAD, Job
from bridge.store.meetings import ReconcileState

EVENT_TYPES = (LEAD_STATUS_CHANGED, LEAD_DELETED, LEAD_RESTORED)
OVERLAP_SECONDS = 120
DELAY_SECONDS = 30
MAX_WINDOW_SECONDS = 3600
MAX_SEEN = 2000  # ids remembered for the overlap; past this the oldest are dropped (a repeat is harmless, only waste)


class EventSource(Protocol):
    def events_page(self, types: Sequence[str], created_from: int, created_to: int, page: int = 1) -> EventsPage: ...


class JobSink(Protocol):
    def send_all(self, jobs: Sequence[Job]) -> None: ...


class StateStore(Protocol):
    def reconcile_state(self) -> ReconcileState | None: ...

    def save_reconcile_state(self, state: ReconcileState) -> None: ...


@dataclass
class ReconcileSummary:
    events_read: int = 0
    jobs: dict[str, int] = field(default_factory=dict)  # enqueued, per job kind
    pages: int = 0
    windows: int = 0
    checkpoint: int | None = None  # every event created up to here is enqueued
    behind_seconds: int = 0  # how far the checkpoint is from where this run meant to get
    stopped: str = ""  # why the run ended early: cap, throttled, unavailable, rejected; "off" without Kommo

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


RECONCILE = "reconcile"


def job_for(event: KommoEvent, settings: Settings) -> Job | None:
    """The job the webhook of this change would have enqueued; None for changes the bridge does not act on."""
    account = settings.kommo_subdomain
    if event.type == LEAD_STATUS_CHANGED:
        if event.status_id in settings.stage_rules:
            kind = ENSURE_ROOM
        elif event.status_id in settings.closed_status_ids:
            kind = CLOSE_ROOMS
        elif leaves_for_no_rule(event.status_id, settings):
            kind = LEAVE_STAGE
        else:
            return None
        return Job(kind, account, event.entity_id, "status", event.status_id, event.created_at, source=RECONCILE)
    if event.type == LEAD_DELETED:
        return Job(CLOSE_ROOMS, account, event.entity_id, "delete", event.status_id, event.created_at, source=RECONCILE)
    if event.type == LEAD_RESTORED:
        return Job(
            RESTORE_LEAD, account, event.entity_id, "restore", event.status_id, event.created_at, source=RECONCILE
        )
    return None


def jobs_for(events: Iterable[KommoEvent], settings: Settings) -> list[Job]:
    """Jobs in the order the changes happened (created_at, then id), each once."""
    jobs: dict[str, Job] = {}
    for event in sorted(events, key=lambda e: (e.created_at, e.id)):
        job = job_for(event, settings)
        if job is not None:
            jobs.setdefault(job.dedup_id, job)
    return list(jobs.values())


def _recent(seen: dict[str, int], checkpoint: int) -> dict[str, int]:
    """The ids a later run may read again: those inside its overlap."""
    kept = sorted(((t, i) for i, t in seen.items() if t >= checkpoint - OVERLAP_SECONDS), reverse=True)
    return {i: t for t, i in kept[:MAX_SEEN]}


class _CapReached(Exception):
    """The page cap ended the reading of a window before its last page."""


def _read_window(
    kommo: EventSource, created_from: int, created_to: int, max_pages: int, summary: ReconcileSummary
) -> list[KommoEvent]:
    events: list[KommoEvent] = []
    page = 1
    while True:
        if summary.pages >= max_pages:
            raise _CapReached
        result = kommo.events_page(EVENT_TYPES, created_from, created_to, page)
        summary.pages += 1
        summary.events_read += len(result.events)
        events.extend(result.events)
        if not result.has_next:
            return events
        page += 1


def reconcile(
    kommo: EventSource,
    queue: JobSink,
    store: StateStore,
    settings: Settings,
    clock: Callable[[], float] = time.time,
    max_pages: int = 20,
) -> ReconcileSummary:
    summary = ReconcileSummary()
    if not settings.kommo_subdomain:
        summary.stopped = "off"
        logger.info("kommo reconciliation skipped: no Kommo account configured", extra=summary.as_dict())
        return summary
    now = int(clock())
    end = now - DELAY_SECONDS
    reason = ""
    try:
        _run(kommo, queue, store, settings, now, max_pages, summary)
    except Throttled as exc:
        summary.stopped, reason = "throttled", str(exc)
    except PeerUnavailable as exc:
        summary.stopped, reason = "unavailable", str(exc)
    except BridgeError as exc:
        summary.stopped, reason = "rejected", str(exc)
    if summary.checkpoint is not None:
        summary.behind_seconds = max(0, end - summary.checkpoint)
    count("ReconcileEventsRead", summary.events_read)
    count("ReconcileJobsEnqueued", sum(summary.jobs.values()))
    if summary.stopped:
        count("ReconcileBehind")
        logger.warning(
            "kommo reconciliation stopped early; the next run goes on from the checkpoint",
            extra={**summary.as_dict(), "reason": reason},
        )
    else:
        logger.info("kommo reconciliation done", extra=summary.as_dict())
    return summary


def _run(
    kommo: EventSource,
    queue: JobSink,
    store: StateStore,
    settings: Settings,
    now: int,
    max_pages: int,
    summary: ReconcileSummary,
) -> None:
    end = now - DELAY_SECONDS
    state = store.reconcile_state()
    if state is None:
        # No replay of history: the first run looks two periods back. That start is saved at once, so a first
        # run that fails leaves the next one the same start.
        state = ReconcileState(checkpoint=now - 2 * settings.reconcile_period_seconds)
        store.save_reconcile_state(state)
        created_from = state.checkpoint
    else:
        created_from = state.checkpoint - OVERLAP_SECONDS
    checkpoint = summary.checkpoint = state.checkpoint
    window = min(state.window_seconds or MAX_WINDOW_SECONDS, MAX_WINDOW_SECONDS)
    seen = dict(state.seen)
    while created_from <= end:
        if summary.pages >= max_pages:
            summary.stopped = "cap"
            return
        created_to = min(created_from + window - 1, end)
        try:
            events = _read_window(kommo, created_from, created_to, max_pages, summary)
        except _CapReached:
            summary.stopped = "cap"
            smaller = max(1, (created_to - created_from + 1) // 4)
            store.save_reconcile_state(ReconcileState(checkpoint, smaller, seen))
            return
        fresh = [event for event in events if event.id not in seen and job_for(event, settings)]
        jobs = jobs_for(fresh, settings)
        queue.send_all(jobs)
        for job in jobs:
            summary.jobs[job.kind] = summary.jobs.get(job.kind, 0) + 1
        seen.update((event.id, event.created_at) for event in fresh)
        checkpoint = max(checkpoint, created_to)
        seen = _recent(seen, checkpoint)
        window = min(window * 2, MAX_WINDOW_SECONDS)
        store.save_reconcile_state(ReconcileState(checkpoint, window, seen))
        summary.checkpoint = checkpoint
        summary.windows += 1
        created_from = created_to + 1
