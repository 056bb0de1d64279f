"""Kommo OAuth: single-use refresh tokens are refreshed by one function at a time and saved before use."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest

from tests.conftest import SECRET
from tests.races import LeaseRace

OAUTH = {
    "kommo_client_id": "client-5c1e",
    "kommo_client_secret": "client-secret-a7f3d9",
    "kommo_redirect_uri": "https://example.invalid/kommo/oauth",
    "kommo_refresh_token": "refresh-first-0b4e",
}


@pytest.fixture
def oauth(stack, kommo_sim):
    """The secret switched to OAuth with an access token that expires in ten minutes (due for renewal)."""
    from bridge import runtime

    kommo_sim.enable_oauth(
        OAUTH["kommo_client_id"],
        OAUTH["kommo_client_secret"],
        OAUTH["kommo_redirect_uri"],
        OAUTH["kommo_refresh_token"],
    )
    secret = {**SECRET, **OAUTH, "kommo_access_expires_at": int(time.time()) + 600}
    client = boto3.client("secretsmanager", region_name="eu-west-1")
    client.put_secret_value(SecretId=stack.stack.refs["BridgeSecret"], SecretString=json.dumps(secret))
    runtime.reset()
    return client


def stored_secret(stack, client) -> dict:
    return json.loads(client.get_secret_value(SecretId=stack.stack.refs["BridgeSecret"])["SecretString"])


def test_a_token_due_for_renewal_is_refreshed_saved_and_then_used(stack, kommo_sim, oauth):
    from bridge import runtime

    runtime.kommo().add_note(7, "hello")
    assert kommo_sim.refresh_calls == 1
    saved = stored_secret(stack, oauth)
    assert saved["kommo_refresh_token"] == kommo_sim.current_refresh_token != OAUTH["kommo_refresh_token"]
    assert saved["kommo_access_expires_at"] > time.time() + 86000
    note_request = [r for r in kommo_sim.requests_seen() if r["path"] == "/api/v4/leads/notes"][-1]
    assert note_request["headers"]["Authorization"] == f"Bearer {saved['kommo_access_token']}"
    assert saved["whereby_api_key"] == SECRET["whereby_api_key"]  # the other keys are kept


def test_concurrent_refresh_attempts_make_one_refresh_call(stack, kommo_sim, oauth, atomic_dynamodb):
    from bridge import runtime
    from bridge.kommo.auth import KommoTokens, SecretWriter, TokenLease
    from bridge.store.credentials import kommo_credentials

    settings = runtime.settings()
    tokens: list[str] = []
    errors: list[Exception] = []
    race = LeaseRace(parties=8)  # all eight try the lease at once, so only the lease's condition keeps one refresh

    def renew() -> None:
        # Each thread is its own function instance: its own lease holder, its own view of the secret.
        lease = TokenLease(runtime.store().table)
        lease.acquire = race.acquire(lease.acquire)
        provider = KommoTokens(
            settings,
            lease,
            SecretWriter(settings.kommo_secret_id, boto3.client("secretsmanager", region_name="eu-west-1")),
            read=race.read(lambda fresh: kommo_credentials(settings, force_fetch=fresh)),
            sleep=lambda _: time.sleep(0.05),
        )
        try:
            tokens.append(provider.access_token())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=renew) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert kommo_sim.refresh_calls == 1
    assert len(set(tokens)) == 1
    assert tokens[0] == stored_secret(stack, oauth)["kommo_access_token"]
    assert race.holders == 1  # they did contend for it


def test_a_401_rereads_the_secret_and_refreshes_once(stack, kommo_sim, oauth):
    from bridge import runtime

    secret = stored_secret(stack, oauth)
    # A valid-looking pair that Kommo no longer accepts (revoked in Kommo's settings, say).
    secret.update(kommo_access_token="access-revoked-1", kommo_access_expires_at=int(time.time()) + 20 * 3600)
    oauth.put_secret_value(SecretId=stack.stack.refs["BridgeSecret"], SecretString=json.dumps(secret))
    runtime.reset()
    runtime.kommo().add_note(7, "hello")
    assert kommo_sim.refresh_calls == 1
    assert len(kommo_sim.notes(7)) == 1


def test_a_crash_between_refresh_and_save_ends_in_a_clear_error_not_in_silence(stack, kommo_sim, oauth, log_lines):
    from bridge import runtime
    from bridge.core.errors import PeerUnavailable
    from bridge.kommo.auth import KommoAuthLost

    class Crash(Exception):
        pass

    tokens = runtime.kommo_tokens()
    save = tokens._writer.save_tokens
    tokens._writer.save_tokens = lambda *a: (_ for _ in ()).throw(Crash())
    with pytest.raises(Crash):
        runtime.kommo().add_note(7, "hello")
    # Kommo rotated the pair, the secret still holds the used refresh token: the next try is refused by Kommo.
    tokens._writer.save_tokens = save
    with pytest.raises(KommoAuthLost) as lost:
        runtime.kommo().add_note(7, "hello")
    assert "authorise the integration again" in str(lost.value)
    assert not isinstance(lost.value, PeerUnavailable)  # not retried as an outage: an operator must act
    text = "\n".join(log_lines()) + str(lost.value)
    for value in (*OAUTH.values(), kommo_sim.current_refresh_token):
        assert value not in text


def test_a_long_lived_token_is_never_refreshed(stack, kommo_sim):
    from bridge import runtime

    runtime.kommo().add_note(7, "hello")
    assert kommo_sim.refresh_calls == 0
    assert len(kommo_sim.notes(7)) == 1


def test_the_sweepers_keep_alive_runs_even_when_the_whereby_key_cannot_be_read(stack, kommo_sim, oauth):
    # The Whereby secret is broken: the sweep fails (and is counted), but the Kommo pair is still renewed, or three
    # months of failing sweeps would also lose the Kommo integration.
    oauth.put_secret_value(SecretId=stack.stack.refs["WherebySecret"], SecretString="{not json")
    with pytest.raises(Exception, match="not valid JSON"):
        stack.invoke("SweeperFunction", {"source": "schedule"})
    assert kommo_sim.refresh_calls == 1
    assert stored_secret(stack, oauth)["kommo_refresh_token"] == kommo_sim.current_refresh_token
