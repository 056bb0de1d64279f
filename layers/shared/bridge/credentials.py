"""The one Secrets Manager secret, read through Powertools parameters with a cache.

Values from here are never logged, echoed in a response or written into a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities import parameters

from bridge.config import Settings


class SecretError(RuntimeError):
    """The secret is missing, unreadable or lacks a key; the message names the key, never a value."""


@dataclass(frozen=True, repr=False)
class Credentials:
    whereby_api_key: str
    kommo_webhook_token: str
    kommo_access_token: str
    mattermost_tokens: tuple[str, ...]
    # Kommo OAuth 2.0, instead of a long-lived token: the pair is rotated by bridge.kommo_auth.
    kommo_refresh_token: str = ""
    kommo_client_id: str = ""
    kommo_client_secret: str = ""
    kommo_redirect_uri: str = ""
    kommo_access_expires_at: int = 0

    def __repr__(self) -> str:  # dataclass repr would print the secrets
        return "Credentials(<redacted>)"

    @property
    def uses_oauth(self) -> bool:
        return bool(self.kommo_refresh_token and self.kommo_client_id and self.kommo_client_secret)


_TEXT_KEYS = (
    "whereby_api_key",
    "kommo_webhook_token",
    "kommo_access_token",
    "kommo_refresh_token",
    "kommo_client_id",
    "kommo_client_secret",
    "kommo_redirect_uri",
)


def _strings(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SecretError(f"secret key {key!r} must be a list of strings")
    return tuple(v for v in value if v)


def credentials_from(data: object) -> Credentials:
    if not isinstance(data, dict):
        raise SecretError("the secret must be a JSON object")
    values: dict[str, Any] = {}
    for key in _TEXT_KEYS:
        value = data.get(key, "")
        if not isinstance(value, str):
            raise SecretError(f"secret key {key!r} must be a string")
        values[key] = value.strip()
    expires_at = data.get("kommo_access_expires_at", 0)
    if not isinstance(expires_at, int) or isinstance(expires_at, bool):
        raise SecretError("secret key 'kommo_access_expires_at' must be a unix time in seconds")
    return Credentials(
        mattermost_tokens=_strings(data, "mattermost_tokens"), kommo_access_expires_at=expires_at, **values
    )


def load_credentials(settings: Settings, *, force_fetch: bool = False) -> Credentials:
    """The current credentials; cached for ``SECRET_MAX_AGE_SECONDS`` so a rotation lands within that time."""
    try:
        data = parameters.get_secret(
            settings.secret_id, transform="json", max_age=settings.secret_max_age_seconds, force_fetch=force_fetch
        )
    except parameters.exceptions.TransformParameterError:
        raise SecretError("the secret is not valid JSON") from None
    except parameters.exceptions.GetParameterError as exc:
        raise SecretError(f"the secret could not be read ({type(exc.__cause__ or exc).__name__})") from None
    return credentials_from(data)
