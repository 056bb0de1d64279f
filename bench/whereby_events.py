"""Whereby events route answer time on the local stack, and the Whereby points one held meeting costs.

1. Answer time, p50 and p99 over real HTTP (gateway → handler → signature check → SQS) for signed
   ``room.client.joined`` events of a room of ours. Baseline in the same run: the Kommo stage route (one lead), sent
   the same way. Whereby waits 5 s; Kommo 2 s.
2. Points per held meeting: a host and a guest join a deal's room and leave; the simulator delivers the signed
   events to the gateway, the worker reads the session from Whereby's insights and posts the note. Points are
   counted at the simulator, from the first event to the note.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import statistics
import time
from urllib.parse import urlencode

import requests

from bench.webhook_and_e2e import FORM, drop_waiting_jobs, percentile, stage_body, time_requests
from devstack.local import LocalConfig, LocalStack

DELETE_POINTS, CREATE_POINTS = 2, 3  # the room's own calls (the spec's info.description)


def sign(body: bytes, secret: str, t: int) -> str:
    """Whereby's signature, made here as Whereby makes it (not with the bridge's own code)."""
    digest = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def open_deal_room(stack: LocalStack, status: int, lead: int) -> str:
    url = f"{stack.gateway_url}/kommo/stage?{urlencode({'token': stack.webhook_token})}"
    requests.post(url, data=stage_body(lead, 1, status, stack.config.kommo_subdomain), headers=FORM, timeout=30)
    assert stack.whereby_sim is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = [m["roomName"].lstrip("/") for m in stack.whereby_sim.meetings()]
        if names:
            return names[-1]
        time.sleep(0.05)
    raise SystemExit("no room was made for the deal")


def points_per_meeting(stack: LocalStack, room: str, lead: int) -> int:
    sim, kommo = stack.whereby_sim, stack.kommo_sim
    assert sim is not None and kommo is not None
    before = sim.points_used
    host = sim.join(room, "Ana", "host")
    guest = sim.join(room, "Client", "visitor")
    sim.leave(guest)
    sim.leave(host)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any("Meeting held" in n["params"]["text"] for n in kommo.notes(lead)):
            return sim.points_used - before
        time.sleep(0.05)
    raise SystemExit("the meeting-held note never came")


def answer_times(stack: LocalStack, runs: int, room: str, status: int) -> dict[str, float]:
    session = requests.Session()
    events_url = f"{stack.gateway_url}/whereby/events"
    stage_url = f"{stack.gateway_url}/kommo/stage?{urlencode({'token': stack.webhook_token})}"

    def event(i: int) -> None:
        body = json.dumps(
            {
                "id": f"{i:064x}",
                "apiVersion": "1.0",
                "createdAt": "2026-01-01T00:00:00.000Z",
                "type": "room.client.joined",
                "data": {"roomName": f"/{room}", "roomSessionId": "s", "displayName": "Ana", "roleName": "host"},
            },
            separators=(",", ":"),
        ).encode()
        signature = sign(body, stack.whereby_signing_secret, int(time.time()))
        headers = {"Content-Type": "application/json", "Whereby-Signature": signature}
        session.post(events_url, data=body, headers=headers, timeout=30).raise_for_status()

    def stage(i: int) -> None:
        body = stage_body(20_000_000 + i, 1, status, stack.config.kommo_subdomain)
        session.post(stage_url, data=body, headers=FORM, timeout=30).raise_for_status()

    def empty_queue() -> None:
        drop_waiting_jobs(stack)  # moto's FIFO send slows with depth; SQS's does not

    event(10**9)  # warm: imports, connections
    stage(10**6)
    ours = time_requests(event, runs, before=empty_queue)
    baseline = time_requests(stage, runs, before=empty_queue)
    return {
        "p50_ms": statistics.median(ours) * 1000,
        "p99_ms": percentile(ours, 0.99) * 1000,
        "stage_p50_ms": statistics.median(baseline) * 1000,
        "stage_p99_ms": percentile(baseline, 0.99) * 1000,
    }


def run(runs: int) -> dict[str, object]:
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    config = LocalConfig(
        port=0,
        sweeper=False,
        log_level="ERROR",
        metrics=False,
        access_log=False,
        poll_interval=0.05,
        extra_parameters={"WherebyPointsPerMinute": "1000000"},
    )
    with LocalStack(config, log=lambda line: None) as stack:
        assert stack.kommo_sim is not None
        stack.kommo_sim.rate_limit_per_second = 0
        status = int(next(iter(json.loads(config.stage_rules))))
        lead = 77_000_001
        room = open_deal_room(stack, status, lead)
        insights = points_per_meeting(stack, room, lead)
        times = answer_times(stack, runs, room, status)
    return {"runs": runs, "insights_points": insights, **times}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="requests per route (100 or more for a p99)")
    args = parser.parse_args()
    result = run(max(100, args.runs))
    print(f"Answer time over HTTP on the local stack, {result['runs']} requests each:")
    print(f"  POST /whereby/events (signed, enqueued) p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms")
    print(
        f"  POST /kommo/stage (baseline, 1 lead)   p50 {result['stage_p50_ms']:6.1f} ms"
        f"  p99 {result['stage_p99_ms']:6.1f} ms"
    )
    points = int(str(result["insights_points"]))
    print(
        f"Whereby points per held meeting: {points} (insights: room-sessions and participants, one read each);"
        f" with the room's create ({CREATE_POINTS}) and delete ({DELETE_POINTS}),"
        f" {points + CREATE_POINTS + DELETE_POINTS} per deal meeting"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
