"""The Mattermost adapter of ``/whereby``: authenticate, read the fields, run one use-case of the chat core
(``bridge.chat.rooms``), answer the way Mattermost reads it.

Mattermost waits at most 30 s, never retries, and shows the caller only "command failed" for anything but a 200
with a JSON body. So every outcome for an authenticated caller is a 200; failures are ephemeral sentences.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bridge.chat import rooms
from bridge.chat.grammar import Command, Limits, StartRoom, human_minutes, literal, parse
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
from bridge.core.config import Settings
from bridge.core.errors import PeerUnavailable
from bridge.core.http_api import ApiRequest, BadRequest, form_fields, json_response, token_matches
from bridge.core.observability import count, count_reason, logger
from bridge.store.credentials import SecretError, TeamTokens
from bridge.store.meetings import Room

SOURCE = "mattermost"
PROVIDER = "whereby"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TRIGGER = re.compile(r"/[a-z0-9._-]{1,64}")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # echoed as a live @mention: nothing Markdown can take
# Mattermost Markdown (the web app's marked fork and the apps' CommonMark).
VOICE = Voice(
    platform="Mattermost",
    literal=literal,
    bold=lambda text: f"**{text}**",
    link=lambda text, url: f"[{text}]({url})",
)

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
    outcome = rooms.run(command, caller, limits, ports, SOURCE, VOICE)
    if isinstance(outcome, RoomMade):
        return room_post(outcome.room, outcome.command, caller)
    return {**ephemeral(outcome.text), "response_type": "in_channel" if outcome.in_channel else "ephemeral"}


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
        f"To close the room before {utc(room.end_at)}: `{caller.trigger} end {room_name(room)}`"
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


def _first(fields: Mapping[str, list[str]], name: str) -> str:
    values = fields.get(name) or [""]
    return values[0]
