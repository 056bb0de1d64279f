"""The secrets, one per peer, read through Powertools parameters with a cache.

Each function may read only the secrets it needs (IAM in template.yaml): the Kommo webhook routes read the webhook
token and nothing else, the Mattermost slash command reads the Whereby key and the Mattermost tokens, the Slack one
only its signing secrets, the worker and the sweeper read the Whereby key and the Kommo API keys. Values from here
are never logged, echoed in a response or written into a note.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools.utilities import parameters

from bridge.core.config import Settings

# The settings that name each secret, so an error can say which one to fix.
WHEREBY_SECRET = "WHEREBY_SECRET_ID"
KOMMO_SECRET = "KOMMO_SECRET_ID"
WEBHOOK_SECRET = "WEBHOOK_SECRET_ID"
MATTERMOST_SECRET = "MATTERMOST_SECRET_ID"
WHEREBY_WEBHOOK_SECRET = "WHEREBY_WEBHOOK_SECRET_ID"
SLACK_SECRET = "SLACK_SECRET_ID"
CHAT_BOT_SECRET = "CHAT_BOT_SECRET_ID"
ACTION_KEY_SECRET = "ACTION_KEY_SECRET_ID"
_TEAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PLACEHOLDER = re.compile(r"[\s<>…]|\.\.\.")

TeamTokens = Mapping[str, tuple[str, ...]]


class SecretError(RuntimeError):
    """A secret is missing, unreadable or lacks a key; the message names the key, never a value."""


@dataclass(frozen=True, repr=False)
class KommoCredentials:
    """Kommo's API keys: a long-lived token, or an OAuth 2.0 pair rotated by bridge.kommo.auth."""

    kommo_access_token: str
    kommo_refresh_token: str = ""
    kommo_client_id: str = ""
    kommo_client_secret: str = ""
    kommo_redirect_uri: str = ""
    kommo_access_expires_at: int = 0

    def __repr__(self) -> str:  # dataclass repr would print the secrets
        return "KommoCredentials(<redacted>)"

    @property
    def uses_oauth(self) -> bool:
        return bool(self.kommo_refresh_token and self.kommo_client_id and self.kommo_client_secret)


_KOMMO_TEXT_KEYS = (
    "kommo_access_token",
    "kommo_refresh_token",
    "kommo_client_id",
    "kommo_client_secret",
    "kommo_redirect_uri",
)


def _checked(value: str, key: str) -> str:
    """A credential as it is, or an error naming the key when it is an example's placeholder.

    Tokens, keys and ids never hold spaces, angle brackets or ellipses; a value pasted from an example such as
    ``"<OAuth only>"`` would otherwise count as set (and turn OAuth on, failing every job).
    """
    value = value.strip()
    if _PLACEHOLDER.search(value):
        raise SecretError(
            f"secret key {key!r} holds a placeholder, not a value: put the real value in, or remove the key"
        )
    return value


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise SecretError(f"secret key {key!r} must be a string")
    return _checked(value, key)


def _strings(value: object, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SecretError(f"secret key {key!r} must be a list of strings")
    return tuple(_checked(v, key) for v in value if v.strip())


def kommo_credentials_from(data: object) -> KommoCredentials:
    if not isinstance(data, Mapping):
        raise SecretError("the Kommo secret must be a JSON object")
    expires_at = data.get("kommo_access_expires_at", 0)
    if not isinstance(expires_at, int) or isinstance(expires_at, bool):
        raise SecretError("secret key 'kommo_access_expires_at' must be a unix time in seconds")
    texts = {key: _text(data, key) for key in _KOMMO_TEXT_KEYS}
    return KommoCredentials(kommo_access_expires_at=expires_at, **texts)


def team_tokens_from(data: object, team_ids: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """``mattermost_tokens`` as team id → that team's command tokens (several during a rotation).

    A token is bound to the team it was issued for, because a request's ``team_id`` is only a form field: a flat
    list would let one team's token act for every team. A flat list is still read when exactly one team is
    allowed (``MATTERMOST_TEAM_IDS``), since it then cannot reach another team.
    """
    if not isinstance(data, Mapping):
        raise SecretError("the Mattermost secret must be a JSON object")
    value = data.get("mattermost_tokens", {})
    if isinstance(value, list | str):
        tokens = _strings(value, "mattermost_tokens")
        if not tokens:
            return {}
        if len(team_ids) != 1:
            raise SecretError(
                "secret key 'mattermost_tokens' is a flat list, which would let one team's token act for every"
                ' team: write it as {"<team id>": ["<token>"]}, or set MATTERMOST_TEAM_IDS (the MattermostTeamIds'
                " parameter) to exactly one team"
            )
        return {next(iter(team_ids)): tokens}
    if not isinstance(value, Mapping):
        raise SecretError('secret key \'mattermost_tokens\' must map team ids to tokens: {"<team id>": ["<token>"]}')
    teams: dict[str, tuple[str, ...]] = {}
    for team, tokens in value.items():
        if not isinstance(team, str) or not _TEAM_ID.fullmatch(team):
            raise SecretError("secret key 'mattermost_tokens' has a key that is not a Mattermost team id")
        teams[team] = _strings(tokens, f"mattermost_tokens.{team}")
    return teams


def _read(secret_id: str, setting: str, force_fetch: bool, max_age: int) -> Any:
    if not secret_id:
        raise SecretError(f"{setting} is not set: this function has no access to that secret")
    try:
        return parameters.get_secret(secret_id, transform="json", max_age=max_age, force_fetch=force_fetch)
    except parameters.exceptions.TransformParameterError:
        raise SecretError(f"the secret named by {setting} is not valid JSON") from None
    except parameters.exceptions.GetParameterError as exc:
        reason = type(exc.__cause__ or exc).__name__
        raise SecretError(f"the secret named by {setting} could not be read ({reason})") from None


def _object(data: object, setting: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise SecretError(f"the secret named by {setting} must be a JSON object")
    return data


# Each read is cached for SECRET_MAX_AGE_SECONDS, so a rotation lands within that time.
def webhook_tokens(settings: Settings, *, force_fetch: bool = False) -> tuple[str, ...]:
    """The tokens the Kommo webhook URLs may carry: one, or two during a rotation (a list)."""
    data = _read(settings.webhook_secret_id, WEBHOOK_SECRET, force_fetch, settings.secret_max_age_seconds)
    tokens = _strings(_object(data, WEBHOOK_SECRET).get("kommo_webhook_token", ""), "kommo_webhook_token")
    if not tokens:
        raise SecretError("secret key 'kommo_webhook_token' is empty")
    return tokens


def whereby_api_key(settings: Settings, *, force_fetch: bool = False) -> str:
    data = _read(settings.whereby_secret_id, WHEREBY_SECRET, force_fetch, settings.secret_max_age_seconds)
    return _text(_object(data, WHEREBY_SECRET), "whereby_api_key")


def kommo_credentials(settings: Settings, *, force_fetch: bool = False) -> KommoCredentials:
    data = _read(settings.kommo_secret_id, KOMMO_SECRET, force_fetch, settings.secret_max_age_seconds)
    return kommo_credentials_from(_object(data, KOMMO_SECRET))


def mattermost_team_tokens(settings: Settings, *, force_fetch: bool = False) -> dict[str, tuple[str, ...]]:
    data = _read(settings.mattermost_secret_id, MATTERMOST_SECRET, force_fetch, settings.secret_max_age_seconds)
    return team_tokens_from(_object(data, MATTERMOST_SECRET), settings.mattermost_team_ids)


def whereby_webhook_secrets(settings: Settings, *, force_fetch: bool = False) -> tuple[str, ...]:
    """The signing secrets of Whereby's webhook: one, or two during a rotation (a list), like the Kommo token."""
    data = _read(
        settings.whereby_webhook_secret_id, WHEREBY_WEBHOOK_SECRET, force_fetch, settings.secret_max_age_seconds
    )
    value = _object(data, WHEREBY_WEBHOOK_SECRET).get("whereby_webhook_secret", "")
    secrets = _strings(value, "whereby_webhook_secret")
    if not secrets:
        raise SecretError("secret key 'whereby_webhook_secret' is empty: paste the secret Whereby's dashboard shows")
    return secrets


def slack_team_secrets_from(data: object) -> dict[str, tuple[str, ...]]:
    """``slack_signing_secret`` as workspace (team) id → the app's signing secret there (two during a rotation).

    A request's ``team_id`` is only a form field: binding each secret to its workspace is what lets a request
    signed with one workspace's app secret be refused when it names another workspace.
    """
    if not isinstance(data, Mapping):
        raise SecretError("the Slack secret must be a JSON object")
    value = data.get("slack_signing_secret", {})
    if not isinstance(value, Mapping):
        raise SecretError(
            "secret key 'slack_signing_secret' must map workspace ids to signing secrets:"
            ' {"<team id, T…>": "<signing secret>"}, or a list of two during a rotation'
        )
    teams: dict[str, tuple[str, ...]] = {}
    for team, secrets in value.items():
        if not isinstance(team, str) or not _TEAM_ID.fullmatch(team):
            raise SecretError("secret key 'slack_signing_secret' has a key that is not a Slack workspace id")
        teams[team] = _strings([secrets] if isinstance(secrets, str) else secrets, f"slack_signing_secret.{team}")
    if not any(teams.values()):
        raise SecretError("secret key 'slack_signing_secret' holds no signing secret: paste the app's Signing Secret")
    return teams


def slack_team_secrets(settings: Settings, *, force_fetch: bool = False) -> dict[str, tuple[str, ...]]:
    data = _read(settings.slack_secret_id, SLACK_SECRET, force_fetch, settings.secret_max_age_seconds)
    return slack_team_secrets_from(_object(data, SLACK_SECRET))


@dataclass(frozen=True, repr=False)
class ChatBots:
    """The optional bot tokens: with one, a room's post is made through the platform's API and can follow the
    meeting; without, the slash command's own answer is the post (``mattermost_url`` empty: no Mattermost bot)."""

    mattermost_url: str = ""
    mattermost_token: str = ""
    slack_tokens: Mapping[str, str] = field(default_factory=dict)  # workspace (team) id → xoxb- token

    def __repr__(self) -> str:  # dataclass repr would print the tokens
        return "ChatBots(<redacted>)"

    @property
    def mattermost(self) -> bool:
        return bool(self.mattermost_url and self.mattermost_token)


def chat_bots_from(data: object) -> ChatBots:
    if not isinstance(data, Mapping):
        raise SecretError("the chat bot secret must be a JSON object")
    url = _text(data, "mattermost_url").rstrip("/")
    token = _text(data, "mattermost_bot_token")
    if bool(url) != bool(token):
        raise SecretError("secret keys 'mattermost_url' and 'mattermost_bot_token' go together: set both, or neither")
    parts = urlsplit(url)
    local = parts.scheme == "http" and parts.hostname in {"127.0.0.1", "localhost"}
    if url and (not (parts.scheme == "https" or local) or not parts.hostname):
        raise SecretError(
            "secret key 'mattermost_url' must be the server's https address, like https://chat.example.com"
        )
    value = data.get("slack_bot_tokens", {})
    if not isinstance(value, Mapping):
        raise SecretError('secret key \'slack_bot_tokens\' must map workspace ids to bot tokens: {"<T…>": "xoxb-…"}')
    slack: dict[str, str] = {}
    for team, bot_token in value.items():
        if not isinstance(team, str) or not _TEAM_ID.fullmatch(team):
            raise SecretError("secret key 'slack_bot_tokens' has a key that is not a Slack workspace id")
        if not isinstance(bot_token, str):
            raise SecretError(f"secret key 'slack_bot_tokens.{team}' must be a string")
        checked = _checked(bot_token, f"slack_bot_tokens.{team}")
        if checked:
            slack[team] = checked
    return ChatBots(mattermost_url=url, mattermost_token=token, slack_tokens=slack)


def chat_bots(settings: Settings, *, force_fetch: bool = False) -> ChatBots:
    """The bot tokens; none configured (or no secret given to this function) is no bot, not an error."""
    if not settings.chat_bot_secret_id:
        return ChatBots()
    data = _read(settings.chat_bot_secret_id, CHAT_BOT_SECRET, force_fetch, settings.secret_max_age_seconds)
    return chat_bots_from(_object(data, CHAT_BOT_SECRET))


def action_keys(settings: Settings, *, force_fetch: bool = False) -> tuple[str, ...]:
    """The keys that sign the End buttons: the first signs, every one is accepted (two during a rotation)."""
    data = _read(settings.action_key_secret_id, ACTION_KEY_SECRET, force_fetch, settings.secret_max_age_seconds)
    keys = _strings(_object(data, ACTION_KEY_SECRET).get("action_signing_key", ""), "action_signing_key")
    if not keys or any(len(key) < 32 for key in keys):
        raise SecretError("secret key 'action_signing_key' must hold a random key of at least 32 characters")
    return keys
