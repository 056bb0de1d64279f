"""Kommo API v4 client: notes on leads and the meeting-id custom field.

Kommo allows 7 requests a second per integration and blocks accounts that keep exceeding it (403 on every
call, lifted only by their support), so calls are spaced client-side well below that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from bridge.errors import AnswerLost, NotFound, PeerUnavailable, Unauthorized
from bridge.peer_http import PeerSession, RetryPolicy

NOTE_MAX_CHARS = 4000


class RequestSpacer:
    """Spaces calls at least ``1/rate`` seconds apart within this process."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            now = self._clock()
            wait = self._next - now
            self._next = max(now, self._next) + self._interval
        if wait > 0:
            self._sleep(wait)


@dataclass(frozen=True)
class KommoLead:
    """What the worker needs of a lead as Kommo has it now."""

    lead_id: int
    status_id: int
    pipeline_id: int
    updated_at: int


class TokenSource(Protocol):
    def access_token(self) -> str: ...

    def after_unauthorized(self, rejected_token: str) -> str: ...


@dataclass(frozen=True, repr=False)
class StaticToken:
    """A long-lived token: nothing to renew."""

    token: str

    def access_token(self) -> str:
        return self.token

    def after_unauthorized(self, rejected_token: str) -> str:
        return self.token


class KommoClient:
    def __init__(
        self,
        base_url: str,
        tokens: TokenSource | str,
        requests_per_second: float = 3.0,
        policy: RetryPolicy = RetryPolicy(),
        **session: Any,
    ) -> None:
        self._tokens = StaticToken(tokens) if isinstance(tokens, str) else tokens
        session.setdefault("before_request", RequestSpacer(requests_per_second))
        self._http = PeerSession(
            "kommo",
            base_url,
            {"Accept": "application/json", "User-Agent": "whereby-bridge/0.1"},
            policy,
            **session,
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send with the current token; on a 401 once more with the newest one (a rotation may have happened)."""
        token = self._tokens.access_token()
        try:
            return self._http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        except Unauthorized:
            renewed = self._tokens.after_unauthorized(token)
            if renewed == token:
                raise
            return self._http.request(method, path, headers={"Authorization": f"Bearer {renewed}"}, **kwargs)

    def get_lead(self, lead_id: int) -> KommoLead | None:
        """The lead as it is now; None when Kommo has no such lead (204 or 404) or it sits in the trash."""
        try:
            response = self._request("GET", f"/api/v4/leads/{lead_id}")
        except NotFound:
            return None
        if response.status_code == 204 or not response.content:
            return None
        try:
            data = response.json()
            if data.get("is_deleted"):
                return None
            return KommoLead(
                lead_id=int(data["id"]),
                status_id=int(data["status_id"]),
                pipeline_id=int(data["pipeline_id"]),
                updated_at=int(data["updated_at"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise PeerUnavailable("kommo answered an unexpected lead body") from None

    def has_note(self, lead_id: int, marker: str, max_pages: int = 4) -> bool:
        """Whether a common note on the lead contains ``marker``: a post whose answer was lost may have landed.

        Kommo has no idempotency key for notes, so a retry first looks for the note it may already have made.
        """
        for page in range(1, max_pages + 1):
            params = {"filter[note_type]": "common", "page": page, "limit": 250}
            response = self._request("GET", f"/api/v4/leads/{lead_id}/notes", params=params)
            if response.status_code == 204 or not response.content:
                return False
            try:
                data = response.json()
                notes = (data.get("_embedded") or {}).get("notes") or []
                if any(marker in str((note.get("params") or {}).get("text", "")) for note in notes):
                    return True
                if not (data.get("_links") or {}).get("next"):
                    return False
            except (ValueError, AttributeError, TypeError):
                raise PeerUnavailable("kommo answered an unexpected notes body") from None
        return False

    def add_note(self, lead_id: int, text: str, marker: str | None = None) -> int | None:
        """Post a common note on a lead; returns the note id Kommo gave it (None when it was found, not made).

        When the answer is lost, the note is looked for by ``marker`` (a text only this note holds) before it is
        posted once more, so a timeout never makes a second note.
        """
        body = [{"entity_id": lead_id, "note_type": "common", "params": {"text": text[:NOTE_MAX_CHARS]}}]
        try:
            response = self._request("POST", "/api/v4/leads/notes", json=body)
        except AnswerLost:
            if marker and self.has_note(lead_id, marker):
                return None
            response = self._request("POST", "/api/v4/leads/notes", json=body)
        data = response.json()
        notes = (data.get("_embedded") or {}).get("notes") or [{}]
        return notes[0].get("id")

    def set_text_field(self, lead_id: int, field_id: int, value: str | None) -> None:
        """Write a text custom field on a lead; ``None`` clears it."""
        values = [{"value": value}] if value is not None else None
        body = {"custom_fields_values": [{"field_id": field_id, "values": values}]}
        self._request("PATCH", f"/api/v4/leads/{lead_id}", json=body)
