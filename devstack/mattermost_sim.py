"""A Mattermost server for the local stack, as the bridge's bot and slash command meet it
(contracts/mattermost.md §4, contracts/mattermost-more.md §2, §3, §5).

- The bot's REST API, with ``Authorization: Bearer <bot token>``: ``POST /api/v4/posts`` (only into channels the bot
  is a member of, ``add_member``; elsewhere 403 ``api.context.permissions.app_error``), ``GET /api/v4/posts/{id}``
  (buttons' integrations stripped, as clients get them) and ``PUT /api/v4/posts/{id}/patch`` (the bot's own posts
  only; ``props`` replaces the whole map; a patch with a ``message`` after ``edit_time_limit`` seconds gets 400
  ``api.post.update_post.permissions_time_limit.app_error``). ``edits(post_id)`` counts the patches a post took.
- A slash command's ``response_url`` (``new_response_url``): ``POST /hooks/commands/<id>`` takes five posts within
  30 minutes, then 400 "Invalid webhook." (used) or 404 "Unable to find the webhook." (expired, unknown).
- ``command_answer`` does what the server does with a command's answer (an in_channel answer becomes a post,
  authored by the caller; its ``attachments`` go into ``props.attachments``), and ``click`` what it does on a button
  click: POST the action request, with the context only the server holds, to the button's ``integration.url``, then
  apply the reply's ``update`` to the post (``message`` replaced, ``props`` replaced when given) and keep the
  ``ephemeral_text`` for the clicker (``ephemerals``).
- ``GET /api/v4/users/{id}`` (contracts/mattermost-more.md §4), with the bot's token: any id is a user, whose
  ``locale`` is "en" unless ``set_locale`` said otherwise. ``user_lookups`` counts the calls per user;
  ``fail_user_lookups`` makes them answer an error, or answer late.

The base simulator's faults apply to the API and to the ``response_url`` posts. The user lookups are kept out of
them and of the request log: they have their own count and faults, so that a test of the posts reads the posts'
calls alone, whatever language their author speaks.
"""

from __future__ import annotations

import copy
import itertools
import re
import secrets
import string
import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests

from devstack.sim_server import Fault, Request, Response, SimError, SimServer, json_response

DEFAULT_BOT_TOKEN = "local-mattermost-bot-token"
BOT_USER_ID = "b0tuser0000000000000000000"
RESPONSE_URL_USES = 5
RESPONSE_URL_SECONDS = 30 * 60
KEPT_ON_UPDATE = ("from_webhook", "override_username", "override_icon_url")  # DoPostActionWithCookie keeps these
_POST = re.compile(r"/api/v4/posts/([a-z0-9]{26})")
_PATCH = re.compile(r"/api/v4/posts/([a-z0-9]{26})/patch")
_HOOK = re.compile(r"/hooks/commands/[a-z0-9]{26}")
_USER = re.compile(r"/api/v4/users/([A-Za-z0-9_-]{1,64})")
_MEMBER = re.compile(r"/api/v4/channels/([A-Za-z0-9_-]{1,64})/members/([A-Za-z0-9_-]{1,64})")
_INCOMING = re.compile(r"/hooks/[a-z0-9]{26}")


@dataclass(frozen=True)
class Clicked:
    status: int
    body: Any  # the integration's JSON reply, or its text
    ephemeral_text: str | None


def new_id() -> str:
    """A Mattermost id: 26 characters of its base32 alphabet."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(26))


class AppError(SimError):
    """Mattermost's error body: ``{"id", "message", "detailed_error", "request_id", "status_code"}``."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(status, message)
        self.error_id = error_id


class MattermostSimulator(SimServer):
    def __init__(
        self,
        bot_token: str = DEFAULT_BOT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        edit_time_limit: float | None = None,
    ) -> None:
        super().__init__(host, port)
        self.bot_token = bot_token
        self.edit_time_limit = edit_time_limit  # seconds; None: the server's default -1, no limit
        self._counter = itertools.count(1)
        self._members: set[str] = set()
        self._posts: dict[str, dict[str, Any]] = {}
        self._edits: dict[str, int] = {}
        self._hooks: dict[str, dict[str, Any]] = {}
        self._ephemerals: list[dict[str, str]] = []
        self._locales: dict[str, str] = {}
        self._admins: set[tuple[str, str]] = set()  # (channel, user): scheme_admin of the channel
        self._incoming: dict[str, str] = {}  # incoming webhook path -> its channel
        self._lookups: dict[str, int] = {}
        self._lookup_fault: Fault | None = None

    # ----- the server's side -----

    def set_locale(self, user_id: str, locale: str) -> None:
        """The ``locale`` the user chose in their settings ("es", "pt-BR", "ru")."""
        with self._lock:
            self._locales[user_id] = locale

    def user_lookups(self, user_id: str | None = None) -> int:
        """How many ``GET /api/v4/users/{id}`` arrived (for one user, or for anyone)."""
        with self._lock:
            return self._lookups.get(user_id, 0) if user_id is not None else sum(self._lookups.values())

    def fail_user_lookups(self, status: int = 500, delay: float = 0.0) -> None:
        """Every user lookup from now on answers ``status`` after ``delay`` seconds (status 200: the user, late)."""
        with self._lock:
            self._lookup_fault = Fault(status, delay=delay)

    def remove_member(self, channel_id: str) -> None:
        """Take the bot out of a channel (or archive it): its posts there are refused with 403."""
        with self._lock:
            self._members.discard(channel_id)

    def make_admin(self, channel_id: str, user_id: str) -> None:
        """``user_id`` administers ``channel_id`` (``GET /api/v4/channels/{id}/members/{user}``: scheme_admin)."""
        with self._lock:
            self._admins.add((channel_id, user_id))

    def new_incoming_webhook(self, channel_id: str) -> str:
        """An incoming webhook of the channel: ``POST /hooks/<id>`` makes a post there, authored by the webhook."""
        path = f"/hooks/{new_id()}"
        with self._lock:
            self._incoming[path] = channel_id
        return f"{self.root_url}{path}"

    def direct_posts(self, user_id: str) -> list[dict[str, Any]]:
        """The bot's direct messages to one user."""
        return self.posts(f"dm-{user_id}"[:26])

    def add_member(self, channel_id: str) -> None:
        """Add the bot to a channel (it can then post there)."""
        with self._lock:
            self._members.add(channel_id)

    def new_response_url(self, channel_id: str, user_id: str, age_seconds: float = 0.0) -> str:
        """A fresh ``response_url`` for a command typed in ``channel_id`` by ``user_id`` ``age_seconds`` ago."""
        hook = f"/hooks/commands/{new_id()}"
        with self._lock:
            self._hooks[hook] = {
                "created": time.time() - age_seconds,
                "channel_id": channel_id,
                "user_id": user_id,
                "posts": [],
            }
        return f"{self.root_url}{hook}"

    def command_answer(self, answer: dict[str, Any], channel_id: str, user_id: str) -> str | None:
        """What Mattermost does with a command's answer: the id of the post an in_channel answer became (None for an
        ephemeral one); ephemeral answers and extra responses go to the caller alone."""
        with self._lock:
            return self._take_answer(answer, channel_id, user_id)

    def post(self, post_id: str) -> dict[str, Any]:
        """A post as the server holds it (buttons' contexts included)."""
        with self._lock:
            return copy.deepcopy(self._posts[post_id])

    def posts(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(p) for p in self._posts.values() if channel_id in (None, p["channel_id"])]

    def edits(self, post_id: str) -> int:
        """How many patches the post took."""
        with self._lock:
            return self._edits.get(post_id, 0)

    def follow_ups(self, response_url: str) -> list[dict[str, Any]]:
        """The messages posted through one ``response_url``, in order."""
        with self._lock:
            hook = self._hooks.get(response_url.removeprefix(self.root_url), {})
            return [dict(message) for message in hook.get("posts", [])]

    def ephemerals(self, user_id: str | None = None) -> list[dict[str, str]]:
        """Ephemeral messages shown to one user (or to anyone): ``{"user_id", "text", "post_id"}``."""
        with self._lock:
            return [dict(e) for e in self._ephemerals if user_id in (None, e["user_id"])]

    def click(
        self,
        post_id: str,
        *,
        user_id: str,
        user_name: str,
        team_id: str,
        channel_id: str | None = None,
        action_id: str = "endroom",
        context: dict[str, Any] | None = None,
    ) -> Clicked:
        """Click a button of a post as ``user_id``: the server's action request to the button's integration, then
        the reply applied. ``channel_id`` and ``context`` stand in for the real ones (a request replayed or forged
        by someone who reaches the integration's address)."""
        with self._lock:
            post = self._posts[post_id]
            action = _action(post, action_id)
            integration = action.get("integration") or {}
            url = str(integration["url"])
            body = {
                "user_id": user_id,
                "user_name": user_name,
                "channel_id": channel_id or post["channel_id"],
                "channel_name": "local-channel",
                "team_id": team_id,
                "team_domain": "local",
                "post_id": post_id,
                "trigger_id": uuid.uuid4().hex,
                "type": "button",
                "data_source": "",
                "context": copy.deepcopy(integration.get("context") if context is None else context),
            }
        answer = requests.post(url, json=body, headers={"Accept": "application/json"}, timeout=30)
        try:
            reply: Any = answer.json() if answer.content else {}
        except ValueError:
            reply = answer.text
        if answer.status_code != 200 or not isinstance(reply, dict):
            return Clicked(answer.status_code, reply, None)
        with self._lock:
            update = reply.get("update")
            if isinstance(update, dict):
                current = self._posts[post_id]
                current["message"] = str(update.get("message") or "")  # no message blanks the text
                if isinstance(update.get("props"), dict):
                    kept = {k: current["props"][k] for k in KEPT_ON_UPDATE if k in current["props"]}
                    current["props"] = {**copy.deepcopy(update["props"]), **kept}
                current["update_at"] = _ms()
            text = reply.get("ephemeral_text")
            if text:
                self._ephemerals.append({"user_id": user_id, "text": str(text), "post_id": post_id})
        return Clicked(answer.status_code, reply, str(text) if text else None)

    # ----- the simulator -----

    def handle(self, request: Request) -> Response:
        match = _USER.fullmatch(request.path)
        if match is None or match.group(1) == "me" or request.method != "GET":
            return super().handle(request)
        with self._lock:
            self._lookups[match.group(1)] = self._lookups.get(match.group(1), 0) + 1
            fault = self._lookup_fault
        if fault is not None:
            self._sleep(fault.delay)
            if fault.status != 200:
                return self._fault_body(fault)
        with self._lock:
            if not self._authorized(request):
                return self._unauthorized()
            return json_response(200, self._user(match.group(1)))

    def _user(self, user_id: str) -> dict[str, Any]:
        """A user as the bot sees it: sanitized, its locale kept (``Sanitize`` leaves it)."""
        return {
            "id": user_id,
            "username": f"user-{user_id[:8].lower()}",
            "first_name": "",
            "last_name": "",
            "nickname": "",
            "roles": "system_user",
            "locale": self._locales.get(user_id, "en"),
            "timezone": {"useAutomaticTimezone": "true", "automaticTimezone": "", "manualTimezone": ""},
            "create_at": 0,
            "update_at": 0,
            "delete_at": 0,
        }

    def _reset_state(self) -> None:
        self._locales.clear()
        self._lookups.clear()
        self._lookup_fault = None
        self._members.clear()
        self._posts.clear()
        self._edits.clear()
        self._hooks.clear()
        self._ephemerals.clear()
        self._admins.clear()
        self._incoming.clear()

    def _authorized(self, request: Request) -> bool:
        return request.path.startswith("/hooks/") or request.bearer_token() == self.bot_token

    def _unauthorized(self) -> Response:
        return _app_error(
            401, "api.context.session_expired.app_error", "Invalid or expired session, please login again."
        )

    def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if _HOOK.fullmatch(path) and method == "POST":
            return self._hook(request)
        if path == "/api/v4/posts" and method == "POST":
            return self._create(request)
        if (match := _MEMBER.fullmatch(path)) and method == "GET":
            return self._member(match.group(1), match.group(2))
        if path == "/api/v4/users/me" and method == "GET":
            return json_response(200, {"id": BOT_USER_ID, "username": "whereby-bot", "is_bot": True})
        if path == "/api/v4/channels/direct" and method == "POST":
            return self._direct(request)
        if _INCOMING.fullmatch(path) and method == "POST":
            return self._incoming_post(request)
        if (match := _PATCH.fullmatch(path)) and method == "PUT":
            return self._patch(match.group(1), request)
        if (match := _POST.fullmatch(path)) and method == "GET":
            return json_response(200, _for_clients(self._existing(match.group(1))))
        raise AppError(404, "api.context.404.app_error", "Sorry, we could not find the page.")

    def _create(self, request: Request) -> Response:
        body = request.json_body(unsupported_status=400)
        if not isinstance(body, dict) or not isinstance(body.get("channel_id"), str):
            raise AppError(400, "api.context.invalid_body_param.app_error", "Invalid or missing post in request body.")
        if body["channel_id"] not in self._members:
            raise AppError(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.")
        props = body.get("props") or {}
        if not isinstance(props, dict):
            raise AppError(400, "api.context.invalid_body_param.app_error", "Invalid or missing post in request body.")
        post = self._new_post(body["channel_id"], BOT_USER_ID, str(body.get("message") or ""), props)
        return json_response(201, _for_clients(post))

    def _member(self, channel_id: str, user_id: str) -> Response:
        if channel_id not in self._members:
            raise AppError(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.")
        admin = (channel_id, user_id) in self._admins
        roles = "channel_user channel_admin" if admin else "channel_user"
        body = {"channel_id": channel_id, "user_id": user_id, "roles": roles, "scheme_user": True}
        return json_response(200, {**body, "scheme_admin": admin})

    def _direct(self, request: Request) -> Response:
        ids = request.json_body(unsupported_status=400)
        if not isinstance(ids, list) or len(ids) != 2 or BOT_USER_ID not in ids:
            raise AppError(400, "api.context.invalid_body_param.app_error", "Invalid or missing user_ids in body.")
        other = next((str(i) for i in ids if i != BOT_USER_ID), BOT_USER_ID)
        channel_id = f"dm-{other}"[:26]  # the bot is in its own direct channels
        self._members.add(channel_id)
        return json_response(201, {"id": channel_id, "type": "D", "name": f"{BOT_USER_ID}__{other}"})

    def _incoming_post(self, request: Request) -> Response:
        channel_id = self._incoming.get(request.path)
        if channel_id is None:
            raise AppError(404, "web.incoming_webhook.invalid.app_error", "Invalid webhook.")
        body = request.json_body(unsupported_status=400)
        if not isinstance(body, dict):
            raise AppError(400, "api.webhook.incoming.error", "Unable to parse incoming data.")
        props = {k: v for k, v in (body.get("props") or {}).items() if k != "attachments"}
        if body.get("attachments"):
            props["attachments"] = copy.deepcopy(body["attachments"])
        props["from_webhook"] = "true"
        self._new_post(channel_id, "webhook", str(body.get("text") or ""), props)
        return Response(200, b"ok", "text/plain")

    def _patch(self, post_id: str, request: Request) -> Response:
        post = self._existing(post_id)
        if post["user_id"] != BOT_USER_ID:
            raise AppError(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.")
        body = request.json_body(unsupported_status=400)
        if not isinstance(body, dict):
            raise AppError(400, "api.context.invalid_body_param.app_error", "Invalid or missing patch in request body.")
        if "message" in body:
            age = time.time() - post["create_at"] / 1000
            if self.edit_time_limit is not None and age > self.edit_time_limit:
                raise AppError(
                    400,
                    "api.post.update_post.permissions_time_limit.app_error",
                    f"Post edit is only allowed for {self.edit_time_limit:g} seconds.",
                )
            post["message"] = str(body["message"])
        if isinstance(body.get("props"), dict):
            post["props"] = copy.deepcopy(body["props"])  # the whole map, as Post.Patch does
        post["edit_at"] = post["update_at"] = _ms()
        self._edits[post_id] = self._edits.get(post_id, 0) + 1
        return json_response(200, _for_clients(post))

    def _hook(self, request: Request) -> Response:
        hook = self._hooks.get(request.path)
        if hook is None or time.time() - hook["created"] > RESPONSE_URL_SECONDS:
            raise AppError(404, "web.command_webhook.find.app_error", "Unable to find the webhook.")
        if len(hook["posts"]) >= RESPONSE_URL_USES:
            raise AppError(400, "app.command_webhook.try_use.app_error", "Invalid webhook.")
        message = request.json_body(unsupported_status=400)
        if not isinstance(message, dict):
            raise AppError(400, "web.command_webhook.parse.app_error", "Unable to parse incoming data.")
        hook["posts"].append(copy.deepcopy(message))  # the use is taken before the post is made
        self._take_answer(message, hook["channel_id"], hook["user_id"])
        return Response(200, b"ok", "text/plain")

    def _take_answer(self, answer: dict[str, Any], channel_id: str, user_id: str) -> str | None:
        post_id = None
        if answer.get("response_type") == "in_channel":
            props = {k: v for k, v in (answer.get("props") or {}).items() if k != "attachments"}
            if answer.get("attachments"):
                props["attachments"] = copy.deepcopy(answer["attachments"])
            props["from_webhook"] = "true"
            post_id = self._new_post(channel_id, user_id, str(answer.get("text") or ""), props)["id"]
        elif answer.get("text"):
            self._ephemerals.append({"user_id": user_id, "text": str(answer["text"]), "post_id": ""})
        for extra in answer.get("extra_responses") or []:
            self._take_answer(extra, channel_id, user_id)
        return post_id

    def _new_post(self, channel_id: str, user_id: str, message: str, props: dict[str, Any]) -> dict[str, Any]:
        now = _ms()
        post: dict[str, Any] = {
            "id": new_id(),
            "create_at": now,
            "update_at": now,
            "edit_at": 0,
            "delete_at": 0,
            "is_pinned": False,
            "user_id": user_id,
            "channel_id": channel_id,
            "root_id": "",
            "original_id": "",
            "message": message,
            "type": "slack_attachment" if props.get("attachments") else "",
            "props": copy.deepcopy(props),
            "hashtags": "",
            "file_ids": [],
            "pending_post_id": "",
            "metadata": {},
        }
        self._posts[post["id"]] = post
        return post

    def _existing(self, post_id: str) -> dict[str, Any]:
        post = self._posts.get(post_id)
        if post is None:
            raise AppError(404, "app.post.get.app_error", "Unable to get the post.")
        return post

    def _error_response(self, error: SimError) -> Response:
        error_id = error.error_id if isinstance(error, AppError) else "api.context.invalid_body_param.app_error"
        return _app_error(error.status, error_id, error.detail)

    def _fault_body(self, fault: Fault) -> Response:
        return _app_error(fault.status, "api.context.unavailable.app_error", "The server is unavailable.")


def _app_error(status: int, error_id: str, message: str) -> Response:
    body = {
        "id": error_id,
        "message": message,
        "detailed_error": "",
        "request_id": new_id(),
        "status_code": status,
    }
    return json_response(status, body)


def _for_clients(post: dict[str, Any]) -> dict[str, Any]:
    """The post as clients get it: no button's integration (its context stays on the server)."""
    shown = copy.deepcopy(post)
    for attachment in shown["props"].get("attachments") or []:
        for action in attachment.get("actions") or []:
            action.pop("integration", None)
    return shown


def _action(post: dict[str, Any], action_id: str) -> dict[str, Any]:
    for attachment in post["props"].get("attachments") or []:
        for action in attachment.get("actions") or []:
            if action.get("id") == action_id:
                return dict(action)
    raise KeyError(f"post {post['id']} has no button {action_id!r}")


def _ms() -> int:
    return int(time.time() * 1000)
