"""``GET /recordings/{id}``: a note's stable link answers with a redirect to a fresh, short-lived Whereby link.

The id in the path is a credential (``bridge.store.recordings``): it is never logged, never echoed in an answer,
and never put in an error message. The answers:
- 302 to a link Whereby made just now, valid ``LINK_SECONDS``: enough to start the download, too short to be worth
  passing on. ``Cache-Control: no-store`` keeps a browser or a proxy from replaying a redirect whose link expired.
- 404 for an id we never issued (a malformed one too: it is just another unknown id).
- 410 for a recording that was deleted, or is due for deletion, because its deal was closed or deleted: the person
  holding an old note learns that the retention rules removed it, not that the bridge is broken. Guessing ids
  cannot use the difference: 192 random bits are not guessed.
- 502 when Whereby will not give a link (it answers 403 for recordings kept in the organisation's own storage, or
  refuses our key): a peer's failure, not the caller's, so not a 4xx; the reason is logged for the operator.
- 503 with ``Retry-After`` when Whereby or our points budget says wait, or Whereby or the table is unreachable.

A person reads these answers in a browser: the sentence is in the browser's language (``Accept-Language``) when the
catalogue has it, else in the stack's ``Language``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.core.errors import NotFound, PeerUnavailable, Rejected, Throttled
from bridge.core.http_api import json_response
from bridge.core.i18n import DEFAULT_LANGUAGE, Speech, language_of, speech
from bridge.core.observability import count, logger
from bridge.store.recordings import RecordingsStore
from bridge.whereby.client import WherebyClient

LINK_SECONDS = 300
# token_urlsafe(24) makes 32 characters; anything else was never issued, and is not looked up.
LINK_ID = re.compile(r"[A-Za-z0-9_-]{32}")
# Enough of a browser's Accept-Language to find its first choice; the rest of a long header is never parsed.
ACCEPT_LANGUAGE_CHARS = 256


@dataclass(frozen=True)
class LinkPorts:
    recordings: RecordingsStore
    whereby: Callable[[], WherebyClient]  # built only for a known id: a stranger's request reads no secret
    clock: Callable[[], float] = time.time
    language: str = DEFAULT_LANGUAGE  # the stack's Language, for a browser that asks for none the catalogue has


def reader_language(accept_language: str, default: str) -> str:
    """The catalogue language a browser prefers most (``Accept-Language: ru-RU,ru;q=0.9,en;q=0.8``), else
    ``default``."""
    ranked: list[tuple[float, int, str]] = []
    for order, item in enumerate(accept_language[:ACCEPT_LANGUAGE_CHARS].split(",")):
        tag, _, params = item.partition(";")
        weight = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value)
            except ValueError:
                continue
        language = language_of(tag, "")
        if language and weight > 0:
            ranked.append((-weight, order, language))
    return min(ranked)[2] if ranked else default


def redirect(location: str) -> dict[str, Any]:
    return {
        "statusCode": 302,
        "headers": {"Location": location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        "body": "",
    }


def answer(link_id: str, ports: LinkPorts, accept_language: str = "") -> dict[str, Any]:
    sp = speech(reader_language(accept_language, ports.language))
    if not LINK_ID.fullmatch(link_id):
        count("RecordingLinksUnknown")
        return _error(404, sp, sp.t("no such recording"))
    try:
        recording = ports.recordings.by_link(link_id)
    except PeerUnavailable:
        return _unavailable(sp, sp.t("the bridge cannot read its table right now"), None)
    if recording is None:
        count("RecordingLinksUnknown")
        return _error(404, sp, sp.t("no such recording"))
    if recording.gone(ports.clock()):
        return _error(410, sp, sp.t("this recording was deleted: its deal was closed or deleted"))
    logger.append_keys(room_key=recording.room_key, media=recording.kind)
    try:
        link = ports.whereby().access_link(recording.kind, recording.media_id, LINK_SECONDS)
    except NotFound:
        return _error(410, sp, sp.t("Whereby no longer has this recording"))
    except Throttled as exc:
        return _unavailable(sp, sp.t("Whereby asks us to wait; try again shortly"), exc.retry_after)
    except PeerUnavailable:
        return _unavailable(sp, sp.t("Whereby cannot be reached right now; try again shortly"), None)
    except Rejected as exc:
        count("RecordingLinksRefused")
        logger.error(
            "Whereby refused a link to a recording (403: not stored by Whereby; 401: our API key)",
            extra={"status": exc.status, "reason": str(exc)},
        )
        return _error(502, sp, sp.t("Whereby gives no link to this recording"))
    count("RecordingLinksOpened")
    return redirect(link.url)


def _error(status: int, sp: Speech, message: str) -> dict[str, Any]:
    response = json_response(status, {"error": message})
    # The sentence changes with the reader's language: a cache must not hand one reader's to another.
    response["headers"]["Content-Language"] = sp.language.replace("_", "-")
    response["headers"]["Vary"] = "Accept-Language"
    return response


def _unavailable(sp: Speech, message: str, retry_after: float | None) -> dict[str, Any]:
    response = _error(503, sp, message)
    response["headers"]["Retry-After"] = str(max(1, round(retry_after or 5)))
    return response
