"""Simulator of the Kommo API v4 calls the bridge makes (contracts/kommo.md §3): lead notes, PATCH and GET lead,
the event log (contracts/kommo-more.md §3), tasks (§1) and the account with its time zone (§5).

Leads are created on first touch (a note or a PATCH), so tests need no setup; `add_lead` seeds one
explicitly. Like Kommo's nginx, the per-integration rate limit answers 429 with an HTML page.

The event log is written by `move_lead`, `delete_lead` and `restore_lead` (or `POST /_sim/events`): what a
user does in Kommo's interface. No webhook is sent, which is exactly the case the reconciliation is for.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from devstack.sim_server import (
    ControlHandler,
    Fault,
    Request,
    Response,
    SimError,
    SimServer,
    empty_response,
    html_error,
    json_response,
    status_phrase,
)

HAL_TYPE = "application/hal+json"
PROBLEM_TYPE = "application/problem+json"
NOTE_TYPES = ("common", "service_message", "extended_service_message")
NGINX_STATUSES = (429, 502, 503, 504)  # answered by the proxy, with an HTML body
BULK_NOTES_PATH = "/api/v4/leads/notes"
OAUTH_PATH = "/oauth2/access_token"
_LEAD_PATH = re.compile(r"/api/v4/leads/(\d+)")
_LEAD_NOTES_PATH = re.compile(r"/api/v4/leads/(\d+)/notes")
DEFAULT_PIPELINE_ID = 1
DEFAULT_STATUS_ID = 1
CLOSED_STATUS_IDS = (142, 143)
EVENTS_PATH = "/api/v4/events"
EVENTS_DEFAULT_LIMIT = 50
EVENTS_MAX_LIMIT = 250  # a larger limit is served as 250, as Kommo does
EVENT_ENTITIES = ("lead", "contact", "company", "task")  # singular; catalog_<id> too
LEAD_STATUS_CHANGED = "lead_status_changed"
LEAD_DELETED = "lead_deleted"
LEAD_RESTORED = "lead_restored"
TASKS_PATH = "/api/v4/tasks"
_TASK_PATH = re.compile(r"/api/v4/tasks/(\d+)")
ACCOUNT_PATH = "/api/v4/account"
TASK_ENTITY_TYPES = ("leads", "contacts", "companies", "customers")  # plural, unlike the event log's
DEFAULT_TIMEZONE = "Europe/Madrid"
API_USER_ID = 1  # the user the access token belongs to: a task with no responsible user is theirs


def problem(status: int, detail: str, extra: dict[str, Any] | None = None) -> Response:
    payload = {
        "title": status_phrase(status),
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
        **(extra or {}),
    }
    return json_response(status, payload, PROBLEM_TYPE)


def issue(request_id: str, code: str, path: str, detail: str) -> dict[str, str]:
    return {"request_id": request_id, "code": code, "path": path, "detail": detail}


def validation_failed(issues: list[dict[str, str]]) -> SimError:
    return SimError(400, "Request validation failed", issues)


def group_issues(issues: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Kommo's `validation-errors`: one entry per request_id, each with its errors."""
    grouped: dict[str, list[dict[str, str]]] = {}
    for item in issues:
        grouped.setdefault(item["request_id"], []).append(
            {"code": item["code"], "path": item["path"], "detail": item["detail"]}
        )
    return [{"request_id": request_id, "errors": errors} for request_id, errors in grouped.items()]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


# ----- notes -----


def _request_id(item: Any, index: int) -> str:
    if isinstance(item, dict) and isinstance(item.get("request_id"), str | int):
        return str(item["request_id"])
    return str(index)


def _entity_issues(item: dict[str, Any], rid: str, path_entity_id: int | None) -> list[dict[str, str]]:
    if path_entity_id is not None:
        if "entity_id" in item and item["entity_id"] != path_entity_id:
            return [issue(rid, "InvalidValue", "entity_id", "entity_id differs from the lead in the URL")]
        return []
    if "entity_id" not in item:
        return [issue(rid, "FieldMissing", "entity_id", "This field is missing.")]
    if not _is_int(item["entity_id"]) or item["entity_id"] <= 0:
        return [issue(rid, "InvalidType", "entity_id", "This value should be a positive integer.")]
    return []


def _params_issues(item: dict[str, Any], rid: str) -> list[dict[str, str]]:
    params = item.get("params")
    if not isinstance(params, dict):
        return [issue(rid, "FieldMissing", "params", "params must be an object.")]
    required = ("text",) if item.get("note_type") == "common" else ("service", "text")
    return [
        issue(rid, "NotBlank", f"params.{key}", "This value should be a non-empty string.")
        for key in required
        if not _is_text(params.get(key))
    ]


def note_issues(item: Any, rid: str, path_entity_id: int | None) -> list[dict[str, str]]:
    if not isinstance(item, dict):
        return [issue(rid, "InvalidType", "", "Each note must be an object.")]
    found = _entity_issues(item, rid, path_entity_id)
    if item.get("note_type") not in NOTE_TYPES:
        found.append(issue(rid, "NotSupportedChoice", "note_type", "The value you selected is not a valid choice."))
        return found
    return found + _params_issues(item, rid)


def parse_notes(body: Any, path_entity_id: int | None) -> list[dict[str, Any]]:
    """Validated notes as {"entity_id", "note_type", "params", "request_id"}; raises SimError(400)."""
    if not isinstance(body, list) or not body:
        raise validation_failed([issue("0", "InvalidType", "", "The body must be a non-empty JSON array.")])
    issues = [
        found
        for index, item in enumerate(body)
        for found in note_issues(item, _request_id(item, index), path_entity_id)
    ]
    if issues:
        raise validation_failed(issues)
    return [
        {
            "entity_id": path_entity_id if path_entity_id is not None else item["entity_id"],
            "note_type": item["note_type"],
            "params": copy.deepcopy(item["params"]),
            "request_id": _request_id(item, index),
        }
        for index, item in enumerate(body)
    ]


# ----- custom fields -----


def _value_ok(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    return (
        isinstance(value.get("value"), str | int | float | bool)
        or _is_int(value.get("enum_id"))
        or isinstance(value.get("enum_code"), str)
    )


def custom_field_issues(item: Any, index: int) -> list[dict[str, str]]:
    path = f"custom_fields_values.{index}"
    if not isinstance(item, dict):
        return [issue("0", "InvalidType", path, "Each custom field must be an object.")]
    found = []
    if not (_is_int(item.get("field_id")) or isinstance(item.get("field_code"), str)):
        found.append(issue("0", "FieldMissing", f"{path}.field_id", "field_id (integer) or field_code is required."))
    values = item.get("values", "missing")
    if values is not None and not (isinstance(values, list) and all(_value_ok(v) for v in values)):
        found.append(issue("0", "InvalidType", f"{path}.values", 'values must be null or [{"value": ...}].'))
    return found


def parse_lead_patch(body: Any) -> list[dict[str, Any]]:
    """The custom field updates of a PATCH body (other keys are ignored); raises SimError(400)."""
    if not isinstance(body, dict):
        raise validation_failed([issue("0", "InvalidType", "", "The body must be a JSON object.")])
    updates = body.get("custom_fields_values", [])
    if not isinstance(updates, list):
        raise validation_failed([issue("0", "InvalidType", "custom_fields_values", "This value should be an array.")])
    issues = [found for index, item in enumerate(updates) for found in custom_field_issues(item, index)]
    if issues:
        raise validation_failed(issues)
    return updates


def _same_field(stored: dict[str, Any], update: dict[str, Any]) -> bool:
    if "field_id" in update:
        return stored.get("field_id") == update["field_id"]
    return stored.get("field_code") == update.get("field_code")


def _stored_field(existing: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    label = update.get("field_id", update.get("field_code"))
    base = existing or {
        "field_id": update.get("field_id"),
        "field_name": f"Field {label}",
        "field_code": update.get("field_code"),
        "field_type": "text",
    }
    return {**base, "values": copy.deepcopy(update["values"])}


def apply_custom_fields(
    current: list[dict[str, Any]] | None, updates: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """Merge PATCH updates into a lead's fields; `values: null` clears a field. Kommo answers null, not []."""
    fields = list(current or [])
    for update in updates:
        index = next((i for i, stored in enumerate(fields) if _same_field(stored, update)), None)
        if update.get("values") is None:
            if index is not None:
                del fields[index]
        elif index is None:
            fields.append(_stored_field(None, update))
        else:
            fields[index] = _stored_field(fields[index], update)
    return fields or None


def default_lead(lead_id: int, now: int) -> dict[str, Any]:
    return {
        "id": lead_id,
        "name": f"Lead #{lead_id}",
        "price": 0,
        "responsible_user_id": 0,
        "group_id": 0,
        "status_id": DEFAULT_STATUS_ID,
        "pipeline_id": DEFAULT_PIPELINE_ID,
        "loss_reason_id": None,
        "created_by": 0,
        "updated_by": 0,
        "created_at": now,
        "updated_at": now,
        "closed_at": None,
        "closest_task_at": None,
        "is_deleted": False,
        "custom_fields_values": None,
        "score": None,
        "account_id": 1,
        "labor_cost": None,
        "_embedded": {"tags": [], "companies": []},
    }


# ----- the event log -----


def _query_values(query: dict[str, list[str]], name: str) -> list[str]:
    """A filter given as a comma list (``filter[type]=a,b``) or as an array (``filter[type][]=a&filter[type][]=b``)."""
    values = list(query.get(name, []))
    values += [v for key, vs in query.items() if re.fullmatch(re.escape(name) + r"\[\d*\]", key) for v in vs]
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _query_int(query: dict[str, list[str]], name: str, minimum: int) -> int | None:
    values = query.get(name)
    if not values:
        return None
    raw = values[-1].strip()
    if not raw.lstrip("-").isdigit() or int(raw) < minimum:
        raise validation_failed(
            [issue("0", "InvalidValue", name, f"This value should be a whole number >= {minimum}.")]
        )
    return int(raw)


@dataclass(frozen=True)
class EventQuery:
    types: tuple[str, ...]
    entities: tuple[str, ...]
    entity_ids: tuple[int, ...]
    created_from: int | None
    created_to: int | None
    page: int
    limit: int

    def matches(self, event: dict[str, Any]) -> bool:
        return (
            (not self.types or event["type"] in self.types)
            and (not self.entities or event["entity_type"] in self.entities)
            and (not self.entity_ids or event["entity_id"] in self.entity_ids)
            and (self.created_from is None or event["created_at"] >= self.created_from)
            and (self.created_to is None or event["created_at"] <= self.created_to)
        )


def parse_event_query(query: dict[str, list[str]]) -> EventQuery:
    """The filters of ``GET /api/v4/events`` (contracts/kommo-more.md §3); raises SimError(400) for bad ones."""
    entities = tuple(_query_values(query, "filter[entity]"))
    bad = [e for e in entities if e not in EVENT_ENTITIES and not re.fullmatch(r"catalog_\d+", e)]
    if bad:
        raise validation_failed([issue("0", "InvalidValue", "filter[entity]", f"Unknown entity {bad[0]!r}.")])
    raw_ids = _query_values(query, "filter[entity_id]")
    if raw_ids and (len(entities) != 1 or len(raw_ids) > 10 or not all(i.isdigit() for i in raw_ids)):
        detail = "Up to 10 numeric ids, with exactly one filter[entity]."
        raise validation_failed([issue("0", "InvalidValue", "filter[entity_id]", detail)])
    exact = _query_int(query, "filter[created_at]", 0)
    created_from = _query_int(query, "filter[created_at][from]", 0)
    created_to = _query_int(query, "filter[created_at][to]", 0)
    if exact is not None:
        created_from = created_to = exact
    limit = _query_int(query, "limit", 1) or EVENTS_DEFAULT_LIMIT
    return EventQuery(
        types=tuple(_query_values(query, "filter[type]")),
        entities=entities,
        entity_ids=tuple(int(i) for i in raw_ids),
        created_from=created_from,
        created_to=created_to,
        page=_query_int(query, "page", 1) or 1,
        limit=min(limit, EVENTS_MAX_LIMIT),
    )


def lead_status(status_id: int, pipeline_id: int) -> list[dict[str, Any]]:
    """``value_before`` / ``value_after`` of a lead_status_changed event."""
    return [{"lead_status": {"id": status_id, "pipeline_id": pipeline_id}}]


# ----- tasks -----


def task_issues(item: Any, rid: str) -> list[dict[str, str]]:
    if not isinstance(item, dict):
        return [issue(rid, "InvalidType", "", "Each task must be an object.")]
    found = []
    if not _is_text(item.get("text")):
        found.append(issue(rid, "NotBlank", "text", "This value should not be blank."))
    if not _is_int(item.get("complete_till")) or item["complete_till"] <= 0:
        found.append(issue(rid, "InvalidType", "complete_till", "This value should be a unix time in seconds."))
    for key in ("task_type_id", "entity_id", "responsible_user_id", "duration"):
        if key in item and not _is_int(item[key]):
            found.append(issue(rid, "InvalidType", key, "This value should be an integer."))
    if ("entity_id" in item) != ("entity_type" in item) or item.get("entity_type", "leads") not in TASK_ENTITY_TYPES:
        found.append(issue(rid, "InvalidValue", "entity_type", "entity_type must be one of leads, contacts, …"))
    return found


def parse_tasks(body: Any) -> list[dict[str, Any]]:
    """Validated tasks of ``POST /api/v4/tasks`` (an array, even for one); raises SimError(400)."""
    if not isinstance(body, list) or not body:
        raise validation_failed([issue("0", "InvalidType", "", "The body must be a non-empty JSON array.")])
    issues = [found for index, item in enumerate(body) for found in task_issues(item, _request_id(item, index))]
    if issues:
        raise validation_failed(issues)
    return [{**copy.deepcopy(item), "request_id": _request_id(item, index)} for index, item in enumerate(body)]


# ----- the simulator -----


class KommoSimulator(SimServer):
    """In-process fake of https://{subdomain}.kommo.com for the API v4 calls listed in the module docstring."""

    def __init__(
        self, access_token: str, host: str = "127.0.0.1", port: int = 0, rate_limit_per_second: float = 7.0
    ) -> None:
        super().__init__(host, port)
        self.access_token = access_token
        self.rate_limit_per_second = rate_limit_per_second  # 0 switches the limiter off
        self._window: deque[float] = deque()
        self._leads: dict[int, dict[str, Any]] = {}
        self._notes: list[dict[str, Any]] = []
        self._next_note_id = 1  # not reset: note ids are never reused
        self._oauth: dict[str, str] = {}
        self._valid_tokens: set[str] = {access_token}
        self.refresh_calls = 0
        self._events: list[dict[str, Any]] = []
        self._tasks: list[dict[str, Any]] = []
        self._next_task_id = 1001
        self.timezone: str | None = DEFAULT_TIMEZONE  # the account's datetime_settings.timezone
        self.language = "en"  # the account's language, as Kommo names it ("en", "es", "pt", "ru"...)

    def enable_oauth(self, client_id: str, client_secret: str, redirect_uri: str, refresh_token: str) -> None:
        """Accept OAuth refreshes: each answers a new pair and revokes the refresh token it used (single-use)."""
        with self._lock:
            self._oauth = {
                "client_id": client_id,
                "client_secret": client_secret,
                "redirect_uri": redirect_uri,
                "refresh_token": refresh_token,
            }

    def revoke_access_token(self, token: str) -> None:
        with self._lock:
            self._valid_tokens.discard(token)

    @property
    def current_refresh_token(self) -> str:
        with self._lock:
            return self._oauth.get("refresh_token", "")

    @property
    def base_url(self) -> str:
        return self.root_url

    def notes(self, lead_id: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(n) for n in self._notes if lead_id is None or n["entity_id"] == lead_id]

    def lead(self, lead_id: int) -> dict[str, Any]:
        """The stored lead; a lead never touched comes back in its default shape (and stays unknown)."""
        with self._lock:
            stored = self._leads.get(lead_id)
            return copy.deepcopy(stored) if stored else default_lead(lead_id, int(time.time()))

    def add_lead(self, lead_id: int, **fields: Any) -> None:
        with self._lock:
            self._leads[lead_id] = {**default_lead(lead_id, int(time.time())), **copy.deepcopy(fields)}

    def remove_lead(self, lead_id: int) -> None:
        """The lead went to the trash: GET answers 204, as Kommo does for a deleted lead."""
        with self._lock:
            self._leads.pop(lead_id, None)

    def tasks(self, lead_id: int | None = None) -> list[dict[str, Any]]:
        """The tasks made through the API, oldest first."""
        with self._lock:
            return [copy.deepcopy(t) for t in self._tasks if lead_id is None or t["entity_id"] == lead_id]

    # ----- the event log -----

    def events(self) -> list[dict[str, Any]]:
        """Every recorded event, oldest first."""
        with self._lock:
            return copy.deepcopy(self._events)

    def record_event(
        self,
        event_type: str,
        entity_id: int,
        *,
        value_before: list[dict[str, Any]] | None = None,
        value_after: list[dict[str, Any]] | None = None,
        created_at: int | None = None,
        entity_type: str = "lead",
        created_by: int = 0,
    ) -> dict[str, Any]:
        """Append one event to the log as it is; returns it. The helpers below also change the lead."""
        event = {
            "id": uuid.uuid4().hex[:26],  # Kommo's event ids are strings, not numbers
            "type": event_type,
            "entity_id": entity_id,
            "entity_type": entity_type,
            "created_by": created_by,
            "created_at": int(time.time()) if created_at is None else int(created_at),
            "value_after": copy.deepcopy(value_after or []),
            "value_before": copy.deepcopy(value_before or []),
            "account_id": 1,
        }
        with self._lock:
            self._events.append(event)
        return copy.deepcopy(event)

    def move_lead(
        self, lead_id: int, status_id: int, pipeline_id: int | None = None, at: int | None = None
    ) -> dict[str, Any]:
        """A user moves the lead's card to a status: the lead changes and a lead_status_changed event is logged."""
        with self._lock:
            lead = self._touch_lead(lead_id)
            before = lead_status(lead["status_id"], lead["pipeline_id"])
            lead["status_id"] = status_id
            lead["pipeline_id"] = pipeline_id or lead["pipeline_id"]
            lead["updated_at"] = int(time.time()) if at is None else int(at)
            lead["closed_at"] = lead["updated_at"] if status_id in CLOSED_STATUS_IDS else None
            after = lead_status(status_id, lead["pipeline_id"])
            return self.record_event(
                LEAD_STATUS_CHANGED, lead_id, value_before=before, value_after=after, created_at=lead["updated_at"]
            )

    def delete_lead(self, lead_id: int, at: int | None = None) -> dict[str, Any]:
        """The lead goes to the trash; a lead_deleted event is logged (its values are not documented: empty)."""
        with self._lock:
            self._touch_lead(lead_id)["is_deleted"] = True
            return self.record_event(LEAD_DELETED, lead_id, created_at=at)

    def restore_lead(self, lead_id: int, at: int | None = None) -> dict[str, Any]:
        """The lead comes back from the trash; a lead_restored event is logged."""
        with self._lock:
            self._touch_lead(lead_id)["is_deleted"] = False
            return self.record_event(LEAD_RESTORED, lead_id, created_at=at)

    # ----- SimServer hooks -----

    def _reset_state(self) -> None:
        self._oauth.clear()
        self._valid_tokens = {self.access_token}
        self.refresh_calls = 0
        self._window.clear()
        self._leads.clear()
        self._notes.clear()
        self._events.clear()
        self._tasks.clear()
        self.timezone = DEFAULT_TIMEZONE

    def _admit(self, request: Request) -> Response | None:
        if self.rate_limit_per_second <= 0:
            return None
        now = time.monotonic()
        while self._window and now - self._window[0] >= 1.0:
            self._window.popleft()
        if len(self._window) >= self.rate_limit_per_second:
            return html_error(429)  # rejected requests do not use up the window
        self._window.append(now)
        return None

    def _authorized(self, request: Request) -> bool:
        return request.path == OAUTH_PATH or request.bearer_token() in self._valid_tokens

    def _unauthorized(self) -> Response:
        return problem(401, "Access token is missing, expired or revoked")

    def _error_response(self, error: SimError) -> Response:
        extra = {"validation-errors": group_issues(error.issues)} if error.issues else None
        return problem(error.status, error.detail, extra)

    def _fault_body(self, fault: Fault) -> Response:
        if fault.html or fault.status in NGINX_STATUSES:
            return html_error(fault.status)
        return problem(fault.status, status_phrase(fault.status))

    def _extra_control_routes(self) -> dict[tuple[str, str], ControlHandler]:
        return {
            ("GET", "/_sim/notes"): self._control_notes,
            ("POST", "/_sim/leads"): self._control_add_lead,
            ("GET", "/_sim/events"): lambda _: json_response(200, self.events()),
            ("POST", "/_sim/events"): self._control_record_event,
            ("GET", "/_sim/tasks"): self._control_tasks,
            ("POST", "/_sim/account"): self._control_account,
        }

    def _route(self, request: Request) -> Response:
        method, path = request.method, request.path
        if method == "POST" and path == OAUTH_PATH:
            return self._refresh(request)
        if method == "POST" and path == BULK_NOTES_PATH:
            return self._add_notes(request, None)
        if method == "POST" and (match := _LEAD_NOTES_PATH.fullmatch(path)):
            return self._add_notes(request, int(match.group(1)))
        if method == "GET" and (match := _LEAD_NOTES_PATH.fullmatch(path)):
            return self._list_notes(request, int(match.group(1)))
        if method == "GET" and path == EVENTS_PATH:
            return self._list_events(request)
        if path == TASKS_PATH and method in ("GET", "POST"):
            return self._list_tasks(request) if method == "GET" else self._add_tasks(request)
        if method == "PATCH" and (match := _TASK_PATH.fullmatch(path)):
            return self._patch_task(request, int(match.group(1)))
        if method == "GET" and path == ACCOUNT_PATH:
            return self._account(request)
        if (match := _LEAD_PATH.fullmatch(path)) and method in ("GET", "PATCH"):
            lead_id = int(match.group(1))
            return self._get_lead(lead_id) if method == "GET" else self._patch_lead(request, lead_id)
        raise SimError(404, "Route not found")

    # ----- endpoints (called with the lock held) -----

    def _refresh(self, request: Request) -> Response:
        body = request.json_body()
        self.refresh_calls += 1
        expected = {**self._oauth, "grant_type": "refresh_token"}
        if not self._oauth or not isinstance(body, dict):
            raise SimError(400, "OAuth is not enabled or the body is not an object")
        if body.get("refresh_token") != self._oauth["refresh_token"]:
            payload = {
                "hint": "Token has been revoked",
                "title": "Некорректный запрос",
                "status": 401,
                "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                "detail": "В запросе отсутствует ряд параметров или параметры невалидны",  # noqa: RUF001
            }
            return json_response(401, payload, PROBLEM_TYPE)
        if any(body.get(k) != v for k, v in expected.items()):
            raise SimError(400, "client_id, client_secret, redirect_uri and grant_type must match the integration")
        access, refresh = f"access-{uuid.uuid4().hex}", f"refresh-{uuid.uuid4().hex}"
        self._oauth["refresh_token"] = refresh
        self._valid_tokens.add(access)
        payload = {
            "token_type": "Bearer",
            "expires_in": 86400,
            "server_time": int(time.time()),
            "access_token": access,
            "refresh_token": refresh,
        }
        return json_response(200, payload, "application/json")

    def _add_notes(self, request: Request, path_entity_id: int | None) -> Response:
        parsed = parse_notes(request.json_body(), path_entity_id)
        embedded = [self._store_note(note) for note in parsed]
        return json_response(200, {"_links": self._links(request.path), "_embedded": {"notes": embedded}}, HAL_TYPE)

    def _list_notes(self, request: Request, lead_id: int) -> Response:
        """A lead's notes, oldest first, a page at a time; 204 when there are none (as Kommo answers)."""
        query = request.query
        note_type = query.get("filter[note_type]")
        try:
            page = int(query.get("page", "1"))
            limit = int(query.get("limit", "50"))
        except ValueError:
            raise SimError(400, "page and limit must be whole numbers") from None
        if page < 1 or not 1 <= limit <= 250:
            raise SimError(400, "page must be at least 1 and limit from 1 to 250")
        notes = [n for n in self._notes if n["entity_id"] == lead_id and note_type in (None, n["note_type"])]
        chunk = notes[(page - 1) * limit : page * limit]
        if not chunk:
            return empty_response(204)
        path = f"/api/v4/leads/{lead_id}/notes"
        links = self._links(f"{path}?page={page}&limit={limit}")
        if page * limit < len(notes):
            links["next"] = {"href": f"{self.root_url}{path}?page={page + 1}&limit={limit}"}
        embedded = [{**copy.deepcopy(n), "created_by": 0, "updated_by": 0} for n in chunk]
        return json_response(200, {"_page": page, "_links": links, "_embedded": {"notes": embedded}}, HAL_TYPE)

    def _patch_lead(self, request: Request, lead_id: int) -> Response:
        updates = parse_lead_patch(request.json_body())
        lead = self._touch_lead(lead_id)
        lead["custom_fields_values"] = apply_custom_fields(lead["custom_fields_values"], updates)
        lead["updated_at"] = int(time.time())
        body = {"id": lead_id, "updated_at": lead["updated_at"], "_links": self._links(f"/api/v4/leads/{lead_id}")}
        return json_response(200, body, HAL_TYPE)

    def _get_lead(self, lead_id: int) -> Response:
        lead = self._leads.get(lead_id)
        if lead is None:
            return empty_response(204)
        body = {**copy.deepcopy(lead), "_links": self._links(f"/api/v4/leads/{lead_id}")}
        return json_response(200, body, HAL_TYPE)

    def _list_events(self, request: Request) -> Response:
        """Newest first: Kommo documents no order, so a client that needs one must sort (this catches those that
        do not). An empty page is 204 with no body; ``_links.next`` only while more remain."""
        query = parse_event_query(request.query_lists)
        matching = sorted((e for e in self._events if query.matches(e)), key=lambda e: (-e["created_at"], e["id"]))
        first = (query.page - 1) * query.limit
        chunk = matching[first : first + query.limit]
        if not chunk:
            return empty_response(204)
        links = {"self": {"href": self._page_url(request, query.page)}}
        if first + query.limit < len(matching):
            links["next"] = {"href": self._page_url(request, query.page + 1)}
        events = [{**copy.deepcopy(e), "_links": self._links(f"{EVENTS_PATH}/{e['id']}")} for e in chunk]
        body = {"_page": query.page, "_links": links, "_embedded": {"events": events}}
        return json_response(200, body, HAL_TYPE)

    def _add_tasks(self, request: Request) -> Response:
        now = int(time.time())
        embedded = []
        for task in parse_tasks(request.json_body()):
            task_id, self._next_task_id = self._next_task_id, self._next_task_id + 1
            self._tasks.append(
                {
                    "id": task_id,
                    "created_by": API_USER_ID,
                    "updated_by": API_USER_ID,
                    "created_at": now,
                    "updated_at": now,
                    "responsible_user_id": task.get("responsible_user_id", API_USER_ID),
                    "group_id": 0,
                    "entity_id": task.get("entity_id"),
                    "entity_type": task.get("entity_type"),
                    "is_completed": bool(task.get("is_completed", False)),
                    "task_type_id": task.get("task_type_id", 1),
                    "text": task["text"],
                    "duration": task.get("duration", 0),
                    "complete_till": task["complete_till"],
                    "result": [],
                    "account_id": 1,
                }
            )
            embedded.append(
                {"id": task_id, "request_id": task["request_id"], "_links": self._links(f"{TASKS_PATH}/{task_id}")}
            )
        return json_response(200, {"_links": self._links(TASKS_PATH), "_embedded": {"tasks": embedded}}, HAL_TYPE)

    def _list_tasks(self, request: Request) -> Response:
        """``filter[entity_type]``, ``filter[entity_id]``, ``filter[task_type]``, ``filter[is_completed]``; 204 when
        nothing matches, as Kommo answers."""
        query = request.query
        wanted = {
            "entity_type": query.get("filter[entity_type]"),
            "entity_id": query.get("filter[entity_id]"),
            "task_type_id": query.get("filter[task_type]"),
            "is_completed": {"0": "False", "1": "True"}.get(query.get("filter[is_completed]", "")),
        }
        matching = [t for t in self._tasks if all(v is None or str(t[k]) == v for k, v in wanted.items())]
        if not matching:
            return empty_response(204)
        tasks = [{**copy.deepcopy(t), "_links": self._links(f"{TASKS_PATH}/{t['id']}")} for t in matching]
        return json_response(
            200, {"_page": 1, "_links": self._links(TASKS_PATH), "_embedded": {"tasks": tasks}}, HAL_TYPE
        )

    def _patch_task(self, request: Request, task_id: int) -> Response:
        body = request.json_body()
        task = next((t for t in self._tasks if t["id"] == task_id), None)
        if task is None:
            raise SimError(404, "Task not found")
        if not isinstance(body, dict):
            raise validation_failed([issue("0", "InvalidType", "", "The body must be a JSON object.")])
        if "complete_till" in body and (not _is_int(body["complete_till"]) or body["complete_till"] <= 0):
            raise validation_failed([issue("0", "InvalidType", "complete_till", "A unix time in seconds.")])
        if "text" in body and not _is_text(body["text"]):
            raise validation_failed([issue("0", "NotBlank", "text", "This value should not be blank.")])
        for key in ("complete_till", "text", "is_completed", "responsible_user_id", "result"):
            if key in body:
                task[key] = copy.deepcopy(body[key])
        task["updated_at"] = int(time.time())
        body = {"id": task_id, "updated_at": task["updated_at"], "_links": self._links(f"{TASKS_PATH}/{task_id}")}
        return json_response(200, body, HAL_TYPE)

    def _account(self, request: Request) -> Response:
        """The account; ``with=datetime_settings`` adds the time zone under ``_embedded``."""
        body: dict[str, Any] = {
            "id": 1,
            "name": "Simulated account",
            "subdomain": "example",
            "language": self.language,
            "current_user_id": API_USER_ID,
            "country": "ES",
            "currency": "EUR",
            "_links": self._links(ACCOUNT_PATH),
        }
        if "datetime_settings" in request.query.get("with", "").split(","):
            body["_embedded"] = {
                "datetime_settings": {
                    "date_pattern": "d.m.Y H:i",
                    "short_date_pattern": "d.m.Y",
                    "short_time_pattern": "H:i",
                    "date_format": "d.m.Y",
                    "time_format": "H:i",
                    "timezone": self.timezone,
                    "timezone_offset": "+01:00",
                }
            }
        return json_response(200, body, HAL_TYPE)

    # ----- helpers -----

    def _page_url(self, request: Request, page: int) -> str:
        query = {**request.query_lists, "page": [str(page)]}
        return f"{self.root_url}{request.path}?{urlencode(query, doseq=True)}"

    def _store_note(self, note: dict[str, Any]) -> dict[str, Any]:
        note_id, self._next_note_id = self._next_note_id, self._next_note_id + 1
        entity_id = note["entity_id"]
        self._touch_lead(entity_id)
        self._notes.append(
            {"id": note_id, "entity_id": entity_id, "note_type": note["note_type"], "params": note["params"]}
        )
        return {
            "id": note_id,
            "entity_id": entity_id,
            "request_id": note["request_id"],
            "_links": self._links(f"/api/v4/leads/{entity_id}/notes/{note_id}"),
        }

    def _touch_lead(self, lead_id: int) -> dict[str, Any]:
        if lead_id not in self._leads:
            self._leads[lead_id] = default_lead(lead_id, int(time.time()))
        return self._leads[lead_id]

    def _links(self, path: str) -> dict[str, Any]:
        return {"self": {"href": f"{self.root_url}{path}"}}

    def _control_notes(self, request: Request) -> Response:
        lead_id = request.query.get("lead_id")
        return json_response(200, self.notes(int(lead_id) if lead_id else None))

    def _control_tasks(self, request: Request) -> Response:
        lead_id = request.query.get("lead_id")
        return json_response(200, self.tasks(int(lead_id) if lead_id else None))

    def _control_account(self, request: Request) -> Response:
        """``{"timezone": "Europe/Madrid", "language": "es"}``: the zone and language the account endpoint names."""
        body = json.loads(request.body or b"{}")
        fields = ("timezone", "language")
        if not isinstance(body, dict) or not any(key in body for key in fields):
            raise ValueError('body must be a JSON object with a string "timezone" or "language"')
        if not all(isinstance(body[key], str) for key in fields if key in body):
            raise ValueError('"timezone" and "language" must be strings')
        with self._lock:
            self.timezone = body.get("timezone", self.timezone)
            self.language = body.get("language", self.language)
        return empty_response(204)

    def _control_add_lead(self, request: Request) -> Response:
        body = json.loads(request.body or b"{}")
        if not isinstance(body, dict) or not _is_int(body.get("id")):
            raise ValueError('body must be a JSON object with an integer "id"')
        self.add_lead(body.pop("id"), **body)
        return empty_response(204)

    def _control_record_event(self, request: Request) -> Response:
        """``{"type": "lead_status_changed", "lead_id": 7, "status_id": 142, "pipeline_id"?: 1, "created_at"?: ts}``;
        ``lead_deleted`` and ``lead_restored`` need only the lead. Answers the event recorded."""
        body = json.loads(request.body or b"{}")
        if not isinstance(body, dict) or not _is_int(body.get("lead_id")):
            raise ValueError('body must be a JSON object with an integer "lead_id"')
        lead_id, at = body["lead_id"], body.get("created_at")
        if at is not None and not _is_int(at):
            raise ValueError("created_at must be a unix time in seconds")
        kind = body.get("type")
        if kind == LEAD_STATUS_CHANGED:
            if not _is_int(body.get("status_id")):
                raise ValueError('lead_status_changed needs an integer "status_id"')
            event = self.move_lead(lead_id, body["status_id"], body.get("pipeline_id"), at)
        elif kind == LEAD_DELETED:
            event = self.delete_lead(lead_id, at)
        elif kind == LEAD_RESTORED:
            event = self.restore_lead(lead_id, at)
        else:
            raise ValueError(f"type must be one of {LEAD_STATUS_CHANGED}, {LEAD_DELETED}, {LEAD_RESTORED}")
        return json_response(201, event)
