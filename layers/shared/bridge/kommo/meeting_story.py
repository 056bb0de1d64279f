"""Use-cases of the worker for Whereby's events: what happened in a room becomes records, and a deal's notes.

Whereby delivers each event at least once and in any order, and the sweep adds its own word when a room's time has
passed. Each outcome is made idempotent by what it records, not by the order events come in:

- a session that ended is recorded once per ``roomSessionId`` (times, minutes and people from Whereby's insights,
  paid from the points budget), for chat rooms and deals alike; a deal gets one "Meeting held …" note per session,
  flagged on the session record before and after the post (as the room note is), so neither a copy of the event,
  nor a ``session.started`` arriving after the end, nor a retry after a lost answer makes a second one;
- a deal's room whose time passed with nobody in it gets one "No one joined …" note, flagged on the room record;
  Whereby's insights are asked first, so a session whose events were lost is told as held, not as a no-show;
- a recording or transcription that is ready gets its record and one note with a stable link
  (``bridge.kommo.recordings``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, tzinfo

from bridge.core.config import Settings
from bridge.core.errors import PeerUnavailable
from bridge.core.i18n import N_, Speech, speech
from bridge.core.observability import count, logger
from bridge.kommo.deal_rooms import DealPorts, _once, account_zone, day_and_time, every_language, local_time
from bridge.kommo.recordings import ReadyPorts, on_recording_ready
from bridge.store.meetings import Person, Room, SessionRecord
from bridge.whereby.client import Participant, RoomSession
from bridge.whereby.events import (
    CLIENT_JOINED,
    CLIENT_LEFT,
    RECORDING_FINISHED,
    ROOM_EXPIRED,
    SESSION_ENDED,
    SESSION_STARTED,
    TRANSCRIPTION_FINISHED,
    EventMessage,
    WherebyEvent,
)

# Roles that are Whereby's own bots, not people: they count in numClients but never attended.
BOT_ROLES = frozenset({"recorder", "streamer", "captioner", "assistant"})
GUEST = N_("guest")
ROLE_LABELS = {
    "host": N_("host"),
    "owner": N_("host"),
    "member": N_("member"),
    "visitor": GUEST,
    "granted_visitor": GUEST,
    "viewer": N_("viewer"),
    "granted_viewer": N_("viewer"),
}
EN_DASH = "\u2013"  # a range of times, as people write it


class SessionNotReady(PeerUnavailable):
    """Whereby's insights do not know the session yet (their freshness is undocumented): the queue retries."""


def run_event(message: EventMessage, settings: Settings, ports: DealPorts) -> str:
    """Apply one Whereby event (or the sweep's expiry); returns what happened, for the log. Raises to retry."""
    event = message.event
    key = event.room_key
    logger.append_keys(event_type=event.type, event_id=event.id, room_key=key)
    if key is None or not ports.store.owns_key(key):
        return "ignored: not a room of this stack"
    if ports.store.event_done(key, event.id):
        count("WherebyEventsDuplicated")
        return "duplicate: already handled"
    room = ports.store.get_room(key)
    outcome = "ignored: no record of this room (purged)" if room is None else _apply(event, room, settings, ports)
    ports.store.remember_event(key, event.id, ports.clock())
    return outcome


def _apply(event: WherebyEvent, room: Room, settings: Settings, ports: DealPorts) -> str:
    at = event.created_at_seconds or int(ports.clock())
    if event.type in (CLIENT_JOINED, CLIENT_LEFT, SESSION_STARTED):
        if event.type != CLIENT_LEFT:
            ports.store.note_activity(room.room_key, at)
        session_id = str(event.data.get("roomSessionId") or "")
        if event.type == SESSION_STARTED and session_id:
            ports.store.session_started(room.room_key, session_id, at, ports.clock(), room)
        return "recorded"
    if event.type == SESSION_ENDED:
        ports.store.note_activity(room.room_key, at)
        return held(room, str(event.data.get("roomSessionId") or "") or None, at, ports)
    if event.type == ROOM_EXPIRED:
        return no_show(room, ports)
    if event.type in (RECORDING_FINISHED, TRANSCRIPTION_FINISHED):
        ready = ReadyPorts(
            store=ports.store, kommo=ports.kommo, settings=settings, clock=ports.clock, speech=ports.speech
        )
        return on_recording_ready(event, ready)
    return f"ignored: {event.type}"


def held(room: Room, session_id: str | None, ended_hint: int, ports: DealPorts) -> str:
    """Record the room's ended session (or every ended one, when the event named none) and tell the deal once."""
    sessions = ports.whereby.room_sessions(room.room_name, session_id)
    if session_id:
        sessions = [s for s in sessions if s.room_session_id == session_id]
        if not sessions:
            raise SessionNotReady(f"whereby's insights have no session {session_id} of room {room.room_key} yet")
    told = 0
    for session in sessions:
        if session.ended_at is None and session.room_session_id != session_id:
            continue  # still running: its own session.ended comes later
        told += _tell(room, session, ended_hint, ports)
    return f"session(s) recorded, {told} note(s) posted"


def _tell(room: Room, session: RoomSession, ended_hint: int, ports: DealPorts) -> int:
    record = ports.store.get_session(room.room_key, session.room_session_id)
    if record and record.note_posted:
        return 0
    if record is None or not record.summarised:
        people = ports.whereby.participants(session.room_session_id)
        started = session.started_at or _first(p.joined_at for p in people)
        # Insights may not have closed the session yet when the event comes: the event's own time stands in.
        ended = session.ended_at or _last(p.left_at for p in people) or datetime.fromtimestamp(ended_hint, UTC)
        record = SessionRecord(
            room_key=room.room_key,
            room_session_id=session.room_session_id,
            started_at=int(started.timestamp()) if started else (record.started_at if record else None),
            ended_at=int(ended.timestamp()),
            participant_minutes=session.participant_minutes,
            people=attendees(people),
            summarised=True,
            note_attempted=record.note_attempted if record else False,
        )
        ports.store.save_session(record, ports.clock(), room)
        count("SessionsRecorded")
    if room.source != "kommo":
        # A chat room: its channel's post follows the meeting (edited, or a follow-up), once per session.
        return ports.chat_session_ended(room, record) if ports.chat_session_ended else 0
    lead_id = lead_of(room)
    # The session's id is in this note alone, whatever its language.
    marker = session.room_session_id
    if record.note_attempted and ports.kommo.has_note(lead_id, marker):
        count("NotesFoundOnRetry")
    else:
        ports.store.mark_session(room.room_key, session.room_session_id, note_attempted=True)
        sp = ports.speech()
        zone, name, remark = account_zone(ports, sp)
        text = held_note(record, zone, name, sp) + (f"\n{remark}" if remark else "")
        _once("the meeting-held note", lambda: ports.kommo.add_note(lead_id, text, marker))
        count("NotesPosted")
    ports.store.mark_session(room.room_key, session.room_session_id, note_posted=True)
    return 1


def no_show(room: Room, ports: DealPorts) -> str:
    """The deal's room is over: if nobody ever joined, say so once on the deal."""
    if room.source != "kommo":
        return "ignored: not a deal's room"
    story = ports.store.room_story(room.room_key)
    if story.noshow_posted:
        return "no-show already told"
    if story.activity_at is not None:
        return "not a no-show: someone joined"
    sessions = ports.whereby.room_sessions(room.room_name)
    if sessions:  # the events were lost, the meeting was not
        ended = [s for s in sessions if s.ended_at is not None]
        told = sum(_tell(room, s, int(ports.clock()), ports) for s in ended)
        return f"not a no-show: {len(sessions)} session(s) at Whereby, {told} note(s) posted"
    lead_id = lead_of(room)
    marker = every_language(lambda sp: noshow_marker(room, sp))
    if story.noshow_attempted and ports.kommo.has_note(lead_id, marker):
        count("NotesFoundOnRetry")
    else:
        ports.store.mark(room.room_key, noshow_attempted=True)
        sp = ports.speech()
        zone, name, remark = account_zone(ports, sp)
        text = noshow_note(room, zone, name, sp) + (f"\n{remark}" if remark else "")
        _once("the no-show note", lambda: ports.kommo.add_note(lead_id, text, marker))
        count("NoShows")
    ports.store.mark(room.room_key, noshow_posted=True)
    return "no-show told"


# The notes -----------------------------------------------------------------------------------------------------
def lead_of(room: Room) -> int:
    """The lead id of a deal's room (owner ``LEAD#<account>#<lead id>``)."""
    return int(room.owner.rsplit("#", 1)[-1])


def attendees(people: Sequence[Participant]) -> tuple[Person, ...]:
    """The people who joined, each once (a rejoin is a new participant at Whereby), bots left out."""
    seen: dict[tuple[str, str], Person] = {}
    for p in people:
        if p.role_name in BOT_ROLES:
            continue
        name = p.display_name.strip() or "Someone"
        seen.setdefault((name, p.role_name), Person(name, p.role_name))
    return tuple(seen.values())


def span(start: int, end: int, zone: tzinfo, sp: Speech | None = None) -> str:
    """``Thu 4 Dec, 14:02`` to ``14:36`` with an en dash between, or both days when the span crosses midnight."""
    first, last = datetime.fromtimestamp(start, zone), datetime.fromtimestamp(end, zone)
    until = f"{last:%H:%M}" if first.date() == last.date() else day_and_time(end, zone, sp)
    return f"{day_and_time(start, zone, sp)}{EN_DASH}{until}"


def session_marker(room_session_id: str, sp: Speech | None = None) -> str:
    return (sp or speech()).t("Whereby session {id}", id=room_session_id)


def role_of(role: str, sp: Speech) -> str:
    """A person's role at Whereby as the note names it; a role Whereby adds later is shown as it is."""
    label = ROLE_LABELS.get(role)
    return sp.t(label) if label else role or sp.t(GUEST)


def held_note(record: SessionRecord, zone: tzinfo = UTC, zone_name: str = "UTC", sp: Speech | None = None) -> str:
    sp = sp or speech()
    end = record.ended_at or 0
    start = record.started_at or end
    minutes = max(0, round((end - start) / 60))
    people = len(record.people)
    when = span(start, end, zone, sp)
    if people:
        who = ", ".join(sp.t("{name} ({role})", name=p.name, role=role_of(p.role, sp)) for p in record.people)
        head = sp.nt(
            "Meeting held {when} ({zone}, {minutes} min) · {n} person: {people}",
            "Meeting held {when} ({zone}, {minutes} min) · {n} people: {people}",
            people,
            when=when,
            zone=zone_name,
            minutes=minutes,
            people=who,
        )
    else:
        head = sp.t("Meeting held {when} ({zone}, {minutes} min)", when=when, zone=zone_name, minutes=minutes)
    return f"{head}\n{session_marker(record.room_session_id, sp)}"


def noshow_marker(room: Room, sp: Speech | None = None) -> str:
    return (sp or speech()).t("No one joined the meeting in room {room}", room=room.room_name.lstrip("/"))


def noshow_note(room: Room, zone: tzinfo = UTC, zone_name: str = "UTC", sp: Speech | None = None) -> str:
    sp = sp or speech()
    # The booked time when the deal gave one; otherwise the room's whole window.
    planned = (
        local_time(room.meeting_at, zone, zone_name, sp)
        if room.meeting_at
        else f"{span(room.created_at, room.end_at, zone, sp)} ({zone_name})"
    )
    said = sp.t("No one joined the meeting planned for {when}.", when=planned)
    return f"{said}\n{noshow_marker(room, sp)}"


def _first(times: Iterable[datetime | None]) -> datetime | None:
    return min((t for t in times if t is not None), default=None)


def _last(times: Iterable[datetime | None]) -> datetime | None:
    return max((t for t in times if t is not None), default=None)
