"""Kommo access tokens: a long-lived token as it is, or OAuth 2.0 refreshed safely.

Kommo's OAuth refresh tokens are single-use across every client: two functions refreshing at once revoke each
other, and a new pair that is not saved is lost for good. So a refresh happens only under a DynamoDB lease (one
function at a time), the secret is re-read under the lease (someone may have just refreshed), and the new pair is
written to Secrets Manager before it is used. Access tokens live 24 h; they are renewed an hour ahead of expiry.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import boto3
import requests
from botocore.exceptions import BotoCoreError, ClientError

from bridge.core.config import Settings
from bridge.core.errors import PeerUnavailable, Unauthorized
from bridge.core.observability import count, logger
from bridge.store.credentials import KommoCredentials, kommo_credentials

if TYPE_CHECKING:
    from types_boto3_dynamodb.service_resource import Table
    from types_boto3_secretsmanager.client import SecretsManagerClient

RENEW_AHEAD_SECONDS = 3600
LEASE_SECONDS = 30
LEASE_KEY = {"pk": "LEASE#kommo-oauth", "sk": "LEASE"}


class KommoAuthLost(Unauthorized):
    """Kommo refused the refresh token: the integration must be authorised again (see docs/runbook.md)."""


class TokenLease:
    """A short lease in the meetings table: whoever holds it may refresh."""

    def __init__(self, table: Table, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._clock = clock
        self._holder = uuid.uuid4().hex

    def acquire(self) -> bool:
        now = self._clock()
        try:
            self._table.put_item(
                Item={**LEASE_KEY, "holder": self._holder, "until": int(now + LEASE_SECONDS)},
                ConditionExpression="attribute_not_exists(pk) OR #until < :now",
                ExpressionAttributeNames={"#until": "until"},
                ExpressionAttributeValues={":now": int(now)},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise PeerUnavailable("dynamodb refused the token lease") from None
        return True

    def release(self) -> None:
        # A lease that expired and was taken over is not ours to delete; it ends by itself.
        with contextlib.suppress(ClientError):
            self._table.delete_item(
                Key=LEASE_KEY,
                ConditionExpression="holder = :me",
                ExpressionAttributeValues={":me": self._holder},
            )


class SecretWriter:
    """Writes the refreshed pair into the Kommo secret, keeping every other key as it is."""

    def __init__(self, secret_id: str, client: SecretsManagerClient | None = None) -> None:
        self._secret_id = secret_id
        self._client = client or boto3.client("secretsmanager")

    def save_tokens(self, access_token: str, refresh_token: str, expires_at: int) -> None:
        try:
            current = json.loads(self._client.get_secret_value(SecretId=self._secret_id)["SecretString"])
            current.update(
                kommo_access_token=access_token, kommo_refresh_token=refresh_token, kommo_access_expires_at=expires_at
            )
            self._client.put_secret_value(SecretId=self._secret_id, SecretString=json.dumps(current))
        except (ClientError, BotoCoreError, ValueError, KeyError) as exc:
            raise PeerUnavailable(f"could not save the refreshed Kommo tokens: {type(exc).__name__}") from None


class KommoTokens:
    """Where the Kommo client gets its bearer token."""

    def __init__(
        self,
        settings: Settings,
        lease: TokenLease,
        writer: SecretWriter,
        read: Callable[[bool], KommoCredentials] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        http: requests.Session | None = None,
    ) -> None:
        self._settings = settings
        self._lease = lease
        self._writer = writer
        self._read = read or (lambda force: kommo_credentials(settings, force_fetch=force))
        self._clock = clock
        self._sleep = sleep
        self._http = http or requests.Session()

    def access_token(self) -> str:
        creds = self._read(False)
        if not creds.uses_oauth or not self._due(creds):
            return creds.kommo_access_token
        return self._renew(creds).kommo_access_token

    def after_unauthorized(self, rejected_token: str) -> str:
        """Kommo answered 401: take the newest secret (another function may have refreshed), else refresh."""
        creds = self._read(True)
        if creds.kommo_access_token != rejected_token or not creds.uses_oauth:
            return creds.kommo_access_token
        return self._renew(creds, force=True).kommo_access_token

    def _due(self, creds: KommoCredentials) -> bool:
        return creds.kommo_access_expires_at - self._clock() < RENEW_AHEAD_SECONDS

    def _renew(self, seen: KommoCredentials, force: bool = False) -> KommoCredentials:
        for _ in range(10):
            if self._lease.acquire():
                try:
                    fresh = self._read(True)
                    if fresh.kommo_refresh_token != seen.kommo_refresh_token or not (force or self._due(fresh)):
                        return fresh  # someone refreshed while we waited for the lease
                    return self._refresh(fresh)
                finally:
                    self._lease.release()
            self._sleep(0.5)
            fresh = self._read(True)
            if fresh.kommo_refresh_token != seen.kommo_refresh_token:
                return fresh
        if not force and seen.kommo_access_expires_at > self._clock():
            return seen  # still valid for a while; the lease holder is refreshing
        raise PeerUnavailable("another function holds the Kommo token lease")

    def _refresh(self, creds: KommoCredentials) -> KommoCredentials:
        url = f"{self._settings.kommo_api_url}/oauth2/access_token"
        body = {
            "client_id": creds.kommo_client_id,
            "client_secret": creds.kommo_client_secret,
            "grant_type": "refresh_token",
            "refresh_token": creds.kommo_refresh_token,
            "redirect_uri": creds.kommo_redirect_uri,
        }
        try:
            response = self._http.post(url, json=body, timeout=(3.05, 10))
        except requests.RequestException as exc:
            raise PeerUnavailable(f"kommo token refresh failed: {type(exc).__name__}") from None
        if response.status_code in (400, 401):
            count("KommoAuthLost")
            raise KommoAuthLost("Kommo refused the refresh token; authorise the integration again", 401)
        if response.status_code != 200:
            raise PeerUnavailable(f"kommo token refresh answered {response.status_code}")
        try:
            data = response.json()
            access, refresh = str(data["access_token"]), str(data["refresh_token"])
            expires_at = int(self._clock() + int(data.get("expires_in", 86400)))
        except (ValueError, KeyError, TypeError):
            raise PeerUnavailable("kommo token refresh answered an unexpected body") from None
        # Saved before use: the old refresh token is already dead, this pair is the only one left.
        self._writer.save_tokens(access, refresh, expires_at)
        count("KommoTokensRefreshed")
        logger.info("kommo tokens refreshed", extra={"expires_at": expires_at})
        return self._read(True)
