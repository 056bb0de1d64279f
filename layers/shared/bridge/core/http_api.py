"""API Gateway HTTP API (payload 2.0) in and out: the body as bytes, query and form fields, JSON answers.

HTTP APIs deliver form bodies base64-encoded (``isBase64Encoded``); the Powertools event class decodes them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

MAX_FORM_BYTES = 64 * 1024


class BadRequest(ValueError):
    """The request cannot be read; the message is safe to show the caller."""


def body_bytes(event: APIGatewayProxyEventV2) -> bytes:
    raw = event.get("body") or ""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(raw, validate=True)
        except (ValueError, binascii.Error):
            raise BadRequest("body is not valid base64") from None
    return raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)


def form_fields(event: APIGatewayProxyEventV2, limit: int = MAX_FORM_BYTES) -> dict[str, list[str]]:
    """Form fields from a POST body, or from the query string of a GET (Mattermost allows both)."""
    if (event.request_context.http.method or "").upper() == "GET":
        text = event.raw_query_string or ""
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
