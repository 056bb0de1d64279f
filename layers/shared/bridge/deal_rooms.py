"""Use-cases of the worker: a deal's rooms are opened when it enters a stage and closed when it ends.

Both are safe to run again: the queue retries a failed job, and each step checks what is already done. The order
of steps follows one rule: a room is recorded (claimed) before it is created at Whereby, and a room's record is
marked deleted only after Whereby deleted it, so a crash anywhere leaves a record the sweeper can finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from bridge.config import Settings, StageRule
from bridge.errors import PeerUnavailable
from bridge.jobs import CLOSE_ROOMS, ENSURE_ROOM, Job
from bridge.kommo import KommoClient
from bridge.meetings import ACTIVE, CREATING, Conflict, MeetingsStore, Room, lead_owner
from bridge.observability import count, logger
from bridge.whereby import RoomRequest, WherebyClient, room_prefix

WON, LOST = 142, 143
# Longer than the worker's timeout: a claim younger than this may belong to a worker still running.
CLAIM_LEASE_SECONDS = 120


class ClaimInProgress(PeerUnavailable):
    """Another worker is creating this lead's room right now; the queue retries the job later."""


@dataclass(frozen=True)
class DealPorts:
    store: MeetingsStore
    whereby: WherebyClient
    kommo: KommoClient
    clock: Callable[[], float] = time.time


def room_note(rule: StageRule, room: Room) -> str:
    ends = datetime.fromtimestamp(room.end_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Whereby video room for {rule.name}\n"
        f"Client link: {room.room_url}\n"
        f"Host link (for the deal owner only): {room.host_room_url}\n"
        f"Open until {ends}."
    )


def close_note(status_id: int | None, closed: int) -> str:
    why = {WON: "deal won", LOST: "deal lost"}.get(status_id or 0, "deal closed")
    rooms = "Video room" if closed == 1 else f"{closed} video rooms"
    return f"{rooms} closed: {why}."


def run_job(job: Job, settings: Settings, ports: DealPorts) -> str:
    """Apply one job; returns what happened, for the log. Raises to have the queue retry it."""
    logger.append_keys(lead_id=job.lead_id, job=job.kind, kommo_action=job.action)
    if job.kind == ENSURE_ROOM:
        rule = settings.stage_rules.get(job.status_id or 0)
        if rule is None:
            return "ignored: no stage rule for this status any more"
        return ensure_room(job, rule, settings, ports)
    if job.kind == CLOSE_ROOMS:
        return close_rooms(job, settings, ports)
    raise AssertionError(f"unknown job kind {job.kind}")


def ensure_room(job: Job, rule: StageRule, settings: Settings, ports: DealPorts, attempts: int = 3) -> str:
    owner = lead_owner(job.account, job.lead_id)
    slot = str(rule.status_id)
    for _ in range(attempts):
        lead = ports.store.get_lead(owner)
        current_key = lead.slots.get(slot)
        current = ports.store.get_room(current_key) if current_key else None
        now = ports.clock()
        if current and current.state == ACTIVE and current.end_at > now:
            # A close handed back behind this event (bridge.job_handback) must find it applied, or it would
            # delete the room of a deal that came back to this stage.
            ports.store.record_event(owner, job.event_at)
            return _finish(job.lead_id, current, rule, settings, ports, "exists")
        if lead.deleted or lead.is_stale(job.event_at):
            return "skipped: the deal has moved on since this event"
        if current and current.state == CREATING and now - current.created_at < CLAIM_LEASE_SECONDS:
            raise ClaimInProgress(f"lead {job.lead_id}: room {current.room_key} is being created")
        room = Room(
            room_key=ports.store.new_room_key(),
            source="kommo",
            owner=owner,
            slot=slot,
            label=rule.name,
            created_at=int(now),
            end_at=int(now) + rule.duration_minutes * 60,
        )
        try:
            ports.store.claim_lead_room(room, job.event_at, replaces=current_key)
        except Conflict:
            continue  # another delivery won or the lead moved on: look again
        if current and current.state == CREATING:
            count("AbandonedClaimsReplaced")
        return _finish(job.lead_id, _create(room, rule, ports), rule, settings, ports, "created")
    raise Conflict(f"lead {job.lead_id}: the room claim kept conflicting")


def _create(room: Room, rule: StageRule, ports: DealPorts) -> Room:
    request = RoomRequest(
        end_date=datetime.fromtimestamp(room.end_at, UTC),
        prefix=room_prefix(rule.prefix, room.room_key),
        room_mode=rule.room_mode,
        locked=rule.locked,
        recording=rule.recording,
    )
    try:
        meeting = ports.whereby.create_meeting(request)
    except Exception:
        # Give the claim up so the retry can claim afresh; if Whereby made the room before failing,
        # the sweeper finds it by its key and deletes it, since no live record owns it.
        ports.store.mark_deleted(room.room_key)
        raise
    logger.append_keys(meeting_id=meeting.meeting_id, room_key=room.room_key)
    done = ports.store.complete_room(
        replace(
            room,
            meeting_id=meeting.meeting_id,
            room_url=meeting.room_url,
            host_room_url=meeting.host_room_url,
            room_name=meeting.room_name,
        )
    )
    count("RoomsCreated")
    return done


def _finish(lead_id: int, room: Room, rule: StageRule, settings: Settings, ports: DealPorts, outcome: str) -> str:
    """The follow-ups of a room, each done once: the note, then the custom field."""
    if not room.note_posted:
        ports.kommo.add_note(lead_id, room_note(rule, room))
        ports.store.mark(room.room_key, note_posted=True)
        count("NotesPosted")
    if settings.meeting_field_id and not room.field_set:
        ports.kommo.set_text_field(lead_id, settings.meeting_field_id, room.meeting_id)
        ports.store.mark(room.room_key, field_set=True)
    return outcome


def close_rooms(job: Job, settings: Settings, ports: DealPorts) -> str:
    owner = lead_owner(job.account, job.lead_id)
    lead = ports.store.get_lead(owner)
    deleted = job.action == "delete"
    if not deleted and lead.last_event_at is not None and job.event_at < lead.last_event_at:
        return "skipped: the deal has moved on since this event"
    rooms = [room for room in (ports.store.get_room(key) for key in lead.slots.values()) if room]
    live = [room for room in rooms if room.state in (ACTIVE, CREATING)]
    for room in live:
        if room.meeting_id:
            ports.whereby.delete_meeting(room.meeting_id)
    if live and not deleted:
        ports.kommo.add_note(job.lead_id, close_note(job.status_id, len(live)))
        if settings.meeting_field_id:
            ports.kommo.set_text_field(job.lead_id, settings.meeting_field_id, None)
    for room in live:
        ports.store.mark_deleted(room.room_key)
    ports.store.record_close(owner, job.event_at, list(lead.slots), deleted)
    count("RoomsClosed", len(live))
    return f"closed {len(live)} room(s)"
