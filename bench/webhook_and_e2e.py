"""Kommo webhook answer time through the local stack, against the naive design; and end-to-end throughput.

1. Answer time over real HTTP (gateway → handler → SQS), for a 1-lead and a 50-lead body, with the Whereby simulator
   answering in 300 ms. Baseline in the same run: the naive design that creates the rooms and posts the notes before
   answering (what a 100-line Flask script does), against the same simulators. p99 only from 100 samples or more,
   else the maximum (bench/stats.py).
2. Where that time goes, in this process with the same bodies: the Kommo route's use-case with its SQS client
   replaced by a counter (parse, check, build the jobs: the handler's own work), then with moto's SQS, each
   SendMessageBatch timed.
3. End to end on a fresh stack: N stage changes sent as fast as the gateway takes them, until each lead has its room
   and note; rooms per second, Whereby points and Kommo calls per room. Baseline in the same run: the same N rooms
   made by calling the simulators directly, one after another (create, then note), with the same latencies.
4. The rooms a deployment can make a second in AWS, from the template's worker count and Kommo's request rates.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import boto3
import requests

from bench.stats import median, tail
from devstack.local import KOMMO_SIM_REQUESTS_PER_SECOND, LocalConfig, LocalStack

FORM = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "amoCRM-Webhooks/3.0"}
E2E_FIRST_LEAD = 50_000_000


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


def time_requests(send: Callable[[int], None], runs: int, before: Callable[[], None] = lambda: None) -> list[float]:
    times = []
    for i in range(runs):
        before()
        started = time.perf_counter()
        send(i)
        times.append(time.perf_counter() - started)
    return times


@dataclass
class Timing:
    """Samples in seconds, shown as p50 and p99 (or max) in milliseconds, with their count."""

    samples: list[float]

    @property
    def p50_ms(self) -> float:
        return median(self.samples) * 1000

    def show(self, width: int = 7, unit: str = "runs") -> str:
        label, value = tail(self.samples)
        return f"p50 {self.p50_ms:{width}.1f} ms  {label} {value * 1000:{width}.1f} ms ({len(self.samples)} {unit})"


@dataclass
class CountingSqs:
    """Stands in for the SQS client: accepts every entry and counts the calls, with no network."""

    calls: int = 0

    def send_message_batch(self, QueueUrl: str, Entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}


@dataclass
class TimedSqs:
    """The real SQS client (moto here), each SendMessageBatch timed."""

    client: Any
    times: list[float] = field(default_factory=list)

    def send_message_batch(self, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.client.send_message_batch(**kwargs)
        finally:
            self.times.append(time.perf_counter() - started)


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


def answer_times(stack: LocalStack, runs: int, naive_runs: int, leads: int, status: int) -> dict[str, Any]:
    from bridge import runtime
    from bridge.core.http_api import ApiRequest
    from bridge.kommo.intake import answer, stage_job_kind
    from bridge.kommo.jobs import JobQueue
    from devstack.lambda_events import http_api_event

    session = requests.Session()
    query = urlencode({"token": stack.webhook_token})
    url = f"{stack.gateway_url}/kommo/stage?{query}"
    subdomain = stack.config.kommo_subdomain
    # Fresh lead ids for every request of every phase: SQS would drop a repeated job as a duplicate.
    base = 10_000_000 * leads

    def body_of(first: int) -> bytes:
        return stage_body(first, leads, status, subdomain)

    def over_http(i: int) -> None:
        session.post(url, data=body_of(base + i * leads), headers=FORM, timeout=30).raise_for_status()

    def empty_queue() -> None:
        # moto's FIFO send slows down with the queue's depth (SQS's does not), and a 300 ms Whereby keeps the
        # local worker far behind: each measured request starts from an empty queue, as it would in AWS.
        drop_waiting_jobs(stack)

    over_http(runs)  # warm: imports, connections, the webhook token in the secrets cache
    http_times = time_requests(over_http, runs, before=empty_queue)

    # The same route in this process, from the event API Gateway would pass: only the queue port differs.
    route = runtime.intake()
    queue_url = runtime.settings().jobs_queue_url
    counter = CountingSqs()
    timed = TimedSqs(boto3.client("sqs"))
    counted_route = replace(route, queue=lambda: JobQueue(queue_url, counter))
    moto_route = replace(route, queue=lambda: JobQueue(queue_url, timed))

    def in_process(ports: Any, offset: int) -> Callable[[int], None]:
        def send(i: int) -> None:
            event = http_api_event("POST", "/kommo/stage", query=query, headers=FORM, body=body_of(offset + i * leads))
            result = answer(ApiRequest.of(event), stage_job_kind, ports)
            assert result["statusCode"] == 200, result

        return send

    in_process(counted_route, base + 2_000_000)(runs)  # warm
    counter.calls = 0
    own_times = time_requests(in_process(counted_route, base + 2_000_000), runs)
    in_process(moto_route, base + 3_000_000)(runs)  # warm: the new client's connection
    timed.times.clear()
    moto_times = time_requests(in_process(moto_route, base + 3_000_000), runs, before=empty_queue)

    naive = naive_handler(stack)
    naive_times = time_requests(lambda i: naive(body_of(base + 5_000_000 + i * leads)), naive_runs)
    return {
        "http": Timing(http_times),
        "own": Timing(own_times),
        "moto": Timing(moto_times),
        "batches": counter.calls / runs,
        "batch": Timing(timed.times),
        "naive": Timing(naive_times),
    }


def wait_for_notes(stack: LocalStack, leads: range, timeout: float) -> float:
    """Seconds (perf_counter) at which every lead of ``leads`` had its note, or at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(noted_leads(stack, leads)) >= len(leads):
            break
        time.sleep(0.5)
    return time.perf_counter()


def noted_leads(stack: LocalStack, leads: range) -> set[int]:
    assert stack.kommo_sim is not None
    return {note["entity_id"] for note in stack.kommo_sim.notes() if note["entity_id"] in leads}


def kommo_calls(stack: LocalStack) -> int:
    assert stack.kommo_sim is not None
    return sum(1 for entry in stack.kommo_sim.requests_seen() if not entry["path"].startswith("/_sim/"))


def end_to_end(stack: LocalStack, deals: int, status: int) -> dict[str, float]:
    """On a fresh stack: the table, the queue and the simulators hold this phase's rooms only."""
    assert stack.whereby_sim is not None
    session = requests.Session()
    url = f"{stack.gateway_url}/kommo/stage?{urlencode({'token': stack.webhook_token})}"
    leads = range(E2E_FIRST_LEAD, E2E_FIRST_LEAD + deals)
    started = time.perf_counter()
    for lead in leads:
        body = stage_body(lead, 1, status, stack.config.kommo_subdomain)
        session.post(url, data=body, headers=FORM, timeout=30).raise_for_status()
    sent = time.perf_counter() - started
    finished = wait_for_notes(stack, leads, timeout=max(120.0, deals * 0.5))
    rooms = len(noted_leads(stack, leads))
    made = len(stack.whereby_sim.meetings())
    return {
        "deals": deals,
        "rooms": rooms,
        "whereby_rooms": made,
        "seconds": finished - started,
        "send_seconds": sent,
        "rooms_per_second": rooms / (finished - started),
        "points_per_room": stack.whereby_sim.points_used / max(made, 1),
        "kommo_calls_per_room": kommo_calls(stack) / max(rooms, 1),
    }


def direct_loop(stack: LocalStack, deals: int) -> dict[str, float]:
    """The floor: the same rooms made by calling the simulators directly, one room and its note after another."""
    naive = naive_handler(stack)
    subdomain = stack.config.kommo_subdomain
    first = E2E_FIRST_LEAD + 1_000_000
    naive(stage_body(first - 1, 1, 0, subdomain))  # warm: connections
    started = time.perf_counter()
    for lead in range(first, first + deals):
        naive(stage_body(lead, 1, 0, subdomain))
    seconds = time.perf_counter() - started
    return {"rooms": deals, "seconds": seconds, "rooms_per_second": deals / seconds}


def aws_room_rate(kommo_calls_per_room: float) -> dict[str, float]:
    """Rooms a second a deployment can make, bounded by Kommo's limit on notes: from the configured rates."""
    from bridge.core.config import settings_from
    from devstack.template import load_template

    worker = load_template()["Resources"]["WorkerFunction"]["Properties"]["Events"]["Jobs"]["Properties"]
    workers = int(worker["ScalingConfig"]["MaximumConcurrency"])
    # The deployed defaults, not this bench's lifted rate.
    deployed = settings_from({k: v for k, v in os.environ.items() if k != "KOMMO_REQUESTS_PER_SECOND"})
    per_worker = deployed.kommo_requests_per_second
    reconcile = deployed.kommo_reconcile_requests_per_second
    return {
        "workers": workers,
        "per_worker": per_worker,
        "reconcile": reconcile,
        "kommo_limit": KOMMO_SIM_REQUESTS_PER_SECOND,
        "calls_per_room": kommo_calls_per_room,
        "rooms_per_second": workers * per_worker / max(kommo_calls_per_room, 1.0),
    }


def bench_config() -> LocalConfig:
    return LocalConfig(
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


def run(runs: int, naive_runs: int, deals: int, latency: float) -> dict[str, Any]:
    # The bridge's own throughput: Kommo's 7 requests/s would otherwise bound the end-to-end figure (printed too).
    os.environ["KOMMO_REQUESTS_PER_SECOND"] = "1000"
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    config = bench_config()
    status = int(next(iter(json.loads(config.stage_rules))))
    with LocalStack(config, log=lambda line: None) as stack:
        assert stack.kommo_sim is not None and stack.whereby_sim is not None
        stack.kommo_sim.rate_limit_per_second = 0
        stack.whereby_sim.latency = latency
        one = answer_times(stack, runs, naive_runs, 1, status)
        # The naive design takes 50 x 300 ms per body: a few runs, so its tail is a maximum.
        fifty = answer_times(stack, max(20, runs // 2), max(3, naive_runs // 30), 50, status)
    with LocalStack(config, log=lambda line: None) as stack:
        assert stack.kommo_sim is not None
        stack.kommo_sim.rate_limit_per_second = 0
        e2e = end_to_end(stack, deals, status)
        floor = direct_loop(stack, deals)
        aws = aws_room_rate(e2e["kommo_calls_per_room"])
    return {"one_lead": one, "fifty_leads": fifty, "end_to_end": e2e, "direct": floor, "aws": aws, "latency": latency}


def report(result: dict[str, Any]) -> list[str]:
    lines = [
        f"Kommo webhook answer time over HTTP, Whereby answering in {result['latency'] * 1000:.0f} ms"
        " (p99 from 100 runs or more, else the maximum):"
    ]
    for name in ("one_lead", "fifty_leads"):
        row = result[name]
        lines.append(
            f"  {name.replace('_', ' '):<12} ours {row['http'].show()} | naive inline {row['naive'].show(8)}"
            f" | naive/ours p50 {row['naive'].p50_ms / row['http'].p50_ms:.0f}x"
        )
    lines.append("Where our answer time goes: the same route in this process (no HTTP), new leads each run:")
    for name in ("one_lead", "fifty_leads"):
        row = result[name]
        overhead = row["http"].p50_ms - row["own"].p50_ms
        lines += [
            f"  {name.replace('_', ' '):<12} own work, SQS client a counter  {row['own'].show()}",
            f"  {'':<12} with moto's SQS                 {row['moto'].show()}",
            f"  {'':<12} each SendMessageBatch to moto   {row['batch'].show(unit='calls')},"
            f" {row['batches']:.0f} per body",
            f"  {'':<12} over HTTP minus own work, p50: {overhead:.1f} ms, {overhead / row['batches']:.1f} ms per batch"
            " (gateway included)",
        ]
    e2e, floor, aws = result["end_to_end"], result["direct"], result["aws"]
    lines += [
        "End to end on a fresh stack, Whereby and Kommo answering at once, Kommo's rate limit off:",
        f"  ours     {e2e['deals']} stage changes → {e2e['rooms']} rooms with their notes"
        f" ({e2e['whereby_rooms']} at Whereby) in {e2e['seconds']:.1f} s (sending took {e2e['send_seconds']:.1f} s):"
        f" {e2e['rooms_per_second']:.1f} rooms/s on the local stack's one worker",
        f"           {e2e['points_per_room']:.2f} Whereby points and {e2e['kommo_calls_per_room']:.2f} Kommo calls"
        " per room",
        f"  direct   the same {floor['rooms']} rooms made by calling the simulators one after another (create, note):"
        f" {floor['seconds']:.1f} s, {floor['rooms_per_second']:.1f} rooms/s",
        f"  ours/direct {e2e['rooms_per_second'] / floor['rooms_per_second']:.2f}",
        f"In AWS, notes bound the rate: {aws['workers']} workers (the template's MaximumConcurrency)"
        f" x {aws['per_worker']:g} Kommo requests/s each (KOMMO_REQUESTS_PER_SECOND)",
        f"  / {aws['calls_per_room']:.2f} Kommo calls per room = {aws['rooms_per_second']:.1f} rooms/s;"
        f" with the reconciliation's {aws['reconcile']:g}/s, {aws['workers'] * aws['per_worker'] + aws['reconcile']:g}"
        f" of Kommo's {aws['kommo_limit']:g} requests/s",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="1-lead bodies timed (50-lead: half as many)")
    parser.add_argument("--naive-runs", type=int, default=100, help="1-lead bodies of the naive design (50-lead: /30)")
    parser.add_argument("--deals", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.3, help="Whereby simulator latency, seconds")
    args = parser.parse_args()
    result = run(args.runs, args.naive_runs, args.deals, args.latency)
    print("\n".join(report(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
