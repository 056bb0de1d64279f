"""The local stack tells a meeting's story: the Whereby simulator's signed events reach the gateway, and the deal
gets its note, as ``make local`` and ``make demo`` show it."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import requests

from devstack.local import DEMO_STATUS, LocalStack
from tests.kommo_bodies import status_body

LEAD = 41000017


def wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_people_meeting_in_a_deals_room_give_the_deal_one_meeting_held_note(local_stack: LocalStack):
    sim, kommo = local_stack.whereby_sim, local_stack.kommo_sim
    assert sim is not None and kommo is not None
    url = f"{local_stack.gateway_url}/kommo/stage?{urlencode({'token': local_stack.webhook_token})}"
    body = status_body(LEAD, DEMO_STATUS, int(time.time()))
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert requests.post(url, data=body, headers=form, timeout=10).status_code == 200
    room = wait_for(lambda: [m["roomName"] for m in sim.meetings()])[-1]

    host = sim.join(room, "Ana", "host")
    guest = sim.join(room, "Client", "visitor")
    sim.leave(guest)
    sim.leave(host)

    assert {d["status"] for d in sim.deliveries()} == {200}  # signed with the local secret, taken by the route
    held = wait_for(lambda: [n for n in kommo.notes(LEAD) if "Meeting held" in n["params"]["text"]])
    assert len(held) == 1 and "Ana (host), Client (guest)" in held[0]["params"]["text"]
