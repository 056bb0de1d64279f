"""The Mattermost REST API as the bridge's bot uses it: make a room's post, read it, patch it, read a user's
``locale``; and the slash command's ``response_url`` for a follow-up when there is no bot.

One attempt per call with short timeouts: the command route has a person waiting inside Mattermost's 30 s, and the
worker's queue retries a failed edit later. Every failure becomes a domain error (``bridge.core.errors``):

- no answer, 5xx: ``PeerUnavailable`` (``AnswerLost`` when a POST may have been carried out all the same);
- 429: ``Throttled``; 401: ``Unauthorized``; 404: ``NotFound``;
- any other refusal: ``PostRefused`` with Mattermost's error id (``api.context.permissions.app_error`` for a channel
  the bot is not a member of, ``api.post.update_post.permissions_time_limit.app_error`` for an edit after the
  server's edit time limit).

The bot token goes in the ``Authorization`` header only; no error message carries it.

A slash command or a click does not say the user's language: ``UserLocales`` reads it (``GET /api/v4/users/{id}``)
once per user and container, with a shorter timeout than the posts', since the caller waits for it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import requests

from bridge.core.errors import AnswerLost, BridgeError, NotFound, PeerUnavailable, Rejected, Throttled, Unauthorized
from bridge.core.observability import count, logger

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 4.0
NOT_A_MEMBER = "api.context.permissions.app_error"
EDIT_TIME_LIMIT = "api.post.update_post.permissions_time_limit.app_error"
# A user's locale is worth little time: a Mattermost that is slow to tell it costs the caller this much, once an hour.
LOCALE_TIMEOUT = (1.0, 1.0)
LOCALE_SECONDS = 3600.0
UNKNOWN_LOCALE_SECONDS = 300.0  # a failed lookup is not tried again for every command of that user meanwhile
LOCALES_KEPT = 5000  # users remembered per container; beyond this the memory starts over
_POST_ID = re.compile(r"[a-z0-9]{26}")
_USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LOCALE = re.compile(r"[A-Za-z0-9_-]{1,16}")


class PostRefused(Rejected):
    """Mattermost refused the call itself; ``error_id`` is its AppError id ("" when the body had none)."""

    def __init__(self, message: str, status: int, error_id: str) -> None:
        super().__init__(message, status)
        self.error_id = error_id


def is_post_id(value: str) -> bool:
    return bool(_POST_ID.fullmatch(value))


class MattermostBot:
    """The bot account's calls on one Mattermost server (``base_url`` like ``https://chat.example.com``)."""

    def __init__(
        self, base_url: str, token: str, timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})

    def create_post(self, channel_id: str, message: str, props: Mapping[str, Any]) -> str:
        """Post into the channel as the bot; returns the new post's id. ``set_online=false``: a bot is never
        "online"."""
        body = {"channel_id": channel_id, "message": message, "props": dict(props)}
        post = self._call("POST", "/api/v4/posts", params={"set_online": "false"}, json=body)
        post_id = str(post.get("id", ""))
        if not is_post_id(post_id):
            raise PeerUnavailable("mattermost POST /api/v4/posts answered without a post id")
        return post_id

    def get_post(self, post_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v4/posts/{_checked(post_id)}")

    def patch_post(self, post_id: str, props: Mapping[str, Any], message: str | None = None) -> None:
        """Replace the post's props (the whole map, as Mattermost does) and, when given, its message."""
        body: dict[str, Any] = {"props": dict(props)}
        if message is not None:
            body["message"] = message
        self._call("PUT", f"/api/v4/posts/{_checked(post_id)}/patch", json=body)

    def user_locale(self, user_id: str) -> str:
        """The user's ``locale`` ("es", "pt-BR"; "" when the user has none)."""
        if not _USER_ID.fullmatch(user_id):
            raise PostRefused("not a Mattermost user id", 400, "")
        user = self._call("GET", f"/api/v4/users/{user_id}", timeout=LOCALE_TIMEOUT)
        locale = user.get("locale")
        return locale if isinstance(locale, str) and _LOCALE.fullmatch(locale) else ""

    def direct_message(self, user_id: str, message: str) -> str:
        """Post to the bot's direct channel with one user (recurring meetings tell their creator this way)."""
        me = self._call("GET", "/api/v4/users/me")
        channel = self._call("POST", "/api/v4/channels/direct", json=[str(me.get("id", "")), _checked_id(user_id)])
        return self.create_post(str(channel.get("id", "")), message, {})

    def is_channel_admin(self, channel_id: str, user_id: str) -> bool:
        """Whether the user administers the channel (``scheme_admin`` of their channel membership)."""
        member = self._call("GET", f"/api/v4/channels/{_checked_id(channel_id)}/members/{_checked_id(user_id)}")
        return member.get("scheme_admin") is True

    def _call(
        self, method: str, path: str, timeout: tuple[float, float] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        try:
            response = self._session.request(method, f"{self._base}{path}", timeout=timeout or self._timeout, **kwargs)
        except requests.RequestException as exc:
            count("MattermostBotErrors")
            what = f"mattermost {method} {path}: {type(exc).__name__}"
            # Only a connection never made is sure to have changed nothing.
            lost = method != "GET" and not isinstance(exc, requests.ConnectTimeout)
            raise (AnswerLost if lost else PeerUnavailable)(what) from None
        if response.status_code < 300:
            try:
                data = response.json()
            except ValueError:
                raise PeerUnavailable(f"mattermost {method} {path} answered a body that is not JSON") from None
            return data if isinstance(data, dict) else {}
        count("MattermostBotErrors")
        raise error_for(method, path, response)


class LocaleReader(Protocol):
    def user_locale(self, user_id: str) -> str: ...


class UserLocales:
    """Each user's Mattermost ``locale``, read through the bot and remembered for the container's life (an hour at
    most: a user who changes language is heard within the hour). Never raises: no bot, or a lookup that fails, is
    ``None``, and the caller speaks the stack's language."""

    def __init__(
        self,
        bot: Callable[[], LocaleReader | None],
        clock: Callable[[], float] = time.monotonic,
        kept_seconds: float = LOCALE_SECONDS,
    ) -> None:
        self._bot = bot
        self._clock = clock
        self._kept_seconds = kept_seconds
        self._known: dict[str, tuple[float, str | None]] = {}

    def __call__(self, user_id: str) -> str | None:
        now = self._clock()
        known = self._known.get(user_id)
        if known is not None and now < known[0]:
            return known[1]
        try:
            bot = self._bot()
        except Exception as exc:  # the bot's secret unreadable: the command goes on in the stack's language
            logger.warning("user locale not read: no bot", extra={"reason": type(exc).__name__})
            return None
        if bot is None:
            return None
        try:
            locale: str | None = bot.user_locale(user_id)
            until = now + self._kept_seconds
        except BridgeError as exc:
            logger.warning("user locale not read", extra={"reason": str(exc)})
            locale, until = None, now + min(self._kept_seconds, UNKNOWN_LOCALE_SECONDS)
        if len(self._known) >= LOCALES_KEPT:
            self._known.clear()
        self._known[user_id] = (until, locale)
        return locale


def error_for(method: str, path: str, response: requests.Response) -> Exception:
    status = response.status_code
    error_id = _error_id(response)
    what = f"mattermost {method} {path} answered {status} {error_id}".rstrip()
    if status == 429:
        return Throttled(what)
    if status >= 500:
        return PeerUnavailable(what)
    if status == 404:
        return NotFound(what)
    if status == 401:
        return Unauthorized(what, status)
    return PostRefused(what, status, error_id)


def _error_id(response: requests.Response) -> str:
    """Mattermost's AppError id: a short dotted word, safe for logs; anything else is left out."""
    try:
        data = response.json()
    except ValueError:
        return ""
    value = data.get("id", "") if isinstance(data, dict) else ""
    return value if isinstance(value, str) and re.fullmatch(r"[a-z0-9_.]{1,120}", value) else ""


def _checked(post_id: str) -> str:
    if not is_post_id(post_id):
        raise PostRefused("not a Mattermost post id", 400, "")
    return post_id


def _checked_id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise PostRefused("not a Mattermost id", 400, "")
    return value


def post_response_url(url: str, message: Mapping[str, Any], timeout: tuple[float, float] = (2.0, 5.0)) -> bool:
    """POST a CommandResponse to the slash command's ``response_url``: True when Mattermost took it, False when it
    refused it (expired after 30 minutes, used five times) or could not be reached. Never raised: a follow-up is a
    new message, so it is never sent twice, and a failed one is not tried again."""
    try:
        response = requests.post(url, json=dict(message), timeout=timeout)
    except requests.RequestException:
        count("MattermostBotErrors")
        return False
    if response.status_code == 200:
        return True
    count("MattermostBotErrors")
    return False
