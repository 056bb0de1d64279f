"""A Slack workspace for the local stack: it sends signed ``/whereby`` commands and button clicks, takes
``response_url`` posts and serves the bot's Web API.

- ``command(url, text)`` posts a slash command to the bridge as Slack does (form body in Slack's field order,
  ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature: v0=…`` with the configured signing secret) and returns
  the bridge's answer and how long it took; each command gets its own ``trigger_id`` and ``response_url``.
- ``POST /commands/<team>/<id>/<token>`` is the ``response_url``: each takes five posts within 30 minutes, then
  answers 404 ``used_url`` or ``expired_url`` as Slack does. ``posts()`` lists what arrived, per command. An
  ``in_channel`` post becomes a message of the command's channel; a click's ``response_url`` applies
  ``replace_original`` to the message clicked.
- ``POST /api/chat.postMessage`` and ``/api/chat.update`` (``api_url``) are the bot's Web API: a Bearer token other
  than ``bot_token`` gets ``invalid_auth``, a private channel the bot was not invited to ``not_in_channel``, an
  update of a message the bot did not post ``cant_update_message``; every refusal is ``{"ok": false, "error": …}``
  at HTTP 200, as Slack answers. ``messages()`` lists the channel's messages, each with its edits.
- ``GET /api/users.info?user=U…&include_locale=true`` (or the same as a form) answers the user with their
  ``locale`` (``set_locale``; "en-US" by default), and without it when ``include_locale`` is not true, as Slack
  does; ``refuse_users_info("missing_scope")`` makes it answer that error (an app without ``users:read``).
  ``users_info_calls()`` counts the calls.
- ``click(url, ts, action_id)`` clicks a button of a message the workspace holds, as Slack does: a signed form
  with one field, ``payload``, a ``block_actions`` JSON with a fresh ``trigger_id`` and ``response_url``.
- The base simulator's faults apply to every request (``fail_next(lost_answer=True)``: the post is kept, its
  answer lost).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

import requests

from devstack.sim_server import Fault, Request, Response, SimError, SimServer, json_response

DEFAULT_SIGNING_SECRET = "local-slack-signing-secret"
DEFAULT_TEAM = "T0LOCAL0001"
DEFAULT_BOT_TOKEN = "xoxb-local-bot-token"
RESPONSE_URL_USES = 5
RESPONSE_URL_SECONDS = 30 * 60
DEFAULT_LOCALE = "en-US"


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
        bot_token: str = DEFAULT_BOT_TOKEN,
    ) -> None:
        super().__init__(host, port)
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.bot_token = bot_token
        self._counter = itertools.count(1)
        # response_url path -> {"created": t, "posts": [...], "channel": id or "", "message": key of a clicked one}
        self._hooks: dict[str, dict[str, Any]] = {}
        self._messages: dict[str, dict[str, Any]] = {}  # "<channel>/<ts>" -> the message and its versions
        self._private: set[str] = set()  # private channels the bot is not a member of
        self._locales: dict[str, str] = {}  # user id -> locale, for users.info
        self._users_info_error = ""  # users.info's refusal, when a test switched one on
        self._users_info_calls: list[str] = []  # the user of each users.info call

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
        trigger = trigger_id or new_trigger_id()
        response_url = self.new_response_url(team, channel_id)
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
        return self._send(url, body, signing_secret, timestamp, response_url, trigger)

    def click(
        self,
        url: str,
        ts: str,
        action_id: str,
        *,
        user_id: str = "U0LOCALUSER",
        user_name: str = "anna.petrova",
        team_id: str | None = None,
        channel_id: str | None = None,
        value: str | None = None,
        signing_secret: str | None = None,
        timestamp: int | None = None,
    ) -> Answer:
        """Click the button ``action_id`` of the message ``ts`` and send the ``block_actions`` payload to ``url``
        (the bridge's ``/slack/action``) as Slack would.

        ``channel_id`` and ``value`` stand for what a message copied to another channel, or a tampered button,
        would send; by default they are the message's own.
        """
        with self._lock:
            message = next((m for m in self._messages.values() if m["ts"] == ts), None)
            if message is None:
                raise ValueError(f"the workspace holds no message {ts}")
            found = [
                (block.get("block_id", ""), element)
                for block in message["blocks"] or []
                if block.get("type") == "actions"
                for element in block.get("elements", [])
                if element.get("action_id") == action_id
            ]
            if not found:
                raise ValueError(f"message {ts} has no button {action_id!r} (any more)")
            block_id, button = found[0]
            channel = channel_id or message["channel"]
            team = team_id or self.team_id
            response_url = self.new_response_url(team, channel, message_key=_key(message["channel"], ts))
            action = {
                "action_id": action_id,
                "block_id": block_id,
                "text": button.get("text"),
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
            if "value" in button or value is not None:
                action["value"] = button.get("value", "") if value is None else value
            if "style" in button:
                action["style"] = button["style"]
            trigger = new_trigger_id()
            payload: dict[str, Any] = {
                "type": "block_actions",
                "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team},
                "api_app_id": "A0LOCALAPP1",
                "token": "deprecated-verification-token",
                "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
                "trigger_id": trigger,
                "team": {"id": team, "domain": "local"},
                "enterprise": None,
                "is_enterprise_install": False,
                "channel": {"id": channel, "name": "local-channel"},
                "message": {"type": "message", "ts": ts, "text": message["text"], "blocks": message["blocks"]},
                "state": {"values": {}},
                "response_url": response_url,
                "actions": [action],
            }
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
        return self._send(url, body, signing_secret, timestamp, response_url, trigger)

    def _send(
        self, url: str, body: bytes, secret: str | None, timestamp: int | None, response_url: str, trigger: str
    ) -> Answer:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            **signed(body, secret or self.signing_secret, int(time.time()) if timestamp is None else timestamp),
        }
        started = time.perf_counter()
        answer = requests.post(url, data=body, headers=headers, timeout=10)
        seconds = time.perf_counter() - started
        try:
            content: Any = answer.json()
        except ValueError:
            content = answer.text
        return Answer(answer.status_code, content, seconds, response_url, trigger)

    def new_response_url(self, team_id: str | None = None, channel_id: str = "", message_key: str = "") -> str:
        """A fresh ``response_url``, as Slack makes one for each command (in ``channel_id``) and each click (on the
        message ``message_key``)."""
        kind = "actions" if message_key else "commands"
        hook = f"/{kind}/{team_id or self.team_id}/{next(self._counter)}/{secrets.token_urlsafe(12)}"
        with self._lock:
            self._hooks[hook] = {"created": time.time(), "posts": [], "channel": channel_id, "message": message_key}
        return f"{self.root_url}{hook}"

    @property
    def api_url(self) -> str:
        """The Web API's base URL (``SLACK_API_URL``), ending in ``/`` as ``slack_sdk`` joins it."""
        return f"{self.root_url}/api/"

    def private_channel(self, channel_id: str, *, bot_invited: bool = False) -> None:
        """Make ``channel_id`` private; the bot can post there only once invited."""
        with self._lock:
            (self._private.discard if bot_invited else self._private.add)(channel_id)

    def set_locale(self, user_id: str, locale: str) -> None:
        """The locale ``users.info`` gives for ``user_id`` (as a person sets their language in Slack)."""
        with self._lock:
            self._locales[user_id] = locale

    def refuse_users_info(self, error: str = "missing_scope") -> None:
        """``users.info`` answers ``error`` from now on ("missing_scope": the app was installed without
        ``users:read``); an empty error answers again."""
        with self._lock:
            self._users_info_error = error

    def users_info_calls(self, user_id: str | None = None) -> int:
        """How many ``users.info`` calls reached the workspace (for ``user_id``, or for anyone)."""
        with self._lock:
            return sum(1 for user in self._users_info_calls if user_id is None or user == user_id)

    def messages(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        """The channel's messages (or every channel's) in order: ``by`` ("bot" or "response_url"), the current
        ``text`` and ``blocks``, and ``edits``, each edit's text and blocks in order."""
        with self._lock:
            return [
                json.loads(json.dumps(m))
                for m in self._messages.values()
                if channel_id is None or m["channel"] == channel_id
            ]

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
        self._messages.clear()
        self._private.clear()
        self._locales.clear()
        self._users_info_error = ""
        self._users_info_calls.clear()

    def _authorized(self, request: Request) -> bool:
        return True  # a response_url is its own credential

    def _unauthorized(self) -> Response:
        return json_response(403, {"error": "invalid_auth"})

    def _route(self, request: Request) -> Response:
        if request.path.startswith("/api/"):
            return self._web_api(request)
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
        if message.get("replace_original") is True and hook["message"]:
            self._edit(self._messages[hook["message"]], message)
        elif message.get("response_type") == "in_channel" and hook["channel"]:
            self._add(hook["channel"], "response_url", message)
        return Response(200, b"ok", "text/plain")

    # ----- the Web API (api_url) -----

    def _web_api(self, request: Request) -> Response:
        method = request.path.removeprefix("/api/")
        if method not in ("chat.postMessage", "chat.update", "users.info"):
            return _slack_error("unknown_method")
        token = request.bearer_token()
        if not token:
            return _slack_error("not_authed")
        if not hmac.compare_digest(token, self.bot_token):
            return _slack_error("invalid_auth")
        if method == "users.info":
            return self._users_info(request)
        try:
            body = json.loads(request.body) if request.body else {}
        except ValueError:
            return _slack_error("invalid_json")
        channel = body.get("channel") if isinstance(body, dict) else None
        if not isinstance(channel, str) or not channel:
            return _slack_error("channel_not_found")
        if channel in self._private:
            return _slack_error("not_in_channel")
        if not (body.get("text") or body.get("blocks")):
            return _slack_error("no_text")
        if method == "chat.postMessage":
            message = self._add(channel, "bot", body)
            return json_response(200, {"ok": True, "channel": channel, "ts": message["ts"], "message": body})
        found = self._messages.get(_key(channel, str(body.get("ts", ""))))
        if found is None:
            return _slack_error("message_not_found")
        if found["by"] != "bot":
            return _slack_error("cant_update_message")
        self._edit(found, body)
        return json_response(200, {"ok": True, "channel": channel, "ts": found["ts"], "text": found["text"]})

    def _users_info(self, request: Request) -> Response:
        # Slack reads users.info's arguments from the query or a form body, never from JSON.
        arguments = dict(request.query)
        if request.body and "json" not in (request.header("Content-Type") or ""):
            arguments.update({key: values[-1] for key, values in parse_qs(request.body.decode()).items()})
        user = arguments.get("user", "")
        self._users_info_calls.append(user)
        if self._users_info_error:
            needed = {"needed": "users:read", "provided": "commands,chat:write"}
            return json_response(200, {"ok": False, "error": self._users_info_error, **needed})
        if not user:
            return _slack_error("user_not_found")
        found: dict[str, Any] = {"id": user, "team_id": self.team_id, "name": user.lower(), "tz": "Europe/Madrid"}
        if arguments.get("include_locale", "").lower() in ("true", "1"):
            found["locale"] = self._locales.get(user, DEFAULT_LOCALE)
        return json_response(200, {"ok": True, "user": found})

    def _add(self, channel: str, by: str, message: dict[str, Any]) -> dict[str, Any]:
        ts = f"{int(time.time())}.{next(self._counter):06d}"
        held = {
            "channel": channel,
            "ts": ts,
            "by": by,
            "text": message.get("text", ""),
            "blocks": message.get("blocks") or [],
            "edits": [],
        }
        self._messages[_key(channel, ts)] = held
        return held

    def _edit(self, held: dict[str, Any], message: dict[str, Any]) -> None:
        # Text without blocks removes the blocks, as chat.update and replace_original do.
        held["text"], held["blocks"] = message.get("text", ""), message.get("blocks") or []
        held["edits"].append({"text": held["text"], "blocks": held["blocks"]})

    def _error_response(self, error: SimError) -> Response:
        return Response(error.status, b"invalid_payload", "text/plain")

    def _fault_body(self, fault: Fault) -> Response:
        return Response(fault.status, b"service_unavailable", "text/plain")


def _key(channel: str, ts: str) -> str:
    return f"{channel}/{ts}"


def _slack_error(error: str) -> Response:
    return json_response(200, {"ok": False, "error": error})


def new_trigger_id() -> str:
    return f"{int(time.time())}.600123.{secrets.token_hex(16)}"


def signed(body: bytes, signing_secret: str, timestamp: int) -> dict[str, str]:
    """Slack's two signature headers for ``body`` (v0, HMAC-SHA256 over ``v0:{timestamp}:{body}``)."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}
