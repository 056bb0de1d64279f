"""Simulator of the Whereby Embedded REST API meeting endpoints (contracts/whereby.md §3-8).

It is deliberately stricter than the documented contract (unknown keys, repeated query parameters and
malformed values get a 400) so that client bugs show up in tests rather than in production.

Points budget (§8), off unless ``points_per_minute`` is given: each meeting call costs its points (read 1, delete 2,
write 3) within a window that opens at the first call after the previous one closed and lasts a minute divided by
``time_scale``; a call that would go over gets 429 with ``data.msLeft`` and ``Retry-After`` (the time until the
window closes, in real time), ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``. Refused
calls cost nothing. ``time_scale`` 20 runs the Build plan's "100 points a minute" as 100 points every 3 seconds.

Rooms come alive too (contracts/whereby-events.md): ``join``/``leave`` (or ``POST /_sim/rooms/join`` and
``/_sim/rooms/leave``) put people in a meeting's room and emit ``room.client.joined``/``left``, and
``room.session.started`` when a second person is in, ``room.session.ended`` when fewer than two are left (bots,
such as the recorder, do not count). Each event is delivered as Whereby does: a signed POST (``Whereby-Signature``,
HMAC-SHA256 of ``t.body`` with ``signing_secret``) to ``webhook_url``, at once or held until ``flush`` (then
optionally in reverse order), once or twice each. ``emit`` sends any other event the same way. The insights
endpoints (``/insights/room-sessions``, ``/insights/participants``) answer from those joins and cost a read.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import requests

from devstack.sim_server import (
    ControlHandler,
    Fault,
    Request,
    Response,
    SimError,
    SimServer,
    _control_object,
    empty_response,
    html_error,
    json_response,
    status_phrase,
)
from devstack.whereby_media import ACCESS_PREFIX, WherebyMedia

MEETINGS_PATH = "/v1/meetings"
ROOM_SESSIONS_PATH = "/v1/insights/room-sessions"
PARTICIPANTS_PATH = "/v1/insights/participants"
BOT_ROLES = frozenset({"recorder", "streamer", "captioner", "assistant"})
ROLE_NAMES = ("owner", "member", "host", "visitor", "granted_visitor", "viewer", "granted_viewer", *sorted(BOT_ROLES))
INSIGHTS_DEFAULT_LIMIT = 10
FIELD_NAMES = ("hostRoomUrl", "viewerRoomUrl")
ROOM_MODES = ("normal", "group")
ROOM_NAME_PATTERNS = ("uuid", "human-short")
TEMPLATE_TYPES = ("viewerMode",)
NESTED_REQUIRED_KEYS = {
    "recording": ("type", "destination", "startTrigger"),
    "liveTranscription": ("destination", "startTrigger"),
    "streaming": ("destination", "startTrigger"),
}
CREATE_KEYS = frozenset(
    {
        "endDate",
        "startDate",
        "isLocked",
        "roomMode",
        "roomNamePrefix",
        "roomNamePattern",
        "templateType",
        "fields",
        *NESTED_REQUIRED_KEYS,
    }
)
POINTS = {"GET": 1, "DELETE": 2, "POST": 3}  # read, delete, write (spec info.description)
PREFIX_MAX_LENGTH = 39
CLOCK_SKEW = timedelta(seconds=60)
DEFAULT_LIMIT, MAX_LIMIT = 50, 100
DEFAULT_MS_LEFT = 1000
HUMAN_SHORT_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
NOT_FOUND = "The requested resource doesn't exist"
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?")
_PREFIX = re.compile(r"[a-z0-9-]*")


def iso_utc(moment: datetime) -> str:
    """UTC with milliseconds and Z, the form the API answers with."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bad(detail: str) -> SimError:
    return SimError(400, detail)


@dataclass(frozen=True)
class CreateSpec:
    end: datetime
    prefix: str = ""
    pattern: str = "uuid"
    room_mode: str = "normal"
    is_locked: bool = False
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Meeting:
    seq: int
    room_path: str  # prefix + generated id, without the leading slash
    room_url: str
    start: datetime
    end: datetime
    host_room_url: str
    viewer_room_url: str
    room_mode: str
    is_locked: bool

    @property
    def meeting_id(self) -> str:
        return str(self.seq)

    def render(self, fields: Iterable[str]) -> dict[str, Any]:
        wanted = set(fields)
        body: dict[str, Any] = {
            "meetingId": self.meeting_id,
            "roomName": f"/{self.room_path}",
            "roomUrl": self.room_url,
            "startDate": iso_utc(self.start),
            "endDate": iso_utc(self.end),
        }
        if "hostRoomUrl" in wanted:
            body["hostRoomUrl"] = self.host_room_url
        if "viewerRoomUrl" in wanted:
            body["viewerRoomUrl"] = self.viewer_room_url
        return body


# ----- request validation (pure functions) -----


def parse_date_time(name: str, value: Any) -> datetime:
    if not isinstance(value, str) or not _DATE_TIME.fullmatch(value):
        raise _bad(f"{name} must be an ISO-8601 date-time, e.g. 2099-02-18T14:23:00.000Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _bad(f"{name} is not a valid date-time: {exc}") from exc
    # "By default in UTC but a timezone can be specified" (spec)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_end_date(value: Any, now: datetime) -> datetime:
    end = parse_date_time("endDate", value)
    if end < now - CLOCK_SKEW:
        raise _bad("endDate has to be the same or after the current date")
    return end.astimezone(UTC)


def normalise_prefix(value: Any) -> str:
    """Whereby lower-cases the prefix and strips whitespace before using it."""
    if not isinstance(value, str):
        raise _bad("roomNamePrefix must be a string")
    if len(value) > PREFIX_MAX_LENGTH:
        raise _bad(f"roomNamePrefix must be at most {PREFIX_MAX_LENGTH} characters")
    prefix = "".join(value.split()).lower()
    if not _PREFIX.fullmatch(prefix):
        raise _bad("roomNamePrefix may contain only a-z, 0-9 and '-'")
    return prefix


def parse_fields_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad("fields must be an array of strings")
    return _check_field_names(value)


def parse_fields_query(value: str | None) -> tuple[str, ...]:
    """`fields` in a query string is comma-separated (style: form, explode: false)."""
    if not value:
        return ()
    return _check_field_names(value.split(","))


def _check_field_names(names: list[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in FIELD_NAMES]
    if unknown:
        raise _bad(f"fields may only contain {', '.join(FIELD_NAMES)}; got {', '.join(unknown)}")
    return tuple(names)


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise _bad(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def _enum(body: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(key, default)
    if value not in allowed:
        raise _bad(f"{key} must be one of {', '.join(allowed)}")
    return value


def _boolean(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if type(value) is not bool:
        raise _bad(f"{key} must be a boolean")
    return value


def _check_nested(body: dict[str, Any], key: str, required: tuple[str, ...]) -> None:
    if key not in body:
        return
    value = body[key]
    if not isinstance(value, dict):
        raise _bad(f"{key} must be an object")
    missing = [name for name in required if name not in value]
    if missing:
        raise _bad(f"{key} is missing {', '.join(missing)}")


def parse_create(body: Any, now: datetime) -> CreateSpec:
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    unknown = sorted(set(body) - CREATE_KEYS)
    if unknown:
        raise _bad(f"unknown field(s): {', '.join(unknown)}")
    if "endDate" not in body:
        raise _bad("endDate is required")
    if "startDate" in body:
        parse_date_time("startDate", body["startDate"])  # deprecated: checked, then ignored
    for key, required in NESTED_REQUIRED_KEYS.items():
        _check_nested(body, key, required)
    spec = CreateSpec(
        end=parse_end_date(body["endDate"], now),
        prefix=normalise_prefix(body.get("roomNamePrefix", "")),
        pattern=_enum(body, "roomNamePattern", ROOM_NAME_PATTERNS, "uuid"),
        room_mode=_enum(body, "roomMode", ROOM_MODES, "normal"),
        is_locked=_boolean(body, "isLocked"),
        fields=parse_fields_list(body.get("fields", [])),
    )
    if "templateType" in body:
        _enum(body, "templateType", TEMPLATE_TYPES, "viewerMode")
        spec = replace(spec, room_mode="group", is_locked=True, fields=FIELD_NAMES)
    return spec


def check_query(request: Request, allowed: Iterable[str]) -> None:
    unknown = sorted(set(request.query_lists) - set(allowed))
    if unknown:
        raise _bad(f"unknown query parameter(s): {', '.join(unknown)}")
    repeated = sorted(key for key, values in request.query_lists.items() if len(values) > 1)
    if repeated:
        raise _bad(f"repeated query parameter(s): {', '.join(repeated)}; use one comma-separated value")


def room_id(pattern: str) -> str:
    if pattern == "human-short":
        return "".join(secrets.choice(HUMAN_SHORT_ALPHABET) for _ in range(6))
    return str(uuid.uuid4())


def meeting_id_from_path(path: str) -> str | None:
    head, _, meeting_id = path.rpartition("/")
    if head != MEETINGS_PATH or not meeting_id:
        return None
    return unquote(meeting_id)


# ----- rooms in use: people, sessions, events -----


@dataclass
class Attendance:
    participant_id: str
    room_path: str
    room_session_id: str
    display_name: str
    role_name: str
    joined_at: datetime
    external_id: str | None = None
    left_at: datetime | None = None

    def render(self) -> dict[str, Any]:
        return {
            "roomSessionId": self.room_session_id,
            "participantId": self.participant_id,
            "deviceId": f"device-{self.participant_id[:8]}",
            "userId": None,
            "roleName": self.role_name,
            "displayName": self.display_name,
            "joinedAt": iso_utc(self.joined_at),
            "leftAt": iso_utc(self.left_at) if self.left_at else None,
            "externalId": self.external_id,
            "tags": None,
        }


@dataclass
class Session:
    room_session_id: str
    room_path: str
    started_at: datetime | None = None  # set when a second person came in (room.session.started)
    ended_at: datetime | None = None


def moment(value: Any) -> datetime:
    """A control call's ``at``: unix seconds or ISO-8601; now when absent."""
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    return parse_date_time("at", value).astimezone(UTC)


def sign(body: bytes, secret: str, t: int) -> str:
    """Whereby's signature: HMAC-SHA256 of ``t.body`` keyed with the webhook's signing secret."""
    digest = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


# ----- the simulator -----


class WherebySimulator(SimServer):
    """In-process fake of https://api.whereby.dev/v1 meetings; see the module docstring."""

    # 429s drawn by set_fault_rate carry Retry-After: 0 (msLeft 0) so fault-rate runs stay fast.
    random_retry_after: float | None = 0.0

    def __init__(
        self,
        api_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        subdomain: str = "example",
        points_per_minute: int | None = None,
        time_scale: float = 1.0,
        webhook_url: str | None = None,
        signing_secret: str = "whsec_local_signing_secret",
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.subdomain = subdomain
        self.webhook_url = webhook_url
        self.signing_secret = signing_secret
        self.deliver_twice = False  # every event is POSTed twice, as Whereby's at-least-once delivery may
        self.hold_events = False  # events wait for flush() (in reverse order when flush(reverse=True))
        self._attendance: dict[str, Attendance] = {}  # participant id → who joined which room when
        self._sessions: dict[str, Session] = {}  # room session id → session
        self._current_session: dict[str, str] = {}  # room path → the session people are in now
        self._outbox: list[dict[str, Any]] = []
        self._emitted: list[dict[str, Any]] = []
        self._deliveries: list[dict[str, Any]] = []
        self._webhook_http = requests.Session()
        self._next_seq = 1  # not reset: a meeting id is never reused, as on the real service
        self._meetings: dict[str, Meeting] = {}
        self._cursors: dict[str, int] = {}
        self._points_used = 0
        self._initial_budget = (points_per_minute, time_scale)
        self._budget_limit: int | None = None
        self._window_seconds = 60.0
        self._window_opened = -math.inf
        self._window_used = 0
        self._refused = 0
        self.set_budget(points_per_minute, time_scale)
        self.media = WherebyMedia(lambda: self.root_url, self._lock)  # recordings and transcriptions

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def points_used(self) -> int:
        with self._lock:
            return self._points_used

    @property
    def budget_refusals(self) -> int:
        """429s answered because the points budget was spent (injected faults not included)."""
        with self._lock:
            return self._refused

    def meetings(self) -> list[dict[str, Any]]:
        with self._lock:
            return [meeting.render(("hostRoomUrl",)) for meeting in self._meetings.values()]

    def set_budget(self, points_per_minute: int | None, time_scale: float = 1.0) -> None:
        """Enforce ``points_per_minute`` (None: unlimited) in windows of 60 / ``time_scale`` seconds."""
        if points_per_minute is not None and points_per_minute < 1:
            raise ValueError("points_per_minute must be at least 1, or None for no budget")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        with self._lock:
            self._budget_limit = points_per_minute
            self._window_seconds = 60.0 / time_scale
            self._window_opened = -math.inf
            self._window_used = 0

    # ----- SimServer hooks -----

    def _reset_state(self) -> None:
        self._attendance.clear()
        self._sessions.clear()
        self._current_session.clear()
        self._outbox.clear()
        self._emitted.clear()
        self._deliveries.clear()
        self._meetings.clear()
        self._cursors.clear()
        self._points_used = 0
        self._refused = 0
        self.set_budget(*self._initial_budget)
        self.media.clear()

    def _authorized(self, request: Request) -> bool:
        # An access link carries its own token, as Whereby's storage links do: it is opened without the API key.
        return request.path.startswith(ACCESS_PREFIX) or request.bearer_token() == self.api_key

    def _unauthorized(self) -> Response:
        return json_response(401, {"error": "Access token is missing or invalid"})

    def _error_response(self, error: SimError) -> Response:
        return json_response(error.status, {"error": error.detail})

    def _fault_body(self, fault: Fault) -> Response:
        if fault.html:
            return html_error(fault.status)
        if fault.status == 429:
            return self._throttled(fault.retry_after)
        return json_response(fault.status, {"error": status_phrase(fault.status)})

    def _extra_control_routes(self) -> dict[tuple[str, str], ControlHandler]:
        return {
            ("GET", "/_sim/meetings"): lambda _: json_response(200, self.meetings()),
            ("POST", "/_sim/budget"): self._control_budget,
            ("POST", "/_sim/recordings"): lambda request: self.media.control_finish(request, self.finish_recording),
            ("GET", "/_sim/recordings"): lambda _: json_response(200, self.media.held()),
            ("POST", "/_sim/rooms/join"): self._control_join,
            ("POST", "/_sim/rooms/leave"): self._control_leave,
            ("POST", "/_sim/webhook"): self._control_webhook,
            ("POST", "/_sim/webhook/flush"): self._control_flush,
            ("GET", "/_sim/events"): lambda _: json_response(200, self.events()),
            ("GET", "/_sim/deliveries"): lambda _: json_response(200, self.deliveries()),
        }

    # ----- people in rooms, and the events they cause -----

    def configure_webhook(
        self,
        url: str | None,
        signing_secret: str | None = None,
        *,
        deliver_twice: bool = False,
        hold: bool = False,
    ) -> None:
        """Where and how events are delivered; ``url`` None keeps them in the event log only."""
        with self._lock:
            self.webhook_url = url
            if signing_secret is not None:
                self.signing_secret = signing_secret
            self.deliver_twice = deliver_twice
            self.hold_events = hold

    def join(
        self,
        room_name: str,
        display_name: str,
        role_name: str = "visitor",
        at: Any = None,
        external_id: str | None = None,
    ) -> str:
        """Someone enters a meeting's room; returns their participant id. Emits joined, and started at two people."""
        if role_name not in ROLE_NAMES:
            raise _bad(f"roleName must be one of {', '.join(ROLE_NAMES)}")
        when = moment(at)
        with self._lock:
            path = self._live_room(room_name)
            session_id = self._current_session.get(path)
            if session_id is None:
                session_id = str(uuid.uuid4())
                self._current_session[path] = session_id
                self._sessions[session_id] = Session(session_id, path)
            person = Attendance(str(uuid.uuid4()), path, session_id, display_name, role_name, when, external_id)
            self._attendance[person.participant_id] = person
            events = [self._client_event("room.client.joined", person, when)]
            session = self._sessions[session_id]
            if session.started_at is None and self._humans(path) >= 2:
                session.started_at = min(p.joined_at for p in self._present(path))
                events.append(self._event("room.session.started", self._session_data(session), when))
        self._send(events)
        return person.participant_id

    def leave(self, participant_id: str, at: Any = None) -> None:
        """Someone leaves; emits left, and ended when fewer than two people are left in a started session."""
        when = moment(at)
        with self._lock:
            person = self._attendance.get(participant_id)
            if person is None or person.left_at is not None:
                raise SimError(404, "no such participant in a room")
            person.left_at = when
            events = [self._client_event("room.client.left", person, when)]
            session = self._sessions[person.room_session_id]
            path = person.room_path
            if session.started_at is not None and session.ended_at is None and self._humans(path) < 2:
                session.ended_at = when
                events.append(self._event("room.session.ended", self._session_data(session), when))
                self._current_session.pop(path, None)  # whoever comes next starts a new session
            elif session.started_at is None and not self._present(path):
                self._current_session.pop(path, None)
        self._send(events)

    def emit(self, event_type: str, data: dict[str, Any], at: Any = None) -> dict[str, Any]:
        """Send any event (a recording that finished, …) as Whereby would; returns its envelope."""
        with self._lock:
            event = self._event(event_type, data, moment(at))
        self._send([event])
        return event

    def flush(self, reverse: bool = False) -> int:
        """Deliver the held events (newest first when ``reverse``); returns how many."""
        with self._lock:
            held, self._outbox = self._outbox, []
        for event in reversed(held) if reverse else held:
            self._deliver(event)
        return len(held)

    def events(self) -> list[dict[str, Any]]:
        """Every event emitted, in order."""
        with self._lock:
            return copy.deepcopy(self._emitted)

    def deliveries(self) -> list[dict[str, Any]]:
        """Every delivery attempt: the event id and type, and the status the endpoint answered (0: no answer)."""
        with self._lock:
            return copy.deepcopy(self._deliveries)

    def _send(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            if self.hold_events:
                self._outbox.extend(events)
                return
        for event in events:
            self._deliver(event)

    def _deliver(self, event: dict[str, Any]) -> None:
        with self._lock:
            url, secret, times = self.webhook_url, self.signing_secret, 2 if self.deliver_twice else 1
        if not url:
            return
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        for _ in range(times):
            headers = {"Content-Type": "application/json", "Whereby-Signature": sign(body, secret, int(time.time()))}
            try:
                status = self._webhook_http.post(url, data=body, headers=headers, timeout=5).status_code
            except requests.RequestException:
                status = 0
            with self._lock:
                self._deliveries.append({"id": event["id"], "type": event["type"], "status": status})

    def _event(self, event_type: str, data: dict[str, Any], when: datetime) -> dict[str, Any]:
        event = {
            "id": secrets.token_hex(32),
            "apiVersion": "1.0",
            "createdAt": iso_utc(when),
            "type": event_type,
            "data": data,
        }
        self._emitted.append(copy.deepcopy(event))
        return event

    def _client_event(self, event_type: str, person: Attendance, when: datetime) -> dict[str, Any]:
        present = self._present(person.room_path)
        by_role: dict[str, int] = {}
        for p in present:
            by_role[p.role_name] = by_role.get(p.role_name, 0) + 1
        data = {
            "meetingId": self._meeting_of(person.room_path),
            "roomName": f"/{person.room_path}",
            "subdomain": self.subdomain,
            "roomSessionId": person.room_session_id,
            "participantId": person.participant_id,
            "displayName": person.display_name,
            "roleName": person.role_name,
            "numClients": len(present),
            "numClientsByRoleName": by_role,
            "isDialIn": False,
            "metadata": None,
            "externalId": person.external_id,
        }
        return self._event(event_type, data, when)

    def _session_data(self, session: Session) -> dict[str, Any]:
        return {
            "meetingId": self._meeting_of(session.room_path),
            "roomName": f"/{session.room_path}",
            "subdomain": self.subdomain,
            "roomSessionId": session.room_session_id,
        }

    def _present(self, path: str) -> list[Attendance]:
        return [p for p in self._attendance.values() if p.room_path == path and p.left_at is None]

    def _humans(self, path: str) -> int:
        return sum(1 for p in self._present(path) if p.role_name not in BOT_ROLES)

    def _live_room(self, room_name: str) -> str:
        path = room_name.strip().split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if not any(m.room_path == path for m in self._meetings.values()):
            raise SimError(404, f"no meeting has the room {path}")
        return path

    def _meeting_of(self, path: str) -> str:
        return next((m.meeting_id for m in self._meetings.values() if m.room_path == path), "")

    def _control_join(self, request: Request) -> Response:
        body = _control_object(request)
        participant = self.join(
            str(body["roomName"]),
            str(body.get("displayName") or "Guest"),
            str(body.get("roleName") or "visitor"),
            body.get("at"),
            body.get("externalId"),
        )
        return json_response(200, {"participantId": participant})

    def _control_leave(self, request: Request) -> Response:
        body = _control_object(request)
        self.leave(str(body["participantId"]), body.get("at"))
        return empty_response()

    def _control_webhook(self, request: Request) -> Response:
        body = _control_object(request)
        self.configure_webhook(
            body.get("url"),
            body.get("signing_secret"),
            deliver_twice=bool(body.get("deliver_twice", False)),
            hold=bool(body.get("hold", False)),
        )
        return empty_response()

    def _control_flush(self, request: Request) -> Response:
        body = _control_object(request) if request.body else {}
        return json_response(200, {"delivered": self.flush(bool(body.get("reverse", False)))})

    # ----- insights (answered with the lock held) -----

    def _room_sessions(self, request: Request) -> Response:
        check_query(request, ("roomName", "roomSessionId", "sortBy", "cursor", "limit"))
        room = request.query.get("roomName")
        if not room:
            raise _bad("roomName is required")
        path = room.lstrip("/")
        wanted = request.query.get("roomSessionId")
        now = datetime.now(UTC)
        found = [
            s
            for s in self._sessions.values()
            if s.room_path == path and s.started_at is not None and (not wanted or s.room_session_id == wanted)
        ]
        found.sort(key=lambda s: s.started_at or now, reverse=request.query.get("sortBy", "").endswith(":desc"))
        limit = self._insights_limit(request)
        results = [self._render_session(s, now) for s in found[:limit]]
        return json_response(200, {"cursor": None, "results": results})

    def _participants(self, request: Request) -> Response:
        check_query(request, ("roomSessionId", "externalId", "sortBy", "cursor", "limit"))
        session_id, external_id = request.query.get("roomSessionId"), request.query.get("externalId")
        if not session_id and not external_id:
            raise _bad("roomSessionId or externalId is required")
        found = [
            p
            for p in self._attendance.values()
            if (not session_id or p.room_session_id == session_id) and (not external_id or p.external_id == external_id)
        ]
        found.sort(key=lambda p: p.joined_at, reverse=request.query.get("sortBy", "").endswith(":desc"))
        limit = self._insights_limit(request)
        after = int(request.query.get("cursor") or 0)
        page = found[after : after + limit]
        cursor = str(after + limit) if after + limit < len(found) else None
        return json_response(200, {"cursor": cursor, "results": [p.render() for p in page]})

    def _render_session(self, session: Session, now: datetime) -> dict[str, Any]:
        people = [p for p in self._attendance.values() if p.room_session_id == session.room_session_id]
        humans = [p for p in people if p.role_name not in BOT_ROLES]
        bots = [p for p in people if p.role_name == "recorder"]

        def minutes(group: list[Attendance]) -> int:
            return round(sum(((p.left_at or now) - p.joined_at).total_seconds() for p in group) / 60)

        return {
            "roomSessionId": session.room_session_id,
            "roomName": f"/{session.room_path}",
            "startedAt": iso_utc(session.started_at) if session.started_at else None,
            "endedAt": iso_utc(session.ended_at) if session.ended_at else None,
            "totalParticipantMinutes": minutes(humans),
            "totalRecorderMinutes": minutes(bots),
            "totalStreamerMinutes": 0,
            "totalUniqueParticipants": len({p.display_name for p in humans}),
            "totalUniqueRecorders": len(bots),
            "totalUniqueStreamers": 0,
            "rating": None,
            "totalRatings": None,
        }

    @staticmethod
    def _insights_limit(request: Request) -> int:
        value = request.query.get("limit")
        if value is None:
            return INSIGHTS_DEFAULT_LIMIT
        if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
            raise _bad(f"limit must be an integer from 1 to {MAX_LIMIT}")
        return int(value)

    def _control_budget(self, request: Request) -> Response:
        body = _control_object(request)
        points = body.get("points_per_minute")
        self.set_budget(None if points is None else int(points), float(body.get("time_scale", 1.0)))
        return empty_response()

    def finish_recording(self, room_name: str, *, kind: str = "recording", self_hosted: bool = False) -> dict[str, Any]:
        """A recording (or transcription) of the room finished: stored here, and its event sent as Whereby sends it
        (signed, to the configured webhook); returns the event."""
        made = self.media.finish(room_name, kind=kind, self_hosted=self_hosted)
        return self.emit(made["type"], made["data"])

    def _route(self, request: Request) -> Response:
        if request.path.startswith(ACCESS_PREFIX) and request.method == "GET":
            return self.media.serve(request)  # storage, not the API: no points
        if WherebyMedia.handles(request.path):
            return self._charge(request.method) or self.media.route(request)
        insights = {ROOM_SESSIONS_PATH: self._room_sessions, PARTICIPANTS_PATH: self._participants}.get(request.path)
        if insights is not None and request.method == "GET":
            return self._charge("GET") or insights(request)
        if request.path == MEETINGS_PATH:
            handler = {"POST": self._create, "GET": self._list}.get(request.method)
            if handler is not None:
                return self._charge(request.method) or handler(request)
        meeting_id = meeting_id_from_path(request.path)
        if meeting_id is not None:
            item_handler = {"GET": self._get, "DELETE": self._delete}.get(request.method)
            if item_handler is not None:
                return self._charge(request.method) or item_handler(request, meeting_id)
        raise SimError(404, NOT_FOUND)

    # ----- endpoints (called with the lock held) -----

    def _create(self, request: Request) -> Response:
        check_query(request, ())
        now = datetime.now(UTC)
        spec = parse_create(request.json_body(), now)
        meeting = self._new_meeting(spec, now)
        self._meetings[meeting.meeting_id] = meeting
        return json_response(201, meeting.render(spec.fields))

    def _list(self, request: Request) -> Response:
        check_query(request, ("cursor", "limit", "fields"))
        limit = parse_limit(request.query.get("limit"))
        fields = parse_fields_query(request.query.get("fields"))
        after = self._cursor_position(request.query.get("cursor"))
        remaining = [meeting for meeting in self._meetings.values() if meeting.seq > after]
        page = remaining[:limit]
        cursor = self._issue_cursor(page[-1].seq) if len(remaining) > limit else None
        return json_response(200, {"results": [m.render(fields) for m in page], "cursor": cursor})

    def _get(self, request: Request, meeting_id: str) -> Response:
        check_query(request, ("fields",))
        fields = parse_fields_query(request.query.get("fields"))
        meeting = self._meetings.get(meeting_id)
        if meeting is None:
            raise SimError(404, NOT_FOUND)
        return json_response(200, meeting.render(fields))

    def _delete(self, request: Request, meeting_id: str) -> Response:
        check_query(request, ())
        self._meetings.pop(meeting_id, None)  # idempotent: unknown ids get the same 204
        return empty_response(204)

    # ----- helpers -----

    def _charge(self, method: str) -> Response | None:
        """Count the call's points; a 429 instead if the budget's window has not enough left."""
        cost = POINTS.get(method, 1)
        if self._budget_limit is not None:
            now = time.monotonic()
            if now >= self._window_opened + self._window_seconds:
                self._window_opened, self._window_used = now, 0
            if self._window_used + cost > self._budget_limit:
                self._refused += 1
                return self._budget_refusal(self._window_opened + self._window_seconds - now)
            self._window_used += cost
        self._points_used += cost
        return None

    def _budget_refusal(self, seconds_left: float) -> Response:
        ms_left = max(1, math.ceil(seconds_left * 1000))
        # Whole seconds, as HTTP has it, when time runs at its real pace; a scaled minute needs the fraction.
        retry_after = str(math.ceil(ms_left / 1000)) if self._window_seconds >= 60 else f"{ms_left / 1000:g}"
        return json_response(
            429,
            {"error": "Rate limit active for throttle key: organization:1", "data": {"msLeft": ms_left}},
            headers={
                "Retry-After": retry_after,
                "X-RateLimit-Limit": str(self._budget_limit),
                "X-RateLimit-Remaining": str(max(0, (self._budget_limit or 0) - self._window_used)),
                "X-RateLimit-Reset": formatdate(time.time() + seconds_left, usegmt=True),
            },
        )

    def _new_meeting(self, spec: CreateSpec, now: datetime) -> Meeting:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        room_path = spec.prefix + room_id(spec.pattern)
        room_url = f"https://{self.subdomain}.whereby.com/{room_path}"
        return Meeting(
            seq=seq,
            room_path=room_path,
            room_url=room_url,
            start=now,
            end=spec.end,
            host_room_url=f"{room_url}?roomKey={secrets.token_urlsafe(24)}",
            viewer_room_url=f"{room_url}?roomKey={secrets.token_urlsafe(24)}",
            room_mode=spec.room_mode,
            is_locked=spec.is_locked,
        )

    def _cursor_position(self, cursor: str | None) -> int:
        if not cursor:
            return 0
        if cursor not in self._cursors:
            raise _bad("invalid cursor")
        return self._cursors[cursor]

    def _issue_cursor(self, last_seq: int) -> str:
        token = secrets.token_hex(16)
        self._cursors[token] = last_seq
        return token

    def _throttled(self, retry_after: float | None) -> Response:
        ms_left = DEFAULT_MS_LEFT if retry_after is None else round(retry_after * 1000)
        return json_response(
            429,
            {"error": "Rate limit active for throttle key: organization:1", "data": {"msLeft": ms_left}},
            headers={"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0"},
        )
