"""Bulk move: a Kommo mass action moves N deals into a room stage, on Whereby's Build plan (100 points a minute).

Two workers drain the queue in threads over the harness (the template's handlers in this process, AWS in moto,
Whereby and Kommo as simulators over HTTP), while a person runs `/whereby` every few seconds. Two runs in one
process, so the comparison is fair on a noisy machine:

- budget: the shared points budget (``WHEREBY_POINTS_PER_MINUTE`` 100, ``WHEREBY_CHAT_RESERVE_POINTS`` 30); a job
  waits for points inside its invocation and is handed back to the queue when it cannot get them in time;
- baseline: the budget switched off (``WHEREBY_POINTS_PER_MINUTE`` 0), which is today's behaviour: a 429 fails the
  job, SQS gives it again after the visibility timeout and moves it to the dead-letter queue after 5 receives.

Time runs ``--scale`` times faster on every clock that matters, so 500 deals take minutes, not half an hour: the
simulator's budget window (60 s / scale) and the bridge's (``WHEREBY_BUDGET_WINDOW_SECONDS``), the worker's
invocation (60 s), the clients' 429 retry waits, SQS's visibility timeout (360 s) and the person's pace. Figures
are given back in unscaled minutes. Kommo's 7 requests a second are not simulated: at real speed they allow six
notes a second, far more than the 33 rooms a minute Whereby allows, but scaled they would be the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import boto3
from botocore.client import BaseClient
from moto import mock_aws

from bench.stats import percentile
from bench.webhook_and_e2e import stage_body
from devstack.harness import LocalFunctions
from devstack.kommo_sim import KommoSimulator
from devstack.lambda_events import sqs_event
from devstack.local import DEMO_ACCOUNT_ID, DEMO_STAGE_RULES, DEMO_STATUS, DEMO_SUBDOMAIN, LOCAL_SECRET
from devstack.template import create_resources, load_template
from devstack.whereby_sim import WherebySimulator

REGION = "eu-west-1"
POINTS_PER_MINUTE = 100  # Whereby's Build plan
CHAT_RESERVE = 30
WORKER_TIMEOUT = 60  # the template's WorkerFunction timeout
VISIBILITY_TIMEOUT = 360  # the template's JobsQueue
LEADS_PER_DELIVERY = 50
FORM = {"content-type": "application/x-www-form-urlencoded", "user-agent": "amoCRM-Webhooks/3.0"}
FIRST_LEAD = 40_000_000


@dataclass
class Figures:
    name: str
    deals: int
    rooms: int = 0
    dead_lettered: int = 0
    failed_deliveries: int = 0
    handed_back: int = 0
    whereby_429s: int = 0
    waits: list[float] = field(default_factory=list)  # unscaled minutes, webhook → room created
    drained_minutes: float = 0.0
    chat: list[bool] = field(default_factory=list)  # each /whereby during the burst: got a room?
    timed_out: bool = False

    @property
    def tries(self) -> int:
        return self.rooms + self.failed_deliveries + self.handed_back

    def row(self) -> str:
        p50 = statistics.median(self.waits) if self.waits else float("nan")
        p95 = percentile(self.waits, 0.95) if self.waits else float("nan")
        ok = sum(self.chat)
        share = 100 * ok / len(self.chat) if self.chat else float("nan")
        return (
            f"  {self.name:<18}{self.rooms:>6}{self.dead_lettered:>5}{self.failed_deliveries:>8}{self.handed_back:>8}"
            f"{self.whereby_429s:>7}{p50:>8.1f}{p95:>8.1f}{self.drained_minutes:>9.1f}"
            f"   {ok}/{len(self.chat)} ({share:.0f}%)" + ("  [stopped: took too long]" if self.timed_out else "")
        )


def command_body(n: int) -> bytes:
    # A command token acts only for the team it is listed under.
    team, tokens = next(iter(LOCAL_SECRET["mattermost_tokens"].items()))
    return urlencode(
        {
            "token": tokens[0],
            "team_id": team,
            "channel_id": "benchchannel",
            "user_id": "benchuser",
            "user_name": "alice",
            "command": "/whereby",
            "text": f"Standup {n} 30m",
        }
    ).encode()


def serialise_aws_calls() -> None:
    """Make each moto request atomic, as every AWS request is; moto checks conditions without a lock."""
    lock = threading.Lock()
    original = BaseClient._make_api_call

    def atomic(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        with lock:
            return original(self, operation, params)

    BaseClient._make_api_call = atomic  # type: ignore[method-assign]


def faster_moto() -> None:
    """Two of moto's costs that grow with the data, which AWS does not have, would make this a benchmark of moto:

    - it backs up the whole table (a deep copy of every item) before each transaction, so a room claim costs in
      proportion to the table. DynamoDB applies a transaction all or nothing; so does this: when every condition
      holds (checked first, under the lock of ``serialise_aws_calls``) moto applies it without the backup it would
      never use; otherwise moto runs it as usual, backup and all;
    - its SQS walks every message of the queue on most calls, reading the clock through datetime arithmetic for
      each, and for each message it sends or receives it computes every attribute of the queue, counts included, to
      read one setting: the clock is read with ``time.time()``, the settings directly.
    """
    import copy

    from moto.core.utils import unix_time
    from moto.dynamodb import models
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.sqs import models as sqs_models
    from moto.sqs.models import SQSBackend

    def retained(self: Any, queue_name: str, message: Any) -> bool:
        period = int(self.get_queue(queue_name).message_retention_period)
        return period + message.sent_timestamp / 1000 > unix_time()

    SQSBackend.is_message_valid_based_on_retention_period = retained  # type: ignore[method-assign]
    # Every message's visibility is checked on every call through datetime arithmetic; the clock reads the same.
    sqs_models.unix_time = lambda dt=None: time.time() if dt is None else unix_time(dt)
    sqs_models.unix_time_millis = lambda dt=None: 1000 * sqs_models.unix_time(dt)
    validate = SQSBackend._validate_message

    def valid(
        self: Any,
        queue: Any,
        message_body: str,
        delay_seconds: int,
        deduplication_id: str | None = None,
        group_id: str | None = None,
        validate_group_id: bool = True,
    ) -> None:
        fine = queue.fifo_queue and group_id and deduplication_id and not delay_seconds
        if not (fine and len(message_body) <= int(queue.maximum_message_size)):  # else all moto checks hold
            validate(self, queue, message_body, delay_seconds, deduplication_id, group_id, validate_group_id)

    SQSBackend._validate_message = valid  # type: ignore[method-assign]

    original = models.DynamoDBBackend.transact_write_items

    class NoTableCopy:
        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, models.Table) else copy.deepcopy(value, memo)

    def holds(backend: Any, entry: dict[str, Any]) -> bool:
        kind, op = next(iter(entry.items()))
        if op.get("ConditionExpression") is None:
            return True
        table = backend.get_table(op["TableName"])
        if kind == "Put":
            key = {name: op["Item"][name] for name in (table.hash_key_attr, table.range_key_attr) if name}
        else:
            key = op["Key"]
        condition = get_filter_expression(
            op["ConditionExpression"], op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        )
        return bool(condition.expr(backend.get_item(op["TableName"], key)))

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        if not all(holds(self, entry) for entry in transact_items):
            return original(self, transact_items)
        models.copy = NoTableCopy  # type: ignore[assignment]
        try:
            return original(self, transact_items)
        finally:
            models.copy = copy

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def scale_clients(scale: float) -> None:
    """The clients' 429 waits in scaled time, so they give up on a Retry-After exactly when they would in reality."""
    from bridge import runtime

    for name in ("BACKGROUND", "INTERACTIVE"):
        policy = getattr(runtime, name)
        setattr(runtime, name, replace(policy, backoff=policy.backoff / scale, max_wait=policy.max_wait / scale))


class BulkMove:
    def __init__(self, functions: LocalFunctions, whereby: WherebySimulator, scale: float, deals: int) -> None:
        self.functions = functions
        self.whereby = whereby
        self.scale = scale
        self.deals = deals
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.failed = 0
        self.handed_back = 0

    def worker(self, invoke: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Plays the SQS event source mapping for one of the two concurrent workers."""
        url = self.functions.stack.refs["JobsQueue"]
        arn = self.functions.stack.attributes[("JobsQueue", "Arn")]
        retry_in = max(1, round(VISIBILITY_TIMEOUT / self.scale))
        while not self.stopping.is_set():
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                self.stopping.wait(0.02)
                continue
            try:
                answer = invoke(sqs_event(messages, arn)) or {}
                failures = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
            except Exception:
                failures = {message["MessageId"] for message in messages}
            for message in messages:
                with self.lock:
                    self.handed_back += bool(json.loads(message["Body"]).get("generation"))
                if message["MessageId"] in failures:
                    with self.lock:
                        self.failed += 1
                    self.sqs.change_message_visibility(
                        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=retry_in
                    )
                else:
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def person(self, every: float, answers: list[tuple[float, bool]]) -> None:
        """Someone in Mattermost starting a call every ``every`` (real) seconds."""
        n = 0
        while not self.stopping.wait(every):
            n += 1
            started = time.time()
            response = self.functions.request(
                "POST", "/mattermost/command", headers={"content-type": FORM["content-type"]}, body=command_body(n)
            )
            room = response["statusCode"] == 200 and json.loads(response["body"]).get("response_type") == "in_channel"
            answers.append((started, room))

    def run(self, name: str, invoke: Callable[[dict[str, Any]], dict[str, Any]], chat_every: float) -> Figures:
        figures = Figures(name, self.deals)
        answers: list[tuple[float, bool]] = []
        threads = [threading.Thread(target=self.worker, args=(invoke,), daemon=True) for _ in range(2)]
        threads.append(threading.Thread(target=self.person, args=(chat_every / self.scale, answers), daemon=True))
        started = time.time()
        posted: dict[int, float] = {}
        for first in range(0, self.deals, LEADS_PER_DELIVERY):
            count = min(LEADS_PER_DELIVERY, self.deals - first)
            response = self.functions.request(
                "POST",
                "/kommo/stage",
                query=urlencode({"token": LOCAL_SECRET["kommo_webhook_token"]}),
                headers=FORM,
                body=stage_body(FIRST_LEAD + first, count, DEMO_STATUS, DEMO_SUBDOMAIN),
            )
            assert response["statusCode"] == 200, response
            at = time.time()
            posted.update({FIRST_LEAD + first + i: at for i in range(count)})
            if first == 0:
                for thread in threads:
                    thread.start()
        # A Build-plan minute of background points makes 23 rooms; allow three times the time that takes.
        deadline = started + 3 * (self.deals / 23 + 5) * 60 / self.scale
        # Done when every deal has its room or gave up in the dead-letter queue (moto's SQS answers a depth query
        # by walking the whole queue, under the lock the workers need: the small DLQ is asked, not the queue).
        while self.rooms_at_whereby() + self.functions.queue_depth("JobsDeadLetterQueue") < self.deals:
            if time.time() >= deadline:
                figures.timed_out = True
                break
            time.sleep(0.5)
        drained = time.time()
        self.stopping.set()
        for thread in threads:
            thread.join(timeout=30)
        figures.drained_minutes = self.minutes(drained - started)
        figures.dead_lettered = self.functions.queue_depth("JobsDeadLetterQueue")
        figures.failed_deliveries, figures.handed_back = self.failed, self.handed_back
        figures.whereby_429s = self.whereby.budget_refusals
        created = self.deal_rooms()
        figures.rooms = len(created)
        figures.waits = [self.minutes(at - posted[lead]) for lead, at in created.items()]
        figures.chat = [room for at, room in answers if at <= drained]
        return figures

    def rooms_at_whereby(self) -> int:
        prefix = "/" + DEMO_STAGE_RULES[str(DEMO_STATUS)]["prefix"] + "-"
        return sum(meeting["roomName"].startswith(prefix) for meeting in self.whereby.meetings())

    def deal_rooms(self) -> dict[int, float]:
        """Lead → when Whereby created its room (wall clock)."""
        born = {m["meetingId"]: datetime.fromisoformat(m["startDate"]).timestamp() for m in self.whereby.meetings()}
        table = boto3.resource("dynamodb", region_name=REGION).Table(self.functions.stack.refs["MeetingsTable"])
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {}
        while True:  # inspection only: the product never scans
            page = table.scan(**kwargs)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return {
            int(item["owner"].rsplit("#", 1)[1]): born[item["meeting_id"]]
            for item in items
            if item["pk"].startswith("ROOM#") and item.get("source") == "kommo" and item.get("state") == "active"
        }

    def minutes(self, real_seconds: float) -> float:
        return real_seconds * self.scale / 60


def run_once(name: str, *, budget: bool, scale: float, deals: int, chat_every: float) -> Figures:
    from bridge import runtime

    whereby = WherebySimulator(LOCAL_SECRET["whereby_api_key"], points_per_minute=POINTS_PER_MINUTE, time_scale=scale)
    kommo = KommoSimulator(LOCAL_SECRET["kommo_access_token"], rate_limit_per_second=0)
    with whereby, kommo, mock_aws():
        template = load_template()
        created = create_resources(
            template,
            dynamodb=boto3.client("dynamodb", region_name=REGION),
            sqs=boto3.client("sqs", region_name=REGION),
            secretsmanager=boto3.client("secretsmanager", region_name=REGION),
            secret_value=LOCAL_SECRET,
            parameters={
                "KommoSubdomain": DEMO_SUBDOMAIN,
                "KommoAccountId": DEMO_ACCOUNT_ID,
                "StageRules": json.dumps(DEMO_STAGE_RULES),
                "WherebyBaseUrl": whereby.base_url,
                "KommoBaseUrl": kommo.base_url,
                "WherebyPointsPerMinute": str(POINTS_PER_MINUTE if budget else 0),
                "WherebyChatReservePoints": str(CHAT_RESERVE),
            },
        )
        functions = LocalFunctions(template, created, boto3.client("sqs", region_name=REGION))
        functions.apply_environment(
            {
                "WHEREBY_BUDGET_WINDOW_SECONDS": str(60 / scale),
                "KOMMO_REQUESTS_PER_SECOND": "1000",
                "SECRET_MAX_AGE_SECONDS": "3600",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "ERROR",
            }
        )

        def invoke(event: dict[str, Any]) -> dict[str, Any]:
            return functions.invoke("WorkerFunction", event, timeout=WORKER_TIMEOUT / scale)

        try:
            return BulkMove(functions, whereby, scale, deals).run(name, invoke, chat_every)
        finally:
            runtime.reset()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=500)
    parser.add_argument("--scale", type=float, default=20.0, help="how many times faster time runs")
    parser.add_argument("--chat-every", type=float, default=10.0, help="seconds (unscaled) between two /whereby")
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")  # before the first import of the bridge's logger
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)  # everything AWS is moto here
    os.environ.update(AWS_DEFAULT_REGION=REGION, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    serialise_aws_calls()
    faster_moto()
    scale_clients(args.scale)
    runs = [
        run_once("budget", budget=True, scale=args.scale, deals=args.deals, chat_every=args.chat_every),
        run_once("baseline (today)", budget=False, scale=args.scale, deals=args.deals, chat_every=args.chat_every),
    ]
    deliveries = -(-args.deals // LEADS_PER_DELIVERY)
    print(
        f"Bulk move: {args.deals} deals into a room stage ({deliveries} Kommo deliveries of up to {LEADS_PER_DELIVERY}"
        f" leads), Whereby Build plan ({POINTS_PER_MINUTE} points a minute; the budget keeps {CHAT_RESERVE} for"
        f" /whereby), 2 workers, /whereby every {args.chat_every:g} s."
    )
    print(
        f"Time x{args.scale:g} (a Whereby minute lasts {60 / args.scale:g} s); minutes below are unscaled."
        " 'wait' is webhook → room created, over the rooms made."
    )
    print(
        "  run                rooms  DLQ  failed  handed   429s   wait    wait  drained   /whereby got a room\n"
        "                                 tries    back           p50     p95   minutes   during the burst"
    )
    for figures in runs:
        print(figures.row())
    budget, baseline = runs
    verdict = budget.rooms == budget.deals and budget.dead_lettered == 0 and not budget.timed_out
    if verdict:
        print(
            f"budget run: every deal got its room, none was dead-lettered, {budget.failed_deliveries} tries failed,"
            f" Whereby answered {budget.whereby_429s} 429s; {budget.rooms / budget.drained_minutes:.1f} rooms a"
            f" minute (the background's {POINTS_PER_MINUTE - CHAT_RESERVE} points make 23)."
        )
    else:
        print("budget run: NOT MET (every deal a room, nothing dead-lettered)")
    print(
        f"baseline: the workers here tried {baseline.tries / baseline.drained_minutes:.0f} jobs a minute against"
        " Whereby's 33 rooms. In AWS they try hundreds, so nearly every try of a wave fails and the waves come a"
        " visibility timeout (6 minutes) apart: jobs fail five times and are dead-lettered after about 30 minutes."
        " Slowed by moto, this machine cannot show that; the baseline's DLQ and waits here flatter today's behaviour."
    )
    return 0 if verdict else 1


if __name__ == "__main__":
    raise SystemExit(main())
