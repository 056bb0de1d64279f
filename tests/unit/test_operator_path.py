"""What an operator meets on the AWS path: secrets pasted from an example, rotations without downtime, settings that
cannot work, alarms that can reach someone."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import boto3
import pytest

from devstack.template import load_template, resources_of
from tests.conftest import DEMO_STATUS, SECRET
from tests.unit.test_close_and_sweep import status_body

FORM = {"content-type": "application/x-www-form-urlencoded"}


def put_secret(stack, logical_id: str, value: dict) -> None:
    client = boto3.client("secretsmanager", region_name="eu-west-1")
    client.put_secret_value(SecretId=stack.stack.refs[logical_id], SecretString=json.dumps(value))


def hook(stack, token: str, lead: int = 1) -> int:
    query = urlencode({"token": token})
    return stack.request("POST", "/kommo/stage", query=query, headers=FORM, body=status_body(lead, 1, 1))["statusCode"]


# Placeholders pasted from an example are refused by name -------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "placeholder"),
    [
        ("kommo_client_id", "<OAuth only>"),
        ("kommo_refresh_token", "<the refresh token of the first pair>"),
        ("kommo_access_token", "eyJ…"),
        ("kommo_client_secret", "..."),
    ],
)
def test_a_placeholder_pasted_into_the_kommo_secret_is_refused_naming_its_key(stack, key, placeholder):
    from bridge import runtime
    from bridge.store.credentials import SecretError, kommo_credentials

    put_secret(stack, "BridgeSecret", {"kommo_access_token": SECRET["kommo_access_token"], key: placeholder})
    with pytest.raises(SecretError, match=f"'{key}' holds a placeholder"):
        kommo_credentials(runtime.settings())


def test_the_runbooks_two_secret_examples_parse_as_what_they_say(stack):
    from bridge import runtime
    from bridge.store.credentials import kommo_credentials

    put_secret(stack, "BridgeSecret", {"kommo_access_token": "eyJhbGciOiJSUzI1NiJ9.long-lived"})
    assert not kommo_credentials(runtime.settings()).uses_oauth
    oauth = {
        "kommo_access_token": "eyJhbGciOiJSUzI1NiJ9.access",
        "kommo_refresh_token": "def50200a1b2",
        "kommo_client_id": "4f1c2b7e-8d3a-4e55-9c1f-2a6b7c8d9e0f",
        "kommo_client_secret": "Zx8Qp2Lm7Nk4Jh6Gf3Ds1Aa9",
        "kommo_redirect_uri": "https://example.com/kommo/oauth",
        "kommo_access_expires_at": 0,
    }
    put_secret(stack, "BridgeSecret", oauth)
    assert kommo_credentials(runtime.settings()).uses_oauth


def test_a_placeholder_command_token_is_refused_by_name_and_admits_nobody(stack, caplog):
    put_secret(stack, "MattermostSecret", {"mattermost_tokens": {"wx4zz8t4ttgmtxqiwfohijayzc": ["<token>"]}})
    from bridge import runtime

    runtime.mattermost().token_gate.forget()
    body = urlencode({"token": "<token>", "team_id": "wx4zz8t4ttgmtxqiwfohijayzc", "channel_id": "c", "user_id": "u"})
    assert stack.request("POST", "/mattermost/command", headers=FORM, body=body.encode())["statusCode"] == 503
    assert any("placeholder" in str(record.__dict__) for record in caplog.records)


# The Kommo webhook token rotates without downtime ---------------------------------------------------------------
def test_both_webhook_tokens_work_during_a_rotation_and_the_old_one_is_refused_after(stack):
    old, new = SECRET["kommo_webhook_token"], "kommo-hook-token-rotated-77c1"
    put_secret(stack, "KommoWebhookSecret", {"kommo_webhook_token": [old, new]})  # 1. add the new token
    assert hook(stack, old) == 200  # deliveries Kommo queued with the old URL still land
    assert hook(stack, new, lead=2) == 200  # 2. the URLs in Kommo now carry the new one
    put_secret(stack, "KommoWebhookSecret", {"kommo_webhook_token": [new]})  # 3. drop the old one
    assert hook(stack, old, lead=3) == 401
    assert hook(stack, new, lead=4) == 200


# Alarms can reach someone ----------------------------------------------------------------------------------------
def test_no_alarm_publishes_to_a_topic_encrypted_with_an_aws_managed_key():
    template = load_template()
    resources = template["Resources"]
    alarms = resources_of(template, "AWS::CloudWatch::Alarm")
    assert alarms
    for name, alarm in alarms.items():
        for action in alarm["Properties"].get("AlarmActions", []):
            topic = resources[action["Ref"]]
            key = topic["Properties"].get("KmsMasterKeyId")
            # CloudWatch cannot use an AWS-managed key (alias/aws/sns): every notification would fail.
            assert not (isinstance(key, str) and key.startswith("alias/aws/")), (name, key)
            if isinstance(key, dict):
                policy = resources[key["Ref"]]["Properties"]["KeyPolicy"]
                principals = [s.get("Principal", {}).get("Service") for s in policy["Statement"]]
                assert "cloudwatch.amazonaws.com" in principals, name


def test_every_alarm_has_a_name_that_says_what_broke():
    alarms = resources_of(load_template(), "AWS::CloudWatch::Alarm")
    for logical_id, alarm in alarms.items():
        name = alarm["Properties"].get("AlarmName")
        assert name, logical_id
        assert "${AWS::StackName}" in json.dumps(name), logical_id


# A stack that cannot work does not deploy ------------------------------------------------------------------------
def _evaluate(expression, parameters: dict[str, str]):
    """The few intrinsic functions template Rules use, over the given parameter values."""
    if isinstance(expression, dict):
        ((name, argument),) = expression.items()
        if name == "Ref":
            return parameters[argument]
        values = [_evaluate(a, parameters) for a in argument]
        return {
            "Fn::Not": lambda: not values[0],
            "Fn::Equals": lambda: values[0] == values[1],
            "Fn::Or": lambda: any(values),
            "Fn::And": lambda: all(values),
        }[name]()
    return expression


def refused_by_rules(**given: str) -> list[str]:
    template = load_template()
    parameters = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
    parameters.update(given)
    refused = []
    for rule in template["Rules"].values():
        if "RuleCondition" in rule and not _evaluate(rule["RuleCondition"], parameters):
            continue
        refused += [a["AssertDescription"] for a in rule["Assertions"] if not _evaluate(a["Assert"], parameters)]
    return refused


STAGE_RULES_JSON = json.dumps({str(DEMO_STATUS): {"name": "Demo"}})


def test_stage_rules_without_the_kommo_account_do_not_deploy():
    [reason] = refused_by_rules(StageRules=STAGE_RULES_JSON)
    assert "KommoSubdomain is required" in reason


def test_the_kommo_account_without_stage_rules_does_not_deploy():
    [reason] = refused_by_rules(KommoSubdomain="acme")
    assert "StageRules is empty" in reason


@pytest.mark.parametrize(
    "given",
    [{}, {"KommoSubdomain": "acme", "StageRules": STAGE_RULES_JSON}],
    ids=["mattermost-only", "kommo"],
)
def test_a_stack_that_can_work_deploys(given):
    assert refused_by_rules(**given) == []


# One bad setting stops only what uses it ---------------------------------------------------------------------------
def test_a_bad_mattermost_setting_leaves_the_kommo_webhooks_working(stack, monkeypatch):
    from bridge import runtime
    from bridge.core.config import ConfigError

    monkeypatch.setenv("MATTERMOST_DEFAULT_MINUTES", "900")  # above MattermostMaxMinutes (480)
    runtime.reset()
    assert hook(stack, SECRET["kommo_webhook_token"]) == 200
    with pytest.raises(ConfigError, match=r"MattermostDefaultMinutes \(MATTERMOST_DEFAULT_MINUTES\)"):
        stack.request("POST", "/mattermost/command", headers=FORM, body=b"token=x&team_id=t&channel_id=c&user_id=u")


def test_a_bad_whereby_setting_fails_every_slash_command_naming_it(stack, monkeypatch):
    """Even `/whereby help`, which calls no Whereby API: the first command after the deploy names the setting,
    instead of the commands that make rooms failing later with a generic answer."""
    from bridge import runtime
    from bridge.core.config import ConfigError
    from tests.unit.test_mattermost_command import command

    monkeypatch.setenv("WHEREBY_BASE_URL", "api.whereby.dev/v1")  # no scheme
    runtime.reset()
    assert hook(stack, SECRET["kommo_webhook_token"]) == 200
    with pytest.raises(ConfigError, match=r"WherebyBaseUrl \(WHEREBY_BASE_URL\)"):
        command(stack, "help")


def test_a_bad_kommo_setting_stops_the_kommo_webhooks_naming_it_and_leaves_the_slash_command_working(
    stack, monkeypatch
):
    from bridge import runtime
    from bridge.core.config import ConfigError
    from tests.unit.test_mattermost_command import command

    monkeypatch.setenv("STAGE_RULES", "{not json")
    runtime.reset()
    with pytest.raises(ConfigError, match=r"StageRules \(STAGE_RULES\)"):
        hook(stack, SECRET["kommo_webhook_token"])
    assert stack.queue_depth("JobsQueue") == 0
    assert command(stack, "help")["statusCode"] == 200


# Kommo disabling the webhook is noticed ----------------------------------------------------------------------------
def test_changes_that_only_the_reconciliation_brought_are_counted_for_the_silent_webhook_alarm(stack, kommo_sim, capfd):
    import time as clock

    delivered, missed = 5101, 5102
    event = kommo_sim.move_lead(delivered, DEMO_STATUS, at=int(clock.time()) - 300)
    query = urlencode({"token": SECRET["kommo_webhook_token"]})
    body = status_body(delivered, DEMO_STATUS, event["created_at"])
    assert stack.request("POST", "/kommo/stage", query=query, headers=FORM, body=body)["statusCode"] == 200
    stack.drain()
    capfd.readouterr()
    kommo_sim.move_lead(missed, DEMO_STATUS, at=int(clock.time()) - 300)  # its webhook never came
    stack.invoke("KommoReconcileFunction", {"source": "schedule"})
    stack.drain()
    recovered = [
        json.loads(line)["MissedWebhooksRecovered"]
        for line in capfd.readouterr().out.splitlines()
        if '"MissedWebhooksRecovered"' in line and line.startswith('{"_aws"')
    ]
    assert recovered == [[1.0]]  # the missed change only; the delivered one was found done


def test_a_restore_whose_webhook_never_came_is_done_by_the_reconciliation_and_counted(stack, kommo_sim, capfd):
    import time as clock

    from tests.kommo_bodies import delete_body

    lead = 5103
    deleted = kommo_sim.delete_lead(lead, at=int(clock.time()) - 400)
    query = urlencode({"token": SECRET["kommo_webhook_token"]})
    assert stack.request("POST", "/kommo/close", query=query, headers=FORM, body=delete_body(lead))["statusCode"] == 200
    assert stack.drain().failed == 0 and deleted["type"] == "lead_deleted"
    kommo_sim.restore_lead(lead, at=int(clock.time()) - 300)  # taken back from the trash; its webhook never came
    capfd.readouterr()
    stack.invoke("KommoReconcileFunction", {"source": "schedule"})
    assert stack.drain().failed == 0 and stack.queue_depth("JobsDeadLetterQueue") == 0
    recovered = [
        json.loads(line)["MissedWebhooksRecovered"]
        for line in capfd.readouterr().out.splitlines()
        if '"MissedWebhooksRecovered"' in line and line.startswith('{"_aws"')
    ]
    assert recovered == [[1.0]]
