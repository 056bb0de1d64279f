"""Slack ``/whereby``: Slack's signature, the 3-second acknowledgement, the room through ``response_url``.

The route runs in-process through the template's route table (API Gateway's base64 form bodies included), the
worker drains the real (moto) FIFO queue, Whereby and Slack's ``response_url`` are simulators over HTTP.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.lambda_events import http_api_event
from devstack.slack_sim import signed
from tests.conftest import SECRET, SLACK_SAMPLES

SAMPLE_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SAMPLE_TEAM = "T0A1B2C3D4E"
SAMPLE_TS = 1767225600
ZWJ = "\u200d"


def sample(name: str) -> tuple[bytes, dict[str, str]]:
    body = (SLACK_SAMPLES / f"{name}.body").read_bytes()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    for line in (SLACK_SAMPLES / f"{name}.headers").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        if key.lower().startswith("x-slack"):
            headers[key.strip()] = value.strip()
    return body, headers


def at(now: float, body: bytes, headers: dict[str, str]) -> dict:
    """The route with the production ports, its clock (the signature window's) set to ``now``."""
    from bridge import runtime
    from bridge.chat import slack
    from bridge.core.http_api import ApiRequest
    from bridge.store.credentials import slack_team_secrets

    production = runtime.slack()
    secrets = lambda fresh: slack_team_secrets(runtime.settings(), force_fetch=fresh)  # noqa: E731
    gate = slack.SignatureGate(secrets, clock=lambda: now)
    event = http_api_event("POST", "/slack/command", headers=headers, body=body)
    assert event["isBase64Encoded"]  # as API Gateway delivers a form
    return slack.answer(ApiRequest.of(event), replace(production, gate=gate))


def form(text: str, response_url: str, **fields: str) -> bytes:
    values = {
        "token": "legacy",
        "team_id": SAMPLE_TEAM,
        "team_domain": "acme-sales",
        "channel_id": "C07RM8K2H1Q",
        "channel_name": "sales-demos",
        "user_id": "U05QWERTY12",
        "user_name": "anna.petrova",
        "command": "/whereby",
        "text": text,
        "api_app_id": "A08WHEREBY1",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": f"{time.monotonic_ns()}.6001234567890.5d0c0f7e3b9a41c2",
    }
    return urlencode({**values, **fields}).encode()


def send(stack, body: bytes, secret: str = SAMPLE_SECRET) -> dict:
    headers = {"Content-Type": "application/x-www-form-urlencoded", **signed(body, secret, int(time.time()))}
    response = stack.request("POST", "/slack/command", headers=headers, body=body)
    return {"status": response["statusCode"], **json.loads(response["body"] or "{}")}


def command(stack, slack_sim, text: str, **fields: str) -> tuple[dict, str]:
    url = slack_sim.new_response_url()
    return send(stack, form(text, url, **fields)), url


def queued(stack) -> int:
    return stack.queue_depth("JobsQueue")


# The signature ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["01-whereby-public-channel", "02-whereby-dm-empty-text"])
def test_the_contract_samples_are_accepted_at_their_signing_time_and_acknowledged_without_whereby(
    stack, whereby_sim, name
):
    body, headers = sample(name)
    answer = at(SAMPLE_TS + 2, body, headers)
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"]) == {"response_type": "ephemeral", "text": "Making your Whereby room…"}
    assert whereby_sim.requests_seen() == []  # the acknowledgement never waits on Whereby
    assert queued(stack) == 1


@pytest.mark.parametrize(
    ("change", "now"),
    [
        (lambda body, headers: (body.replace(b"ACME", b"ACMF"), headers), SAMPLE_TS + 2),  # the body, tampered
        (lambda body, headers: (body, {**headers, "X-Slack-Signature": "v0=" + "0" * 64}), SAMPLE_TS + 2),
        (lambda body, headers: (body, {k: v for k, v in headers.items() if "Signature" not in k}), SAMPLE_TS),
        (lambda body, headers: (body.replace(b"+", b"%20"), headers), SAMPLE_TS),  # re-encoded on the way
        (lambda body, headers: (body, headers), SAMPLE_TS + 301),  # signed more than 5 minutes ago
        (lambda body, headers: (body, headers), SAMPLE_TS - 301),  # signed more than 5 minutes ahead
    ],
    ids=["tampered-body", "wrong-signature", "no-signature", "re-encoded", "old", "from-the-future"],
)
def test_a_bad_or_stale_signature_gets_401_and_nothing_is_done(stack, whereby_sim, change, now, log_lines):
    body, headers = change(*sample("01-whereby-public-channel"))
    answer = at(now, body, headers)
    assert answer["statusCode"] == 401
    assert queued(stack) == 0 and whereby_sim.requests_seen() == []
    assert not any(SAMPLE_SECRET in line for line in log_lines())


def test_during_a_rotation_both_signing_secrets_are_accepted(stack, whereby_sim, slack_sim, monkeypatch):
    import boto3

    from bridge import runtime

    new = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    secrets.put_secret_value(
        SecretId=stack.stack.refs["SlackSecret"],
        SecretString=json.dumps({"slack_signing_secret": {SAMPLE_TEAM: [new, SAMPLE_SECRET]}}),
    )
    runtime.reset()
    for secret in (new, SAMPLE_SECRET):
        url = f"{slack_sim.root_url}/commands/x"
        assert send(stack, form("help", url), secret)["status"] == 200
    assert send(stack, form("help", url), "0123456789abcdef0123456789abcdef")["status"] == 401


def test_a_workspace_the_secret_is_not_bound_to_is_refused_and_gets_no_room(stack, whereby_sim, slack_sim):
    answer, _ = command(stack, slack_sim, "Demo", team_id="T0OTHERTEAM")
    refusal = "`/whereby` is not enabled for this workspace."
    assert answer == {"status": 200, "response_type": "ephemeral", "text": refusal}
    assert queued(stack) == 0 and whereby_sim.requests_seen() == []


# The asynchronous room -------------------------------------------------------------------------------------------
def test_the_room_arrives_through_response_url_after_the_worker_runs(stack, whereby_sim, slack_sim):
    answer, url = command(stack, slack_sim, "Sprint review 45m")
    assert answer["text"] == "Making your Whereby room…" and whereby_sim.meetings() == []
    assert slack_sim.posts(url) == []

    stack.drain()
    [meeting] = whereby_sim.meetings()
    room, host = slack_sim.posts(url)
    assert room["response_type"] == "in_channel"
    assert "*Sprint review*" in room["text"] and meeting["roomUrl"] in room["text"]
    assert meeting["hostRoomUrl"] not in room["text"]
    assert host["response_type"] == "ephemeral" and meeting["hostRoomUrl"] in host["text"]


def test_a_job_run_twice_or_redelivered_after_the_dedup_window_makes_one_room_and_posts_once(
    stack, whereby_sim, slack_sim
):
    import boto3

    sqs = boto3.client("sqs", region_name="eu-west-1")
    queue = stack.stack.refs["JobsQueue"]
    command(stack, slack_sim, "Planning")
    [message] = sqs.receive_message(QueueUrl=queue, AttributeNames=["All"])["Messages"]
    # The same job again, as SQS redelivers it after its five-minute deduplication window (another dedup id).
    sqs.send_message(
        QueueUrl=queue, MessageBody=message["Body"], MessageGroupId="again", MessageDeduplicationId="again"
    )
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    stack.drain()
    stack.drain()
    assert len(whereby_sim.meetings()) == 1
    assert [post["response_type"] for post in slack_sim.posts()] == ["in_channel", "ephemeral"]


def test_a_lost_response_url_answer_is_retried_and_still_one_room(stack, whereby_sim, slack_sim):
    command(stack, slack_sim, "Retro")
    # Slack took the channel post and its one quick retry (slack_sdk's), and both answers were lost: the job fails
    # and SQS runs it again.
    slack_sim.fail_next(2, status=0, lost_answer=True)
    result = stack.drain()
    assert result.failed == 1
    assert len(whereby_sim.meetings()) == 1
    kinds = [post["response_type"] for post in slack_sim.posts()]
    assert kinds.count("ephemeral") == 1  # the host link once; the channel post may show twice, the room is one


def test_a_command_too_old_for_its_response_url_makes_no_room(stack, whereby_sim, slack_sim):
    from bridge import runtime
    from bridge.chat import slack_worker
    from bridge.chat.slack import slack_job

    command(stack, slack_sim, "Late")
    import boto3

    sqs = boto3.client("sqs", region_name="eu-west-1")
    [message] = sqs.receive_message(QueueUrl=stack.stack.refs["JobsQueue"])["Messages"]
    job = slack_job(message["Body"])
    later = lambda: replace(runtime.slack_worker_ports(), clock=lambda: job.received_at + 26 * 60)  # noqa: E731
    assert slack_worker.run_job(job, later) == "too late: no room made"
    assert whereby_sim.requests_seen() == [] and slack_sim.posts() == []


# The same behaviour as Mattermost --------------------------------------------------------------------------------
words = st.sampled_from(["Demo", "help", "list", "end", "start", "45m", "2h", "99999h", "1.5h", "@bob", "Q3", "x"])


@given(st.lists(words, max_size=5))
def test_the_grammar_reads_the_same_text_the_same_way_on_both_platforms(typed):
    from bridge.chat.grammar import Invalid, Limits, literal, parse
    from bridge.chat.slack import slack_literal

    text = " ".join(typed)
    limits = Limits(60, 480)
    on_mattermost = parse(text, limits, "/whereby", {"bob"})
    on_slack = parse(text, limits, "/whereby", {"bob"}, quote=slack_literal)
    assert type(on_mattermost) is type(on_slack)
    if isinstance(on_slack, Invalid):
        # The same sentence; only the way the typed word is quoted differs.
        assert on_slack.problem.split("”", 1)[1] == on_mattermost.problem.split("”", 1)[1]
        assert literal("x") == slack_literal("x") == "x"
    else:
        assert on_slack == on_mattermost


def test_a_reference_that_names_no_room_is_quoted_back_in_slacks_own_escapes():
    from bridge.chat.grammar import Invalid, Limits, parse
    from bridge.chat.slack import slack_literal

    refused = parse("end <!here>*sprint*", Limits(60, 480), "/whereby", quote=slack_literal)
    assert isinstance(refused, Invalid)
    # Slack shows &lt; as <: no mention forms, and no backslash of Mattermost's escapes shows up.
    assert refused.problem.startswith("“&lt;!here&gt;*sprint*” is not the name or link of a room")
    assert "\\" not in refused.problem


def test_help_and_an_empty_list_say_the_same_on_both_platforms_in_each_ones_markup(stack, slack_sim):
    from bridge.chat.grammar import Limits
    from bridge.chat.mattermost import VOICE as MATTERMOST
    from bridge.chat.rooms import help_text
    from bridge.chat.slack import VOICE as SLACK

    answer, _ = command(stack, slack_sim, "help")
    assert answer["text"] == help_text("/whereby", Limits(60, 480), SLACK)
    assert answer["text"] == help_text("/whereby", Limits(60, 480), MATTERMOST).replace("**/whereby**", "*/whereby*")
    answer, _ = command(stack, slack_sim, "list")
    assert answer["text"].startswith("No Whereby room is open in this channel.")
    assert queued(stack) == 0


def test_a_duration_over_the_limit_is_refused_at_once_and_nothing_is_queued(stack, whereby_sim, slack_sim):
    answer, _ = command(stack, slack_sim, "Offsite 9h")
    assert answer["response_type"] == "ephemeral"
    assert "at most 8 h" in answer["text"] and "Nothing was changed" in answer["text"]
    assert queued(stack) == 0


def test_only_the_creator_can_end_a_slack_room(stack, whereby_sim, slack_sim):
    command(stack, slack_sim, "Board")
    stack.drain()
    [meeting] = whereby_sim.meetings()
    name = meeting["roomName"].lstrip("/")

    answer, url = command(stack, slack_sim, f"end {name}", user_id="U0STRANGER1")
    assert answer["text"] == "Ending the room…"
    stack.drain()
    [refusal] = slack_sim.posts(url)
    assert refusal == {"response_type": "ephemeral", "text": "Only the person who started *Board* can end it."}
    assert len(whereby_sim.meetings()) == 1

    _, url = command(stack, slack_sim, f"end {name}")
    stack.drain()
    [ended] = slack_sim.posts(url)
    assert ended["response_type"] == "in_channel" and "has ended" in ended["text"]
    assert whereby_sim.meetings() == []


def test_typed_text_forms_no_mention_link_or_channel_ping_in_the_channel_post(stack, whereby_sim, slack_sim):
    typed = "<!channel> Launch @here <https://evil.example/x|click> & <@U07QX2Y9LMN|maria> evil.example"
    _, url = command(stack, slack_sim, typed)
    stack.drain()
    room, host = slack_sim.posts(url)
    text = room["text"]
    assert "<!" not in text and "https://evil" not in text and "<https://evil" not in text
    assert "@here" not in text and "@channel" not in text  # channel-wide mentions leave the topic
    assert "&amp;" in text and f"https:{ZWJ}//evil.{ZWJ}example/x" in text  # the address, shown, not linked
    # Maria, whom Slack resolved, is invited by her id; the channel-wide mentions only shown to the caller, inert.
    assert "Invited: <@U07QX2Y9LMN>" in text
    assert f"Not invited: @{ZWJ}channel, @{ZWJ}here." in host["text"] and "<!" not in host["text"]


def test_an_unsigned_ssl_check_gets_an_empty_200_and_nothing_is_done(stack):
    response = stack.request(
        "POST",
        "/slack/command",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=b"ssl_check=1&token=legacy",
    )
    assert (response["statusCode"], response["body"]) == (200, "")
    assert queued(stack) == 0


def test_no_slack_secret_value_reaches_a_log_line_or_an_answer(stack, whereby_sim, slack_sim, log_lines):
    answer, _ = command(stack, slack_sim, "Secretive")
    stack.drain()
    seen = json.dumps(answer) + json.dumps(slack_sim.posts()) + "\n".join(log_lines())
    assert SECRET["slack_signing_secret"][SAMPLE_TEAM] not in seen
