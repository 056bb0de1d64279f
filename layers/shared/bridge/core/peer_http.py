"""Calling an HTTP peer: one session, a timeout on every call, bounded retries, typed errors.

Waits are bounded by ``max_wait``: a peer that asks us to wait longer than that (a long ``Retry-After``) gets a
``Throttled`` error at once, so the caller can hand the job back to the queue instead of sleeping inside a Lambda
that is billed by the millisecond and, behind API Gateway, is cut off at 29 s.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from bridge.core.errors import AnswerLost, NotFound, PeerUnavailable, Rejected, Throttled, Unauthorized
from bridge.core.observability import count
from bridge.core.retry import RetryPolicy

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def retry_after_seconds(response: requests.Response) -> float | None:
    """Seconds the peer asked us to wait: ``Retry-After`` (seconds or an HTTP date), else Whereby's ``msLeft``."""
    header = response.headers.get("Retry-After", "").strip()
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    try:
        data = response.json().get("data", {})
        ms_left = data.get("msLeft", data.get("ms_left"))
        return max(0.0, float(ms_left) / 1000) if ms_left is not None else None
    except (ValueError, AttributeError, TypeError):
        return None


def short_body(response: requests.Response, limit: int = 200) -> str:
    """The start of an error body, for logs; peers answer HTML pages too, so no parsing is assumed."""
    return " ".join(response.text[:limit].split())


class PeerSession:
    """A ``requests.Session`` bound to one peer's base URL and credentials."""

    def __init__(
        self,
        name: str,
        base_url: str,
        headers: Mapping[str, str],
        policy: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        before_request: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.metric = name.capitalize()  # metric names: WherebyErrors, WherebyThrottled, KommoErrors, …
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self._sleep = sleep
        self._before_request = before_request
        self._session = requests.Session()
        self._session.headers.update(headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        repeatable: bool | None = None,
        before_attempt: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries; returns a 2xx response or raises a domain error.

        A POST is not sent again after an error that may have come after the peer acted (a read timeout, a
        dropped connection): it raises ``AnswerLost`` and the caller decides. ``repeatable=True`` says a
        duplicate is harmless (a Whereby room nobody records is swept).

        ``before_attempt`` runs before every attempt, retries included (each costs the peer's quota again).
        """
        policy = self.policy
        repeatable = method.upper() != "POST" if repeatable is None else repeatable
        kwargs.setdefault("timeout", (policy.connect_timeout, policy.read_timeout))
        url = f"{self.base_url}{path}"
        for attempt in range(1, policy.attempts + 1):
            last_try = attempt == policy.attempts
            if self._before_request:
                self._before_request()
            if before_attempt:
                before_attempt()
            try:
                response = self._session.request(method, url, **kwargs)
            except requests.RequestException as exc:
                count(f"{self.metric}Errors")
                if not repeatable and not isinstance(exc, requests.ConnectTimeout):
                    raise AnswerLost(f"{self.name} {method} {path}: {type(exc).__name__}") from None
                if last_try:
                    raise PeerUnavailable(f"{self.name} {method} {path}: {type(exc).__name__}") from None
                self._sleep(self._backoff(attempt))
                continue
            if response.status_code < 300:
                return response
            error = self._error_for(method, path, response)
            if not isinstance(error, NotFound):
                count(f"{self.metric}Throttled" if isinstance(error, Throttled) else f"{self.metric}Errors")
            if not isinstance(error, PeerUnavailable) or last_try:
                raise error
            wait = self._backoff(attempt)
            if isinstance(error, Throttled) and error.retry_after is not None:
                if error.retry_after > policy.max_wait:
                    raise error
                wait = max(wait, error.retry_after)
            self._sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")

    def _backoff(self, attempt: int) -> float:
        return min(self.policy.max_wait, self.policy.backoff * 2.0 ** (attempt - 1) * (1 + random.random() / 2))

    def _error_for(self, method: str, path: str, response: requests.Response) -> Exception:
        status = response.status_code
        what = f"{self.name} {method} {path} answered {status}: {short_body(response)}"
        if status == 429:
            return Throttled(what, retry_after_seconds(response))
        if status in RETRYABLE_STATUSES or status >= 500:
            return PeerUnavailable(what)
        if status == 404:
            return NotFound(what)
        if status == 401:
            return Unauthorized(what, status)
        return Rejected(what, status)
