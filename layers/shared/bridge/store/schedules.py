"""A channel's recurring meetings in the meetings table, and the counts that cap them.

Items:

- ``SCHEDULE#<id>`` / ``SCHEDULE``: one schedule (what to make, where to post it, in whose language, whether it is
  still on). It carries the channel's ``owner`` and ``created_at``, so the ``by_owner`` index lists a channel's
  schedules beside its rooms, never by a scan.
- ``SCHEDULE-COUNT#stack`` / ``COUNT`` and ``SCHEDULE-COUNT#<owner>`` / ``COUNT``: how many schedules the stack and
  each channel hold. A schedule and both counts are written in one transaction whose conditions are the caps, so two
  requests racing for the last place cannot both win.

A disabled schedule still counts until it is cancelled: it is listed, with its reason, so that its channel sees why
it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import BotoCoreError, ClientError

from bridge.core.errors import PeerUnavailable
from bridge.store.meetings import MeetingsStore, _code

if TYPE_CHECKING:
    from types_boto3_dynamodb.service_resource import Table
    from types_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

ON = "active"
OFF = "disabled"
STACK_COUNT = {"pk": "SCHEDULE-COUNT#stack", "sk": "COUNT"}
_NUMBERS = ("hour", "minute", "minutes", "created_at", "failures")


class AlreadyThere(Exception):
    """A schedule of this id exists: the request that made it ran again."""


class CapReached(Exception):
    """The channel (``which`` = "channel") or the stack ("stack") holds as many schedules as it may."""

    def __init__(self, which: str) -> None:
        super().__init__(f"the {which} holds as many schedules as it may")
        self.which = which


@dataclass(frozen=True)
class Schedule:
    schedule_id: str
    owner: str  # the channel, ``CHANNEL#<team>#<channel>``
    platform: str  # mattermost | slack
    team_id: str
    channel_id: str
    creator: str
    days: str  # "MON,WED,FRI", in week order
    hour: int
    minute: int
    zone: str
    topic: str
    minutes: int
    created_at: int
    creator_name: str = ""
    trigger: str = "/whereby"
    slug_source: str = ""
    webhook: str = ""  # the channel's incoming webhook; never shown, never logged
    language: str = ""  # the creator's, when they scheduled it
    state: str = ON
    failures: int = 0  # occurrences in a row whose post failed
    failed_on: str = ""  # the occurrence (its local date) last counted as failed, so a retry counts it once
    posted_on: str = ""  # the occurrence last posted
    disabled_reason: str = ""  # channel-gone | failing

    def item(self) -> dict[str, Any]:
        item = {"pk": f"SCHEDULE#{self.schedule_id}", "sk": "SCHEDULE", **self.__dict__}
        return {k: v for k, v in item.items() if v != ""}

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Schedule:
        names = cls.__dataclass_fields__
        values = {k: v for k, v in item.items() if k in names}
        for number in _NUMBERS:
            if number in values:
                values[number] = int(values[number])
        return cls(**values)

    @property
    def day_list(self) -> tuple[str, ...]:
        return tuple(day for day in self.days.split(",") if day)


def channel_count_key(owner: str) -> dict[str, str]:
    return {"pk": f"SCHEDULE-COUNT#{owner}", "sk": "COUNT"}


class ScheduleStore:
    def __init__(self, table: Table) -> None:
        self.table = table
        self._client = table.meta.client
        self._name = table.name

    def add(self, schedule: Schedule, channel_cap: int, stack_cap: int) -> None:
        """The schedule and both counts, or nothing: ``CapReached`` when the channel or the stack is full."""
        items: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self._name,
                    "Item": schedule.item(),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            self._count(channel_count_key(schedule.owner), 1, channel_cap),
            self._count(STACK_COUNT, 1, stack_cap),
        ]
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons[:1] == ["ConditionalCheckFailed"]:
                raise AlreadyThere(schedule.schedule_id) from None
            if reasons[1:2] == ["ConditionalCheckFailed"]:
                raise CapReached("channel") from None
            if reasons[2:3] == ["ConditionalCheckFailed"]:
                raise CapReached("stack") from None
            raise PeerUnavailable(f"dynamodb transaction failed: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise PeerUnavailable(f"dynamodb unreachable: {type(exc).__name__}") from None

    def remove(self, schedule: Schedule) -> bool:
        """The schedule and its place in both counts; False when it was already gone (a repeated cancel)."""
        items: list[TransactWriteItemTypeDef] = [
            {
                "Delete": {
                    "TableName": self._name,
                    "Key": {"pk": f"SCHEDULE#{schedule.schedule_id}", "sk": "SCHEDULE"},
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            self._count(channel_count_key(schedule.owner), -1),
            self._count(STACK_COUNT, -1),
        ]
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons[:1] == ["ConditionalCheckFailed"]:
                return False
            raise PeerUnavailable(f"dynamodb transaction failed: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise PeerUnavailable(f"dynamodb unreachable: {type(exc).__name__}") from None
        return True

    def get(self, schedule_id: str) -> Schedule | None:
        answer = self._call(self.table.get_item, Key=_key(schedule_id), ConsistentRead=True)
        return Schedule.from_item(answer["Item"]) if "Item" in answer else None

    def of_channel(self, owner: str) -> list[Schedule]:
        """The channel's schedules, oldest first: one range of the ``by_owner`` index (it holds the rooms too)."""
        kwargs: dict[str, Any] = {
            "IndexName": "by_owner",
            "KeyConditionExpression": Key("owner").eq(owner),
            "FilterExpression": Attr("sk").eq("SCHEDULE"),
        }
        found: list[Schedule] = []
        while True:
            answer = self._call(self.table.query, **kwargs)
            found += [Schedule.from_item(item) for item in answer.get("Items", [])]
            if "LastEvaluatedKey" not in answer:
                return found
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def posted(self, schedule: Schedule, occurrence: str) -> Schedule:
        """This occurrence reached the channel: the run of failures is over."""
        self._update(schedule.schedule_id, "SET posted_on = :on, failures = :zero", {":on": occurrence, ":zero": 0})
        return replace(schedule, posted_on=occurrence, failures=0)

    def failed(self, schedule: Schedule, occurrence: str) -> Schedule:
        """One more occurrence whose post failed; a retry of the same occurrence is not counted again."""
        if schedule.failed_on == occurrence:
            return schedule
        try:
            answer = self._call(
                self.table.update_item,
                Key=_key(schedule.schedule_id),
                UpdateExpression="SET failed_on = :on ADD failures :one",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(failed_on) OR failed_on <> :on)",
                ExpressionAttributeValues={":on": occurrence, ":one": 1},
                ReturnValues="ALL_NEW",
            )
        except ClientError:
            return self.get(schedule.schedule_id) or schedule  # counted by a run of the same occurrence
        return Schedule.from_item(answer["Attributes"])

    def disable(self, schedule: Schedule, reason: str) -> bool:
        """Off, with its reason; False when it already was (its creator was told then)."""
        try:
            self._call(
                self.table.update_item,
                Key=_key(schedule.schedule_id),
                UpdateExpression="SET #state = :off, disabled_reason = :reason",
                ConditionExpression="attribute_exists(pk) AND #state = :on",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":off": OFF, ":on": ON, ":reason": reason},
            )
        except ClientError:
            return False
        return True

    def _update(self, schedule_id: str, expression: str, values: dict[str, Any]) -> None:
        with suppress(ClientError):  # cancelled meanwhile: nothing left to note
            self._call(
                self.table.update_item,
                Key=_key(schedule_id),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=values,
            )

    def _count(self, key: dict[str, str], step: int, cap: int | None = None) -> TransactWriteItemTypeDef:
        update: dict[str, Any] = {
            "TableName": self._name,
            "Key": key,
            "UpdateExpression": "ADD schedules :step",
            "ExpressionAttributeValues": {":step": step},
        }
        if cap is not None:
            update["ConditionExpression"] = "attribute_not_exists(schedules) OR schedules < :cap"
            update["ExpressionAttributeValues"][":cap"] = cap
        return {"Update": update}  # type: ignore[typeddict-item]

    # One translation of DynamoDB's errors for the whole table: a failed condition is the caller's to read, the rest
    # is the storage being unavailable.
    _call = staticmethod(MeetingsStore._call)


def _key(schedule_id: str) -> dict[str, str]:
    return {"pk": f"SCHEDULE#{schedule_id}", "sk": "SCHEDULE"}
