"""Defects found by adversarial use: each test is named for the behaviour it guards, and failed before its fix."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.template import load_template, resources_of
from tests.conftest import DEMO_STATUS, SECRET, SUBDOMAIN
from tests.kommo_bodies import delete_body, pipeline_body, restore_body, status_body
from tests.unit.test_close_and_sweep import post, records

LEAD = 30267969
WEATHER_TEAM = "wx4zz8t4ttgmtxqiwfohijayzc"
OTHER_TEAM = "oybxpfkcrtgk9bz5qbbsccwmxw"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def open_room(stack, lead: int = LEAD, at: int = 1_767_225_000) -> None:
    assert post(stack, "/kommo/stage", status_body(lead, DEMO_STATUS, at))[0] == 200
    assert stack.drain().failed == 0


def dead_letters(stack) -> list[dict]:
    sqs = boto3.client("sqs", region_name="eu-west-1")
    answer = sqs.receive_message(
        QueueUrl=stack.stack.refs["JobsDeadLetterQueue"],
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        VisibilityTimeout=0,
    )
    return answer.get("Messages", [])


def logged(caplog) -> list[str]:
    """Every record's message with its extra fields (the reason a line gives is an extra field)."""
    return [json.dumps(record.__dict__, default=str) for record in caplog.records]


def use_setting(stack, monkeypatch, **values: str) -> None:
    from bridge import runtime

    for name, value in values.items():
        monkeypatch.setenv(name, value)
    runtime.reset()


# 1. A Mattermost token acts only for the team it was issued for ---------------------------------------------------
def mattermost(stack, token: str, team: str, text: str, user: str = "erj6qck3rfgtujs86w5r6rckzh") -> dict:
    body = urlencode(
        {
            "token": token,
            "team_id": team,
            "channel_id": "fukxanjgjbnp7ng383at53k1sy",
            "user_id": user,
            "user_name": "alan",
            "command": "/whereby",
            "text": text,
        }
    ).encode()
    return stack.request("POST", "/mattermost/command", headers=FORM, body=body)


def test_a_token_of_one_team_cannot_start_list_or_end_rooms_of_another_team(stack, whereby_sim):
    other_token = SECRET["mattermost_tokens"][OTHER_TEAM][0]
    weather_token = SECRET["mattermost_tokens"][WEATHER_TEAM][0]
    created = json.loads(mattermost(stack, weather_token, WEATHER_TEAM, "Board 30m")["body"])
    assert created["response_type"] == "in_channel"
    room_name = whereby_sim.meetings()[0]["roomName"].lstrip("/")

    for text in ("Spoofed 30m", "list", f"end {room_name}", "end"):
        response = mattermost(stack, other_token, WEATHER_TEAM, text)
        assert response["statusCode"] == 401, text
        assert json.loads(response["body"]) == {"error": "this token is not valid for this team"}
        assert "roomKey" not in response["body"]
    assert len(whereby_sim.meetings()) == 1  # nothing created, nothing ended


def test_a_flat_token_list_is_refused_by_name_unless_exactly_one_team_is_allowed(
    stack, whereby_sim, monkeypatch, caplog
):
    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    flat = {"mattermost_tokens": ["legacy-flat-token-00000000"]}
    secrets.put_secret_value(SecretId=stack.stack.refs["MattermostSecret"], SecretString=json.dumps(flat))
    use_setting(stack, monkeypatch, MATTERMOST_TEAM_IDS="")
    from bridge import runtime

    runtime.mattermost().token_gate.forget()
    refused = mattermost(stack, "legacy-flat-token-00000000", WEATHER_TEAM, "Hi")
    assert refused["statusCode"] == 503
    assert any("mattermost_tokens" in line and "MATTERMOST_TEAM_IDS" in line for line in logged(caplog))
    assert whereby_sim.meetings() == []

    use_setting(stack, monkeypatch, MATTERMOST_TEAM_IDS=WEATHER_TEAM)
    runtime.mattermost().token_gate.forget()
    assert mattermost(stack, "legacy-flat-token-00000000", WEATHER_TEAM, "Hi")["statusCode"] == 200
    assert mattermost(stack, "legacy-flat-token-00000000", OTHER_TEAM, "Hi")["statusCode"] == 401
    assert len(whereby_sim.meetings()) == 1


# 2. A slot whose record the TTL purged means "no room" ---------------------------------------------------------
def test_a_deal_that_comes_back_after_its_room_record_was_purged_gets_a_new_room(stack, whereby_sim, kommo_sim):
    from bridge import runtime
    from bridge.whereby.sweeper import sweep

    open_room(stack, at=100)
    sweep(runtime.store(), runtime.whereby(), runtime.settings(), clock=lambda: time.time() + 2 * 3600)
    assert whereby_sim.meetings() == []
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    for record in records(stack):  # what DynamoDB's TTL does 30 days after the room was deleted
        table.delete_item(Key={"pk": record["pk"], "sk": "ROOM"})

    assert post(stack, "/kommo/stage", status_body(LEAD, DEMO_STATUS, 100 + 31 * 86400))[0] == 200
    result = stack.drain()
    assert (result.processed, result.failed) == (1, 0)
    assert len(whereby_sim.meetings()) == 1
    assert len(kommo_sim.notes(LEAD)) == 2
    assert stack.queue_depth("JobsDeadLetterQueue") == 0


def test_ending_a_room_whose_record_was_purged_is_quiet(stack):
    from bridge import runtime

    runtime.store().mark_deleted("zaaaaaaaaaa")  # no such record: nothing to do, and no error
    assert records(stack) == []


# 3. Each side effect of a close happens once; permanent errors are not retried ------------------------------------
def test_a_close_whose_field_update_is_refused_posts_its_note_once_and_finishes(
    stack, whereby_sim, kommo_sim, monkeypatch, capfd, caplog
):
    use_setting(stack, monkeypatch, KOMMO_MEETING_FIELD_ID="884411")
    open_room(stack)
    kommo_sim.fail_next(10, status=400, method="PATCH")  # the field was deleted in Kommo
    post(stack, "/kommo/close", status_body(LEAD, 143, 1_767_225_600))
    result = stack.drain()
    assert result.failed == 0
    assert whereby_sim.meetings() == []
    assert [r["state"] for r in records(stack)] == ["deleted"]
    closing = [n for n in kommo_sim.notes(LEAD) if "closed" in n["params"]["text"]]
    assert len(closing) == 1
    assert stack.queue_depth("JobsDeadLetterQueue") == 0
    assert "PermanentFailures" in capfd.readouterr().out  # the metric behind the alarm
    assert any("refused for good" in line and "400" in line for line in logged(caplog))  # the reason, in the log


def test_a_close_retried_after_an_outage_posts_its_note_once(stack, whereby_sim, kommo_sim, monkeypatch):
    use_setting(stack, monkeypatch, KOMMO_MEETING_FIELD_ID="884411")
    open_room(stack)
    kommo_sim.fail_next(6, status=503, method="PATCH")  # two tries of three attempts each
    post(stack, "/kommo/close", status_body(LEAD, 142, 1_767_225_600))
    first = stack.drain(max_rounds=1)
    assert first.failed == 1
    stack.drain()
    assert len([n for n in kommo_sim.notes(LEAD) if "closed" in n["params"]["text"]]) == 1
    assert kommo_sim.lead(LEAD)["custom_fields_values"] is None  # the field was cleared in the end


def test_a_permanent_whereby_refusal_goes_to_the_dead_letter_queue_at_once_with_its_reason(stack, whereby_sim):
    whereby_sim.fail_next(1, status=400, method="POST")
    post(stack, "/kommo/stage", status_body(LEAD, DEMO_STATUS, 1_767_225_000))
    result = stack.drain()
    assert (result.processed, result.failed) == (1, 0)  # not retried
    [message] = dead_letters(stack)
    assert "400" in message["MessageAttributes"]["reason"]["StringValue"]
    assert json.loads(message["Body"])["lead_id"] == LEAD
    assert whereby_sim.meetings() == []


# 4. A refused cursor restarts the walk; a failed run keeps the Kommo keep-alive ------------------------------------
def test_a_refused_sweep_cursor_restarts_the_walk_and_orphans_are_still_deleted(stack, whereby_sim):
    from datetime import UTC, datetime

    from bridge import runtime
    from bridge.whereby.client import RoomRequest, room_prefix
    from bridge.whereby.sweeper import sweep

    store, whereby = runtime.store(), runtime.whereby()
    orphan = whereby.create_meeting(
        RoomRequest(datetime.fromtimestamp(time.time() + 3600, UTC), prefix=room_prefix("x", store.new_room_key()))
    )
    store.save_sweep_cursor("stale-cursor-whereby-no-longer-knows")
    for _ in range(2):  # before the fix, every run failed at the same place
        summary = sweep(store, whereby, runtime.settings())
        assert summary.stopped == ""
    assert orphan.meeting_id not in {m["meetingId"] for m in whereby_sim.meetings()}
    assert store.sweep_cursor() is None


def test_a_failed_sweep_still_keeps_kommo_oauth_alive(stack, whereby_sim, kommo_sim):
    from bridge import runtime
    from bridge.whereby.sweeper import scheduled_run

    renewed: list[bool] = []
    whereby_sim.fail_next(20, status=401)  # the Whereby key was revoked: every call fails
    with pytest.raises(Exception, match="401"):
        scheduled_run(runtime.store(), runtime.whereby, runtime.settings(), lambda: renewed.append(True))
    assert renewed == [True]


def test_a_failed_sweep_run_fails_the_function_and_is_counted_for_the_alarm(stack, whereby_sim, capfd):
    whereby_sim.fail_next(20, status=401)
    with pytest.raises(Exception, match="401"):
        stack.invoke("SweeperFunction", {"source": "schedule"})
    # The alarm watches this exact metric name: a metric of another name never sets it off.
    emitted = [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"_aws"' in line]
    names = {m["Name"] for e in emitted for d in e["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    alarmed = {
        r["Properties"].get("MetricName")
        for r in load_template().get("Resources", {}).values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert "SweepRunsFailed" in names & alarmed


# 6. Numbers that only look like digits get a 400 ----------------------------------------------------------------
def body_with(**fields: str) -> bytes:
    values = {
        "account[subdomain]": SUBDOMAIN,
        "leads[status][0][id]": str(LEAD),
        "leads[status][0][status_id]": str(DEMO_STATUS),
        "leads[status][0][updated_at]": "1767225000",
    }
    values.update({f"leads[status][0][{k}]": v for k, v in fields.items()})
    return urlencode(values).encode()


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "--5"},
        {"id": "²"},
        {"id": "٣٤"},
        {"id": "9" * 5000},
        {"status_id": "1e3"},
        {"updated_at": "-1"},
        {"status_id": " 16525558"},
    ],
    ids=["double-minus", "superscript", "arabic-indic", "5000-digits", "exponent", "negative-time", "padded"],
)
@pytest.mark.parametrize("path", ["/kommo/stage", "/kommo/close"])
def test_numbers_that_only_look_like_digits_get_a_400_and_change_nothing(stack, whereby_sim, path, fields):
    status, answer = post(stack, path, body_with(**fields))
    assert status == 400
    assert "whole number" in answer["error"] or "impossible" in answer["error"]
    assert stack.queue_depth("JobsQueue") == 0


_segment = st.one_of(st.just(""), st.text(max_size=6), st.sampled_from(["0", "1", "id", "status_id", "leads"]))
_noise_keys = st.builds(
    lambda root, parts: root + "".join(f"[{p}]" for p in parts),
    st.sampled_from(["leads", "account", "contacts", "x"]) | st.text(min_size=1, max_size=5),
    st.lists(_segment, max_size=5),
)
# Keys of the grammar Kommo sends: leads[<action>][<index>][<field>], the part the parser casts to numbers.
_lead_keys = st.builds(
    lambda action, index, field: f"leads[{action}][{index}][{field}]",
    st.sampled_from(["status", "add", "update", "delete", "restore", "responsible", "note"]),
    st.sampled_from(["0", "1", "2"]) | st.text(max_size=3),
    st.sampled_from(["id", "status_id", "pipeline_id", "old_status_id", "updated_at", "last_modified", "name"]),
)
_values = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.text(max_size=12),
    st.sampled_from(["²", "--5", "٣٤", "1e3", " 7", "9" * 40, "9" * 5000, "", "16525558", "1767225000"]),
)
_pairs = st.lists(st.tuples(st.one_of(_lead_keys, _lead_keys, _noise_keys), _values), max_size=15)


@settings(max_examples=400, deadline=None)
@given(pairs=_pairs, account=st.booleans())
def test_the_parser_answers_every_nested_body_with_events_or_its_own_error(pairs, account):
    from bridge.kommo.webhook import MalformedWebhook, parse_webhook

    body = urlencode([*([("account[subdomain]", SUBDOMAIN)] if account else []), *pairs]).encode()
    try:
        webhook = parse_webhook(body)
    except MalformedWebhook as exc:
        assert str(exc) and len(str(exc)) < 200
        return
    for event in webhook.events:
        assert 0 < event.lead_id < 10**18
        for number in (event.status_id, event.pipeline_id, event.old_status_id, event.occurred_at):
            assert number is None or abs(number) < 10**18


def test_the_parser_property_reaches_lead_events():
    """The strategy above must produce bodies with lead events, or the property says nothing about the casts."""
    from hypothesis import find

    from bridge.kommo.webhook import MalformedWebhook, parse_webhook

    def has_events(pairs: list[tuple[str, str]]) -> bool:
        try:
            return bool(parse_webhook(urlencode([("account[subdomain]", SUBDOMAIN), *pairs]).encode()).events)
        except MalformedWebhook:
            return False

    assert find(_pairs, has_events, settings=settings(max_examples=5000, database=None, derandomize=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=_pairs)
def test_an_authenticated_webhook_never_gets_a_5xx(stack, pairs):
    body = urlencode([("account[subdomain]", SUBDOMAIN), *pairs]).encode()
    assert post(stack, "/kommo/stage", body)[0] < 500


# 7. A restored deal can have rooms again ------------------------------------------------------------------------
def test_a_restored_deal_that_enters_a_stage_again_gets_its_room(stack, whereby_sim):
    open_room(stack, at=1_767_225_000)
    post(stack, "/kommo/close", delete_body(LEAD))
    stack.drain()
    assert whereby_sim.meetings() == []
    # Restored from the trash into another stage; its time may even be before our receive time of the delete.
    assert post(stack, "/kommo/close", restore_body(LEAD, 61234502, int(time.time()) - 5))[1]["accepted"] == 1
    stack.drain()
    assert whereby_sim.meetings() == []
    open_room(stack, at=int(time.time()) + 60)
    assert len(whereby_sim.meetings()) == 1


def test_a_deal_restored_into_a_configured_stage_gets_a_room_at_once(stack, whereby_sim, kommo_sim):
    open_room(stack, at=1_767_225_000)
    post(stack, "/kommo/close", delete_body(LEAD))
    stack.drain()
    assert post(stack, "/kommo/stage", restore_body(LEAD, DEMO_STATUS, None))[1]["accepted"] == 1
    assert stack.drain().failed == 0
    assert len(whereby_sim.meetings()) == 1
    assert len(kommo_sim.notes(LEAD)) == 2  # the first room's note, and the new one's


def test_a_restore_whose_delete_never_reached_us_still_gives_the_room_of_its_stage(stack, whereby_sim, kommo_sim):
    # Kommo's delete webhook was lost: to the bridge the deal was never in the trash.
    assert post(stack, "/kommo/stage", restore_body(LEAD, DEMO_STATUS, None))[1]["accepted"] == 1
    assert stack.drain().failed == 0
    assert len(whereby_sim.meetings()) == 1
    assert len(kommo_sim.notes(LEAD)) == 1


# 8. Each function can read only the secrets it needs ------------------------------------------------------------
def _secret_reads(function: dict) -> set[str]:
    reads = set()
    for policy in function["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "AWSSecretsManagerGetSecretValuePolicy" in policy:
            reads.add(policy["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"]["Ref"])
    return reads


def _environment_secrets(function: dict) -> set[str]:
    variables = function["Properties"].get("Environment", {}).get("Variables", {})
    return {value["Ref"] for name, value in variables.items() if name.endswith("_SECRET_ID")}


@pytest.mark.parametrize(
    ("function", "secrets"),
    [
        ("KommoStageFunction", {"KommoWebhookSecret"}),
        ("KommoCloseFunction", {"KommoWebhookSecret"}),
        ("MattermostCommandFunction", {"WherebySecret", "MattermostSecret", "ChatBotSecret", "ActionKeySecret"}),
        ("MattermostActionFunction", {"WherebySecret", "ActionKeySecret"}),
        ("WorkerFunction", {"WherebySecret", "BridgeSecret", "ChatBotSecret", "ActionKeySecret"}),
        ("SweeperFunction", {"WherebySecret", "BridgeSecret"}),
        ("KommoReconcileFunction", {"BridgeSecret"}),
        ("RecordingsFunction", {"WherebySecret"}),
        ("WherebyEventsFunction", {"WherebyWebhookSecret"}),
        ("SlackCommandFunction", {"SlackSecret"}),
        ("SlackActionFunction", {"SlackSecret", "ActionKeySecret"}),
        ("ChatExportFunction", {"ActionKeySecret"}),
    ],
)
def test_each_function_can_read_only_the_secrets_it_needs(function, secrets):
    template = load_template()
    spec = template["Resources"][function]
    assert _secret_reads(spec) == secrets
    assert _environment_secrets(spec) == secrets
    assert "SECRET_ID" not in json.dumps(template["Globals"])
    assert set(resources_of(template, "AWS::SecretsManager::Secret")) >= secrets


SCHEDULES = ["SCHEDULE#*", "SCHEDULE-COUNT#*"]  # a channel's schedules and the counts that cap them


@pytest.mark.parametrize(
    ("function", "groups"),
    [
        ("MattermostCommandFunction", [["ROOM#*", "BUDGET#whereby"], SCHEDULES]),
        ("MattermostActionFunction", [["ROOM#*", "BUDGET#whereby"]]),
        (
            "WorkerFunction",
            [["ROOM#*", "LEAD#*", "LEASE#kommo-oauth", "BUDGET#whereby", "RECORDING#*", "MEDIA#*"], SCHEDULES],
        ),
        ("SweeperFunction", [["ROOM#*", "SWEEP", "LEASE#kommo-oauth", "BUDGET#whereby", "RECORDING#*", "MEDIA#*"]]),
        ("KommoReconcileFunction", [["RECONCILE", "LEASE#kommo-oauth"]]),
        ("ScheduleFireFunction", [["ROOM#*", "BUDGET#whereby", "SCHEDULE#*"]]),
    ],
)
def test_table_access_is_narrowed_to_the_items_each_function_touches(function, groups):
    """Each statement that reaches items names the keys it may touch; a function may hold one statement per kind
    of item (rooms, schedules) so that, say, deleting a schedule does not let it delete a room."""
    spec = load_template()["Resources"][function]
    statements = [s for p in spec["Properties"]["Policies"] if isinstance(p, dict) for s in p.get("Statement", [])]
    item_statements = [s for s in statements if any(a.startswith("dynamodb:") and "Query" not in a for a in _list(s))]
    assert item_statements
    found = [sorted(s["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]) for s in item_statements]
    assert sorted(found) == sorted(sorted(group) for group in groups)


@pytest.mark.parametrize(
    "function", ["KommoStageFunction", "KommoCloseFunction", "WherebyEventsFunction", "SlackActionFunction"]
)
def test_the_internet_facing_kommo_routes_cannot_touch_the_table(function):
    spec = load_template()["Resources"][function]
    text = json.dumps(spec["Properties"]["Policies"])
    assert "dynamodb" not in text.lower() and "DynamoDB" not in text


def test_no_function_gets_table_access_through_a_broad_policy_template_or_every_index():
    template = load_template()
    for name, spec in resources_of(template, "AWS::Serverless::Function").items():
        for policy in spec["Properties"].get("Policies", []):
            assert not (isinstance(policy, dict) and any(k.startswith("DynamoDB") for k in policy)), name
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                if "dynamodb:Query" in _list(statement):
                    resource = json.dumps(statement["Resource"])
                    assert "index/*" not in resource and "/index/by_" in resource, (name, resource)


def _list(statement: dict) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


# 9. Settings that cannot work fail at cold start --------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KOMMO_ACCOUNT_ID": "16503244"}, r"KommoSubdomain \(KOMMO_SUBDOMAIN\) is required"),
        ({"STAGE_RULES": json.dumps({"1": {"name": "Demo"}})}, r"KommoSubdomain \(KOMMO_SUBDOMAIN\) is required"),
        ({"KOMMO_SUBDOMAIN": "acme.kommo.com"}, r"KommoSubdomain \(KOMMO_SUBDOMAIN\) must be the account's subdomain"),
        (
            {"KOMMO_SUBDOMAIN": "acme", "KOMMO_BASE_URL": "acme.kommo.com"},
            r"KommoBaseUrl \(KOMMO_BASE_URL\) must be an http",
        ),
    ],
)
def test_kommo_settings_that_cannot_work_fail_naming_the_setting(env, message):
    from bridge.core.config import ConfigError, settings_from

    with pytest.raises(ConfigError, match=message):
        settings_from({"TABLE_NAME": "t", **env}).require("kommo")


def test_an_account_id_with_a_fixed_base_url_needs_no_subdomain():
    from bridge.core.config import settings_from

    settings = settings_from({"TABLE_NAME": "t", "KOMMO_ACCOUNT_ID": "1", "KOMMO_BASE_URL": "https://acme.amocrm.ru"})
    assert settings.kommo_api_url == "https://acme.amocrm.ru"


# 11. Bodies without a time (Digital Pipeline hooks) ----------------------------------------------------------------
def test_a_redelivered_pipeline_hook_does_not_reopen_a_lost_deal(stack, whereby_sim, kommo_sim):
    kommo_sim.add_lead(LEAD, status_id=143, pipeline_id=7712345, updated_at=int(time.time()) - 60)
    # The deal entered Demo (its pipeline hook failed), then was lost; Kommo delivers the Demo hook again later.
    post(stack, "/kommo/close", status_body(LEAD, 143, int(time.time()) - 60))
    stack.drain()
    assert post(stack, "/kommo/stage", pipeline_body(LEAD, DEMO_STATUS)) == (200, {"accepted": 1, "ignored": 0})
    result = stack.drain()
    assert (result.processed, result.failed) == (1, 0)
    assert stack.queue_depth("JobsDeadLetterQueue") == 0
    assert whereby_sim.meetings() == []


def test_a_pipeline_hook_for_a_deal_still_in_the_stage_gets_its_room_once(stack, whereby_sim, kommo_sim):
    kommo_sim.add_lead(LEAD, status_id=DEMO_STATUS, pipeline_id=7712345, updated_at=int(time.time()) - 30)
    for _ in range(2):  # delivered twice, seconds apart
        post(stack, "/kommo/stage", pipeline_body(LEAD, DEMO_STATUS))
        assert stack.drain().failed == 0
    assert len(whereby_sim.meetings()) == 1
    assert len(kommo_sim.notes(LEAD)) == 1


def test_a_pipeline_hook_for_a_lead_kommo_no_longer_has_does_nothing(stack, whereby_sim):
    post(stack, "/kommo/stage", pipeline_body(LEAD, DEMO_STATUS))
    assert stack.drain().failed == 0
    assert stack.queue_depth("JobsDeadLetterQueue") == 0
    assert whereby_sim.meetings() == []


# Answers lost after the peer acted (a crash or a timeout right after the call) ---------------------------------
def test_a_room_note_whose_answer_was_lost_is_not_posted_twice(stack, whereby_sim, kommo_sim):
    kommo_sim.fail_next(1, status=0, method="POST", lost_answer=True)  # Kommo made the note; the worker never heard
    post(stack, "/kommo/stage", status_body(LEAD, DEMO_STATUS, 1_767_225_000))
    stack.drain()
    assert len(kommo_sim.notes(LEAD)) == 1
    assert len(whereby_sim.meetings()) == 1


def test_a_close_note_whose_answer_was_lost_is_not_posted_twice(stack, whereby_sim, kommo_sim):
    open_room(stack)
    kommo_sim.fail_next(1, status=0, method="POST", lost_answer=True)
    post(stack, "/kommo/close", status_body(LEAD, 142, 1_767_225_600))
    stack.drain()
    assert len([n for n in kommo_sim.notes(LEAD) if "closed" in n["params"]["text"]]) == 1
    assert whereby_sim.meetings() == []


def test_a_room_whose_creation_answer_was_lost_is_swept_and_the_deal_keeps_one_room(stack, whereby_sim, kommo_sim):
    from bridge import runtime
    from bridge.whereby.sweeper import sweep

    whereby_sim.fail_next(1, status=0, method="POST", lost_answer=True)  # Whereby made a room nobody recorded
    post(stack, "/kommo/stage", status_body(LEAD, DEMO_STATUS, 1_767_225_000))
    stack.drain()
    assert len(whereby_sim.meetings()) == 2
    summary = sweep(runtime.store(), runtime.whereby(), runtime.settings())
    assert summary.orphans == 1
    [room] = whereby_sim.meetings()
    [note] = kommo_sim.notes(LEAD)
    assert room["roomUrl"] in note["params"]["text"]  # the room that stayed is the one the deal was told about


# The upgrade path: the first version's single secret moves into the per-peer secrets ------------------------------
FIRST_VERSION_SECRET = {
    "whereby_api_key": SECRET["whereby_api_key"],
    "kommo_webhook_token": "the-token-in-kommos-webhook-urls-0000",
    "kommo_access_token": SECRET["kommo_access_token"],
    "mattermost_tokens": ["legacy-flat-token-00000000"],
}


def _outputs(stack) -> dict[str, str]:
    refs = stack.stack.refs
    return {
        "KommoSecretArn": refs["BridgeSecret"],
        "KommoWebhookSecretArn": refs["KommoWebhookSecret"],
        "WherebySecretArn": refs["WherebySecret"],
        "MattermostSecretArn": refs["MattermostSecret"],
    }


def _secret(client, arn: str) -> dict:
    return json.loads(client.get_secret_value(SecretId=arn)["SecretString"])


def test_migrating_the_single_secret_keeps_the_kommo_urls_and_binds_the_tokens_to_their_team(stack, whereby_sim):
    from devstack.operations import migrate_secrets

    client = boto3.client("secretsmanager", region_name="eu-west-1")
    outputs = _outputs(stack)
    client.put_secret_value(SecretId=outputs["KommoSecretArn"], SecretString=json.dumps(FIRST_VERSION_SECRET))
    client.put_secret_value(SecretId=outputs["WherebySecretArn"], SecretString='{"whereby_api_key": ""}')
    client.put_secret_value(SecretId=outputs["MattermostSecretArn"], SecretString='{"mattermost_tokens": {}}')
    with pytest.raises(SystemExit, match="TEAM="):
        migrate_secrets(client, outputs, team=None)  # a flat list needs its team: nothing is changed
    assert _secret(client, outputs["KommoSecretArn"]) == FIRST_VERSION_SECRET
    assert _secret(client, outputs["WherebySecretArn"]) == {"whereby_api_key": ""}

    done = migrate_secrets(client, outputs, team=WEATHER_TEAM)
    assert all(value not in "\n".join(done) for value in FIRST_VERSION_SECRET.values() if isinstance(value, str))
    assert _secret(client, outputs["KommoSecretArn"]) == {"kommo_access_token": SECRET["kommo_access_token"]}
    assert _secret(client, outputs["WherebySecretArn"]) == {"whereby_api_key": SECRET["whereby_api_key"]}
    assert _secret(client, outputs["MattermostSecretArn"]) == {
        "mattermost_tokens": {WEATHER_TEAM: ["legacy-flat-token-00000000"]}
    }
    # The webhook URLs configured in Kommo keep working, and the old team token works for its team only.
    query = urlencode({"token": "the-token-in-kommos-webhook-urls-0000"})
    answer = stack.request("POST", "/kommo/stage", query=query, headers=FORM, body=status_body(LEAD, 1, 1))
    assert answer["statusCode"] == 200
    assert mattermost(stack, "legacy-flat-token-00000000", WEATHER_TEAM, "Hi 30m")["statusCode"] == 200
    assert mattermost(stack, "legacy-flat-token-00000000", OTHER_TEAM, "Hi 30m")["statusCode"] == 401


def test_a_whereby_refusal_to_delete_during_a_close_is_given_up_and_the_rest_of_the_close_is_done(
    stack, whereby_sim, kommo_sim, capfd
):
    open_room(stack)
    whereby_sim.fail_next(1, status=403, method="DELETE")  # refused for good
    post(stack, "/kommo/close", status_body(LEAD, 143, 1_767_225_600))
    result = stack.drain()
    assert result.failed == 0 and stack.queue_depth("JobsDeadLetterQueue") == 0
    assert len([n for n in kommo_sim.notes(LEAD) if "closed" in n["params"]["text"]]) == 1
    # The record stays live, so the sweep deletes the room when it expires; the refusal is counted for the alarm.
    assert [r["state"] for r in records(stack)] == ["active"]
    assert "PermanentFailures" in capfd.readouterr().out


def test_a_note_whose_answer_and_lookup_both_failed_is_found_on_the_jobs_retry(stack, whereby_sim, kommo_sim):
    kommo_sim.fail_next(1, status=0, method="POST", lost_answer=True)  # the note is made, the answer lost
    # And the lookup right after fails too (the account's read, for its language, comes first): the job fails.
    kommo_sim.fail_next(3, status=503, method="GET", after=1)
    post(stack, "/kommo/stage", status_body(LEAD, DEMO_STATUS, 1_767_225_000))
    first = stack.drain(max_rounds=1)
    assert first.failed == 1
    assert stack.drain().failed == 0  # the retry looks for the note before it posts, finds it and is done
    assert len(kommo_sim.notes(LEAD)) == 1
    assert len(whereby_sim.meetings()) == 1


def test_a_note_that_kommo_never_made_is_posted_on_the_jobs_retry(stack, whereby_sim, kommo_sim):
    kommo_sim.fail_next(3, status=503, method="POST")  # Kommo is down for the note: nothing is made, the job fails
    post(stack, "/kommo/stage", status_body(LEAD, DEMO_STATUS, 1_767_225_000))
    assert stack.drain(max_rounds=1).failed == 1
    assert kommo_sim.notes(LEAD) == []
    assert stack.drain().failed == 0
    assert len(kommo_sim.notes(LEAD)) == 1 and len(whereby_sim.meetings()) == 1


def test_a_restore_dated_before_our_receipt_of_the_delete_still_lets_the_next_stage_change_in(stack, whereby_sim):
    now = int(time.time())
    open_room(stack, at=now - 1000)
    post(stack, "/kommo/close", delete_body(LEAD))  # a delete carries no time: recorded at our receipt, now
    stack.drain()
    post(stack, "/kommo/close", restore_body(LEAD, 61234502, now - 100))  # restored 100 s ago, in another stage
    stack.drain()
    open_room(stack, at=now - 50)  # then moved into Demo: after the restore, before our receipt of the delete
    assert len(whereby_sim.meetings()) == 1
