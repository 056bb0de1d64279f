"""A Slack ``/whereby`` in the worker: make or end the room, then tell the channel through ``response_url``.

Nothing is duplicated under retries. The room's record is keyed by the request's ``trigger_id``
(``MeetingsStore.request_room_key``), so a job run again (SQS redelivers after a failure, or a copy arrives after
its five-minute deduplication window) finds the room it made instead of making another, and the record notes
which of the two posts went out (``Room.posted``), so only the missing ones are sent. A post whose answer is lost
(Slack got it, we did not hear) fails the job and is sent again on the retry: the channel may then read it twice,
the room is still one.

``response_url`` takes five posts within 30 minutes: a job older than ``TOO_LATE_SECONDS`` makes no room, since
nobody could be told of it.

With the workspace's bot token (``ChatBots.slack_tokens``) the room's post is the bot's own message
(``chat.postMessage``; its ``ts`` is kept as ``Room.post_id``), so that it can follow the meeting: the End button and
the session's end rewrite it (``chat.update``). A channel the bot cannot post in (a private channel it was not
invited to) or any other refusal of the bot falls back to the ``response_url`` post (the same blocks, End button
included), is counted (``ChatBotFallbacks``) and the caller's host message says how to get the live post; Slack
answering 429 or 5xx, or not at all, fails the job, which the queue retries. A bot post whose answer is lost is
posted again on the retry, like a ``response_url`` post.

The End button (``bridge.chat.slack_action`` checks its signature) comes here as a job: only the room's creator
ends it; the post then says the room ended and has no button any more.

Whose language: the caller's Slack locale (``users.info`` with ``include_locale``, through the workspace's bot; the
app needs ``users:read``), read once per user and container for an hour (``UserLanguages``); without a bot, the
scope, or an answer, the stack's ``Language``. The lookup never fails a job. The room's post and its later edits
speak the creator's language (``Room.language``); an answer to a clicker speaks the clicker's.

Posts go through ``slack_sdk``'s ``WebhookClient`` and ``WebClient`` (the standard library's HTTP).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from bridge.chat import actions
from bridge.chat.grammar import EndRoom, ExportMeetings, Limits, StartRoom, parse
from bridge.chat.live_posts import ended_line, follow_up_open
from bridge.chat.rooms import (
    ROOM_STILL_OPEN,
    CommandPorts,
    RoomMade,
    Said,
    Voice,
    end_room,
    room_name,
    room_to_end,
    run,
    start_once,
    utc,
    whereby_trouble,
)
from bridge.chat.schedule_commands import ListSchedules, ScheduleEvery, ScheduleProblem, Unschedule
from bridge.chat.slack import SOURCE, VOICE, SlackJob, ephemeral, said, slack_job, slack_literal
from bridge.chat.slack_action import END, JOIN, SlackAction, slack_action
from bridge.chat.slack_bot import NOT_IN_CHANNEL, BotRefused
from bridge.core.errors import BridgeError, PeerUnavailable
from bridge.core.i18n import DEFAULT_LANGUAGE, Speech, language_of, speech
from bridge.core.observability import count, logger
from bridge.store.meetings import CREATING, DELETED, Room, SessionRecord, channel_owner

if TYPE_CHECKING:
    from bridge.chat.schedules import SchedulePorts

TOO_LATE_SECONDS = 25 * 60  # response_url lives 30 minutes; the room's post must still reach the channel
POST_TIMEOUT_SECONDS = 10

Post = Callable[[str, Mapping[str, Any]], bool]  # (response_url, message) → delivered; raises PeerUnavailable
Blocks = list[dict[str, Any]]
ROOM, HOST = "room", "host"  # the parts of ``Room.posted``
FELL_BACK = "fallback:"  # + Slack's code: the bot could not post the room, the command's response_url did
ENDED = "ended:"  # + the click's trigger_id: that End click rewrote the post
LOCALE_SECONDS = 3600  # a user who changes their Slack language is read in it within the hour
UNANSWERED_SECONDS = 300  # Slack did not answer users.info: asked again soon, not on every job meanwhile
LOCALES_KEPT = 5000  # users per container; the oldest are forgotten first


class Bot(Protocol):
    """A workspace's bot (``bridge.chat.slack_bot.SlackBot``)."""

    def post(self, channel: str, text: str, blocks: Sequence[Mapping[str, Any]]) -> str: ...

    def update(self, channel: str, ts: str, text: str, blocks: Sequence[Mapping[str, Any]]) -> None: ...

    def locale(self, user: str) -> str: ...


def _no_bot(team_id: str) -> Bot | None:
    return None


def _no_keys() -> Sequence[str]:
    return ()


class UserLanguages:
    """The catalogue language of each Slack user, from ``users.info`` through the workspace's bot, kept per
    container: one call per user an hour.

    A locale that cannot be read is the stack's language (``fallback``): no bot for the workspace, a refusal
    (``missing_scope`` when the app was installed without ``users:read``, ``user_not_found``), or no answer. The
    lookup never raises: the room matters more than its language.
    """

    def __init__(
        self,
        bot: Callable[[str], Bot | None],
        fallback: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bot = bot
        self._fallback = fallback
        self._clock = clock
        self._known: dict[tuple[str, str], tuple[float, str]] = {}  # (team, user) -> (read until, locale or "")

    def __call__(self, team_id: str, user_id: str) -> str:
        key = (team_id, user_id)
        now = self._clock()
        kept = self._known.get(key)
        if kept is None or kept[0] <= now:
            locale, seconds = self._read(team_id, user_id)
            self._known.pop(key, None)
            while len(self._known) >= LOCALES_KEPT:
                self._known.pop(next(iter(self._known)))
            kept = self._known[key] = (now + seconds, locale)
        return language_of(kept[1], self._fallback())

    def _read(self, team_id: str, user_id: str) -> tuple[str, float]:
        bot = self._bot(team_id)
        if bot is None:
            return "", LOCALE_SECONDS
        try:
            return bot.locale(user_id), LOCALE_SECONDS
        except BotRefused as exc:
            count("SlackLocaleFallbacks")
            logger.warning("slack users.info refused: the stack's language is spoken", extra={"reason": exc.error})
            return "", LOCALE_SECONDS
        except PeerUnavailable as exc:
            count("SlackLocaleFallbacks")
            logger.warning("slack users.info unanswered: the stack's language is spoken", extra={"reason": str(exc)})
            return "", UNANSWERED_SECONDS


def _no_schedules(team_id: str) -> SchedulePorts | None:
    return None


@dataclass(frozen=True)
class SlackWorkerPorts:
    rooms: CommandPorts  # Whereby paid from the chat reserve of the points budget: a person is waiting
    post: Post
    limits: Limits
    clock: Callable[[], float] = time.time  # the jobs' clock, the records of the rooms they make included
    bot: Callable[[str], Bot | None] = _no_bot  # the workspace's bot; None: no token for it
    action_keys: Callable[[], Sequence[str]] = _no_keys  # the End buttons' keys; none: the posts carry no End button
    api_base: str = ""  # the API's address (API_BASE_URL), for ``/whereby export``'s link
    user_language: Callable[[str, str], str] | None = None  # (team, user) → catalogue language; None: the stack's
    language: str = DEFAULT_LANGUAGE  # the stack's ``Language``

    def voice(self, team_id: str, user_id: str) -> Voice:
        """Slack's voice in the user's language."""
        language = self.user_language(team_id, user_id) if self.user_language else self.language
        return replace(VOICE, speech=speech(language))

    def room_speech(self, room: Room) -> Speech:
        """The language of a room's post and its edits: its creator's."""
        return speech(room.language or self.language)

    schedules: Callable[[str], SchedulePorts | None] = _no_schedules  # recurring meetings of a workspace


def runner_for(body: str, ports: Callable[[], SlackWorkerPorts]) -> Callable[[], str] | None:
    """The job a queue message carries (a command or an End click), ready to run; None when it is neither
    (``MalformedSlackJob`` or ``MalformedSlackAction``, ``ValueError``s, when it says it is one and cannot be
    read)."""
    job = slack_job(body)
    if job is not None:
        return partial(run_job, job, ports)
    click = slack_action(body)
    return None if click is None else partial(run_action, click, ports)


def _ports(ports: Callable[[], SlackWorkerPorts]) -> SlackWorkerPorts:
    p = ports()
    return replace(p, rooms=replace(p.rooms, clock=p.clock))  # one clock for the job and the room it makes


def run_job(job: SlackJob, ports: Callable[[], SlackWorkerPorts]) -> str:
    p = _ports(ports)
    caller = job.caller
    logger.append_keys(team_id=caller.team_id, channel_id=caller.channel_id, user_id=caller.user_id)
    voice = p.voice(caller.team_id, caller.user_id)
    command = parse(job.text, p.limits, caller.trigger, job.members.keys(), quote=slack_literal, speech=voice.speech)
    late = p.clock() - job.received_at > TOO_LATE_SECONDS
    match command:
        case StartRoom():
            if late and p.rooms.store.get_room(p.rooms.store.request_room_key(job.trigger_id)) is None:
                count("SlackCommandsTooLate")
                logger.warning("slack command too old to answer: no room made")
                return "too late: no room made"
            outcome = start_once(command, caller, p.rooms, SOURCE, voice, job.trigger_id, job.response_url)
            if outcome is None:
                return "already settled"
            if isinstance(outcome, RoomMade):
                return announce(outcome.room, command, job, p)
            p.post(job.response_url, ephemeral(outcome.text))
            return "refused"
        case EndRoom():
            found = room_to_end(command, caller, p.rooms, SOURCE, voice)
            ended = end_room(command, caller, p.rooms, SOURCE, voice)
            if isinstance(found, Room) and ended.in_channel and found.post_id:
                # The bot's post must not keep a Join link and an End button that no longer work. Best effort: a
                # retry would find the room ended and never tell the channel (a later End click still rewrites it).
                try:
                    edit_post(found, ended_text(found, p.room_speech(found)), p)
                except PeerUnavailable as exc:
                    logger.warning("slack bot could not update the room's post", extra={"reason": str(exc)})
            p.post(job.response_url, said(ended))
            return "ended" if ended.in_channel else "answered"
        case ExportMeetings():
            from bridge.chat.stats import export_link

            # A retried job gives a second link, for the caller alone: harmless, both expire.
            p.post(job.response_url, said(export_link(command, caller, p.action_keys(), p.api_base, p.clock(), voice)))
            return "export link given"
        case ScheduleEvery() | Unschedule() | ListSchedules() | ScheduleProblem():
            from bridge.chat.schedules import request_schedule_id, run_schedule

            # The schedule's id comes from the request: a redelivered job finds its schedule instead of a second.
            scheduling = p.schedules(caller.team_id)
            schedules = scheduling and replace(scheduling, new_id=lambda: request_schedule_id(job.trigger_id))
            p.post(job.response_url, said(run_schedule(command, caller, SOURCE, schedules, VOICE)))
            return "schedule command answered"
    # The route answers the rest itself; a message that carries one anyway is answered the same way.
    outcome = run(command, caller, p.limits, p.rooms, SOURCE, voice)
    if isinstance(outcome, Said):
        p.post(job.response_url, said(outcome))
    return "answered"


def announce(room: Room, command: StartRoom, job: SlackJob, p: SlackWorkerPorts) -> str:
    """The room to the channel, then the host link to the caller: each once, whatever the retries."""
    posted = parts(room.posted)
    sp = p.room_speech(room)
    if ROOM not in posted:
        message = room_message(room, command, job, p.action_keys(), sp)
        post_id, refusal = bot_post(job, message, p)
        posted.append(ROOM)
        if post_id:
            p.rooms.store.mark(room.room_key, posted=",".join(posted), post_id=post_id)
        else:
            delivered = p.post(job.response_url, message)
            posted.extend([FELL_BACK + refusal] if refusal else [])
            p.rooms.store.mark(room.room_key, posted=",".join(posted))
            if not delivered:
                return "room made; Slack refused the room post"
    if HOST not in posted:
        delivered = p.post(job.response_url, host_message(room, command, job, fallback_of(posted), sp))
        posted.append(HOST)
        p.rooms.store.mark(room.room_key, posted=",".join(posted))
        if not delivered:
            return "room made; Slack refused the host post"
    count("SlackRoomsPosted")
    return "room made and posted"


def bot_post(job: SlackJob, message: Mapping[str, Any], p: SlackWorkerPorts) -> tuple[str, str]:
    """(the bot's message ts, "") when the bot posted the room; ("", Slack's code) when it could not; ("", "")
    without a bot. 429, 5xx and no answer raise ``PeerUnavailable``: the job runs again."""
    bot = p.bot(job.caller.team_id)
    if bot is None:
        return "", ""
    try:
        return bot.post(job.caller.channel_id, message["text"], message["blocks"]), ""
    except BotRefused as exc:
        count("ChatBotFallbacks")
        logger.warning("slack bot could not post the room: response_url carries it", extra={"reason": exc.error})
        return "", exc.error


def parts(posted: str) -> list[str]:
    return [part for part in posted.split(",") if part]


def fallback_of(posted: Sequence[str]) -> str:
    """Slack's code when the bot could not post the room, else ""."""
    return next((part.removeprefix(FELL_BACK) for part in posted if part.startswith(FELL_BACK)), "")


def room_message(room: Room, command: StartRoom, job: SlackJob, keys: Sequence[str], sp: Speech) -> dict[str, Any]:
    """For the channel. The only live mentions are the users Slack resolved; the topic is shown literally."""
    room_label = VOICE.bold(slack_literal(room.label))
    lines = [sp.t(":video_camera: {room} · <{url}|Join the Whereby room>", room=room_label, url=room.room_url)]
    invited = [f"<@{job.members[name[1:]]}>" for name in command.mentions if name[1:] in job.members]
    if invited:
        lines.append(sp.t("Invited: {people}", people=" ".join(invited)))
    lines.append(
        sp.t("Open until {until} ({duration}).", until=utc(room.end_at, sp), duration=sp.minutes(command.minutes))
    )
    text = "\n".join(lines)
    return {"response_type": "in_channel", "text": text, "blocks": room_blocks(room, text, keys, sp)}


def room_blocks(room: Room, text: str, keys: Sequence[str], sp: Speech) -> Blocks:
    """The post's text, a Join button and (with a key to sign it) an End button bound to this room and channel."""
    buttons: Blocks = [
        {
            "type": "button",
            "action_id": JOIN,
            "style": "primary",
            "text": plain(sp.t("Join room")),
            "url": room.room_url,
        }
    ]
    if keys:
        buttons.append(
            {
                "type": "button",
                "action_id": END,
                "style": "danger",
                "text": plain(sp.t("End room")),
                "value": actions.slack_value(keys, room.room_key, room.owner),
                # Ending removes everyone from the call: a slip of the mouse must not do it.
                "confirm": {
                    "title": plain(sp.t("End this room?")),
                    "text": plain(sp.t("Everyone in the call leaves and the link stops working.")),
                    "confirm": plain(sp.t("End room")),
                    "deny": plain(sp.t("Keep it")),
                    "style": "danger",
                },
            }
        )
    return [section(text), {"type": "actions", "block_id": "whereby_room", "elements": buttons}]


def plain(text: str) -> dict[str, str]:
    # Slack cuts a button's label at 75 characters and a confirm's title at 100: every translation is shorter.
    return {"type": "plain_text", "text": text}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def host_message(room: Room, command: StartRoom, job: SlackJob, fallback: str, sp: Speech) -> dict[str, Any]:
    room_label = VOICE.bold(slack_literal(room.label))
    lines = [
        sp.t(
            "Only you can see this. Your host link for {room}: <{url}|host link>",
            room=room_label,
            url=room.host_room_url,
        ),
        sp.t(
            "To close the room before {until}: `{trigger} end {name}`",
            until=utc(room.end_at, sp),
            trigger=job.caller.trigger,
            name=room_name(room),
        ),
    ]
    if command.not_invited:
        lines.append(
            sp.t(
                "Not invited: {names}. Only people of this workspace, named one by one, are invited; the whole"
                " channel is never notified.",
                names=slack_literal(", ".join(command.not_invited)),
            )
        )
    if fallback:
        lines.append(fallback_hint(fallback, sp))
    return ephemeral("\n".join(lines))


def fallback_hint(error: str, sp: Speech) -> str:
    """How the caller gets the live post the bot could not make."""
    if error in NOT_IN_CHANNEL:
        return sp.t(
            "The Whereby app is not a member of this channel, so this post will not show when the meeting ends."
            " To get live posts here, add the app to the channel (`/invite @` and the app's name, or the channel's"
            " details → Integrations → Add apps)."
        )
    return sp.t(
        "The Whereby app could not post here (Slack said `{error}`), so this post will not show when the meeting"
        " ends; please tell your Slack administrator.",
        error=error,
    )


# the End button --------------------------------------------------------------------------------------------------
def run_action(click: SlackAction, ports: Callable[[], SlackWorkerPorts]) -> str:
    """A checked End click: only the room's creator ends it, and the post then says it ended (no buttons).

    Each End click's rewrite is noted on the room (``ended:<trigger_id>``), so a retried job rewrites at most once
    more (the same content) and never sends a second message. A click on a room a click already ended gets a
    sentence; a room ended another way (``/whereby end``, the sweep) has its post rewritten by the click.
    """
    p = _ports(ports)
    logger.append_keys(team_id=click.team_id, channel_id=click.channel_id, user_id=click.user_id)
    logger.append_keys(room_key=click.room_key)
    store = p.rooms.store
    room = store.get_room(click.room_key)
    if room is None or room.source != SOURCE or room.owner != channel_owner(click.team_id, click.channel_id):
        sp = clicker(click, p)
        return tell(click, sp.t("This button's room was not started in this channel, so nothing was changed."), p)
    label = VOICE.bold(slack_literal(room.label))
    if room.creator != click.user_id:
        return tell(click, clicker(click, p).t("Only the person who started {room} can end it.", room=label), p)
    done = parts(room.posted)
    if ENDED + click.trigger_id in done:
        return "already done"  # this job ran before and rewrote the post; only its answer was lost
    if room.state == DELETED and any(part.startswith(ENDED) for part in done):
        return tell(click, clicker(click, p).t("{room} has already ended.", room=label), p)
    if room.state == CREATING or not room.meeting_id:
        sp = clicker(click, p)
        return tell(click, sp.t("{room} is still being created; try again in a few seconds.", room=label), p)
    if room.state != DELETED:
        logger.append_keys(meeting_id=room.meeting_id)
        try:
            p.rooms.whereby.delete_meeting(room.meeting_id)
        except BridgeError as exc:
            count("WherebyFailures")
            logger.warning("whereby did not delete the room", extra={"reason": str(exc)})
            return tell(click, whereby_trouble(exc, ROOM_STILL_OPEN, VOICE.platform, clicker(click, p)), p)
        store.mark_deleted(room.room_key)
        count("RoomsEnded")
    outcome = show_ended(room, click.response_url, p)
    store.mark(room.room_key, posted=",".join([*done, ENDED + click.trigger_id]))
    return outcome


def clicker(click: SlackAction, p: SlackWorkerPorts) -> Speech:
    """The language of the person who clicked: an answer only they see is in it."""
    return p.voice(click.team_id, click.user_id).speech


def tell(click: SlackAction, text: str, p: SlackWorkerPorts) -> str:
    """A sentence for the clicker only, below the message they clicked."""
    p.post(click.response_url, {"response_type": "ephemeral", "replace_original": False, "text": text})
    return "answered"


def show_ended(room: Room, response_url: str, p: SlackWorkerPorts) -> str:
    """The room's post says it ended, without buttons: the bot's own message by its ts, else the clicked message."""
    text = ended_text(room, p.room_speech(room))
    if edit_post(room, text, p):
        return "ended; post updated"
    p.post(response_url, {"replace_original": True, "text": text, "blocks": [section(text)]})
    return "ended; clicked message replaced"


def ended_text(room: Room, sp: Speech) -> str:
    label = VOICE.bold(slack_literal(room.label))
    return sp.t(":white_check_mark: The Whereby room {room} has ended; its link no longer works.", room=label)


def edit_post(room: Room, text: str, p: SlackWorkerPorts) -> bool:
    """Rewrite the bot's post of the room (no buttons); False when there is none or the bot cannot.

    The ts is only ever the one stored on this room's record: no other message can be edited.
    """
    if not room.post_id:
        return False
    team_id, channel_id = team_and_channel(room.owner)
    bot = p.bot(team_id)
    if bot is None:
        return False
    try:
        bot.update(channel_id, room.post_id, text, [section(text)])
    except BotRefused as exc:
        count("ChatBotFallbacks")
        logger.warning("slack bot could not update the room's post", extra={"reason": exc.error})
        return False
    return True


def team_and_channel(owner: str) -> tuple[str, str]:
    """(team, channel) of a chat room's owner, ``CHANNEL#<team>#<channel>``."""
    _, team_id, channel_id = owner.split("#", 2)
    return team_id, channel_id


# the meeting's end -----------------------------------------------------------------------------------------------
def tell_session_ended(room: Room, record: SessionRecord, repeat: bool, ports: Callable[[], SlackWorkerPorts]) -> str:
    """``bridge.chat.live_posts``'s teller for Slack: the bot's post edited to say the meeting ended (the same text
    again on a repeat changes nothing); without one, a follow-up through the command's ``response_url`` while it
    takes posts (30 minutes; the command used two of its five), never twice."""
    p = ports()
    text = session_ended_text(room, record, p.room_speech(room))
    if edit_post(room, text, p):
        return "post edited"
    if repeat or not follow_up_open(room, p.clock()):
        return "nothing: no bot post, and no follow-up possible"
    delivered = p.post(room.response_url, {"response_type": "in_channel", "replace_original": False, "text": text})
    return "follow-up posted" if delivered else "follow-up refused by Slack"


def session_ended_text(room: Room, record: SessionRecord, sp: Speech) -> str:
    """ "*Standup* · Meeting ended · 34 min · 3 people": what a person scanning the channel wants to know."""
    return sp.t("{room} · {line}", room=VOICE.bold(slack_literal(room.label)), line=ended_line(record, sp))


def webhook_post(url: str, message: Mapping[str, Any]) -> bool:
    """POST a message to ``response_url``: True when Slack took it, False when it refused it for good (the URL
    expired or was used five times); ``PeerUnavailable`` when worth retrying (no answer, 429, 5xx)."""
    from slack_sdk.webhook import WebhookClient

    try:
        response = WebhookClient(url, timeout=POST_TIMEOUT_SECONDS).send_dict(dict(message))
    except (OSError, ValueError) as exc:  # urllib's URLError and timeouts are OSErrors
        raise PeerUnavailable(f"slack response_url post failed: {type(exc).__name__}") from None
    if response.status_code == 200:
        return True
    if response.status_code == 429 or response.status_code >= 500:
        raise PeerUnavailable(f"slack response_url answered {response.status_code}")
    count("SlackPostsRefused")
    # The body is Slack's short error code (expired_url, used_url, invalid_payload), never a secret.
    logger.warning("slack refused the post", extra={"status": response.status_code, "reason": response.body[:100]})
    return False
