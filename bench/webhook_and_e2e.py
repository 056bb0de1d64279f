"""Kommo webhook answer time through the local stack, against the naive design; and end-to-end throughput.

1. Answer time, p50 and p99 over real HTTP (gateway → handler → SQS), for a 1-lead and a 50-lead body, with the
   Whereby simulator answering in 300 ms. Baseline in the same run: the naive design that creates the rooms and
   posts the notes before answering (what a 100-line Flask script does), against the same simulators.
2. End to end: N stage changes sent as fast as the gateway takes them, until N rooms exist at the simulator;
   rooms per second, and Whereby points spent per room (create 3, plus whatever retries and sweeps cost).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import requests

from devstack.local import LocalConfig, LocalStack

FORM = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "amoCRM-Webhooks/3.0"}


def stage_body(first_lead: int, count: int, status: int, subdomain: str) -> bytes:
    fields: list[tuple[str, str]] = [("account[subdomain]", subdomain)]
    for i in range(count):
        lead = first_lead + i
        fields += [
            (f"leads[status][{i}][id]", str(lead)),
            (f"leads[status][{i}][name]", f"Deal {lead}"),
            (f"leads[status][{i}][status_id]", str(status)),
            (f"leads[status][{i}][old_status_id]", "1"),
            (f"leads[status][{i}][pipeline_id]", "788512"),
            (f"leads[status][{i}][updated_at]", str(1_700_000_000 + lead)),
        ]
    return urlencode(fields).encode()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def time_requests(send: Callable[[int], None], runs: int, before: Callable[[], None] = lambda: None) -> list[float]:
    times = []
    for i in range(runs):
        before()
        started = time.perf_counter()
        send(i)
        times.append(time.perf_counter() - started)
    return times


def naive_handler(stack: LocalStack) -> Callable[[bytes], None]:
    """The design we replace: parse, create each room, post each note, then answer."""
    from bridge import runtime
    from bridge.kommo.webhook import parse_webhook
    from bridge.whereby.client import RoomRequest

    whereby, kommo = runtime.whereby(), runtime.kommo()

    def handle(body: bytes) -> None:
        for event in parse_webhook(body).events:
            end = datetime.now(UTC) + timedelta(hours=1)
            meeting = whereby.create_meeting(RoomRequest(end, prefix="naive-"))
            kommo.add_note(event.lead_id, f"{meeting.room_url} {meeting.host_room_url}")

    return handle


def drop_waiting_jobs(stack: LocalStack) -> None:
    url = stack.queue_url("JobsQueue")
    while True:
        batch = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        stack.sqs.delete_message_batch(QueueUrl=url, Entries=entries)


def answer_times(stack: LocalStack, runs: int, leads_per_body: int, status: int) -> dict[str, float]:
    session = requests.Session()
    url = f"{stack.gateway_url}/kommo/stage?{urlencode({'token': stack.webhook_token})}"
    subdomain = stack.config.kommo_subdomain
    base = 10_000_000 * leads_per_body

    def ours(i: int) -> None:
        answer = session.post(
            url, data=stage_body(base + i * leads_per_body, leads_per_body, status, subdomain), headers=FORM, timeout=30
        )
        answer.raise_for_status()

    naive = naive_handler(stack)

    def inline(i: int) -> None:
        naive(stage_body(base + 5_000_000 + i * leads_per_body, leads_per_body, status, subdomain))

    def empty_queue() -> None:
        # moto's FIFO send slows down with the queue's depth (SQS's does not), and a 300 ms Whereby keeps the
        # local worker far behind: each measured request starts from an empty queue, as it would in AWS.
        drop_waiting_jobs(stack)

    ours(0)  # warm: imports, connections
    our_times = time_requests(ours, runs, before=empty_queue)
    naive_runs = max(3, runs // (5 * leads_per_body))  # the naive path is slow: fewer runs, same statistics
    naive_times = time_requests(inline, naive_runs)
    return {
        "p50_ms": statistics.median(our_times) * 1000,
        "p99_ms": percentile(our_times, 0.99) * 1000,
        "naive_p50_ms": statistics.median(naive_times) * 1000,
        "naive_p99_ms": percentile(naive_times, 0.99) * 1000,
        "ratio_p50": statistics.median(naive_times) / statistics.median(our_times),
    }


def wait_for_rooms(stack: LocalStack, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        have = len(stack.whereby_sim.meetings())
        if have >= count:
            return have
        time.sleep(0.2)
    return len(stack.whereby_sim.meetings())


def end_to_end(stack: LocalStack, deals: int, status: int) -> dict[str, float]:
    stack.whereby_sim.reset()
    session = requests.Session()
    url = f"{stack.gateway_url}/kommo/stage?{urlencode({'token': stack.webhook_token})}"
    started = time.perf_counter()
    for i in range(deals):
        body = stage_body(50_000_000 + i, 1, status, stack.config.kommo_subdomain)
        session.post(url, data=body, headers=FORM, timeout=30).raise_for_status()
    sent = time.perf_counter() - started
    rooms = wait_for_rooms(stack, deals, timeout=max(120.0, deals * 0.5))
    elapsed = time.perf_counter() - started
    return {
        "deals": deals,
        "rooms": rooms,
        "seconds": elapsed,
        "send_seconds": sent,
        "rooms_per_second": rooms / elapsed,
        "points_per_room": stack.whereby_sim.points_used / max(rooms, 1),
    }


def run(runs: int, deals: int, latency: float) -> dict[str, object]:
    # The bridge's own throughput: Kommo's 7 requests/s would otherwise bound the end-to-end figure (printed too).
    os.environ["KOMMO_REQUESTS_PER_SECOND"] = "1000"
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    config = LocalConfig(
        port=0,
        sweeper=False,
        log_level="ERROR",
        metrics=False,
        access_log=False,
        poll_interval=0.05,
        # Whereby's points would bound it too (23 rooms a minute on the Build plan; bench/bulk_move.py measures that):
        # a budget that is counted as usual but never binds.
        extra_parameters={"WherebyPointsPerMinute": "1000000"},
    )
    with LocalStack(config, log=lambda line: None) as stack:
        stack.kommo_sim.rate_limit_per_second = 0
        status = int(next(iter(json.loads(config.stage_rules))))
        stack.whereby_sim.latency = latency
        one = answer_times(stack, runs, 1, status)
        fifty = answer_times(stack, max(20, runs // 5), 50, status)
        drop_waiting_jobs(stack)
        time.sleep(1.0)  # a batch the worker already holds finishes
        stack.whereby_sim.latency = 0.0
        e2e = end_to_end(stack, deals, status)
    return {"one_lead": one, "fifty_leads": fifty, "end_to_end": e2e, "latency_ms": latency * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--deals", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.3, help="Whereby simulator latency, seconds")
    args = parser.parse_args()
    result = run(args.runs, args.deals, args.latency)
    print(f"Kommo webhook answer time over HTTP, Whereby answering in {result['latency_ms']:.0f} ms:")
    for name in ("one_lead", "fifty_leads"):
        row = result[name]
        print(
            f"  {name.replace('_', ' '):<12} p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms"
            f" | naive inline p50 {row['naive_p50_ms']:8.1f} ms  p99 {row['naive_p99_ms']:8.1f} ms"
            f" | naive/ours {row['ratio_p50']:.0f}x"
        )
    e2e = result["end_to_end"]
    print(
        f"End to end: {e2e['deals']} stage changes → {e2e['rooms']} rooms in {e2e['seconds']:.1f} s"
        f" ({e2e['rooms_per_second']:.1f} rooms/s; sending took {e2e['send_seconds']:.1f} s),"
        f" {e2e['points_per_room']:.2f} Whereby points per room"
    )
    print("  (with Kommo's 7 requests/s per integration, notes cap a deployment at about 6 rooms/s: 2 workers x 3/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
