"""Recurring meetings: ``/whereby every …``, ``/whereby schedules`` and ``/whereby unschedule <id>``.

Grammar (the words after ``every`` in this order; day and zone words in any case)::

    every <days> <HH:MM> <zone> [topic] [duration] [--webhook <url>]
        days: day | weekday | weekdays | monday..sunday | mon..sun | a comma list (mon,wed,fri)
        zone: an IANA time zone (Europe/Berlin, America/Sao_Paulo, UTC)
    schedules                   this channel's schedules, with their ids
    unschedule <id>             cancel one (its creator, or a channel admin where the platform says who is one)

Each schedule is a record in the meetings table (``bridge.store.schedules``) and an EventBridge Scheduler schedule
of the same id in the stack's group, firing ``lead_minutes`` before the meeting, in the schedule's own time zone, so
the meeting keeps its local time across daylight-saving shifts. The fire function (``bridge.chat.schedule_fire``)
makes the room and posts it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from bridge.chat.grammar import DEFAULT_TOPIC, Invalid, Limits, literal, parse_start
from bridge.chat.rooms import Caller, Said, Voice
from bridge.chat.schedule_commands import ListSchedules, ScheduleCommand, ScheduleEvery, ScheduleProblem, Unschedule
from bridge.core.errors import PeerUnavailable
from bridge.core.http_api import is_callback_url
from bridge.core.i18n import N_, Speech
from bridge.core.observability import count, logger
from bridge.store.schedules import OFF, AlreadyThere, CapReached, Schedule, ScheduleStore

DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
WEEKDAYS = DAYS[:5]
DEFAULT_SCHEDULED_TOPIC = "Recurring meeting"  # not the one-off default: that one is merged with a recent room
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_WORDS = {
    **{name: (day,) for day, name in zip(DAYS, _DAY_NAMES, strict=True)},
    **{day.lower(): (day,) for day in DAYS},
    "day": DAYS,
    "daily": DAYS,
    "weekday": WEEKDAYS,
    "weekdays": WEEKDAYS,
}
_TIME = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])", re.ASCII)
_ID = re.compile(r"[a-z2-7]{8}", re.ASCII)
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_MATTERMOST_HOOK = re.compile(r"/hooks/[a-z0-9]{26}")
_SLACK_HOOK = re.compile(r"/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+")
WEBHOOK_FLAG = "--webhook"

# Why a schedule is off, as its record keeps it and as /whereby schedules says it.
CHANNEL_GONE, FAILING = "channel-gone", "failing"
REASONS = {
    CHANNEL_GONE: N_("off: the bridge can no longer post in this channel"),
    FAILING: N_("off: its last posts failed"),
}


def new_schedule_id() -> str:
    """Eight characters a person can type back (``unschedule <id>``); also the Scheduler schedule's name."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def request_schedule_id(request_id: str) -> str:
    """The id a queued request's schedule gets: the same on every run of the request, so a retry makes no second."""
    digest = hashlib.sha256(f"schedule|{request_id}".encode()).digest()
    return "".join(_ID_ALPHABET[b % 32] for b in digest[:8])


def waiting_text(command: ScheduleEvery | Unschedule, sp: Speech) -> str:
    """What a Slack caller reads at once, while the worker sets the schedule up (Slack waits 3 s)."""
    if isinstance(command, Unschedule):
        return sp.t("Cancelling the recurring meeting…")
    return sp.t("Scheduling the recurring meeting…")


# the grammar -----------------------------------------------------------------------------------------------------
def parse_schedule(
    head: str, rest: list[str], limits: Limits, trigger: str, quote: Callable[[str], str] | None = None
) -> ScheduleCommand | Invalid:
    quote = quote or literal
    if head == "schedules":
        if rest:
            return ScheduleProblem(N_("`{trigger} schedules` takes nothing after it."), {"trigger": trigger})
        return ListSchedules()
    if head == "unschedule":
        if len(rest) != 1 or not _ID.fullmatch(rest[0].lower()):
            return ScheduleProblem(
                N_("`{trigger} unschedule` takes one schedule id; `{trigger} schedules` lists them."),
                {"trigger": trigger},
            )
        return Unschedule(rest[0].lower(), rest[0])
    return parse_every(rest, limits, trigger, quote)


def parse_every(
    words: list[str], limits: Limits, trigger: str, quote: Callable[[str], str]
) -> ScheduleEvery | ScheduleProblem | Invalid:
    words, webhook = _webhook(words)
    if webhook is None:
        return ScheduleProblem(N_("`--webhook` takes the channel's incoming webhook address."))
    if len(words) < 3:
        return ScheduleProblem(
            N_(
                "Say when: `{trigger} every weekday 09:00 Europe/Berlin Daily standup 15m`. To start a room whose"
                " topic begins with “every”, type `{trigger} start every …`."
            ),
            {"trigger": trigger},
        )
    day_word, time_word, zone_word, *topic_words = words
    days = days_of(day_word)
    if days is None:
        return ScheduleProblem(
            N_(
                "“{word}” is not a day `{trigger} every` knows: give day, weekday, a day of the week (monday or mon)"
                " or a list like mon,wed,fri."
            ),
            {"word": quote(day_word[:40]), "trigger": trigger},
        )
    found = _TIME.fullmatch(time_word)
    if found is None:
        return ScheduleProblem(
            N_("“{word}” is not a time of day: give it as hours and minutes on a 24-hour clock, like 09:00 or 14:30."),
            {"word": quote(time_word[:40])},
        )
    zone = zone_named(zone_word)
    if zone is None:
        return ScheduleProblem(
            N_("“{word}” is not a time zone: give its IANA name, like Europe/Berlin, America/Sao_Paulo or UTC."),
            {"word": quote(zone_word[:60])},
        )
    start = parse_start(topic_words, limits, trigger, (), quote)
    if isinstance(start, Invalid):
        return start
    return ScheduleEvery(
        days=days,
        hour=int(found.group(1)),
        minute=int(found.group(2)),
        zone=zone,
        topic=DEFAULT_SCHEDULED_TOPIC if start.topic == DEFAULT_TOPIC else start.topic,
        minutes=start.minutes,
        slug_source=start.slug_source,
        webhook=webhook,
    )


def _webhook(words: list[str]) -> tuple[list[str], str | None]:
    """The words without ``--webhook <url>``, and the url ("" when not given; None when the flag has none)."""
    for index, word in enumerate(words):
        if word.lower().startswith(WEBHOOK_FLAG + "="):
            return words[:index] + words[index + 1 :], word.split("=", 1)[1] or None
        if word.lower() == WEBHOOK_FLAG:
            if index + 1 >= len(words):
                return words[:index], None
            return words[:index] + words[index + 2 :], words[index + 1].strip("<>")
    return words, ""


def days_of(word: str) -> tuple[str, ...] | None:
    """The days a word names, in week order: "weekdays", "mon,wed,fri", "Sunday"; None when it names none."""
    picked: set[str] = set()
    for part in word.lower().split(","):
        days = _DAY_WORDS.get(part.strip())
        if days is None:
            return None
        picked.update(days)
    return tuple(day for day in DAYS if day in picked) or None


def zone_named(word: str) -> str | None:
    """The IANA zone's name as zoneinfo spells it (any case typed), or None."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+/-]{0,63}", word) or ".." in word:
        return None
    try:
        ZoneInfo(word)
        return word
    except (ZoneInfoNotFoundError, ValueError):
        pass
    # Typed in another case ("europe/berlin"): the list of zones is read only then.
    return {name.lower(): name for name in available_timezones()}.get(word.lower())


def webhook_problem(url: str, platform: str) -> ScheduleProblem | None:
    """Whether ``url`` looks like an incoming webhook of the platform (https; plain http only to this machine)."""
    parts = urlsplit(url)
    shaped = (
        _MATTERMOST_HOOK.fullmatch(parts.path.rstrip("/"))
        if platform == "mattermost"
        else _SLACK_HOOK.fullmatch(parts.path) and (parts.hostname == "hooks.slack.com" or parts.scheme == "http")
    )
    if is_callback_url(url) and len(url) <= 500 and not parts.query and shaped:
        return None
    example = "https://chat.example.com/hooks/…" if platform == "mattermost" else "https://hooks.slack.com/services/…"
    return ScheduleProblem(
        N_("That is not an incoming webhook address of {platform}: it looks like {example}"),
        {"platform": "Mattermost" if platform == "mattermost" else "Slack", "example": example},
    )


# when it fires ---------------------------------------------------------------------------------------------------
def fire_time(days: Sequence[str], hour: int, minute: int, lead_minutes: int) -> tuple[tuple[str, ...], int, int]:
    """The days, hour and minute the schedule fires, ``lead_minutes`` before the meeting (local time): a lead that
    crosses midnight moves each day back one (00:02 on Monday fires at 23:57 on Sunday)."""
    total = hour * 60 + minute - lead_minutes
    shift = 0
    if total < 0:
        total += 24 * 60
        shift = -1
    fired = {DAYS[(DAYS.index(day) + shift) % 7] for day in days}
    return tuple(day for day in DAYS if day in fired), total // 60, total % 60


def cron_expression(days: Sequence[str], hour: int, minute: int, lead_minutes: int) -> str:
    """EventBridge Scheduler's ``cron(minutes hours day-of-month month day-of-week year)``."""
    fired, at_hour, at_minute = fire_time(days, hour, minute, lead_minutes)
    if len(fired) == len(DAYS):
        return f"cron({at_minute} {at_hour} * * ? *)"
    return f"cron({at_minute} {at_hour} ? * {','.join(fired)} *)"


# the use-cases ---------------------------------------------------------------------------------------------------
class Scheduler(Protocol):
    """``bridge.store.scheduler.EventBridgeScheduler``."""

    def create(self, name: str, expression: str, zone: str) -> None: ...

    def disable(self, name: str) -> None: ...

    def delete(self, name: str) -> None: ...


def _no_admin(caller: Caller) -> bool:
    return False


@dataclass(frozen=True)
class SchedulePorts:
    store: ScheduleStore
    scheduler: Scheduler
    channel_cap: int
    stack_cap: int
    lead_minutes: int
    has_bot: Callable[[], bool]  # whether the platform's bot can post for this team
    is_admin: Callable[[Caller], bool] = _no_admin  # a channel admin of the caller's channel (where the platform says)
    clock: Callable[[], float] = time.time
    new_id: Callable[[], str] = new_schedule_id


def run_schedule(
    command: ScheduleCommand, caller: Caller, platform: str, ports: SchedulePorts | None, voice: Voice
) -> Said:
    sp = voice.speech
    if isinstance(command, ScheduleProblem):
        return Said(problem_text(command, caller.trigger, sp))
    if ports is None:
        return Said(sp.t("Recurring meetings are not set up on this bridge; please tell your administrator."))
    try:
        match command:
            case ScheduleEvery():
                return create_schedule(command, caller, platform, ports, voice)
            case ListSchedules():
                return list_schedules(caller, ports.store, voice)
            case Unschedule():
                return cancel_schedule(command, caller, ports, voice)
    except PeerUnavailable as exc:
        logger.error("schedule command failed: storage or scheduler unavailable", extra={"reason": str(exc)})
        return Said(
            sp.t("The bridge could not reach its storage, so no schedule changed. Please try again in a minute.")
        )
    raise AssertionError(f"unhandled command {command!r}")


def problem_text(problem: ScheduleProblem, trigger: str, sp: Speech) -> str:
    said = sp.t(problem.message, **problem.values)
    return said + " " + sp.t("No schedule was changed; `{trigger} help` shows how to use it.", trigger=trigger)


def create_schedule(command: ScheduleEvery, caller: Caller, platform: str, ports: SchedulePorts, voice: Voice) -> Said:
    sp = voice.speech
    if command.webhook:
        wrong = webhook_problem(command.webhook, platform)
        if wrong is not None:
            return Said(problem_text(wrong, caller.trigger, sp))
    elif not ports.has_bot():
        return Said(no_poster_text(caller.trigger, platform, sp))
    schedule = Schedule(
        schedule_id=ports.new_id(),
        owner=caller.owner,
        platform=platform,
        team_id=caller.team_id,
        channel_id=caller.channel_id,
        creator=caller.user_id,
        creator_name=caller.user_name,
        trigger=caller.trigger,
        days=",".join(command.days),
        hour=command.hour,
        minute=command.minute,
        zone=command.zone,
        topic=command.topic,
        minutes=command.minutes,
        slug_source=command.slug_source,
        webhook=command.webhook,
        language=sp.language,
        created_at=int(ports.clock()),
    )
    try:
        ports.store.add(schedule, ports.channel_cap, ports.stack_cap)
    except AlreadyThere:
        pass  # the same request run again (a queue's redelivery): its schedule is made at most once
    except CapReached as exc:
        count("SchedulesRefused")
        if exc.which == "channel":
            text = sp.nt(
                "This channel already has {n} recurring meeting, as many as it may have. `{trigger} schedules` lists"
                " it; cancel one with `{trigger} unschedule <id>` to make room.",
                "This channel already has {n} recurring meetings, as many as it may have. `{trigger} schedules` lists"
                " them; cancel one with `{trigger} unschedule <id>` to make room.",
                ports.channel_cap,
                trigger=caller.trigger,
            )
        else:
            text = sp.t(
                "This bridge already runs as many recurring meetings as it may ({n}); please tell your administrator.",
                n=sp.number(ports.stack_cap),
            )
        return Said(text)
    expression = cron_expression(command.days, command.hour, command.minute, ports.lead_minutes)
    try:
        ports.scheduler.create(schedule.schedule_id, expression, command.zone)
    except PeerUnavailable as exc:
        logger.error("scheduler refused the schedule: its record is removed", extra={"reason": str(exc)})
        ports.store.remove(schedule)
        return Said(sp.t("The bridge could not set up the schedule, so nothing changed. Please try again in a minute."))
    count("SchedulesCreated")
    logger.info("schedule created", extra={"schedule_id": schedule.schedule_id, "expression": expression})
    text = sp.t(
        "{person} scheduled {topic} in this channel: {when}, {duration} each time. The room is posted here {lead}"
        " before. `{trigger} unschedule {id}` cancels it.",
        person=voice.person(caller.user_id, caller.user_name),
        topic=voice.bold(voice.literal(command.topic)),
        when=when_text(schedule, sp),
        duration=sp.minutes(command.minutes),
        lead=sp.minutes(ports.lead_minutes),
        trigger=caller.trigger,
        id=schedule.schedule_id,
    )
    if command.webhook:
        text += "\n" + sp.t(
            "It is posted through the channel's incoming webhook: such a post cannot be edited later, so it will not"
            " show when the meeting ends."
        )
    return Said(text, in_channel=True)


def no_poster_text(trigger: str, platform: str, sp: Speech) -> str:
    if platform == "mattermost":
        return sp.t(
            "Nothing was scheduled: the bridge has no bot to post the meetings here. Ask your administrator to add a"
            " Mattermost bot token to the bridge, or give this channel's incoming webhook:"
            " `{trigger} every … --webhook https://chat.example.com/hooks/…`.",
            trigger=trigger,
        )
    return sp.t(
        "Nothing was scheduled: the bridge has no bot to post the meetings here. Ask your administrator to add the"
        " Slack app's bot token to the bridge, or give this channel's incoming webhook:"
        " `{trigger} every … --webhook https://hooks.slack.com/services/…`.",
        trigger=trigger,
    )


def list_schedules(caller: Caller, store: ScheduleStore, voice: Voice) -> Said:
    sp = voice.speech
    found = sorted(store.of_channel(caller.owner), key=lambda s: s.created_at)
    if not found:
        return Said(
            sp.t(
                "No recurring meeting is scheduled in this channel. Schedule one with"
                " `{trigger} every weekday 09:00 Europe/Berlin Daily standup 15m`.",
                trigger=caller.trigger,
            )
        )
    lines = [voice.bold(sp.t("Recurring meetings in this channel"))]
    for schedule in found:
        line = sp.t(
            "- `{id}` · {topic} · {when} · {duration} · by {person}",
            id=schedule.schedule_id,
            topic=voice.bold(voice.literal(schedule.topic)),
            when=when_text(schedule, sp),
            duration=sp.minutes(schedule.minutes),
            person=voice.person(schedule.creator, schedule.creator_name),
        )
        if schedule.state == OFF:
            line += " · " + sp.t(REASONS.get(schedule.disabled_reason, REASONS[FAILING]))
        lines.append(line)
    lines.append(sp.t("`{trigger} unschedule <id>` cancels one.", trigger=caller.trigger))
    return Said("\n".join(lines))


def cancel_schedule(command: Unschedule, caller: Caller, ports: SchedulePorts, voice: Voice) -> Said:
    sp = voice.speech
    schedule = ports.store.get(command.schedule_id)
    if schedule is None or schedule.owner != caller.owner:
        return Said(
            sp.t(
                "No recurring meeting `{id}` is scheduled in this channel. `{trigger} schedules` lists them.",
                id=command.schedule_id,
                trigger=caller.trigger,
            )
        )
    topic = voice.bold(voice.literal(schedule.topic))
    if schedule.creator != caller.user_id and not ports.is_admin(caller):
        return Said(sp.t("Only the person who scheduled {topic}, or a channel admin, can cancel it.", topic=topic))
    ports.scheduler.delete(schedule.schedule_id)
    ports.store.remove(schedule)
    count("SchedulesCancelled")
    logger.info("schedule cancelled", extra={"schedule_id": schedule.schedule_id})
    return Said(
        sp.t(
            "{person} cancelled the recurring meeting {topic}: it will no longer be posted here.",
            person=voice.person(caller.user_id, caller.user_name),
            topic=topic,
        ),
        in_channel=True,
    )


def when_text(schedule: Schedule, sp: Speech) -> str:
    """ "every weekday at 09:00 (Europe/Berlin)", in the reader's language."""
    days = schedule.day_list
    at = f"{schedule.hour:02d}:{schedule.minute:02d}"
    if len(days) == len(DAYS):
        return sp.t("every day at {time} ({zone})", time=at, zone=schedule.zone)
    if tuple(days) == WEEKDAYS:
        return sp.t("every weekday at {time} ({zone})", time=at, zone=schedule.zone)
    return sp.t("every {days} at {time} ({zone})", days=day_names(days, sp.language), time=at, zone=schedule.zone)


def day_names(days: Collection[str], language: str) -> str:
    """The days' names in the language, in week order (Babel's, loaded only when a list shows one)."""
    from babel.dates import get_day_names

    names = get_day_names("wide", locale=language)
    return ", ".join(str(names[DAYS.index(day)]) for day in DAYS if day in days)
