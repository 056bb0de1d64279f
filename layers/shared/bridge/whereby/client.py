"""Whereby Embedded REST client: create, get, list and delete meetings.

Points budget (shared by every key of the organisation, 100 a minute on the Build plan): a read costs 1,
a delete 2, a create 3. Callers keep their loops short; this client retries a few times and then raises.
A client made with ``charging(points)`` takes each attempt's points from the stack's shared count first
(``bridge.whereby.budget``) and reports Whereby's 429s to it, so the use-cases need not know about it.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import requests

from bridge.core.errors import BudgetExhausted, NotFound, PeerUnavailable, Throttled
from bridge.core.peer_http import PeerSession
from bridge.core.retry import RetryPolicy

# Re-exported: the room key is read from Whereby's room names here and by the sweeper and the events route.
from bridge.core.room_keys import ROOM_KEY_PATTERN as ROOM_KEY_PATTERN
from bridge.core.room_keys import room_key_of as room_key_of

PREFIX_MAX = 38  # the spec allows 39; the legacy API counted the leading "/" too, so one is kept in reserve
POINTS = {"GET": 1, "DELETE": 2, "POST": 3}  # read, delete, write: the spec's info.description


class PointsCharge(Protocol):
    """Where a call's points come from (``whereby_budget.Spender``)."""

    def spend(self, points: int) -> None: ...

    def throttled(self, retry_after: float | None) -> None: ...


@dataclass(frozen=True)
class Meeting:
    meeting_id: str
    room_url: str
    host_room_url: str
    room_name: str
    end_date: datetime

    @property
    def room_key(self) -> str | None:
        """Our key embedded in the room name prefix, if this room is one of ours."""
        return room_key_of(self.room_name)


@dataclass(frozen=True)
class RoomSession:
    """One session of a room, from Whereby's insights (``GET /insights/room-sessions``)."""

    room_session_id: str
    started_at: datetime | None
    ended_at: datetime | None  # None while the session is still running
    participant_minutes: int
    unique_participants: int


@dataclass(frozen=True)
class Participant:
    """Someone who joined a session (``GET /insights/participants``); bots carry their role (recorder, …)."""

    participant_id: str
    display_name: str
    role_name: str
    joined_at: datetime | None
    left_at: datetime | None


@dataclass(frozen=True)
class AccessLink:
    """A short-lived download link Whereby made for a recording or a transcription."""

    url: str
    expires_at: float  # unix seconds (Whereby answers milliseconds)


# Whereby's media: recordings and transcriptions have the same access-link and delete calls under their own path.
MEDIA_PATHS = {"recording": "/recordings", "transcription": "/transcriptions"}


@dataclass(frozen=True)
class RoomRequest:
    end_date: datetime
    prefix: str
    room_mode: str = "normal"
    locked: bool = False
    recording: str = "none"


def slug(text: str, limit: int) -> str:
    """Lowercase ``[a-z0-9-]`` only, as the room-name prefix rules require; accents folded, the rest dropped."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    collapsed = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")
    return collapsed[:limit].strip("-")


def room_prefix(label: str, room_key: str) -> str:
    """``<label>-<room key>-``: the key lets the sweeper tie a room at Whereby back to our record."""
    head = slug(label, PREFIX_MAX - len(room_key) - 2)
    return f"{head}-{room_key}-" if head else f"{room_key}-"


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _meeting(data: dict[str, Any]) -> Meeting:
    try:
        room_url = str(data["roomUrl"])
        return Meeting(
            meeting_id=str(data["meetingId"]),
            room_url=room_url,
            host_room_url=str(data.get("hostRoomUrl") or ""),
            room_name=str(data.get("roomName") or "/" + room_url.rstrip("/").rsplit("/", 1)[-1]),
            end_date=parse_iso(str(data["endDate"])),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise PeerUnavailable(f"whereby answered an unexpected meeting body ({exc!r})") from None


class WherebyClient:
    def __init__(self, base_url: str, api_key: str, policy: RetryPolicy = RetryPolicy(), **session: Any) -> None:
        self._http = PeerSession(
            "whereby",
            base_url,
            {"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            policy,
            **session,
        )
        self._points: PointsCharge | None = None

    def charging(self, points: PointsCharge | None) -> WherebyClient:
        """This client (the same connections) with every call paid from ``points``; None calls freely."""
        clone = copy.copy(self)
        clone._points = points
        return clone

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        points = self._points
        if points is None:
            return self._http.request(method, path, **kwargs)
        cost = POINTS[method]
        try:
            return self._http.request(method, path, before_attempt=lambda: points.spend(cost), **kwargs)
        except BudgetExhausted:
            raise
        except Throttled as exc:
            points.throttled(exc.retry_after)
            raise

    def create_meeting(self, room: RoomRequest) -> Meeting:
        body: dict[str, Any] = {
            "endDate": iso_utc(room.end_date),
            "roomNamePrefix": room.prefix,
            "roomNamePattern": "uuid",
            "roomMode": room.room_mode,
            "isLocked": room.locked,
            "fields": ["hostRoomUrl"],
        }
        if room.recording != "none":
            body["recording"] = {
                "type": room.recording,
                "destination": {"provider": "whereby"},
                "startTrigger": "prompt",
            }
        # A room made twice carries the same key; the sweep deletes the one no record names, so retrying is safe.
        response = self._request("POST", "/meetings", json=body, repeatable=True)
        return _meeting(response.json())

    def get_meeting(self, meeting_id: str) -> Meeting:
        response = self._request("GET", f"/meetings/{meeting_id}", params={"fields": "hostRoomUrl"})
        return _meeting(response.json())

    def delete_meeting(self, meeting_id: str) -> None:
        """Delete a meeting; one that is already gone counts as deleted (the API documents DELETE as idempotent)."""
        try:
            self._request("DELETE", f"/meetings/{meeting_id}")
        except NotFound:
            return

    def list_page(self, cursor: str | None = None, limit: int = 100) -> tuple[list[Meeting], str | None]:
        params: dict[str, Any] = {"limit": limit, "fields": "hostRoomUrl"}
        if cursor:
            params["cursor"] = cursor
        data = self._request("GET", "/meetings", params=params).json()
        return [_meeting(item) for item in data.get("results") or []], data.get("cursor") or None

    def iter_meetings(self, max_pages: int) -> Iterator[Meeting]:
        cursor: str | None = None
        for _ in range(max_pages):
            page, cursor = self.list_page(cursor)
            yield from page
            if not cursor:
                return

    def access_link(self, kind: str, media_id: str, valid_for_seconds: int) -> AccessLink:
        """A fresh link to a Whereby-hosted recording or transcription (``kind``), valid ``valid_for_seconds``.

        Whereby makes links for the media it hosts only: for media in the organisation's own bucket it answers 403,
        raised as ``Rejected``.
        """
        path = f"{MEDIA_PATHS[kind]}/{quote(media_id, safe='')}/access-link"
        data = self._request("GET", path, params={"validForSeconds": valid_for_seconds}).json()
        try:
            return AccessLink(url=str(data["accessLink"]), expires_at=int(data["expires"]) / 1000)
        except (KeyError, ValueError, TypeError) as exc:
            raise PeerUnavailable(f"whereby answered an unexpected access-link body ({exc!r})") from None

    def delete_media(self, kind: str, media_id: str) -> None:
        """Delete a recording or a transcription; one already gone counts as deleted (DELETE is idempotent)."""
        try:
            self._request("DELETE", f"{MEDIA_PATHS[kind]}/{quote(media_id, safe='')}")
        except NotFound:
            return

    # Insights: each call is a read (1 point), paid like every other call when the client is charging.
    def room_sessions(self, room_name: str, room_session_id: str | None = None) -> list[RoomSession]:
        """The room's sessions, newest first; one when ``room_session_id`` names it (and Whereby has it yet)."""
        params: dict[str, Any] = {"roomName": "/" + room_name.strip().lstrip("/"), "sortBy": "startedAt:desc"}
        if room_session_id:
            params["roomSessionId"] = room_session_id
        data = self._request("GET", "/insights/room-sessions", params=params).json()
        try:
            return [_room_session(item) for item in data.get("results") or []]
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise PeerUnavailable(f"whereby answered an unexpected room-sessions body ({exc!r})") from None

    def participants(self, room_session_id: str, max_pages: int = 5) -> list[Participant]:
        """Everyone who joined the session, in the order they joined (up to ``max_pages`` of 100)."""
        found: list[Participant] = []
        params: dict[str, Any] = {"roomSessionId": room_session_id, "sortBy": "joinedAt:asc", "limit": 100}
        for _ in range(max_pages):
            data = self._request("GET", "/insights/participants", params=params).json()
            try:
                found += [_participant(item) for item in data.get("results") or []]
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise PeerUnavailable(f"whereby answered an unexpected participants body ({exc!r})") from None
            if not data.get("cursor"):
                break
            params["cursor"] = data["cursor"]
        return found


def _optional_time(value: Any) -> datetime | None:
    return parse_iso(str(value)) if value else None


def _room_session(item: dict[str, Any]) -> RoomSession:
    # The spec's required list names createdAt/endAt while its properties are startedAt/endedAt: read both.
    return RoomSession(
        room_session_id=str(item["roomSessionId"]),
        started_at=_optional_time(item.get("startedAt") or item.get("createdAt")),
        ended_at=_optional_time(item.get("endedAt") or item.get("endAt")),
        participant_minutes=int(item.get("totalParticipantMinutes") or 0),
        unique_participants=int(item.get("totalUniqueParticipants") or 0),
    )


def _participant(item: dict[str, Any]) -> Participant:
    return Participant(
        participant_id=str(item.get("participantId") or ""),
        display_name=str(item.get("displayName") or ""),
        role_name=str(item.get("roleName") or ""),
        joined_at=_optional_time(item.get("joinedAt")),
        left_at=_optional_time(item.get("leftAt")),
    )
