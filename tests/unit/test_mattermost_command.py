"""/whereby in Mattermost → a room link in the channel, the host link to the caller only; never "command failed"."""

from __future__ import annotations

import itertools
import json
import re
import time
import unicodedata
from dataclasses import replace
from datetime import datetime
from urllib.parse import parse_qsl, urlencode

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.http_api import ApiRequest
from devstack.lambda_events import http_api_event
from tests.conftest import MATTERMOST_SAMPLES, MATTERMOST_TOKENS, SECRET

TEAM_TOKENS = SECRET["mattermost_tokens"]
CURRENT, NEXT = TEAM_TOKENS["wx4zz8t4ttgmtxqiwfohijayzc"]
SAMPLES = sorted(path.stem for path in MATTERMOST_SAMPLES.glob("*.body"))
WEATHER = "01-devdocs-weather-post"  # team wx4zz8t4…, channel fukxanjg…, user erj6qck3… (alan)
EMPTY_TEXT = "03-botrepo-empty-text-post"
HEADERS = {
    "content-type": "application/x-www-form-urlencoded",
    "accept": "application/json",
    "user-agent": "Mattermost-Bot/1.1",
}
OTHER_USER = "k1x4aqdjy3813c84m771eoc9xo"
VALID_PREFIX = re.compile(r"/[a-z0-9-]{1,38}[0-9a-f-]{36}")


def sample_fields(name: str = WEATHER) -> dict[str, str]:
    return dict(parse_qsl((MATTERMOST_SAMPLES / f"{name}.body").read_text(), keep_blank_values=True))


def form(sample: str = WEATHER, *, extra: list[tuple[str, str]] = (), **fields: str) -> str:
    """A sample's fields with some replaced, encoded as Mattermost does (keys sorted, spaces as +)."""
    base = sample_fields(sample)
    merged = {**base, "token": TEAM_TOKENS[base["team_id"]][0], **fields}
    return urlencode(sorted([*merged.items(), *extra]))


def command(stack, text: str | None = None, *, sample: str = WEATHER, method: str = "POST", **fields: str):
    if text is not None:
        fields["text"] = text
    encoded = form(sample, **fields)
    if method == "GET":
        response = stack.request("GET", "/mattermost/command", query=encoded, headers={"accept": "application/json"})
    else:
        response = stack.request("POST", "/mattermost/command", headers=HEADERS, body=encoded.encode())
    return response


def answer_of(response) -> dict:
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "application/json"
    return json.loads(response["body"])


def run(stack, text: str | None = None, **kwargs) -> dict:
    return answer_of(command(stack, text, **kwargs))


def run_at(now: float, text: str, **fields: str) -> dict:
    """The command sent at ``now`` (seconds since the epoch): the route with the production ports, the command's
    clock set to ``now``."""
    from bridge import runtime
    from bridge.chat import mattermost as mattermost_command

    production = runtime.mattermost()
    at_now = replace(production, ports=lambda: replace(production.ports(), clock=lambda: now))
    event = http_api_event("POST", "/mattermost/command", headers=HEADERS, body=form(text=text, **fields).encode())
    return answer_of(mattermost_command.answer(ApiRequest.of(event), at_now))


def table_items(stack) -> list[dict]:
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    return [item for item in table.scan()["Items"] if item["pk"].startswith("ROOM#")]  # inspection only


def live_records(stack) -> list[dict]:
    return [item for item in table_items(stack) if item["state"] != "deleted"]


def assert_ephemeral(answer: dict, *phrases: str) -> None:
    assert answer["response_type"] == "ephemeral"
    assert "extra_responses" not in answer
    for phrase in phrases:
        assert phrase in answer["text"]


def assert_nothing_left(stack, whereby_sim) -> None:
    assert whereby_sim.meetings() == []
    assert live_records(stack) == []


def with_mentions(stack, text: str, *users: str, ids: list[str] | None = None, **fields: str) -> dict:
    """A command whose text Mattermost resolved: each user in ``user_mentions``, paired with an id by position."""
    ids = [f"{index:02d}x4aqdjy3813c84m771eoc9xo" for index in range(len(users))] if ids is None else ids
    extra = [("user_mentions", user) for user in users] + [("user_mentions_ids", user_id) for user_id in ids]
    body = form(text=text, extra=extra, **fields).encode()
    return answer_of(stack.request("POST", "/mattermost/command", headers=HEADERS, body=body))


# How Mattermost reads a post (mattermost/marked in the web app; the server's mention parser) -------------------------
MARKED_ESCAPABLE = set("\\`*{}[]()#+-.!_>|~")
_LINKS = [
    re.compile(r"!?\[(?:\\.|[^\[\]\\])*\]\((?:[^()\s]|\([^()]*\))*\)"),  # [text](url), ![alt](src)
    re.compile(r"!?\[(?:\\.|[^\[\]\\])*\]\s?\[(?:\\.|[^\[\]\\])*\]"),  # [text][ref]
    re.compile(r"<(?:[^ >]+(?:@|:/)|www[0-9]{0,3}\.)[^ >]+>"),  # <https://…>
    re.compile(r"[A-Za-z][A-Za-z0-9.+-]*:(?:/{1,3}|[^\W_]|%)\S*|www[0-9]{0,3}\.\S*|[^\W_][\w.-]*\.[^\W\d_]{2,4}/\S*"),
]
_EMAIL = re.compile(r"[^\s@]@[^\W_][\w.-]*\.[^\W\d_]{2,5}")  # the web app links these after Markdown
CHANNEL_WIDE = {"@channel", "@all", "@here"}


def markdown_links(text: str) -> list[str]:
    """Every link or image marked could form: tried at every position a backslash escape does not cover."""
    found, index = [], 0
    while index < len(text):
        if text[index] == "\\" and text[index + 1 : index + 2] in MARKED_ESCAPABLE:
            index += 2
            continue
        match = next((m for m in (rule.match(text, index) for rule in _LINKS) if m), None)
        if match:
            found.append(match.group(0))
            index = match.end()
        else:
            index += 1
    unescaped = re.sub(r"\\(.)", r"\1", text)
    return found + _EMAIL.findall(unescaped)


def live_mentions(text: str) -> set[str]:
    """The @words Mattermost's server would notify for (its split: letters, digits and :.-_@ form words)."""
    keep = [c if c in ":.-_@" or unicodedata.category(c)[0] in "LN" else " " for c in text.lower()]
    mentions = set()
    for word in "".join(keep).split():
        word = word.lstrip(":.-_")
        candidates = [word, *re.split(r"[.:-]", word)]
        candidates += [word.rstrip(".-:_")]
        mentions |= {c for c in candidates if c.startswith("@") and len(c.rstrip(".-:_")) > 1}
    unescaped = re.sub(r"\\(.)", r"\1", text)  # the web app highlights mentions after Markdown
    mentions |= {f"@{name.lower()}" for name in re.findall(r"(?<![\w-])@([a-z0-9.\-_]+)", unescaped, re.I)}
    return {m.rstrip(".-:_") for m in mentions}


def shown_texts(answer: dict) -> list[str]:
    """Everything of an answer Mattermost shows or hands to plugins: texts, extra responses, props."""
    texts = [answer["text"], *(extra["text"] for extra in answer.get("extra_responses", []))]
    return texts + [value for value in answer.get("props", {}).values() if isinstance(value, str)]


# creating a room ------------------------------------------------------------------------------------------------
def test_a_real_request_posts_the_link_in_the_channel_and_the_host_link_to_the_caller_only(stack, whereby_sim, capsys):
    before = time.time()
    answer = run(stack, sample=WEATHER)  # text "toronto week", as captured

    [meeting] = whereby_sim.meetings()
    assert answer["response_type"] == "in_channel"
    assert "**toronto week**" in answer["text"] and meeting["roomUrl"] in answer["text"]
    assert meeting["hostRoomUrl"] not in json.dumps({k: v for k, v in answer.items() if k != "extra_responses"})
    assert answer["props"] == {
        "meeting_provider": "whereby",
        "meeting_link": meeting["roomUrl"],
        "meeting_topic": "toronto week",
        "meeting_creator_username": "alan",
        "meeting_status": "STARTED",
    }
    [host] = answer["extra_responses"]
    assert host["response_type"] == "ephemeral" and meeting["hostRoomUrl"] in host["text"]
    end = datetime.fromisoformat(meeting["endDate"].replace("Z", "+00:00"))
    assert before + 3600 - 2 <= end.timestamp() <= time.time() + 3600 + 1
    assert f"Open until {end:%Y-%m-%d %H:%M} UTC (1 h)." in answer["text"]
    assert meeting["roomName"].startswith("/toronto-week-z")

    [record] = table_items(stack)
    assert record["state"] == "active" and record["source"] == "mattermost"
    assert record["owner"] == "CHANNEL#wx4zz8t4ttgmtxqiwfohijayzc#fukxanjgjbnp7ng383at53k1sy"
    assert record["creator"] == "erj6qck3rfgtujs86w5r6rckzh" and record["label"] == "toronto week"
    assert record["meeting_id"] == meeting["meetingId"]
    # Counted where the operator reads how much the command is used (the EMF record the function prints).
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert {"MattermostCommands"} <= {
        m["Name"] for r in emf for d in r["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    }


def test_empty_text_makes_a_room_with_the_default_topic_and_duration(stack, whereby_sim):
    answer = run(stack, sample=EMPTY_TEXT)  # "text=" as a real server sent it
    [meeting] = whereby_sim.meetings()
    assert answer["response_type"] == "in_channel"
    assert "**Whereby meeting**" in answer["text"] and "(1 h)" in answer["text"]
    assert meeting["roomName"].startswith("/meeting-z")


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_real_sample_with_a_valid_token_gets_a_room(stack, whereby_sim, sample):
    assert run(stack, sample=sample)["response_type"] == "in_channel"
    assert len(whereby_sim.meetings()) == 1


def test_a_200_character_topic_is_posted_in_full_and_the_room_name_stays_valid(stack, whereby_sim):
    topic = ("Quarterly business review with the whole regional sales team " * 4)[:200].strip()
    answer = run(stack, f"{topic} 30m")
    [meeting] = whereby_sim.meetings()
    assert f"**{topic}**" in answer["text"] and "(30 min)" in answer["text"]
    prefix = whereby_sim.requests_seen()[0]["json"]["roomNamePrefix"]
    assert len(prefix) <= 38 and re.fullmatch(r"[a-z0-9-]+", prefix)
    assert VALID_PREFIX.fullmatch(meeting["roomName"])


@pytest.mark.parametrize(
    ("text", "topic", "prefix_head"),
    [
        ("Планёрка команды 45m", "Планёрка команды", "meeting-z"),
        ("🎉 Launch party 🎉", "🎉 Launch party 🎉", "launch-party-z"),
        ("Café crème", "Café crème", "cafe-creme-z"),
    ],
)
def test_emoji_and_cyrillic_topics_are_shown_as_typed(stack, whereby_sim, text, topic, prefix_head):
    answer = run(stack, text)
    assert f"**{topic}**" in answer["text"]
    assert whereby_sim.requests_seen()[0]["json"]["roomNamePrefix"].startswith(prefix_head)


def test_mentioned_people_are_echoed_in_the_post_and_never_in_the_room_name(stack, whereby_sim):
    text = "Design review @alice @bob.smith ~town-square alice@example.com https://docs.example.com/spec 45m"
    mentions = [("user_mentions", "alice"), ("user_mentions", "bob.smith")]
    mentions += [
        ("user_mentions_ids", "q9x1aqdjy3813c84m771eoc9xo"),
        ("user_mentions_ids", "w2x4aqdjy3813c84m771eoc9xo"),
    ]
    answer = answer_of(
        stack.request("POST", "/mattermost/command", headers=HEADERS, body=form(text=text, extra=mentions).encode())
    )
    assert "Invited: @alice @bob.smith" in answer["text"]
    assert "(45 min)" in answer["text"]
    prefix = whereby_sim.requests_seen()[0]["json"]["roomNamePrefix"]
    # The topic's words, then the room key's random part (which may spell anything, "bob" included): nothing of
    # the mentions, the channel, the address or the link.
    assert re.fullmatch(r"design-review-z[0-9a-z]+-", prefix)


def test_a_get_configured_command_works_from_the_query_string(stack, whereby_sim):
    answer = run(stack, "Standup 15m", method="GET")
    assert answer["response_type"] == "in_channel" and "**Standup**" in answer["text"]
    assert len(whereby_sim.meetings()) == 1


@pytest.mark.parametrize(
    ("text", "phrase"),
    [("Review 9h", "at most 8 h"), ("Review 0m", "at least 5 minutes"), ("Review 3m", "at least 5 minutes")],
)
def test_a_duration_out_of_range_gets_a_hint_and_no_room(stack, whereby_sim, text, phrase):
    assert_ephemeral(run(stack, text), phrase, "Nothing was changed")
    assert_nothing_left(stack, whereby_sim)
    assert whereby_sim.requests_seen() == []


def test_a_malformed_or_out_of_range_duration_gets_the_allowed_range_and_creates_no_room(stack, whereby_sim):
    for word in ("99999h", "1h-5m", "-5m", "1.5h", "0m", "90000m"):  # one stack: these change nothing
        answer = run(stack, f"Review {word}")
        assert_ephemeral(answer, "at least 5 minutes and at most 8 h", "for example `/weather Review 1h30m`")
        assert "Nothing was changed" in answer["text"], word
    assert whereby_sim.requests_seen() == []
    assert_nothing_left(stack, whereby_sim)
    assert table_items(stack) == []


@pytest.mark.parametrize(("word", "shown"), [("30m", "(30 min)"), ("2h", "(2 h)"), ("1h30m", "(1 h 30 min)")])
def test_a_valid_duration_still_sets_the_room_length(stack, whereby_sim, word, shown):
    answer = run(stack, f"Review {word}")
    assert answer["response_type"] == "in_channel" and shown in answer["text"] and "**Review**" in answer["text"]
    assert len(whereby_sim.meetings()) == 1


# what the channel sees of a topic ------------------------------------------------------------------------------
EVIL_TOPIC = "Q3](https://evil.example) ![x](https://evil.example/p.png) <https://evil.example> www.evil.example"


def test_channel_wide_mentions_in_a_topic_are_never_live_in_any_reply(stack, whereby_sim):
    posted = run(stack, "Q3 review @channel @ALL (@here) a/@channel x@here. 30m")
    listed = run(stack, "list")
    ended = run(stack, "end")
    for answer in (posted, listed, ended):
        for text in shown_texts(answer):
            assert not live_mentions(text) & CHANNEL_WIDE, text
    assert "Invited" not in posted["text"]
    [host] = posted["extra_responses"]
    assert "Not invited:" in host["text"]  # the caller learns why nobody was notified


def test_only_users_mattermost_resolved_are_invited(stack, whereby_sim):
    answer = with_mentions(stack, "Sync @alice @nobody @Bob. @carol_ 30m", "alice", "bob", "carol")
    assert "Invited: @alice @bob @carol\n" in answer["text"]
    for text in shown_texts(answer):
        assert live_mentions(text) <= {"@alice", "@bob", "@carol"}, text
    [host] = answer["extra_responses"]
    assert "Not invited: @\u200dnobody." in host["text"]
    assert whereby_sim.meetings()[0]["hostRoomUrl"] in host["text"]  # told beside the host link, not instead of it


@pytest.mark.parametrize("ids", [[], ["k1x4aqdjy3813c84m771eoc9xo"]], ids=["no-ids", "two-names-one-id"])
def test_mention_lists_that_do_not_pair_invite_nobody(stack, whereby_sim, ids):
    # Paired by position: with a name or an id missing, which id is whose cannot be known.
    answer = with_mentions(stack, "Sync @alice @bob 30m", "alice", "bob", ids=ids)
    assert answer["response_type"] == "in_channel" and "Invited" not in answer["text"]
    assert not any(live_mentions(text) for text in shown_texts(answer))


def test_a_markdown_topic_renders_no_link_or_image_in_the_post_the_list_or_the_props(stack, whereby_sim):
    posted = run(stack, f"{EVIL_TOPIC} 30m")
    [meeting] = whereby_sim.meetings()
    assert markdown_links(posted["text"]) == [f"[Join the Whereby room]({meeting['roomUrl']})"]
    assert markdown_links(posted["props"]["meeting_topic"]) == []
    [host] = posted["extra_responses"]
    assert markdown_links(host["text"]) == [meeting["hostRoomUrl"]]

    listed = run(stack, "list")["text"]
    name = meeting["roomName"].lstrip("/")
    assert markdown_links(listed) == [f"[{name}]({meeting['roomUrl']})", f"[host link]({meeting['hostRoomUrl']})"]
    ended = run(stack, "end")["text"]
    assert markdown_links(ended) == []
    assert "evil" in ended and "evil" in listed  # the topic is still shown, as text


def test_a_reference_that_names_no_room_is_quoted_back_as_plain_text(stack, whereby_sim):
    answer = run(stack, "end [x](https://evil.example/nokey)@channel")
    assert_ephemeral(answer, "“\\[x\\]\\(https", "is not the name or link of a room")
    assert markdown_links(answer["text"]) == [] and not live_mentions(answer["text"]) & CHANNEL_WIDE


_MARKDOWN_BITS = [
    "[", "]", "(", ")", "![", "](", "<", ">", "*", "_", "`", "~", "#", "|", "\\", "$", ":", "&lt;", "\u2424",
    "https://evil.example", "www.evil.example", "evil.example/x", "mailto:", "a@b.example",
    "@channel", "@all", "@here", "@alice", "1.", "- ",
]  # fmt: skip


_CHANNELS = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic=st.lists(st.one_of(st.text(max_size=8), st.sampled_from(_MARKDOWN_BITS)), max_size=14).map("".join))
def test_any_topic_posts_exactly_the_join_link_and_no_channel_wide_mention(stack, whereby_sim, topic):
    # A channel of its own per example: an empty topic twice in one channel within 30 s is the duplicate guard's.
    channel = f"anytopic{next(_CHANNELS)}"
    answer = with_mentions(stack, f"start {topic} 30m", "alice", channel_id=channel)
    assert answer["response_type"] == "in_channel"
    room_url = answer["props"]["meeting_link"]
    assert markdown_links(answer["text"]) == [f"[Join the Whereby room]({room_url})"]
    for text in shown_texts(answer):
        assert live_mentions(text) <= {"@alice"}, text
    assert markdown_links(answer["props"]["meeting_topic"]) == []


# authentication ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sample", SAMPLES)
def test_a_real_request_with_its_own_token_is_refused_with_401_and_creates_nothing(stack, whereby_sim, sample):
    body = (MATTERMOST_SAMPLES / f"{sample}.body").read_bytes()
    response = stack.request("POST", "/mattermost/command", headers=HEADERS, body=body)
    assert response["statusCode"] == 401
    assert json.loads(response["body"]) == {"error": "missing or wrong token"}
    assert_nothing_left(stack, whereby_sim)
    assert table_items(stack) == []


def test_both_tokens_work_during_a_rotation_and_the_retired_one_is_refused_after(stack, whereby_sim):
    assert run(stack, "One", token=CURRENT)["response_type"] == "in_channel"
    assert run(stack, "Two", token=NEXT)["response_type"] == "in_channel"

    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    rotated = {"mattermost_tokens": {**TEAM_TOKENS, "wx4zz8t4ttgmtxqiwfohijayzc": [NEXT]}}
    secrets.put_secret_value(SecretId=stack.stack.refs["MattermostSecret"], SecretString=json.dumps(rotated))

    assert command(stack, "Three", token=CURRENT)["statusCode"] == 401
    assert run(stack, "Four", token=NEXT)["response_type"] == "in_channel"
    assert len(whereby_sim.meetings()) == 3


def test_a_token_just_added_to_the_secret_works_before_the_cached_secret_expires(stack, whereby_sim, monkeypatch):
    from bridge import runtime

    monkeypatch.setenv("SECRET_MAX_AGE_SECONDS", "300")  # the production cache
    runtime.reset()
    runtime.mattermost().token_gate.forget()
    assert run(stack, "Before", token=CURRENT)["response_type"] == "in_channel"  # the secret is now cached

    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    regenerated = "q7wzb3kx1nq9tdp4m8s5ihcxye"
    rotated = {"mattermost_tokens": {**TEAM_TOKENS, "wx4zz8t4ttgmtxqiwfohijayzc": [CURRENT, regenerated]}}
    secrets.put_secret_value(SecretId=stack.stack.refs["MattermostSecret"], SecretString=json.dumps(rotated))

    assert run(stack, "After", token=regenerated)["response_type"] == "in_channel"
    assert len(whereby_sim.meetings()) == 2


def test_unknown_tokens_re_read_the_secret_at_most_every_30_seconds():
    from bridge.chat.mattermost import TokenGate

    reads: list[bool] = []
    now = [1000.0]

    def tokens(fresh: bool) -> dict[str, tuple[str, ...]]:
        reads.append(fresh)
        return {"team-a": (CURRENT,)}

    gate = TokenGate(tokens, interval=30.0, clock=lambda: now[0])
    assert gate.team_of(CURRENT) == "team-a" and reads == [False]
    assert gate.team_of("guess-1") is None and reads == [False, False, True]
    assert gate.team_of("guess-2") is None and reads.count(True) == 1
    now[0] += 31
    assert gate.team_of("guess-3") is None and reads.count(True) == 2


@pytest.mark.parametrize("token", ["", "mm-token-current-0d9", "mm-token-current-0d9f ", "MM-TOKEN-CURRENT-0D9F"])
def test_a_near_miss_token_is_refused(stack, whereby_sim, token):
    assert command(stack, "Hi", token=token)["statusCode"] == 401
    assert_nothing_left(stack, whereby_sim)


def test_an_empty_configured_command_token_admits_nobody(stack, whereby_sim):
    from bridge import runtime
    from bridge.chat.mattermost import CommandRuntime, TokenGate, answer

    fields = sample_fields()
    team = fields["team_id"]
    without_token = {k: v for k, v in fields.items() if k != "token"}

    def send(tokens: tuple[str, ...], sent: dict[str, str]) -> int:
        event = http_api_event(
            "POST", "/mattermost/command", headers=HEADERS, body=urlencode(sorted(sent.items())).encode()
        )
        gate = TokenGate(lambda fresh: {team: tokens})
        route = CommandRuntime(settings=runtime.settings, token_gate=gate, ports=runtime.mattermost().ports)
        return answer(ApiRequest.of(event), route)["statusCode"]

    # The route itself, with an empty token configured for the team: an empty or absent token is no match.
    for tokens in [("",), ("", CURRENT)]:
        assert send(tokens, {**fields, "token": ""}) == 401
        assert send(tokens, without_token) == 401
    # The same through the secret: a team whose token was left empty.
    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    emptied = {"mattermost_tokens": {**TEAM_TOKENS, team: [""]}}
    secrets.put_secret_value(SecretId=stack.stack.refs["MattermostSecret"], SecretString=json.dumps(emptied))
    runtime.mattermost().token_gate.forget()
    assert command(stack, "Hi", token="")["statusCode"] == 401
    assert_nothing_left(stack, whereby_sim)


def test_a_team_outside_the_allow_list_is_told_so_and_gets_no_room(stack, whereby_sim, monkeypatch):
    from bridge import runtime

    monkeypatch.setenv("MATTERMOST_TEAM_IDS", "tsb8crrn5tgqtedpkt81b4tcya, oybxpfkcrtgk9bz5qbbsccwmxw")
    runtime.reset()
    assert_ephemeral(run(stack, "Hi", sample=WEATHER), "not enabled for this team")
    assert_nothing_left(stack, whereby_sim)
    assert run(stack, "Hi", sample=EMPTY_TEXT)["response_type"] == "in_channel"  # team oybxpfkc… is allowed


# help, list, end ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["help", "HELP", "  Help  "])
def test_help_explains_the_command_to_the_caller_only(stack, whereby_sim, text):
    answer = run(stack, text)
    assert_ephemeral(answer, "/weather list", "/weather end", "30m", "at most 8 h")
    assert_ephemeral(
        answer, "a topic that begins with help, list, end, stats, export, every, schedules, unschedule or start."
    )
    assert_ephemeral(answer, "/weather every weekday 09:00 Europe/Berlin", "/weather unschedule <id>")
    assert_ephemeral(answer, "Only the person who started a room can end it.")
    # One line per usage: Mattermost shows them as a list.
    lines = answer["text"].split("\n")
    assert lines[0].startswith("**/weather** makes") and lines[-1].startswith("Example: `/weather ")
    assert [line.split("`")[1].split()[:2] for line in lines[1:-1]] == [
        ["/weather", "[topic]"],
        ["/weather", "start"],
        ["/weather", "list"],
        ["/weather", "end"],
        ["/weather", "stats"],
        ["/weather", "export"],
        ["/weather", "every"],
    ]
    assert whereby_sim.requests_seen() == []


@pytest.mark.parametrize(
    ("sent", "shown"),
    [("/Meet", "/meet"), ("meet", "/whereby"), ("/meet now", "/whereby"), ("/meet`", "/whereby"), ("", "/whereby")],
    ids=["capitals", "no-slash", "two-words", "backtick", "empty"],
)
def test_the_answers_name_the_callers_command_only_when_it_is_a_plain_slash_word(stack, whereby_sim, sent, shown):
    # Mattermost sends what the admin configured; anything but a /word could break out of the `code` it is shown in.
    answer = run(stack, "list everything", command=sent)
    assert_ephemeral(answer, f"`{shown} list` takes nothing after it")


@pytest.mark.parametrize("text", ["list everything", "end of the sprint party", "end nothing-here", "end https://x.y/"])
def test_a_command_that_does_not_parse_gets_a_hint_never_silence(stack, whereby_sim, text):
    answer = run(stack, text)
    assert_ephemeral(answer, "/weather")
    assert answer["text"].strip()
    assert_nothing_left(stack, whereby_sim)


def test_list_shows_the_open_rooms_of_this_channel_with_the_host_link_only_for_your_own(stack, whereby_sim):
    run_at(time.time() - 60, "Mine 30m")  # a minute before the next: records keep their time in whole seconds
    run(stack, "Theirs 2h", user_id=OTHER_USER, user_name="tester")
    run(stack, "Elsewhere", channel_id="i3bb9xfyqt8rtbyshmyhgsj16c")
    mine, theirs = (m for m in sorted(whereby_sim.meetings(), key=lambda m: int(m["meetingId"]))[:2])

    for text in ("list", "LIST", "List"):
        answer = run(stack, text)
        assert_ephemeral(answer, "**Mine**", "**Theirs**", mine["roomUrl"], theirs["roomUrl"], "UTC")
        assert answer["text"].startswith("**Open Whereby rooms in this channel**, newest first:\n")
        assert "Elsewhere" not in answer["text"]
        assert mine["hostRoomUrl"] in answer["text"] and theirs["hostRoomUrl"] not in answer["text"]
        assert answer["text"].index("Theirs") < answer["text"].index("Mine")  # newest first


def test_a_room_whose_making_was_cut_short_is_neither_listed_nor_ended(stack, whereby_sim):
    """A command died between Whereby's answer and the record: the half-made record has no link to show yet (the
    sweeper finishes it), so the list and end leave it alone."""
    from bridge import runtime
    from bridge.chat import mattermost as mattermost_command
    from bridge.store.meetings import MeetingsStore

    class Crash(BaseException):
        pass

    class CrashingStore(MeetingsStore):
        def complete_room(self, room):
            raise Crash

    production = runtime.mattermost()
    crashing = replace(
        production, ports=lambda: replace(production.ports(), store=CrashingStore(runtime.store().table_name))
    )
    event = http_api_event("POST", "/mattermost/command", headers=HEADERS, body=form(text="Cut short").encode())
    with pytest.raises(Crash):
        mattermost_command.answer(ApiRequest.of(event), crashing)
    assert [item["state"] for item in table_items(stack)] == ["creating"]

    assert_ephemeral(run(stack, "list"), "No Whereby room is open")
    assert_ephemeral(run(stack, "end"), "no open room")
    assert len(whereby_sim.meetings()) == 1 and [item["state"] for item in table_items(stack)] == ["creating"]


def test_an_open_room_behind_many_ended_ones_is_still_listed_and_ended(stack, whereby_sim):
    """More ended rooms than one read of the channel's index returns (deleted records stay for 30 days), all newer
    than the open one: the command reads on until it finds it."""
    run_at(time.time() - 600, "Still open 2h")
    [record] = table_items(stack)
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    with table.batch_writer() as batch:
        for n in range(120):
            ended = {k: v for k, v in record.items() if k != "expiry_bucket"}
            key = f"ended{n:03}"
            ended.update(pk=f"ROOM#{key}", room_key=key, state="deleted", created_at=record["created_at"] + 1 + n)
            batch.put_item(Item=ended)

    assert_ephemeral(run(stack, "list"), "**Still open**", whereby_sim.meetings()[0]["roomUrl"])
    assert "**Still open** has ended" in run(stack, "end")["text"]
    assert whereby_sim.meetings() == []


def test_list_in_a_channel_without_rooms_says_how_to_start_one(stack):
    assert_ephemeral(run(stack, "list"), "No Whereby room is open", "/weather [topic] [duration]")


def test_end_by_the_creator_removes_the_room_everywhere(stack, whereby_sim):
    run_at(time.time() - 60, "Older")  # a minute before the next: records keep their time in whole seconds
    run(stack, "Latest")
    latest = max(whereby_sim.meetings(), key=lambda m: int(m["meetingId"]))

    answer = run(stack, "END")
    assert answer["response_type"] == "in_channel" and "**Latest** has ended" in answer["text"]
    assert latest["meetingId"] not in {m["meetingId"] for m in whereby_sim.meetings()}
    [ended] = [item for item in table_items(stack) if item["meeting_id"] == latest["meetingId"]]
    assert ended["state"] == "deleted"
    listed = run(stack, "list")["text"]
    assert "Latest" not in listed and "Older" in listed


@pytest.mark.parametrize("form_of", ["name", "slash-name", "url", "host-url", "bracketed-url"])
def test_end_accepts_the_room_name_or_its_link(stack, whereby_sim, form_of):
    run(stack, "Retro")
    [meeting] = whereby_sim.meetings()
    reference = {
        "name": meeting["roomName"].lstrip("/"),
        "slash-name": meeting["roomName"],
        "url": meeting["roomUrl"],
        "host-url": meeting["hostRoomUrl"],
        "bracketed-url": f"<{meeting['roomUrl']}>",
    }[form_of]
    assert "has ended" in run(stack, f"end {reference}")["text"]
    assert_nothing_left(stack, whereby_sim)


def test_end_by_someone_else_is_refused_and_the_room_stays(stack, whereby_sim):
    run(stack, "Board meeting")
    [meeting] = whereby_sim.meetings()

    named = run(stack, f"end {meeting['roomUrl']}", user_id=OTHER_USER, user_name="tester")
    assert_ephemeral(named, "Only the person who started **Board meeting** can end it")
    latest = run(stack, "end", user_id=OTHER_USER, user_name="tester")
    assert_ephemeral(latest, "You have no open room in this channel")

    assert whereby_sim.meetings() == [meeting]
    assert [item["state"] for item in table_items(stack)] == ["active"]


def test_end_of_a_room_from_another_channel_by_someone_else_does_not_reveal_it(stack, whereby_sim):
    run(stack, "Secret project", channel_id="i3bb9xfyqt8rtbyshmyhgsj16c")
    [meeting] = whereby_sim.meetings()
    answer = run(stack, f"end {meeting['roomUrl']}", user_id=OTHER_USER)
    assert_ephemeral(answer, "was started in this channel")
    assert "Secret project" not in answer["text"]
    assert len(whereby_sim.meetings()) == 1


def test_the_creator_can_end_a_room_of_another_channel_by_link_without_posting_here(stack, whereby_sim):
    run(stack, "Elsewhere", channel_id="i3bb9xfyqt8rtbyshmyhgsj16c")
    [meeting] = whereby_sim.meetings()
    assert_ephemeral(run(stack, f"end {meeting['roomUrl']}"), "has ended")
    assert_nothing_left(stack, whereby_sim)


def test_ending_a_room_twice_says_it_already_ended(stack, whereby_sim):
    run(stack, "Once")
    [meeting] = whereby_sim.meetings()
    run(stack, "end")
    assert_ephemeral(run(stack, f"end {meeting['roomUrl']}"), "already ended")


# Whereby in trouble ---------------------------------------------------------------------------------------------
def test_whereby_rate_limit_tells_the_caller_how_long_to_wait_and_leaves_nothing(stack, whereby_sim):
    whereby_sim.fail_next(1, status=429, retry_after=30)
    assert_ephemeral(run(stack, "Demo"), "Whereby is busy", "30 seconds", "No room was made")
    assert_nothing_left(stack, whereby_sim)
    assert [item["state"] for item in table_items(stack)] == ["deleted"]  # the claim, given up for the sweeper


@pytest.mark.parametrize(("retry_after", "phrase"), [(91, "wait 2 minutes."), (3600, "wait 60 minutes.")])
def test_whereby_rate_limit_names_a_long_wait_in_minutes(stack, whereby_sim, retry_after, phrase):
    whereby_sim.fail_next(1, status=429, retry_after=retry_after)
    assert_ephemeral(run(stack, "Demo"), "Whereby is busy", phrase, "No room was made")
    assert_nothing_left(stack, whereby_sim)


@pytest.mark.parametrize(
    ("retry_after", "phrase"),
    [
        (None, "wait a minute."),
        (0.2, "wait 1 second."),
        (1, "wait 1 second."),
        (2, "wait 2 seconds."),
        (90, "wait 90 seconds."),
        (90.5, "wait 2 minutes."),
        (121, "wait 3 minutes."),
        (150, "wait 3 minutes."),
    ],
)
def test_the_wait_a_throttled_caller_is_told_is_whole_seconds_then_minutes(retry_after, phrase):
    """Short waits that the client sits out itself never reach a caller over HTTP; the sentence is the same."""
    from bridge.chat.mattermost import whereby_trouble
    from bridge.core.errors import Throttled

    sentence = whereby_trouble(Throttled("create meeting", retry_after), "No room was made")
    assert sentence == f"Whereby is busy and asked us to {phrase} No room was made; please try again then."


def test_whereby_not_answering_gets_a_sentence_and_leaves_nothing_active(stack, whereby_sim):
    whereby_sim.fail_next(2, status=0)  # the connection closes with no answer, both attempts
    assert_ephemeral(run(stack, "Demo"), "Whereby did not answer in time", "No room was made")
    assert_nothing_left(stack, whereby_sim)


def test_whereby_timing_out_gets_a_sentence_and_leaves_nothing_active(stack, whereby_sim):
    from bridge import runtime
    from bridge.chat import mattermost as mattermost_command
    from bridge.core.retry import RetryPolicy
    from bridge.whereby.client import WherebyClient

    # The production policy waits 8 s per attempt; the same client with a short read timeout shows the same path.
    quick = RetryPolicy(attempts=2, connect_timeout=1.0, read_timeout=0.3, backoff=0.01, max_wait=0.1)
    ports = mattermost_command.CommandPorts(
        store=runtime.store(), whereby=WherebyClient(whereby_sim.base_url, SECRET["whereby_api_key"], quick)
    )
    whereby_sim.fail_next(2, status=0, delay=1.0)
    event = http_api_event("POST", "/mattermost/command", headers=HEADERS, body=form(text="Demo").encode())
    answer = answer_of(
        mattermost_command.answer(ApiRequest.of(event), replace(runtime.mattermost(), ports=lambda: ports))
    )
    assert_ephemeral(answer, "Whereby did not answer in time", "No room was made")
    # Both tries reached Whereby, which dropped them without acting (the simulator only holds their connections
    # open a while longer): nothing can appear later.
    assert [(r["method"], r["status"]) for r in whereby_sim.requests_seen()] == [("POST", 0), ("POST", 0)]
    assert_nothing_left(stack, whereby_sim)


@pytest.mark.parametrize(
    ("status", "times", "phrase"),
    [
        (503, 2, "Whereby did not answer in time"),
        (500, 2, "Whereby did not answer in time"),
        (400, 1, "Whereby refused the request (HTTP 400)"),
        (403, 1, "Whereby refused the request (HTTP 403)"),
        (401, 1, "Whereby refused the bridge's API key"),
    ],
)
def test_whereby_errors_become_a_human_sentence_for_the_caller(stack, whereby_sim, status, times, phrase):
    whereby_sim.fail_next(times, status=status)
    answer = run(stack, "Demo")
    assert_ephemeral(answer, phrase)
    assert "command failed" not in answer["text"].lower()
    assert_nothing_left(stack, whereby_sim)


def test_whereby_failing_to_end_a_room_keeps_it_open_and_says_so(stack, whereby_sim):
    run(stack, "Keep")
    whereby_sim.fail_next(2, status=503)
    assert_ephemeral(run(stack, "end"), "The room is still open")
    assert len(whereby_sim.meetings()) == 1
    assert [item["state"] for item in table_items(stack)] == ["active"]


# what never happens ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"\xff\xfe not utf-8", 400, "body is not UTF-8"),
        (b"a=" + b"x" * (65 * 1024), 400, "body too large"),
        (b'{"token": "mm-token-current-0d9f", "text": "hi"}', 401, "missing or wrong token"),
        (b"", 401, "missing or wrong token"),
        (f"token={CURRENT}&text=hi".encode(), 400, "missing or malformed field(s): team_id, channel_id, user_id"),
        (
            f"token={CURRENT}&team_id=t&channel_id=c%23x&user_id=u".encode(),
            400,
            "missing or malformed field(s): channel_id",
        ),
    ],
    ids=["not-utf8", "too-large", "json", "empty", "no-ids", "malformed-id"],
)
def test_unreadable_requests_get_a_4xx_saying_why_and_change_nothing(stack, whereby_sim, body, status, error):
    response = stack.request("POST", "/mattermost/command", headers=HEADERS, body=body)
    assert response["statusCode"] == status
    assert json.loads(response["body"]) == {"error": error}
    assert table_items(stack) == [] and whereby_sim.requests_seen() == []


def test_a_command_of_exactly_64_kib_is_read_and_one_byte_more_is_refused(stack, whereby_sim):
    valid = form(text="Standup")
    padded = f"{valid}&pad=".encode()
    at_limit = padded + b"x" * (64 * 1024 - len(padded))
    assert len(at_limit) == 64 * 1024
    assert answer_of(stack.request("POST", "/mattermost/command", headers=HEADERS, body=at_limit))["response_type"]
    assert len(whereby_sim.meetings()) == 1
    over = stack.request("POST", "/mattermost/command", headers=HEADERS, body=at_limit + b"x")
    assert (over["statusCode"], json.loads(over["body"])) == (400, {"error": "body too large"})


def test_no_secret_and_no_raw_request_appear_in_logs_or_answers(stack, whereby_sim, log_lines):
    answers = [
        run(stack, "Sync @alice 30m"),
        run(stack, "list"),
        run(stack, "end"),
        command(stack, "Hi", token="wrong-token"),
    ]
    whereby_sim.fail_next(1, status=429, retry_after=20)
    answers.append(run(stack, "Again"))
    text = "\n".join(log_lines())
    assert "mattermost room created" in text  # the logs were captured at all
    shown = json.dumps(answers)
    for value in (SECRET["whereby_api_key"], SECRET["kommo_webhook_token"], *MATTERMOST_TOKENS):
        assert value not in text and value not in shown
    assert sample_fields()["trigger_id"] not in text
    assert "roomKey=" not in text  # host links go to the caller, not to the logs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    token=st.sampled_from([CURRENT, NEXT, "", "nope"]),
    text=st.text(max_size=300),
    extra=st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=6),
    drop=st.sets(st.sampled_from(["team_id", "channel_id", "user_id", "command", "user_name"])),
    method=st.sampled_from(["POST", "GET"]),
)
def test_no_form_body_ever_gets_a_5xx(stack, whereby_sim, token, text, extra, drop, method):
    fields = {k: v for k, v in {**sample_fields(), "token": token, "text": text}.items() if k not in drop}
    encoded = urlencode([*fields.items(), *extra])
    if method == "GET":
        response = stack.request("GET", "/mattermost/command", query=encoded)
    else:
        response = stack.request("POST", "/mattermost/command", headers=HEADERS, body=encoded.encode())
    assert response["statusCode"] in (200, 400, 401)
    answer = json.loads(response["body"])
    if response["statusCode"] == 200:
        assert answer["response_type"] in ("ephemeral", "in_channel") and answer["text"].strip()
        assert "something went wrong" not in answer["text"].lower()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2000))
def test_no_random_bytes_ever_get_a_5xx(stack, body):
    response = stack.request("POST", "/mattermost/command", headers=HEADERS, body=body)
    assert response["statusCode"] in (400, 401)
