"""A /whereby room's Mattermost post follows the meeting: the bot's post is edited once when a session ends (or,
without a bot, one follow-up goes through the command's response_url), and its End button ends the room for its
creator only.

Mattermost is the simulator over real HTTP (its bot API, the commands' response_url, and the button clicks its
server relays to the stack's gateway); Whereby is its simulator, delivering signed session events; AWS is moto.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.gateway import Gateway
from tests.conftest import MATTERMOST_BOT_TOKEN, SECRET
from tests.unit.test_mattermost_command import HEADERS, OTHER_USER, form, run_at, table_items
from tests.unit.test_whereby_events import SIGNING_SECRET, a_meeting

TEAM = "wx4zz8t4ttgmtxqiwfohijayzc"  # the WEATHER sample's team, channel and user (alan)
CHANNEL = "fukxanjgjbnp7ng383at53k1sy"
CREATOR = "erj6qck3rfgtujs86w5r6rckzh"
PRIVATE_CHANNEL = "pr1vate0channel00000000000"
OTHER_CHANNEL = "0therchanne100000000000000"
ENDED_LINE = "Meeting ended \u00b7 35 min \u00b7 2 people"  # what a_meeting holds: Ana and Client, 35 min


# helpers ---------------------------------------------------------------------------------------------------------
def with_bot(stack, mattermost_sim) -> None:
    """ChatBotSecret holds the simulator's address and the bot's token."""
    value = {"mattermost_url": mattermost_sim.root_url, "mattermost_bot_token": MATTERMOST_BOT_TOKEN}
    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    secrets.put_secret_value(SecretId=stack.stack.refs["ChatBotSecret"], SecretString=json.dumps(value))


def whereby(stack, text: str, *, channel: str = CHANNEL, user: str = CREATOR, response_url: str = "") -> dict:
    body = form(text=text, channel_id=channel, user_id=user, response_url=response_url)
    answer = stack.request("POST", "/mattermost/command", headers=HEADERS, body=body.encode())
    assert answer["statusCode"] == 200
    return json.loads(answer["body"])


def rooms(stack) -> dict[str, dict]:
    """The room records by their room URL."""
    return {item["room_url"]: item for item in table_items(stack) if item.get("room_url")}


def room_of(stack, whereby_sim, index: int = 0) -> dict:
    return rooms(stack)[whereby_sim.meetings()[index]["roomUrl"]]


def end_button(post: dict) -> dict:
    [attachment] = post["props"]["attachments"]
    [button] = attachment["actions"]
    return button


def metrics_printed(out: str) -> set[str]:
    """The metric names the EMF records on stdout carry."""
    names = set()
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                names |= {metric["Name"] for metric in directive["Metrics"]}
    return names


def late_copies(whereby_sim) -> None:
    """Every event once more, as a copy arriving after SQS's five-minute deduplication window."""
    from bridge import runtime
    from bridge.whereby.events import EventMessage, event_from

    for event in whereby_sim.events():
        late = EventMessage(event_from(event))
        runtime.job_queue().send_message(late.to_json(), late.group_id, late.dedup_id + "-late")


@pytest.fixture
def gateway(stack, whereby_sim, monkeypatch):
    """The stack's routes on a real port: Whereby's events and Mattermost's button clicks arrive there."""
    from bridge import runtime

    with Gateway(stack, port=0, log=None) as running:
        whereby_sim.configure_webhook(f"{running.url}/whereby/events", SIGNING_SECRET)
        monkeypatch.setenv("API_BASE_URL", running.url)  # the buttons point at this gateway
        runtime.reset()
        yield running


@pytest.fixture
def bot(stack, mattermost_sim):
    """A bot that is a member of the command's channel."""
    with_bot(stack, mattermost_sim)
    mattermost_sim.add_member(CHANNEL)
    return mattermost_sim


# the post --------------------------------------------------------------------------------------------------------
def test_with_a_bot_the_room_is_the_bots_post_and_the_caller_alone_gets_the_host_link(stack, whereby_sim, bot):
    answer = whereby(stack, "Standup 30m")

    [meeting] = whereby_sim.meetings()
    assert answer["response_type"] == "ephemeral" and "extra_responses" not in answer
    assert meeting["hostRoomUrl"] in answer["text"] and "end standup-" in answer["text"]
    [post] = bot.posts(CHANNEL)
    assert post["user_id"] == "b0tuser0000000000000000000"
    assert meeting["roomUrl"] in post["message"] and meeting["hostRoomUrl"] not in json.dumps(post)
    assert {k: v for k, v in post["props"].items() if k != "attachments"} == {
        "meeting_provider": "whereby",
        "meeting_link": meeting["roomUrl"],
        "meeting_topic": "Standup",
        "meeting_creator_username": "alan",
        "meeting_status": "STARTED",
    }
    button = end_button(post)
    assert (button["id"], button["name"], button["style"]) == ("endroom", "End meeting", "danger")
    assert button["integration"]["url"] == f"{stack.environment()['API_BASE_URL']}/mattermost/action"
    assert room_of(stack, whereby_sim)["post_id"] == post["id"]
    [request] = [r for r in bot.requests_seen() if r["method"] == "POST"]
    assert request["query"] == {"set_online": "false"}
    assert request["headers"]["Authorization"] == f"Bearer {MATTERMOST_BOT_TOKEN}"


def test_a_bot_not_in_a_private_channel_falls_back_to_the_commands_own_post_and_says_how_to_fix_it(
    stack, whereby_sim, mattermost_sim, capsys
):
    with_bot(stack, mattermost_sim)  # a member of no channel
    capsys.readouterr()
    answer = whereby(stack, "Board 30m", channel=PRIVATE_CHANNEL)

    [meeting] = whereby_sim.meetings()
    assert answer["response_type"] == "in_channel" and meeting["roomUrl"] in answer["text"]
    assert answer["props"]["meeting_status"] == "STARTED"
    assert answer["attachments"][0]["actions"][0]["id"] == "endroom"
    [host] = answer["extra_responses"]
    assert meeting["hostRoomUrl"] in host["text"]
    assert "not a member of this channel" in host["text"] and "add the bot to the channel" in host["text"]
    assert mattermost_sim.posts() == []
    assert [r["status"] for r in mattermost_sim.requests_seen()] == [403]
    assert "post_id" not in room_of(stack, whereby_sim)
    assert "ChatBotFallbacks" in metrics_printed(capsys.readouterr().out)


def test_mattermost_not_answering_the_bot_still_gives_the_room_through_the_commands_answer(stack, whereby_sim, bot):
    bot.fail_next(status=503)
    answer = whereby(stack, "Retro 30m")
    assert answer["response_type"] == "in_channel" and whereby_sim.meetings()[0]["roomUrl"] in answer["text"]
    assert "could not post here just now" in answer["extra_responses"][0]["text"]
    assert bot.posts() == [] and "post_id" not in room_of(stack, whereby_sim)


def test_the_commands_response_url_is_kept_only_when_a_follow_up_may_go_there(stack, whereby_sim, mattermost_sim):
    url = mattermost_sim.new_response_url(CHANNEL, CREATOR)
    for sent in (url, "http://10.0.0.5:8065/hooks/commands/zozc1xwxybdedeyz8djwjpngny", "javascript:alert(1)"):
        assert whereby(stack, f"Room {len(rooms(stack))} 30m", response_url=sent)["response_type"] == "in_channel"
    kept = [room_of(stack, whereby_sim, i).get("response_url", "") for i in range(3)]
    assert kept == [url, "", ""]


def test_a_second_untitled_whereby_within_30_seconds_gives_the_first_room_and_makes_no_second(stack, whereby_sim):
    now = time.time()
    first = run_at(now, "")
    [meeting] = whereby_sim.meetings()
    assert first["response_type"] == "in_channel"

    again = run_at(now + 12, "", user_id=OTHER_USER)
    assert again["response_type"] == "ephemeral"
    assert "12 seconds ago" in again["text"] and meeting["roomUrl"] in again["text"]
    assert meeting["hostRoomUrl"] not in again["text"]  # not the caller's room: no host link
    assert len(whereby_sim.meetings()) == 1

    assert run_at(now + 20, "Design review")["response_type"] == "in_channel"  # a topic: another meeting
    assert len(whereby_sim.meetings()) == 2
    assert run_at(now + 31, "")["response_type"] == "in_channel"  # the first one is 31 s old
    assert len(whereby_sim.meetings()) == 3


# the meeting's end -------------------------------------------------------------------------------------------------
def test_the_bots_post_is_edited_when_the_session_ends(stack, whereby_sim, bot, gateway):
    whereby(stack, "Standup 30m")
    [post] = bot.posts(CHANNEL)
    a_meeting(whereby_sim, whereby_sim.meetings()[0]["roomName"].lstrip("/"))
    assert stack.drain().failed == 0

    edited = bot.post(post["id"])
    assert edited["message"] == f":video_camera: **Standup** · {ENDED_LINE}"
    [ended] = [e for e in whereby_sim.events() if e["type"] == "room.session.ended"]
    session = ended["data"]["roomSessionId"]
    assert edited["props"]["meeting_status"] == "ENDED" and edited["props"]["meeting_session"] == session
    assert edited["props"]["meeting_link"] == post["props"]["meeting_link"]  # the other props kept
    assert edited["props"]["meeting_creator_username"] == "alan"
    assert edited["props"]["attachments"] == [
        {"fallback": f"Standup: {ENDED_LINE}", "title": "Standup", "text": ENDED_LINE}
    ]  # the End button is gone
    assert edited["props"]["meeting_end_time"] % 1000 == 0 and edited["props"]["meeting_end_time"] > 0
    assert bot.edits(post["id"]) == 1


def test_a_session_end_delivered_twice_backwards_and_late_edits_the_post_once(stack, whereby_sim, bot, gateway):
    whereby(stack, "Standup 30m")
    [post] = bot.posts(CHANNEL)
    whereby_sim.configure_webhook(f"{gateway.url}/whereby/events", SIGNING_SECRET, deliver_twice=True, hold=True)
    a_meeting(whereby_sim, whereby_sim.meetings()[0]["roomName"].lstrip("/"))
    whereby_sim.flush(reverse=True)
    assert stack.drain().failed == 0
    late_copies(whereby_sim)
    assert stack.drain().failed == 0
    assert bot.edits(post["id"]) == 1


def test_an_edit_whose_answer_was_lost_is_not_made_again_on_the_retry(stack, whereby_sim, bot, gateway):
    whereby(stack, "Standup 30m")
    [post] = bot.posts(CHANNEL)
    bot.fail_next(status=0, lost_answer=True, method="PUT")  # Mattermost edits the post; the worker never hears
    a_meeting(whereby_sim, whereby_sim.meetings()[0]["roomName"].lstrip("/"))
    drained = stack.drain()
    assert drained.failed >= 1  # the job (and those queued behind it in its group) ran again
    assert bot.edits(post["id"]) == 1
    assert bot.post(post["id"])["message"].endswith(ENDED_LINE)


def test_past_the_servers_edit_time_limit_only_the_props_are_edited(stack, whereby_sim, bot, gateway):
    bot.edit_time_limit = 0
    whereby(stack, "Standup 30m")
    [post] = bot.posts(CHANNEL)
    a_meeting(whereby_sim, whereby_sim.meetings()[0]["roomName"].lstrip("/"))
    assert stack.drain().failed == 0
    edited = bot.post(post["id"])
    assert edited["message"] == post["message"]
    assert edited["props"]["meeting_status"] == "ENDED"
    assert bot.edits(post["id"]) == 1
    assert [r["status"] for r in bot.requests_seen() if r["method"] == "PUT"] == [400, 200]


def test_a_stored_post_id_of_another_room_is_never_edited(stack, whereby_sim, bot, gateway):
    whereby(stack, "First 30m")
    whereby(stack, "Second 30m")
    first, second = (room_of(stack, whereby_sim, i) for i in range(2))
    # The first room's record names the second room's post (a record copied or restored by hand, say).
    boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"]).update_item(
        Key={"pk": first["pk"], "sk": "ROOM"},
        UpdateExpression="SET post_id = :p",
        ExpressionAttributeValues={":p": second["post_id"]},
    )
    a_meeting(whereby_sim, first["room_name"].lstrip("/"))
    assert stack.drain().failed == 0
    assert bot.edits(second["post_id"]) == 0 and bot.edits(first["post_id"]) == 0
    assert bot.post(second["post_id"])["props"]["meeting_status"] == "STARTED"


def test_without_a_bot_the_session_end_is_one_follow_up_through_the_response_url(
    stack, whereby_sim, mattermost_sim, gateway
):
    url = mattermost_sim.new_response_url(CHANNEL, CREATOR)
    answer = whereby(stack, "Standup 30m", response_url=url)
    assert answer["response_type"] == "in_channel"
    a_meeting(whereby_sim, whereby_sim.meetings()[0]["roomName"].lstrip("/"))
    assert stack.drain().failed == 0
    late_copies(whereby_sim)
    assert stack.drain().failed == 0

    assert mattermost_sim.follow_ups(url) == [
        {
            "response_type": "in_channel",
            "text": f":video_camera: **Standup** · {ENDED_LINE}",
            "skip_slack_parsing": True,
        }
    ]
    [post] = mattermost_sim.posts(CHANNEL)
    assert post["user_id"] == CREATOR  # Mattermost posts it as the command's caller


def test_without_a_bot_nothing_is_sent_once_the_response_url_has_expired(stack, whereby_sim, mattermost_sim, gateway):
    url = mattermost_sim.new_response_url(CHANNEL, CREATOR, age_seconds=31 * 60)
    assert run_at(time.time() - 31 * 60, "Standup 2h", response_url=url)["response_type"] == "in_channel"
    a_meeting(whereby_sim, whereby_sim.meetings()[0]["roomName"].lstrip("/"))
    assert stack.drain().failed == 0
    assert [e["type"] for e in whereby_sim.events()].count("room.session.ended") == 1
    assert mattermost_sim.requests_seen() == []


# the End button ----------------------------------------------------------------------------------------------------
def test_the_creator_ends_the_room_with_the_button_and_the_post_says_so_for_everyone(stack, whereby_sim, bot, gateway):
    whereby(stack, "Standup 30m")
    [post] = bot.posts(CHANNEL)
    clicked = bot.click(post["id"], user_id=CREATOR, user_name="alan", team_id=TEAM)

    assert clicked.status == 200
    assert clicked.ephemeral_text == "You ended **Standup**; its link no longer works."
    assert whereby_sim.meetings() == []
    assert room_of_url(stack, post["props"]["meeting_link"])["state"] == "deleted"
    ended = bot.post(post["id"])
    assert ended["message"] == ":white_check_mark: The Whereby room **Standup** has ended; its link no longer works."
    assert ended["props"]["meeting_status"] == "ENDED" and ended["props"]["attachments"] == []
    assert ended["props"]["meeting_link"] == post["props"]["meeting_link"]
    assert ended["props"]["meeting_topic"] == "Standup" and ended["props"]["meeting_creator_username"] == "alan"


def room_of_url(stack, room_url: str) -> dict:
    return rooms(stack)[room_url]


def test_a_click_on_a_room_already_ended_puts_the_post_right_and_says_so(stack, whereby_sim, bot, gateway):
    whereby(stack, "Standup 30m")
    [post] = bot.posts(CHANNEL)
    name = whereby_sim.meetings()[0]["roomName"].lstrip("/")
    assert whereby(stack, f"end {name}")["response_type"] == "in_channel"  # ended with the command

    clicked = bot.click(post["id"], user_id=CREATOR, user_name="alan", team_id=TEAM)
    assert clicked.status == 200 and clicked.ephemeral_text == "**Standup** has already ended."
    assert bot.post(post["id"])["props"]["meeting_status"] == "ENDED"


def test_someone_else_clicking_end_is_told_only_the_creator_can_and_the_room_lives(stack, whereby_sim, bot, gateway):
    whereby(stack, "Standup 30m")
    [post] = bot.posts(CHANNEL)
    clicked = bot.click(post["id"], user_id=OTHER_USER, user_name="maria", team_id=TEAM)

    assert clicked.status == 200 and "update" not in clicked.body
    assert clicked.ephemeral_text == "Only the person who started **Standup** can end it."
    assert bot.ephemerals(OTHER_USER)[-1]["text"] == clicked.ephemeral_text
    assert len(whereby_sim.meetings()) == 1
    assert bot.post(post["id"]) == post


def test_without_a_bot_the_commands_own_post_is_ended_by_its_button(stack, whereby_sim, mattermost_sim, gateway):
    answer = whereby(stack, "Standup 30m")
    post_id = mattermost_sim.command_answer(answer, CHANNEL, CREATOR)
    clicked = mattermost_sim.click(post_id, user_id=CREATOR, user_name="alan", team_id=TEAM)

    assert clicked.status == 200 and whereby_sim.meetings() == []
    ended = mattermost_sim.post(post_id)
    assert "has ended" in ended["message"] and ended["props"]["meeting_status"] == "ENDED"
    assert ended["props"]["from_webhook"] == "true"  # kept by the server


def test_whereby_failing_on_a_click_keeps_the_room_and_the_post(stack, whereby_sim, bot, gateway):
    whereby(stack, "Standup 30m")
    [post] = bot.posts(CHANNEL)
    whereby_sim.fail_next(2, status=503, method="DELETE")
    clicked = bot.click(post["id"], user_id=CREATOR, user_name="alan", team_id=TEAM)
    assert clicked.status == 200 and "update" not in clicked.body
    assert (
        clicked.ephemeral_text
        == "Whereby did not answer in time. The room is still open; please try again in a minute."
    )
    assert len(whereby_sim.meetings()) == 1 and bot.post(post["id"]) == post


def test_a_forged_signature_is_refused_and_changes_nothing(stack, whereby_sim, bot, gateway):
    whereby(stack, "Standup 30m")
    [post] = bot.posts(CHANNEL)
    context = dict(end_button(bot.post(post["id"]))["integration"]["context"])
    context["sig"] = ("0" if context["sig"][0] != "0" else "1") + context["sig"][1:]
    clicked = bot.click(post["id"], user_id=CREATOR, user_name="alan", team_id=TEAM, context=context)

    assert (clicked.status, clicked.body) == (403, {"error": "this button is not valid here"})
    assert len(whereby_sim.meetings()) == 1 and bot.post(post["id"]) == post and bot.ephemerals() == []


def test_a_valid_context_replayed_for_another_room_or_from_another_channel_is_refused(stack, whereby_sim, bot, gateway):
    whereby(stack, "First 30m")
    whereby(stack, "Second 30m")
    first, second = (room_of(stack, whereby_sim, i) for i in range(2))
    context = end_button(bot.post(first["post_id"]))["integration"]["context"]

    on_another_room = {**context, "room": second["room_key"]}
    clicked = bot.click(first["post_id"], user_id=CREATOR, user_name="alan", team_id=TEAM, context=on_another_room)
    assert clicked.status == 403
    from_another_channel = bot.click(
        first["post_id"], user_id=CREATOR, user_name="alan", team_id=TEAM, channel_id=OTHER_CHANNEL
    )
    assert from_another_channel.status == 403
    assert len(whereby_sim.meetings()) == 2
    assert {room["state"] for room in rooms(stack).values()} == {"active"}


UNSIGNED = {"action": "end", "room": "zabcdefgh", "sig": "0" * 64}
BAD_CLICKS = [
    (b"not json", 400),
    (b"[]", 400),
    (b"{" * 20_000, 400),  # too large
    (json.dumps({"user_id": CREATOR, "channel_id": CHANNEL, "team_id": TEAM}).encode(), 400),  # no context
    (json.dumps({"user_id": CREATOR, "channel_id": CHANNEL, "context": UNSIGNED}).encode(), 400),  # no team
    (
        json.dumps({"user_id": CREATOR, "channel_id": CHANNEL, "team_id": TEAM, "context": {"action": "end"}}).encode(),
        400,
    ),
    (
        json.dumps(
            {"user_id": CREATOR, "channel_id": CHANNEL, "team_id": TEAM, "context": {**UNSIGNED, "action": "x"}}
        ).encode(),
        400,
    ),
    (json.dumps({"user_id": CREATOR, "channel_id": CHANNEL, "team_id": TEAM, "context": UNSIGNED}).encode(), 403),
]


def test_an_unreadable_or_unsigned_click_gets_a_4xx_and_changes_nothing(stack, whereby_sim):
    whereby(stack, "Standup 30m")
    before = table_items(stack)
    for body, status in BAD_CLICKS:
        answer = stack.request("POST", "/mattermost/action", headers={"content-type": "application/json"}, body=body)
        assert answer["statusCode"] == status, body[:80]
        assert "error" in json.loads(answer["body"])
    assert len(whereby_sim.meetings()) == 1 and table_items(stack) == before


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(st.none() | st.text(max_size=20), st.lists).map(
            lambda value: json.dumps(
                {"context": value, "user_id": CREATOR, "channel_id": CHANNEL, "team_id": TEAM}
            ).encode()
        ),
    )
)
def test_no_click_body_ever_gets_a_5xx(stack, body):
    answer = stack.request("POST", "/mattermost/action", headers={"content-type": "application/json"}, body=body)
    assert answer["statusCode"] in (400, 403)


def test_an_unreadable_bot_secret_or_button_key_still_gives_the_room_and_the_log_names_which_secret(
    stack, whereby_sim, mattermost_sim, log_lines
):
    from bridge import runtime

    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    # A bot address that is not https: the operator must fix ChatBotSecret, and the room must not wait for it.
    bad_bot = {"mattermost_url": "ftp://chat.example.com", "mattermost_bot_token": MATTERMOST_BOT_TOKEN}
    secrets.put_secret_value(SecretId=stack.stack.refs["ChatBotSecret"], SecretString=json.dumps(bad_bot))
    mattermost_sim.add_member(CHANNEL)
    answer = whereby(stack, "Standup 30m")

    [meeting] = whereby_sim.meetings()
    assert answer["response_type"] == "in_channel" and meeting["roomUrl"] in answer["text"]
    assert answer["attachments"][0]["actions"][0]["id"] == "endroom"
    assert mattermost_sim.posts() == []
    logged = "\n".join(log_lines())
    assert "the chat bot's token could not be read: the post is made without it" in logged
    assert "secret key 'mattermost_url' must be the server's https address" in logged
    assert MATTERMOST_BOT_TOKEN not in logged

    # A signing key too short to trust: the room is posted without its End button.
    secrets.put_secret_value(SecretId=stack.stack.refs["ActionKeySecret"], SecretString='{"action_signing_key": "k"}')
    runtime.reset()  # as a new container would: a secret is otherwise read again only after its cache time
    answer = whereby(stack, "Review 30m")

    assert whereby_sim.meetings()[1]["roomUrl"] in answer["text"] and "attachments" not in answer
    logged = "\n".join(log_lines())
    assert "the End button's signing key could not be read: the post is made without it" in logged
    assert "the chat bot's token could not be read" in logged  # read again by the new container


def test_no_secret_reaches_a_post_a_reply_or_a_log(stack, whereby_sim, bot, gateway, log_lines):
    whereby(stack, "Standup 30m")
    [post] = bot.posts(CHANNEL)
    clicked = bot.click(post["id"], user_id=CREATOR, user_name="alan", team_id=TEAM)
    shown = json.dumps([bot.posts(), clicked.body, bot.requests_seen()[0]["json"]]) + "\n".join(log_lines())
    for secret in (MATTERMOST_BOT_TOKEN, SECRET["action_signing_key"], SECRET["whereby_api_key"]):
        assert secret not in shown


# the simulator the tests above stand on --------------------------------------------------------------------------
def test_the_simulated_response_url_takes_five_posts_within_30_minutes_then_refuses(mattermost_sim):
    import requests

    fresh = mattermost_sim.new_response_url(CHANNEL, CREATOR)
    answers = [requests.post(fresh, json={"text": f"{n}"}, timeout=5) for n in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [400]
    assert answers[5].json()["message"] == "Invalid webhook."
    expired = mattermost_sim.new_response_url(CHANNEL, CREATOR, age_seconds=30 * 60 + 1)
    assert requests.post(expired, json={"text": "late"}, timeout=5).status_code == 404
    assert len(mattermost_sim.follow_ups(fresh)) == 5 and mattermost_sim.follow_ups(expired) == []


def test_the_simulated_bot_posts_only_where_it_is_a_member_and_a_patch_replaces_all_props(mattermost_sim):
    import requests

    api = f"{mattermost_sim.root_url}/api/v4/posts"
    auth = {"Authorization": f"Bearer {MATTERMOST_BOT_TOKEN}"}
    button = {"id": "endroom", "name": "End", "integration": {"url": "https://x.invalid", "context": {"k": "v"}}}
    body = {"channel_id": CHANNEL, "message": "hi", "props": {"a": 1, "attachments": [{"actions": [button]}]}}
    refused = requests.post(api, json=body, headers=auth, timeout=5)
    assert (refused.status_code, refused.json()["id"]) == (403, "api.context.permissions.app_error")
    assert requests.post(api, json=body, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
    mattermost_sim.add_member(CHANNEL)
    post_id = requests.post(api, json=body, headers=auth, timeout=5).json()["id"]
    shown = requests.get(f"{api}/{post_id}", headers=auth, timeout=5).json()
    assert "integration" not in shown["props"]["attachments"][0]["actions"][0]  # the context stays on the server
    requests.put(f"{api}/{post_id}/patch", json={"props": {"b": 2}}, headers=auth, timeout=5).raise_for_status()
    assert mattermost_sim.post(post_id)["props"] == {"b": 2} and mattermost_sim.post(post_id)["message"] == "hi"
    assert mattermost_sim.edits(post_id) == 1
