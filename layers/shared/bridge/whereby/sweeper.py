"""The sweep: no room outlives its purpose.

1. Rooms whose end has passed are deleted at Whereby and marked deleted; each is handed to ``expired`` first (the
   scheduled run's port: a deal's room goes to the worker, which tells a no-show on the deal), so a failed hand-over
   leaves the room live and the next run hands it over again. Whereby itself keeps such a room open
   for an hour and deletes it within a day; our users want the link dead when the meeting is over. Only expired
   records are read (the ``by_expiry`` index), so the cost follows the number of expired rooms, not the table.
2. Whereby's room list is walked (a few pages a run, resuming where the last run stopped) and every room of this
   stack is checked against its record: a room no live record owns is deleted (a crash or a failed POST left it),
   and a record a crash left half-made is completed from what Whereby has.
3. Recordings whose retention ended (``bridge.store.recordings``) are deleted at Whereby, which never deletes the
   recordings it hosts; like the expired rooms, only the due records are read. They run between 1 and 2 and share
   the run's delete cap.

Whereby's budget is 100 points a minute on the Build plan, shared by every caller: a delete costs 2 and a list
page 1, so a run deletes at most ``SWEEP_MAX_DELETES`` rooms and stops at the first 429; the next run goes on.

A cursor Whereby refuses (it answers 400 for a stale one) restarts the walk from the first page, so no saved
state can stop the clean-up for good. A run that fails anyway is counted (``SweepRunsFailed``, alarmed when it
repeats) and never keeps the Kommo OAuth keep-alive from running.

Its calls are paid from the background share of the stack's points budget: when that is spent (a bulk move is
running) the run stops at once with ``stopped="budget"`` rather than wait, and the next run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from bridge.core.config import Settings
from bridge.core.errors import BridgeError, BudgetExhausted, Rejected, Throttled, Unauthorized
from bridge.core.observability import count, logger
from bridge.store.meetings import ACTIVE, CREATING, Conflict, MeetingsStore, Room
from bridge.store.recordings import RecordingsStore
from bridge.whereby.client import Meeting, WherebyClient

# A record younger than this may still be in the hands of the worker or the command that claimed it.
CLAIM_GRACE_SECONDS = 120


def close_all_clock() -> float:
    """A clock past every room's end: a sweep with it deletes every live room (used before removing the stack)."""
    return float(2**40)


@dataclass
class SweepSummary:
    deleted: int = 0
    orphans: int = 0
    completed: int = 0
    failed: int = 0
    records_read: int = 0
    pages_read: int = 0
    stopped: str = ""  # why the run stopped early: "throttled", "budget", "cap", or "" when it finished
    # Whether this run's walk of Whereby's list began at the first page, and whether it reached the last one: a
    # removal repeats close-all runs until one walk from the first page to the last found nothing of ours.
    walk_from_start: bool = False
    walk_done: bool = False
    recordings_deleted: int = 0

    def as_dict(self) -> dict[str, int | str | bool]:
        return asdict(self)


class _Budget:
    def __init__(self, deletes: int) -> None:
        self.left = deletes

    def spend(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def sweep(
    store: MeetingsStore,
    whereby: WherebyClient,
    settings: Settings,
    clock: Callable[[], float] = time.time,
    expired: Callable[[Room], None] | None = None,
) -> SweepSummary:
    summary = SweepSummary()
    budget = _Budget(settings.sweep_max_deletes)
    now = clock()
    try:
        _delete_expired(store, whereby, int(now), budget, summary, expired)
        if not summary.stopped:
            _delete_due_recordings(RecordingsStore(store), whereby, int(now), budget, summary)
        if not summary.stopped:
            _reconcile(store, whereby, settings.sweep_max_pages, now, budget, summary)
    except BudgetExhausted as exc:
        summary.stopped = "budget"
        logger.info(
            "no whereby points left for the sweep; the next run goes on", extra={"retry_after": exc.retry_after}
        )
    except Throttled as exc:
        summary.stopped = "throttled"
        logger.warning("whereby throttled the sweep; the next run goes on", extra={"retry_after": exc.retry_after})
    count("SweepDeleted", summary.deleted)
    count("SweepOrphansDeleted", summary.orphans)
    count("SweepRecordsCompleted", summary.completed)
    count("SweepFailed", summary.failed)
    count("SweepRecordingsDeleted", summary.recordings_deleted)
    logger.info("sweep done", extra=summary.as_dict())
    return summary


def scheduled_run(
    store: MeetingsStore,
    whereby: Callable[[], WherebyClient],
    settings: Settings,
    keep_alive: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.time,
    expired: Callable[[Room], None] | None = None,
) -> dict[str, int | str | bool]:
    """One run of the schedule: the sweep, then the keep-alive, which a failed sweep must not skip.

    ``whereby`` builds the client inside the run, so an unreadable Whereby key fails the sweep, not the keep-alive.
    """
    failure: Exception | None = None
    summary: dict[str, int | str | bool]
    try:
        summary = sweep(store, whereby(), settings, clock=clock, expired=expired).as_dict()
    except Exception as exc:
        failure = exc
        summary = {"stopped": f"failed: {type(exc).__name__}"}
        count("SweepRunsFailed")
        logger.exception("the sweep failed; the next run tries again", extra={"reason": str(exc)})
    if keep_alive is not None:
        keep_alive()
    if failure is not None:
        raise failure
    return summary


def _delete_expired(
    store: MeetingsStore,
    whereby: WherebyClient,
    now: int,
    budget: _Budget,
    summary: SweepSummary,
    expired: Callable[[Room], None] | None = None,
) -> None:
    for room in store.expired(now, limit=50):
        summary.records_read += 1
        if room.meeting_id and not budget.spend():
            summary.stopped = "cap"
            return
        try:
            if room.meeting_id:
                whereby.delete_meeting(room.meeting_id)
            if expired is not None:
                expired(room)
            store.mark_deleted(room.room_key)
            summary.deleted += 1
        except Throttled:
            raise
        except BridgeError as exc:
            summary.failed += 1
            logger.warning("could not delete an expired room", extra={"room_key": room.room_key, "reason": str(exc)})


def _delete_due_recordings(
    recordings: RecordingsStore, whereby: WherebyClient, now: int, budget: _Budget, summary: SweepSummary
) -> None:
    """Recordings whose deal was deleted, or closed longer ago than the retention, are deleted at Whereby.

    They share the run's delete cap with the rooms: both are Whereby deletes, paid from the same points.
    """
    for recording in recordings.due(now, limit=50):
        summary.records_read += 1
        if not budget.spend():
            summary.stopped = "cap"
            return
        try:
            whereby.delete_media(recording.kind, recording.media_id)
            recordings.mark_deleted(recording, now)
            summary.recordings_deleted += 1
        except Throttled:
            raise
        except BridgeError as exc:
            summary.failed += 1
            logger.warning(
                "could not delete a recording whose retention ended",
                extra={"room_key": recording.room_key, "media": recording.kind, "reason": str(exc)},
            )


def _reconcile(
    store: MeetingsStore, whereby: WherebyClient, max_pages: int, now: float, budget: _Budget, summary: SweepSummary
) -> None:
    cursor = store.sweep_cursor()
    summary.walk_from_start = cursor is None
    for _ in range(max_pages):
        try:
            meetings, next_cursor = whereby.list_page(cursor)
        except Throttled:
            store.save_sweep_cursor(cursor)
            raise
        except Rejected as exc:
            if cursor is None or isinstance(exc, Unauthorized):
                raise
            count("SweepCursorRestarts")
            logger.warning("whereby refused the saved cursor; the walk starts again", extra={"reason": str(exc)})
            cursor = None
            store.save_sweep_cursor(None)
            summary.walk_from_start = True
            meetings, next_cursor = whereby.list_page(None)
        summary.pages_read += 1
        for meeting in meetings:
            if not _check(store, whereby, meeting, now, budget, summary):
                store.save_sweep_cursor(cursor)  # this page again next run
                summary.stopped = summary.stopped or "cap"
                return
        cursor = next_cursor
        if not cursor:
            summary.walk_done = True
            break
    store.save_sweep_cursor(cursor)


def _check(
    store: MeetingsStore, whereby: WherebyClient, meeting: Meeting, now: float, budget: _Budget, summary: SweepSummary
) -> bool:
    """Settle one room from Whereby's list; False when the delete budget ran out before it was settled."""
    key = meeting.room_key
    if not key or not store.owns_key(key):
        return True  # not a room of this stack
    record = store.get_room(key)
    if record and record.state == CREATING and now - record.created_at < CLAIM_GRACE_SECONDS:
        return True
    if record and record.state == CREATING:
        try:
            _complete(store, record, meeting)
            summary.completed += 1
        except Conflict:
            pass  # its owner finished or gave it up meanwhile; the next run sees the new state
        return True
    if record and record.state == ACTIVE and record.meeting_id == meeting.meeting_id:
        return True
    # No record, a deleted one, or an active one that names another meeting (a duplicate POST): a leak.
    if not budget.spend():
        return False
    try:
        whereby.delete_meeting(meeting.meeting_id)
    except Throttled:
        raise
    except BridgeError as exc:
        summary.failed += 1
        logger.warning("could not delete an orphaned room", extra={"room_key": key, "reason": str(exc)})
        return True
    summary.orphans += 1
    logger.info("orphaned room deleted", extra={"room_key": key, "record": record.state if record else "none"})
    return True


def _complete(store: MeetingsStore, record: Room, meeting: Meeting) -> None:
    """A claim whose room exists at Whereby: the crash came between the POST and the record. Finish the record."""
    done = replace(
        record,
        meeting_id=meeting.meeting_id,
        room_url=meeting.room_url,
        host_room_url=meeting.host_room_url,
        room_name=meeting.room_name,
    )
    store.complete_room(done)
    logger.info("half-made record completed from Whereby", extra={"room_key": record.room_key})
