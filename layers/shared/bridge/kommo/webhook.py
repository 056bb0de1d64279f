"""Kommo account webhooks: a form-encoded body with PHP-style nested keys → typed lead events.

Real deliveries differ by era (2016, 2021, 2025 captures): key order varies, optional fields come and go, one body
may carry several leads and several actions, every value is a string. Only what the bridge needs is typed here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

MAX_BODY_BYTES = 512 * 1024
MAX_FIELDS = 20_000
MAX_DEPTH = 10
LEAD_ACTIONS = ("add", "update", "status", "delete", "restore", "responsible")
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_INTEGER = re.compile(r"-?[0-9]{1,18}")


class MalformedWebhook(ValueError):
    """The body is not a Kommo webhook; the message is short and safe to return to the caller."""


@dataclass(frozen=True)
class LeadEvent:
    action: str
    lead_id: int
    status_id: int | None
    pipeline_id: int | None
    old_status_id: int | None
    occurred_at: int | None  # unix seconds of the change, when the body says it
    responsible_user_id: int | None = None
    modified_user_id: int | None = None  # 0: a robot, the API or an integration (our own writes among them)
    # The lead's filled custom fields as (field id, first value), in the v2 layout Kommo's webhooks still use.
    custom_fields: tuple[tuple[int, str], ...] = ()

    def field_value(self, field_id: int) -> str | None:
        """The field's first value as Kommo sent it; None when the body does not carry the field (it is empty)."""
        return next((value for fid, value in self.custom_fields if fid == field_id), None)


@dataclass(frozen=True)
class KommoWebhook:
    subdomain: str | None
    account_id: int | None
    events: tuple[LeadEvent, ...]
    ignored: int  # entries of other entities (contacts, tasks…) or actions the bridge does not use


def parse_nested_form(body: bytes) -> dict[str, Any]:
    """Decode ``a[b][0][c]=v`` pairs into nested dicts, the way PHP does (list indexes stay string keys)."""
    if len(body) > MAX_BODY_BYTES:
        raise MalformedWebhook(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise MalformedWebhook("body is not UTF-8") from None
    except ValueError:
        raise MalformedWebhook("body is not form-encoded") from None
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if not match:
            raise MalformedWebhook("body has a malformed key")
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        if len(path) > MAX_DEPTH:
            raise MalformedWebhook("body nests too deep")
        _assign(root, path, value)
    return root


def _assign(root: dict[str, Any], path: list[str], value: str) -> None:
    node = root
    for part in path[:-1]:
        part = part if part else str(len(node))  # PHP's "[]" appends
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}  # a later nested key overrides an earlier scalar, as in PHP
        node = child
    last = path[-1] if path[-1] else str(len(node))
    node[last] = value


def _int(value: object, name: str = "value") -> int | None:
    """A whole number Kommo sent as text; absent or empty is None, anything else malformed is refused.

    ``str.isdigit`` is not enough: it accepts ``²`` and other scripts' digits, and ``int`` then fails or reads a
    5,000-digit number; an id longer than 18 digits is no Kommo id.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    raise MalformedWebhook(f"{name} is not a whole number")


def _lead_event(action: str, item: object) -> LeadEvent:
    if not isinstance(item, Mapping):
        raise MalformedWebhook(f"leads[{action}] entry is not an object")
    where = f"leads[{action}]"
    lead_id = _int(item.get("id"), f"{where} id")
    if lead_id is None or lead_id <= 0:
        raise MalformedWebhook(f"{where} entry has no numeric id")
    updated_at = _int(item.get("updated_at"), f"{where} updated_at")
    last_modified = _int(item.get("last_modified"), f"{where} last_modified")
    occurred = updated_at or last_modified
    if occurred is not None and occurred <= 0:
        raise MalformedWebhook(f"{where} has an impossible change time")
    return LeadEvent(
        action=action,
        lead_id=lead_id,
        status_id=_int(item.get("status_id"), f"{where} status_id"),
        pipeline_id=_int(item.get("pipeline_id"), f"{where} pipeline_id"),
        old_status_id=_int(item.get("old_status_id"), f"{where} old_status_id"),
        occurred_at=occurred,
        responsible_user_id=_lenient_int(item.get("responsible_user_id")),
        modified_user_id=_lenient_int(item.get("modified_user_id")),
        custom_fields=_custom_fields(item.get("custom_fields")),
    )


def _lenient_int(value: object) -> int | None:
    """A field the bridge only reads now and then: an odd value is no reason to refuse the whole body."""
    return int(value) if isinstance(value, str) and _INTEGER.fullmatch(value) else None


def _custom_fields(fields: object) -> tuple[tuple[int, str], ...]:
    """``custom_fields[i][id]`` with ``[values][0]`` (date fields) or ``[values][0][value]`` (the others).

    Fields of other integrations may come in shapes the bridge does not know; those are skipped, not refused.
    """
    if not isinstance(fields, Mapping):
        return ()
    found: list[tuple[int, str]] = []
    for _, entry in sorted(fields.items(), key=_index_order):
        if not isinstance(entry, Mapping) or not isinstance(values := entry.get("values"), Mapping):
            continue
        field_id = _lenient_int(entry.get("id"))
        first = next(iter(sorted(values.items(), key=_index_order)), (None, None))[1]
        if isinstance(first, Mapping):
            first = first.get("value")
        if field_id is not None and isinstance(first, str):
            found.append((field_id, first))
    return tuple(found)


def parse_webhook(body: bytes) -> KommoWebhook:
    data = parse_nested_form(body)
    account = data.get("account")
    if not isinstance(account, Mapping):
        raise MalformedWebhook("no account in body")
    subdomain = account.get("subdomain")
    subdomain = subdomain.strip().lower() if isinstance(subdomain, str) and subdomain.strip() else None
    account_id = _int(account.get("id"), "account[id]")
    if subdomain is None and account_id is None:
        raise MalformedWebhook("account has neither subdomain nor id")
    events: list[LeadEvent] = []
    ignored = sum(_count_entries(v) for k, v in data.items() if k not in ("account", "leads"))
    leads = data.get("leads", {})
    if not isinstance(leads, Mapping):
        raise MalformedWebhook("leads is not an object")
    for action, entries in leads.items():
        if not isinstance(entries, Mapping):
            raise MalformedWebhook(f"leads[{action}] is not a list")
        if action not in LEAD_ACTIONS:
            ignored += len(entries)
            continue
        events.extend(_lead_event(action, item) for _, item in sorted(entries.items(), key=_index_order))
    return KommoWebhook(subdomain, account_id, tuple(events), ignored)


def _index_order(entry: tuple[str, object]) -> tuple[int, str]:
    key = entry[0]
    return (int(key), key) if _INTEGER.fullmatch(key) else (1 << 62, key)


def _count_entries(entity: object) -> int:
    if not isinstance(entity, Mapping):
        return 1
    return sum(len(v) if isinstance(v, Mapping) else 1 for v in entity.values())
