"""``python -m devstack.demo`` (``make demo``): the story of one deal, then of ``/whereby`` in two chats, on this
machine alone.

Boots the local stack with a "Demo" rule that follows the deal's meeting-time field and gives the deal owner a task,
then plays the deal's life as Kommo and Whereby would send it, one step at a time: the deal enters Demo with a
meeting two days ahead, the meeting moves, people meet in the room, the recording finishes and its link opens it, the
deal is won and its recording is deleted when the retention ends. Then ``/whereby`` in Mattermost and in Slack: each
room's post is the bridge's bot's, it says when the meeting ended, and its End button ends the room for its creator
only. Each step prints what was sent and what the simulators hold afterwards, and checks it (the deal got exactly the
note it should, each post was edited once). Exits 0, or 1 with the reason.

A step is a function of the ``Story``, listed in ``STEPS`` with its title; the steps are numbered in that order.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import requests

from devstack.local import DEMO_STAGE_RULES, DEMO_STATUS, LOCAL_SECRET, LocalConfig, LocalStack
from devstack.mattermost_sim import BOT_USER_ID
from devstack.template import ROOT

if TYPE_CHECKING:
    from bridge.store.recordings import Recording
    from devstack.mattermost_sim import MattermostSimulator
    from devstack.slack_sim import SlackSimulator

STAGE_EVENT = ROOT / "events" / "kommo-stage-change.form"
MATTERMOST_COMMAND = ROOT / "events" / "mattermost-command.body"
WAIT_SECONDS = 20.0
KOMMO_HEADERS = {"content-type": "application/x-www-form-urlencoded", "user-agent": "amoCRM-Webhooks/3.0"}
MEETING_FIELD_ID = 583921  # the deal's "Meeting time" date-time field
MEETING_FIELD_NAME = "Meeting time"
# The local Demo rule, plus the two keys that make the room follow the meeting and give the owner a task.
DEMO_RULE: dict[str, Any] = {
    **DEMO_STAGE_RULES[str(DEMO_STATUS)],
    "meeting_time_field_id": MEETING_FIELD_ID,
    "task": True,
}
WON = 142
CUSTOM_FIELD = re.compile(r"leads\[status\]\[0\]\[custom_fields\]\[(\d+)\]")
RECORDING_LINK = re.compile(r"(\S+)/recordings/([A-Za-z0-9_-]+)")
TOKEN = re.compile(r"(token=)([^&]+)")
ROOM_KEY = re.compile(r"(roomKey=)([^&|>)\s]+)")
DAY = 86400
MINUTE = 60

T = TypeVar("T")


class DemoFailed(Exception):
    """A step of the story did not happen; the message says which and why."""


@dataclass
class ChatRoom:
    """A room made by ``/whereby`` in a chat, and its post: a Mattermost post id or a Slack message ts."""

    platform: str  # "Mattermost" or "Slack"
    meeting: dict[str, Any]  # as the Whereby simulator holds it
    post: str
    ended_line: str = ""  # what the post says once the meeting ended


@dataclass
class Story:
    """The deal the steps act on, and what they have seen so far."""

    stack: LocalStack
    say: Callable[[str], None]
    sample: list[tuple[str, str]]  # the fields of the sample webhook, as Kommo sent them
    lead_id: int
    zone_name: str
    meeting_at: int = 0
    room: dict[str, Any] = field(default_factory=dict)
    notes_seen: int = 0
    link_id: str = ""  # the recording link's id: a credential, shown shortened
    chat_rooms: dict[str, ChatRoom] = field(default_factory=dict)  # by topic

    @property
    def whereby(self) -> Any:
        assert self.stack.whereby_sim is not None
        return self.stack.whereby_sim

    @property
    def kommo(self) -> Any:
        assert self.stack.kommo_sim is not None
        return self.stack.kommo_sim

    @property
    def mattermost(self) -> MattermostSimulator:
        assert self.stack.mattermost_sim is not None
        return self.stack.mattermost_sim

    @property
    def slack(self) -> SlackSimulator:
        assert self.stack.slack_sim is not None
        return self.stack.slack_sim

    def sample_value(self, name: str) -> str:
        return next(value for key, value in self.sample if key == f"leads[status][0][{name}]")

    def when(self, at: int) -> str:
        """``Wed 2 Dec, 14:00 (Europe/Madrid)``, as the notes write it."""
        moment = datetime.fromtimestamp(at, ZoneInfo(self.zone_name))
        return f"{moment:%a} {moment.day} {moment:%b}, {moment:%H:%M} ({self.zone_name})"


# ----- the webhooks, as Kommo sends them -----


def lead_of(body: bytes) -> tuple[int, int]:
    """The lead id and the status it moved into, from a ``leads[status]`` webhook body."""
    fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
    return int(fields["leads[status][0][id]"]), int(fields["leads[status][0][status_id]"])


def lead_hook(
    sample: list[tuple[str, str]], action: str, meeting_at: int, changed_at: int, status_id: int | None = None
) -> bytes:
    """The sample's lead as a ``leads[<action>]`` hook, changed at ``changed_at``, with the meeting-time field in the
    v2 layout (a date-time value sits right under ``[values][0]``), form-encoded as Kommo does."""
    item = "leads[status][0]"
    fields: list[tuple[str, str]] = []
    customs = [(i, CUSTOM_FIELD.match(key)) for i, (key, _) in enumerate(sample)]
    last_custom = max((i for i, match in customs if match), default=len(sample) - 1)
    count = 1 + max((int(match.group(1)) for _, match in customs if match), default=-1)
    for index, (key, value) in enumerate(sample):
        if key in (f"{item}[updated_at]", f"{item}[last_modified]"):
            value = str(changed_at)
        elif key == f"{item}[old_status_id]":
            if action != "status":
                continue  # an update carries the old stage only when the stage changed
            value = value if status_id is None else sample_status(sample)  # it leaves the sample's stage, Demo
        elif key == f"{item}[status_id]" and status_id is not None:
            value = str(status_id)
        fields.append((key.replace(item, f"leads[{action}][0]", 1), value))
        if index == last_custom:
            custom = f"leads[{action}][0][custom_fields][{count}]"
            fields += [
                (f"{custom}[id]", str(MEETING_FIELD_ID)),
                (f"{custom}[name]", MEETING_FIELD_NAME),
                (f"{custom}[values][0]", str(meeting_at)),
            ]
    return urlencode(fields).encode()


def sample_status(sample: list[tuple[str, str]]) -> str:
    return next(value for key, value in sample if key == "leads[status][0][status_id]")


def post_hook(story: Story, path: str, body: bytes, what: str) -> None:
    """Send a Kommo webhook to the gateway, saying what it carries (the meeting-time field too)."""
    url = f"{story.stack.gateway_url}{path}?{urlencode({'token': story.stack.webhook_token})}"
    story.say(f"   POST {path}?token=<local token>  {what}")
    meeting = f"{MEETING_FIELD_ID} ({MEETING_FIELD_NAME}) = {story.meeting_at}: {story.when(story.meeting_at)}"
    story.say(f"     custom field {meeting}")
    response = requests.post(url, data=body, headers=KOMMO_HEADERS, timeout=10)
    if response.status_code != 200 or response.json().get("accepted") != 1:
        raise DemoFailed(f"the gateway answered the webhook with {response.status_code} {response.text}")
    story.say(f"   -> {response.status_code} {response.text.strip()}")


# ----- waiting for the worker, and showing what the simulators hold -----


def wait_until(story: Story, what: str, check: Callable[[], T | None]) -> T:
    """``check``'s first true answer; DemoFailed naming ``what`` when none comes in time."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise DemoFailed(f"{what} within {WAIT_SECONDS:g} s; {why_not(story.stack)}")


def why_not(stack: LocalStack) -> str:
    pump = next(iter(stack.pumps.values()))
    dead_letter_queue, _ = stack.dead_letter_queue_of(pump.trigger.queue)
    return (
        f"job queue depth {stack.queue_depth(pump.trigger.queue)}, dead-letter queue depth "
        f"{stack.queue_depth(dead_letter_queue)}, {pump.stats.failed} failed worker tries "
        "(the worker's log lines above say why)"
    )


def new_note(story: Story, what: str, begins: str, done: Callable[[], bool] = lambda: True) -> dict[str, Any]:
    """The one note the step gives the deal, once ``done`` holds too; DemoFailed for none, more than one, or another
    note than the one that begins with ``begins``."""
    fresh = wait_until(story, f"no {what}", lambda: done() and story.kommo.notes(story.lead_id)[story.notes_seen :])
    if len(fresh) != 1:
        raise DemoFailed(f"{len(fresh)} new notes instead of one {what}")
    text = str(fresh[0]["params"].get("text", ""))
    if not text.startswith(begins):
        raise DemoFailed(f"the {what} is not the one expected: {text.splitlines()[0] if text else '(empty)'}")
    story.notes_seen += 1
    return dict(fresh[0])


def short(secret: str) -> str:
    return f"{secret[:6]}\u2026"


def show_note(story: Story, note: dict[str, Any]) -> None:
    story.say(f"   Kommo: 1 new note on the deal ({note.get('note_type')}):")
    text = str(note["params"].get("text", ""))
    if story.link_id:
        text = text.replace(story.link_id, short(story.link_id))
    for line in text.splitlines():
        story.say(f"     | {line}")


def the_task(story: Story) -> dict[str, Any] | None:
    tasks = story.kommo.tasks(story.lead_id)
    return dict(tasks[0]) if len(tasks) == 1 else None


def show_task(story: Story, task: dict[str, Any], verb: str) -> None:
    story.say(
        f"   Kommo: task {task['id']} (type {task['task_type_id']}, for user {task['responsible_user_id']}) "
        f"{verb} {story.when(int(task['complete_till']))}:"
    )
    story.say(f"     | {task['text']}")


def iso(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def end_of(room: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(str(room["endDate"]).replace("Z", "+00:00")).timestamp())


def show_room(story: Story, room: dict[str, Any]) -> None:
    """The room and its end against the meeting's: it must stay open until the meeting is over."""
    duration = int(DEMO_RULE["duration_minutes"])
    grace = (end_of(room) - story.meeting_at) // MINUTE - duration
    story.say(f"   Whereby: room {room['roomName']}")
    story.say(
        f"     endDate {room['endDate']} = the meeting ({iso(story.meeting_at)}) + {duration} min + {grace} min grace"
    )
    if grace < 0:
        raise DemoFailed(f"the room ends at {room['endDate']}, before the meeting at {iso(story.meeting_at)} is over")


# ----- the steps -----


def enter_demo(story: Story) -> None:
    """A Kommo status webhook: the deal moves into Demo, its meeting-time field two days ahead."""
    story.meeting_at = math.ceil((time.time() + 2 * DAY) / 3600) * 3600
    body = lead_hook(story.sample, "status", story.meeting_at, int(time.time()))
    post_hook(story, "/kommo/stage", body, f"leads[status]: lead {story.lead_id} -> status {DEMO_STATUS}")


def room_note_and_task(story: Story) -> None:
    """The worker made the room, wrote the note and gave the deal owner a Meeting task due at the meeting."""

    def done() -> bool:
        return bool(story.whereby.meetings()) and the_task(story) is not None

    note = new_note(story, "room note", f"Whereby video room for {DEMO_RULE['name']}\nMeeting: ", done)
    [story.room] = story.whereby.meetings()
    show_room(story, story.room)
    show_note(story, note)
    task = the_task(story)
    assert task is not None
    show_task(story, task, "due")


def move_meeting(story: Story) -> None:
    """A ``leads[update]`` webhook: the meeting moves a day later, past the room's end; a new room replaces it."""
    old_room = story.room
    story.meeting_at += DAY
    body = lead_hook(story.sample, "update", story.meeting_at, int(time.time()))
    post_hook(story, "/kommo/stage", body, f"leads[update]: lead {story.lead_id}")
    story.say(f"     (the room's endDate {old_room['endDate']} is before the new meeting's end)")

    def moved() -> bool:
        rooms, task = story.whereby.meetings(), the_task(story)
        return (
            len(rooms) == 1
            and rooms[0]["meetingId"] != old_room["meetingId"]
            and task is not None
            and task["complete_till"] == story.meeting_at
        )

    note = new_note(
        story, "note about the new room", f"Whereby video room for {DEMO_RULE['name']}; the meeting moved", moved
    )
    [story.room] = story.whereby.meetings()
    story.say(f"   Whereby: room {old_room['roomName']} deleted")
    show_room(story, story.room)
    show_note(story, note)
    task = the_task(story)
    assert task is not None
    show_task(story, task, "moved to")


def meet(story: Story) -> None:
    """A host and a guest join and leave, at the meeting time; Whereby signs each event to ``/whereby/events``."""
    room, start = story.room["roomName"], story.meeting_at
    delivered = len(story.whereby.deliveries())
    host = sim_join(story, room, "Ana", "host", start + 2 * MINUTE)
    guest = sim_join(story, room, "Client", "visitor", start + 3 * MINUTE)
    sim_leave(story, guest, "Client", start + 36 * MINUTE)
    sim_leave(story, host, "Ana", start + 37 * MINUTE)
    sent = story.whereby.deliveries()[delivered:]
    answers = sorted({str(d["status"]) for d in sent})
    story.say(f"   Whereby -> POST /whereby/events: {len(sent)} signed events, answered {', '.join(answers)}:")
    story.say(f"     {', '.join(d['type'] for d in sent)}")
    if answers != ["200"]:
        raise DemoFailed(f"the events route answered {', '.join(answers)} to the Whereby simulator's events")
    show_note(story, new_note(story, "meeting-held note", "Meeting held "))


def sim_join(story: Story, room: str, name: str, role: str, at: int) -> str:
    story.say(f"   POST /_sim/rooms/join   {name} ({role}) at {story.when(at)}")
    body = {"roomName": room, "displayName": name, "roleName": role, "at": at}
    response = requests.post(f"{story.whereby.root_url}/_sim/rooms/join", json=body, timeout=10)
    if response.status_code != 200:
        raise DemoFailed(f"the Whereby simulator refused {name}'s join: {response.status_code} {response.text}")
    return str(response.json()["participantId"])


def sim_leave(story: Story, participant: str, name: str, at: int) -> None:
    story.say(f"   POST /_sim/rooms/leave  {name} at {story.when(at)}")
    body = {"participantId": participant, "at": at}
    response = requests.post(f"{story.whereby.root_url}/_sim/rooms/leave", json=body, timeout=10)
    if response.status_code >= 300:
        raise DemoFailed(f"the Whereby simulator refused {name}'s leave: {response.status_code} {response.text}")


def record(story: Story) -> None:
    """The meeting's recording finishes; Whereby signs ``recording.finished`` to ``/whereby/events``; the deal gets
    one note with a link to our API, and the link opens the recording through a fresh Whereby link."""
    room = story.room["roomName"]
    delivered = len(story.whereby.deliveries())
    story.say(f"   POST /_sim/recordings   {json.dumps({'roomName': room})}")
    response = requests.post(f"{story.whereby.root_url}/_sim/recordings", json={"roomName": room}, timeout=10)
    if response.status_code != 201:
        raise DemoFailed(f"the Whereby simulator refused the recording: {response.status_code} {response.text}")
    sent = story.whereby.deliveries()[delivered:]
    answers = sorted({str(d["status"]) for d in sent})
    story.say(
        f"   Whereby -> POST /whereby/events: {', '.join(d['type'] for d in sent)}, answered {', '.join(answers)}"
    )
    if answers != ["200"]:
        raise DemoFailed(f"the events route answered {', '.join(answers) or 'nothing'} to the recording's event")
    note = new_note(story, "recording note", "Recording of the video meeting")
    found = RECORDING_LINK.search(str(note["params"].get("text", "")))
    if found is None or found.group(1) != story.stack.gateway_url:
        raise DemoFailed("the recording note carries no link to this stack's API")
    story.link_id = found.group(2)
    show_note(story, note)
    answer = open_link(story)
    location = answer.headers.get("Location", "")
    if answer.status_code != 302 or not location:
        raise DemoFailed(f"the recording link answered {answer.status_code} {answer.text}, not a redirect")
    shown = TOKEN.sub(lambda m: m.group(1) + short(m.group(2)), location).replace(room.lstrip("/"), short(room[1:]))
    story.say(f"   -> 302 Location: {shown}")
    media = requests.get(location, timeout=10)
    story.say(
        f"   GET <Location> -> {media.status_code} {media.headers.get('content-type')}, {len(media.content)} bytes"
    )
    if media.status_code != 200:
        raise DemoFailed(f"the Whereby link answered {media.status_code}, not the recording")


def open_link(story: Story) -> requests.Response:
    """GET the note's link as a browser would, without following the redirect, to show it."""
    story.say(f"   GET /recordings/{short(story.link_id)}")
    url = f"{story.stack.gateway_url}/recordings/{story.link_id}"
    return requests.get(url, allow_redirects=False, timeout=10)


def win(story: Story) -> None:
    """A status webhook on the close URL: the deal is won (142); its room is deleted and the deal is told; its
    recording is kept until the retention ends, and the sweep deletes it then."""
    body = lead_hook(story.sample, "status", story.meeting_at, int(time.time()), status_id=WON)
    post_hook(story, "/kommo/close", body, f"leads[status]: lead {story.lead_id} -> status {WON} (won)")
    note = new_note(story, "closing note", "Video room closed: deal won.", lambda: not story.whereby.meetings())
    story.say(f"   Whereby: room {story.room['roomName']} deleted; no room left")
    show_note(story, note)
    retain(story)


def retain(story: Story) -> None:
    """The recording's deletion date, as the close recorded it, then a sweep run as if that day had come."""
    from bridge import runtime
    from bridge.store.recordings import RecordingsStore
    from bridge.whereby.sweeper import sweep

    recordings = RecordingsStore(runtime.store())

    def scheduled() -> Recording | None:
        recording = recordings.by_link(story.link_id)  # one item, by the hash of the link id
        return recording if recording is not None and recording.delete_at is not None else None

    recording = wait_until(story, "no deletion date on the recording", scheduled)
    assert recording.delete_at is not None
    closed_at = runtime.store().get_lead(recording.room_owner).closed_at
    days = runtime.settings().recording_retention_days
    if closed_at is None or recording.delete_at != closed_at + days * DAY:
        raise DemoFailed(
            f"the recording is due at {recording.delete_at}, not {days} days after the close ({closed_at})"
        )
    story.say(
        f"   Recording: kept until {story.when(recording.delete_at)} = closed {story.when(closed_at)} "
        f"+ RecordingRetentionDays {days}"
    )
    kept = open_link(story)
    story.say(f"   -> {kept.status_code} (it opens until then)")
    if kept.status_code != 302:
        raise DemoFailed(f"the recording link answered {kept.status_code} before its retention ended")
    after = recording.delete_at + 1
    summary = sweep(runtime.store(), runtime.whereby(), runtime.settings(), clock=lambda: after)
    story.say(
        f"   The sweep, run with its clock 1 s past that: {summary.recordings_deleted} recording deleted; "
        f"Whereby holds {len(story.whereby.media.held())}"
    )
    if summary.recordings_deleted != 1 or story.whereby.media.held():
        raise DemoFailed("the sweep did not delete the recording when its retention ended")
    gone = open_link(story)
    story.say(f"   -> {gone.status_code} {gone.text.strip()}")
    if gone.status_code != 410:
        raise DemoFailed(f"the deleted recording's link answered {gone.status_code}, not 410")


# ----- the chat steps -----

MATTERMOST_HEADERS = {"content-type": "application/x-www-form-urlencoded", "user-agent": "Mattermost-Bot/1.1"}
SLACK_CHANNEL = "C0LOCALCHAN"  # the Slack simulator's channel; the app's bot may post there
SLACK_CREATOR = ("U0LOCALUSER", "anna.petrova")  # the Slack simulator's user
SLACK_STRANGER = ("U0LOCALBOB1", "bob")  # another member of the channel
ACK_SECONDS = 3.0  # Slack shows the user an error when a command is not acknowledged this soon


def quote(story: Story, text: str) -> None:
    """A message as the chat shows it; a host link's ``roomKey`` (a credential) shortened."""
    for line in ROOM_KEY.sub(lambda m: m.group(1) + short(m.group(2)), text).splitlines():
        story.say(f"     | {line}")


def meeting_ids(story: Story) -> set[str]:
    return {str(m["meetingId"]) for m in story.whereby.meetings()}


def new_meeting(story: Story, known: set[str], what: str) -> dict[str, Any]:
    """The one room Whereby got since ``known``; DemoFailed for none or more."""
    fresh = wait_until(
        story,
        f"no Whereby room for {what}",
        lambda: [m for m in story.whereby.meetings() if m["meetingId"] not in known],
    )
    if len(fresh) != 1:
        raise DemoFailed(f"{len(fresh)} Whereby rooms for {what} instead of one")
    meeting = dict(fresh[0])
    story.say(f"   Whereby: room {meeting['roomName']}, endDate {meeting['endDate']}")
    return meeting


def jobs_done(story: Story) -> bool:
    pump = next(iter(story.stack.pumps.values()))
    return story.stack.queue_depth(pump.trigger.queue) == 0


def mattermost_command(story: Story, text: str) -> dict[str, Any]:
    """``/whereby <text>`` as Mattermost sends it (the sample command, with the local command token of its team and a
    ``response_url`` of the simulator); the answer is then taken as the server takes it (an in-channel answer becomes
    a post, an ephemeral one is shown to the caller alone)."""
    fields = dict(parse_qsl(MATTERMOST_COMMAND.read_text().strip(), keep_blank_values=True))
    team = next(iter(LOCAL_SECRET["mattermost_tokens"]))
    fields.update(
        text=text,
        team_id=team,
        token=story.stack.mattermost_token,
        response_url=story.mattermost.new_response_url(fields["channel_id"], fields["user_id"]),
    )
    story.say(
        f"   POST /mattermost/command  text={text!r}, token=<local command token of team {team}>,"
        f" by {fields['user_name']} in channel {fields['channel_id']}"
    )
    response = requests.post(
        f"{story.stack.gateway_url}/mattermost/command", data=urlencode(fields), headers=MATTERMOST_HEADERS, timeout=30
    )
    if response.status_code != 200:
        raise DemoFailed(f"the gateway answered the Mattermost command with {response.status_code} {response.text}")
    reply = dict(response.json())
    shown_to = "the channel" if reply.get("response_type") == "in_channel" else f"{fields['user_name']} only"
    story.say(f"   -> 200, {reply.get('response_type')} (for {shown_to}):")
    quote(story, str(reply.get("text", "")))
    story.mattermost.command_answer(reply, fields["channel_id"], fields["user_id"])
    return reply


def buttons_of_post(post: dict[str, Any]) -> list[str]:
    attachments = post["props"].get("attachments") or []
    return [str(action.get("name")) for attachment in attachments for action in attachment.get("actions") or []]


def mattermost_room(story: Story) -> None:
    """``/whereby Sprint review 30m`` in Mattermost: the caller alone gets the host link, and the bot posts the room
    in the channel with an End button (the post the bridge can edit later)."""
    known, posts_before = meeting_ids(story), {p["id"] for p in story.mattermost.posts()}
    reply = mattermost_command(story, "Sprint review 30m")
    meeting = new_meeting(story, known, "/whereby Sprint review")
    if reply.get("response_type") != "ephemeral" or meeting["hostRoomUrl"] not in str(reply.get("text")):
        raise DemoFailed("Mattermost's answer is not the host link, for the caller alone")
    posts = [p for p in story.mattermost.posts() if p["id"] not in posts_before]
    if len(posts) != 1 or posts[0]["user_id"] != BOT_USER_ID:
        raise DemoFailed(f"{len(posts)} new posts in the channel, not the bot's one post")
    [post] = posts
    props, buttons = post["props"], buttons_of_post(post)
    story.say(
        f"   Mattermost: the bot's post in channel {post['channel_id']} (meeting_status"
        f" {props.get('meeting_status')}, button {', '.join(buttons) or 'none'}):"
    )
    quote(story, post["message"])
    if props.get("meeting_link") != meeting["roomUrl"] or props.get("meeting_status") != "STARTED":
        raise DemoFailed("the bot's post is not this room's, or does not say it started")
    if buttons != ["End meeting"] or meeting["hostRoomUrl"] in json.dumps(post):
        raise DemoFailed("the bot's post has no End button, or shows the host link to the channel")
    story.chat_rooms["Sprint review"] = ChatRoom("Mattermost", meeting, post["id"])


def slack_command(story: Story, text: str) -> Any:
    """``/whereby <text>`` through the Slack simulator, signed with the workspace's signing secret."""
    user, name = SLACK_CREATOR
    story.say(
        f"   POST /slack/command  text={text!r}, signed by the Slack simulator (workspace {story.slack.team_id}),"
        f" by {name} in channel {SLACK_CHANNEL}"
    )
    answer = story.slack.command(
        f"{story.stack.gateway_url}/slack/command", text, channel_id=SLACK_CHANNEL, user_id=user, user_name=name
    )
    story.say(f"   -> {answer.status} in {answer.seconds:.2f} s: {json.dumps(answer.body)}")
    if answer.status != 200 or answer.seconds >= ACK_SECONDS:
        raise DemoFailed(f"the Slack command was answered {answer.status} in {answer.seconds:.1f} s, not 200 at once")
    return answer


def slack_messages(story: Story) -> dict[str, dict[str, Any]]:
    return {str(m["ts"]): m for m in story.slack.messages(SLACK_CHANNEL)}


def buttons_of_message(message: dict[str, Any]) -> list[str]:
    return [
        str(element["text"]["text"])
        for block in message["blocks"]
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    ]


def slack_room_made(story: Story, text: str, topic: str) -> ChatRoom:
    """``/whereby <text>`` in Slack: acknowledged at once, then the worker makes the room, the bot posts it in the
    channel and the caller alone gets the host link through the command's ``response_url``."""
    known, before = meeting_ids(story), set(slack_messages(story))
    answer = slack_command(story, text)
    meeting = new_meeting(story, known, f"/whereby {topic}")

    def posted() -> list[dict[str, Any]] | None:
        fresh = [m for ts, m in slack_messages(story).items() if ts not in before]
        hosts = [p for p in story.slack.posts(answer.response_url) if meeting["hostRoomUrl"] in str(p.get("text"))]
        return fresh if fresh and hosts else None

    fresh = wait_until(story, f"no bot message and host link for {topic} in Slack", posted)
    if len(fresh) != 1 or fresh[0]["by"] != "bot":
        raise DemoFailed(f"{len(fresh)} new messages in the Slack channel, not the bot's one message")
    [message] = fresh
    buttons = buttons_of_message(message)
    story.say(f"   Slack: the bot's message in channel {SLACK_CHANNEL} (buttons {', '.join(buttons) or 'none'}):")
    quote(story, message["text"])
    if meeting["roomUrl"] not in message["text"] or "End room" not in buttons:
        raise DemoFailed("the bot's Slack message is not this room's, or has no End button")
    [host] = [p for p in story.slack.posts(answer.response_url) if meeting["hostRoomUrl"] in str(p.get("text"))]
    story.say(f"   Slack: through the response_url, {host.get('response_type')} (for {SLACK_CREATOR[1]} only):")
    quote(story, str(host["text"]))
    if host.get("response_type") != "ephemeral" or meeting["hostRoomUrl"] in json.dumps(story.slack.messages()):
        raise DemoFailed("the host link is not for the caller alone")
    room = ChatRoom("Slack", meeting, str(message["ts"]))
    story.chat_rooms[topic] = room
    return room


def slack_room(story: Story) -> None:
    """``/whereby Design sync 30m`` in Slack."""
    slack_room_made(story, "Design sync 30m", "Design sync")


def meet_in(story: Story, room: ChatRoom, people: list[tuple[str, str]], start: int, minutes: int) -> None:
    """Everyone joins within the first minute from ``start``; they leave a minute apart, the host last. Whereby's
    session ends when one person is left: ``minutes`` after ``start``, when the last guest leaves."""
    story.say(f"   {room.platform}'s room {room.meeting['roomName']}:")
    name_of_room = room.meeting["roomName"]
    joined = [sim_join(story, name_of_room, name, role, start + i * 20) for i, (name, role) in enumerate(people)]
    for i, (participant, (name, _)) in reversed(list(enumerate(zip(joined, people, strict=True)))):
        sim_leave(story, participant, name, start + (minutes + 1 - i) * MINUTE)
    room.ended_line = f"Meeting ended \u00b7 {minutes} min \u00b7 {len(people)} people"


def chat_edits(story: Story, room: ChatRoom) -> tuple[int, str, str]:
    """How many times the room's post was edited, what it says now, and what else a person sees of it."""
    if room.platform == "Mattermost":
        post = story.mattermost.post(room.post)
        buttons = ", ".join(buttons_of_post(post)) or "none"
        shown = f"meeting_status {post['props'].get('meeting_status')}, button {buttons}"
        return story.mattermost.edits(room.post), str(post["message"]), shown
    message = slack_messages(story)[room.post]
    return len(message["edits"]), str(message["text"]), f"buttons {', '.join(buttons_of_message(message)) or 'none'}"


def meet_in_both(story: Story) -> None:
    """People meet in each chat's room; Whereby signs each join and leave to ``/whereby/events``; when each meeting
    ends, the worker edits its room's post once to say so (duplicates and retries edit nothing more)."""
    rooms = [story.chat_rooms["Sprint review"], story.chat_rooms["Design sync"]]
    delivered, start = len(story.whereby.deliveries()), int(time.time())
    meet_in(story, rooms[0], [("Ana", "host"), ("Ben", "visitor")], start, 25)
    meet_in(story, rooms[1], [("Kim", "host"), ("Lee", "visitor"), ("Max", "visitor")], start, 20)
    sent = story.whereby.deliveries()[delivered:]
    answers = sorted({str(d["status"]) for d in sent})
    story.say(f"   Whereby -> POST /whereby/events: {len(sent)} signed events, answered {', '.join(answers)}")
    if answers != ["200"]:
        raise DemoFailed(f"the events route answered {', '.join(answers)} to the Whereby simulator's events")
    wait_until(
        story,
        "no edit of both posts",
        lambda: all(chat_edits(story, room)[0] for room in rooms) and jobs_done(story),
    )
    for room in rooms:
        edits, text, shown = chat_edits(story, room)
        story.say(f"   {room.platform}: the bot's post edited {edits} time{'s' if edits != 1 else ''} ({shown}):")
        quote(story, text)
        if edits != 1 or room.ended_line not in text:
            raise DemoFailed(f"the {room.platform} post was edited {edits} times, not once to {room.ended_line!r}")
    live = meeting_ids(story)
    if not all(str(room.meeting["meetingId"]) in live for room in rooms):
        raise DemoFailed("a room was deleted when its meeting ended; it lives until its end")
    story.say("   Whereby: both rooms stay open until their endDate (people may meet again); the posts tell the")
    story.say("   meeting that ended and carry no End button any more (the next step clicks one on a fresh room)")


def click_end(story: Story, room: ChatRoom, user: str, name: str) -> Any:
    """``name`` clicks the End button of the room's Slack message; Slack sends the signed click to the gateway."""
    story.say(f"   POST /slack/action  {name} ({user}) clicks End room (signed by the Slack simulator)")
    click = story.slack.click(
        f"{story.stack.gateway_url}/slack/action", room.post, "end_room", user_id=user, user_name=name
    )
    story.say(f"   -> {click.status} in {click.seconds:.2f} s")
    if click.status != 200 or click.seconds >= ACK_SECONDS:
        raise DemoFailed(f"the gateway answered {name}'s click with {click.status} {click.body}")
    return click


def end_button(story: Story) -> None:
    """A fresh Slack room; a stranger clicks its End button and is told only its creator can; the creator's click
    deletes the room at Whereby and the bot's message says it ended."""
    room = slack_room_made(story, "Retro 15m", "Retro")
    live = str(room.meeting["meetingId"])
    user, name = SLACK_STRANGER
    click = click_end(story, room, user, name)
    [told] = wait_until(story, f"no answer to {name}'s click", lambda: story.slack.posts(click.response_url))
    wait_until(story, f"{name}'s click still running", lambda: jobs_done(story))
    story.say(f"   Slack: through the click's response_url, {told.get('response_type')} (for {name} only):")
    quote(story, str(told.get("text")))
    if not str(told.get("text")).startswith("Only the person who started *Retro* can end it."):
        raise DemoFailed("the stranger was not told that only the room's creator can end it")
    if live not in meeting_ids(story) or slack_messages(story)[room.post]["edits"]:
        raise DemoFailed("the stranger's click ended the room or changed its message")
    story.say(f"   Whereby: room {room.meeting['roomName']} still open; the message unchanged")
    click_end(story, room, *SLACK_CREATOR)
    wait_until(
        story,
        "the room not deleted after its creator's click",
        lambda: live not in meeting_ids(story) and jobs_done(story),
    )
    story.say(f"   Whereby: room {room.meeting['roomName']} deleted")
    message = slack_messages(story)[room.post]
    buttons = buttons_of_message(message)
    story.say(f"   Slack: the bot's message edited (buttons {', '.join(buttons) or 'none'}):")
    quote(story, message["text"])
    if "has ended" not in message["text"] or buttons:
        raise DemoFailed("the bot's message does not say the room ended, or still has buttons")


def end_the_rest(story: Story) -> None:
    """The two rooms the meetings left open are ended by their creators with ``/whereby end <room>``."""
    sprint, design = story.chat_rooms["Sprint review"], story.chat_rooms["Design sync"]
    reply = mattermost_command(story, f"end {sprint.meeting['roomName'].lstrip('/')}")
    if reply.get("response_type") != "in_channel" or str(sprint.meeting["meetingId"]) in meeting_ids(story):
        raise DemoFailed("/whereby end did not end the Mattermost room for the channel")
    story.say(f"   Whereby: room {sprint.meeting['roomName']} deleted")
    answer = slack_command(story, f"end {design.meeting['roomName'].lstrip('/')}")

    def answered() -> list[dict[str, Any]] | None:
        if str(design.meeting["meetingId"]) in meeting_ids(story) or not jobs_done(story):
            return None
        return story.slack.posts(answer.response_url)

    told = wait_until(story, "no answer to /whereby end in Slack", answered)
    story.say(f"   Slack: through the response_url, {told[-1].get('response_type')}:")
    quote(story, str(told[-1].get("text")))
    story.say(f"   Whereby: room {design.meeting['roomName']} deleted; no room left")
    _, text, shown = chat_edits(story, design)
    story.say(f"   Slack: the bot's message edited again ({shown}):")
    quote(story, text)
    if "has ended" not in text:
        raise DemoFailed("the bot's Slack message does not say the room ended")
    if story.whereby.meetings():
        raise DemoFailed(f"{len(story.whereby.meetings())} room(s) left at Whereby after /whereby end")


def recurring_meeting(story: Story) -> None:
    """``/whereby every day <HH:MM> UTC Standup 15m`` a few minutes ahead: the schedule is made in the Scheduler
    (moto), the local stand-in fires it when due (its clock moved forward, so nobody waits), and the bot posts the
    room in the channel; the room is then ended and the schedule cancelled."""
    stand_in = story.stack.scheduler_stand_in
    if stand_in is None:
        raise DemoFailed("the local stack runs no Scheduler stand-in")
    meeting = datetime.fromtimestamp(time.time() + 7 * 60, UTC)
    stand_in.tick()  # the stand-in's clock is now: the schedule made next starts from here
    known, posts_before = meeting_ids(story), {p["id"] for p in story.mattermost.posts()}
    reply = mattermost_command(story, f"every day {meeting:%H:%M} UTC Standup 15m")
    found = re.search(r"unschedule ([a-z2-7]{8})", str(reply.get("text")))
    if reply.get("response_type") != "in_channel" or found is None:
        raise DemoFailed("/whereby every did not answer the channel with the schedule's id")
    fired = stand_in.tick(time.time() + 3 * 60)
    if len(fired) != 1:
        raise DemoFailed(f"the Scheduler's stand-in fired {len(fired)} time(s), not once")
    name, when = fired[0]
    story.say(f"   Scheduler (local stand-in, clock moved 3 min ahead): schedule {name} fired for {when:%H:%M} UTC")
    made = new_meeting(story, known, "the recurring meeting")
    posts = [p for p in story.mattermost.posts() if p["id"] not in posts_before and p["user_id"] == BOT_USER_ID]
    if len(posts) != 1 or buttons_of_post(posts[0]) != ["End meeting"]:
        raise DemoFailed("the bot did not post the scheduled room, with its End button, once")
    story.say(f"   Mattermost: the bot's post in channel {posts[0]['channel_id']}:")
    quote(story, posts[0]["message"])
    mattermost_command(story, f"end {made['roomName'].lstrip('/')}")
    mattermost_command(story, f"unschedule {found.group(1)}")
    if story.whereby.meetings():
        raise DemoFailed("the scheduled room is still open at Whereby")


Step = Callable[[Story], None]
STEPS: tuple[tuple[str, Step], ...] = (
    ("The deal enters Demo, with a meeting two days ahead", enter_demo),
    ("The room lives until the meeting; the note and the task appear", room_note_and_task),
    ("The meeting moves a day later, past the room's end", move_meeting),
    ("A host and a guest join and leave", meet),
    ("The recording finishes; its link opens it", record),
    ("The deal is won; the recording is kept until its retention ends, then swept", win),
    ("Mattermost: `/whereby Sprint review 30m`", mattermost_room),
    ("Slack: `/whereby Design sync 30m`", slack_room),
    ("People meet in both rooms; each post says the meeting ended", meet_in_both),
    ("Slack: `/whereby Retro 15m`; a stranger and then the creator click End", end_button),
    ("The creators end the two rooms left open with `/whereby end`", end_the_rest),
    ("Mattermost: `/whereby every day …`; the Scheduler fires it and the bot posts the room", recurring_meeting),
)


# ----- the story -----


def demo_config() -> LocalConfig:
    rules = {str(DEMO_STATUS): DEMO_RULE}
    return LocalConfig(
        port=0, sweeper=False, log_level="WARNING", metrics=False, access_log=False, stage_rules=json.dumps(rules)
    )


def introduce(story: Story) -> None:
    """Kommo holds the deal (its owner gets the task), and the account's time zone is the one notes are in."""
    owner = int(story.sample_value("responsible_user_id"))
    story.kommo.add_lead(
        story.lead_id, name=story.sample_value("name"), status_id=DEMO_STATUS, responsible_user_id=owner
    )
    story.say(
        f"Deal {story.lead_id} ({story.sample_value('name')!r}, owner user {owner}) of account "
        f"{story.stack.config.kommo_subdomain}, time zone {story.zone_name}; the rule of status {DEMO_STATUS}:"
    )
    story.say(f"  {json.dumps(DEMO_RULE)}")


def run_demo(say: Callable[[str], None] = print) -> None:
    """Play every step; DemoFailed when one does not happen."""
    sample = parse_qsl(STAGE_EVENT.read_bytes().decode(), keep_blank_values=True)
    lead_id, _ = lead_of(STAGE_EVENT.read_bytes())
    say("Starting the local stack (moto, Whereby, Kommo, Mattermost and Slack simulators, gateway, queue pump)...")
    started = time.monotonic()
    with LocalStack(demo_config()) as stack:
        assert stack.kommo_sim is not None
        story = Story(stack, say, sample, lead_id, stack.kommo_sim.timezone or "UTC")
        introduce(story)
        for number, (title, step) in enumerate(STEPS, start=1):
            say("")
            say(f"{number}. {title}")
            step(story)
        notes = len(story.kommo.notes(lead_id))
        if notes != story.notes_seen:  # a late copy of a note would show here
            raise DemoFailed(f"the deal has {notes} notes at the end, not the {story.notes_seen} the steps showed")
        tasks = len(story.kommo.tasks(lead_id))
        rooms, recordings = story.whereby.meetings(), story.whereby.media.held()
        if rooms or recordings:
            raise DemoFailed(f"Whereby holds {len(rooms)} room(s) and {len(recordings)} recording(s) at the end")
        posts = [room.platform for room in story.chat_rooms.values()]
        unedited = [topic for topic, room in story.chat_rooms.items() if not chat_edits(story, room)[0]]
        if unedited:
            raise DemoFailed(f"the posts of {', '.join(unedited)} were never edited")
    say("")
    say(
        f"Demo OK in {time.monotonic() - started:.1f} s: {notes} notes and {tasks} task on deal {lead_id}; "
        f"{len(posts)} chat posts by the bots ({posts.count('Mattermost')} Mattermost, {posts.count('Slack')} Slack), "
        "each edited when its meeting or its room ended; no room and no recording left at Whereby."
    )


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        run_demo()
    except DemoFailed as exc:
        print(f"Demo FAILED: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a port taken, a handler that does not import, ...: say what, not a traceback
        print(f"Demo FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
