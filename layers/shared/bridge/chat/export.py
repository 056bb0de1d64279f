"""``GET /chat/export``: the CSV of a channel's meetings, for a signed link that ``/whereby export`` gave.

The query string is a credential (``bridge.chat.stats``): it is never logged, echoed or put in an error. Answers:
- 200 ``text/csv; charset=utf-8`` as an attachment, ``Cache-Control: no-store`` (a file of people's names is kept
  by no proxy), columns start, end, minutes, topic, creator, people;
- 403 with a short JSON reason for a link that is malformed, tampered with (any parameter changed, the signature
  cut) or expired: a bad link never gets a 5xx, and reads nothing;
- 503 when the signing keys or the table cannot be read (our trouble, not the link's; try again).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.chat.stats import LinkRefused, csv_text, export_rows, read_link
from bridge.core.errors import PeerUnavailable
from bridge.core.http_api import ApiRequest, json_response
from bridge.core.observability import count, logger
from bridge.store.credentials import SecretError
from bridge.store.meetings import MeetingsStore

_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True)
class ExportRuntime:
    """What the route needs from the production ports (``bridge.runtime.chat_export``)."""

    keys: Callable[[], Sequence[str]]  # the ActionKeySecret keys
    store: Callable[[], MeetingsStore]
    clock: Callable[[], float] = time.time


def answer(request: ApiRequest, runtime: ExportRuntime) -> dict[str, Any]:
    now = runtime.clock()
    try:
        keys = runtime.keys()
    except SecretError as exc:
        logger.error("export not served: the signing keys cannot be read", extra={"reason": str(exc)})
        return _private(_unavailable())
    try:
        link = read_link(request.query_string_parameters, keys, now)
    except LinkRefused as exc:
        count("ChatExportsRefused")
        logger.warning("export link refused", extra={"reason": exc.kind})
        return _private(json_response(403, {"error": exc.reason}))
    try:
        meetings = runtime.store().meetings_of(link.owner, link.issued - link.days * 24 * 3600, link.issued)
    except PeerUnavailable as exc:
        logger.error("export not served: storage unavailable", extra={"reason": str(exc)})
        return _private(_unavailable())
    rows = export_rows(meetings, link)
    count("ChatExportsServed")
    logger.info("export served", extra={"rows": len(rows), "days": link.days})
    day = datetime.fromtimestamp(link.issued, UTC).strftime("%Y-%m-%d")
    return {
        "statusCode": 200,
        "headers": {
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="whereby-meetings-{link.days}d-{day}.csv"',
            **_PRIVATE,
        },
        "body": csv_text(rows),
    }


def _unavailable() -> dict[str, Any]:
    response = json_response(503, {"error": "the export is unavailable right now; try again in a minute"})
    response["headers"]["Retry-After"] = "30"
    return response


def _private(response: dict[str, Any]) -> dict[str, Any]:
    response["headers"].update(_PRIVATE)
    return response
