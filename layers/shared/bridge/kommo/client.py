"""Kommo API v4 client: notes on leads, the meeting-id custom field, and the event log.

Kommo allows 7 requests a second per integration and blocks accounts that keep exceeding it (403 on every
call, lifted only by their support), so calls are spaced client-side well below that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from bridge.core.errors import AnswerLost, NotFound, PeerUnavailable, Unauthorized
from bridge.core.peer_http import PeerSession
from bridge.core.retry import RetryPolicy

NOTE_MAX_CHARS = 4000
LEAD_STATUS_CHANGED = "lead_status_changed"
LEAD_DELETED = "lead_deleted"
LEAD_RESTORED = "lead_restored"
# Kommo's reference allows 250 events a page; its own clients ask for 100, the size known to work everywhere.
EVENTS_PAGE_LIMIT = 100
MEETING_TASK_TYPE = 2  # Kommo's built-in task type "Meeting"
# The account's time zone and language change about never; read again now and then so a change shows within hours.
ACCOUNT_ZONE_SECONDS = 6 * 3600


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
    responsible_user_id: int = 0
    custom_fields: tuple[tuple[int, object], ...] = ()  # (field id, first value) of the filled fields

    def field_value(self, field_id: int) -> object:
        return next((value for fid, value in self.custom_fields if fid == field_id), None)


@dataclass(frozen=True)
class KommoAccount:
    """What the notes need of the account: its time zone and its language, None where Kommo says nothing."""

    timezone: str | None = None
    language: str | None = None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


@dataclass(frozen=True)
class KommoTask:
    task_id: int
    text: str
    complete_till: int


def _lead_fields(values: Any) -> tuple[tuple[int, object], ...]:
    """``custom_fields_values`` of a v4 lead (``null`` when none is filled): ``[{field_id, values: [{value}]}]``."""
    found: list[tuple[int, object]] = []
    for item in values if isinstance(values, list) else ():
        if not isinstance(item, dict) or _optional_int(item.get("field_id")) is None:
            continue
        first = (item.get("values") or [None])[0]
        if isinstance(first, dict):
            found.append((int(item["field_id"]), first.get("value")))
    return tuple(found)


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


@dataclass(frozen=True)
class KommoEvent:
    """One entry of Kommo's event log (``GET /api/v4/events``)."""

    id: str
    type: str
    entity_id: int
    created_at: int  # unix seconds
    status_id: int | None = None  # value_after[0].lead_status: the status a lead moved into
    pipeline_id: int | None = None


@dataclass(frozen=True)
class EventsPage:
    events: tuple[KommoEvent, ...]
    has_next: bool


def _optional_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _lead_status(value_after: Any) -> tuple[int | None, int | None]:
    if isinstance(value_after, list) and value_after and isinstance(value_after[0], dict):
        status = value_after[0].get("lead_status")
        if isinstance(status, dict):
            return _optional_int(status.get("id")), _optional_int(status.get("pipeline_id"))
    return None, None


def _event(item: Any) -> KommoEvent:
    event_id = str(item["id"]).strip()
    if not event_id or isinstance(item["entity_id"], bool) or isinstance(item["created_at"], bool):
        raise ValueError("event without an id, entity or time")
    status_id, pipeline_id = _lead_status(item.get("value_after"))
    return KommoEvent(
        id=event_id,
        type=str(item["type"]),
        entity_id=int(item["entity_id"]),
        created_at=int(item["created_at"]),
        status_id=status_id,
        pipeline_id=pipeline_id,
    )


def events_page_from(response: requests.Response) -> EventsPage:
    """A 200 of ``GET /api/v4/events``: hal+json with ``_embedded.events`` and, unless it is the last page,
    ``_links.next``."""
    try:
        data = response.json()
        items = data["_embedded"]["events"]
        if not isinstance(items, list):
            raise TypeError("events is not a list")
        events = tuple(_event(item) for item in items)
        links = data.get("_links") or {}
        has_next = bool(events) and isinstance(links, dict) and bool(links.get("next"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PeerUnavailable(f"kommo answered an unexpected events body ({type(exc).__name__})") from None
    return EventsPage(events, has_next)


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
        self._account: tuple[KommoAccount, float] | None = None  # the account as read, and when
        self._clock = time.monotonic

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
                responsible_user_id=_optional_int(data.get("responsible_user_id")) or 0,
                custom_fields=_lead_fields(data.get("custom_fields_values")),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise PeerUnavailable("kommo answered an unexpected lead body") from None

    def has_note(self, lead_id: int, marker: str | tuple[str, ...], max_pages: int = 4) -> bool:
        """Whether a common note on the lead contains ``marker`` (or any of several): a post whose answer was lost
        may have landed.

        Kommo has no idempotency key for notes, so a retry first looks for the note it may already have made. A
        note's marker in every language finds it when the account's language changed between the tries.
        """
        markers = (marker,) if isinstance(marker, str) else marker
        for page in range(1, max_pages + 1):
            params = {"filter[note_type]": "common", "page": page, "limit": 250}
            response = self._request("GET", f"/api/v4/leads/{lead_id}/notes", params=params)
            if response.status_code == 204 or not response.content:
                return False
            try:
                data = response.json()
                notes = (data.get("_embedded") or {}).get("notes") or []
                texts = [str((note.get("params") or {}).get("text", "")) for note in notes]
                if any(m in text for text in texts for m in markers):
                    return True
                if not (data.get("_links") or {}).get("next"):
                    return False
            except (ValueError, AttributeError, TypeError):
                raise PeerUnavailable("kommo answered an unexpected notes body") from None
        return False

    def add_note(self, lead_id: int, text: str, marker: str | tuple[str, ...] | None = None) -> int | None:
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
        note_id: int | None = notes[0].get("id")
        return note_id

    def set_text_field(self, lead_id: int, field_id: int, value: str | None) -> None:
        """Write a text custom field on a lead; ``None`` clears it."""
        values = [{"value": value}] if value is not None else None
        body = {"custom_fields_values": [{"field_id": field_id, "values": values}]}
        self._request("PATCH", f"/api/v4/leads/{lead_id}", json=body)

    def events_page(
        self,
        types: Sequence[str],
        created_from: int,
        created_to: int,
        page: int = 1,
        limit: int = EVENTS_PAGE_LIMIT,
    ) -> EventsPage:
        """One page of the lead events of ``types`` created in ``[created_from, created_to]`` (unix seconds).

        The next page is asked for by number, never by following ``_links.next``: the bearer token goes only to
        the configured host, whatever a response body names.
        """
        params: dict[str, str | int] = {
            "filter[type]": ",".join(types),
            "filter[entity]": "lead",
            "filter[created_at][from]": created_from,
            "filter[created_at][to]": created_to,
            "page": page,
            "limit": limit,
        }
        response = self._request("GET", "/api/v4/events", params=params)
        if response.status_code == 204:  # Kommo's answer for "no events"
            return EventsPage((), False)
        return events_page_from(response)

    # ----- the account -------------------------------------------------------------------------------------------

    def account_timezone(self) -> str | None:
        """The account's time zone name (``datetime_settings.timezone``); None when the account does not say."""
        return self.account().timezone

    def account_language(self) -> str | None:
        """The account's language as Kommo writes it ("en", "es", "pt", "ru"...); None when it does not say."""
        return self.account().language

    def account(self) -> KommoAccount:
        """The account's time zone and language, read in one call and kept for a few hours.

        Kept in this client, so once per container; one call in a few hours.
        """
        now = self._clock()
        if self._account is not None and now - self._account[1] < ACCOUNT_ZONE_SECONDS:
            return self._account[0]
        response = self._request("GET", "/api/v4/account", params={"with": "datetime_settings"})
        try:
            data = response.json()
            settings = (data.get("_embedded") or {}).get("datetime_settings") or {}
            account = KommoAccount(timezone=_text(settings.get("timezone")), language=_text(data.get("language")))
        except (ValueError, AttributeError):
            raise PeerUnavailable("kommo answered an unexpected account body") from None
        self._account = (account, now)
        return account

    # ----- tasks -------------------------------------------------------------------------------------------------

    def find_task(self, lead_id: int, marker: str) -> KommoTask | None:
        """The lead's open Meeting task whose text holds ``marker``: one whose answer was lost may have been made."""
        params = {
            "filter[entity_type]": "leads",
            "filter[entity_id]": lead_id,
            "filter[task_type]": MEETING_TASK_TYPE,
            "limit": 250,
        }
        response = self._request("GET", "/api/v4/tasks", params=params)
        if response.status_code == 204 or not response.content:
            return None
        try:
            tasks = (response.json().get("_embedded") or {}).get("tasks") or []
            for task in tasks:
                if marker in str(task.get("text", "")):
                    return KommoTask(int(task["id"]), str(task["text"]), int(task.get("complete_till") or 0))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise PeerUnavailable("kommo answered an unexpected tasks body") from None
        return None

    def add_task(
        self,
        lead_id: int,
        text: str,
        due_at: int,
        responsible_user_id: int,
        request_id: str,
        marker: str,
        duration_seconds: int = 0,
    ) -> int:
        """Make a Meeting task on the lead, due at ``due_at``; returns its id.

        Kommo only echoes ``request_id`` back, it does not deduplicate on it: when the answer is lost, the task is
        looked for by ``marker`` (a text only this task holds) before it is posted once more.
        """
        task: dict[str, Any] = {
            "task_type_id": MEETING_TASK_TYPE,
            "text": text[:NOTE_MAX_CHARS],
            "complete_till": due_at,
            "entity_id": lead_id,
            "entity_type": "leads",
            "request_id": request_id,
        }
        if responsible_user_id:
            task["responsible_user_id"] = responsible_user_id
        if duration_seconds:
            task["duration"] = duration_seconds
        try:
            response = self._request("POST", "/api/v4/tasks", json=[task])
        except AnswerLost:
            if found := self.find_task(lead_id, marker):
                return found.task_id
            response = self._request("POST", "/api/v4/tasks", json=[task])
        try:
            tasks = (response.json().get("_embedded") or {}).get("tasks") or []
            return int(next(t for t in tasks if str(t.get("request_id")) == request_id)["id"])
        except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
            raise PeerUnavailable("kommo answered an unexpected task body") from None

    def move_task(self, task_id: int, text: str, due_at: int) -> None:
        """Set a task's due time and text (the meeting moved, and with a new room its link too)."""
        body = {"complete_till": due_at, "text": text[:NOTE_MAX_CHARS]}
        self._request("PATCH", f"/api/v4/tasks/{task_id}", json=body)
