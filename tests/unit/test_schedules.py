"""Recurring meetings: ``/whereby every …`` makes an EventBridge Scheduler schedule in the stack's group, firing a few
minutes before the meeting in the meeting's own time zone; the fire function makes the room and posts it once;
``schedules`` lists a channel's, ``unschedule`` cancels one; caps hold under races; a channel that is gone or posts
that keep failing turn a schedule off and its creator is told.

AWS is moto (DynamoDB, Scheduler); Mattermost and Whereby are their simulators over real HTTP. moto's Scheduler
stores schedules and never fires them: the local stand-in (``devstack.scheduler``) computes when they fire.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.chat.schedule_commands import ListSchedules
from bridge.chat.schedules import DAYS, cron_expression, fire_time
from devstack.scheduler import LocalScheduler, functions_by_arn, next_fire
from tests.conftest import MATTERMOST_BOT_TOKEN
from tests.unit.test_mattermost_command import HEADERS, OTHER_USER, form

TEAM = "wx4zz8t4ttgmtxqiwfohijayzc"  # the WEATHER sample's team, channel and user (alan)
CHANNEL = "fukxanjgjbnp7ng383at53k1sy"
CREATOR = "erj6qck3rfgtujs86w5r6rckzh"
OTHER_CHANNEL = "0therchanne100000000000000"
STANDUP = "every weekday 09:00 Europe/Berlin Daily standup 15m"


# helpers ---------------------------------------------------------------------------------------------------------
def whereby(stack, text: str, *, channel: str = CHANNEL, user: str = CREATOR) -> dict:
    body = form(text=text, channel_id=channel, user_id=user)
    answer = stack.request("POST", "/mattermost/command", headers=HEADERS, body=body.encode())
    assert answer["statusCode"] == 200
    return json.loads(answer["body"])


@pytest.fixture
def bot(stack, mattermost_sim):
    """ChatBotSecret holds the simulator's bot; the bot is a member of the command's channel."""
    value = {"mattermost_url": mattermost_sim.root_url, "mattermost_bot_token": MATTERMOST_BOT_TOKEN}
    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    secrets.put_secret_value(SecretId=stack.stack.refs["ChatBotSecret"], SecretString=json.dumps(value))
    mattermost_sim.add_member(CHANNEL)
    mattermost_sim.add_member(OTHER_CHANNEL)
    return mattermost_sim


def scheduler():
    return boto3.client("scheduler", region_name="eu-west-1")


def group(stack) -> str:
    return stack.stack.refs["MeetingSchedules"]


def scheduled(stack) -> list[dict]:
    """The Scheduler's schedules of the stack's group, in full."""
    names = [s["Name"] for s in scheduler().list_schedules(GroupName=group(stack))["Schedules"]]
    return [scheduler().get_schedule(Name=name, GroupName=group(stack)) for name in names]


def schedule_id_in(answer: dict) -> str:
    [schedule_id] = [word.strip("`.") for word in answer["text"].split() if word.startswith("`") and len(word) >= 9]
    return schedule_id.split("`")[0] if "`" in schedule_id else schedule_id


def created_id(stack) -> str:
    [schedule] = scheduled(stack)
    return schedule["Name"]


def fire_at(stack, schedule_id: str, when: datetime) -> str:
    """The fire function's use-case with the production ports, its clock at ``when``."""
    from bridge import runtime
    from bridge.chat.schedule_fire import fire

    return fire({"schedule_id": schedule_id}, replace(runtime.schedule_fire_ports(), clock=when.timestamp))


def berlin(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("Europe/Berlin"))


def monday_ahead() -> datetime:
    """08:55 in Berlin on a Monday still ahead (Whereby makes no room that ends in the past)."""
    today = datetime.now(ZoneInfo("Europe/Berlin")).date() + timedelta(days=7)
    day = today + timedelta(days=-today.weekday())
    return berlin(day.year, day.month, day.day, 8, 55)


# creating, listing, cancelling -----------------------------------------------------------------------------------
def test_every_weekday_makes_a_scheduler_schedule_five_minutes_early_in_the_meetings_zone(stack, bot):
    answer = whereby(stack, STANDUP)

    assert answer["response_type"] == "in_channel"
    assert "Daily standup" in answer["text"] and "every weekday at 09:00 (Europe/Berlin)" in answer["text"]
    [schedule] = scheduled(stack)
    assert schedule["ScheduleExpression"] == "cron(55 8 ? * MON,TUE,WED,THU,FRI *)"
    assert schedule["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert schedule["State"] == "ENABLED"
    assert json.loads(schedule["Target"]["Input"]) == {"schedule_id": schedule["Name"]}
    assert schedule["Target"]["Arn"].endswith("ScheduleFireFunction")
    assert f"unschedule {schedule['Name']}" in answer["text"]

    # A zone typed in lower case is the IANA zone.
    whereby(stack, "every sun 18:00 america/new_york Weekly review")
    [review] = [s for s in scheduled(stack) if s["Name"] != schedule["Name"]]
    assert review["ScheduleExpressionTimezone"] == "America/New_York"
    assert review["ScheduleExpression"] == "cron(55 17 ? * SUN *)"


def test_schedules_lists_this_channels_schedules_with_their_ids_and_no_other_channels(stack, bot):
    whereby(stack, STANDUP)
    whereby(stack, "every mon,wed 14:30 America/Sao_Paulo Planning 1h")
    whereby(stack, "every day 08:00 UTC Elsewhere 30m", channel=OTHER_CHANNEL)

    listed = whereby(stack, "schedules")

    assert listed["response_type"] == "ephemeral"
    text = listed["text"]
    assert "Daily standup" in text and "Planning" in text and "Elsewhere" not in text
    assert "every Monday, Wednesday at 14:30 (America/Sao\\_Paulo)" in text or "America/Sao_Paulo" in text
    ids = {s["Name"] for s in scheduled(stack)}
    assert sum(f"`{schedule_id}`" in text for schedule_id in ids) == 2


def test_only_the_creator_or_a_channel_admin_cancels_a_schedule(stack, bot):
    whereby(stack, STANDUP)
    whereby(stack, "every friday 16:00 Europe/Berlin Retro 1h")
    standup, retro = (s["Name"] for s in sorted(scheduled(stack), key=lambda s: s["ScheduleExpression"]))

    refused = whereby(stack, f"unschedule {standup}", user=OTHER_USER)
    assert refused["response_type"] == "ephemeral" and "Only the person who scheduled" in refused["text"]
    assert len(scheduled(stack)) == 2

    cancelled = whereby(stack, f"unschedule {standup}")
    assert cancelled["response_type"] == "in_channel" and "no longer be posted" in cancelled["text"]
    bot.make_admin(CHANNEL, OTHER_USER)
    by_admin = whereby(stack, f"unschedule {retro}", user=OTHER_USER)
    assert "no longer be posted" in by_admin["text"]

    assert scheduled(stack) == []
    assert "No recurring meeting is scheduled" in whereby(stack, "schedules")["text"]
    again = whereby(stack, f"unschedule {standup}")
    assert "No recurring meeting" in again["text"]


def test_a_channel_holds_at_most_its_cap_and_the_stack_at_most_its_own(stack, bot, monkeypatch):
    from bridge import runtime

    monkeypatch.setenv("MAX_SCHEDULES_PER_CHANNEL", "2")
    monkeypatch.setenv("MAX_SCHEDULES_PER_STACK", "3")
    runtime.reset()
    for hour in (9, 10):
        assert whereby(stack, f"every day {hour}:00 UTC Sync")["response_type"] == "in_channel"

    full = whereby(stack, "every day 11:00 UTC Sync")
    assert "already has 2 recurring meetings" in full["text"]
    assert whereby(stack, "every day 11:00 UTC Sync", channel=OTHER_CHANNEL)["response_type"] == "in_channel"
    stack_full = whereby(stack, "every day 12:00 UTC Sync", channel="thirdchanne1000000000000000"[:26])
    assert "as many recurring meetings as it may (3)" in stack_full["text"]
    assert len(scheduled(stack)) == 3

    # A cancelled schedule gives its place back.
    first = next(s["Name"] for s in scheduled(stack) if s["ScheduleExpression"].startswith("cron(55 8 "))
    whereby(stack, f"unschedule {first}")
    assert whereby(stack, "every day 11:00 UTC Sync")["response_type"] == "in_channel"


def test_two_requests_racing_for_the_last_place_make_one_schedule(stack, bot, atomic_dynamodb, monkeypatch):
    from bridge import runtime

    monkeypatch.setenv("MAX_SCHEDULES_PER_CHANNEL", "1")
    runtime.reset()
    start = threading.Barrier(2)
    answers: list[dict] = []

    def schedule(hour: int) -> None:
        start.wait()
        answers.append(whereby(stack, f"every day {hour}:00 UTC Race"))

    threads = [threading.Thread(target=schedule, args=(hour,)) for hour in (9, 10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answer["response_type"] for answer in answers) == ["ephemeral", "in_channel"]
    assert len(scheduled(stack)) == 1


def test_without_a_bot_or_a_webhook_every_explains_what_to_configure_and_makes_nothing(stack):
    answer = whereby(stack, STANDUP)

    assert answer["response_type"] == "ephemeral"
    assert "no bot" in answer["text"] and "--webhook" in answer["text"]
    assert scheduled(stack) == []
    assert "No recurring meeting" in whereby(stack, "schedules")["text"]


BAD_COMMANDS = [
    ("every someday 09:00 Europe/Berlin Standup", "is not a day"),
    ("every monday 9am Europe/Berlin Standup", "is not a time of day"),
    ("every monday 24:00 Europe/Berlin Standup", "is not a time of day"),
    ("every monday 09:00 Mars/Olympus Standup", "is not a time zone"),
    ("every monday 09:00 ../../etc/passwd Standup", "is not a time zone"),
    ("every monday 09:00", "Say when"),
    ("every monday 09:00 UTC Standup 99999h", "is not a duration"),
    ("every monday 09:00 UTC Standup --webhook http://example.com/hooks/x", "not an incoming webhook"),
    ("every monday 09:00 UTC Standup --webhook https://chat.example.com/other/path", "not an incoming webhook"),
    ("every monday 09:00 UTC Standup --webhook", "--webhook"),
    ("unschedule", "takes one schedule id"),
    ("unschedule a b", "takes one schedule id"),
    ("schedules all", "takes nothing after it"),
]


def test_a_bad_schedule_command_gets_a_clear_answer_and_changes_nothing(stack, bot):
    for text, problem in BAD_COMMANDS:
        answer = whereby(stack, text)

        assert answer["response_type"] == "ephemeral", text
        assert problem in answer["text"] and "was changed" in answer["text"], text
    assert scheduled(stack) == []
    assert "No recurring meeting" in whereby(stack, "schedules")["text"]


# when it fires ---------------------------------------------------------------------------------------------------
def test_the_lead_crossing_midnight_moves_each_day_back_one():
    assert fire_time(("MON",), 9, 0, 5) == (("MON",), 8, 55)
    assert fire_time(("MON",), 0, 2, 5) == (("SUN",), 23, 57)
    assert fire_time(("SUN", "MON"), 0, 0, 5) == (("SAT", "SUN"), 23, 55)
    assert cron_expression(DAYS, 0, 1, 5) == "cron(56 23 * * ? *)"
    assert cron_expression(("MON", "WED", "FRI"), 0, 3, 5) == "cron(58 23 ? * TUE,THU,SUN *)"


@given(
    days=st.sets(st.sampled_from(DAYS), min_size=1),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    lead=st.integers(1, 30),
)
def test_each_firing_is_exactly_the_lead_before_a_meeting_on_a_scheduled_day(days, hour, minute, lead):
    fired_days, at_hour, at_minute = fire_time(sorted(days, key=DAYS.index), hour, minute, lead)
    week = 7 * 24 * 60
    meetings = {(DAYS.index(day) * 24 * 60 + hour * 60 + minute) % week for day in days}
    firings = {(DAYS.index(day) * 24 * 60 + at_hour * 60 + at_minute + lead) % week for day in fired_days}
    assert firings == meetings


def test_a_0900_berlin_schedule_fires_at_0855_local_on_both_sides_of_the_march_shift():
    expression = cron_expression(("MON", "TUE", "WED", "THU", "FRI"), 9, 0, 5)

    friday = next_fire(expression, "Europe/Berlin", datetime(2026, 3, 27, 0, 0, tzinfo=UTC))
    monday = next_fire(expression, "Europe/Berlin", friday)

    assert (friday.date().isoformat(), friday.strftime("%H:%M")) == ("2026-03-27", "08:55")
    assert (monday.date().isoformat(), monday.strftime("%H:%M")) == ("2026-03-30", "08:55")
    assert friday.astimezone(UTC).strftime("%H:%M") == "07:55"
    assert monday.astimezone(UTC).strftime("%H:%M") == "06:55"


def test_a_time_the_spring_shift_skips_is_not_fired_that_day_and_a_repeated_one_fires_once():
    skipped = next_fire("cron(30 2 * * ? *)", "Europe/Berlin", datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    assert skipped.date().isoformat() == "2026-03-30"  # 29 March has no 02:30 in Berlin
    first = next_fire("cron(30 2 * * ? *)", "Europe/Berlin", datetime(2026, 10, 24, 12, 0, tzinfo=UTC))
    after = next_fire("cron(30 2 * * ? *)", "Europe/Berlin", first)
    assert first.date().isoformat() == "2026-10-25" and after.date().isoformat() == "2026-10-26"


def test_the_stand_in_fires_a_due_schedule_and_the_bot_posts_its_room_with_the_end_button(stack, bot, whereby_sim):
    whereby(stack, "every day 09:00 Europe/Berlin Standup 15m")
    clock = [berlin(2026, 3, 27, 8, 50).timestamp()]
    stand_in = LocalScheduler(
        scheduler(), group(stack), functions_by_arn(stack.stack.attributes), stack.invoke, lambda: clock[0]
    )
    stand_in.tick()
    assert bot.posts(CHANNEL) == []

    clock[0] = berlin(2026, 3, 27, 8, 56).timestamp()
    assert len(stand_in.tick()) == 1

    [meeting] = whereby_sim.meetings()
    [post] = bot.posts(CHANNEL)
    assert "Standup" in post["message"] and meeting["roomUrl"] in post["message"]
    [button] = post["props"]["attachments"][0]["actions"]
    assert button["name"] == "End meeting"


def test_a_scheduler_retry_of_one_occurrence_makes_one_room_and_one_post(stack, bot, whereby_sim):
    whereby(stack, STANDUP)
    schedule_id = created_id(stack)
    at = monday_ahead()

    outcomes = [fire_at(stack, schedule_id, at), fire_at(stack, schedule_id, at + timedelta(minutes=2))]

    assert outcomes == ["posted", "already posted"]
    assert len(whereby_sim.meetings()) == 1
    assert len(bot.posts(CHANNEL)) == 1
    # The next day is another occurrence: another room.
    assert fire_at(stack, schedule_id, at + timedelta(days=1)) == "posted"
    assert len(whereby_sim.meetings()) == 2


def test_a_channel_the_bot_can_no_longer_post_in_turns_the_schedule_off_at_once_and_tells_the_creator(stack, bot):
    whereby(stack, STANDUP)
    schedule_id = created_id(stack)
    bot.remove_member(CHANNEL)

    outcome = fire_at(stack, schedule_id, monday_ahead())

    assert outcome.startswith("turned off (channel-gone)")
    [schedule] = scheduled(stack)
    assert schedule["State"] == "DISABLED"
    [told] = bot.direct_posts(CREATOR)
    assert "Daily standup" in told["message"] and "can no longer post" in told["message"]
    assert "can no longer post in this channel" in whereby(stack, "schedules")["text"]
    assert fire_at(stack, schedule_id, monday_ahead() + timedelta(days=1)) == "schedule is off"


def test_three_failed_posts_in_a_row_turn_the_schedule_off_and_the_creator_is_told(stack, bot, whereby_sim):
    whereby(stack, STANDUP)
    schedule_id = created_id(stack)
    monday = monday_ahead()

    outcomes = []
    for day in range(3):
        bot.fail_next(1, status=503, method="POST")
        outcomes.append(fire_at(stack, schedule_id, monday + timedelta(days=day)))
        # A retry of the same occurrence that fails again is not counted twice.
        if day == 0:
            bot.fail_next(1, status=503, method="POST")
            outcomes.append(fire_at(stack, schedule_id, monday + timedelta(minutes=1)))

    assert outcomes[:3] == ["post failed (1 in a row)", "post failed (1 in a row)", "post failed (2 in a row)"]
    assert outcomes[3].startswith("turned off (failing)")
    assert scheduled(stack)[0]["State"] == "DISABLED"
    [told] = bot.direct_posts(CREATOR)
    assert "could not be posted the last 3 times" in told["message"]


def test_a_successful_post_ends_a_run_of_failures(stack, bot):
    whereby(stack, STANDUP)
    schedule_id = created_id(stack)
    monday = monday_ahead()
    for day in (0, 1):
        bot.fail_next(1, status=503, method="POST")
        fire_at(stack, schedule_id, monday + timedelta(days=day))

    assert fire_at(stack, schedule_id, monday + timedelta(days=2)) == "posted"
    bot.fail_next(1, status=503, method="POST")
    assert fire_at(stack, schedule_id, monday + timedelta(days=3)) == "post failed (1 in a row)"


def test_with_a_webhook_the_room_is_posted_through_it_and_the_caller_is_told_it_will_not_follow(stack, mattermost_sim):
    hook = mattermost_sim.new_incoming_webhook(CHANNEL)
    answer = whereby(stack, f"every day 09:00 UTC Standup 15m --webhook {hook}")

    assert answer["response_type"] == "in_channel" and "incoming webhook" in answer["text"]
    assert hook not in answer["text"] and hook not in whereby(stack, "schedules")["text"]
    outcome = fire_at(stack, created_id(stack), monday_ahead())
    assert outcome == "posted"
    [post] = mattermost_sim.posts(CHANNEL)
    assert "Standup" in post["message"] and post["props"]["from_webhook"] == "true"


# Slack -----------------------------------------------------------------------------------------------------------
SLACK_CHANNEL, SLACK_USER = "C07RM8K2H1Q", "U05QWERTY12"  # test_slack_command's form, in the slack_sim workspace


@pytest.fixture
def slack_bot(stack, slack_sim, monkeypatch):
    from tests.unit.test_slack_live_posts import with_slack_bot

    with_slack_bot(stack, slack_sim, monkeypatch)
    return slack_sim


def slack(stack, slack_sim, text: str, trigger_id: str | None = None) -> tuple[dict, list[dict]]:
    """The command's immediate answer, and what the worker then posted through its response_url."""
    from tests.unit.test_slack_command import form, send

    url = slack_sim.new_response_url()
    extra = {"trigger_id": trigger_id} if trigger_id else {}
    answer = send(stack, form(text, url, **extra))
    stack.drain()
    return answer, slack_sim.posts(url)


def test_on_slack_the_worker_makes_the_schedule_once_and_the_bot_posts_each_occurrence(stack, slack_bot, whereby_sim):
    answer, [posted] = slack(stack, slack_bot, "every mon,thu 10:30 Europe/Madrid Planning 45m", "trigger.1")

    assert answer["text"] == "Scheduling the recurring meeting…"
    assert posted["response_type"] == "in_channel" and "Planning" in posted["text"]
    [schedule] = scheduled(stack)
    assert schedule["ScheduleExpression"] == "cron(25 10 ? * MON,THU *)"
    # The same request delivered again (SQS at least once) makes no second schedule.
    _, [again] = slack(stack, slack_bot, "every mon,thu 10:30 Europe/Madrid Planning 45m", "trigger.1")
    assert "Planning" in again["text"] and len(scheduled(stack)) == 1

    listed, _ = slack(stack, slack_bot, "schedules")
    assert schedule["Name"] in listed["text"] and "every Monday, Thursday at 10:30 (Europe/Madrid)" in listed["text"]

    assert fire_at(stack, schedule["Name"], monday_ahead() + timedelta(hours=1, minutes=30)) == "posted"
    [message] = slack_bot.messages(SLACK_CHANNEL)
    assert message["by"] == "bot" and "Planning" in message["text"]
    assert [e["action_id"] for e in message["blocks"][1]["elements"]] == ["join_room", "end_room"]
    assert len(whereby_sim.meetings()) == 1


def test_on_slack_an_archived_channel_turns_the_schedule_off_and_the_app_tells_the_creator(stack, slack_bot):
    slack(stack, slack_bot, "every day 09:00 UTC Standup")
    schedule_id = created_id(stack)
    slack_bot.private_channel(SLACK_CHANNEL)  # the bot may no longer post there: not_in_channel

    assert fire_at(stack, schedule_id, monday_ahead()).startswith("turned off (channel-gone)")
    [told] = slack_bot.messages(SLACK_USER)
    assert "Standup" in told["text"] and "can no longer post" in told["text"]
    _, [cancelled] = slack(stack, slack_bot, f"unschedule {schedule_id}")
    assert "no longer be posted" in cancelled["text"] and scheduled(stack) == []


def test_the_answers_speak_the_callers_language_spanish_and_russian(stack, bot):
    """The use-case with the platform's voice in the caller's language, as each request gives it."""
    from bridge import runtime
    from bridge.chat.mattermost import VOICE
    from bridge.chat.rooms import Caller
    from bridge.chat.schedule_commands import ScheduleEvery
    from bridge.chat.schedules import run_schedule
    from bridge.core.i18n import speech

    caller = Caller(TEAM, CHANNEL, CREATOR, "alan")
    every = ScheduleEvery(("MON", "WED"), 9, 0, "Europe/Madrid", "Planning", 30)
    spanish = replace(VOICE, speech=speech("es"))
    made = run_schedule(every, caller, "mattermost", runtime.mattermost_schedules(), spanish)
    assert "programó" in made.text and "Planning" in made.text and "30 min" in made.text

    russian = replace(VOICE, speech=speech("ru"))
    listed = run_schedule(ListSchedules(), caller, "mattermost", runtime.mattermost_schedules(), russian)
    assert "Регулярные встречи этого канала" in listed.text and "понедельник, среда" in listed.text
