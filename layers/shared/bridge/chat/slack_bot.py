"""The Slack app's bot: ``chat.postMessage``, ``chat.update`` and ``users.info`` through ``slack_sdk``'s
``WebClient``.

Slack answers a refusal with HTTP 200 and ``{"ok": false, "error": "…"}``; the client turns it into
``SlackApiError``, told apart here:

- 429, a 5xx or no answer at all: ``PeerUnavailable``; the job is retried by the queue.
- any other refusal (``not_in_channel``, ``channel_not_found``, ``invalid_auth``, ``missing_scope``,
  ``message_not_found``, …) or HTTP status: ``BotRefused`` with Slack's short error code, for the caller to fall
  back on the command's ``response_url``. The code is Slack's, never a secret, so it may be logged and counted.

The token is only ever sent in the ``Authorization`` header; it is neither logged nor part of an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.core.errors import PeerUnavailable

TIMEOUT_SECONDS = 10
# Slack's refusals that mean "the bot cannot post there": the channel is private (or a DM) and the bot is no
# member of it. The caller can fix these by inviting the app.
NOT_IN_CHANNEL = frozenset({"not_in_channel", "channel_not_found"})
_CODE = re.compile(r"[a-z0-9_]{1,80}")


class BotRefused(Exception):
    """Slack refused the call for good (``error``: Slack's code, such as ``not_in_channel``)."""

    def __init__(self, error: str) -> None:
        super().__init__(f"slack refused the bot's call: {error}")
        self.error = error

    @property
    def not_in_channel(self) -> bool:
        return self.error in NOT_IN_CHANNEL


class SlackBot:
    """One workspace's bot (its ``xoxb-`` token) on Slack's Web API at ``base_url`` (ending in ``/``)."""

    def __init__(self, base_url: str, token: str, timeout: int = TIMEOUT_SECONDS) -> None:
        from slack_sdk import WebClient

        self._client = WebClient(token=token, base_url=base_url, timeout=timeout)

    def __repr__(self) -> str:  # never the token
        return "SlackBot(<redacted>)"

    def post(self, channel: str, text: str, blocks: Sequence[Mapping[str, Any]]) -> str:
        """Post a message to ``channel``; its ``ts``, the id ``update`` takes."""
        answer = self._call("chat.postMessage", {"channel": channel, "text": text, "blocks": list(blocks)})
        ts = answer.get("ts")
        if not isinstance(ts, str) or not ts:
            raise PeerUnavailable("slack chat.postMessage answered ok without a ts")
        return ts

    def update(self, channel: str, ts: str, text: str, blocks: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite the bot's own message ``ts`` in ``channel`` (the blocks are replaced, an empty list removes
        them)."""
        self._call("chat.update", {"channel": channel, "ts": ts, "text": text, "blocks": list(blocks)})

    def locale(self, user: str) -> str:
        """The user's locale as Slack says it ("es-LA"), or "" when the answer has none. Needs ``users:read``."""
        # users.info takes its arguments as a query, never as a JSON body.
        answer = self._call("users.info", params={"user": user, "include_locale": "true"})
        found = answer.get("user")
        locale = found.get("locale") if isinstance(found, Mapping) else None
        return locale if isinstance(locale, str) else ""

    def _call(
        self, method: str, body: Mapping[str, Any] | None = None, params: Mapping[str, str] | None = None
    ) -> Mapping[str, Any]:
        from slack_sdk.errors import SlackApiError

        try:
            if params is not None:
                response = self._client.api_call(method, http_verb="GET", params=dict(params))
            else:
                response = self._client.api_call(method, json=dict(body or {}))
        except SlackApiError as exc:
            status = exc.response.status_code
            if status == 429 or status >= 500:
                raise PeerUnavailable(f"slack {method} answered {status}") from None
            data = exc.response.data
            error = data.get("error") if isinstance(data, Mapping) else None
            if status != 200:
                raise BotRefused(f"http_{status}") from None
            # slack_sdk reports a body that is no JSON as a long sentence quoting it: only Slack's codes are kept.
            raise BotRefused(
                error if isinstance(error, str) and _CODE.fullmatch(error) else "unexpected_answer"
            ) from None
        except (OSError, ValueError) as exc:  # urllib's URLError and timeouts are OSErrors
            raise PeerUnavailable(f"slack {method} failed: {type(exc).__name__}") from None
        data = response.data
        return data if isinstance(data, Mapping) else {}
