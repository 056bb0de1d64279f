"""Races that always race: workers made to collide on a lead's room claim, whatever the scheduler does.

Left to the scheduler, two threads running the same job mostly take turns (the first claims and creates before the
second has read the lead), so a claim without its condition would still pass most runs. A ``Collision`` holds the
first read of the lead in each of ``parties`` threads until all of them have read it: every one then claims the
slot on the same view of the lead, and only the claim's condition can keep one room. It holds one such round;
later reads (retries, other jobs) run free.

It changes timing only. The claim that wins is held until every loser has looked at the lead again, so a loser
always finds the claim in progress (as when the winner's Whereby call is slow) and the queue retries it after the
winner is done; without that, a loser could instead find the room made and run its follow-ups beside the winner's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from bridge.store.meetings import Conflict, Lead, MeetingsStore, Room

WAIT_SECONDS = 5.0  # a party that never comes (a broken claim, a job that failed before) ends the wait, not the run


class Collision:
    def __init__(self, store: MeetingsStore, parties: int) -> None:
        self.parties = parties
        self.read_together = threading.Barrier(parties, timeout=WAIT_SECONDS)
        self.losers_looked = threading.Semaphore(0)
        self.mine = threading.local()
        self.reads_held = 0
        self.claims_won = 0
        self.claims_lost = 0
        self._count = threading.Lock()
        self._get_lead: Callable[[str], Lead] = store.get_lead
        self._get_room: Callable[[str], Room | None] = store.get_room
        self._claim: Callable[..., None] = store.claim_lead_room
        # Attributes of this one instance: the class, and every other store, are untouched.
        store.get_lead = self._gated_get_lead
        store.get_room = self._gated_get_room
        store.claim_lead_room = self._gated_claim

    def _gated_get_lead(self, owner: str) -> Lead:
        lead = self._get_lead(owner)
        with self._count:
            first = self.reads_held < self.parties and not getattr(self.mine, "read", False)
            self.reads_held += first
        if first:  # one round only: later reads (retries, later jobs) run free
            self.mine.read = True
            self.read_together.wait()
        return lead

    def _gated_claim(self, *args: Any, **kwargs: Any) -> None:
        try:
            self._claim(*args, **kwargs)
        except Conflict:
            with self._count:
                self.claims_lost += 1
            self.mine.lost = True
            raise
        with self._count:
            self.claims_won += 1
        for _ in range(self.parties - 1):
            if not self.losers_looked.acquire(timeout=WAIT_SECONDS):
                break  # no loser left to wait for: more than one claim won

    def _gated_get_room(self, room_key: str) -> Room | None:
        room = self._get_room(room_key)
        if getattr(self.mine, "lost", False) and not getattr(self.mine, "looked", False):
            self.mine.looked = True
            self.losers_looked.release()
        return room


class LeaseRace:
    """Contenders for the Kommo token lease all try it at once, and every one that got it has read the secret
    before any of them refreshes: with a working lease one holder refreshes, without it every holder would."""

    def __init__(self, parties: int) -> None:
        self.holders = 0
        self._count = threading.Lock()
        self.tried_together = threading.Barrier(parties, timeout=WAIT_SECONDS)
        self.all_tried = threading.Barrier(parties, action=self._holders_meet, timeout=WAIT_SECONDS)
        self.read_together = threading.Barrier(1)
        self.mine = threading.local()

    def _holders_meet(self) -> None:
        self.read_together = threading.Barrier(max(1, self.holders), timeout=WAIT_SECONDS)

    def acquire(self, real: Callable[[], bool]) -> Callable[[], bool]:
        """A lease's ``acquire``, its first try made together with the other contenders'."""

        def gated() -> bool:
            if getattr(self.mine, "tried", False):
                return real()
            self.mine.tried = True
            self.tried_together.wait()
            got = real()
            with self._count:
                self.holders += got
            self.mine.holder = got
            self.all_tried.wait()
            return got

        return gated

    def read(self, real: Callable[[bool], Any]) -> Callable[[bool], Any]:
        """The secret's read; a holder's first fresh read (under the lease) waits for the other holders'."""

        def gated(fresh: bool) -> Any:
            creds = real(fresh)
            if fresh and getattr(self.mine, "holder", False) and not getattr(self.mine, "read", False):
                self.mine.read = True
                self.read_together.wait()
            return creds

        return gated
