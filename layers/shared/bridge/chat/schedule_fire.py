"""A recurring meeting's time has come (less the lead): make its room and post it in the channel.

EventBridge Scheduler invokes this with ``{"schedule_id": …}``. Nothing is duplicated when it invokes again for the
same occurrence (its retries): the room is keyed by the schedule and the occurrence's local date
(``start_once``), and the room record notes that its post went out (``Room.posted``).

The post is the bot's (Mattermost ``POST /api/v4/posts``, Slack ``chat.postMessage``), with the End button; its id
goes on the room so the meeting's end edits it. Or it goes through the channel's incoming webhook, given with
``--webhook``: such a post cannot be edited later, so it keeps its Join link after the meeting ends.

A channel that is gone (Mattermost 403/404, Slack ``channel_not_found``, ``is_archived``, ``not_in_channel``, a
webhook answering 404/410) turns the schedule off at once; any other failed post counts, and ``FAILURES_TO_DISABLE``
occurrences in a row turn it off. Off means the Scheduler's schedule is disabled and the record says why; the
creator is told by a direct message from the bot where there is one, and ``/whereby schedules`` shows it anyway.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from bridge.chat.grammar import StartRoom
from bridge.chat.rooms import Caller, CommandPorts, RoomMade, Voice, start_once
from bridge.chat.schedules import CHANNEL_GONE, DEFAULT_SCHEDULED_TOPIC, FAILING, Scheduler, when_text
from bridge.core.errors import NotFound, PeerUnavailable, Rejected
from bridge.core.i18n import speech
from bridge.core.observability import count, logger
from bridge.store.meetings import Room
from bridge.store.schedules import OFF, Schedule, ScheduleStore

FAILURES_TO_DISABLE = 3
ROOM_POSTED = "room"
SLACK_GONE = frozenset({"channel_not_found", "is_archived", "not_in_channel"})


class PostFailed(Exception):
    """The room could not be posted; ``gone``: the channel is gone for the bridge (never worth trying again)."""

    def __init__(self, reason: str, gone: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.gone = gone


class MattermostPoster(Protocol):
    """``bridge.chat.mattermost_bot.MattermostBot``."""

    def create_post(self, channel_id: str, message: str, props: Mapping[str, Any]) -> str: ...

    def direct_message(self, user_id: str, message: str) -> str: ...


class SlackPoster(Protocol):
    """``bridge.chat.slack_bot.SlackBot``."""

    def post(self, channel: str, text: str, blocks: Sequence[Mapping[str, Any]]) -> str: ...


def _none() -> None:
    return None


def _no_slack(team_id: str) -> None:
    return None


def _no_keys() -> Sequence[str]:
    return ()


@dataclass(frozen=True)
class FirePorts:
    schedules: ScheduleStore
    scheduler: Scheduler
    rooms: CommandPorts
    webhook_post: Callable[[str, Mapping[str, Any]], None]  # raises PostFailed
    lead_minutes: int
    language: str = "en"  # the stack's, for a schedule that kept none
    mattermost_bot: Callable[[], MattermostPoster | None] = _none
    slack_bot: Callable[[str], SlackPoster | None] = _no_slack
    action_keys: Callable[[], Sequence[str]] = _no_keys
    api_base: str = ""  # the End button's clicks go to this API
    clock: Callable[[], float] = time.time


def fire(event: Mapping[str, Any], ports: FirePorts) -> str:
    schedule_id = event.get("schedule_id")
    if not isinstance(schedule_id, str) or not schedule_id:
        logger.error("schedule fired without a schedule id")
        return "no schedule id"
    logger.append_keys(schedule_id=schedule_id)
    schedule = ports.schedules.get(schedule_id)
    if schedule is None:
        # Cancelled between the Scheduler's start and this run, or a schedule left behind: it never fires again.
        ports.scheduler.delete(schedule_id)
        return "no such schedule"
    if schedule.state == OFF:
        return "schedule is off"
    now = ports.clock()
    meeting_at = occurrence(schedule, now, ports.lead_minutes)
    day = meeting_at.date().isoformat()
    voice = _voice(schedule, ports)
    # Whole minutes from now, rounded up: the room is never closed before the meeting's end.
    minutes = max(1, math.ceil((meeting_at.timestamp() + schedule.minutes * 60 - now) / 60))
    command = StartRoom(
        topic=schedule.topic or DEFAULT_SCHEDULED_TOPIC, minutes=minutes, slug_source=schedule.slug_source
    )
    caller = Caller(schedule.team_id, schedule.channel_id, schedule.creator, schedule.creator_name, schedule.trigger)
    rooms = replace(ports.rooms, clock=ports.clock)
    outcome = start_once(command, caller, rooms, schedule.platform, voice, f"schedule|{schedule_id}|{day}")
    if not isinstance(outcome, RoomMade):
        # Whereby refused or was busy; nothing reached the channel, so this occurrence counts as a failed post.
        count("ScheduleFailures")
        return _failed(schedule, day, PostFailed("whereby did not make the room"), ports)
    room = outcome.room
    if ROOM_POSTED in room.posted.split(","):
        return "already posted"
    try:
        # The post names the meeting's own length; the room's end already holds the lead too.
        post_id = post_room(schedule, room, replace(command, minutes=schedule.minutes), voice, ports)
    except PostFailed as exc:
        count("ScheduleFailures")
        return _failed(schedule, day, exc, ports)
    rooms.store.mark(room.room_key, posted=ROOM_POSTED, **({"post_id": post_id} if post_id else {}))
    ports.schedules.posted(schedule, day)
    count("SchedulesFired")
    logger.info("scheduled room posted", extra={"room_key": room.room_key, "occurrence": day})
    return "posted"


def occurrence(schedule: Schedule, now: float, lead_minutes: int) -> datetime:
    """The meeting this firing is for: of the schedule's local time on yesterday, today and tomorrow, the nearest to
    now plus the lead (a late retry still finds its own occurrence, even across midnight)."""
    zone = ZoneInfo(schedule.zone)
    aimed = datetime.fromtimestamp(now, UTC) + timedelta(minutes=lead_minutes)
    local_day = aimed.astimezone(zone).date()
    candidates = [
        datetime(d.year, d.month, d.day, schedule.hour, schedule.minute, tzinfo=zone)
        for d in (local_day - timedelta(days=1), local_day, local_day + timedelta(days=1))
    ]
    return min(candidates, key=lambda at: abs(at.timestamp() - aimed.timestamp()))


def _voice(schedule: Schedule, ports: FirePorts) -> Voice:
    if schedule.platform == "slack":
        from bridge.chat.slack import VOICE as SLACK_VOICE

        base = SLACK_VOICE
    else:
        from bridge.chat.mattermost import VOICE as MATTERMOST_VOICE

        base = MATTERMOST_VOICE
    return replace(base, speech=speech(schedule.language or ports.language))


def post_room(schedule: Schedule, room: Room, command: StartRoom, voice: Voice, ports: FirePorts) -> str:
    """The room's post in the channel; the bot's post id ("" through a webhook)."""
    if schedule.platform == "slack":
        return _post_slack(schedule, room, command, ports)
    return _post_mattermost(schedule, room, command, ports)


def _post_mattermost(schedule: Schedule, room: Room, command: StartRoom, ports: FirePorts) -> str:
    from bridge.chat.mattermost import ACTION_PATH, LiveRoom, end_button, room_post

    caller = Caller(schedule.team_id, schedule.channel_id, schedule.creator, schedule.creator_name, schedule.trigger)
    live = LiveRoom(action_url=f"{ports.api_base}{ACTION_PATH}" if ports.api_base else "", keys=ports.action_keys)
    post = room_post(room, command, caller, end_button(room, live))
    props = {**post["props"], "attachments": post.get("attachments", [])}
    if schedule.webhook:
        ports.webhook_post(schedule.webhook, {"text": post["text"], "props": post["props"], **_attachments(post)})
        return ""
    bot = ports.mattermost_bot()
    if bot is None:
        raise PostFailed("no bot token")
    try:
        return bot.create_post(schedule.channel_id, post["text"], props)
    except NotFound as exc:
        raise PostFailed(str(exc), gone=True) from None
    except Rejected as exc:
        raise PostFailed(str(exc), gone=exc.status == 403) from None
    except PeerUnavailable as exc:
        raise PostFailed(str(exc)) from None


def _attachments(post: Mapping[str, Any]) -> dict[str, Any]:
    return {"attachments": post["attachments"]} if post.get("attachments") else {}


def _post_slack(schedule: Schedule, room: Room, command: StartRoom, ports: FirePorts) -> str:
    from bridge.chat.slack import SlackJob
    from bridge.chat.slack_bot import BotRefused
    from bridge.chat.slack_worker import room_message

    caller = Caller(schedule.team_id, schedule.channel_id, schedule.creator, schedule.creator_name, schedule.trigger)
    message = room_message(
        room, command, SlackJob(caller, ""), ports.action_keys(), speech(room.language or ports.language)
    )
    if schedule.webhook:
        ports.webhook_post(schedule.webhook, {"text": message["text"], "blocks": message["blocks"]})
        return ""
    bot = ports.slack_bot(schedule.team_id)
    if bot is None:
        raise PostFailed("no bot token")
    try:
        return bot.post(schedule.channel_id, message["text"], message["blocks"])
    except BotRefused as exc:
        raise PostFailed(exc.error, gone=exc.error in SLACK_GONE) from None
    except PeerUnavailable as exc:
        raise PostFailed(str(exc)) from None


def _failed(schedule: Schedule, day: str, exc: PostFailed, ports: FirePorts) -> str:
    logger.warning("scheduled room not posted", extra={"reason": exc.reason, "gone": exc.gone, "occurrence": day})
    if exc.gone:
        return disable(schedule, CHANNEL_GONE, ports)
    counted = ports.schedules.failed(schedule, day)
    if counted.failures >= FAILURES_TO_DISABLE:
        return disable(counted, FAILING, ports)
    return f"post failed ({counted.failures} in a row)"


def disable(schedule: Schedule, reason: str, ports: FirePorts) -> str:
    """Off at the Scheduler and on the record; the creator is told once."""
    ports.scheduler.disable(schedule.schedule_id)
    if not ports.schedules.disable(schedule, reason):
        return "already off"
    count("SchedulesDisabled")
    logger.warning("schedule turned off", extra={"reason": reason})
    told = tell_creator(schedule, reason, ports)
    return f"turned off ({reason}); creator {'told' if told else 'not told'}"


def tell_creator(schedule: Schedule, reason: str, ports: FirePorts) -> bool:
    """A direct message from the bot; without one, ``/whereby schedules`` shows the reason."""
    voice = _voice(schedule, ports)
    sp = voice.speech
    values = {
        "topic": voice.bold(voice.literal(schedule.topic)),
        "when": when_text(schedule, sp),
        "trigger": schedule.trigger,
        "id": schedule.schedule_id,
    }
    if reason == CHANNEL_GONE:
        text = sp.t(
            "Your recurring meeting {topic} ({when}, `{id}`) is turned off: the bridge can no longer post in its"
            " channel. Once it can, schedule it again with `{trigger} every …`.",
            **values,
        )
    else:
        text = sp.t(
            "Your recurring meeting {topic} ({when}, `{id}`) is turned off: its room could not be posted the last"
            " {n} times. `{trigger} unschedule {id}` removes it; `{trigger} every …` schedules it again.",
            n=FAILURES_TO_DISABLE,
            **values,
        )
    try:
        if schedule.platform == "slack":
            from bridge.chat.slack_worker import section

            slack = ports.slack_bot(schedule.team_id)
            if slack is None:
                return False
            slack.post(schedule.creator, text, [section(text)])  # a user id: the app's direct messages with them
            return True
        bot = ports.mattermost_bot()
        if bot is None:
            return False
        bot.direct_message(schedule.creator, text)
        return True
    except Exception as exc:  # the record already says why; telling is a courtesy that must not fail the run
        logger.warning("creator not told that the schedule is off", extra={"reason": type(exc).__name__})
        return False


def post_webhook(url: str, message: Mapping[str, Any], timeout: tuple[float, float] = (3.05, 10.0)) -> None:
    """POST a message to a channel's incoming webhook (Mattermost's or Slack's: both take JSON and answer 200).

    404 and 410 mean the webhook or its channel is gone. The address is the webhook's secret: never logged."""
    import requests

    try:
        response = requests.post(url, json=dict(message), timeout=timeout)
    except requests.RequestException as exc:
        raise PostFailed(f"webhook unreachable: {type(exc).__name__}") from None
    if response.status_code == 200:
        return
    raise PostFailed(f"webhook answered {response.status_code}", gone=response.status_code in (404, 410))
