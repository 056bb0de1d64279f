"""Whereby's webhook: verify the signature, read the event, keep only this stack's rooms, enqueue, answer.

Whereby waits 5 s and retries only a 5xx or a timeout (twice), so nothing slow happens here: the event becomes a
message on the job queue and the worker does the rest (``bridge.kommo.meeting_story``). The route loads no HTTP
client and never touches the table.

- Signature: ``Whereby-Signature: t=<unix seconds>,v1=<hex>[,v1=…]``, HMAC-SHA256 keyed with the webhook's signing
  secret over ``t + "." + the raw body`` exactly as received, compared in constant time against every ``v1`` and
  every secret we hold (two during a rotation); ``t`` must be within 300 s of our clock, either side. A bad or
  stale signature gets 401 and nothing is done.
- The whole Whereby organisation's events arrive here: a room without this stack's key gets 200 and is ignored, as
  are event types the bridge does not act on (a 4xx would be final for Whereby, and it is not the sender's fault).
- Delivery is at least once and out of order: the message's deduplication id is the event id (SQS drops a copy
  within five minutes), its group is the room (one room's events run one at a time), and the worker remembers the
  ids it handled, since a copy may come later than that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from bridge.core.config import Settings
from bridge.core.errors import PeerUnavailable
from bridge.core.http_api import ApiRequest, BadRequest, body_bytes, json_response
from bridge.core.observability import count, count_reason, logger
from bridge.core.queue_messages import tagged_message
from bridge.core.room_keys import room_key_of
from bridge.store.credentials import SecretError

if TYPE_CHECKING:
    from bridge.store.meetings import Room

SIGNATURE_HEADER = "whereby-signature"
TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 64 * 1024  # the largest documented event is under 1 KB

CLIENT_JOINED = "room.client.joined"
CLIENT_LEFT = "room.client.left"
SESSION_STARTED = "room.session.started"
SESSION_ENDED = "room.session.ended"
RECORDING_FINISHED = "recording.finished"
TRANSCRIPTION_FINISHED = "transcription.finished"
# Not Whereby's: the sweep's word that a room's time passed, so the worker can tell a no-show (same queue, same
# room group, so it runs after the room's own events).
ROOM_EXPIRED = "bridge.room.expired"
ACTED_ON = frozenset(
    {CLIENT_JOINED, CLIENT_LEFT, SESSION_STARTED, SESSION_ENDED, RECORDING_FINISHED, TRANSCRIPTION_FINISHED}
)

_RECORDING_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z(\.[A-Za-z0-9]+)?$")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")

RejectKind = Literal["signature", "stale", "malformed", "too-large"]
REJECT_KINDS: tuple[RejectKind, ...] = get_args(RejectKind)
IgnoreKind = Literal["type", "other-room"]
IGNORE_KINDS: tuple[IgnoreKind, ...] = get_args(IgnoreKind)


class EventRefused(Exception):
    """The request is refused; ``reason`` is short and safe to show the caller (never a secret or a digest)."""

    def __init__(self, status: int, reason: str, kind: RejectKind) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind


class MalformedEvent(ValueError):
    """A queue message that says it is a Whereby event but cannot be read; retrying it cannot help."""


@dataclass(frozen=True)
class WherebyEvent:
    id: str
    type: str
    created_at: str
    data: Mapping[str, Any]
    room_name: str  # the last path segment, lower case, no "/" (from the recording's filename when it has no room)

    @property
    def room_key(self) -> str | None:
        return room_key_of(self.room_name)

    @property
    def created_at_seconds(self) -> int | None:
        try:
            return int(datetime.fromisoformat(self.created_at.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return None

    def envelope(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "createdAt": self.created_at, "data": dict(self.data)}


def normalise_room_name(value: str) -> str:
    """``/name``, ``name`` or a room URL (with ``?roomKey=…``) → ``name``, lower case."""
    text = value.strip().split("?", 1)[0].split("#", 1)[0]
    return text.rstrip("/").rsplit("/", 1)[-1].lower()


def room_name_of(data: Mapping[str, Any]) -> str:
    room = data.get("roomName")
    if isinstance(room, str) and room.strip():
        return normalise_room_name(room)
    filename = data.get("filename")
    if isinstance(filename, str) and _RECORDING_SUFFIX.search(filename):
        return normalise_room_name(_RECORDING_SUFFIX.sub("", filename))
    return ""


def event_from(envelope: object) -> WherebyEvent:
    """The event in Whereby's envelope; ``ValueError`` saying what is missing when it is not one."""
    if not isinstance(envelope, Mapping):
        raise ValueError("body is not a JSON object")
    event_id, kind, data = envelope.get("id"), envelope.get("type"), envelope.get("data")
    if not isinstance(event_id, str) or not event_id.strip():
        raise ValueError("event has no id")
    if not isinstance(kind, str) or not kind:
        raise ValueError("event has no type")
    if not isinstance(data, Mapping):
        raise ValueError("event has no data object")
    created = envelope.get("createdAt")
    return WherebyEvent(
        id=event_id,
        type=kind,
        created_at=created if isinstance(created, str) else "",
        data=data,
        room_name=room_name_of(data),
    )


def parse_event(raw: bytes) -> WherebyEvent:
    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise EventRefused(400, "body is not JSON", "malformed") from None
    try:
        return event_from(envelope)
    except ValueError as exc:
        raise EventRefused(400, str(exc), "malformed") from None


def signature_parts(header: str | None) -> tuple[str, list[str]]:
    """``t`` and every ``v1`` of the header; a header without both is refused."""
    t, signatures = "", []
    for part in (header or "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            t = value.strip()
        elif key == "v1":
            signatures.append(value.strip().lower())
    if not header:
        raise EventRefused(401, "missing Whereby-Signature header", "signature")
    if not t.isdigit() or not signatures:
        raise EventRefused(401, "malformed Whereby-Signature header", "signature")
    return t, signatures


def verify_signature(
    raw: bytes, header: str | None, secrets: Sequence[str], now: float, tolerance: int = TOLERANCE_SECONDS
) -> None:
    """Return if one of ``secrets`` signed ``t.raw`` and ``t`` is within ``tolerance`` of ``now``; else refuse."""
    t, signatures = signature_parts(header)
    if abs(now - int(t)) > tolerance:
        raise EventRefused(401, f"signature timestamp outside the {tolerance} s window", "stale")
    signed = t.encode("ascii") + b"." + raw
    matched = False
    # Every pair is compared, so the time taken says nothing about which secret or entry came close.
    for secret in secrets:
        expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest().encode("ascii")
        for given in signatures:
            matched |= hmac.compare_digest(expected, given.encode("ascii", "replace"))
    if not matched:
        raise EventRefused(401, "signature does not match", "signature")


def sign(raw: bytes, secret: str, t: int) -> str:
    """The header Whereby would send for ``raw`` at ``t`` (the simulator and the tests sign with it)."""
    digest = hmac.new(secret.encode("utf-8"), str(t).encode("ascii") + b"." + raw, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


# The queue message ---------------------------------------------------------------------------------------------
MESSAGE_FIELD = "whereby_event"  # the worker tells an event from a Kommo job by this field


@dataclass(frozen=True)
class EventMessage:
    """A Whereby event on the job queue, as the worker gets it."""

    event: WherebyEvent
    generation: int = 0  # times the worker handed it back to wait for Whereby's points

    @property
    def group_id(self) -> str:
        return f"room:{self.event.room_key or self.event.room_name or 'unknown'}"

    @property
    def dedup_id(self) -> str:
        base = (
            self.event.id if _SAFE_ID.fullmatch(self.event.id) else hashlib.sha256(self.event.id.encode()).hexdigest()
        )
        return f"{base}-g{self.generation}" if self.generation else base

    def handed_back(self) -> EventMessage:
        return replace(self, generation=self.generation + 1)

    def to_json(self) -> str:
        body: dict[str, Any] = {MESSAGE_FIELD: self.event.envelope()}
        if self.generation:
            body["generation"] = self.generation
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def event_message(body: str) -> EventMessage | None:
    """The event a queue message carries; None when the message is not an event (a Kommo job)."""
    data = tagged_message(body, MESSAGE_FIELD)
    if data is None:
        return None
    try:
        event = event_from(data[MESSAGE_FIELD])
        generation = int(data.get("generation", 0))
    except (ValueError, TypeError) as exc:
        raise MalformedEvent(f"not a Whereby event: {exc}") from None
    if generation < 0:
        raise MalformedEvent(f"negative generation {generation}")
    return EventMessage(event, generation)


def expired_room_message(room: Room, now: float) -> EventMessage | None:
    """The sweep's word that a deal's room is over, for the worker to tell a no-show; None for other rooms.

    Only a deal's room has someone to tell (a chat room's channel is the chat wing's), and only a room that
    existed at Whereby could have been joined.
    """
    if room.source != "kommo" or not room.meeting_id or not room.room_name:
        return None
    created = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = WherebyEvent(
        id=f"expired-{room.room_key}",
        type=ROOM_EXPIRED,
        created_at=created,
        data={"roomName": room.room_name},
        room_name=normalise_room_name(room.room_name),
    )
    return EventMessage(event)


# The route -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventsRuntime:
    """What the events route needs from the production ports (``bridge.runtime.whereby_events``)."""

    settings: Callable[[], Settings]
    secrets: Callable[[], Sequence[str]]  # the signing secrets, read from the secret store
    is_ours: Callable[[str], bool]  # whether a room key is this stack's
    enqueue: Callable[[EventMessage], None]
    clock: Callable[[], float] = time.time


def accept_event(
    raw: bytes, header: str | None, ports: EventsRuntime
) -> tuple[Literal["enqueued"] | IgnoreKind, WherebyEvent]:
    """Verify and read one delivery, and enqueue it if the bridge acts on it; raises ``EventRefused``."""
    if len(raw) > MAX_BODY_BYTES:
        raise EventRefused(413, f"body larger than {MAX_BODY_BYTES} bytes", "too-large")
    # The signature first: nothing of an unsigned body is read.
    verify_signature(raw, header, ports.secrets(), ports.clock())
    event = parse_event(raw)
    if event.type not in ACTED_ON:
        return "type", event
    key = event.room_key
    if key is None or not ports.is_ours(key):
        return "other-room", event
    ports.enqueue(EventMessage(event))
    return "enqueued", event


def answer(request: ApiRequest, ports: EventsRuntime) -> dict[str, Any]:
    """The whole route: 401 for a bad signature, 400 for a body that is no event, 503 for an outage, else 200."""
    try:
        outcome, event = accept_event(body_bytes(request), request.headers.get(SIGNATURE_HEADER), ports)
    except BadRequest as exc:
        count_reason("WherebyEventsRejected", "malformed")
        return json_response(400, {"error": str(exc)})
    except EventRefused as exc:
        count_reason("WherebyEventsRejected", exc.kind)
        logger.warning("whereby event refused", extra={"status": exc.status, "reason": exc.reason})
        return json_response(exc.status, {"error": exc.reason})
    except (SecretError, PeerUnavailable) as exc:
        logger.error("whereby event not accepted, Whereby will retry", extra={"reason": str(exc)})
        return json_response(503, {"error": "temporarily unavailable, retry later"})
    if outcome != "enqueued":
        count_reason("WherebyEventsIgnored", outcome)
        logger.info("whereby event ignored", extra={"reason": outcome, "event_type": event.type})
        return json_response(200, {"ignored": outcome})
    count("WherebyEventsEnqueued")
    logger.info("whereby event accepted", extra={"event_type": event.type, "event_id": event.id})
    return json_response(200, {"accepted": event.type})
