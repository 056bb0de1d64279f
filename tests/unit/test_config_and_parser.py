"""Settings fail loudly and by name; every real Kommo sample parses to what PHP would make of it."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from bridge.core.config import ConfigError, settings_from
from bridge.kommo.webhook import MalformedWebhook, parse_nested_form, parse_webhook
from tests.conftest import KOMMO_SAMPLES

BASE = {"TABLE_NAME": "t"}


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "TABLE_NAME"),
        ({**BASE, "STAGE_RULES": "{not json"}, "StageRules (STAGE_RULES) must be JSON"),
        ({**BASE, "STAGE_RULES": '{"abc": {}}'}, "StageRules (STAGE_RULES) keys must be Kommo status ids"),
        ({**BASE, "STAGE_RULES": '{"1": {"duration_minutes": 1}}'}, "StageRules['1'].duration_minutes"),
        ({**BASE, "STAGE_RULES": '{"1": {"room_mode": "huge"}}'}, "StageRules['1'].room_mode"),
        ({**BASE, "STAGE_RULES": '{"1": {"colour": "red"}}'}, "unknown keys ['colour']"),
        (
            {**BASE, "STAGE_RULES": '{"142": {}}'},
            "ClosedStatusIds (CLOSED_STATUS_IDS) and StageRules (STAGE_RULES) share status ids [142]",
        ),
        ({**BASE, "KOMMO_ACCOUNT_ID": "x1"}, "KommoAccountId (KOMMO_ACCOUNT_ID) must be a whole number"),
        ({**BASE, "CLOSED_STATUS_IDS": "142,won"}, "CLOSED_STATUS_IDS"),
        (
            {**BASE, "MATTERMOST_DEFAULT_MINUTES": "600"},
            "MattermostDefaultMinutes (MATTERMOST_DEFAULT_MINUTES) must not exceed",
        ),
        ({**BASE, "KOMMO_REQUESTS_PER_SECOND": "0"}, "KOMMO_REQUESTS_PER_SECOND must be positive"),
        (
            {**BASE, "WHEREBY_POINTS_PER_MINUTE": "lots"},
            "WherebyPointsPerMinute (WHEREBY_POINTS_PER_MINUTE) must be a whole number",
        ),
        (
            {**BASE, "WHEREBY_POINTS_PER_MINUTE": "30", "WHEREBY_CHAT_RESERVE_POINTS": "28"},
            "WherebyChatReservePoints (WHEREBY_CHAT_RESERVE_POINTS) must leave the background at least 3 points",
        ),
    ],
)
def test_a_bad_setting_names_the_variable(env, names):
    with pytest.raises(ConfigError) as error:
        settings_from(env).require("kommo", "mattermost", "whereby", "sweep", "reconcile")
    assert names in str(error.value)


def test_good_settings_are_typed():
    settings = settings_from(
        {
            **BASE,
            "STAGE_RULES": json.dumps({"61234501": {"name": "Demo", "duration_minutes": 45, "locked": True}}),
            "KOMMO_SUBDOMAIN": "ExampleCorp",
            "KOMMO_BASE_URL": "https://{subdomain}.amocrm.ru/",
            "MATTERMOST_TEAM_IDS": "a, b",
        }
    )
    rule = settings.stage_rules[61234501]
    assert (rule.name, rule.duration_minutes, rule.locked, rule.prefix) == ("Demo", 45, True, "Demo")
    assert settings.kommo_api_url == "https://examplecorp.amocrm.ru"
    assert settings.closed_status_ids == {142, 143}
    assert settings.mattermost_team_ids == {"a", "b"}


@pytest.mark.parametrize("form", sorted(KOMMO_SAMPLES.glob("*.form")), ids=lambda p: p.stem)
def test_every_real_sample_parses_like_php(form):
    expected = json.loads(form.with_suffix(".parsed.json").read_text(encoding="utf-8"))
    assert parse_nested_form(form.read_bytes()) == expected
    webhook = parse_webhook(form.read_bytes())
    assert webhook.events and all(e.lead_id > 0 for e in webhook.events)


def test_the_lost_sample_is_a_status_event_into_143_with_its_time():
    webhook = parse_webhook((KOMMO_SAMPLES / "09_CONSTRUCTED_status_lost_143.form").read_bytes())
    [event] = webhook.events
    assert (event.action, event.lead_id, event.status_id, event.occurred_at) == ("status", 22890011, 143, 1767225600)
    assert (webhook.subdomain, webhook.account_id) == ("examplecorp", 31234567)


def test_several_leads_and_actions_in_one_body_keep_their_order():
    body = urlencode(
        [
            ("leads[status][1][id]", "2"),
            ("leads[status][1][status_id]", "143"),
            ("leads[status][0][id]", "1"),
            ("leads[status][0][status_id]", "10"),
            ("leads[delete][0][id]", "3"),
            ("contacts[add][0][id]", "9"),
            ("account[subdomain]", "x"),
        ]
    ).encode()
    webhook = parse_webhook(body)
    assert [(e.action, e.lead_id) for e in webhook.events] == [("status", 1), ("status", 2), ("delete", 3)]
    assert webhook.ignored == 1


def test_a_batch_of_more_than_ten_entries_keeps_kommos_numeric_order():
    # Entry 10 comes after entry 9, not after entry 1: the keys are numbers, not text.
    entries = [(f"leads[status][{i}][id]", str(100 + i)) for i in range(12)]
    webhook = parse_webhook(urlencode([("account[subdomain]", "x"), *reversed(entries)]).encode())
    assert [e.lead_id for e in webhook.events] == [100 + i for i in range(12)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "no account in body"),
        (b"account", "body is not form-encoded"),
        (b"leads[status][0][id]=1", "no account in body"),
        (b"account[subdomain]=x&leads[status][0][id]=abc", "leads[status] id is not a whole number"),
        (b"account[subdomain]=x&leads[status]=1", "leads[status] is not a list"),
        (b"account[subdomain]=x&leads[status][0][id]=0", "leads[status] entry has no numeric id"),
        (
            b"account[subdomain]=x&leads[add][0][id]=1&leads[add][0][updated_at]=x",
            "leads[add] updated_at is not a whole number",
        ),
        (
            b"account[subdomain]=x&leads[add][0][id]=1&leads[add][0][pipeline_id]=x",
            "leads[add] pipeline_id is not a whole number",
        ),
        (b"account[subdomain]=x&leads=1", "leads is not an object"),
        (b"account[subdomain]=x&lea]ds=1", "body has a malformed key"),
        ("account[subdomain]=é".encode("latin-1"), "body is not UTF-8"),
    ],
)
def test_what_is_not_a_kommo_webhook_is_refused_with_a_reason(body, reason):
    # The reason is the 400's answer, the one hint a Kommo admin gets about what the sender got wrong.
    with pytest.raises(MalformedWebhook) as error:
        parse_webhook(body)
    assert str(error.value) == reason


def test_a_bad_setting_names_the_template_parameter_an_operator_sets():
    with pytest.raises(ConfigError) as error:
        settings_from({**BASE, "MATTERMOST_DEFAULT_MINUTES": "600"}).require("mattermost")
    assert str(error.value).startswith("MattermostDefaultMinutes (MATTERMOST_DEFAULT_MINUTES) must not exceed")
    assert "MattermostMaxMinutes (MATTERMOST_MAX_MINUTES)" in str(error.value)


def test_a_bad_mattermost_setting_stops_only_what_uses_it():
    settings = settings_from(
        {
            **BASE,
            "MATTERMOST_DEFAULT_MINUTES": "600",
            "KOMMO_SUBDOMAIN": "acme",
            "STAGE_RULES": json.dumps({"61234501": {"name": "Demo"}}),
        }
    )
    assert settings.require("kommo", "whereby", "sweep", "reconcile").stage_rules[61234501].name == "Demo"
    with pytest.raises(ConfigError, match="MattermostDefaultMinutes"):
        settings.require("mattermost")
