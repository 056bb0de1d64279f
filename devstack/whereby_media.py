"""The Whereby simulator's recordings and transcriptions (contracts: whereby-events.md §2 and §7, the OpenAPI file).

- ``GET /v1/recordings/{id}``: the recording's metadata; 404 for an unknown id.
- ``GET /v1/recordings/{id}/access-link?validForSeconds=N`` (1-43200, default 3600): ``{"accessLink", "expires"}``
  with ``expires`` in epoch milliseconds, a new link on every call; 403 for a recording kept in the organisation's
  own storage, as Whereby makes links for the media it hosts only.
- ``DELETE /v1/recordings/{id}``: 204, also for an id already deleted (the spec calls it idempotent).
- The same three under ``/v1/transcriptions/{id}``.
- ``GET /_media/<filename>?token=…&expires=…``: what an access link opens, without the API key, as Whereby's
  storage links do: the media (a stand-in body) until the link expires, then 403; 404 once the media is deleted.

``finish_recording`` stands for a recording (or a transcription) that finished: it stores it and returns the body of
the ``recording.finished`` (``transcription.finished``) event Whereby would send, for a signed delivery to post.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from devstack.sim_server import Request, Response, SimError, _control_object, empty_response, json_response

MEDIA_PATH = re.compile(r"/v1/(recordings|transcriptions)/([^/]+)(/access-link)?")
ACCESS_PREFIX = "/_media/"
# What an access link serves: the first box of an MP4 file, and a line of text for a transcript.
STAND_IN = {"recording": (b"\x00\x00\x00\x14ftypisom\x00\x00\x02\x00isom", "video/mp4")}
KINDS = {"recordings": "recording", "transcriptions": "transcription"}
MAX_VALID_SECONDS = 43200
DEFAULT_VALID_SECONDS = 3600
HOSTED, SELF_HOSTED = "WHEREBY_HOSTED", "SELF_HOSTED"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Media:
    kind: str  # recording | transcription
    media_id: str
    room_name: str  # with the leading "/"
    room_session_id: str
    filename: str
    start: datetime
    end: datetime
    storage_type: str
    recording_id: str  # a transcription's recording; a recording's own id

    def render(self) -> dict[str, Any]:
        if self.kind == "recording":
            return {
                "recordingId": self.media_id,
                "roomSessionId": self.room_session_id,
                "filename": self.filename,
                "startDate": _iso(self.start),
                "endDate": _iso(self.end),
                "sizeInMegaBytes": 42,
            }
        return {
            "transcriptionId": self.media_id,
            "roomSessionId": self.room_session_id,
            "roomName": self.room_name,
            "startDate": _iso(self.start),
            "endDate": _iso(self.end),
            "state": "ready",
            "createdAt": _iso(self.end),
            "type": "RECORDING_TRANSCRIPTION",
            "filename": self.filename,
            "durationInSeconds": int((self.end - self.start).total_seconds()),
            "storageType": self.storage_type,
        }

    def event(self) -> dict[str, Any]:
        """The webhook body Whereby sends when this media is ready."""
        if self.kind == "recording":
            data: dict[str, Any] = {
                "recordingId": self.media_id,
                "filename": self.filename,
                "roomName": self.room_name,
                "status": "completed",
            }
        else:
            data = {
                "roomName": self.room_name,
                "roomSessionId": self.room_session_id,
                "transcriptionId": self.media_id,
                "type": "RECORDING_TRANSCRIPTION",
                "status": "ready",
                "filename": self.filename,
                "storageType": self.storage_type,
                "durationInSeconds": int((self.end - self.start).total_seconds()),
                "recordingId": self.recording_id,
            }
        return {
            "id": secrets.token_hex(32),
            "apiVersion": "1.0",
            "createdAt": _iso(datetime.now(UTC)),
            "type": f"{self.kind}.finished",
            "data": data,
        }


class WherebyMedia:
    """The recordings and transcriptions a simulator holds; its endpoints run with the simulator's lock held."""

    def __init__(self, root_url: Any, lock: threading.RLock | threading.Lock) -> None:
        self._root_url = root_url  # a callable: the server's port is known only once it started
        self._lock = lock
        self._media: dict[tuple[str, str], Media] = {}
        self._links: dict[str, tuple[str, str, int]] = {}  # access-link token -> kind, media id, expiry (ms)
        self.deleted: list[tuple[str, str]] = []

    def clear(self) -> None:
        self._media.clear()
        self._links.clear()
        self.deleted.clear()

    # ----- for tests and the local stack -----

    def finish(
        self, room_name: str, *, kind: str = "recording", self_hosted: bool = False, minutes: int = 34
    ) -> dict[str, Any]:
        """Store a finished recording (or transcription) of ``room_name``; returns its ``*.finished`` event body."""
        if kind not in KINDS.values():
            raise ValueError(f"kind must be recording or transcription, got {kind!r}")
        name = "/" + room_name.strip().lstrip("/")
        end = datetime.now(UTC).replace(microsecond=0)
        start = end - timedelta(minutes=minutes)
        media_id = str(uuid.uuid4())
        extension = "mp4" if kind == "recording" else "txt"
        media = Media(
            kind=kind,
            media_id=media_id,
            room_name=name,
            room_session_id=str(uuid.uuid4()),
            filename=f"{name.lstrip('/')}-{start.strftime('%Y-%m-%dT%H:%M:%SZ')}.{extension}",
            start=start,
            end=end,
            storage_type=SELF_HOSTED if self_hosted else HOSTED,
            recording_id=media_id if kind == "recording" else str(uuid.uuid4()),
        )
        with self._lock:
            self._media[(kind, media_id)] = media
        return media.event()

    def held(self) -> list[dict[str, Any]]:
        """Every recording and transcription not deleted: kind, id, room name."""
        with self._lock:
            return [{"kind": m.kind, "id": m.media_id, "roomName": m.room_name} for m in self._media.values()]

    def control_finish(self, request: Request, finish: Callable[..., dict[str, Any]]) -> Response:
        """``POST /_sim/recordings`` ``{"roomName", "kind"?, "selfHosted"?}`` → 201 with the event body; ``finish``
        stores the media and sends its event."""
        body = _control_object(request)
        room_name = body.get("roomName")
        if not isinstance(room_name, str) or not room_name.strip("/ "):
            raise SimError(400, "roomName is required")
        event = finish(
            room_name, kind=str(body.get("kind", "recording")), self_hosted=bool(body.get("selfHosted", False))
        )
        return json_response(201, event)

    # ----- the API (called with the simulator's lock held) -----

    @staticmethod
    def handles(path: str) -> bool:
        return MEDIA_PATH.fullmatch(path) is not None

    def route(self, request: Request) -> Response:
        found = MEDIA_PATH.fullmatch(request.path)
        if found is None:
            raise SimError(404, "The requested resource doesn't exist")
        kind, media_id, access = KINDS[found.group(1)], unquote(found.group(2)), bool(found.group(3))
        if access and request.method == "GET":
            return self._access_link(request, kind, media_id)
        if not access and request.method == "GET":
            return json_response(200, self._find(kind, media_id).render())
        if not access and request.method == "DELETE":
            if self._media.pop((kind, media_id), None) is not None:
                self.deleted.append((kind, media_id))
            return empty_response(204)
        raise SimError(404, "The requested resource doesn't exist")

    def _find(self, kind: str, media_id: str) -> Media:
        media = self._media.get((kind, media_id))
        if media is None:
            raise SimError(404, "The requested resource doesn't exist")
        return media

    def _access_link(self, request: Request, kind: str, media_id: str) -> Response:
        unknown = sorted(set(request.query_lists) - {"validForSeconds"})
        if unknown:
            raise SimError(400, f"unknown query parameter(s): {', '.join(unknown)}")
        raw = request.query.get("validForSeconds", str(DEFAULT_VALID_SECONDS))
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_VALID_SECONDS:
            raise SimError(400, f"validForSeconds must be a whole number from 1 to {MAX_VALID_SECONDS}")
        media = self._find(kind, media_id)
        if media.storage_type != HOSTED:
            raise SimError(403, "Access links are available for Whereby-hosted recordings only")
        expires_ms = int((time.time() + int(raw)) * 1000)
        token = secrets.token_urlsafe(16)
        self._links[token] = (kind, media_id, expires_ms)
        link = f"{self._root_url()}{ACCESS_PREFIX}{media.filename}?token={token}&expires={expires_ms}"
        return json_response(200, {"accessLink": link, "expires": expires_ms})

    def serve(self, request: Request) -> Response:
        """An access link opened: the media while the link lasts; 403 for an expired or unknown link."""
        kind, media_id, expires_ms = self._links.get(request.query.get("token", ""), ("", "", 0))
        media = self._media.get((kind, media_id))
        if (kind, media_id) in self.deleted:
            return Response(404, b"NoSuchKey", "text/plain")
        if media is None or expires_ms < time.time() * 1000 or request.path != ACCESS_PREFIX + media.filename:
            return Response(403, b"AccessDenied", "text/plain")
        body, content_type = STAND_IN.get(kind, (f"Transcript of {media.room_name}\n".encode(), "text/plain"))
        return Response(200, body, content_type)
