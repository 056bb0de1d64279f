"""The meetings table: one record per room, one per Kommo lead, read by key or by index, never scanned.

Keys (single table, ``pk``/``sk``):
- ``ROOM#<room key>`` / ``ROOM``: a room. The room key is ours, made before the room exists and embedded in the
  room's name at Whereby, so a room found at Whereby can always be tied back to its record.
- ``LEAD#<account>#<lead id>`` / ``LEAD``: the lead's current room per stage rule (``slot_<status id>``), the time of
  the newest event applied and when it was closed, so a late retry of an old event cannot reopen a room.
- ``SWEEP`` / ``STATE``: where the sweeper's walk through Whereby's room list stopped.
- ``RECONCILE`` / ``STATE``: how far the reading of Kommo's event log got (``bridge.kommo.reconcile``).
- ``ROOM#<room key>`` / ``SESSION#<room session id>``: one session held in the room (times, minutes, people, and
  whether the deal was told), from Whereby's events and insights; kept ``session_retention_seconds``. It carries
  the room's ``owner`` and, as ``created_at``, the session's start, so that ``by_owner`` holds a channel's sessions
  beside its rooms, and the room's topic and creator, so that it can be told and counted after the room's record
  is gone.
- ``ROOM#<room key>`` / ``EVENT#<event id>``: a Whereby event the worker handled, so a copy delivered after SQS's
  five-minute deduplication is dropped too; purged after ``DELETED_RETENTION_SECONDS``.

Indexes: ``by_owner`` (owner, created_at) holds an owner's rooms (sort key ``ROOM``) and sessions (``SESSION#…``):
``rooms_of`` takes the rooms alone, ``meetings_of`` both, for one period (``/whereby stats`` and ``export`` read a
channel's meetings through it, never scanning the table); ``by_expiry`` (expiry_bucket, end_at) holds only rooms not
yet deleted, so the sweeper reads the expired ones and nothing else.

Records vanish: a room record marked deleted is purged by TTL (``purge_at``) 30 days later (a chat room's is kept
until its ``keep_until``, as long as its sessions, so that a period's no-shows can still be counted), sessions
after ``session_retention_seconds``; nothing else is ever removed. What may still name a purged room, and how it
reads the absence: a lead's slot (``ensure_room``: no room, claim a new one without retiring the old), a close in
progress (``close_rooms``: already gone), the sweeper's walk of Whereby's list (no record: a leak, deleted),
``/whereby end <room>`` (no such room), ``mark_deleted`` (done).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import BotoCoreError, ClientError

from bridge.core.errors import PeerUnavailable

if TYPE_CHECKING:
    from types_boto3_dynamodb.service_resource import DynamoDBServiceResource
    from types_boto3_dynamodb.type_defs import TransactWriteItemTypeDef, UpdateTypeDef

CREATING = "creating"
ACTIVE = "active"
DELETED = "deleted"
EXPIRY_BUCKET = "live"
DELETED_RETENTION_SECONDS = 30 * 24 * 3600
RECONCILE_KEY = {"pk": "RECONCILE", "sk": "STATE"}
# The default of the SessionRetentionDays parameter. Long enough for a quarter's statistics (90 days is the longest
# period /whereby stats and export offer), no longer: the people's names a session holds are personal data.
SESSION_RETENTION_SECONDS = 90 * 24 * 3600
_KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


class Conflict(Exception):
    """A conditional write lost: another delivery got there first, or the record moved on."""


def stack_tag(table_name: str) -> str:
    """Three characters that tell this stack's rooms from another stack's sharing the same Whereby organisation."""
    digest = hashlib.sha256(table_name.encode()).digest()
    return "".join(_KEY_ALPHABET[b % 32] for b in digest[:3])


def new_room_key(tag: str) -> str:
    """``z`` + the stack tag + 7 random base32 characters: never a run of hex, so never part of a Whereby uuid."""
    return "z" + tag + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(7))


def lead_owner(account: str, lead_id: int) -> str:
    return f"LEAD#{account}#{lead_id}"


def channel_owner(team_id: str, channel_id: str) -> str:
    return f"CHANNEL#{team_id}#{channel_id}"


@dataclass(frozen=True)
class Room:
    room_key: str
    source: str  # kommo | mattermost
    owner: str
    end_at: int
    created_at: int
    state: str = CREATING
    slot: str = ""  # kommo: the stage rule's status id
    label: str = ""  # stage name or topic, shown to people
    creator: str = ""  # mattermost user id
    meeting_id: str = ""
    room_url: str = ""
    host_room_url: str = ""
    room_name: str = ""
    note_posted: bool = False
    note_attempted: bool = False  # set before the post: a retry then looks for the note before posting again
    field_set: bool = False
    # Kommo rooms of a rule with a meeting-time field (absent, 0 or "", on every other room):
    meeting_at: int = 0  # the meeting time the room is made or kept for; 0: the deal had none
    replaces: str = ""  # the room key of the room this one replaced when the meeting moved later, until it is deleted
    task_id: int = 0  # the Kommo task made for the meeting
    task_due: int = 0  # the due time last written on that task
    task_attempted: bool = False  # set before the post: a retry then looks for the task before posting again
    leave: str = ""  # closing because the deal left the stage (close_on_leave): deleting, noting, done
    # Chat rooms made from a queued request (Slack): the request's id (``trigger_id``), and which of the answers
    # went out through its ``response_url`` ("room", "room,host"), so a retried job repeats neither room nor post.
    request_id: str = ""
    posted: str = ""
    response_url: str = ""  # where the request's answers went (Slack: 5 posts within 30 minutes of the command)
    # The room's post in the channel when a bot made it (a Mattermost post id, a Slack message ts): the post that
    # the meeting's end and the End button edit. Empty when the slash command's own answer is the post.
    post_id: str = ""
    creator_name: str = ""  # the creator's name as the platform gave it (Mattermost username, Slack user name)
    keep_until: int = 0  # chat rooms: the record, once deleted, is purged then (``MeetingsStore.claim_room``)
    # Chat rooms: the catalogue language of the creator, who typed the command: the room's post is in it, and so is
    # every later edit of that post, whoever's click or whichever event makes it. Empty: the stack's language.
    language: str = ""

    def item(self) -> dict[str, Any]:
        item: dict[str, Any] = {"pk": f"ROOM#{self.room_key}", "sk": "ROOM", **self.__dict__}
        if self.state != DELETED:
            item["expiry_bucket"] = EXPIRY_BUCKET
        return {k: v for k, v in item.items() if v != "" and not (k in _OPTIONAL_NUMBERS and v == 0)}

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Room:
        names = cls.__dataclass_fields__
        values = {k: v for k, v in item.items() if k in names}
        for number in ("end_at", "created_at", *_OPTIONAL_NUMBERS):
            if number in values:
                values[number] = int(values[number])
        return cls(**values)


_OPTIONAL_NUMBERS = ("meeting_at", "task_id", "task_due", "keep_until")


@dataclass(frozen=True)
class Closing:
    """A close in progress, kept on the lead until every step is done, so a retry resumes instead of repeating."""

    at: int
    status_id: int | None
    deleted: bool
    rooms: tuple[str, ...]  # the room keys that were live when the close began
    note_done: bool = False
    note_attempted: bool = False
    field_done: bool = False


@dataclass(frozen=True)
class Lead:
    owner: str
    slots: Mapping[str, str] = field(default_factory=dict)
    last_event_at: int | None = None
    closed_at: int | None = None
    deleted: bool = False
    closing: Closing | None = None

    def is_stale(self, event_at: int) -> bool:
        """An event older than what was applied, or not newer than the close, must not act any more."""
        if self.last_event_at is not None and event_at < self.last_event_at:
            return True
        return self.closed_at is not None and event_at <= self.closed_at


@dataclass(frozen=True)
class ReconcileState:
    """How far the reconciliation read Kommo's event log: every event created up to ``checkpoint`` is enqueued."""

    checkpoint: int
    window_seconds: int | None = None  # None: the reconciler's largest window
    seen: Mapping[str, int] = field(default_factory=dict)  # event id -> created_at, of events enqueued lately


@dataclass(frozen=True)
class Person:
    name: str
    role: str  # Whereby's roleName: host, visitor, …


@dataclass(frozen=True)
class SessionRecord:
    """A session held in one of our rooms, under the room's key (sort key ``SESSION#<id>``)."""

    room_key: str
    room_session_id: str
    started_at: int | None = None
    ended_at: int | None = None
    participant_minutes: int = 0
    people: tuple[Person, ...] = ()
    summarised: bool = False  # times and people were read from Whereby's insights
    note_attempted: bool = False
    note_posted: bool = False
    # The room's, copied when the session is recorded (``save_session(room=…)``): the session outlives the room.
    label: str = ""
    creator: str = ""
    creator_name: str = ""


@dataclass(frozen=True)
class Meetings:
    """An owner's rooms made and sessions started in a period (``MeetingsStore.meetings_of``)."""

    rooms: tuple[Room, ...]
    sessions: tuple[SessionRecord, ...]
    joined: frozenset[str]  # the keys of the rooms someone joined (``activity_at``), sessions recorded or not


@dataclass(frozen=True)
class RoomStory:
    """What the room's events told so far, beside the room record: whether anyone came, and the no-show note."""

    activity_at: int | None = None  # when someone first joined (or a session started)
    noshow_attempted: bool = False
    noshow_posted: bool = False


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


class MeetingsStore:
    def __init__(
        self,
        table_name: str,
        resource: DynamoDBServiceResource | None = None,
        session_retention_seconds: int = SESSION_RETENTION_SECONDS,
    ) -> None:
        self.table = (resource or boto3.resource("dynamodb")).Table(table_name)
        self._client = self.table.meta.client
        self.table_name = table_name
        self.tag = stack_tag(table_name)
        self.session_retention_seconds = session_retention_seconds

    def new_room_key(self) -> str:
        return new_room_key(self.tag)

    def request_room_key(self, request_id: str) -> str:
        """The room key a request's room gets: the same on every run of the request, so a retry finds its record."""
        digest = hashlib.sha256(f"request|{request_id}".encode()).digest()
        return "z" + self.tag + "".join(_KEY_ALPHABET[b % 32] for b in digest[:7])

    def owns_key(self, room_key: str) -> bool:
        return room_key.startswith("z" + self.tag)

    # reads -----------------------------------------------------------------------------------------------------
    def get_room(self, room_key: str) -> Room | None:
        item = self._call(self.table.get_item, Key={"pk": f"ROOM#{room_key}", "sk": "ROOM"}, ConsistentRead=True)
        return Room.from_item(item["Item"]) if "Item" in item else None

    def get_lead(self, owner: str) -> Lead:
        answer = self._call(self.table.get_item, Key={"pk": owner, "sk": "LEAD"}, ConsistentRead=True)
        item = answer.get("Item") or {}
        closing = None
        if "closing_at" in item:
            closing = Closing(
                at=int(item["closing_at"]),
                status_id=_optional_int(item.get("closing_status")),
                deleted=bool(item.get("closing_deleted", False)),
                rooms=tuple(item.get("closing_rooms") or ()),
                note_done=bool(item.get("closing_note", False)),
                note_attempted=bool(item.get("closing_note_attempted", False)),
                field_done=bool(item.get("closing_field", False)),
            )
        return Lead(
            owner=owner,
            slots={k.removeprefix("slot_"): v for k, v in item.items() if k.startswith("slot_")},
            last_event_at=_optional_int(item.get("last_event_at")),
            closed_at=_optional_int(item.get("closed_at")),
            deleted=bool(item.get("deleted", False)),
            closing=closing,
        )

    def rooms_of(self, owner: str, limit: int = 50) -> list[Room]:
        """The owner's rooms not yet deleted, newest first (index reads: may lag a write by a moment).

        DynamoDB applies ``Limit`` before the filter, so pages are read until enough live rooms are found.
        """
        kwargs: dict[str, Any] = {
            "IndexName": "by_owner",
            "KeyConditionExpression": Key("owner").eq(owner),
            # The index holds the owner's sessions too: rooms only.
            "FilterExpression": Attr("sk").eq("ROOM") & Attr("state").ne(DELETED),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        rooms: list[Room] = []
        while len(rooms) < limit:
            answer = self._call(self.table.query, **kwargs)
            rooms += [Room.from_item(item) for item in answer.get("Items", [])]
            if "LastEvaluatedKey" not in answer:
                break
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return rooms[:limit]

    def meetings_of(self, owner: str, since: int, until: int) -> Meetings:
        """The owner's rooms made and sessions started from ``since`` to ``until`` (inclusive), oldest first.

        One range of the ``by_owner`` index, read to its end (a channel's quarter is a few pages at most): no scan.
        """
        kwargs: dict[str, Any] = {
            "IndexName": "by_owner",
            "KeyConditionExpression": Key("owner").eq(owner) & Key("created_at").between(since, until),
        }
        rooms: list[Room] = []
        sessions: list[SessionRecord] = []
        joined: set[str] = set()
        while True:
            answer = self._call(self.table.query, **kwargs)
            for item in answer.get("Items", []):
                sort_key = str(item.get("sk", ""))
                if sort_key == "ROOM":
                    rooms.append(Room.from_item(item))
                    if item.get("activity_at") is not None:
                        joined.add(rooms[-1].room_key)
                elif sort_key.startswith("SESSION#"):
                    sessions.append(_session(item))
            if "LastEvaluatedKey" not in answer:
                return Meetings(tuple(rooms), tuple(sessions), frozenset(joined))
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def expired(self, now: int, limit: int) -> Iterator[Room]:
        """Rooms not yet deleted whose end has passed, oldest first; reads only those records."""
        kwargs: dict[str, Any] = {
            "IndexName": "by_expiry",
            "KeyConditionExpression": Key("expiry_bucket").eq(EXPIRY_BUCKET) & Key("end_at").lte(now),
            "Limit": limit,
        }
        while True:
            answer = self._call(self.table.query, **kwargs)
            yield from (Room.from_item(item) for item in answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                return
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    # writes ----------------------------------------------------------------------------------------------------
    def claim_lead_room(self, room: Room, event_at: int, replaces: str | None, retire: bool = True) -> None:
        """Atomically point the lead's slot at a new room record, unless the lead moved on or someone else won.

        ``replaces`` is the record the slot points at now; ``retire`` marks it deleted in the same transaction.
        A slot may outlive its record (deleted rooms are purged by TTL after 30 days): then there is nothing to
        retire, and the slot alone is the condition.
        """
        slot_name = f"slot_{room.slot}"
        lead_condition = (
            "attribute_not_exists(deleted)"
            " AND (attribute_not_exists(last_event_at) OR last_event_at <= :at)"
            " AND (attribute_not_exists(closed_at) OR closed_at < :at)"
            + (" AND #slot = :old" if replaces else " AND attribute_not_exists(#slot)")
        )
        values: dict[str, Any] = {":at": event_at, ":key": room.room_key}
        if replaces:
            values[":old"] = replaces
        items: list[TransactWriteItemTypeDef] = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": {"pk": room.owner, "sk": "LEAD"},
                    "UpdateExpression": "SET #slot = :key, last_event_at = :at",
                    "ConditionExpression": lead_condition,
                    "ExpressionAttributeNames": {"#slot": slot_name},
                    "ExpressionAttributeValues": values,
                }
            },
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": room.item(),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        if replaces and retire:
            items.append({"Update": self._deletion(replaces, time.time())})
        self._transact(items)

    def claim_room(self, room: Room) -> None:
        """Record a room before it is created at Whereby (rooms with no lead: the chat platforms)."""
        try:
            self._call(
                self.table.put_item, Item=self._kept(room).item(), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError:
            raise Conflict(f"room key {room.room_key} is taken") from None

    def complete_room(self, room: Room) -> Room:
        """Store what Whereby answered; only a record still being created can be completed."""
        done = replace(self._kept(room), state=ACTIVE)
        try:
            self._call(
                self.table.put_item,
                Item=done.item(),
                ConditionExpression="#state = :creating",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":creating": CREATING},
            )
        except ClientError:
            raise Conflict(f"room {room.room_key} is no longer being created") from None
        return done

    def mark(self, room_key: str, **flags: bool | int | str) -> None:
        names = {f"#{k}": k for k in flags}
        values = {f":{k}": v for k, v in flags.items()}
        update = "SET " + ", ".join(f"#{k} = :{k}" for k in flags)
        self._call(
            self.table.update_item,
            Key={"pk": f"ROOM#{room_key}", "sk": "ROOM"},
            UpdateExpression=update,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def mark_deleted(self, room_key: str, now: float | None = None) -> None:
        """Mark a room deleted; a record already purged (TTL) is as deleted as it gets."""
        deletion = self._deletion(room_key, now if now is not None else time.time())
        update = {k: v for k, v in deletion.items() if k != "TableName"}  # the table names itself
        try:
            self._call(self.table.update_item, **update)
        except ClientError:
            return

    def begin_close(self, owner: str, closing: Closing, slots: list[str]) -> bool:
        """Record the close and what it must do, and free the lead's slots, in one write.

        From here on older events arriving late stay closed, and a retry of the job resumes from ``closing``.
        False when a close at the same time or later was recorded first.
        """
        update = (
            "SET closed_at = :at, last_event_at = :at, closing_at = :at, closing_deleted = :deleted,"
            " closing_note = :false, closing_note_attempted = :false, closing_field = :false"
        )
        values: dict[str, Any] = {":at": closing.at, ":deleted": closing.deleted, ":false": False}
        if closing.status_id is not None:
            update += ", closing_status = :status"
            values[":status"] = closing.status_id
        if closing.rooms:
            update += ", closing_rooms = :rooms"
            values[":rooms"] = list(closing.rooms)
        if closing.deleted:
            update += ", deleted = :true"
            values[":true"] = True
        removed = [f"slot_{slot}" for slot in slots]
        if not closing.rooms:
            removed.append("closing_rooms")
        if closing.status_id is None:
            removed.append("closing_status")
        names = {f"#r{i}": name for i, name in enumerate(removed)}
        kwargs: dict[str, Any] = {}
        if names:
            update += " REMOVE " + ", ".join(names)
            kwargs["ExpressionAttributeNames"] = names
        try:
            self._call(
                self.table.update_item,
                Key={"pk": owner, "sk": "LEAD"},
                UpdateExpression=update,
                ConditionExpression="attribute_not_exists(closed_at) OR closed_at < :at",
                ExpressionAttributeValues=values,
                **kwargs,
            )
        except ClientError:
            return False
        return True

    def mark_closing(self, owner: str, at: int, **steps: bool) -> None:
        """Record a step of the close at ``at`` (``note``, ``note_attempted``, ``field``)."""
        names = {f"#{k}": f"closing_{k}" for k in steps}
        values: dict[str, Any] = {f":{k}": v for k, v in steps.items()}
        values[":at"] = at
        try:
            self._call(
                self.table.update_item,
                Key={"pk": owner, "sk": "LEAD"},
                UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in steps),
                ConditionExpression="closing_at = :at",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError:
            return  # a newer close took over; it does its own steps

    def finish_close(self, owner: str, at: int) -> None:
        try:
            self._call(
                self.table.update_item,
                Key={"pk": owner, "sk": "LEAD"},
                UpdateExpression=(
                    "REMOVE closing_at, closing_status, closing_deleted, closing_rooms, closing_note,"
                    " closing_note_attempted, closing_field"
                ),
                ConditionExpression="closing_at = :at",
                ExpressionAttributeValues={":at": at},
            )
        except ClientError:
            return

    def restore_lead(self, owner: str, restored_at: int, closed_at: int | None) -> bool:
        """Take the lead out of the trash, so it can have rooms again.

        A delete carries no time, so its close was recorded at our receive time, which can be later than the
        restore's own time: the close is moved back to just before the restore, or events after the restore
        would count as older than the delete. False when the lead changed meanwhile (the caller reads again).
        """
        update = "REMOVE deleted SET restored_at = :at"
        values: dict[str, Any] = {":at": restored_at}
        condition = "attribute_not_exists(closed_at)"
        if closed_at is not None:
            condition = "closed_at = :seen"
            values[":seen"] = closed_at
            if closed_at >= restored_at:
                update += ", closed_at = :before, last_event_at = :before"
                values[":before"] = restored_at - 1
        try:
            self._call(
                self.table.update_item,
                Key={"pk": owner, "sk": "LEAD"},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError:
            return False
        return True

    def record_event(self, owner: str, event_at: int) -> None:
        """Remember that an event this new was applied to the lead, so an older one arriving late stays stale."""
        try:
            self._call(
                self.table.update_item,
                Key={"pk": owner, "sk": "LEAD"},
                UpdateExpression="SET last_event_at = :at",
                ConditionExpression="attribute_exists(pk)"
                " AND (attribute_not_exists(last_event_at) OR last_event_at < :at)",
                ExpressionAttributeValues={":at": event_at},
            )
        except ClientError:
            return  # already as new or newer

    def sweep_cursor(self) -> str | None:
        item = self._call(self.table.get_item, Key={"pk": "SWEEP", "sk": "STATE"}).get("Item") or {}
        return item.get("cursor") or None

    def save_sweep_cursor(self, cursor: str | None) -> None:
        item: dict[str, Any] = {"pk": "SWEEP", "sk": "STATE", "updated_at": int(time.time())}
        if cursor:
            item["cursor"] = cursor
        self._call(self.table.put_item, Item=item)

    def reconcile_state(self) -> ReconcileState | None:
        item = self._call(self.table.get_item, Key=RECONCILE_KEY, ConsistentRead=True).get("Item") or {}
        if "checkpoint" not in item:
            return None
        return ReconcileState(
            checkpoint=int(item["checkpoint"]),
            window_seconds=_optional_int(item.get("window_seconds")),
            seen={str(k): int(v) for k, v in (item.get("seen") or {}).items()},
        )

    def save_reconcile_state(self, state: ReconcileState) -> None:
        """Store the reconciliation's progress. The checkpoint never moves back: of two runs at once, the one
        that got further wins."""
        item: dict[str, Any] = {
            **RECONCILE_KEY,
            "checkpoint": state.checkpoint,
            "seen": dict(state.seen),
            "updated_at": int(time.time()),
        }
        if state.window_seconds is not None:
            item["window_seconds"] = state.window_seconds
        try:
            self._call(
                self.table.put_item,
                Item=item,
                ConditionExpression="attribute_not_exists(checkpoint) OR checkpoint <= :checkpoint",
                ExpressionAttributeValues={":checkpoint": state.checkpoint},
            )
        except ClientError:
            return

    # the rooms' stories (Whereby's events) ---------------------------------------------------------------------------
    def event_done(self, room_key: str, event_id: str) -> bool:
        key = {"pk": f"ROOM#{room_key}", "sk": f"EVENT#{event_id}"}
        return "Item" in self._call(self.table.get_item, Key=key, ConsistentRead=True)

    def remember_event(self, room_key: str, event_id: str, now: float | None = None) -> None:
        at = int(now if now is not None else time.time())
        item = {
            "pk": f"ROOM#{room_key}",
            "sk": f"EVENT#{event_id}",
            "at": at,
            "purge_at": at + DELETED_RETENTION_SECONDS,
        }
        self._call(self.table.put_item, Item=item)

    def room_story(self, room_key: str) -> RoomStory:
        item = (
            self._call(
                self.table.get_item,
                Key={"pk": f"ROOM#{room_key}", "sk": "ROOM"},
                ConsistentRead=True,
                ProjectionExpression="activity_at, noshow_attempted, noshow_posted",
            ).get("Item")
            or {}
        )
        return RoomStory(
            activity_at=_optional_int(item.get("activity_at")),
            noshow_attempted=bool(item.get("noshow_attempted", False)),
            noshow_posted=bool(item.get("noshow_posted", False)),
        )

    def note_activity(self, room_key: str, at: int) -> None:
        """Remember that someone was in the room (the earliest time wins); a purged record stays purged."""
        try:
            self._call(
                self.table.update_item,
                Key={"pk": f"ROOM#{room_key}", "sk": "ROOM"},
                UpdateExpression="SET activity_at = :at",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(activity_at) OR activity_at > :at)",
                ExpressionAttributeValues={":at": at},
            )
        except ClientError:
            return  # an earlier time is already there, or the record is gone

    def get_session(self, room_key: str, room_session_id: str) -> SessionRecord | None:
        key = {"pk": f"ROOM#{room_key}", "sk": f"SESSION#{room_session_id}"}
        item = self._call(self.table.get_item, Key=key, ConsistentRead=True).get("Item")
        return _session(item) if item else None

    def session_started(
        self, room_key: str, room_session_id: str, at: int, now: float | None = None, room: Room | None = None
    ) -> None:
        """A session began (``room.session.started``); what insights say later replaces the time."""
        purge = int(now if now is not None else time.time()) + self.session_retention_seconds
        update = "SET started_at = if_not_exists(started_at, :at), purge_at = :purge"
        values: dict[str, Any] = {":at": at, ":purge": purge}
        names: dict[str, str] = {}
        if room is not None:
            update += ", created_at = if_not_exists(started_at, :at)" + _room_fields(room, names, values)
        self._call(
            self.table.update_item,
            Key={"pk": f"ROOM#{room_key}", "sk": f"SESSION#{room_session_id}"},
            UpdateExpression=update,
            ExpressionAttributeValues=values,
            **({"ExpressionAttributeNames": names} if names else {}),
        )

    def save_session(self, record: SessionRecord, now: float | None = None, room: Room | None = None) -> None:
        """Store a session's summary; the note flags are left as they are (``mark_session`` sets them).

        With its ``room``, the session joins the owner's meetings in ``by_owner`` (``meetings_of``) at its start.
        """
        values: dict[str, Any] = {
            ":minutes": record.participant_minutes,
            ":people": [{"name": p.name, "role": p.role} for p in record.people],
            ":summarised": record.summarised,
            ":purge": int(now if now is not None else time.time()) + self.session_retention_seconds,
        }
        update = "SET participant_minutes = :minutes, people = :people, summarised = :summarised, purge_at = :purge"
        for name in ("started_at", "ended_at"):
            value = getattr(record, name)
            if value is not None:
                update += f", {name} = :{name}"
                values[f":{name}"] = value
        names: dict[str, str] = {}
        if room is not None:
            if record.started_at is not None:
                update += ", created_at = :started_at"
            elif record.ended_at is not None:
                update += ", created_at = if_not_exists(created_at, :ended_at)"  # no start known: the end stands in
            update += _room_fields(room, names, values)
        self._call(
            self.table.update_item,
            Key={"pk": f"ROOM#{record.room_key}", "sk": f"SESSION#{record.room_session_id}"},
            UpdateExpression=update,
            ExpressionAttributeValues=values,
            **({"ExpressionAttributeNames": names} if names else {}),
        )

    def mark_session(self, room_key: str, room_session_id: str, **flags: bool) -> None:
        names = {f"#{k}": k for k in flags}
        values = {f":{k}": v for k, v in flags.items()}
        self._call(
            self.table.update_item,
            Key={"pk": f"ROOM#{room_key}", "sk": f"SESSION#{room_session_id}"},
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in flags),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    # helpers ---------------------------------------------------------------------------------------------------
    def _kept(self, room: Room) -> Room:
        """A chat room is kept, once deleted, as long as its sessions (at least the 30 days of every room): its
        channel's statistics count it as a no-show when nobody came."""
        if not room.owner.startswith("CHANNEL#"):
            return room
        keep = room.created_at + max(self.session_retention_seconds, DELETED_RETENTION_SECONDS)
        return replace(room, keep_until=keep)

    def _deletion(self, room_key: str, now: float) -> UpdateTypeDef:
        return {
            "TableName": self.table_name,
            "Key": {"pk": f"ROOM#{room_key}", "sk": "ROOM"},
            "UpdateExpression": (
                "SET #state = :deleted, updated_at = :now, purge_at = if_not_exists(keep_until, :purge)"
                " REMOVE expiry_bucket"
            ),
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {
                ":deleted": DELETED,
                ":now": int(now),
                ":purge": int(now) + DELETED_RETENTION_SECONDS,
            },
        }

    def _transact(self, items: list[TransactWriteItemTypeDef]) -> None:
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if "ConditionalCheckFailed" in reasons:
                    raise Conflict("the lead moved on or another delivery claimed the room") from None
            raise PeerUnavailable(f"dynamodb transaction failed: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise PeerUnavailable(f"dynamodb unreachable: {type(exc).__name__}") from None

    @staticmethod
    def _call(method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise
            raise PeerUnavailable(f"dynamodb {method.__name__} failed: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise PeerUnavailable(f"dynamodb unreachable: {type(exc).__name__}") from None


def _room_fields(room: Room, names: dict[str, str], values: dict[str, Any]) -> str:
    """`` , owner = …, label = …``: the room's fields a session carries (empty ones are not written)."""
    fields = {"owner": room.owner, "label": room.label, "creator": room.creator, "creator_name": room.creator_name}
    written = ""
    for name, value in fields.items():
        if value:
            names[f"#{name}"] = name
            values[f":room_{name}"] = value
            written += f", #{name} = :room_{name}"
    return written


def _session(item: Mapping[str, Any]) -> SessionRecord:
    return SessionRecord(
        room_key=str(item["pk"]).removeprefix("ROOM#"),
        room_session_id=str(item["sk"]).removeprefix("SESSION#"),
        started_at=_optional_int(item.get("started_at")),
        ended_at=_optional_int(item.get("ended_at")),
        participant_minutes=int(item.get("participant_minutes", 0)),
        people=tuple(Person(str(p.get("name", "")), str(p.get("role", ""))) for p in item.get("people") or ()),
        summarised=bool(item.get("summarised", False)),
        note_attempted=bool(item.get("note_attempted", False)),
        note_posted=bool(item.get("note_posted", False)),
        label=str(item.get("label", "")),
        creator=str(item.get("creator", "")),
        creator_name=str(item.get("creator_name", "")),
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))
