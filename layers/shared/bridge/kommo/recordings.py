"""A recording or transcription of one of our rooms is ready: record it, and tell the deal with a link that lasts.

The note carries ``<api>/recordings/<link id>`` (``bridge.whereby.recording_link``), never Whereby's own link,
which dies within 12 hours. Each step is safe to run again, since Whereby delivers an event more than once: the
link is made once per Whereby recording (a second delivery finds it), and the note is posted once, with the same
``note_attempted``/``note_posted`` steps as a room's note.

Retention (Whereby never deletes the recordings it hosts): a recording of a deal is deleted by the sweep
``RecordingRetentionDays`` after its deal was won or lost, and at the next sweep after its deal was deleted; from
that moment its link answers 410. Recordings of chat rooms are recorded and left to the chat side.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bridge.core.config import ConfigError, Settings
from bridge.core.errors import Rejected, Unauthorized
from bridge.core.i18n import Speech, speech
from bridge.core.observability import count, logger
from bridge.kommo.client import KommoClient
from bridge.store.meetings import Conflict, Lead, MeetingsStore
from bridge.store.recordings import RECORDING, TRANSCRIPTION, Recording, RecordingsStore, link_hash
from bridge.whereby.client import ROOM_KEY_PATTERN
from bridge.whereby.events import WherebyEvent

READY_EVENTS = {"recording.finished": RECORDING, "transcription.finished": TRANSCRIPTION}
MEDIA_ID_FIELDS = {RECORDING: "recordingId", TRANSCRIPTION: "transcriptionId"}
DAY = 86400
# A recording's filename is the room name, "-", its start time and an extension (whereby-events.md §2).
_FILENAME_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z(\.[A-Za-z0-9]+)?$")


@dataclass(frozen=True)
class ReadyPorts:
    store: MeetingsStore
    kommo: KommoClient
    settings: Settings
    clock: Callable[[], float] = time.time
    speech: Callable[[], Speech] = speech  # the language of the deal's notes (``deal_rooms.account_speech``)


class RecordingPorts(Protocol):
    """What the use-case needs; the worker's ports for Whereby events provide it."""

    @property
    def store(self) -> MeetingsStore: ...

    @property
    def kommo(self) -> KommoClient: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def speech(self) -> Callable[[], Speech]: ...


def room_key_of(event: WherebyEvent) -> str | None:
    """Our room key in the event's room name (or, for older payloads without one, in the recording's filename)."""
    name = event.room_name or _FILENAME_SUFFIX.sub("", str(event.data.get("filename") or ""))
    match = ROOM_KEY_PATTERN.search(name.strip().lstrip("/").lower())
    return match.group(1) if match else None


def link_url(settings: Settings, link_id: str) -> str:
    if not settings.api_base_url:
        raise ConfigError("API_BASE_URL is required to give recordings a link")
    return f"{settings.api_base_url}/recordings/{link_id}"


def recording_note(kind: str, room_label: str, url: str, retention_days: int, sp: Speech | None = None) -> str:
    sp = sp or speech()
    if kind == TRANSCRIPTION:
        head = (
            sp.t("Transcript of the video meeting ({label}) is ready:", label=room_label)
            if room_label
            else sp.t("Transcript of the video meeting is ready:")
        )
    else:
        head = (
            sp.t("Recording of the video meeting ({label}) is ready:", label=room_label)
            if room_label
            else sp.t("Recording of the video meeting is ready:")
        )
    retention = sp.nt(
        "Each click opens it for a few minutes. It is deleted {n} day after the deal is won or lost, and at once if"
        " the deal is deleted.",
        "Each click opens it for a few minutes. It is deleted {n} days after the deal is won or lost, and at once if"
        " the deal is deleted.",
        retention_days,
    )
    return f"{head}\n{url}\n{retention}"


def retention_due(lead: Lead, retention_days: int) -> int | None:
    """When a deal's recordings are to be deleted: at once for a deleted deal, after the retention for a closed one."""
    if lead.deleted:
        return lead.closed_at or 0
    if lead.closed_at is not None:
        return lead.closed_at + retention_days * DAY
    return None


def on_recording_ready(event: WherebyEvent, ports: RecordingPorts) -> str:
    """Handle a ``recording.finished`` or ``transcription.finished`` event; returns what happened, for the log."""
    kind = READY_EVENTS.get(event.type)
    if kind is None:
        return f"ignored: {event.type} is not a finished recording"
    if str(event.data.get("storageType") or "WHEREBY_HOSTED") != "WHEREBY_HOSTED":
        return "ignored: kept in the organisation's own storage, where Whereby makes no links"
    media_id = str(event.data.get(MEDIA_ID_FIELDS[kind]) or "")
    room_key = room_key_of(event)
    if not media_id or room_key is None or not ports.store.owns_key(room_key):
        return "ignored: not a room of this stack"
    room = ports.store.get_room(room_key)
    if room is None:
        return "ignored: no record of this room any more"
    logger.append_keys(room_key=room_key, media=kind)
    recordings = RecordingsStore(ports.store)
    lead = room.owner if room.source == "kommo" else None
    link = recordings.media_link(kind, media_id)
    if link is None:
        link_id = secrets.token_urlsafe(24)
        recording = Recording(
            digest=link_hash(link_id),
            kind=kind,
            media_id=media_id,
            room_key=room_key,
            room_owner=room.owner,
            created_at=int(ports.clock()),
        )
        try:
            recordings.add(recording, link_id, lead)
            count("RecordingsStored")
        except Conflict:
            pass  # another delivery of this event made the link first: use that one
        link = recordings.media_link(kind, media_id)
        if link is None:
            raise Conflict(f"the link of {kind} {media_id} vanished while it was made")
    if lead is None:
        return "recorded: a chat room's recording, for the chat side to show"
    # Read after the recording was added to the lead: a close that began before that is seen here, and one that
    # begins after it finds the recording on the lead (schedule_deal_recordings).
    deal = ports.store.get_lead(lead)
    if (due := retention_due(deal, ports.settings.recording_retention_days)) is not None:
        recordings.schedule_deletion(link.digest, due)
    if deal.deleted:
        return "recorded: the deal is deleted, so no note, and the recording is deleted at the next sweep"
    return _note(kind, media_id, link.link_id, link.note_attempted, link.note_posted, room.label, lead, ports)


def _note(
    kind: str,
    media_id: str,
    link_id: str | None,
    attempted: bool,
    posted: bool,
    label: str,
    lead: str,
    ports: RecordingPorts,
) -> str:
    if posted or link_id is None:
        return "exists: the deal has its note"
    recordings = RecordingsStore(ports.store)
    lead_id = int(lead.rsplit("#", 1)[1])
    url = link_url(ports.settings, link_id)
    if attempted and ports.kommo.has_note(lead_id, url):
        count("NotesFoundOnRetry")
    else:
        recordings.mark_note(kind, media_id, attempted=True)
        text = recording_note(kind, label, url, ports.settings.recording_retention_days, ports.speech())
        try:
            ports.kommo.add_note(lead_id, text, url)
        except Rejected as exc:
            if isinstance(exc, Unauthorized):
                raise
            count("PermanentFailures")
            logger.error(
                "the recording note was refused for good and is given up",
                extra={"status": exc.status, "lead_id": lead_id},
            )
        count("NotesPosted")
    recordings.mark_note(kind, media_id, posted=True)
    return "noted: the deal has the recording's link"


def schedule_deal_recordings(owner: str, store: MeetingsStore, settings: Settings) -> int:
    """After a deal's close was recorded: have its recordings deleted when their retention ends. Returns how many.

    Runs after ``begin_close`` wrote the close, so a recording added to the lead before this read is scheduled
    here, and one added after it sees the close itself (``on_recording_ready``).
    """
    recordings = RecordingsStore(store)
    digests = recordings.of_lead(owner)
    if not digests:
        return 0
    due = retention_due(store.get_lead(owner), settings.recording_retention_days)
    if due is None:
        return 0
    for digest in digests:
        recordings.schedule_deletion(digest, due)
    count("RecordingsScheduledForDeletion", len(digests))
    return len(digests)
