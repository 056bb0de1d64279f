"""``python -m devstack.demo`` (``make demo``): the quickest proof that the bridge works, on this machine alone.

Boots the local stack on free ports, posts the sample Kommo stage-change webhook to the gateway as Kommo would,
waits for the worker, and prints the room the Whereby simulator holds and the note the Kommo simulator received.
Exits 0, or 1 with the reason.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import requests

from devstack.local import LocalConfig, LocalStack
from devstack.template import ROOT

STAGE_EVENT = ROOT / "events" / "kommo-stage-change.form"
WAIT_SECONDS = 20.0
KOMMO_HEADERS = {"content-type": "application/x-www-form-urlencoded", "user-agent": "amoCRM-Webhooks/3.0"}


class DemoFailed(Exception):
    """The demo could not show a room and a note; the message says why."""


@dataclass(frozen=True)
class Outcome:
    room: dict[str, Any]
    note: dict[str, Any]
    seconds: float


def lead_of(body: bytes) -> tuple[int, int]:
    """The lead id and the status it moved into, from a ``leads[status]`` webhook body."""
    fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
    return int(fields["leads[status][0][id]"]), int(fields["leads[status][0][status_id]"])


def post_webhook(stack: LocalStack, body: bytes) -> None:
    url = f"{stack.gateway_url}/kommo/stage?{urlencode({'token': stack.webhook_token})}"
    response = requests.post(url, data=body, headers=KOMMO_HEADERS, timeout=10)
    if response.status_code != 200 or response.json().get("accepted") != 1:
        raise DemoFailed(f"the gateway answered the webhook with {response.status_code} {response.text}")


def wait_for_room_and_note(stack: LocalStack, lead_id: int, started: float) -> Outcome:
    assert stack.whereby_sim is not None and stack.kommo_sim is not None
    deadline = started + WAIT_SECONDS
    while time.monotonic() < deadline:
        rooms, notes = stack.whereby_sim.meetings(), stack.kommo_sim.notes(lead_id)
        if rooms and notes:
            return Outcome(rooms[0], notes[0], time.monotonic() - started)
        time.sleep(0.1)
    raise DemoFailed(why_nothing_arrived(stack, lead_id))


def why_nothing_arrived(stack: LocalStack, lead_id: int) -> str:
    pump = next(iter(stack.pumps.values()))
    dead_letter_queue, _ = stack.dead_letter_queue_of(pump.trigger.queue)
    rooms = len(stack.whereby_sim.meetings()) if stack.whereby_sim else 0
    notes = len(stack.kommo_sim.notes(lead_id)) if stack.kommo_sim else 0
    return (
        f"no room and note for lead {lead_id} within {WAIT_SECONDS:g} s ({rooms} room(s), {notes} note(s)); "
        f"job queue depth {stack.queue_depth(pump.trigger.queue)}, dead-letter queue depth "
        f"{stack.queue_depth(dead_letter_queue)}, {pump.stats.failed} failed worker tries "
        "(the worker's log lines above say why)"
    )


def report(lead_id: int, status_id: int, outcome: Outcome, say: Callable[[str], None]) -> None:
    room, note = outcome.room, outcome.note
    say(f"The worker finished in {outcome.seconds:.1f} s.")
    say("")
    say("Room at the Whereby simulator:")
    for key in ("meetingId", "roomName", "roomUrl", "hostRoomUrl", "startDate", "endDate"):
        say(f"  {key:<12} {room.get(key, '')}")
    say("")
    say(f"Note on lead {lead_id} at the Kommo simulator ({note.get('note_type')}):")
    for line in str(note.get("params", {}).get("text", "")).splitlines():
        say(f"  | {line}")
    say("")
    say(f"Demo OK: a deal entering status {status_id} got a Whereby room and a note with its links.")


def run_demo(say: Callable[[str], None] = print) -> None:
    body = STAGE_EVENT.read_bytes()
    lead_id, status_id = lead_of(body)
    config = LocalConfig(port=0, sweeper=False, log_level="WARNING", metrics=False, access_log=False)
    say("Starting the local stack (moto, Whereby and Kommo simulators, gateway, queue pump)...")
    with LocalStack(config) as stack:
        say(f"POST {stack.gateway_url}/kommo/stage?token=<local token>  body: events/{STAGE_EVENT.name}")
        say(f"  (lead {lead_id} of account {stack.config.kommo_subdomain} moves into status {status_id})")
        started = time.monotonic()
        post_webhook(stack, body)
        say("  -> 200, job queued; waiting for the worker...")
        report(lead_id, status_id, wait_for_room_and_note(stack, lead_id, started), say)


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
