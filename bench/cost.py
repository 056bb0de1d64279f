"""What a room costs in AWS: the calls counted on the local stack, priced at eu-west-1 list prices.

N Kommo deals enter the room stage one after another (webhook → job → room and note) and are then won or lost
(webhook → job → room deleted, note); N ``/whereby`` rooms are made and then ended by the sweep. Everything runs
through the local stack (the gateway over HTTP, the template's handlers, moto, the Whereby and Kommo simulators,
the queue pump as Lambda's SQS poller), and ``bench/aws_meter.py`` counts what AWS would bill: Lambda invocations
and their durations, HTTP API requests, SQS requests, DynamoDB request units, Secrets Manager calls, log bytes and
custom metrics. The schedules (sweeper, Kommo reconciliation) run anyway: their idle runs are a cost of the month,
and only what a room adds to them is a cost of the room.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import textwrap
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import requests

from bench.aws_meter import AwsMeter, Usage
from devstack.local import LocalConfig, LocalStack, parse_rate, schedule_triggers
from devstack.template import functions, load_template, parameter_defaults, resources_of

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
FORM = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "amoCRM-Webhooks/3.0"}
MATTERMOST = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "mattermost-bot/1.1"}
FIRST_LEAD = 70_000_000
EVENT_TIME = 1_767_225_600
CHAT_MINUTES = 30  # the sample command's "Design review 30m"
HOURS_A_MONTH = 730
GB = 1024**3
# Lambda's SQS poller at rest: five pollers long-polling 20 s each, as it is commonly described; how many pollers
# run is AWS's choice, so this is an estimate.
IDLE_POLLERS = 5
LONG_POLL_SECONDS = 20

# ----- list prices, eu-west-1, USD -----

PRICES_READ = "2026-11-30"


@dataclass(frozen=True)
class Price:
    usd: float  # per single unit
    unit: str
    source: str  # where the figure was seen, or "unverified"
    per: int = 1  # shown per this many units


PRICES: dict[str, Price] = {
    "lambda_gb_s": Price(
        0.0000133334,
        "GB-second (arm64, first 7.5 billion a month)",
        "seen for us-east-1 (cloudchipr.com); eu-west-1 taken as equal, unverified",
    ),
    "lambda_request": Price(
        0.20 / 1e6, "Lambda requests", "seen for us-east-1 (AWS pricing page); eu-west-1 unverified", 1_000_000
    ),
    "api_request": Price(
        1.11 / 1e6,
        "HTTP API requests (first 300 million a month; metered per 512 KB)",
        "unverified (us-east-1's $1.00 seen in an AWS whitepaper)",
        1_000_000,
    ),
    "sqs_fifo_request": Price(
        0.50 / 1e6,
        "SQS FIFO requests (one per 64 KB of payload)",
        "seen for us-east-1, 2026 (cloudburn.io, factualminds.com); eu-west-1 unverified",
        1_000_000,
    ),
    "dynamodb_wru": Price(
        0.7068 / 1e6,
        "DynamoDB write request units (on demand)",
        "derived: eu-west-1's $1.4135 before the 50% cut of 1 November 2024; unverified",
        1_000_000,
    ),
    "dynamodb_rru": Price(
        0.1415 / 1e6,
        "DynamoDB read request units (on demand)",
        "derived: eu-west-1's $0.283 before the 50% cut of 1 November 2024; unverified",
        1_000_000,
    ),
    "secrets_call": Price(
        0.05 / 10_000, "Secrets Manager API calls", "seen (AWS pricing page, as transcribed 2026-09)", 10_000
    ),
    "secret_month": Price(0.40, "secret a month", "seen (AWS pricing page, as transcribed 2026-09)"),
    "logs_gb": Price(0.57, "GB of logs ingested (standard class)", "unverified (us-east-1's $0.50 seen)"),
    "metric_month": Price(
        0.30, "custom metric a month (first 10,000; prorated by the hour it is sent)", "seen (third-party guides)"
    ),
    "alarm_month": Price(0.10, "standard-resolution alarm a month", "unverified"),
    "dashboard_month": Price(3.00, "dashboard a month (3 free per account)", "unverified"),
    "kms_key_month": Price(1.00, "customer managed KMS key a month", "unverified"),
    "scheduler_invocation": Price(
        1.00 / 1e6,
        "EventBridge Scheduler invocations (14 million a month free)",
        "seen (cloudburn.io, March 2026)",
        1_000_000,
    ),
}


def price(name: str) -> float:
    return PRICES[name].usd


# ----- what a log line costs -----


def lambda_platform_log_bytes(cold: bool) -> int:
    """Lambda's own START, END and REPORT lines of one invocation (text log format, as the template leaves it)."""
    request_id = str(uuid.UUID(int=0))
    report = (
        f"REPORT RequestId: {request_id}\tDuration: 123.45 ms\tBilled Duration: 124 ms\tMemory Size: 256 MB\t"
        "Max Memory Used: 99 MB\t" + ("Init Duration: 789.01 ms\t" if cold else "")
    )
    lines = [f"START RequestId: {request_id} Version: $LATEST", f"END RequestId: {request_id}", report]
    return sum(len(line) + 1 for line in lines)


ACCESS_LOG_SAMPLE = {
    "requestId": "JpDOVhqYjoEEMqg=",
    "identity.sourceIp": "203.0.113.10",
    "requestTime": "30/Nov/2026:09:00:00 +0000",
    "routeKey": "POST /kommo/stage",
    "path": "/kommo/stage",
    "status": "200",
    "responseLatency": "25",
    "integrationLatency": "23",
    "responseLength": "27",
    "identity.userAgent": "amoCRM-Webhooks/3.0",
}


def access_log_bytes(template: Mapping[str, Any]) -> int:
    """One line of the HTTP API's access log: the template's format with typical values."""
    (api,) = resources_of(template, "AWS::Serverless::HttpApi").values()
    line = api["Properties"]["AccessLogSettings"]["Format"]
    return len(re.sub(r"\$context\.([A-Za-z.]+)", lambda m: ACCESS_LOG_SAMPLE.get(m.group(1), "-"), line)) + 1


# ----- pricing a usage -----


@dataclass(frozen=True)
class BillModel:
    memory: Mapping[str, int]  # MB by function
    init_seconds: Mapping[str, float]  # one cold start (INIT) by function
    cold_secret_reads: Mapping[str, float]  # GetSecretValue calls of an invocation with an empty cache
    invocations_per_container: float
    platform_log_bytes: int = field(default_factory=lambda: lambda_platform_log_bytes(False))
    init_log_bytes: int = field(
        default_factory=lambda: lambda_platform_log_bytes(True) - lambda_platform_log_bytes(False)
    )
    access_log_bytes: int = 0


def invocations(usage: Usage) -> dict[str, float]:
    return usage.by_prefix("invocations:")


def cold_starts(usage: Usage, model: BillModel) -> dict[str, float]:
    return {fn: n / model.invocations_per_container for fn, n in invocations(usage).items()}


def gb_seconds(usage: Usage, model: BillModel, key: str = "est_ms:") -> float:
    """Billed GB-s: each invocation's billed time (the CPU-share estimate unless told) plus its share of INIT."""
    running = sum(ms / 1000 * model.memory[fn] / 1024 for fn, ms in usage.by_prefix(key).items())
    init = sum(n * model.init_seconds[fn] * model.memory[fn] / 1024 for fn, n in cold_starts(usage, model).items())
    return running + init


def secret_reads(usage: Usage, model: BillModel) -> float:
    return sum(n * model.cold_secret_reads.get(fn, 0.0) for fn, n in cold_starts(usage, model).items())


def log_bytes(usage: Usage, model: BillModel) -> float:
    output = sum(usage.by_prefix("log_bytes:").values())
    platform_lines = sum(invocations(usage).values()) * model.platform_log_bytes
    init_lines = sum(cold_starts(usage, model).values()) * model.init_log_bytes
    return output + platform_lines + init_lines + usage.get("api_requests", 0.0) * model.access_log_bytes


def bill(usage: Usage, model: BillModel) -> dict[str, float]:
    """Dollars by service for a usage at list prices (no free tier)."""
    return {
        "Lambda requests": sum(invocations(usage).values()) * price("lambda_request"),
        "Lambda duration": gb_seconds(usage, model) * price("lambda_gb_s"),
        "API Gateway HTTP API": usage.get("api_requests", 0.0) * price("api_request"),
        "SQS FIFO": usage.get("sqs_requests", 0.0) * price("sqs_fifo_request"),
        "DynamoDB on demand": usage.get("rru", 0.0) * price("dynamodb_rru")
        + usage.get("wru", 0.0) * price("dynamodb_wru"),
        "Secrets Manager calls": secret_reads(usage, model) * price("secrets_call"),
        "CloudWatch Logs ingestion": log_bytes(usage, model) / GB * price("logs_gb"),
    }


# ----- the run -----


def form_body(sample: str, changes: Mapping[str, str]) -> bytes:
    """A sample body of events/ with some fields changed (the order and size of Kommo's or Mattermost's own)."""
    fields = parse_qsl((EVENTS / sample).read_text(encoding="utf-8").strip(), keep_blank_values=True)
    return urlencode([(key, changes.get(key, value)) for key, value in fields]).encode()


def kommo_body(sample: str, lead: int, at: int, status: int | None = None) -> bytes:
    changes = {
        "leads[status][0][id]": str(lead),
        "leads[status][0][updated_at]": str(at),
        "leads[status][0][last_modified]": str(at),
    }
    if status is not None:
        changes["leads[status][0][status_id]"] = str(status)
    return form_body(sample, changes)


@dataclass
class Measured:
    rooms: int
    kommo_room: Usage  # per room
    chat_room: Usage
    sweep_run: Usage  # one idle run
    reconcile_run: Usage
    kommo_sweeps: float  # sweeps that see a room while it lives
    chat_sweeps: float
    kommo_minutes: int
    live_reads: dict[str, float]  # RRU one sweep spends on a live room, by kind
    cold_secret_reads: dict[str, float]
    metrics: list[tuple[str, str, tuple[tuple[str, str], ...]]]
    memory: dict[str, int]
    runs_a_month: dict[str, float]  # by scheduled function


class Driver:
    """Sends what Kommo and Mattermost would send, runs the schedules, and waits for the queue to settle."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.http = requests.Session()
        self.inputs = {t.function: t.input for t in schedule_triggers(stack.template)}

    def kommo(self, route: str, body: bytes) -> None:
        url = f"{self.stack.gateway_url}/kommo/{route}?{urlencode({'token': self.stack.webhook_token})}"
        answer = self.http.post(url, data=body, headers=FORM, timeout=30)
        if answer.status_code != 200 or answer.json().get("accepted") != 1:
            raise SystemExit(f"/kommo/{route} answered {answer.status_code} {answer.text}")
        self.settle()

    def command(self, n: int) -> None:
        body = form_body("mattermost-command.body", {"text": f"Design review {n} {CHAT_MINUTES}m"})
        url = f"{self.stack.gateway_url}/mattermost/command"
        answer = self.http.post(url, data=body, headers=MATTERMOST, timeout=30)
        if answer.status_code != 200 or answer.json().get("response_type") != "in_channel":
            raise SystemExit(f"/mattermost/command answered {answer.status_code} {answer.text}")

    def schedule(self, function: str, **extra: str) -> Any:
        assert self.stack.functions is not None
        return self.stack.functions.invoke(function, {**self.inputs[function], **extra})

    def settle(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.stack.queue_depth("JobsQueue"):
            if time.monotonic() > deadline:
                raise SystemExit("the job queue did not drain")
            time.sleep(0.01)

    def rooms(self) -> int:
        assert self.stack.whereby_sim is not None
        return len(self.stack.whereby_sim.meetings())

    def expect_rooms(self, count: int, when: str) -> None:
        if self.rooms() != count:
            raise SystemExit(f"{when}: {self.rooms()} rooms at Whereby, expected {count}")


def phase(meter: AwsMeter, action: Callable[[], object]) -> Usage:
    mark = meter.mark()
    action()
    return meter.usage_since(mark)


def repeat(times: int, action: Callable[[int], object]) -> Callable[[], None]:
    def run() -> None:
        for i in range(times):
            action(i)

    return run


def non_negative(usage: Usage) -> Usage:
    """Marginal times can dip below zero by noise; counts never do."""
    return Usage({key: max(0.0, value) for key, value in usage.items()})


def measure(rooms: int, latency: float, per_container: int) -> Measured:
    template = load_template()
    defaults = parameter_defaults(template)
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "false"  # the metrics are counted too
    # Each Kommo client spaces its calls (3 a second per worker, 1 for the reconciliation). Here the events come
    # back to back, so they would wait; at the rates these figures are for they are seconds apart and never do.
    os.environ["KOMMO_REQUESTS_PER_SECOND"] = os.environ["KOMMO_RECONCILE_REQUESTS_PER_SECOND"] = "1000"
    config = LocalConfig(
        port=0,
        sweeper=False,  # this run fires the schedules itself
        log_level=defaults["LogLevel"],
        metrics=True,
        access_log=False,
        poll_interval=0.05,
        # The shared count of Whereby points is kept (its reads and writes are counted) but sized not to bind:
        # waiting for points is bench/bulk_move.py's subject, not a cost of a room.
        extra_parameters={"WherebyPointsPerMinute": "1000000"},
    )
    with AwsMeter(per_container) as meter, LocalStack(config, log=lambda line: None) as stack:
        assert stack.functions is not None and stack.whereby_sim is not None and stack.kommo_sim is not None
        stack.whereby_sim.latency = stack.kommo_sim.latency = latency
        meter.attach(stack.functions, stack.template, stack.resources.refs)
        from bridge.core.observability import SERVICE  # its logger reads the stack's log level when imported

        driver = Driver(stack)
        status = int(next(iter(json.loads(stack.config.stage_rules))))
        with meter.capturing_logs(SERVICE):
            # Warm-up, not counted: every handler imported, every client made, the checkpoints written.
            driver.kommo("stage", kommo_body("kommo-stage-change.form", FIRST_LEAD - 1, EVENT_TIME))
            driver.kommo("close", kommo_body("kommo-lost.form", FIRST_LEAD - 1, EVENT_TIME + 1))
            driver.command(0)
            driver.schedule("SweeperFunction")
            driver.schedule("SweeperFunction", mode="close-all")
            driver.schedule("KommoReconcileFunction")
            driver.expect_rooms(0, "after the warm-up")

            runs = 3
            sweep_run = phase(meter, repeat(runs, lambda _: driver.schedule("SweeperFunction"))).times(1 / runs)
            reconcile_run = phase(meter, repeat(runs, lambda _: driver.schedule("KommoReconcileFunction")))
            reconcile_run = reconcile_run.times(1 / runs)

            def open_deal(i: int) -> None:
                body = kommo_body("kommo-stage-change.form", FIRST_LEAD + i, EVENT_TIME + i, status)
                driver.kommo("stage", body)

            def close_deal(i: int) -> None:
                body = kommo_body("kommo-lost.form", FIRST_LEAD + i, EVENT_TIME + 3600 + i, 142 if i % 2 else 143)
                driver.kommo("close", body)

            kommo_open = phase(meter, repeat(rooms, open_deal))
            driver.expect_rooms(rooms, "after the stage changes")
            kommo_live = phase(meter, lambda: driver.schedule("SweeperFunction")).minus(sweep_run)
            kommo_close = phase(meter, repeat(rooms, close_deal))
            driver.expect_rooms(0, "after the deals closed")

            chat_open = phase(meter, repeat(rooms, lambda i: driver.command(i + 1)))
            driver.expect_rooms(rooms, "after the /whereby commands")
            chat_live = phase(meter, lambda: driver.schedule("SweeperFunction")).minus(sweep_run)
            end_runs = 0

            def end_chat_rooms() -> None:
                nonlocal end_runs
                while driver.rooms():  # a sweep deletes at most SweepMaxDeletes rooms
                    driver.schedule("SweeperFunction", mode="close-all")
                    end_runs += 1

            chat_end = phase(meter, end_chat_rooms).minus(sweep_run.times(end_runs))
        if meter.errors or meter.unpriced:
            raise SystemExit(f"the meter failed: {meter.errors[:3]} {dict(meter.unpriced)}")
        if stack.queue_depth("JobsDeadLetterQueue"):
            raise SystemExit("a job reached the dead-letter queue")
        cold_reads = meter.cold_secret_reads()
        metrics = sorted(meter.metrics)
        memory = dict(meter.memory)

    sweep_minutes = parse_rate(defaults["SweepSchedule"]) / 60
    rules = json.loads(config.stage_rules)
    kommo_minutes = int(rules[str(status)]["duration_minutes"])
    kommo_sweeps, chat_sweeps = kommo_minutes / sweep_minutes, CHAT_MINUTES / sweep_minutes
    per_room = 1 / rooms
    kommo_room = non_negative(kommo_open.plus(kommo_close).plus(kommo_live.times(kommo_sweeps)).times(per_room))
    chat_room = non_negative(chat_open.plus(chat_live.times(chat_sweeps)).plus(chat_end).times(per_room))
    runs_a_month = {
        t.function: HOURS_A_MONTH * 3600 / parse_rate(str(defaults[t.expression["Ref"]]))
        for t in schedule_triggers(template)
    }
    return Measured(
        rooms=rooms,
        kommo_room=kommo_room,
        chat_room=chat_room,
        sweep_run=sweep_run,
        reconcile_run=reconcile_run,
        kommo_sweeps=kommo_sweeps,
        chat_sweeps=chat_sweeps,
        kommo_minutes=kommo_minutes,
        live_reads={"kommo": kommo_live.get("rru", 0) / rooms, "chat": chat_live.get("rru", 0) / rooms},
        cold_secret_reads=cold_reads,
        metrics=metrics,
        memory=memory,
        runs_a_month=runs_a_month,
    )


def init_seconds(template: Mapping[str, Any], runs: int) -> dict[str, float]:
    """One cold start of each function: importing its handler in a fresh interpreter, median of ``runs``."""
    from bench.cold_start import handler_import, time_process

    codes = {fn: handler_import(spec.code_dir) for fn, spec in functions(template).items()}
    for code in codes.values():
        time_process(code)  # the bytecode cache, as a deployed layer has it
    return {fn: statistics.median(time_process(code) for _ in range(runs)) for fn, code in codes.items()}


# ----- the report -----


def money(usd: float) -> str:
    """Dollars with three significant digits below $1 (a thousand rooms cost fractions of a cent per service)."""
    if usd >= 1:
        return f"${usd:,.2f}"
    if usd <= 0:
        return "$0"
    return f"${usd:.{max(2, 2 - math.floor(math.log10(usd)))}f}"


def unit_price(p: Price) -> str:
    value = p.usd * p.per
    digits = max(2, len(f"{value:.10f}".rstrip("0").split(".")[1]))
    amount = f"${value:.{digits}f}"
    return f"{amount} per {p.unit}" if p.per == 1 else f"{amount} per {p.per:,} {p.unit}"


def all_cold(model: BillModel) -> BillModel:
    return replace(model, invocations_per_container=1)


def per_room_lines(title: str, usage: Usage, model: BillModel, sweeps: str) -> list[str]:
    lines = [title]
    for fn in sorted({*invocations(usage), *usage.by_prefix("est_ms:")}):
        n = usage.get(f"invocations:{fn}", 0.0)
        wall, est = usage.get(f"wall_ms:{fn}", 0.0), usage.get(f"est_ms:{fn}", 0.0)
        if n >= 0.005:
            text = f"{n:4.2f} x {wall / n:4.0f} ms measured, {est / n:4.0f} ms at the CPU share"
        elif est >= 0.5:
            text = f"no run of its own: its runs take {wall:.0f} ms longer ({est:.0f} ms at the CPU share)"
        else:
            continue
        lines.append(f"  Lambda       {fn:<26} {text} ({model.memory[fn]} MB)")
    starts = cold_starts(usage, model)
    init = sum(n * model.init_seconds[fn] for fn, n in starts.items())
    lines.append(f"  Lambda INIT  {sum(starts.values()):.2f} cold starts, {init:.2f} s")
    lines.append(f"  API Gateway  {usage.get('api_requests', 0):.2f} HTTP API requests")
    sqs = ", ".join(f"{op} {n:.2f}" for op, n in usage.by_prefix("sqs:").items() if n >= 0.005)
    lines.append(f"  SQS FIFO     {usage.get('sqs_requests', 0):.2f} requests" + (f" ({sqs})" if sqs else ""))
    ddb = ", ".join(f"{op} {n:.2f}" for op, n in usage.by_prefix("dynamodb:").items() if n >= 0.005)
    lines.append(f"  DynamoDB     {usage.get('rru', 0):.2f} RRU, {usage.get('wru', 0):.2f} WRU ({ddb})")
    lines.append(
        f"  Secrets      {secret_reads(usage, model):.2f} GetSecretValue calls "
        f"({secret_reads(usage, all_cold(model)):.2f} when every invocation finds the cache empty)"
    )
    lines.append(
        f"  Logs         {log_bytes(usage, model) / 1024:.1f} KB (function output, Lambda's START/END/REPORT "
        "lines, the API's access log)"
    )
    lines.append(f"  Sweeps       {sweeps}")
    return lines


def fixed_a_month(measured: Measured, template: Mapping[str, Any], model: BillModel) -> list[tuple[str, float]]:
    """What the stack costs a month with no room at all."""
    fixed: list[tuple[str, float]] = []
    runs = Usage()
    for function, count in measured.runs_a_month.items():
        one = measured.sweep_run if function == "SweeperFunction" else measured.reconcile_run
        runs = runs.plus(one.times(count))
    schedules = bill(runs, model)
    # A run comes every 10 or 15 minutes, after the 5-minute secrets cache has expired: each one reads again.
    schedules["Secrets Manager calls"] = secret_reads(runs, all_cold(model)) * price("secrets_call")
    counts = ", ".join(f"{fn.removesuffix('Function')} {n:,.0f}" for fn, n in measured.runs_a_month.items())
    fixed.append((f"scheduled runs ({counts}): Lambda, DynamoDB, secrets, logs", sum(schedules.values())))
    scheduled = sum(measured.runs_a_month.values())
    fixed.append(
        (
            f"EventBridge Scheduler: {scheduled:,.0f} invocations, inside the 14 million free "
            f"(list {money(scheduled * price('scheduler_invocation'))})",
            0.0,
        )
    )
    idle = IDLE_POLLERS * (60 / LONG_POLL_SECONDS) * 60 * HOURS_A_MONTH
    fixed.append(
        (
            f"SQS poller at rest: ~{idle:,.0f} empty receives ({IDLE_POLLERS} pollers, {LONG_POLL_SECONDS} s long "
            "polls; assumed)",
            idle * price("sqs_fifo_request"),
        )
    )
    for name, what, kind in (
        ("secret_month", "secrets", "AWS::SecretsManager::Secret"),
        ("alarm_month", "alarms", "AWS::CloudWatch::Alarm"),
        ("dashboard_month", "dashboards", "AWS::CloudWatch::Dashboard"),
        ("kms_key_month", "KMS key (the alarm topic's)", "AWS::KMS::Key"),
    ):
        count = len(resources_of(template, kind))
        fixed.append((f"{count} {what} x {money(price(name))}", count * price(name)))
    fixed.append(
        (
            f"{len(measured.metrics)} custom metrics seen in this run x {money(price('metric_month'))} "
            "(at most: prorated by the hours each is sent)",
            len(measured.metrics) * price("metric_month"),
        )
    )
    return fixed


def report(
    measured: Measured, template: Mapping[str, Any], init: Mapping[str, float], per_container: int, latency: float
) -> str:
    model = BillModel(
        memory=measured.memory,
        init_seconds=init,
        cold_secret_reads=measured.cold_secret_reads,
        invocations_per_container=per_container,
        access_log_bytes=access_log_bytes(template),
    )
    n = measured.rooms
    header = (
        f"AWS usage per room on the local stack: {n} Kommo deals entered the room stage, then were won or lost; "
        f"{n} /whereby rooms were made, then ended by the sweep. Whereby and Kommo (simulators) answered in "
        f"{latency * 1000:.0f} ms; the AWS calls went to moto in this process. Durations are this machine's "
        f"({platform.machine()}), not Graviton's: estimates. 'At the CPU share' stretches each invocation's CPU time "
        "to the part of a vCPU its memory buys (one at 1,769 MB), waits unchanged. INIT (billed since August 2025) "
        f"is a fresh import of the handler. Assumed: a container serves {per_container} invocations within the "
        "secrets' 5-minute cache."
    )
    out = [*textwrap.wrap(header, 118), ""]
    out += per_room_lines(
        f"A Kommo deal's room (stage: room and note; won/lost: room deleted and note), mean of {n}:",
        measured.kommo_room,
        model,
        f"{measured.kommo_sweeps:g} runs see the room while it lives ({measured.kommo_minutes} min, the stage rule's) "
        f"and read {measured.live_reads['kommo']:.2f} RRU each; included above",
    )
    out.append("")
    out += per_room_lines(
        f"A /whereby room ({CHAT_MINUTES} min, ended by the sweep), mean of {n}:",
        measured.chat_room,
        model,
        f"{measured.chat_sweeps:g} runs see the room while it lives and read {measured.live_reads['chat']:.2f} RRU "
        "each; one ends it; included above",
    )
    kommo, chat = bill(measured.kommo_room, model), bill(measured.chat_room, model)
    title = f"1,000 rooms at eu-west-1 list prices (read {PRICES_READ}; no free tier)"
    out += ["", f"{title:<58}{'Kommo':>10}{'/whereby':>10}"]
    for line in kommo:
        out.append(f"  {line:<56}{money(kommo[line] * 1000):>10}{money(chat[line] * 1000):>10}")
    out.append(f"  {'total':<56}{money(sum(kommo.values()) * 1000):>10}{money(sum(chat.values()) * 1000):>10}")
    cold_k, cold_c = (sum(bill(u, all_cold(model)).values()) * 1000 for u in (measured.kommo_room, measured.chat_room))
    out.append(f"  {'total when every invocation is a cold start':<56}{money(cold_k):>10}{money(cold_c):>10}")
    wall_k, wall_c = (
        gb_seconds(u, model, "wall_ms:") * price("lambda_gb_s") * 1000
        for u in (measured.kommo_room, measured.chat_room)
    )
    out += [
        f"  Lambda duration at the measured wall time (not stretched to the CPU share): {money(wall_k)} and "
        f"{money(wall_c)}.",
        "  Cold starts every time: a few rooms an hour, when containers do not outlive the gaps (INIT billed and the",
        "  secrets read at every invocation). The free tiers (Lambda 1 M requests and 400,000 GB-s, SQS 1 M requests,",
        "  ... a month) cover all of this at such volumes.",
        "",
        "Fixed a month, with no room at all:",
    ]
    fixed = fixed_a_month(measured, template, model)
    for what, usd in fixed:
        out.append(f"  {what:<96}{money(usd):>10}")
    out.append(f"  {'total':<96}{money(sum(usd for _, usd in fixed)):>10}")
    names = ", ".join(sorted({name for _, name, _ in measured.metrics}))
    out.append(f"  metrics: {names}; the others are sent only when something fails")
    out.append(
        "Not counted: DynamoDB storage and backups (a room's records are a few KB, kept 30 days), data sent to Whereby "
        "and Kommo (a few KB a room), X-Ray (off unless Tracing=Active)."
    )
    out += ["", f"List prices (USD, eu-west-1, read {PRICES_READ}):"]
    for p in PRICES.values():
        out += textwrap.wrap(f"{unit_price(p)}: {p.source}", 118, initial_indent="  ", subsequent_indent="      ")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=20, help="Kommo deals and /whereby rooms, each")
    parser.add_argument("--latency", type=float, default=0.2, help="Whereby's and Kommo's answer time, seconds")
    parser.add_argument("--invocations-per-container", type=int, default=10)
    parser.add_argument("--init-runs", type=int, default=3, help="fresh imports per function for INIT")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    measured = measure(args.rooms, args.latency, args.invocations_per_container)
    template = load_template()
    init = init_seconds(template, args.init_runs)
    print(report(measured, template, init, args.invocations_per_container, args.latency))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
