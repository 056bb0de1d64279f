"""The recurring-meeting commands of ``/whereby`` as frozen values (``bridge.chat.schedules`` parses and runs them).

They live apart from ``bridge.chat.grammar`` so that the grammar can name them in its ``Command`` without importing
the schedules' parser, which imports the grammar.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

SCHEDULE_WORDS = frozenset({"every", "schedules", "unschedule"})


@dataclass(frozen=True)
class ScheduleEvery:
    """``every <days> <HH:MM> <zone> [topic] [duration] [--webhook <url>]``."""

    days: tuple[str, ...]  # "MON".."SUN", in week order
    hour: int
    minute: int
    zone: str  # an IANA zone name, as zoneinfo knows it
    topic: str
    minutes: int
    slug_source: str = ""
    webhook: str = ""  # an incoming webhook of the channel ("" : the bot posts)


@dataclass(frozen=True)
class ListSchedules:
    pass


@dataclass(frozen=True)
class Unschedule:
    schedule_id: str
    reference: str = ""  # what the caller typed, quoted back


@dataclass(frozen=True)
class ScheduleProblem:
    """Why a schedule command cannot run: a catalogue sentence and its values, said in the caller's language."""

    message: str
    values: Mapping[str, object] = field(default_factory=dict)


ScheduleCommand = ScheduleEvery | ListSchedules | Unschedule | ScheduleProblem
SCHEDULE_COMMANDS = (ScheduleEvery, ListSchedules, Unschedule, ScheduleProblem)
