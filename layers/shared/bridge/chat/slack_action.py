"""``POST /slack/action``, the Slack app's Interactivity Request URL: the buttons of a room's post.

Slack sends every click on a message's button here as a form with one field, ``payload``: a ``block_actions``
JSON naming the workspace, the channel, the clicker, the button (``action_id``, ``value``), a ``trigger_id`` and
a ``response_url`` for answers about that message. It is signed like a slash command, and checked the same way
(``SignatureGate``: 401 unsigned or stale, nothing of the body read).

- ``join_room``: a link button; Slack opens the link itself and still reports the click, which is acknowledged
  with an empty 200 (otherwise the clicker sees a warning).
- ``end_room``: the button's ``value`` is the room's key and its signature (``bridge.chat.actions``), checked
  against the channel the click came from. A checked click becomes a job on the FIFO job queue (group: the
  channel, like the commands; deduplication id from ``trigger_id``); the worker ends the room, checks that the
  clicker started it, and rewrites the post (``bridge.chat.slack_worker.run_action``).

A value that does not match (forged, or copied onto a message of another channel or for another room) is
answered 403 and counted (``SlackActionsRefused``, reason ``context``); nothing is queued or read from the table.
A 4xx rather than an empty 200: Slack shows the clicker that the click did nothing, which is the truth, and no
refusal reaches the queue, the worker or the table. A click from a workspace the signing secret is not bound to is
refused the same way (reason ``team-not-enabled``).

Slack gives 3 seconds: this route loads no HTTP client and no Whereby client, and never reads the table.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bridge.chat import actions
from bridge.chat.slack import UNREAD, SignatureGate, checked_response_url, refused, signed_form, sized_body
from bridge.core.errors import PeerUnavailable
from bridge.core.http_api import ApiRequest, BadRequest, json_response
from bridge.core.observability import count, count_reason, logger
from bridge.core.queue_messages import tagged_message
from bridge.store.credentials import SecretError
from bridge.store.meetings import channel_owner

MESSAGE_FIELD = "slack_action"  # the worker tells a click's job from the other messages of the queue by this field
JOIN = "join_room"
END = "end_room"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DEDUP_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")

RefusalKind = Literal["signature", "stale", "malformed", "team-not-enabled", "context"]
REFUSAL_KINDS: tuple[RefusalKind, ...] = get_args(RefusalKind)


@dataclass(frozen=True)
class Click:
    """What a ``block_actions`` payload says about one button click."""

    team_id: str
    channel_id: str
    user_id: str
    action_id: str
    value: str
    trigger_id: str
    response_url: str


@dataclass(frozen=True)
class SlackAction:
    """A checked End click, on the job queue for the worker."""

    room_key: str
    team_id: str
    channel_id: str
    user_id: str  # the clicker
    response_url: str  # the click's: answers about the message that holds the button
    trigger_id: str

    @property
    def group_id(self) -> str:
        return f"slack:{self.team_id}:{self.channel_id}"  # the channel's commands and clicks, in order

    @property
    def dedup_id(self) -> str:
        if _DEDUP_ID.fullmatch(self.trigger_id):
            return f"slack-{self.trigger_id}"
        return "slack-" + hashlib.sha256(self.trigger_id.encode()).hexdigest()

    def to_json(self) -> str:
        body = {
            "room_key": self.room_key,
            "team_id": self.team_id,
            "channel_id": self.channel_id,
            "user_id": self.user_id,
            "response_url": self.response_url,
            "trigger_id": self.trigger_id,
        }
        return json.dumps({MESSAGE_FIELD: body}, separators=(",", ":"))


class MalformedSlackAction(ValueError):
    """A queue message that says it is a Slack click but cannot be read; retrying it cannot help."""


def slack_action(body: str) -> SlackAction | None:
    """The click a queue message carries; None when the message is something else."""
    data = tagged_message(body, MESSAGE_FIELD)
    if data is None:
        return None
    try:
        job = data[MESSAGE_FIELD]
        parsed = SlackAction(
            room_key=str(job["room_key"]),
            team_id=str(job["team_id"]),
            channel_id=str(job["channel_id"]),
            user_id=str(job["user_id"]),
            response_url=checked_response_url(str(job["response_url"])),
            trigger_id=str(job["trigger_id"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedSlackAction(f"not a Slack click: {type(exc).__name__}") from None
    if not parsed.trigger_id:
        raise MalformedSlackAction("not a Slack click: no trigger_id")
    return parsed


# the route -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActionRuntime:
    """What the route needs from the production ports (``bridge.runtime.slack_action``)."""

    gate: SignatureGate
    keys: Callable[[bool], Sequence[str]]  # the End buttons' keys (True: read the secret again)
    enqueue: Callable[[SlackAction], None]
    clock: Callable[[], float] = time.time


def answer(request: ApiRequest, runtime: ActionRuntime) -> dict[str, Any]:
    """The whole route: 401 unsigned or stale, 400 unreadable, 403 refused, otherwise an empty 200."""
    try:
        team, fields = signed_form(sized_body(request), request, runtime.gate, max_fields=100)
        click = click_from(_payload(fields))
    except UNREAD as exc:
        kind, response = refused(exc, "click")
        if kind:
            count_reason("SlackActionsRefused", kind)
        return response
    logger.append_keys(team_id=click.team_id, channel_id=click.channel_id, user_id=click.user_id)
    if click.team_id != team:
        count_reason("SlackActionsRefused", "team-not-enabled")
        return json_response(403, {"error": "this workspace is not enabled"})
    if click.action_id != END:
        # The Join button (Slack opens its link itself), or a button of an older post: acknowledged, nothing done.
        return _acknowledged()
    room_key, given = actions.read_slack_value(click.value)
    owner = channel_owner(click.team_id, click.channel_id)
    try:
        signed = actions.is_signed(runtime.keys(False), room_key, owner, given)
        # A key added by a rotation may be newer than the copy this container holds: read it once more.
        signed = signed or actions.is_signed(runtime.keys(True), room_key, owner, given)
    except SecretError as exc:
        logger.error("slack click not handled: no action key", extra={"reason": str(exc)})
        return json_response(503, {"error": "temporarily unavailable, retry later"})
    if not signed:
        count_reason("SlackActionsRefused", "context")
        logger.warning("slack click refused: the button's value is not signed for this room and channel")
        return json_response(403, {"error": "this button does not belong to this channel"})
    logger.append_keys(room_key=room_key)
    job = SlackAction(room_key, click.team_id, click.channel_id, click.user_id, click.response_url, click.trigger_id)
    try:
        runtime.enqueue(job)
    except PeerUnavailable as exc:
        # Slack does not send a click again; a 503 shows the clicker that it did nothing, and the button still works.
        logger.error("slack click not queued", extra={"reason": str(exc)})
        return json_response(503, {"error": "temporarily unavailable, retry later"})
    count("SlackActions")
    return _acknowledged()


def click_from(payload: object) -> Click:
    """The click of a ``block_actions`` payload; ``BadRequest`` naming what is missing."""
    if not isinstance(payload, Mapping) or payload.get("type") != "block_actions":
        raise BadRequest("payload is not a block_actions payload")
    team = _object(payload, "team").get("id")
    user = _object(payload, "user").get("id")
    # A message's click names its channel; the container names it too (the channel object may be left out).
    channel = _object(payload, "channel").get("id") or _object(payload, "container").get("channel_id")
    clicked = payload.get("actions")
    if not (isinstance(clicked, list) and clicked and isinstance(clicked[0], Mapping)):
        raise BadRequest("payload has no action")
    action = clicked[0]
    ids = {"team.id": team, "user.id": user, "channel.id": channel}
    bad = [name for name, value in ids.items() if not (isinstance(value, str) and _ID.fullmatch(value))]
    if bad:
        raise BadRequest(f"payload has a missing or malformed {', '.join(bad)}")
    trigger_id = payload.get("trigger_id")
    if not isinstance(trigger_id, str) or not trigger_id.strip():
        raise BadRequest("payload has no trigger_id")
    response_url = payload.get("response_url")
    if not isinstance(response_url, str):
        raise BadRequest("payload has no response_url")
    action_id, value = action.get("action_id"), action.get("value", "")
    if not isinstance(action_id, str) or not isinstance(value, str):
        raise BadRequest("payload's action has no action_id")
    return Click(
        team_id=str(team),
        channel_id=str(channel),
        user_id=str(user),
        action_id=action_id,
        value=value,
        trigger_id=trigger_id.strip(),
        response_url=checked_response_url(response_url),
    )


def _payload(fields: Mapping[str, list[str]]) -> object:
    values = fields.get("payload") or [""]
    if not values[0]:
        raise BadRequest("missing field: payload")
    try:
        return json.loads(values[0])
    except ValueError:
        raise BadRequest("payload is not JSON") from None


def _object(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = payload.get(name)
    return value if isinstance(value, Mapping) else {}


def _acknowledged() -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": ""}
