"""``POST /mattermost/action``: a click on a room post's End button, as Mattermost's server relays it.

Mattermost's action request carries no credential of its own: the only proof is the button's context, which the
server keeps from every client and sends back on a click. So the context's signature (``bridge.chat.actions``) is
checked against the room it names and the channel the click came from before anything is read; a forged context, or
one copied onto a post of another channel, gets 403 and changes nothing.

Then the chat core's rules: only the person who started the room ends it; ending deletes the room at Whereby (paid
from the points a waiting person may spend) and marks it deleted. The reply rewrites the post for everyone
(``update``: its message and all its props, which Mattermost replaces whole) and tells the clicker alone what
happened (``ephemeral_text``). A refusal, or Whereby failing, leaves the post as it is.

Mattermost shows an error under the post for anything but a 200; every answer to a signed click is a 200.

The clicker is answered in their language (their Mattermost ``locale``, else the stack's); the post is rewritten in
the room's, its creator's (``Room.language``), whoever clicked.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bridge.chat import actions
from bridge.chat.grammar import EndRoom, topic_shown
from bridge.chat.mattermost import ENDED, SOURCE, VOICE, meeting_props, speech_of
from bridge.chat.rooms import (
    ROOM_STILL_OPEN,
    STORAGE_TROUBLE,
    Caller,
    CommandPorts,
    Voice,
    room_to_end,
    whereby_trouble,
)
from bridge.core.config import Settings
from bridge.core.errors import BridgeError, PeerUnavailable
from bridge.core.http_api import ApiRequest, BadRequest, body_bytes, json_response
from bridge.core.i18n import DEFAULT_LANGUAGE, Speech, speech
from bridge.core.observability import count, logger
from bridge.store.credentials import SecretError
from bridge.store.meetings import DELETED, Room, channel_owner

MAX_BODY_BYTES = 16 * 1024  # an action request is well under 2 KB
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

Reply = dict[str, Any]  # Mattermost's PostActionIntegrationResponse


@dataclass(frozen=True)
class ActionRuntime:
    """What the route needs from the production ports (``bridge.runtime.mattermost_action``)."""

    settings: Callable[[], Settings]
    keys: Callable[[], Sequence[str]]
    ports: Callable[[], CommandPorts]
    clock: Callable[[], float] = time.time
    # A user's Mattermost locale, None when it cannot be known (``CommandRuntime.locale``)
    locale: Callable[[str], str | None] = lambda user_id: None


@dataclass(frozen=True)
class Click:
    """An End click, as read from the action request."""

    caller: Caller
    room_key: str
    signature: str


def answer(request: ApiRequest, runtime: ActionRuntime) -> dict[str, Any]:
    """The whole route: 400 unreadable, 403 not signed for this room and channel, otherwise 200."""
    settings = runtime.settings().require("mattermost", "whereby")  # a bad setting fails here, naming it
    try:
        click = read_click(request)
    except BadRequest as exc:
        count("EndClicksRefused")
        return json_response(400, {"error": str(exc)})
    logger.append_keys(team_id=click.caller.team_id, channel_id=click.caller.channel_id, user_id=click.caller.user_id)
    try:
        keys = runtime.keys()
    except SecretError as exc:
        logger.error("end click not handled: no signing key", extra={"reason": str(exc)})
        return json_response(503, {"error": "temporarily unavailable, retry later"})
    if not actions.is_signed(keys, click.room_key, click.caller.owner, click.signature):
        count("EndClicksRefused")
        logger.warning("end click refused", extra={"reason": "context not signed for this room and channel"})
        return json_response(403, {"error": "this button is not valid here"})
    logger.append_keys(room_key=click.room_key)
    voice = replace(VOICE, speech=speech_of(click.caller.user_id, runtime.locale, settings.language))
    try:
        reply = end(click, runtime.ports(), runtime.clock, voice, settings.language)
    except PeerUnavailable as exc:
        logger.error("end click failed: storage unavailable", extra={"reason": str(exc)})
        reply = {"ephemeral_text": voice.speech.t(STORAGE_TROUBLE)}
    except Exception:
        logger.exception("end click failed")
        reply = {
            "ephemeral_text": voice.speech.t(
                "Something went wrong on our side while ending the room. Please try again."
            )
        }
    return json_response(200, {**reply, "skip_slack_parsing": True})


def read_click(request: ApiRequest) -> Click:
    raw = body_bytes(request)
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("body too large")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body is not a JSON object")
    context = data.get("context")
    if not isinstance(context, dict):
        raise BadRequest("missing context")
    ids = {name: data.get(name) for name in ("team_id", "channel_id", "user_id")}
    bad = [name for name, value in ids.items() if not (isinstance(value, str) and _ID.fullmatch(value))]
    if bad:
        raise BadRequest(f"missing or malformed field(s): {', '.join(bad)}")
    if context.get("action") != actions.END:
        raise BadRequest("unknown action")
    room_key, signature = context.get("room"), context.get("sig")
    if not (isinstance(room_key, str) and isinstance(signature, str)):
        raise BadRequest("missing room or sig in context")
    user_name = data.get("user_name")
    caller = Caller(
        team_id=str(ids["team_id"]),
        channel_id=str(ids["channel_id"]),
        user_id=str(ids["user_id"]),
        user_name=user_name if isinstance(user_name, str) and _USERNAME.fullmatch(user_name) else "",
    )
    return Click(caller, room_key, signature)


def end(
    click: Click,
    ports: CommandPorts,
    clock: Callable[[], float],
    voice: Voice = VOICE,
    default_language: str = DEFAULT_LANGUAGE,
) -> Reply:
    """The chat core's rules for ending a room, then the post's update; its message and props are always sent
    together (a missing message would blank the post, missing props keep the button). ``voice`` speaks to the
    clicker; the post speaks the room's language, else ``default_language`` (the stack's)."""
    caller = click.caller
    found = room_to_end(EndRoom(room_key=click.room_key, reference=click.room_key), caller, ports, SOURCE, voice)
    if isinstance(found, str):
        room = ports.store.get_room(click.room_key)
        if room is not None and room.state == DELETED and _ours(room, caller) and room.creator == caller.user_id:
            # Ended by the command, the sweep or a click whose reply got lost: the post is put right.
            post_speech = speech(room.language or default_language)
            return {"update": ended_update(room, caller, clock, post_speech), "ephemeral_text": found}
        count("EndClicksRefused")
        return {"ephemeral_text": found}
    logger.append_keys(meeting_id=found.meeting_id)
    try:
        ports.whereby.delete_meeting(found.meeting_id)
    except BridgeError as exc:
        count("WherebyFailures")
        logger.warning("whereby did not delete the room", extra={"reason": str(exc)})
        return {"ephemeral_text": whereby_trouble(exc, ROOM_STILL_OPEN, voice.platform, voice.speech)}
    ports.store.mark_deleted(found.room_key)
    count("RoomsEnded")
    logger.info("mattermost room ended by its button")
    label = voice.bold(voice.literal(topic_shown(found.label, voice.speech)))
    return {
        "update": ended_update(found, caller, clock, speech(found.language or default_language)),
        "ephemeral_text": voice.speech.t("You ended {topic}; its link no longer works.", topic=label),
    }


def _ours(room: Room, caller: Caller) -> bool:
    return room.source == SOURCE and room.owner == channel_owner(caller.team_id, caller.channel_id)


def ended_update(room: Room, caller: Caller, clock: Callable[[], float], sp: Speech | None = None) -> dict[str, Any]:
    sp = sp or speech()
    label = VOICE.bold(VOICE.literal(topic_shown(room.label, sp)))
    props: dict[str, Any] = {
        **meeting_props(room, caller.user_name),
        "meeting_status": ENDED,
        "meeting_end_time": int(clock() * 1000),
        "attachments": [],
    }
    return {"message": ended_message(label, sp), "props": props}


def ended_message(label: str, sp: Speech | None = None) -> str:
    return (sp or speech()).t(
        ":white_check_mark: The Whereby room {topic} has ended; its link no longer works.", topic=label
    )
