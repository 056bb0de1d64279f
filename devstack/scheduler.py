"""A local stand-in for EventBridge Scheduler: it reads the schedules made in moto and fires each when it is due.

moto stores schedules but never fires them. ``LocalScheduler.tick(now)`` invokes the target function of every
enabled schedule of the group whose time came since the previous tick, with the schedule's ``Input``, through the
local harness. The next time is computed from the cron fields in the schedule's own time zone with ``zoneinfo``,
as the Scheduler does: a local time the spring shift skips is not fired that day, and a time the autumn shift
repeats is fired once. ``now`` comes from an injectable clock, so tests and the demo need not wait real minutes.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_CRON = re.compile(r"cron\(([0-9]{1,2}) ([0-9]{1,2}) ([*?]) \* ([A-Z,*?]+) \*\)")


def next_fire(expression: str, zone: str, after: datetime) -> datetime:
    """The first time after ``after`` (aware) that the cron expression fires in ``zone``, as an aware local time.

    Only the shape the bridge writes is read: ``cron(M H ? * DAYS *)`` or ``cron(M H * * ? *)``."""
    found = _CRON.fullmatch(expression)
    if found is None:
        raise ValueError(f"not a cron expression the stand-in reads: {expression}")
    minute, hour, days_field = int(found.group(1)), int(found.group(2)), found.group(4)
    days = DAYS if days_field in ("*", "?") else tuple(days_field.split(","))
    tz = ZoneInfo(zone)
    start = after.astimezone(tz).date()
    for offset in range(9):
        day = start + timedelta(days=offset)
        if DAYS[day.weekday()] not in days:
            continue
        at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
        if at.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != at.replace(tzinfo=None):
            continue  # skipped by the spring shift: the Scheduler does not fire it that day
        if at.astimezone(UTC) > after.astimezone(UTC):
            return at
    raise ValueError(f"{expression} never fires")


class LocalScheduler:
    """Fires the group's schedules through ``invoke(function logical id, event)``."""

    def __init__(
        self,
        client: Any,
        group: str,
        functions_by_arn: Mapping[str, str],
        invoke: Callable[[str, dict[str, Any]], Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._group = group
        self._functions = dict(functions_by_arn)
        self._invoke = invoke
        self._clock = clock
        self._seen: dict[str, datetime] = {}  # schedule name -> fired (or first seen) up to this time
        self._lock = threading.Lock()  # the local stack's thread and a demo's step tick the same schedules
        self.fired: list[tuple[str, datetime]] = []  # (schedule name, when), in order

    def tick(self, now: float | None = None) -> list[tuple[str, datetime]]:
        """Fire every occurrence due since the last tick (a schedule first seen starts from its creation)."""
        with self._lock:
            return self._tick(now)

    def _tick(self, now: float | None) -> list[tuple[str, datetime]]:
        moment = datetime.fromtimestamp(self._clock() if now is None else now, UTC)
        fired: list[tuple[str, datetime]] = []
        for summary in self._schedules():
            name = summary["Name"]
            created = summary.get("CreationDate")
            # A schedule first seen now starts from when it was made: the Scheduler runs from creation.
            first = min(moment, created.astimezone(UTC)) if isinstance(created, datetime) else moment
            since = self._seen.setdefault(name, first)
            if summary.get("State") != "ENABLED" or since >= moment:
                self._seen[name] = max(moment, since)
                continue
            schedule = self._client.get_schedule(Name=name, GroupName=self._group)
            zone = schedule.get("ScheduleExpressionTimezone", "UTC")
            due = next_fire(schedule["ScheduleExpression"], zone, since)
            while due.astimezone(UTC) <= moment:
                target = schedule["Target"]
                self._invoke(self._functions[target["Arn"]], json.loads(target.get("Input") or "{}"))
                fired.append((name, due))
                due = next_fire(schedule["ScheduleExpression"], zone, due)
            self._seen[name] = max(moment, since)
        self.fired.extend(fired)
        return fired

    def _schedules(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"GroupName": self._group}
        while True:
            page = self._client.list_schedules(**kwargs)
            found += page.get("Schedules", [])
            if not page.get("NextToken"):
                return found
            kwargs["NextToken"] = page["NextToken"]


def functions_by_arn(attributes: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """The functions' ARNs (as ``create_resources`` made them) to their logical ids."""
    return {arn: logical_id for (logical_id, attribute), arn in attributes.items() if attribute == "Arn"}
