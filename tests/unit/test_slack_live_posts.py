"""Slack posts that follow the meeting: the bot's post, its End button, and the meeting's end told once.

The Slack simulator sends signed commands and button clicks over HTTP to the local gateway in front of the
template's routes, serves the bot's Web API and keeps the channel's messages with their edits; the worker drains the
real (moto) FIFO queue; Whereby is its simulator, which delivers signed session events (twice when asked).
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import replace

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devstack.gateway import Gateway
from tests.conftest import SECRET
from tests.unit.test_dashboard import printed
from tests.unit.test_whereby_events import SIGNING_SECRET, a_meeting, items

TEAM = "T0A1B2C3D4E"  # the slack_sim fixture's workspace, bound to its signing secret in the stack's SlackSecret
CHANNEL = "C0LOCALCHAN"  # the simulator's default channel
OTHER_CHANNEL = "C0OTHERCHAN"
CREATOR = "U0LOCALUSER"  # the simulator's default user
STRANGER = "U0STRANGER1"
ENDED_LINE = "Meeting ended \u00b7 35 min \u00b7 2 people"  # a_meeting: Ana and Client, 35 minutes


@pytest.fixture
def gateway(stack, whereby_sim):
    """The stack's routes on a real port: Slack's commands and clicks arrive there, and Whereby's signed events
    (each delivered twice, as Whereby's at-least-once delivery may)."""
    with Gateway(stack, port=0, log=None) as running:
        whereby_sim.configure_webhook(f"{running.url}/whereby/events", SIGNING_SECRET, deliver_twice=True)
        yield running


def with_slack_bot(stack, slack_sim, monkeypatch) -> None:
    """The workspace's bot token in the ChatBotSecret, and the Web API pointed at the simulator."""
    from bridge import runtime

    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    secrets.put_secret_value(
        SecretId=stack.stack.refs["ChatBotSecret"],
        SecretString=json.dumps({"slack_bot_tokens": {TEAM: slack_sim.bot_token}}),
    )
    monkeypatch.setenv("SLACK_API_URL", slack_sim.api_url)
    runtime.reset()


@pytest.fixture
def bot(stack, slack_sim, monkeypatch):
    with_slack_bot(stack, slack_sim, monkeypatch)
    return slack_sim.bot_token


def start(slack_sim, gateway, text: str, **fields):
    answer = slack_sim.command(f"{gateway.url}/slack/command", text, **fields)
    assert answer.status == 200
    return answer


def click(slack_sim, gateway, ts: str, action_id: str = "end_room", **fields):
    return slack_sim.click(f"{gateway.url}/slack/action", ts, action_id, **fields)


def buttons(message: dict) -> dict[str, dict]:
    return {
        element["action_id"]: element
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    }


def rooms(stack) -> list[dict]:
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    return [item for item in table.scan()["Items"] if item["sk"] == "ROOM"]  # inspection only


def room_of(whereby_sim, topic_slug: str) -> str:
    [name] = [m["roomName"].lstrip("/") for m in whereby_sim.meetings() if m["roomName"].startswith(f"/{topic_slug}")]
    return name


def queued_jobs(stack) -> list[str]:
    sqs = boto3.client("sqs", region_name="eu-west-1")
    messages = sqs.receive_message(QueueUrl=stack.stack.refs["JobsQueue"], MaxNumberOfMessages=10)
    return [m["Body"] for m in messages.get("Messages", [])]


# The room's post -------------------------------------------------------------------------------------------------
def test_with_a_bot_the_room_is_the_bots_post_and_the_meetings_end_edits_it_once(
    stack, whereby_sim, slack_sim, gateway, bot, log_lines
):
    answer = start(slack_sim, gateway, "Sprint review 45m")
    assert stack.drain().failed == 0
    [meeting] = whereby_sim.meetings()
    [post] = slack_sim.messages(CHANNEL)
    assert post["by"] == "bot" and "*Sprint review*" in post["text"] and meeting["roomUrl"] in post["text"]
    assert meeting["hostRoomUrl"] not in json.dumps(post)
    assert buttons(post)["join_room"]["url"] == meeting["roomUrl"]
    assert buttons(post)["end_room"]["style"] == "danger"
    [host] = slack_sim.posts(answer.response_url)  # the channel's post is the bot's: only the host link goes here
    assert host["response_type"] == "ephemeral" and meeting["hostRoomUrl"] in host["text"]
    [room] = rooms(stack)
    assert room["post_id"] == post["ts"]

    a_meeting(whereby_sim, room_of(whereby_sim, "sprint-review"))
    assert stack.drain().failed == 0
    [post] = slack_sim.messages(CHANNEL)
    assert [edit["text"] for edit in post["edits"]] == [f"*Sprint review* \u00b7 {ENDED_LINE}"]
    assert buttons(post) == {}
    assert len(slack_sim.posts(answer.response_url)) == 1  # no follow-up beside the edit
    assert not any(bot in line for line in log_lines())


def test_a_session_end_delivered_twice_and_again_after_the_dedup_window_edits_the_post_once(
    stack, whereby_sim, slack_sim, gateway, bot
):
    from bridge import runtime
    from bridge.whereby.events import EventMessage, event_from

    start(slack_sim, gateway, "Retro")
    stack.drain()
    a_meeting(whereby_sim, room_of(whereby_sim, "retro"))
    assert stack.drain().failed == 0
    for event in whereby_sim.events():  # copies arriving after SQS's five-minute deduplication
        late = EventMessage(event_from(event))
        runtime.job_queue().send_message(late.to_json(), late.group_id, late.dedup_id + "-late")
    assert stack.drain().failed == 0
    [post] = slack_sim.messages(CHANNEL)
    assert len(post["edits"]) == 1


def test_the_meetings_end_edits_its_own_rooms_post_and_never_another(stack, whereby_sim, slack_sim, gateway, bot):
    start(slack_sim, gateway, "Alpha")
    start(slack_sim, gateway, "Beta", user_id=STRANGER)
    stack.drain()
    a_meeting(whereby_sim, room_of(whereby_sim, "beta"))
    assert stack.drain().failed == 0
    alpha, beta = slack_sim.messages(CHANNEL)
    assert "*Alpha*" in alpha["text"] and alpha["edits"] == []
    assert [edit["text"] for edit in beta["edits"]] == [f"*Beta* \u00b7 {ENDED_LINE}"]


def test_without_a_bot_the_meetings_end_is_one_follow_up_through_response_url(stack, whereby_sim, slack_sim, gateway):
    answer = start(slack_sim, gateway, "Standup")
    stack.drain()
    room, host = slack_sim.posts(answer.response_url)
    assert room["response_type"] == "in_channel" and host["response_type"] == "ephemeral"
    # Today's post, unchanged, now with the End button too (it works through the click's own response_url).
    assert set(buttons(room)) == {"join_room", "end_room"}

    a_meeting(whereby_sim, room_of(whereby_sim, "standup"))
    assert stack.drain().failed == 0
    *_, follow_up = slack_sim.posts(answer.response_url)
    assert len(slack_sim.posts(answer.response_url)) == 3
    assert follow_up == {"response_type": "in_channel", "replace_original": False, "text": f"*Standup* · {ENDED_LINE}"}


def test_without_a_bot_a_meeting_ending_after_the_response_url_closed_is_not_told(
    stack, whereby_sim, slack_sim, gateway
):
    from bridge import runtime
    from bridge.chat import slack_worker
    from bridge.chat.slack import slack_job

    answer = start(slack_sim, gateway, "Long workshop 2h")
    [body] = queued_jobs(stack)
    # The room was made 31 minutes ago by the worker's clock: Slack's response_url takes no post after 30.
    earlier = lambda: replace(runtime.slack_worker_ports(), clock=lambda: time.time() - 31 * 60)  # noqa: E731
    assert slack_worker.run_job(slack_job(body), earlier) == "room made and posted"
    a_meeting(whereby_sim, room_of(whereby_sim, "long-workshop"))
    assert stack.drain().failed == 0
    assert len(slack_sim.posts(answer.response_url)) == 2  # the room and the host link, nothing after
    [session] = items(stack, "SESSION#")
    assert session["note_posted"] is True  # told as far as it can be: never tried again


@pytest.mark.parametrize(
    ("setup", "hint"),
    [
        (lambda sim, secrets, ref: sim.private_channel(CHANNEL), "add the app to the channel"),
        (
            lambda sim, secrets, ref: secrets.put_secret_value(
                SecretId=ref, SecretString=json.dumps({"slack_bot_tokens": {TEAM: "xoxb-revoked-token"}})
            ),
            "Slack said `invalid_auth`",
        ),
    ],
    ids=["private-channel-without-the-bot", "revoked-token"],
)
def test_a_bot_that_cannot_post_falls_back_to_the_response_url_post_and_tells_the_caller_why(
    stack, whereby_sim, slack_sim, gateway, bot, capsys, setup, hint
):
    setup(slack_sim, boto3.client("secretsmanager", region_name="eu-west-1"), stack.stack.refs["ChatBotSecret"])
    capsys.readouterr()
    answer = start(slack_sim, gateway, "Private sync")
    assert stack.drain().failed == 0
    assert len(whereby_sim.meetings()) == 1
    room, host = slack_sim.posts(answer.response_url)
    assert room["response_type"] == "in_channel" and set(buttons(room)) == {"join_room", "end_room"}
    assert hint in host["text"]
    [post] = slack_sim.messages(CHANNEL)
    assert post["by"] == "response_url"
    assert "post_id" not in rooms(stack)[0]
    assert "ChatBotFallbacks" in {name for _, name, _ in printed(capsys.readouterr().out)}


def test_slack_answering_503_fails_the_job_and_the_retry_posts_the_room_once(
    stack, whereby_sim, slack_sim, gateway, bot
):
    answer = start(slack_sim, gateway, "Planning")
    slack_sim.fail_next(1, status=503, after=1)  # chat.postMessage, after the caller's users.info
    drained = stack.drain()
    assert (drained.failed, drained.processed) == (1, 1)  # the job failed, and its retry went through
    assert len(whereby_sim.meetings()) == 1
    assert [m["by"] for m in slack_sim.messages(CHANNEL)] == ["bot"]
    assert [p["response_type"] for p in slack_sim.posts(answer.response_url)] == ["ephemeral"]


# The End button --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_bot", [True, False], ids=["bot-post", "response-url-post"])
def test_the_creator_ends_the_room_with_the_end_button_and_the_post_says_so_without_buttons(
    stack, whereby_sim, slack_sim, gateway, request, with_bot
):
    if with_bot:
        request.getfixturevalue("bot")
    start(slack_sim, gateway, "Board")
    stack.drain()
    [post] = slack_sim.messages(CHANNEL)

    clicked = click(slack_sim, gateway, post["ts"])
    assert (clicked.status, clicked.body) == (200, "")
    assert stack.drain().failed == 0
    assert whereby_sim.meetings() == []
    [post] = slack_sim.messages(CHANNEL)
    [ended] = post["edits"]
    assert ended["text"] == ":white_check_mark: The Whereby room *Board* has ended; its link no longer works."
    assert buttons(post) == {}
    sent = slack_sim.posts(clicked.response_url)
    assert sent == ([] if with_bot else [{"replace_original": True, **ended}])  # no second message either way
    assert rooms(stack)[0]["state"] == "deleted"


def test_a_stranger_clicking_end_gets_the_refusal_only_they_see_and_the_room_lives(
    stack, whereby_sim, slack_sim, gateway, bot
):
    start(slack_sim, gateway, "Board")
    stack.drain()
    [post] = slack_sim.messages(CHANNEL)
    clicked = click(slack_sim, gateway, post["ts"], user_id=STRANGER)
    assert clicked.status == 200
    assert stack.drain().failed == 0
    assert slack_sim.posts(clicked.response_url) == [
        {
            "response_type": "ephemeral",
            "replace_original": False,
            "text": "Only the person who started *Board* can end it.",
        }
    ]
    assert len(whereby_sim.meetings()) == 1
    assert slack_sim.messages(CHANNEL)[0]["edits"] == []


def test_a_join_click_is_acknowledged_with_an_empty_200_and_nothing_is_queued(stack, slack_sim, gateway, bot):
    start(slack_sim, gateway, "Demo")
    stack.drain()
    [post] = slack_sim.messages(CHANNEL)
    clicked = click(slack_sim, gateway, post["ts"], "join_room")
    assert (clicked.status, clicked.body) == (200, "")
    assert stack.queue_depth("JobsQueue") == 0


def test_a_forged_end_value_is_refused_with_403_and_nothing_changes(stack, whereby_sim, slack_sim, gateway, bot):
    start(slack_sim, gateway, "Board")
    stack.drain()
    [post] = slack_sim.messages(CHANNEL)
    key, sig = buttons(post)["end_room"]["value"].split(".")
    forged = {
        "made-up signature": f"{key}.{'0' * 64}",
        "one character changed": f"{key}.{sig[:-1]}{'0' if sig[-1] != '0' else '1'}",
        "signed with another key": f"{key}.{hmac.new(b'x' * 48, f'end|{key}|x'.encode(), 'sha256').hexdigest()}",
        "no signature": f"{key}.",
        "no value": "",
    }
    statuses = {why: click(slack_sim, gateway, post["ts"], value=value).status for why, value in forged.items()}
    assert statuses == dict.fromkeys(forged, 403)
    assert stack.queue_depth("JobsQueue") == 0
    assert len(whereby_sim.meetings()) == 1 and slack_sim.messages(CHANNEL)[0]["edits"] == []


def test_a_valid_end_value_replayed_for_another_room_or_from_another_channel_is_refused(
    stack, whereby_sim, slack_sim, gateway, bot
):
    start(slack_sim, gateway, "Alpha")
    start(slack_sim, gateway, "Beta", channel_id=OTHER_CHANNEL)
    stack.drain()
    [alpha] = slack_sim.messages(CHANNEL)
    [beta] = slack_sim.messages(OTHER_CHANNEL)
    alpha_value, beta_value = buttons(alpha)["end_room"]["value"], buttons(beta)["end_room"]["value"]
    beta_key = beta_value.split(".")[0]

    replays = [
        click(slack_sim, gateway, beta["ts"], value=alpha_value),  # Alpha's button copied into the other channel
        click(slack_sim, gateway, alpha["ts"], channel_id=OTHER_CHANNEL),  # Alpha's message, clicked from elsewhere
        click(slack_sim, gateway, alpha["ts"], value=f"{beta_key}.{alpha_value.split('.')[1]}"),  # key swapped
    ]
    assert [answer.status for answer in replays] == [403, 403, 403]
    assert stack.queue_depth("JobsQueue") == 0
    assert len(whereby_sim.meetings()) == 2
    assert [m["edits"] for m in slack_sim.messages()] == [[], []]


def test_an_end_job_run_again_rewrites_the_post_once_and_deletes_once(stack, whereby_sim, slack_sim, gateway, bot):
    start(slack_sim, gateway, "Board")
    stack.drain()
    [post] = slack_sim.messages(CHANNEL)
    clicked = click(slack_sim, gateway, post["ts"])
    sqs = boto3.client("sqs", region_name="eu-west-1")
    queue = stack.stack.refs["JobsQueue"]
    [message] = sqs.receive_message(QueueUrl=queue)["Messages"]
    # The same job again, as SQS redelivers it after its five-minute deduplication window.
    sqs.send_message(
        QueueUrl=queue, MessageBody=message["Body"], MessageGroupId="again", MessageDeduplicationId="again"
    )
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    assert stack.drain().failed == 0
    assert stack.drain().failed == 0
    assert len(slack_sim.messages(CHANNEL)[0]["edits"]) == 1
    deletes = [r for r in whereby_sim.requests_seen() if r["method"] == "DELETE"]
    assert len(deletes) == 1
    assert slack_sim.posts(clicked.response_url) == []


def test_ending_with_the_command_also_rewrites_the_bots_post(stack, whereby_sim, slack_sim, gateway, bot):
    start(slack_sim, gateway, "Board")
    stack.drain()
    ended = start(slack_sim, gateway, "end")
    assert stack.drain().failed == 0
    assert whereby_sim.meetings() == []
    post, said = slack_sim.messages(CHANNEL)  # the bot's post, and the command's answer to the channel
    assert [edit["text"] for edit in post["edits"]] == [
        ":white_check_mark: The Whereby room *Board* has ended; its link no longer works."
    ]
    assert buttons(post) == {}
    assert said["by"] == "response_url" and "has ended" in said["text"]
    assert [p["response_type"] for p in slack_sim.posts(ended.response_url)] == ["in_channel"]


def test_a_click_that_is_unsigned_or_not_a_block_actions_payload_is_refused_and_nothing_is_queued(
    stack, slack_sim, gateway
):
    import requests

    from devstack.slack_sim import signed

    url = f"{gateway.url}/slack/action"
    secret = SECRET["slack_signing_secret"][TEAM]
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    def send(body: bytes, key: str = secret) -> int:
        return requests.post(
            url, data=body, headers={**form, **signed(body, key, int(time.time()))}, timeout=10
        ).status_code

    assert send(b"payload=%7B%7D", "0123456789abcdef0123456789abcdef") == 401
    assert send(b"payload=not-json") == 400
    assert send(b"nothing=here") == 400
    assert send(b"payload=" + json.dumps({"type": "view_submission"}).encode()) == 400
    assert stack.queue_depth("JobsQueue") == 0


# The duplicate guard ---------------------------------------------------------------------------------------------
def test_a_second_whereby_with_no_topic_within_30_seconds_gets_the_first_rooms_link_and_no_room(
    stack, whereby_sim, slack_sim, gateway, bot
):
    from bridge import runtime
    from bridge.chat import slack_worker
    from bridge.chat.slack import slack_job

    start(slack_sim, gateway, "")
    stack.drain()
    [meeting] = whereby_sim.meetings()
    second = start(slack_sim, gateway, "", user_id=STRANGER)
    assert stack.drain().failed == 0
    [answer] = slack_sim.posts(second.response_url)
    assert answer["response_type"] == "ephemeral"
    assert answer["text"].startswith("A room was started in this channel")
    assert f"<{meeting['roomUrl']}|join it>" in answer["text"] and meeting["hostRoomUrl"] not in answer["text"]
    assert len(whereby_sim.meetings()) == 1 and len(slack_sim.messages(CHANNEL)) == 1

    # 31 seconds later by the jobs' clock, a third one is a meeting of its own.
    start(slack_sim, gateway, "", user_id=STRANGER)
    [body] = queued_jobs(stack)
    later = lambda: replace(runtime.slack_worker_ports(), clock=lambda: time.time() + 31)  # noqa: E731
    assert slack_worker.run_job(slack_job(body), later) == "room made and posted"
    assert len(whereby_sim.meetings()) == 2


# Whatever a signed click carries ---------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
PAYLOAD_KEYS = ["type", "team", "user", "channel", "container", "actions", "trigger_id", "response_url"]
ROUTE_SECRET = "route-test-signing-secret"


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.dictionaries(st.sampled_from(PAYLOAD_KEYS), JSON, max_size=8),
        st.fixed_dictionaries(
            {
                "type": st.just("block_actions"),
                "team": st.fixed_dictionaries({"id": st.sampled_from([TEAM, "T0OTHERTEAM", ""])}),
                "user": st.fixed_dictionaries({"id": st.sampled_from([CREATOR, "bad id", 7])}),
                "channel": st.one_of(st.none(), st.fixed_dictionaries({"id": st.sampled_from([CHANNEL, ""])})),
                "actions": st.lists(
                    st.fixed_dictionaries(
                        {"action_id": st.sampled_from(["end_room", "join_room", "x"]), "value": JSON}
                    ),
                    max_size=2,
                ),
                "trigger_id": st.sampled_from(["1.2.abc", "", None]),
                "response_url": st.sampled_from(["https://hooks.slack.com/actions/T/1/x", "ftp://x", None]),
            }
        ),
        JSON,
    )
)
def test_a_signed_click_of_any_shape_gets_200_400_or_403_and_only_a_signed_end_value_is_queued(payload):
    from urllib.parse import urlencode

    from bridge.chat import slack_action
    from bridge.chat.slack import SignatureGate
    from bridge.core.http_api import ApiRequest
    from devstack.lambda_events import http_api_event
    from devstack.slack_sim import signed

    queued: list = []
    runtime = slack_action.ActionRuntime(
        gate=SignatureGate(lambda fresh: {TEAM: (ROUTE_SECRET,)}),
        keys=lambda fresh: ("k" * 48,),
        enqueue=queued.append,
    )
    body = urlencode({"payload": json.dumps(payload)}).encode()
    headers = {"content-type": "application/x-www-form-urlencoded", **signed(body, ROUTE_SECRET, int(time.time()))}
    answer = slack_action.answer(
        ApiRequest.of(http_api_event("POST", "/slack/action", headers=headers, body=body)), runtime
    )
    assert answer["statusCode"] in (200, 400, 403)
    assert queued == []  # nothing random carries a value signed with the key
