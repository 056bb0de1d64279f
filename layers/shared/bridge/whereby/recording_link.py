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
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.core.errors import NotFound, PeerUnavailable, Rejected, Throttled
from bridge.core.http_api import json_response
from bridge.core.observability import count, logger
from bridge.store.recordings import RecordingsStore
from bridge.whereby.client import WherebyClient

LINK_SECONDS = 300
# token_urlsafe(24) makes 32 characters; anything else was never issued, and is not looked up.
LINK_ID = re.compile(r"[A-Za-z0-9_-]{32}")


@dataclass(frozen=True)
class LinkPorts:
    recordings: RecordingsStore
    whereby: Callable[[], WherebyClient]  # built only for a known id: a stranger's request reads no secret
    clock: Callable[[], float] = time.time


def redirect(location: str) -> dict[str, Any]:
    return {
        "statusCode": 302,
        "headers": {"Location": location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        "body": "",
    }


def answer(link_id: str, ports: LinkPorts) -> dict[str, Any]:
    if not LINK_ID.fullmatch(link_id):
        count("RecordingLinksUnknown")
        return json_response(404, {"error": "no such recording"})
    try:
        recording = ports.recordings.by_link(link_id)
    except PeerUnavailable:
        return _unavailable("the bridge cannot read its table right now", None)
    if recording is None:
        count("RecordingLinksUnknown")
        return json_response(404, {"error": "no such recording"})
    if recording.gone(ports.clock()):
        return json_response(410, {"error": "this recording was deleted: its deal was closed or deleted"})
    logger.append_keys(room_key=recording.room_key, media=recording.kind)
    try:
        link = ports.whereby().access_link(recording.kind, recording.media_id, LINK_SECONDS)
    except NotFound:
        return json_response(410, {"error": "Whereby no longer has this recording"})
    except Throttled as exc:
        return _unavailable("Whereby asks us to wait; try again shortly", exc.retry_after)
    except PeerUnavailable:
        return _unavailable("Whereby cannot be reached right now; try again shortly", None)
    except Rejected as exc:
        count("RecordingLinksRefused")
        logger.error(
            "Whereby refused a link to a recording (403: not stored by Whereby; 401: our API key)",
            extra={"status": exc.status, "reason": str(exc)},
        )
        return json_response(502, {"error": "Whereby gives no link to this recording"})
    count("RecordingLinksOpened")
    return redirect(link.url)


def _unavailable(message: str, retry_after: float | None) -> dict[str, Any]:
    response = json_response(503, {"error": message})
    response["headers"]["Retry-After"] = str(max(1, round(retry_after or 5)))
    return response
