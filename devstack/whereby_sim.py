"""Simulator of the Whereby Embedded REST API meeting endpoints (contracts/whereby.md §3-8).

It is deliberately stricter than the documented contract (unknown keys, repeated query parameters and
malformed values get a 400) so that client bugs show up in tests rather than in production.

Points budget (§8), off unless ``points_per_minute`` is given: each meeting call costs its points (read 1, delete 2,
write 3) within a window that opens at the first call after the previous one closed and lasts a minute divided by
``time_scale``; a call that would go over gets 429 with ``data.msLeft`` and ``Retry-After`` (the time until the
window closes, in real time), ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``. Refused
calls cost nothing. ``time_scale`` 20 runs the Build plan's "100 points a minute" as 100 points every 3 seconds.
"""

from __future__ import annotations

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
from devstack.whereby_media import WherebyMedia

MEETINGS_PATH = "/v1/meetings"
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
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.subdomain = subdomain
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
        self._meetings.clear()
        self._cursors.clear()
        self._points_used = 0
        self._refused = 0
        self.set_budget(*self._initial_budget)
        self.media.clear()

    def _authorized(self, request: Request) -> bool:
        return request.bearer_token() == self.api_key

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
            ("POST", "/_sim/recordings"): self.media.control_finish,
            ("GET", "/_sim/recordings"): lambda _: json_response(200, self.media.held()),
        }

    def _control_budget(self, request: Request) -> Response:
        body = _control_object(request)
        points = body.get("points_per_minute")
        self.set_budget(None if points is None else int(points), float(body.get("time_scale", 1.0)))
        return empty_response()

    def finish_recording(self, room_name: str, *, kind: str = "recording", self_hosted: bool = False) -> dict[str, Any]:
        """A recording (or transcription) of the room finished: stored here; returns the event Whereby would send."""
        return self.media.finish(room_name, kind=kind, self_hosted=self_hosted)

    def _route(self, request: Request) -> Response:
        if WherebyMedia.handles(request.path):
            return self._charge(request.method) or self.media.route(request)
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
