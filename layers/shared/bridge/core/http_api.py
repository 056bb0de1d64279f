"""API Gateway HTTP API (payload 2.0) in and out: the body as bytes, query and form fields, JSON answers.

HTTP APIs deliver form bodies base64-encoded (``isBase64Encoded``). The routes read five fields of the event, so
they get this small view of it rather than Powertools' event class, whose package imports every event class (about
40 ms of a cold start paid inside Kommo's 2 s).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_FORM_BYTES = 64 * 1024


class BadRequest(ValueError):
    """The request cannot be read; the message is safe to show the caller."""


@dataclass(frozen=True)
class ApiRequest:
    """What the routes read of an API Gateway HTTP API event (payload format 2.0)."""

    method: str = "POST"
    body: str = ""
    is_base64_encoded: bool = False
    raw_query_string: str = ""
    query_string_parameters: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # names lower-cased, as HTTP APIs deliver them
    domain_name: str = ""  # the API's own host name as the caller reached it (requestContext.domainName)

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> ApiRequest:
        http = (event.get("requestContext") or {}).get("http") or {}
        return cls(
            method=str(http.get("method") or ""),
            body=event.get("body") or "",
            is_base64_encoded=bool(event.get("isBase64Encoded")),
            raw_query_string=event.get("rawQueryString") or "",
            query_string_parameters=event.get("queryStringParameters") or {},
            headers={str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()},
            domain_name=str((event.get("requestContext") or {}).get("domainName") or ""),
        )


def body_bytes(event: ApiRequest) -> bytes:
    raw = event.body
    if event.is_base64_encoded:
        try:
            return base64.b64decode(raw, validate=True)
        except (ValueError, binascii.Error):
            raise BadRequest("body is not valid base64") from None
    return raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)


def form_fields(event: ApiRequest, limit: int = MAX_FORM_BYTES) -> dict[str, list[str]]:
    """Form fields from a POST body, or from the query string of a GET (Mattermost allows both)."""
    if event.method.upper() == "GET":
        text = event.raw_query_string
    else:
        raw = body_bytes(event)
        if len(raw) > limit:
            raise BadRequest("body too large")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("body is not UTF-8") from None
    try:
        return parse_qs(text, keep_blank_values=True, max_num_fields=1000)
    except ValueError:
        raise BadRequest("too many form fields") from None


def json_response(status: int, payload: Any) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(payload, ensure_ascii=False),
    }


def token_matches(given: str | None, expected: Sequence[str]) -> bool:
    """Constant-time comparison against each valid token (several during a rotation)."""
    given_bytes = (given or "").encode()
    matched = False
    for token in expected:
        if token:
            matched |= hmac.compare_digest(given_bytes, token.encode())
    return matched


def is_callback_url(url: str) -> bool:
    """Whether a peer's callback address (a slash command's ``response_url``) may be posted to: https, or plain http
    to this machine only (the local stack's simulators)."""
    parts = urlsplit(url.strip())
    local = parts.scheme == "http" and parts.hostname in {"127.0.0.1", "localhost"}
    return (parts.scheme == "https" or local) and bool(parts.hostname)
