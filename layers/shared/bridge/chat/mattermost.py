"""The ``/whereby`` slash command: authenticate, parse, run one use-case, answer the way Mattermost reads it.

Mattermost waits at most 30 s, never retries, and shows the caller only "command failed" for anything but a 200
with a JSON body. So every outcome for an authenticated caller is a 200; failures are ephemeral sentences.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from botocore.exceptions import ClientError

from bridge.chat.grammar import (
    MIN_MINUTES,
    SLUG_FALLBACK,
    Command,
    EndRoom,
    Invalid,
    Limits,
    ListRooms,
    ShowHelp,
    StartRoom,
    human_minutes,
    literal,
    parse,
)
from bridge.core.config import Settings
from bridge.core.errors import BridgeError, BudgetExhausted, PeerUnavailable, Throttled, Unauthorized
from bridge.core.http_api import ApiRequest, BadRequest, form_fields, json_response, token_matches
from bridge.core.observability import count, count_reason, logger
from bridge.store.credentials import SecretError, TeamTokens
from bridge.store.meetings import ACTIVE, CREATING, DELETED, Conflict, MeetingsStore, Room, channel_owner
from bridge.whereby.client import PREFIX_MAX, Meeting, RoomRequest, WherebyClient, room_prefix, slug

SOURCE = "mattermost"
PROVIDER = "whereby"
LIST_LIMIT = 20
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TRIGGER = re.compile(r"/[a-z0-9._-]{1,64}")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # echoed as a live @mention: nothing Markdown can take
STORAGE_TROUBLE = "The bridge could not reach its storage, so nothing changed. Please try again in a minute."

# Why a command was refused, as the ``reason`` dimension of ``CommandsRefused`` (the dashboard draws one line each).
RefusalKind = Literal["token", "other-team", "malformed", "team-not-enabled"]
REFUSAL_KINDS: tuple[RefusalKind, ...] = get_args(RefusalKind)

Reply = dict[str, Any]  # a Mattermost CommandResponse, as sent on the wire


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
class Caller:
    team_id: str
    channel_id: str
    user_id: str
    user_name: str = ""
    trigger: str = "/whereby"  # as the admin named the command, so hints show what the user types

    @property
    def owner(self) -> str:
        return channel_owner(self.team_id, self.channel_id)


@dataclass(frozen=True)
class CommandPorts:
    store: MeetingsStore
    whereby: WherebyClient
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class CommandRuntime:
    """What the route needs from the production ports (``bridge.runtime.mattermost``)."""

    settings: Callable[[], Settings]
    token_gate: TokenGate
    ports: Callable[[], CommandPorts]


# the route ------------------------------------------------------------------------------------------------------
def answer(event: ApiRequest, runtime: CommandRuntime) -> dict[str, Any]:
    """The whole route: 400 unreadable, 401 bad token, otherwise always 200 with a CommandResponse."""
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
        return json_response(200, ephemeral(f"`{caller.trigger}` is not enabled for this team."))
    limits = Limits(settings.mattermost_default_minutes, settings.mattermost_max_minutes)
    command = parse(_first(fields, "text"), limits, caller.trigger, team_members(fields))
    logger.append_keys(subcommand=type(command).__name__)
    try:
        reply = run(command, caller, limits, runtime.ports())
    except PeerUnavailable as exc:
        logger.error("mattermost command failed: storage unavailable", extra={"reason": str(exc)})
        reply = ephemeral(STORAGE_TROUBLE)
    except Exception:
        logger.exception("mattermost command failed")
        reply = ephemeral(f"Something went wrong on our side while running `{caller.trigger}`. Please try again.")
    count("MattermostCommands")
    return json_response(200, reply)


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


def run(command: Command, caller: Caller, limits: Limits, ports: CommandPorts) -> Reply:
    match command:
        case StartRoom():
            return start_room(command, caller, ports)
        case ListRooms():
            return list_rooms(caller, ports)
        case EndRoom():
            return end_room(command, caller, ports)
        case ShowHelp():
            return ephemeral(help_text(caller.trigger, limits))
        case Invalid(problem=problem):
            return ephemeral(f"{problem} Nothing was changed; `{caller.trigger} help` shows how to use it.")
    raise AssertionError(f"unhandled command {command!r}")


# use-cases ------------------------------------------------------------------------------------------------------
def start_room(command: StartRoom, caller: Caller, ports: CommandPorts) -> Reply:
    """Claim the record, create the room at Whereby, complete the record: the sweeper can finish any crash."""
    now = int(ports.clock())
    room = Room(
        room_key=ports.store.new_room_key(),
        source=SOURCE,
        owner=caller.owner,
        creator=caller.user_id,
        label=command.topic,
        created_at=now,
        end_at=now + command.minutes * 60,
    )
    try:
        ports.store.claim_room(room)
    except Conflict:
        return ephemeral(STORAGE_TROUBLE)
    logger.append_keys(room_key=room.room_key)
    try:
        meeting = _create_meeting(room, command.slug_source, ports)
    except BridgeError as exc:
        count("CommandsBusy" if isinstance(exc, BudgetExhausted) else "WherebyFailures")
        logger.warning("whereby did not create the room", extra={"reason": str(exc)})
        return ephemeral(whereby_trouble(exc, "No room was made"))
    try:
        done = ports.store.complete_room(_with_meeting(room, meeting))
    except (Conflict, PeerUnavailable) as exc:
        _release(room.room_key, ports.store)  # the sweeper deletes the room at Whereby: no live record owns it
        logger.error("room made but not recorded", extra={"reason": str(exc), "meeting_id": meeting.meeting_id})
        return ephemeral(
            "Whereby made the room but the bridge could not record it, so it will be removed. Please try again."
        )
    count("RoomsCreated")
    logger.info("mattermost room created", extra={"meeting_id": done.meeting_id})
    return room_post(done, command, caller)


def list_rooms(caller: Caller, ports: CommandPorts) -> Reply:
    rooms = _open_rooms(caller, ports)[:LIST_LIMIT]
    if not rooms:
        return ephemeral(
            f"No Whereby room is open in this channel. Start one with `{caller.trigger} [topic] [duration]`."
        )
    lines = ["**Open Whereby rooms in this channel**, newest first:"]
    for room in rooms:
        line = f"- **{literal(room.label)}** · [{_name(room)}]({room.room_url}) · until {utc(room.end_at)}"
        if room.creator == caller.user_id:
            line += f" · yours ([host link]({room.host_room_url}))"
        lines.append(line)
    return ephemeral("\n".join(lines))


def end_room(command: EndRoom, caller: Caller, ports: CommandPorts) -> Reply:
    found = _room_to_end(command, caller, ports)
    if isinstance(found, str):
        return ephemeral(found)
    logger.append_keys(room_key=found.room_key, meeting_id=found.meeting_id)
    try:
        ports.whereby.delete_meeting(found.meeting_id)
    except BridgeError as exc:
        count("WherebyFailures")
        logger.warning("whereby did not delete the room", extra={"reason": str(exc)})
        return ephemeral(whereby_trouble(exc, "The room is still open"))
    ports.store.mark_deleted(found.room_key)
    count("RoomsEnded")
    text = f":white_check_mark: The Whereby room **{literal(found.label)}** has ended; its link no longer works."
    # Ending a room of another channel (named by its link) must not post into this one.
    return {**ephemeral(text), "response_type": "in_channel" if found.owner == caller.owner else "ephemeral"}


def _room_to_end(command: EndRoom, caller: Caller, ports: CommandPorts) -> Room | str:
    """The room to end, or why there is none (a sentence for the caller)."""
    if command.room_key is None:
        mine = [room for room in _open_rooms(caller, ports) if room.creator == caller.user_id]
        return mine[0] if mine else f"You have no open room in this channel. `{caller.trigger} list` shows them all."
    room = ports.store.get_room(command.room_key)
    if room is None or room.source != SOURCE or (room.owner != caller.owner and room.creator != caller.user_id):
        return (
            f"No room “{literal(command.reference)}” was started in this channel."
            f" `{caller.trigger} list` shows them all."
        )
    label = literal(room.label)
    if room.creator != caller.user_id:
        return f"Only the person who started **{label}** can end it."
    if room.state == DELETED:
        return f"**{label}** has already ended."
    if room.state == CREATING or not room.meeting_id:
        return f"**{label}** is still being created; try again in a few seconds."
    return room


def _open_rooms(caller: Caller, ports: CommandPorts) -> list[Room]:
    now = ports.clock()
    return [
        room for room in ports.store.rooms_of(caller.owner, limit=100) if room.state == ACTIVE and room.end_at > now
    ]


def _create_meeting(room: Room, slug_source: str, ports: CommandPorts) -> Meeting:
    request = RoomRequest(
        end_date=datetime.fromtimestamp(room.end_at, UTC), prefix=prefix_for(slug_source, room.room_key)
    )
    try:
        return ports.whereby.create_meeting(request)
    except Exception:
        # Give the claim up: if Whereby made the room before failing, no live record owns it and the sweeper
        # deletes it.
        _release(room.room_key, ports.store)
        raise


def prefix_for(slug_source: str, room_key: str) -> str:
    """The room-name prefix: slugged topic (or "meeting") and our key."""
    return room_prefix(slug_source if slug(slug_source, PREFIX_MAX) else SLUG_FALLBACK, room_key)


def _with_meeting(room: Room, meeting: Meeting) -> Room:
    return replace(
        room,
        meeting_id=meeting.meeting_id,
        room_url=meeting.room_url,
        host_room_url=meeting.host_room_url,
        room_name=meeting.room_name,
    )


def _release(room_key: str, store: MeetingsStore) -> None:
    """Best effort: a claim left behind is still found by the sweeper."""
    with suppress(PeerUnavailable, ClientError):
        store.mark_deleted(room_key)


# answers --------------------------------------------------------------------------------------------------------
def ephemeral(text: str) -> Reply:
    return {"response_type": "ephemeral", "text": text, "skip_slack_parsing": True}


def room_post(room: Room, command: StartRoom, caller: Caller) -> Reply:
    """The link for the channel; the host link in an ephemeral extra response, for the caller only.

    The only live mentions are the users Mattermost resolved; the topic is shown literally everywhere.
    """
    label = literal(room.label)
    lines = [f":video_camera: **{label}** · [Join the Whereby room]({room.room_url})"]
    if command.mentions:
        lines.append("Invited: " + " ".join(command.mentions))
    lines.append(f"Open until {utc(room.end_at)} ({human_minutes(command.minutes)}).")
    props = {"meeting_provider": PROVIDER, "meeting_link": room.room_url, "meeting_topic": label}
    if caller.user_name:
        props["meeting_creator_username"] = caller.user_name
    host = (
        f"Only you can see this. Your host link for **{label}**: {room.host_room_url}\n"
        f"To close the room before {utc(room.end_at)}: `{caller.trigger} end {_name(room)}`"
    )
    if command.not_invited:
        host += (
            f"\nNot invited: {literal(', '.join(command.not_invited))}. Only people of this team, named one by one,"
            " are invited; the whole channel is never notified."
        )
    return {
        "response_type": "in_channel",
        "text": "\n".join(lines),
        "skip_slack_parsing": True,
        "props": props,
        "extra_responses": [ephemeral(host)],
    }


def help_text(trigger: str, limits: Limits) -> str:
    return "\n".join(
        [
            f"**{trigger}** makes Whereby video rooms for this channel.",
            f"- `{trigger} [topic] [duration]` starts a room: the link goes to the channel, the host link to you"
            f" only. The duration is the last word, like `30m`, `2h` or `1h30m` (default"
            f" {human_minutes(limits.default_minutes)}, at least {human_minutes(MIN_MINUTES)} and at most"
            f" {human_minutes(limits.max_minutes)}). People of this team you @mention are invited.",
            f"- `{trigger} start [topic] [duration]` does the same for a topic that begins with help, list, end or"
            " start.",
            f"- `{trigger} list` shows the open rooms of this channel.",
            f"- `{trigger} end [room]` ends your latest room here, or the room you name by its name or link. Only"
            " the person who started a room can end it.",
            f"Example: `{trigger} Sprint review @alice 45m`",
        ]
    )


def whereby_trouble(exc: BridgeError, outcome: str) -> str:
    """A human sentence for a Whereby failure; ``outcome`` says what that means for the room."""
    if isinstance(exc, Throttled):
        return f"Whereby is busy and asked us to wait {wait_phrase(exc.retry_after)}. {outcome}; please try again then."
    if isinstance(exc, PeerUnavailable):
        return f"Whereby did not answer in time. {outcome}; please try again in a minute."
    if isinstance(exc, Unauthorized):
        return f"Whereby refused the bridge's API key. {outcome}; please tell your Mattermost administrator."
    status = getattr(exc, "status", None)
    code = f" (HTTP {status})" if status else ""
    return f"Whereby refused the request{code}. {outcome}; please tell your Mattermost administrator."


def wait_phrase(seconds: float | None) -> str:
    if seconds is None:
        return "a minute"
    whole = max(1, math.ceil(seconds))
    if whole <= 90:
        return f"{whole} second{'s' if whole != 1 else ''}"
    return f"{math.ceil(whole / 60)} minutes"


def utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _name(room: Room) -> str:
    return room.room_name.lstrip("/")


def _first(fields: Mapping[str, list[str]], name: str) -> str:
    values = fields.get(name) or [""]
    return values[0]
