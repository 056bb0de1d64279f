"""The chat core: what ``/whereby`` does, whatever platform it was typed in.

The use-cases (start, list, end, help) and their rules live here: the limits, the room record, the Whereby points
the ports are paid from, and "only the person who started a room can end it". The adapters (``bridge.chat.mattermost``,
``bridge.chat.slack``) authenticate the request, read its fields and shape the answer; the sentences are the same on
every platform, marked up in the platform's own way (``Voice``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import ClientError

from bridge.chat.grammar import (
    DEFAULT_TOPIC,
    MIN_MINUTES,
    SLUG_FALLBACK,
    Command,
    EndRoom,
    Invalid,
    Limits,
    ListRooms,
    ShowHelp,
    ShowStats,
    StartRoom,
    topic_shown,
)
from bridge.core.errors import BridgeError, BudgetExhausted, PeerUnavailable, Throttled, Unauthorized
from bridge.core.i18n import DEFAULT_LANGUAGE, N_, Speech, speech
from bridge.core.observability import count, logger
from bridge.store.meetings import ACTIVE, CREATING, DELETED, Conflict, MeetingsStore, Room, channel_owner

if TYPE_CHECKING:
    # Imported where a room is made: the Slack route answers without loading an HTTP client (Slack waits 3 s).
    from bridge.whereby.client import Meeting, WherebyClient

LIST_LIMIT = 20
# A second /whereby with no topic in the same channel this soon after the first is the same meeting (a double
# submit, or a colleague who had not seen the post): the meeting plugins guard against it the same way.
RECENT_SECONDS = 30
STORAGE_TROUBLE = N_("The bridge could not reach its storage, so nothing changed. Please try again in a minute.")
# What a Whereby failure means for the room (``whereby_trouble``'s ``outcome``), as the callers name it.
ROOM_NOT_MADE = "No room was made"
ROOM_STILL_OPEN = "The room is still open"


@dataclass(frozen=True)
class Voice:
    """How one platform marks text up; ``literal`` shows what a person typed as plain text, nothing more."""

    platform: str  # named in sentences that send the caller to their administrator
    literal: Callable[[str], str]
    bold: Callable[[str], str]
    link: Callable[[str, str], str]  # (text, url)
    # (user id, name as the platform gave it): a person named in an answer, shown, never notified
    person: Callable[[str, str], str] = lambda user_id, name: name or user_id
    # The reader's language: each request's voice is the platform's with the caller's language
    # (``dataclasses.replace(VOICE, speech=...)``).
    speech: Speech = field(default_factory=speech)


@dataclass(frozen=True)
class Caller:
    team_id: str
    channel_id: str
    user_id: str
    user_name: str = ""
    trigger: str = "/whereby"  # as the admin named the command, so hints show what the user types

    @property
    def owner(self) -> str:
        return channel_owner(self.team_id, self.channel_id)


class Shelf(Protocol):
    """What listing a channel's rooms reads: the records, and the time."""

    @property
    def store(self) -> MeetingsStore: ...

    @property
    def clock(self) -> Callable[[], float]: ...


@dataclass(frozen=True)
class ShelfPorts:
    store: MeetingsStore
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class CommandPorts:
    store: MeetingsStore
    whereby: WherebyClient
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class Said:
    """A sentence for the caller (``in_channel``: for the whole channel)."""

    text: str
    in_channel: bool = False


@dataclass(frozen=True)
class RoomMade:
    """A room was made (or, for a retried request, had been): each adapter shapes the channel post and host link."""

    room: Room
    command: StartRoom


Outcome = Said | RoomMade


def run(command: Command, caller: Caller, limits: Limits, ports: CommandPorts, source: str, voice: Voice) -> Outcome:
    match command:
        case StartRoom():
            return start_room(command, caller, ports, source, voice)
        case ListRooms():
            return list_rooms(caller, ports, source, voice)
        case EndRoom():
            return end_room(command, caller, ports, source, voice)
        case ShowHelp():
            return Said(help_text(caller.trigger, limits, voice))
        case ShowStats():
            from bridge.chat.stats import channel_stats  # the statistics import this module

            return channel_stats(command, caller, ports, voice)
        case Invalid(problem=problem):
            return Said(invalid_text(problem, caller.trigger, voice.speech))
    # ExportMeetings: its link is signed with a key only the adapters hold (``bridge.chat.stats.export_link``).
    raise AssertionError(f"unhandled command {command!r}")


def invalid_text(problem: str, trigger: str, sp: Speech | None = None) -> str:
    return (sp or speech()).t(
        "{problem} Nothing was changed; `{trigger} help` shows how to use it.", problem=problem, trigger=trigger
    )


# use-cases ------------------------------------------------------------------------------------------------------
def start_room(
    command: StartRoom,
    caller: Caller,
    ports: CommandPorts,
    source: str,
    voice: Voice,
    room_key: str | None = None,
    request_id: str = "",
    response_url: str = "",
) -> Outcome:
    """Claim the record, create the room at Whereby, complete the record: the sweeper can finish any crash.

    ``room_key`` and ``request_id`` make a retried request idempotent: the key is derived from the request, so a
    second run finds the first run's record instead of claiming another (``start_once``).
    """
    now = int(ports.clock())
    if command.topic == DEFAULT_TOPIC:
        recent = recent_room(caller, ports, source, now)
        if recent is not None:
            count("RoomsNotDuplicated")
            return Said(recent_text(recent, caller, now, voice))
    room = Room(
        room_key=room_key or ports.store.new_room_key(),
        source=source,
        owner=caller.owner,
        creator=caller.user_id,
        creator_name=caller.user_name,
        label=command.topic,
        created_at=now,
        end_at=now + command.minutes * 60,
        request_id=request_id,
        response_url=response_url,
        language=voice.speech.language,
    )
    try:
        ports.store.claim_room(room)
    except Conflict:
        return Said(voice.speech.t(STORAGE_TROUBLE))
    return _make(room, command, ports, voice)


def start_once(
    command: StartRoom,
    caller: Caller,
    ports: CommandPorts,
    source: str,
    voice: Voice,
    request_id: str,
    response_url: str = "",
) -> Outcome | None:
    """``start_room`` for a request that may run again (a queue's redelivery): one room per ``request_id``.

    None when an earlier run settled the request without a room (Whereby refused; the caller was told then).
    """
    key = ports.store.request_room_key(request_id)
    found = ports.store.get_room(key)
    if found is None:
        return start_room(command, caller, ports, source, voice, key, request_id, response_url)
    if found.request_id != request_id:
        # Another request's key (a 35-bit collision): a fresh random key, and no idempotency for this rare one.
        return start_room(command, caller, ports, source, voice, response_url=response_url)
    logger.append_keys(room_key=found.room_key)
    if found.state == ACTIVE:
        return RoomMade(found, command)
    if found.state == CREATING:
        # The earlier run died between the claim and the record: make the room now (the sweeper deletes a room
        # the earlier run may have made, as no record owns it).
        return _make(found, command, ports, voice)
    return None


def _make(room: Room, command: StartRoom, ports: CommandPorts, voice: Voice) -> Outcome:
    logger.append_keys(room_key=room.room_key)
    try:
        meeting = _create_meeting(room, command.slug_source, ports)
    except BridgeError as exc:
        count("CommandsBusy" if isinstance(exc, BudgetExhausted) else "WherebyFailures")
        logger.warning("whereby did not create the room", extra={"reason": str(exc)})
        return Said(whereby_trouble(exc, ROOM_NOT_MADE, voice.platform, voice.speech))
    try:
        done = ports.store.complete_room(_with_meeting(room, meeting))
    except (Conflict, PeerUnavailable) as exc:
        _release(room.room_key, ports.store)  # the sweeper deletes the room at Whereby: no live record owns it
        logger.error("room made but not recorded", extra={"reason": str(exc), "meeting_id": meeting.meeting_id})
        return Said(
            voice.speech.t(
                "Whereby made the room but the bridge could not record it, so it will be removed. Please try again."
            )
        )
    count("RoomsCreated")
    logger.info(f"{room.source} room created", extra={"meeting_id": done.meeting_id})
    return RoomMade(done, command)


def list_rooms(caller: Caller, ports: Shelf, source: str, voice: Voice) -> Said:
    sp = voice.speech
    rooms = open_rooms(caller, ports)[:LIST_LIMIT]
    if not rooms:
        return Said(
            sp.t(
                "No Whereby room is open in this channel. Start one with `{trigger} [topic] [duration]`.",
                trigger=caller.trigger,
            )
        )
    title = voice.bold(sp.t("Open Whereby rooms in this channel"))
    lines = [sp.t("{title}, newest first:", title=title)]
    for room in rooms:
        shown = {
            "topic": voice.bold(voice.literal(topic_shown(room.label, sp))),
            "link": voice.link(room_name(room), room.room_url),
            "until": utc(room.end_at, sp),
        }
        if room.creator == caller.user_id:
            host = voice.link(sp.t("host link"), room.host_room_url)
            lines.append(sp.t("- {topic} · {link} · until {until} · yours ({host_link})", **shown, host_link=host))
        else:
            lines.append(sp.t("- {topic} · {link} · until {until}", **shown))
    return Said("\n".join(lines))


def end_room(command: EndRoom, caller: Caller, ports: CommandPorts, source: str, voice: Voice) -> Said:
    found = room_to_end(command, caller, ports, source, voice)
    if isinstance(found, str):
        return Said(found)
    logger.append_keys(room_key=found.room_key, meeting_id=found.meeting_id)
    try:
        ports.whereby.delete_meeting(found.meeting_id)
    except BridgeError as exc:
        count("WherebyFailures")
        logger.warning("whereby did not delete the room", extra={"reason": str(exc)})
        return Said(whereby_trouble(exc, ROOM_STILL_OPEN, voice.platform, voice.speech))
    ports.store.mark_deleted(found.room_key)
    count("RoomsEnded")
    label = voice.bold(voice.literal(topic_shown(found.label, voice.speech)))
    text = voice.speech.t(
        ":white_check_mark: The Whereby room {topic} has ended; its link no longer works.", topic=label
    )
    # Ending a room of another channel (named by its link) must not post into this one.
    return Said(text, in_channel=found.owner == caller.owner)


def room_to_end(command: EndRoom, caller: Caller, ports: CommandPorts, source: str, voice: Voice) -> Room | str:
    """The room to end, or why there is none (a sentence for the caller)."""
    sp = voice.speech
    if command.room_key is None:
        mine = [room for room in open_rooms(caller, ports) if room.creator == caller.user_id]
        if mine:
            return mine[0]
        return sp.t("You have no open room in this channel. `{trigger} list` shows them all.", trigger=caller.trigger)
    room = ports.store.get_room(command.room_key)
    if room is None or room.source != source or (room.owner != caller.owner and room.creator != caller.user_id):
        return sp.t(
            "No room “{reference}” was started in this channel. `{trigger} list` shows them all.",
            reference=voice.literal(command.reference),
            trigger=caller.trigger,
        )
    label = voice.bold(voice.literal(topic_shown(room.label, sp)))
    if room.creator != caller.user_id:
        return sp.t("Only the person who started {topic} can end it.", topic=label)
    if room.state == DELETED:
        return sp.t("{topic} has already ended.", topic=label)
    if room.state == CREATING or not room.meeting_id:
        return sp.t("{topic} is still being created; try again in a few seconds.", topic=label)
    return room


def recent_room(caller: Caller, ports: Shelf, source: str, now: int) -> Room | None:
    """The channel's room with no topic made in the last ``RECENT_SECONDS``, if any (newest first by index)."""
    for room in ports.store.rooms_of(caller.owner, limit=5):
        if now - room.created_at > RECENT_SECONDS:
            return None
        if room.source == source and room.state == ACTIVE and room.label == DEFAULT_TOPIC and room.end_at > now:
            return room
    return None


def recent_text(room: Room, caller: Caller, now: int, voice: Voice) -> str:
    sp = voice.speech
    seconds = max(1, now - room.created_at)
    join = voice.link(sp.t("join it"), room.room_url)
    if room.creator == caller.user_id:
        # Each translated piece is said before the sentence that holds it: extraction reads one call at a time.
        host_link = voice.link(sp.t("host link"), room.host_room_url)
        return sp.nt(
            "A room was started in this channel {n} second ago: {join}. Your host link: {host_link}. To start another"
            " one, give it a topic: `{trigger} [topic] [duration]`.",
            "A room was started in this channel {n} seconds ago: {join}. Your host link: {host_link}. To start"
            " another one, give it a topic: `{trigger} [topic] [duration]`.",
            seconds,
            join=join,
            host_link=host_link,
            trigger=caller.trigger,
        )
    return sp.nt(
        "A room was started in this channel {n} second ago: {join}. To start another one, give it a topic:"
        " `{trigger} [topic] [duration]`.",
        "A room was started in this channel {n} seconds ago: {join}. To start another one, give it a topic:"
        " `{trigger} [topic] [duration]`.",
        seconds,
        join=join,
        trigger=caller.trigger,
    )


def open_rooms(caller: Caller, ports: Shelf) -> list[Room]:
    now = ports.clock()
    return [
        room for room in ports.store.rooms_of(caller.owner, limit=100) if room.state == ACTIVE and room.end_at > now
    ]


def _create_meeting(room: Room, slug_source: str, ports: CommandPorts) -> Meeting:
    from bridge.whereby.client import RoomRequest

    request = RoomRequest(
        end_date=datetime.fromtimestamp(room.end_at, UTC), prefix=prefix_for(slug_source, room.room_key)
    )
    try:
        return ports.whereby.create_meeting(request)
    except Exception:
        # Give the claim up: if Whereby made the room before failing, no live record owns it and the sweeper
        # deletes it.
        _release(room.room_key, ports.store)
        raise


def prefix_for(slug_source: str, room_key: str) -> str:
    """The room-name prefix: slugged topic (or "meeting") and our key."""
    from bridge.whereby.client import PREFIX_MAX, room_prefix, slug

    return room_prefix(slug_source if slug(slug_source, PREFIX_MAX) else SLUG_FALLBACK, room_key)


def _with_meeting(room: Room, meeting: Meeting) -> Room:
    return replace(
        room,
        meeting_id=meeting.meeting_id,
        room_url=meeting.room_url,
        host_room_url=meeting.host_room_url,
        room_name=meeting.room_name,
    )


def _release(room_key: str, store: MeetingsStore) -> None:
    """Best effort: a claim left behind is still found by the sweeper."""
    with suppress(PeerUnavailable, ClientError):
        store.mark_deleted(room_key)


# sentences ------------------------------------------------------------------------------------------------------
def help_text(trigger: str, limits: Limits, voice: Voice) -> str:
    sp = voice.speech
    return "\n".join(
        [
            sp.t("{command} makes Whereby video rooms for this channel.", command=voice.bold(trigger)),
            sp.t(
                "- `{trigger} [topic] [duration]` starts a room: the link goes to the channel, the host link to you"
                " only. The duration is the last word, like `30m`, `2h` or `1h30m` (default {default}, at least"
                " {least} and at most {most}). People of this team you @mention are invited.",
                trigger=trigger,
                default=sp.minutes(limits.default_minutes),
                least=sp.minutes(MIN_MINUTES),
                most=sp.minutes(limits.max_minutes),
            ),
            sp.t(
                "- `{trigger} start [topic] [duration]` does the same for a topic that begins with help, list, end,"
                " stats, export, every, schedules, unschedule or start.",
                trigger=trigger,
            ),
            sp.t("- `{trigger} list` shows the open rooms of this channel.", trigger=trigger),
            sp.t(
                "- `{trigger} end [room]` ends your latest room here, or the room you name by its name or link. Only"
                " the person who started a room can end it.",
                trigger=trigger,
            ),
            sp.t(
                "- `{trigger} stats [7d|30d|90d]` shows this channel's meetings over the last 7, 30 (the default) or"
                " 90 days: how many, how long, the no-shows, the busiest hosts and a chart per week. Only you see it.",
                trigger=trigger,
            ),
            sp.t(
                "- `{trigger} export [7d|30d|90d]` gives you a link to a CSV of those meetings; it works for 15"
                " minutes.",
                trigger=trigger,
            ),
            sp.t(
                "- `{trigger} every weekday 09:00 Europe/Berlin [topic] [duration]` posts a room here a few minutes"
                " before each meeting (also `every day`, `every monday`, `every mon,wed,fri`); `{trigger} schedules`"
                " lists this channel's schedules and `{trigger} unschedule <id>` cancels one.",
                trigger=trigger,
            ),
            sp.t("Example: `{trigger} Sprint review @alice 45m`", trigger=trigger),
        ]
    )


def whereby_trouble(exc: BridgeError, outcome: str, platform: str = "Mattermost", sp: Speech | None = None) -> str:
    """A human sentence for a Whereby failure; ``outcome`` (``ROOM_NOT_MADE``, ``ROOM_STILL_OPEN``) says what that
    means for the room. The cause and what to do are whole sentences each, so each language orders its own."""
    sp = sp or speech()
    made = outcome != ROOM_STILL_OPEN
    if isinstance(exc, Throttled):
        cause = busy_sentence(exc.retry_after, sp)
        then = (
            sp.t("No room was made; please try again then.")
            if made
            else sp.t("The room is still open; please try again then.")
        )
        return f"{cause} {then}"
    if isinstance(exc, PeerUnavailable):
        cause = sp.t("Whereby did not answer in time.")
        then = (
            sp.t("No room was made; please try again in a minute.")
            if made
            else sp.t("The room is still open; please try again in a minute.")
        )
        return f"{cause} {then}"
    status = getattr(exc, "status", None)
    if isinstance(exc, Unauthorized):
        cause = sp.t("Whereby refused the bridge's API key.")
    elif status:
        cause = sp.t("Whereby refused the request (HTTP {status}).", status=status)
    else:
        cause = sp.t("Whereby refused the request.")
    then = (
        sp.t("No room was made; please tell your {platform} administrator.", platform=platform)
        if made
        else sp.t("The room is still open; please tell your {platform} administrator.", platform=platform)
    )
    return f"{cause} {then}"


def busy_sentence(seconds: float | None, sp: Speech | None = None) -> str:
    """The sentence of a Whereby that asked us to wait ``seconds``."""
    sp = sp or speech()
    if seconds is None:
        return sp.t("Whereby is busy and asked us to wait a minute.")
    whole = max(1, math.ceil(seconds))
    if whole <= 90:
        return sp.nt(
            "Whereby is busy and asked us to wait {n} second.",
            "Whereby is busy and asked us to wait {n} seconds.",
            whole,
        )
    return sp.nt(
        "Whereby is busy and asked us to wait {n} minute.",
        "Whereby is busy and asked us to wait {n} minutes.",
        math.ceil(whole / 60),
    )


def utc(timestamp: int, sp: Speech | None = None) -> str:
    """A moment as a person reads it, in UTC. English keeps the ISO form it has always shown ("2025-03-05 14:00
    UTC"); the other languages name the weekday and the month as they write them ("mié, 5 mar, 14:00 UTC")."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    if sp is None or sp.language == DEFAULT_LANGUAGE:
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return sp.t("{moment} UTC", moment=sp.day_and_time(moment))


def room_name(room: Room) -> str:
    return room.room_name.lstrip("/")
