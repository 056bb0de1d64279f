"""The Mattermost adapter of ``/whereby``: authenticate, read the fields, run one use-case of the chat core
(``bridge.chat.rooms``), answer the way Mattermost reads it.

Mattermost waits at most 30 s, never retries, and shows the caller only "command failed" for anything but a 200
with a JSON body. So every outcome for an authenticated caller is a 200; failures are ephemeral sentences.

A room's post carries an End button (a signed context, ``bridge.chat.actions``; clicks go to
``bridge.chat.mattermost_action``). With a bot token (``ChatBotSecret``) the bridge makes the post itself through
Mattermost's API, so that it can be edited when the meeting ends (``bridge.chat.mattermost_live``), and the command
answers the caller alone; without one, or when the bot cannot post in the channel, the command's own answer is the
post, as it always was, and the command's ``response_url`` is kept for one follow-up.

Every answer is in the caller's language: their Mattermost ``locale``, read through the bot
(``bridge.chat.mattermost_bot.UserLocales``), else the stack's ``Language``. The room's post is in its creator's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, get_args

from botocore.exceptions import ClientError

from bridge.chat import actions, rooms
from bridge.chat.grammar import Command, ExportMeetings, Limits, StartRoom, literal, parse, topic_shown
from bridge.chat.rooms import (  # noqa: F401  (the Mattermost route's names, as they were before the core moved out)
    STORAGE_TROUBLE,
    Caller,
    CommandPorts,
    RoomMade,
    Voice,
    prefix_for,
    room_name,
    utc,
    whereby_trouble,
)
from bridge.chat.schedule_commands import SCHEDULE_COMMANDS
from bridge.core.config import Settings
from bridge.core.errors import BridgeError, PeerUnavailable, Rejected
from bridge.core.http_api import ApiRequest, BadRequest, form_fields, is_callback_url, json_response, token_matches
from bridge.core.i18n import N_, Speech, language_of, speech
from bridge.core.observability import count, count_reason, logger
from bridge.store.credentials import SecretError, TeamTokens
from bridge.store.meetings import MeetingsStore, Room

if TYPE_CHECKING:
    from bridge.chat.schedules import SchedulePorts

SOURCE = "mattermost"
PROVIDER = "whereby"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TRIGGER = re.compile(r"/[a-z0-9._-]{1,64}")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # echoed as a live @mention: nothing Markdown can take
_HOST = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
ACTION_PATH = "/mattermost/action"
END_BUTTON_ID = "endroom"  # Mattermost routes a click by /actions/{id:[A-Za-z0-9]+}: no dash, no underscore
STARTED, ENDED = "STARTED", "ENDED"  # props.meeting_status, as the Zoom plugin writes it
# The bot's post is tried only this early in the request: with its own timeouts (2 s + 4 s) the answer still
# leaves inside the function's 25 s, and Mattermost's 30 s.
BOT_POST_BEFORE_SECONDS = 15.0
# Mattermost Markdown (the web app's marked fork and the apps' CommonMark).
VOICE = Voice(
    platform="Mattermost",
    literal=literal,
    bold=lambda text: f"**{text}**",
    link=lambda text, url: f"[{text}]({url})",
    # "@alice" as plain text: the name shows, nobody is notified (the answers that name people are ephemeral anyway)
    person=lambda user_id, name: literal(f"@{name}" if name else user_id),
)

# Why a command was refused, as the ``reason`` dimension of ``CommandsRefused`` (the dashboard draws one line each).
RefusalKind = Literal["token", "other-team", "malformed", "team-not-enabled"]
REFUSAL_KINDS: tuple[RefusalKind, ...] = get_args(RefusalKind)

Reply = dict[str, Any]  # a Mattermost CommandResponse, as sent on the wire
T = TypeVar("T")


class PostMaker(Protocol):
    """The bot's one call the command makes (``bridge.chat.mattermost_bot.MattermostBot``)."""

    def create_post(self, channel_id: str, message: str, props: Mapping[str, Any]) -> str: ...


class TokenGate:
    """The command tokens, each bound to its team; an unknown token re-reads the secret (at most every ``interval``).

    Mattermost switches to a regenerated token at once, so a token just added to the secret must work before the
    cached copy of the secret expires.
    """

    def __init__(
        self,
        tokens: Callable[[bool], TeamTokens],
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = tokens
        self._interval = interval
        self._clock = clock
        self._refreshed_at: float | None = None

    def team_of(self, token: str) -> str | None:
        """The team the token was issued for, or None when it is no command token of ours."""
        team = _team_of(token, self._tokens(False))
        if team is not None:
            return team
        now = self._clock()
        if self._refreshed_at is not None and now - self._refreshed_at < self._interval:
            return None
        self._refreshed_at = now
        return _team_of(token, self._tokens(True))

    def forget(self) -> None:
        self._refreshed_at = None


def _team_of(token: str, teams: TeamTokens) -> str | None:
    """Every token is compared, in constant time, so the answer's timing says nothing about which team matched."""
    found = None
    for team, tokens in teams.items():
        if token_matches(token, tokens):
            found = team
    return found


@dataclass(frozen=True)
class CommandRuntime:
    """What the route needs from the production ports (``bridge.runtime.mattermost``)."""

    settings: Callable[[], Settings]
    token_gate: TokenGate
    ports: Callable[[], CommandPorts]
    action_keys: Callable[[], Sequence[str]] = lambda: ()  # the End button's signing keys; none: no button
    bot: Callable[[], PostMaker | None] = lambda: None  # None: no bot configured
    monotonic: Callable[[], float] = time.monotonic
    # A user's Mattermost locale ("es", "pt-BR"), None when it cannot be known (no bot, a failed lookup)
    locale: Callable[[str], str | None] = lambda user_id: None
    schedules: Callable[[], SchedulePorts | None] = lambda: None  # recurring meetings; None: not set up


@dataclass(frozen=True)
class LiveRoom:
    """What one request needs to make its room's post live; the secrets are read only when a room is made."""

    response_url: str = ""  # kept on the room for the no-bot follow-up ("" when missing or not acceptable)
    action_url: str = ""  # where the End button's clicks go ("" : no button)
    keys: Callable[[], Sequence[str]] = lambda: ()
    bot: Callable[[], PostMaker | None] = lambda: None
    time_left: Callable[[], bool] = lambda: True  # whether a bot post still fits in the request
    api_base: str = ""  # the API's address, for ``/whereby export``'s link ("": no link can be given)
    schedules: Callable[[], SchedulePorts | None] = lambda: None  # recurring meetings; None: not set up


# the route ------------------------------------------------------------------------------------------------------
def answer(event: ApiRequest, runtime: CommandRuntime) -> dict[str, Any]:
    """The whole route: 400 unreadable, 401 bad token, otherwise always 200 with a CommandResponse."""
    started = runtime.monotonic()
    settings = runtime.settings().require("mattermost", "whereby")  # a bad setting fails here, naming it
    try:
        fields = form_fields(event)
        team = runtime.token_gate.team_of(_first(fields, "token"))
        if team is None:
            count_reason("CommandsRefused", "token")
            logger.warning("mattermost command refused", extra={"reason": "missing or wrong token"})
            return json_response(401, {"error": "missing or wrong token"})
        caller = caller_from(fields)
        if caller.team_id != team:
            # The token is good but the body names another team: someone holding one team's token is trying to
            # act in another team. Nothing is done.
            count_reason("CommandsRefused", "other-team")
            logger.warning("mattermost command refused", extra={"reason": "token of another team"})
            return json_response(401, {"error": "this token is not valid for this team"})
    except BadRequest as exc:
        count_reason("CommandsRefused", "malformed")
        return json_response(400, {"error": str(exc)})
    except SecretError as exc:
        logger.error("mattermost command not handled: no credentials", extra={"reason": str(exc)})
        return json_response(503, {"error": "temporarily unavailable, retry later"})
    logger.append_keys(team_id=caller.team_id, channel_id=caller.channel_id, user_id=caller.user_id)
    if settings.mattermost_team_ids and caller.team_id not in settings.mattermost_team_ids:
        count_reason("CommandsRefused", "team-not-enabled")
        sp = speech(settings.language)  # a team we do not serve: no lookup for its users
        return json_response(200, ephemeral(sp.t("`{trigger}` is not enabled for this team.", trigger=caller.trigger)))
    voice = replace(VOICE, speech=speech_of(caller.user_id, runtime.locale, settings.language))
    limits = Limits(settings.mattermost_default_minutes, settings.mattermost_max_minutes)
    command = parse(_first(fields, "text"), limits, caller.trigger, team_members(fields), speech=voice.speech)
    logger.append_keys(subcommand=type(command).__name__)
    live = LiveRoom(
        response_url=kept_response_url(_first(fields, "response_url")),
        action_url=action_url(settings, event),
        api_base=api_base(settings, event),
        keys=runtime.action_keys,
        bot=runtime.bot,
        time_left=lambda: runtime.monotonic() - started < BOT_POST_BEFORE_SECONDS,
        schedules=runtime.schedules,
    )
    try:
        reply = run(command, caller, limits, runtime.ports(), live, voice)
    except PeerUnavailable as exc:
        logger.error("mattermost command failed: storage unavailable", extra={"reason": str(exc)})
        reply = ephemeral(voice.speech.t(STORAGE_TROUBLE))
    except Exception:
        logger.exception("mattermost command failed")
        reply = ephemeral(
            voice.speech.t(
                "Something went wrong on our side while running `{trigger}`. Please try again.", trigger=caller.trigger
            )
        )
    count("MattermostCommands")
    return json_response(200, reply)


def speech_of(user_id: str, locale: Callable[[str], str | None], default: str) -> Speech:
    """The user's language: their Mattermost locale when it can be read, else ``default`` (the stack's). The lookup
    never fails a command: whatever goes wrong, the answer is given in ``default``."""
    try:
        tag = locale(user_id)
    except Exception:
        logger.exception("user locale lookup failed: the stack's language is spoken")
        tag = None
    return speech(language_of(tag, default))


def caller_from(fields: Mapping[str, list[str]]) -> Caller:
    ids = {name: _first(fields, name).strip() for name in ("team_id", "channel_id", "user_id")}
    bad = [name for name, value in ids.items() if not _ID.fullmatch(value)]
    if bad:
        raise BadRequest(f"missing or malformed field(s): {', '.join(bad)}")
    user_name = _first(fields, "user_name").strip()
    trigger = _first(fields, "command").strip().lower()
    return Caller(
        **ids,
        user_name=user_name if _ID.fullmatch(user_name.replace(".", "")) else "",
        trigger=trigger if _TRIGGER.fullmatch(trigger) else "/whereby",
    )


def team_members(fields: Mapping[str, list[str]]) -> frozenset[str]:
    """The usernames Mattermost resolved in the text to users of the team.

    ``user_mentions`` and ``user_mentions_ids`` repeat and pair by position; lists that do not pair invite nobody.
    """
    names, ids = fields.get("user_mentions") or [], fields.get("user_mentions_ids") or []
    if len(names) != len(ids):
        logger.warning("mattermost mentions ignored", extra={"reason": "user_mentions and their ids do not pair"})
        return frozenset()
    return frozenset(
        name.lower()
        for name, user_id in zip(names, ids, strict=True)
        if _USERNAME.fullmatch(name.lower()) and _ID.fullmatch(user_id)
    )


def kept_response_url(url: str) -> str:
    """The command's ``response_url`` if a follow-up may go there (https; plain http to this machine only, for the
    local stack), else "": a bad one is not kept, and the command runs on without it."""
    url = url.strip()
    return url if is_callback_url(url) and len(url) <= 2000 else ""


def action_url(settings: Settings, event: ApiRequest) -> str:
    """Where the End button's clicks go: ``API_BASE_URL``, else the API as Mattermost reached it (a function behind
    the HTTP API cannot name the API in its own settings: the template would go round in a circle)."""
    base = api_base(settings, event)
    return f"{base}{ACTION_PATH}" if base else ""


def api_base(settings: Settings, event: ApiRequest) -> str:
    """``API_BASE_URL``, else ``https://`` and the API's host as Mattermost reached it; "" when neither is known."""
    if settings.api_base_url:
        return settings.api_base_url
    return f"https://{event.domain_name}" if _HOST.fullmatch(event.domain_name) else ""


def run(
    command: Command,
    caller: Caller,
    limits: Limits,
    ports: CommandPorts,
    live: LiveRoom | None = None,
    voice: Voice = VOICE,
) -> Reply:
    live = live or LiveRoom()
    if isinstance(command, StartRoom):
        outcome = rooms.start_room(command, caller, ports, SOURCE, voice, response_url=live.response_url)
    elif isinstance(command, ExportMeetings):
        from bridge.chat.stats import export_link

        keys = _optional(live.keys, "the export link's signing key") or ()
        outcome = export_link(command, caller, keys, live.api_base, ports.clock(), voice)
    elif isinstance(command, SCHEDULE_COMMANDS):
        from bridge.chat.schedules import run_schedule

        outcome = run_schedule(command, caller, SOURCE, live.schedules(), voice)
    else:
        outcome = rooms.run(command, caller, limits, ports, SOURCE, voice)
    if isinstance(outcome, RoomMade):
        return announce(outcome.room, outcome.command, caller, ports.store, live)
    return {**ephemeral(outcome.text), "response_type": "in_channel" if outcome.in_channel else "ephemeral"}


def announce(room: Room, command: StartRoom, caller: Caller, store: MeetingsStore, live: LiveRoom) -> Reply:
    """The room's post: made by the bot when there is one (the caller then gets the host link alone), else the
    command's own in_channel answer. A bot that cannot post here costs the room nothing: the answer falls back.
    Everything is in the room's language, its creator's (``Room.language``)."""
    sp = speech(room.language)
    post = room_post(room, command, caller, end_button(room, live, sp))
    bot = _optional(live.bot, "the chat bot's token")
    if bot is None:
        return post
    if not live.time_left():
        return _fallback(post, "late", sp.t(BOT_TROUBLE_HINT))
    props = {**post["props"], "attachments": post.get("attachments", [])}
    try:
        post_id = bot.create_post(caller.channel_id, post["text"], props)
    except Rejected as exc:
        if exc.status == 403:
            return _fallback(post, "not-member", sp.t(NOT_A_MEMBER_HINT))
        return _fallback(post, "refused", sp.t(BOT_TROUBLE_HINT), str(exc))
    except BridgeError as exc:
        return _fallback(post, "unavailable", sp.t(BOT_TROUBLE_HINT), str(exc))
    try:
        store.mark(room.room_key, post_id=post_id)
    except (PeerUnavailable, ClientError) as exc:
        # The post is in the channel; it only will not follow the meeting. Nothing else to undo.
        logger.error("bot post made but not recorded on the room", extra={"reason": str(exc), "post_id": post_id})
    count("ChatBotPosts")
    logger.info("mattermost bot posted the room", extra={"post_id": post_id})
    return ephemeral(host_text(room, command, caller))


NOT_A_MEMBER_HINT = N_(
    "The bridge's bot is not a member of this channel, so the post above will not show when the meeting ends."
    " To get posts that follow the meeting here, add the bot to the channel (the channel's menu, Members, Add)."
)
BOT_TROUBLE_HINT = N_(
    "The bridge's bot could not post here just now, so the post above will not show when the meeting ends."
)


def _fallback(post: Reply, reason: str, hint: str, detail: str = "") -> Reply:
    count("ChatBotFallbacks")
    logger.warning(
        "mattermost bot did not post: the command's answer is the post", extra={"reason": reason, "detail": detail}
    )
    [host] = post["extra_responses"]
    return {**post, "extra_responses": [{**host, "text": f"{host['text']}\n{hint}"}]}


def _optional(read: Callable[[], T], what: str) -> T | None:
    """A secret the post can do without: unreadable, the post is made as if it were not configured."""
    try:
        return read()
    except SecretError as exc:
        logger.error(f"{what} could not be read: the post is made without it", extra={"reason": str(exc)})
        return None


def end_button(room: Room, live: LiveRoom, sp: Speech | None = None) -> dict[str, Any] | None:
    """The End button (contracts: Mattermost interactive message buttons); its context is never shown to clients,
    and is signed for this room and this channel only."""
    if not live.action_url:
        return None
    keys = _optional(live.keys, "the End button's signing key")
    if not keys:
        return None
    context = {"action": actions.END, "room": room.room_key, "sig": actions.sign(keys, room.room_key, room.owner)}
    return {
        "id": END_BUTTON_ID,
        "type": "button",
        "name": (sp or speech()).t("End meeting"),
        "style": "danger",
        "integration": {"url": live.action_url, "context": context},
    }


# answers --------------------------------------------------------------------------------------------------------
def ephemeral(text: str) -> Reply:
    return {"response_type": "ephemeral", "text": text, "skip_slack_parsing": True}


def room_post(room: Room, command: StartRoom, caller: Caller, button: Mapping[str, Any] | None = None) -> Reply:
    """The link for the channel; the host link in an ephemeral extra response, for the caller only; in the room's
    language (its creator's).

    The only live mentions are the users Mattermost resolved; the topic is shown literally everywhere. The End
    button goes in the answer's ``attachments`` (a command answer's ``props.attachments`` is ignored).
    """
    sp = speech(room.language)
    lines = [
        sp.t(
            ":video_camera: **{topic}** · [Join the Whereby room]({url})",
            topic=literal(topic_shown(room.label, sp)),
            url=room.room_url,
        )
    ]
    if command.mentions:
        lines.append(sp.t("Invited: {people}", people=" ".join(command.mentions)))
    lines.append(
        sp.t("Open until {until} ({duration}).", until=utc(room.end_at, sp), duration=sp.minutes(command.minutes))
    )
    reply: Reply = {
        "response_type": "in_channel",
        "text": "\n".join(lines),
        "skip_slack_parsing": True,
        "props": {**meeting_props(room, caller.user_name), "meeting_status": STARTED},
        "extra_responses": [ephemeral(host_text(room, command, caller))],
    }
    if button:
        reply["attachments"] = [{"actions": [dict(button)]}]
    return reply


def meeting_props(room: Room, creator_username: str = "") -> dict[str, str]:
    """The props the meeting plugins share (Zoom, MS Teams), so their 30 s duplicate checks read our posts too."""
    props = {"meeting_provider": PROVIDER, "meeting_link": room.room_url, "meeting_topic": literal(room.label)}
    if creator_username:
        props["meeting_creator_username"] = creator_username
    return props


def host_text(room: Room, command: StartRoom, caller: Caller) -> str:
    sp = speech(room.language)
    lines = [
        sp.t(
            "Only you can see this. Your host link for **{topic}**: {url}",
            topic=literal(topic_shown(room.label, sp)),
            url=room.host_room_url,
        ),
        sp.t(
            "To close the room before {until}: `{trigger} end {name}`",
            until=utc(room.end_at, sp),
            trigger=caller.trigger,
            name=room_name(room),
        ),
    ]
    if command.not_invited:
        lines.append(
            sp.t(
                "Not invited: {people}. Only people of this team, named one by one, are invited; the whole channel is"
                " never notified.",
                people=literal(", ".join(command.not_invited)),
            )
        )
    return "\n".join(lines)


def _first(fields: Mapping[str, list[str]], name: str) -> str:
    values = fields.get(name) or [""]
    return values[0]
