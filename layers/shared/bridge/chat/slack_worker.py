"""A Slack ``/whereby`` in the worker: make or end the room, then tell the channel through ``response_url``.

Nothing is duplicated under retries. The room's record is keyed by the request's ``trigger_id``
(``MeetingsStore.request_room_key``), so a job run again (SQS redelivers after a failure, or a copy arrives after
its five-minute deduplication window) finds the room it made instead of making another, and the record notes
which of the two posts went out (``Room.posted``), so only the missing ones are sent. A post whose answer is lost
(Slack got it, we did not hear) fails the job and is sent again on the retry: the channel may then read it twice,
the room is still one.

``response_url`` takes five posts within 30 minutes: a job older than ``TOO_LATE_SECONDS`` makes no room, since
nobody could be told of it.

Posts go through ``slack_sdk``'s ``WebhookClient`` (the standard library's HTTP, nothing more to load).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from bridge.chat.grammar import EndRoom, Limits, StartRoom, human_minutes, parse
from bridge.chat.rooms import (
    CommandPorts,
    RoomMade,
    Said,
    end_room,
    room_name,
    run,
    start_once,
    utc,
)
from bridge.chat.slack import SOURCE, VOICE, SlackJob, ephemeral, said, slack_job, slack_literal
from bridge.core.errors import PeerUnavailable
from bridge.core.observability import count, logger
from bridge.store.meetings import Room

TOO_LATE_SECONDS = 25 * 60  # response_url lives 30 minutes; the room's post must still reach the channel
POST_TIMEOUT_SECONDS = 10

Post = Callable[[str, Mapping[str, Any]], bool]  # (response_url, message) → delivered; raises PeerUnavailable


@dataclass(frozen=True)
class SlackWorkerPorts:
    rooms: CommandPorts  # Whereby paid from the chat reserve of the points budget: a person is waiting
    post: Post
    limits: Limits
    clock: Callable[[], float] = time.time


def runner_for(body: str, ports: Callable[[], SlackWorkerPorts]) -> Callable[[], str] | None:
    """The job a queue message carries, ready to run; None when it is no Slack command (``MalformedSlackJob``, a
    ``ValueError``, when it says it is one and cannot be read)."""
    job = slack_job(body)
    return None if job is None else partial(run_job, job, ports)


def run_job(job: SlackJob, ports: Callable[[], SlackWorkerPorts]) -> str:
    p = ports()
    caller = job.caller
    logger.append_keys(team_id=caller.team_id, channel_id=caller.channel_id, user_id=caller.user_id)
    command = parse(job.text, p.limits, caller.trigger, job.members.keys(), quote=slack_literal)
    late = p.clock() - job.received_at > TOO_LATE_SECONDS
    match command:
        case StartRoom():
            if late and p.rooms.store.get_room(p.rooms.store.request_room_key(job.trigger_id)) is None:
                count("SlackCommandsTooLate")
                logger.warning("slack command too old to answer: no room made")
                return "too late: no room made"
            outcome = start_once(command, caller, p.rooms, SOURCE, VOICE, job.trigger_id, job.response_url)
            if outcome is None:
                return "already settled"
            if isinstance(outcome, RoomMade):
                return announce(outcome.room, command, job, p)
            p.post(job.response_url, ephemeral(outcome.text))
            return "refused"
        case EndRoom():
            ended = end_room(command, caller, p.rooms, SOURCE, VOICE)
            p.post(job.response_url, said(ended))
            return "ended" if ended.in_channel else "answered"
    # The route answers the rest itself; a message that carries one anyway is answered the same way.
    outcome = run(command, caller, p.limits, p.rooms, SOURCE, VOICE)
    if isinstance(outcome, Said):
        p.post(job.response_url, said(outcome))
    return "answered"


def announce(room: Room, command: StartRoom, job: SlackJob, p: SlackWorkerPorts) -> str:
    """The room to the channel, then the host link to the caller: each once, whatever the retries."""
    posted = [part for part in room.posted.split(",") if part]
    for part, message in (("room", room_message(room, command, job)), ("host", host_message(room, command, job))):
        if part in posted:
            continue
        delivered = p.post(job.response_url, message)
        posted.append(part)
        p.rooms.store.mark(room.room_key, posted=",".join(posted))
        if not delivered:
            return f"room made; Slack refused the {part} post"
    count("SlackRoomsPosted")
    return "room made and posted"


def room_message(room: Room, command: StartRoom, job: SlackJob) -> dict[str, Any]:
    """For the channel. The only live mentions are the users Slack resolved; the topic is shown literally."""
    label = slack_literal(room.label)
    lines = [f":video_camera: *{label}* · <{room.room_url}|Join the Whereby room>"]
    invited = [f"<@{job.members[name[1:]]}>" for name in command.mentions if name[1:] in job.members]
    if invited:
        lines.append("Invited: " + " ".join(invited))
    lines.append(f"Open until {utc(room.end_at)} ({human_minutes(command.minutes)}).")
    return {"response_type": "in_channel", "text": "\n".join(lines)}


def host_message(room: Room, command: StartRoom, job: SlackJob) -> dict[str, Any]:
    label = slack_literal(room.label)
    trigger = job.caller.trigger
    text = (
        f"Only you can see this. Your host link for *{label}*: <{room.host_room_url}|host link>\n"
        f"To close the room before {utc(room.end_at)}: `{trigger} end {room_name(room)}`"
    )
    if command.not_invited:
        text += (
            f"\nNot invited: {slack_literal(', '.join(command.not_invited))}. Only people of this workspace, named"
            " one by one, are invited; the whole channel is never notified."
        )
    return ephemeral(text)


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
