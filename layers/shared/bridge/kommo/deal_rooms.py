"""Use-cases of the worker: a deal's rooms are opened when it enters a stage and closed when it ends.

Both are safe to run again: the queue retries a failed job, and each step checks what is already done. The order
of steps follows one rule: a room is recorded (claimed) before it is created at Whereby, and a room's record is
marked deleted only after Whereby deleted it, so a crash anywhere leaves a record the sweeper can finish.

A peer's permanent answer (``Rejected``: Kommo 400/402/403, a Whereby 4xx) is never retried: a follow-up that
cannot be done (a note, the custom field) is given up and counted (``PermanentFailures``, which raises an alarm),
and the job finishes the rest. Refused credentials (``Unauthorized``) are retried: an operator can fix them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from functools import partial
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.core.config import Settings, StageRule
from bridge.core.errors import NotFound, PeerUnavailable, Rejected, Unauthorized
from bridge.core.i18n import LANGUAGES, Speech, language_of, speech
from bridge.core.observability import count, logger
from bridge.kommo.client import KommoClient
from bridge.kommo.jobs import CLOSE_ROOMS, ENSURE_ROOM, LEAVE_STAGE, MEETING_TIME, RESTORE_LEAD, Job, meeting_time
from bridge.store.meetings import (
    ACTIVE,
    CREATING,
    DELETED,
    Closing,
    Conflict,
    MeetingsStore,
    Room,
    SessionRecord,
    lead_owner,
)
from bridge.whereby.client import RoomRequest, WherebyClient, room_prefix

WON, LOST = 142, 143
# Longer than the worker's timeout: a claim younger than this may belong to a worker still running.
CLAIM_LEASE_SECONDS = 120
# A room made for a meeting stays open this long after the meeting's planned end: calls overrun, and a client who
# is a few minutes late must not find a dead link. Short, because the room's end is when the sweeper deletes it.
MEETING_GRACE_SECONDS = 15 * 60


class ClaimInProgress(PeerUnavailable):
    """Another worker is creating this lead's room right now; the queue retries the job later."""


@dataclass(frozen=True)
class DealPorts:
    store: MeetingsStore
    whereby: WherebyClient
    kommo: KommoClient
    clock: Callable[[], float] = time.time
    # A chat room's ended session goes to the chat wing (``bridge.chat.live_posts``); this wing never imports it.
    chat_session_ended: Callable[[Room, SessionRecord], int] | None = None
    # The language of the deal's notes and tasks, asked only when one is written: ``account_speech`` in production.
    speech: Callable[[], Speech] = speech


def account_speech(kommo: KommoClient, default: str) -> Speech:
    """The Kommo account's language, or ``default`` (the stack's ``Language``) when it names none we have.

    The account is read in the same call as its time zone. When Kommo refuses to show it, the note is written in
    the stack's language rather than held back; an outage fails the job, as the note's own post would, and the
    queue retries it."""
    try:
        said = kommo.account_language()
    except (Rejected, NotFound) as exc:
        if isinstance(exc, Unauthorized):
            raise
        logger.warning("the account's language could not be read; notes use the stack's", extra={"reason": str(exc)})
        return speech(default)
    return speech(language_of(said, default))


def every_language(say: Callable[[Speech], str]) -> tuple[str, ...]:
    """A note's text in every language: a retry finds the note it made though the account's language changed."""
    return tuple(dict.fromkeys(say(speech(language)) for language in LANGUAGES))


def room_lines(sp: Speech, room: Room, until: str) -> list[str]:
    return [
        sp.t("Client link: {url}", url=room.room_url),
        sp.t("Host link (for the deal owner only): {url}", url=room.host_room_url),
        sp.t("Open until {when}.", when=until),
    ]


def room_note(rule: StageRule, room: Room, sp: Speech | None = None) -> str:
    sp = sp or speech()
    # A rule that follows no meeting time says the room's end in UTC, as it always has, with no zone to look up.
    ends = f"{day_and_time(room.end_at, UTC, sp)} UTC"
    return "\n".join([sp.t("Whereby video room for {stage}", stage=rule.name), *room_lines(sp, room, ends)])


def close_note(status_id: int | None, room_names: list[str], sp: Speech | None = None) -> str:
    sp = sp or speech()
    closed = len(room_names)
    if status_id == WON:
        head = sp.nt("Video room closed: deal won.", "{n} video rooms closed: deal won.", closed)
    elif status_id == LOST:
        head = sp.nt("Video room closed: deal lost.", "{n} video rooms closed: deal lost.", closed)
    else:
        head = sp.nt("Video room closed: deal closed.", "{n} video rooms closed: deal closed.", closed)
    # The room names tell people which links died, and with the head make a text a retry finds in any language.
    return "\n".join([head, *room_names])


def run_job(job: Job, settings: Settings, ports: DealPorts) -> str:
    """Apply one job; returns what happened, for the log. Raises to have the queue retry it."""
    logger.append_keys(lead_id=job.lead_id, job=job.kind, kommo_action=job.action)
    if job.kind == RESTORE_LEAD:
        return restore_lead(job, settings, ports)
    if job.kind == MEETING_TIME:
        rule = settings.stage_rules.get(job.status_id or 0)
        if rule is None or not rule.meeting_time_field_id:
            return "ignored: this status no longer follows a meeting time"
        return follow_meeting(job, rule, settings, ports)
    if job.kind == LEAVE_STAGE:
        return leave_stage(job, settings, ports)
    if not job.timed and job.action in ("status", "add"):
        settled = settle_untimed(job, ports)
        if isinstance(settled, str):
            return settled
        job = settled
    if job.kind == ENSURE_ROOM:
        rule = settings.stage_rules.get(job.status_id or 0)
        if rule is None:
            return "ignored: no stage rule for this status any more"
        return ensure_room(job, rule, settings, ports)
    if job.kind == CLOSE_ROOMS:
        return close_rooms(job, settings, ports)
    raise AssertionError(f"unknown job kind {job.kind}")


def settle_untimed(job: Job, ports: DealPorts) -> Job | str:
    """Give a change with no time in its body (a Digital Pipeline hook) the time Kommo has for it.

    Its ``event_at`` is our receive time. Kommo delivers a hook again when we failed to answer it (within about an
    hour for these hooks), so that time can be later than changes made after it, and a redelivered "entered Demo"
    would then override the "lost" that followed it. Kommo knows better: if the lead still sits in the status the
    hook names, the change is current and its time is the lead's ``updated_at``; if not, a later change superseded
    it, and that change's own event acts. Account hooks carry ``updated_at`` and never come here.
    """
    lead = ports.kommo.get_lead(job.lead_id)
    if lead is None:
        return "skipped: Kommo has no such lead any more"
    if lead.status_id != job.status_id:
        return f"skipped: the deal has moved on to status {lead.status_id} since this event"
    return replace(job, event_at=lead.updated_at, timed=True)


def ensure_room(job: Job, rule: StageRule, settings: Settings, ports: DealPorts, attempts: int = 3) -> str:
    owner = lead_owner(job.account, job.lead_id)
    slot = str(rule.status_id)
    meeting: list[int] = []  # the deal's meeting time, asked of Kommo at most once and only when a room is made
    for _ in range(attempts):
        lead = ports.store.get_lead(owner)
        current_key = lead.slots.get(slot)
        # The slot can name a record the TTL purged a month after the room was deleted: that is "no room".
        current = ports.store.get_room(current_key) if current_key else None
        now = ports.clock()
        if current and current.state == ACTIVE and current.end_at > now:
            # A close handed back behind this event (bridge.kommo.job_handback) must find it applied, or it would
            # delete the room of a deal that came back to this stage.
            ports.store.record_event(owner, job.event_at)
            ahead = job.meeting_at if job.meeting_at is not None and job.meeting_at > now else 0
            if rule.meeting_time_field_id and ahead and ahead != current.meeting_at:
                return follow_meeting(job, rule, settings, ports)  # back in the stage with another meeting time
            return _finish(job.lead_id, current, rule, settings, ports, "exists")
        if lead.deleted or lead.is_stale(job.event_at):
            return "skipped: the deal has moved on since this event"
        if current and current.state == CREATING and now - current.created_at < CLAIM_LEASE_SECONDS:
            raise ClaimInProgress(f"lead {job.lead_id}: room {current.room_key} is being created")
        if rule.meeting_time_field_id and not meeting:
            meeting.append(_meeting_of(job, rule, ports))
        meeting_at = meeting[0] if meeting and meeting[0] > now else 0
        # A reschedule's claim that was abandoned, or whose room Whereby refused, hands on what it had to finish:
        # the room it replaces (still live) and the task.
        heir = current if current and (current.state == CREATING or current.replaces) else None
        room = _new_room(ports, owner, rule, now, meeting_at, replaces=heir.replaces if heir else "", task_of=heir)
        retire = current is not None and current.state != DELETED
        try:
            ports.store.claim_lead_room(room, job.event_at, replaces=current_key, retire=retire)
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
    """The follow-ups of a room, each done once: the replaced room's deletion, the note, the custom field, the task.

    Each is recorded on the room when done, so a room whose follow-ups are all done costs no call to anyone.
    """
    if room.replaces:
        _delete_replaced(room, ports)
    if not room.note_posted:
        if room.note_attempted and ports.kommo.has_note(lead_id, room.room_url):
            count("NotesFoundOnRetry")
        else:
            ports.store.mark(room.room_key, note_attempted=True)
            sp = ports.speech()
            text = (
                meeting_note(rule, room, *account_zone(ports, sp), sp=sp)
                if rule.meeting_time_field_id
                else room_note(rule, room, sp)
            )
            _once("the room note", lambda: ports.kommo.add_note(lead_id, text, room.room_url))
            count("NotesPosted")
        ports.store.mark(room.room_key, note_posted=True)
    if (field_id := settings.meeting_field_id) and not room.field_set:
        _once("the meeting field", lambda: ports.kommo.set_text_field(lead_id, field_id, room.meeting_id))
        ports.store.mark(room.room_key, field_set=True)
    if rule.task and room.meeting_at:
        _meeting_task(lead_id, room, rule, ports)
    return outcome


def _once(what: str, call: Callable[[], object]) -> bool:
    """Run a follow-up; a permanent refusal gives it up for good (counted and logged) instead of failing the job.

    True when it was done. Anything else (an outage, refused credentials) raises, and the queue retries the job.
    """
    try:
        call()
    except Rejected as exc:
        if isinstance(exc, Unauthorized):
            raise
        count("PermanentFailures")
        logger.error(
            f"{what} was refused for good and is given up; the rest of the job goes on",
            extra={"reason": str(exc), "status": exc.status},
        )
        return False
    return True


def close_rooms(job: Job, settings: Settings, ports: DealPorts) -> str:
    """Delete the deal's rooms, then say so once, then clear the custom field.

    The close is recorded on the lead before anything is deleted, with the rooms it covers and which of its
    steps are done, so a retry after any failure resumes where it stopped instead of posting the note again.
    """
    owner = lead_owner(job.account, job.lead_id)
    deleted = job.action == "delete"
    lead = ports.store.get_lead(owner)
    closing = lead.closing if lead.closing and lead.closing.at == job.event_at else None
    if closing is None:
        if not deleted and lead.last_event_at is not None and job.event_at < lead.last_event_at:
            return "skipped: the deal has moved on since this event"
        closing = _begin_close(job, lead.slots, lead.closing, ports)
        if closing is None:
            return "skipped: a close at this time or later was already applied"
    closed = 0
    names: list[str] = []
    for key in closing.rooms:
        room = ports.store.get_room(key)
        names.append(room.room_name.lstrip("/") if room and room.room_name else key)
        if room is None or room.state == DELETED:
            closed += 1  # done by an earlier try, or by the sweeper
            continue
        if room.meeting_id and not _once(
            f"deleting room {room.room_key} at Whereby", partial(ports.whereby.delete_meeting, room.meeting_id)
        ):
            continue  # refused for good: the record stays live, so the sweeper tries again when it expires
        ports.store.mark_deleted(room.room_key)
        closed += 1
    if closing.rooms and not closing.deleted and not closing.note_done:
        # The whole note, as any language writes it: the room key alone is also in the room note's links.
        marker = every_language(partial(close_note, closing.status_id, names))
        if not (closing.note_attempted and ports.kommo.has_note(job.lead_id, marker)):
            ports.store.mark_closing(owner, closing.at, note_attempted=True)
            text = close_note(closing.status_id, names, ports.speech())
            _once("the close note", lambda: ports.kommo.add_note(job.lead_id, text, marker))
        ports.store.mark_closing(owner, closing.at, note=True)
    if closing.rooms and not closing.deleted and (field_id := settings.meeting_field_id) and not closing.field_done:
        _once("clearing the meeting field", lambda: ports.kommo.set_text_field(job.lead_id, field_id, None))
        ports.store.mark_closing(owner, closing.at, field=True)
    ports.store.finish_close(owner, closing.at)
    # Imported here: most closes have no recording, and the worker's cold start need not load that path.
    from bridge.kommo.recordings import schedule_deal_recordings

    schedule_deal_recordings(owner, ports.store, settings)
    count("RoomsClosed", closed)
    return f"closed {closed} room(s)"


def _begin_close(job: Job, slots: Mapping[str, str], unfinished: Closing | None, ports: DealPorts) -> Closing | None:
    """Record the close with the rooms live now (and those of a close that never finished); None if one was newer."""
    owner = lead_owner(job.account, job.lead_id)
    keys = dict.fromkeys([*(unfinished.rooms if unfinished else ()), *slots.values()])
    live = tuple(key for key in keys if (room := ports.store.get_room(key)) and room.state in (ACTIVE, CREATING))
    closing = Closing(at=job.event_at, status_id=job.status_id, deleted=job.action == "delete", rooms=live)
    if not ports.store.begin_close(owner, closing, list(slots)):
        return None
    return closing


def restore_lead(job: Job, settings: Settings, ports: DealPorts, attempts: int = 3) -> str:
    """A deal taken back from the trash can have rooms again; one restored into a configured stage gets its room."""
    owner = lead_owner(job.account, job.lead_id)
    for _ in range(attempts):
        lead = ports.store.get_lead(owner)
        if not lead.deleted:
            outcome = "not in the trash"
            break
        if ports.store.restore_lead(owner, job.event_at, lead.closed_at):
            outcome = "restored"
            count("LeadsRestored")
            break
    else:
        raise Conflict(f"lead {job.lead_id}: the restore kept conflicting")
    rule = settings.stage_rules.get(job.status_id or 0)
    if rule is None:
        return outcome
    return f"{outcome}, room " + ensure_room(replace(job, kind=ENSURE_ROOM), rule, settings, ports)


def changed_something(outcome: str) -> bool:
    """Whether a job's outcome changed a deal (a room made or closed, a lead restored), not merely found it done."""
    return (
        outcome == "created"
        or outcome.startswith(("restored", "not in the trash, room created"))
        or (outcome.startswith("closed ") and not outcome.startswith("closed 0 "))
    )


# ----- meetings planned ahead (rules with meeting_time_field_id) -----------------------------------------------------


def room_end(rule: StageRule, meeting_at: int, now: float) -> int:
    """Until the meeting's planned end and a grace; with no meeting ahead, ``duration_minutes`` from now."""
    if meeting_at > now:
        return meeting_at + rule.duration_minutes * 60 + MEETING_GRACE_SECONDS
    return int(now) + rule.duration_minutes * 60


def _new_room(
    ports: DealPorts, owner: str, rule: StageRule, now: float, meeting_at: int, replaces: str, task_of: Room | None
) -> Room:
    """The record of a deal's next room in the rule's stage; it takes over the task of ``task_of``, if any."""
    return Room(
        room_key=ports.store.new_room_key(),
        source="kommo",
        owner=owner,
        slot=str(rule.status_id),
        label=rule.name,
        created_at=int(now),
        end_at=room_end(rule, meeting_at, now),
        meeting_at=meeting_at,
        replaces=replaces,
        task_id=task_of.task_id if task_of else 0,
        task_due=task_of.task_due if task_of else 0,
    )


def covers(room: Room, rule: StageRule, meeting_at: int) -> bool:
    return room.end_at >= meeting_at + rule.duration_minutes * 60


def local_time(at: int, zone: tzinfo, zone_name: str, sp: Speech | None = None) -> str:
    """``Thu 4 Dec, 14:00 (Europe/Madrid)``: the day named, the zone spelt out."""
    return f"{day_and_time(at, zone, sp)} ({zone_name})"


def day_and_time(at: int, zone: tzinfo, sp: Speech | None = None) -> str:
    """``Thu 4 Dec, 14:00``, ``чт, 4 дек., 14:00``: a weekday and a day, so the date cannot be misread in any locale."""
    return (sp or speech()).day_and_time(datetime.fromtimestamp(at, zone))


def meeting_note(
    rule: StageRule, room: Room, zone: tzinfo, zone_name: str, remark: str = "", sp: Speech | None = None
) -> str:
    sp = sp or speech()
    if room.replaces:
        title = sp.t(
            "Whereby video room for {stage}; the meeting moved, these links replace the earlier ones", stage=rule.name
        )
    else:
        title = sp.t("Whereby video room for {stage}", stage=rule.name)
    lines = [title]
    if room.meeting_at:
        lines.append(sp.t("Meeting: {when}", when=local_time(room.meeting_at, zone, zone_name, sp)))
    lines += room_lines(sp, room, local_time(room.end_at, zone, zone_name, sp))
    if not room.meeting_at:
        lines.append(
            sp.t(
                "No meeting time ahead was set on the deal, so the room is open for {duration} from now.",
                duration=sp.minutes(rule.duration_minutes),
            )
        )
    if remark:
        lines.append(remark)
    return "\n".join(lines)


def account_zone(ports: DealPorts, sp: Speech | None = None) -> tuple[tzinfo, str, str]:
    """The account's time zone, its name, and a remark for the note when the times are shown in UTC instead."""
    sp = sp or speech()
    try:
        name = ports.kommo.account_timezone()
    except Rejected as exc:
        if isinstance(exc, Unauthorized):
            raise
        logger.warning("the account's time zone could not be read; notes show UTC", extra={"reason": str(exc)})
        return UTC, "UTC", sp.t("Times are in UTC: Kommo did not give the account's time zone.")
    if not name:
        return UTC, "UTC", sp.t("Times are in UTC: Kommo did not give the account's time zone.")
    try:
        return ZoneInfo(name), name, ""
    except (ZoneInfoNotFoundError, ValueError):
        # The runtime may lack the zone database (the tzdata package provides it); a UTC time is still right.
        logger.warning("unknown time zone; notes show UTC", extra={"timezone": name[:64]})
        return UTC, "UTC", sp.t("Times are in UTC: the account's time zone ({zone}) is not known here.", zone=name[:64])


def _meeting_of(job: Job, rule: StageRule, ports: DealPorts) -> int:
    """The meeting time the job carries, or, when it cannot say (reconciliation, pipeline hooks), Kommo's."""
    if job.meeting_at is not None:
        return job.meeting_at
    lead = ports.kommo.get_lead(job.lead_id)
    value = lead.field_value(rule.meeting_time_field_id or 0) if lead else None
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 0)
    return meeting_time(value if isinstance(value, str) else None)


def task_text(rule: StageRule, room: Room, sp: Speech | None = None) -> str:
    return (sp or speech()).t("Whereby meeting ({stage}). Client link: {url}", stage=rule.name, url=room.room_url)


def _meeting_task(lead_id: int, room: Room, rule: StageRule, ports: DealPorts) -> None:
    """The deal owner's Meeting task, made once and due at the meeting time; moved when the meeting moves."""
    if room.task_id > 0 and room.task_due != room.meeting_at:
        move = partial(ports.kommo.move_task, room.task_id, task_text(rule, room, ports.speech()), room.meeting_at)
        if _once("moving the task", move):
            count("TasksMoved")
        ports.store.mark(room.room_key, task_due=room.meeting_at)
        return
    if room.task_id:
        return  # made and due at the right time, or given up for good (-1)
    found = ports.kommo.find_task(lead_id, room.room_url) if room.task_attempted else None
    if found:
        count("TasksFoundOnRetry")
        ports.store.mark(room.room_key, task_id=found.task_id, task_due=found.complete_till)
        if found.complete_till != room.meeting_at:
            _meeting_task(lead_id, replace(room, task_id=found.task_id, task_due=found.complete_till), rule, ports)
        return
    lead = ports.kommo.get_lead(lead_id)
    if lead is None:
        return  # gone from Kommo: its close job follows
    ports.store.mark(room.room_key, task_attempted=True)
    text = task_text(rule, room, ports.speech())
    made: list[int] = []
    done = _once(
        "the meeting task",
        lambda: made.append(
            ports.kommo.add_task(
                lead_id,
                text,
                room.meeting_at,
                lead.responsible_user_id,
                request_id=f"wb-{room.room_key}",
                marker=room.room_url,
                duration_seconds=rule.duration_minutes * 60,
            )
        ),
    )
    if done:
        count("TasksCreated")
    ports.store.mark(room.room_key, task_id=made[0] if made else -1, task_due=room.meeting_at)


def _delete_replaced(room: Room, ports: DealPorts) -> None:
    """Delete the room this one replaced (the meeting moved later), at Whereby and then in the table."""
    old = ports.store.get_room(room.replaces)
    if old is not None and old.state != DELETED:
        if old.meeting_id and not _once(
            f"deleting replaced room {old.room_key}", partial(ports.whereby.delete_meeting, old.meeting_id)
        ):
            return  # refused for good: the record stays live and the sweeper deletes it when it expires
        ports.store.mark_deleted(old.room_key)
    ports.store.mark(room.room_key, replaces="")


def follow_meeting(job: Job, rule: StageRule, settings: Settings, ports: DealPorts) -> str:
    """The deal's meeting time changed (or an edit left it as it was): the room and the task follow.

    Every edit of the deal comes here, our own writes too (the meeting-id field); when the time is the one the
    room has, this reads two records and calls no one.
    """
    owner = lead_owner(job.account, job.lead_id)
    slot = str(rule.status_id)
    lead = ports.store.get_lead(owner)
    current_key = lead.slots.get(slot)
    current = ports.store.get_room(current_key) if current_key else None
    now = ports.clock()
    meeting_at = job.meeting_at if job.meeting_at is not None else _meeting_of(job, rule, ports)
    live = current is not None and current.state == ACTIVE and current.end_at > now
    if current is not None and current.state == CREATING:
        return ensure_room(replace(job, kind=ENSURE_ROOM, meeting_at=meeting_at), rule, settings, ports)
    if not live or current is None:
        if meeting_at <= now:
            return "ignored: no live room and no meeting time ahead"
        # The deal sits in the stage with no live room (it expired) and now has a meeting ahead: make one.
        return ensure_room(replace(job, kind=ENSURE_ROOM, meeting_at=meeting_at), rule, settings, ports)
    if meeting_at == current.meeting_at:
        return _finish(job.lead_id, current, rule, settings, ports, "unchanged")
    if meeting_at <= now:
        outcome = "unchanged: the meeting time was cleared or is past; the room stays until it ends or the deal closes"
        return _finish(job.lead_id, current, rule, settings, ports, outcome)
    if lead.deleted or lead.is_stale(job.event_at):
        return "skipped: the deal has moved on since this event"
    if covers(current, rule, meeting_at):
        ports.store.mark(current.room_key, meeting_at=meeting_at)
        ports.store.record_event(owner, job.event_at)
        count("MeetingsMoved")
        kept = replace(current, meeting_at=meeting_at)
        return _finish(job.lead_id, kept, rule, settings, ports, "kept: the room covers the new time")
    room = _new_room(ports, owner, rule, now, meeting_at, replaces=current.room_key, task_of=current)
    try:
        # The old room stays live until the new one exists, so the client's link works until there is another.
        ports.store.claim_lead_room(room, job.event_at, replaces=current.room_key, retire=False)
    except Conflict:
        raise Conflict(f"lead {job.lead_id}: the deal changed while its meeting moved; retried") from None
    count("MeetingsMoved")
    return _finish(job.lead_id, _create(room, rule, ports), rule, settings, ports, "moved: new room")


# ----- close_on_leave --------------------------------------------------------------------------------------------


def leave_note(rule: StageRule, room_name: str, sp: Speech | None = None) -> str:
    return (sp or speech()).t("Video room closed: the deal left {stage}.", stage=rule.name) + f"\n{room_name}"


def leave_stage(job: Job, settings: Settings, ports: DealPorts) -> str:
    """The deal moved on to an open stage with no rule: rooms of rules with ``close_on_leave`` close.

    Steps are recorded on the room (``leave``: deleting, noting, done), so a retry resumes instead of repeating.
    """
    owner = lead_owner(job.account, job.lead_id)
    lead = ports.store.get_lead(owner)
    if lead.deleted or lead.is_stale(job.event_at):
        return "skipped: the deal has moved on since this event"
    closed = 0
    now = ports.clock()
    for slot, key in lead.slots.items():
        rule = settings.stage_rules.get(int(slot)) if slot.isdigit() else None
        if rule is None or not rule.close_on_leave or slot == str(job.status_id):
            continue
        room = ports.store.get_room(key)
        if room is None or room.leave == "done" or (not room.leave and (room.state == DELETED or room.end_at <= now)):
            continue  # nothing live: closed by the deal's close, or ended, which is the sweeper's to delete
        if room.replaces:
            _delete_replaced(room, ports)  # a reschedule that did not finish: its old room goes too
        if not room.leave:
            ports.store.mark(room.room_key, leave="deleting")
        if room.state != DELETED:
            if room.meeting_id and not _once(
                f"deleting room {room.room_key} at Whereby", partial(ports.whereby.delete_meeting, room.meeting_id)
            ):
                continue
            ports.store.mark_deleted(room.room_key)
        name = room.room_name.lstrip("/") or room.room_key
        marker = every_language(partial(leave_note, rule, name))
        if not (room.leave == "noting" and ports.kommo.has_note(job.lead_id, marker)):
            ports.store.mark(room.room_key, leave="noting")
            text = leave_note(rule, name, ports.speech())
            _once("the leave note", partial(ports.kommo.add_note, job.lead_id, text, marker))
        if (field_id := settings.meeting_field_id) and room.field_set:
            _once("clearing the meeting field", partial(ports.kommo.set_text_field, job.lead_id, field_id, None))
        ports.store.mark(room.room_key, leave="done", field_set=False)
        closed += 1
    ports.store.record_event(owner, job.event_at)
    count("RoomsClosed", closed)
    return f"closed {closed} room(s) on leaving the stage"
