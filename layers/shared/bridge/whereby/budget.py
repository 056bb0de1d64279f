"""Whereby's points, shared by every function of the stack through one item of the meetings table.

Whereby gives an organisation a number of points a minute (Build plan: 100; a create costs 3, a delete 2, a read 1),
shared by all its API keys, and answers 429 once they are spent. A Kommo mass action that moves hundreds of deals
would spend a minute's points in seconds, and every later call would be refused: the worker's jobs would fail over
and over, and a person asking `/whereby` for a room would be told "busy" until the backlog drained. So every caller
takes its points here before it calls Whereby.

- The item ``BUDGET#whereby`` / ``BUDGET`` holds the points spent in the last minute, per slot of a sixtieth of the
  window (a second) and per kind of caller, and until when Whereby last told us to stop (a 429's ``Retry-After``).
  A take reads the item, checks, and writes it back on the condition that its version did not change meanwhile; a
  loser reads again. So two workers and the command never spend the same point twice.
- It is a sliding window, not a token bucket: a bucket refilled at the per-minute rate lets up to twice the plan's
  points through in the minute after a quiet spell, and Whereby would refuse the second half whatever its own window
  is aligned to. A sliding window never lets more than the plan's points through in any minute. Each slot counts
  one slot longer than the window, a margin for the time a request takes to reach Whereby.
- Background callers (the worker, the sweeper) may spend (points - ``reserve``) a minute between them; the
  interactive `/whereby` command may spend whatever is left of the minute's points, the reserve at least. So a bulk
  move runs at (points - reserve) / 3 rooms a minute (23 on the Build plan with the default reserve of 30), the
  people using the command do not slow it down, and they get up to ten rooms a minute meanwhile.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from bridge.core.errors import BudgetExhausted, PeerUnavailable
from bridge.core.observability import count

if TYPE_CHECKING:
    from types_boto3_dynamodb.service_resource import Table
    from types_boto3_dynamodb.type_defs import TableAttributeValueTypeDef

KEY = {"pk": "BUDGET#whereby", "sk": "BUDGET"}
SLOTS = 60  # slots per window: one a second for Whereby's minute
MAX_CONFLICTS = 20  # lost conditional writes in a row before a taker gives up for now
INTERACTIVE_WAIT_SLOTS = 2  # a person waits at most two seconds for points before being told to try again


@dataclass(frozen=True)
class Ledger:
    """The item as read: points spent per slot by each kind of caller, the time Whereby asked us to wait until, and
    the write version."""

    background: Mapping[int, int] = field(default_factory=dict)
    interactive: Mapping[int, int] = field(default_factory=dict)
    blocked_until: float = 0.0
    version: int = 0

    @staticmethod
    def live(spent: Mapping[int, int], current_slot: int) -> dict[int, int]:
        return {slot: points for slot, points in spent.items() if slot >= current_slot - SLOTS}

    def total(self, current_slot: int) -> dict[int, int]:
        both = self.live(self.background, current_slot)
        for slot, points in self.live(self.interactive, current_slot).items():
            both[slot] = both.get(slot, 0) + points
        return both

    @staticmethod
    def _wait(spent: Mapping[int, int], points: int, limit: int, now: float, slot_seconds: float) -> float:
        """Seconds until ``points`` more fit under ``limit`` as the slots of ``spent`` expire; ``inf``: never."""
        if points > limit:
            return math.inf
        excess = sum(spent.values()) + points - limit
        if excess <= 0:
            return 0.0
        for slot in sorted(spent):
            excess -= spent[slot]
            if excess <= 0:
                return (slot + SLOTS + 1) * slot_seconds - now
        raise AssertionError("the live slots hold more than the excess")

    def wait_for(self, points: int, interactive: bool, budget: PointsBudget, now: float) -> float:
        """Seconds until this caller may spend ``points`` (0: now); ``math.inf`` if it never can."""
        current = math.floor(now / budget.slot_seconds)
        wait = max(0.0, self.blocked_until - now)
        wait = max(wait, self._wait(self.total(current), points, budget.points, now, budget.slot_seconds))
        if not interactive:
            own = self.live(self.background, current)
            wait = max(wait, self._wait(own, points, budget.points - budget.reserve, now, budget.slot_seconds))
        return wait

    def spend(self, points: int, interactive: bool, now: float, slot_seconds: float) -> Ledger:
        current = math.floor(now / slot_seconds)
        background, chat = self.live(self.background, current), self.live(self.interactive, current)
        mine = chat if interactive else background
        mine[current] = mine.get(current, 0) + points
        return Ledger(background, chat, self.blocked_until, self.version)


class PointsBudget:
    """The shared count; ``take`` before every Whereby call, ``hold_off`` after Whereby answered 429."""

    def __init__(
        self,
        table: Table,
        points_per_window: int,
        reserve: int,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table = table
        self.points = points_per_window
        self.reserve = reserve
        self.window_seconds = window_seconds
        self.slot_seconds = window_seconds / SLOTS
        self.clock = clock
        self._sleep = sleep

    def take(self, points: int, *, interactive: bool, wait_until: float | None = None) -> None:
        """Spend ``points``, waiting for them until ``wait_until`` at most; else raise ``BudgetExhausted``.

        A taker that cannot be served by ``wait_until`` still waits until then before it gives up: a worker that
        handed its job back at once would get the same job again at once and spin through its hand-backs.
        """
        conflicts = 0
        while True:
            ledger = self._read()
            now = self.clock()
            wait = ledger.wait_for(points, interactive, self, now)
            if wait <= 0:
                if self._write(ledger.spend(points, interactive, now, self.slot_seconds)):
                    count("WherebyPointsSpent", points)
                    return
                conflicts += 1
                if conflicts >= MAX_CONFLICTS:
                    count("WherebyBudgetExhausted")
                    raise BudgetExhausted("whereby points budget: too many takers at once", self.slot_seconds)
                self._sleep(random.uniform(0.0, min(0.05, self.slot_seconds)))  # de-synchronise the losers
                continue
            left = (wait_until - now) if wait_until is not None else 0.0
            if left <= 0:
                count("WherebyBudgetExhausted")
                who = "interactive" if interactive else "background"
                retry_after = self.window_seconds if math.isinf(wait) else wait
                raise BudgetExhausted(f"whereby points budget spent for {who} calls", retry_after)
            self._sleep(min(wait, left))

    def hold_off(self, seconds: float | None) -> None:
        """Whereby answered 429 (someone else spends the organisation's points too): nobody calls for a while."""
        hold = min(self.window_seconds, seconds if seconds is not None else self.window_seconds / 12)
        if hold <= 0:
            return
        for _ in range(MAX_CONFLICTS):
            ledger = self._read()
            until = self.clock() + hold
            if until <= ledger.blocked_until:
                return
            if self._write(replace(ledger, blocked_until=until)):
                return

    def available(self, *, interactive: bool) -> int:
        """Points a caller could take now (for logs and tests)."""
        ledger = self._read()
        now = self.clock()
        if ledger.blocked_until > now:
            return 0
        current = math.floor(now / self.slot_seconds)
        left = self.points - sum(ledger.total(current).values())
        if not interactive:
            left = min(left, self.points - self.reserve - sum(ledger.live(ledger.background, current).values()))
        return max(0, left)

    def background(self, wait_until: float | None = None) -> Spender:
        """For the worker (waiting until ``wait_until``) and the sweeper (not waiting): leaves the reserve."""
        return Spender(self, interactive=False, wait_until=wait_until)

    def interactive(self) -> Spender:
        """For a person waiting on the slash command: may spend the reserve, waits two seconds of the minute."""
        return Spender(self, interactive=True, wait_until=self.clock() + INTERACTIVE_WAIT_SLOTS * self.slot_seconds)

    # storage ---------------------------------------------------------------------------------------------------
    def _read(self) -> Ledger:
        try:
            # The item is ours, written by _write: its attributes have the shapes read below.
            item: Mapping[str, Any] | None = self.table.get_item(Key=KEY, ConsistentRead=True).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise PeerUnavailable(f"whereby points budget unreadable: {type(exc).__name__}") from None
        if not item:
            return Ledger()
        return Ledger(
            background={int(slot): int(points) for slot, points in (item.get("background") or {}).items()},
            interactive={int(slot): int(points) for slot, points in (item.get("interactive") or {}).items()},
            blocked_until=float(item.get("blocked_until", 0)),
            version=int(item.get("version", 0)),
        )

    def _write(self, ledger: Ledger) -> bool:
        """Store ``ledger`` as the next version; False if someone else wrote since it was read."""
        item: dict[str, TableAttributeValueTypeDef] = {
            **KEY,
            "background": {str(slot): points for slot, points in ledger.background.items()},
            "interactive": {str(slot): points for slot, points in ledger.interactive.items()},
            "blocked_until": Decimal(str(round(ledger.blocked_until, 3))),
            "version": ledger.version + 1,
        }
        condition: dict[str, Any] = (
            {"ConditionExpression": "version = :seen", "ExpressionAttributeValues": {":seen": ledger.version}}
            if ledger.version
            else {"ConditionExpression": "attribute_not_exists(pk)"}
        )
        try:
            self.table.put_item(Item=item, **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise PeerUnavailable(f"whereby points budget not written: {type(exc).__name__}") from None
        except BotoCoreError as exc:
            raise PeerUnavailable(f"whereby points budget not written: {type(exc).__name__}") from None
        return True


@dataclass(frozen=True)
class Spender:
    """One caller's claim on the budget, handed to the Whereby client: its priority and how long it may wait."""

    budget: PointsBudget
    interactive: bool
    wait_until: float | None

    def spend(self, points: int) -> None:
        self.budget.take(points, interactive=self.interactive, wait_until=self.wait_until)

    def throttled(self, retry_after: float | None) -> None:
        self.budget.hold_off(retry_after)
