"""A Slack workspace for the local stack: it sends signed ``/whereby`` commands and takes ``response_url`` posts.

- ``command(url, text)`` posts a slash command to the bridge as Slack does (form body in Slack's field order,
  ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature: v0=…`` with the configured signing secret) and returns
  the bridge's answer and how long it took; each command gets its own ``trigger_id`` and ``response_url``.
- ``POST /commands/<team>/<id>/<token>`` is the ``response_url``: each takes five posts within 30 minutes, then
  answers 404 ``used_url`` or ``expired_url`` as Slack does. ``posts()`` lists what arrived, per command.
- The base simulator's faults apply to the ``response_url`` posts (``fail_next(lost_answer=True)``: the post is
  kept, its answer lost).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from devstack.sim_server import Fault, Request, Response, SimError, SimServer, json_response

DEFAULT_SIGNING_SECRET = "local-slack-signing-secret"
DEFAULT_TEAM = "T0LOCAL0001"
RESPONSE_URL_USES = 5
RESPONSE_URL_SECONDS = 30 * 60


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the JSON the bridge answered, or its text
    seconds: float
    response_url: str
    trigger_id: str


class SlackSimulator(SimServer):
    def __init__(
        self,
        signing_secret: str = DEFAULT_SIGNING_SECRET,
        team_id: str = DEFAULT_TEAM,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.signing_secret = signing_secret
        self.team_id = team_id
        self._counter = itertools.count(1)
        self._hooks: dict[str, dict[str, Any]] = {}  # response_url path -> {"created": t, "posts": [...]}

    # ----- the workspace's side -----

    def command(
        self,
        url: str,
        text: str,
        *,
        channel_id: str = "C0LOCALCHAN",
        user_id: str = "U0LOCALUSER",
        user_name: str = "anna.petrova",
        team_id: str | None = None,
        signing_secret: str | None = None,
        timestamp: int | None = None,
        trigger_id: str | None = None,
        command: str = "/whereby",
    ) -> Answer:
        """Send ``/whereby text`` to ``url`` (the bridge's ``/slack/command``) as Slack would."""
        team = team_id or self.team_id
        trigger = trigger_id or f"{int(time.time())}.600123.{secrets.token_hex(16)}"
        response_url = self.new_response_url(team)
        body = urlencode(
            [
                ("token", "deprecated-verification-token"),
                ("team_id", team),
                ("team_domain", "local"),
                ("channel_id", channel_id),
                ("channel_name", "local-channel"),
                ("user_id", user_id),
                ("user_name", user_name),
                ("command", command),
                ("text", text),
                ("api_app_id", "A0LOCALAPP1"),
                ("is_enterprise_install", "false"),
                ("response_url", response_url),
                ("trigger_id", trigger),
            ]
        ).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            **signed(body, signing_secret or self.signing_secret, int(time.time()) if timestamp is None else timestamp),
        }
        started = time.perf_counter()
        answer = requests.post(url, data=body, headers=headers, timeout=10)
        seconds = time.perf_counter() - started
        try:
            content: Any = answer.json()
        except ValueError:
            content = answer.text
        return Answer(answer.status_code, content, seconds, response_url, trigger)

    def new_response_url(self, team_id: str | None = None) -> str:
        """A fresh ``response_url``, as Slack makes one for each command."""
        hook = f"/commands/{team_id or self.team_id}/{next(self._counter)}/{secrets.token_urlsafe(12)}"
        with self._lock:
            self._hooks[hook] = {"created": time.time(), "posts": []}
        return f"{self.root_url}{hook}"

    def posts(self, response_url: str | None = None) -> list[dict[str, Any]]:
        """The messages posted to one ``response_url`` (or to all, in order of arrival)."""
        with self._lock:
            if response_url is not None:
                path = response_url.removeprefix(self.root_url)
                return [dict(post) for post in self._hooks.get(path, {}).get("posts", [])]
            return [dict(post) for hook in self._hooks.values() for post in hook["posts"]]

    # ----- the simulator -----

    def _reset_state(self) -> None:
        self._hooks.clear()

    def _authorized(self, request: Request) -> bool:
        return True  # a response_url is its own credential

    def _unauthorized(self) -> Response:
        return json_response(403, {"error": "invalid_auth"})

    def _route(self, request: Request) -> Response:
        hook = self._hooks.get(request.path)
        if request.method != "POST" or hook is None:
            return Response(404, b"no_service", "text/plain")
        if time.time() - hook["created"] > RESPONSE_URL_SECONDS:
            return Response(404, b"expired_url", "text/plain")
        if len(hook["posts"]) >= RESPONSE_URL_USES:
            return Response(404, b"used_url", "text/plain")
        message = request.json_body(unsupported_status=400)
        if not isinstance(message, dict) or not (message.get("text") or message.get("blocks")):
            return Response(400, b"invalid_payload", "text/plain")
        hook["posts"].append(message)
        return Response(200, b"ok", "text/plain")

    def _error_response(self, error: SimError) -> Response:
        return Response(error.status, b"invalid_payload", "text/plain")

    def _fault_body(self, fault: Fault) -> Response:
        return Response(fault.status, b"service_unavailable", "text/plain")


def signed(body: bytes, signing_secret: str, timestamp: int) -> dict[str, str]:
    """Slack's two signature headers for ``body`` (v0, HMAC-SHA256 over ``v0:{timestamp}:{body}``)."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}
