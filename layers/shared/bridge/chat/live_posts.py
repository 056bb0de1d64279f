"""Channel posts that follow the meeting: when Whereby reports that a chat room's session ended, the channel learns
it once.

Each platform tells it its own way (``Teller``): with a bot token, the room's post (``Room.post_id``) is edited to
"Meeting ended · 34 min · 3 people"; without one, the line is a follow-up through the command's ``response_url``
while that still takes posts (30 minutes, 5 uses), and otherwise nothing is sent.

Once per session, whatever Whereby's duplicates and retries: the session record is flagged before the platform is
called and after it answered (``note_attempted``, ``note_posted``: the flags a deal's note uses, for the same
reason). A retry after an answer was lost tells the platform so (``repeat``): an edit that writes the same text
again changes nothing a person sees, and a follow-up, which would be a second message, is not sent again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.core.i18n import Speech, speech
from bridge.core.observability import count, logger
from bridge.store.meetings import MeetingsStore, Room, SessionRecord

# (room, its ended session, repeat) → what was done, for the log. Raises PeerUnavailable to be retried.
Teller = Callable[[Room, SessionRecord, bool], str]

FOLLOW_UP_SECONDS = 29 * 60  # response_url takes posts for 30 minutes after the command


@dataclass(frozen=True)
class LivePorts:
    store: MeetingsStore
    tellers: Mapping[str, Teller]  # by the room's source: "mattermost", "slack"


def session_ended(room: Room, record: SessionRecord, ports: LivePorts) -> int:
    """Tell the room's channel that a session ended; 1 when this call told it, 0 when it was told before or
    cannot be."""
    if record.note_posted:
        return 0
    teller = ports.tellers.get(room.source)
    if teller is None:
        return 0
    ports.store.mark_session(room.room_key, record.room_session_id, note_attempted=True)
    outcome = teller(room, record, record.note_attempted)
    ports.store.mark_session(room.room_key, record.room_session_id, note_posted=True)
    count("ChatPostsFollowed")
    logger.info("chat post followed the meeting", extra={"outcome": outcome})
    return 1


def ended_line(record: SessionRecord, sp: Speech | None = None) -> str:
    """ "Meeting ended · 34 min · 3 people": what a person scanning the channel wants to know (in English unless
    told: the room's language, ``Room.language``)."""
    sp = sp or speech()
    duration = sp.minutes(session_minutes(record))
    people = len(record.people)
    if not people:
        return sp.t("Meeting ended · {duration}", duration=duration)
    return sp.nt(
        "Meeting ended · {duration} · {n} person", "Meeting ended · {duration} · {n} people", people, duration=duration
    )


def session_minutes(record: SessionRecord) -> int:
    """The session's length in whole minutes, rounded to the nearest (a 20-second call is 0 min)."""
    if record.started_at is None or record.ended_at is None:
        return 0
    return max(0, round((record.ended_at - record.started_at) / 60))


def follow_up_open(room: Room, now: float) -> bool:
    """Whether the command's ``response_url`` still takes a post."""
    return bool(room.response_url) and now - room.created_at < FOLLOW_UP_SECONDS
