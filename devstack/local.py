"""The local stack: everything ``template.yaml`` deploys, on 127.0.0.1, in one process, with no AWS account.

- AWS: moto in server mode; the table, queues and secrets are created from the template (``create_resources``),
  the secrets filled with local demo values. The functions reach it through ``AWS_ENDPOINT_URL``.
- Peers: the Whereby and Kommo simulators, or the real services when their base URLs are given; the Mattermost and
  Slack simulators always (a workspace with the bridge's bot in it), so ``/whereby`` posts follow the meeting.
- API Gateway: ``devstack.gateway`` routes the template's HttpApi events to their handlers.
- The SQS event source mapping: a pump feeds each queue the template names in an SQS event to its function; SQS's
  redrive policy (moto implements it) moves a message that failed ``maxReceiveCount`` times to the dead-letter queue.
- EventBridge Scheduler: a timer per ScheduleV2 event runs its function on its own ``rate(...)`` with the
  template's Input (the sweeper, the Kommo reconciliation); the recurring meetings' schedules, made through the
  Scheduler's API in moto, are fired when due by ``devstack.scheduler.LocalScheduler`` (``scheduler_stand_in``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import boto3
import requests
from moto.server import ThreadedMotoServer

from devstack.gateway import DEFAULT_HOST, DEFAULT_PORT, Gateway, load_error
from devstack.harness import LocalFunctions
from devstack.kommo_sim import KommoSimulator
from devstack.lifecycle import StartStop
from devstack.mattermost_sim import DEFAULT_BOT_TOKEN as MATTERMOST_BOT_TOKEN
from devstack.mattermost_sim import MattermostSimulator
from devstack.scheduler import LocalScheduler, functions_by_arn
from devstack.slack_sim import DEFAULT_BOT_TOKEN, DEFAULT_SIGNING_SECRET, DEFAULT_TEAM, SlackSimulator
from devstack.template import ROOT, Stack, create_resources, load_template, redrive_policy, resolve, resources_of
from devstack.whereby_sim import WherebySimulator

# Lambda puts the layer on /opt/python; here its source folder plays that part (bridge is imported lazily).
LAYER = ROOT / "layers" / "shared"
if str(LAYER) not in sys.path:
    sys.path.insert(0, str(LAYER))

REGION = "eu-west-1"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# The account and stage of the sample webhook (events/kommo-stage-change.form), so it works out of the box.
DEMO_SUBDOMAIN = "irestoremoldova"
DEMO_ACCOUNT_ID = "16503244"
DEMO_STATUS = 16525558
DEMO_STAGE_RULES = {str(DEMO_STATUS): {"name": "Demo", "duration_minutes": 60, "prefix": "demo", "locked": True}}
# The team and channel of the sample command (events/mattermost-command.body): the bot is a member of that channel.
MATTERMOST_TEAM = "wx4zz8t4ttgmtxqiwfohijayzc"
MATTERMOST_CHANNEL = "fukxanjgjbnp7ng383at53k1sy"
# Local demo values, not secrets: they only open this stack on 127.0.0.1.
LOCAL_SECRET: dict[str, Any] = {
    "whereby_api_key": "local-whereby-api-key",
    "kommo_webhook_token": "local-kommo-webhook-token",
    "kommo_access_token": "local-kommo-access-token",
    "whereby_webhook_secret": "local-whereby-signing-secret",
    # Bound to the team of the sample command (events/mattermost-command.body); each token acts for its own team.
    "mattermost_tokens": {MATTERMOST_TEAM: ["local-mattermost-token"]},
    # The Mattermost simulator's bot (the rooms' posts follow the meeting): its address is known only once the
    # simulator runs, so the stack adds the pair, mattermost_url and mattermost_bot_token (see mattermost_bot).
    # The Slack simulator's workspace and the secret it signs with.
    "slack_signing_secret": {DEFAULT_TEAM: DEFAULT_SIGNING_SECRET},
    "action_signing_key": "local-action-signing-key-for-end-buttons-only",
    # The simulator's bot: the rooms' posts follow the meeting (its Web API is SlackApiUrl).
    "slack_bot_tokens": {DEFAULT_TEAM: DEFAULT_BOT_TOKEN},
}
KOMMO_SIM_REQUESTS_PER_SECOND = 7.0  # Kommo's documented limit per integration
_RATE = re.compile(r"rate\(\s*(\d+)\s+(second|minute|hour|day)s?\s*\)")
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ----- what the template says beyond resources and routes -----


@dataclass(frozen=True)
class QueueTrigger:
    function: str
    queue: str  # logical id of the queue


@dataclass(frozen=True)
class ScheduleTrigger:
    function: str
    expression: Any  # may be a Ref to a parameter
    input: dict[str, Any]


def _events(template: Mapping[str, Any], kinds: tuple[str, ...]) -> list[tuple[str, Mapping[str, Any]]]:
    found = []
    for logical_id, resource in resources_of(template, "AWS::Serverless::Function").items():
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] in kinds:
                found.append((logical_id, event["Properties"]))
    return found


def queue_triggers(template: Mapping[str, Any]) -> list[QueueTrigger]:
    return [QueueTrigger(fn, props["Queue"]["Fn::GetAtt"][0]) for fn, props in _events(template, ("SQS",))]


def schedule_triggers(template: Mapping[str, Any]) -> list[ScheduleTrigger]:
    return [
        ScheduleTrigger(fn, props["ScheduleExpression"], json.loads(props.get("Input") or "{}"))
        for fn, props in _events(template, ("ScheduleV2", "Schedule"))
    ]


def parse_rate(expression: str) -> float:
    """Seconds between runs of ``rate(N minutes|seconds|hours|days)``; cron() and at() are not run locally."""
    match = _RATE.fullmatch(expression.strip())
    if not match:
        raise ValueError(f"cannot run {expression!r} locally: only rate(N seconds|minutes|hours|days) is supported")
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


# ----- moving jobs out of the dead-letter queue -----


# ----- the event source mapping and the scheduler -----


@dataclass
class PumpStats:
    done: int = 0
    failed: int = 0  # failed deliveries (one message failing five times counts five)
    dead_lettered: int = 0


class QueuePump:
    """Plays the SQS event source mapping: batches of the queue go to the function; the harness deletes what
    succeeded and makes failures visible again at once (the template's 360 s visibility timeout would otherwise
    park them for six minutes). After ``maxReceiveCount`` receives SQS itself moves a message to the DLQ."""

    def __init__(
        self,
        functions: LocalFunctions,
        trigger: QueueTrigger,
        dead_letter_queue: str,
        *,
        poll_interval: float,
        retry_delay: float,
        log: Callable[[str], None],
    ) -> None:
        self.functions = functions
        self.trigger = trigger
        self.dead_letter_queue = dead_letter_queue
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.log = log
        self.stats = PumpStats()
        self._dead_letters_seen = 0
        self._unsettled = False  # a delivery failed since the queue was last empty

    def run(self, stopping: threading.Event) -> None:
        reported: str | None = None
        while not stopping.is_set():
            reason = load_error(self.functions, self.trigger.function)
            if reason != reported and reason is not None:
                self.log(f"pump     {self.trigger.function} cannot load ({reason}); jobs wait in the queue")
            reported = reason
            if reason is not None:
                stopping.wait(2.0)
                continue
            try:
                stopping.wait(self._round())
            except Exception as exc:  # moto going away during a stop, or a bug in a round: keep pumping
                if not stopping.is_set():
                    self.log(f"pump     round failed: {type(exc).__name__}: {exc}")
                    stopping.wait(1.0)

    def _round(self) -> float:
        """One batch; returns how long to wait before the next."""
        result = self.functions.drain(self.trigger.queue, self.trigger.function, max_rounds=1)
        self.stats.done += result.processed
        self.stats.failed += result.failed
        if result.failed:
            self._unsettled = True
            return self.retry_delay
        if result.processed:
            return 0.0
        if self._unsettled:
            self._unsettled = False
            self._note_dead_letters()
        return self.poll_interval

    def _note_dead_letters(self) -> None:
        depth = self.functions.queue_depth(self.dead_letter_queue)
        if depth > self._dead_letters_seen:
            moved = depth - self._dead_letters_seen
            self.stats.dead_lettered += moved
            self.log(
                f"pump     {moved} job(s) moved to {self.dead_letter_queue} after failing every try; "
                "the worker's log lines above say why"
            )
        self._dead_letters_seen = depth


class ScheduleTimer:
    """Plays EventBridge Scheduler for one schedule: the function gets its Input every ``every`` seconds."""

    def __init__(
        self, functions: LocalFunctions, trigger: ScheduleTrigger, every: float, log: Callable[[str], None]
    ) -> None:
        self.functions = functions
        self.trigger = trigger
        self.every = every
        self.log = log

    def run(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.every):
            self.fire()

    def fire(self) -> Any:
        """One scheduled invocation; its answer (or failure) is one log line naming the function."""
        function = self.trigger.function
        try:
            answer = self.functions.invoke(function, dict(self.trigger.input))
        except Exception as exc:
            self.log(f"schedule {function} failed: {type(exc).__name__}: {exc}")
            return None
        self.log(f"schedule {function} {json.dumps(answer, default=str)}")
        return answer


# ----- the stack -----


@dataclass(frozen=True)
class LocalConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0 picks a free port
    whereby_url: str | None = None  # None runs the Whereby simulator
    kommo_url: str | None = None  # None runs the Kommo simulator
    whereby_api_key: str = LOCAL_SECRET["whereby_api_key"]
    kommo_access_token: str = LOCAL_SECRET["kommo_access_token"]
    kommo_subdomain: str = DEMO_SUBDOMAIN
    kommo_account_id: str = DEMO_ACCOUNT_ID
    stage_rules: str = json.dumps(DEMO_STAGE_RULES)
    sweeper: bool = True  # run the template's schedules: the sweeper and the Kommo reconciliation
    sweep_every: float | None = None  # seconds between runs of every schedule; None: each follows its own rate
    poll_interval: float = 0.2
    retry_delay: float = 1.0  # before a failed job is tried again (AWS: the queue's visibility timeout)
    log_level: str = "INFO"
    metrics: bool = True  # EMF lines on stdout, as Lambda prints them
    access_log: bool = True
    extra_parameters: Mapping[str, str] = field(default_factory=dict)


def plan_schedule(
    functions: LocalFunctions,
    trigger: ScheduleTrigger,
    resources: Stack,
    config: LocalConfig,
    log: Callable[[str], None],
) -> tuple[ScheduleTimer | None, str]:
    """The timer of one schedule, or None and why not (the stack runs on without it); the note names the function."""
    if not config.sweeper:
        return None, f"{trigger.function} off"
    reason = load_error(functions, trigger.function)
    if reason is not None:
        return None, f"{trigger.function} off: it cannot load ({reason})"
    expression = resolve(trigger.expression, resources)
    try:
        every = config.sweep_every or parse_rate(expression)
    except ValueError as exc:
        return None, f"{trigger.function} off: {exc}; use --sweep-every"
    source = "--sweep-every" if config.sweep_every else expression
    note = f"{trigger.function} every {every:g} s ({source}) with input {json.dumps(trigger.input)}"
    return ScheduleTimer(functions, trigger, every, log), note


def plan_schedules(
    functions: LocalFunctions, resources: Stack, config: LocalConfig, log: Callable[[str], None]
) -> list[tuple[ScheduleTimer | None, str]]:
    """A timer for every schedule of the template, each on its own rate, in template order."""
    return [
        plan_schedule(functions, trigger, resources, config, log) for trigger in schedule_triggers(functions.template)
    ]


class LocalStack(StartStop):
    """Start with ``start()`` or ``with LocalStack(...) as stack``; ``stop()`` ends every thread and server.

    The functions run in this process and read ``os.environ`` (as in Lambda), so the stack sets the AWS variables
    for the whole process while it runs and restores the environment when it stops.
    """

    def __init__(
        self,
        config: LocalConfig | None = None,
        *,
        template: Mapping[str, Any] | None = None,
        log: Callable[[str], None] = _stderr,
    ) -> None:
        self.config = config or LocalConfig()
        self.template = template if template is not None else load_template()
        self.log = log
        self.moto_url = ""
        self.whereby_sim: WherebySimulator | None = None
        self.kommo_sim: KommoSimulator | None = None
        self.slack_sim: SlackSimulator | None = None
        self.mattermost_sim: MattermostSimulator | None = None
        self.resources = Stack()
        self.functions: LocalFunctions | None = None
        self.gateway: Gateway | None = None
        self.sqs: Any = None
        self.pumps: dict[str, QueuePump] = {}  # by queue logical id
        self.schedule_timers: list[ScheduleTimer] = []
        self.schedule_notes: list[str] = []
        self.scheduler_stand_in: LocalScheduler | None = None
        self._moto: ThreadedMotoServer | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._saved_env: dict[str, str] | None = None

    # ----- lifecycle -----

    def start(self) -> Self:
        if self._saved_env is not None:
            return self
        self._saved_env = dict(os.environ)
        self._stopping.clear()
        try:
            self._start_moto()
            self._start_simulators()
            self._create_resources()
            self._start_gateway()
            self._start_pumps()
            self._start_schedules()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self.gateway is not None:
            self.gateway.stop()
        # First: a worker waiting on a slow peer gives up at once.
        for sim in (self.whereby_sim, self.kommo_sim, self.slack_sim, self.mattermost_sim):
            if sim is not None:
                sim.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        if self._moto is not None:
            with contextlib.suppress(requests.RequestException):
                self._reset_moto()
            self._moto.stop()
            self._moto = None
        if self._saved_env is not None:
            os.environ.clear()
            os.environ.update(self._saved_env)
            self._saved_env = None
            from bridge import runtime

            runtime.reset()

    # ----- what users and tests look at -----

    @property
    def gateway_url(self) -> str:
        if self.gateway is None:
            raise RuntimeError("the stack is not started")
        return self.gateway.url

    @property
    def webhook_token(self) -> str:
        return LOCAL_SECRET["kommo_webhook_token"]

    @property
    def whereby_signing_secret(self) -> str:
        return str(LOCAL_SECRET["whereby_webhook_secret"])

    @property
    def mattermost_token(self) -> str:
        return next(iter(LOCAL_SECRET["mattermost_tokens"].values()))[0]

    @property
    def mattermost_bot(self) -> dict[str, str]:
        """The ChatBotSecret keys of the Mattermost simulator's bot (a pair: both or neither)."""
        if self.mattermost_sim is None:
            return {}
        return {"mattermost_url": self.mattermost_sim.root_url, "mattermost_bot_token": self.mattermost_sim.bot_token}

    @property
    def whereby_url(self) -> str:
        return self.whereby_sim.base_url if self.whereby_sim else str(self.config.whereby_url)

    @property
    def kommo_url(self) -> str:
        return self.kommo_sim.base_url if self.kommo_sim else str(self.config.kommo_url)

    def queue_url(self, logical_id: str) -> str:
        return self.resources.refs[logical_id]

    def dead_letter_queue_of(self, logical_id: str) -> tuple[str, int]:
        """The logical id of a queue's dead-letter queue and its maxReceiveCount, from the template."""
        return redrive_policy(self.template, logical_id)

    def queue_depth(self, logical_id: str) -> int:
        if self.functions is None:
            raise RuntimeError("the stack is not started")
        return self.functions.queue_depth(logical_id)

    # ----- the parts -----

    def _start_moto(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access line per SQS poll otherwise
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self._reset_moto()
        for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL_")] + ["AWS_PROFILE", "AWS_SESSION_TOKEN"]:
            os.environ.pop(name, None)  # a service-specific endpoint or a profile would lead away from moto
        os.environ.update(
            {**DUMMY_CREDENTIALS, "AWS_ENDPOINT_URL": self.moto_url, "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
        )

    def _reset_moto(self) -> None:
        # moto keeps its state in this process, shared by every server and mock_aws: start and leave it empty.
        requests.post(f"{self.moto_url}/moto-api/reset", timeout=10).raise_for_status()

    def _start_simulators(self) -> None:
        if self.config.whereby_url is None:
            self.whereby_sim = WherebySimulator(api_key=self.config.whereby_api_key).start()
        if self.config.kommo_url is None:
            self.kommo_sim = KommoSimulator(
                access_token=self.config.kommo_access_token, rate_limit_per_second=KOMMO_SIM_REQUESTS_PER_SECOND
            ).start()
        self.slack_sim = SlackSimulator().start()  # Slack has no sandbox: the workspace is always simulated
        self.mattermost_sim = MattermostSimulator(bot_token=MATTERMOST_BOT_TOKEN).start()
        self.mattermost_sim.add_member(MATTERMOST_CHANNEL)

    def _client(self, service: str) -> Any:
        return boto3.session.Session(region_name=REGION).client(service, endpoint_url=self.moto_url)

    def _create_resources(self) -> None:
        self.sqs = self._client("sqs")
        secret = {
            **LOCAL_SECRET,
            "whereby_api_key": self.config.whereby_api_key,
            "kommo_access_token": self.config.kommo_access_token,
            **self.mattermost_bot,
        }
        self.resources = create_resources(
            self.template,
            dynamodb=self._client("dynamodb"),
            sqs=self.sqs,
            secretsmanager=self._client("secretsmanager"),
            secret_value=secret,
            parameters=self._parameters(),
            scheduler=self._client("scheduler"),
        )
        self.functions = LocalFunctions(self.template, self.resources, self.sqs)
        extra = {} if self.config.metrics else {"POWERTOOLS_METRICS_DISABLED": "true"}
        # apply_environment imports bridge before it sets the variables, and Powertools reads its log level at
        # import: set them first, as Lambda does before it imports a handler.
        os.environ.update({**self.functions.environment(), **extra})
        self.functions.apply_environment(extra)

    def _parameters(self) -> dict[str, str]:
        return {
            "KommoSubdomain": self.config.kommo_subdomain,
            "KommoAccountId": self.config.kommo_account_id,
            "StageRules": self.config.stage_rules,
            "WherebyBaseUrl": self.whereby_url,
            "KommoBaseUrl": self.kommo_url,
            "LogLevel": self.config.log_level,
            **({"SlackApiUrl": self.slack_sim.api_url} if self.slack_sim else {}),
            **self.config.extra_parameters,
        }

    def _start_gateway(self) -> None:
        assert self.functions is not None
        access_log = self.log if self.config.access_log else None
        self.gateway = Gateway(self.functions, self.config.host, self.config.port, access_log).start()
        # The recording links of the notes point at this API, as API_BASE_URL points at the HTTP API's URL on AWS.
        os.environ["API_BASE_URL"] = self.gateway.url
        from bridge import runtime

        runtime.reset()
        if self.whereby_sim is not None:  # the simulator's rooms tell the stack what happens in them
            self.whereby_sim.configure_webhook(f"{self.gateway.url}/whereby/events", self.whereby_signing_secret)

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=target, args=(self._stopping,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_pumps(self) -> None:
        assert self.functions is not None
        for trigger in queue_triggers(self.template):
            dead_letter_queue, _ = redrive_policy(self.template, trigger.queue)
            pump = QueuePump(
                self.functions,
                trigger,
                dead_letter_queue,
                poll_interval=self.config.poll_interval,
                retry_delay=self.config.retry_delay,
                log=self.log,
            )
            self.pumps[trigger.queue] = pump
            self._spawn(f"pump-{trigger.queue}", pump.run)

    def _start_schedules(self) -> None:
        assert self.functions is not None
        for timer, note in plan_schedules(self.functions, self.resources, self.config, self.log):
            self.schedule_notes.append(note)
            if timer is not None:
                self.schedule_timers.append(timer)
                self._spawn(f"schedule-{timer.trigger.function}", timer.run)
        for group in resources_of(self.template, "AWS::Scheduler::ScheduleGroup"):
            stand_in = LocalScheduler(
                self._client("scheduler"),
                self.resources.refs[group],
                functions_by_arn(self.resources.attributes),
                self.functions.invoke,
            )
            self.scheduler_stand_in = stand_in

            def tick(stopping: threading.Event, stand_in: LocalScheduler = stand_in) -> None:
                while not stopping.wait(self.config.poll_interval):
                    try:
                        stand_in.tick()
                    except Exception as exc:  # a stand-in's hiccup must not end the local stack
                        self.log(f"local scheduler: {type(exc).__name__}: {exc}")

            self._spawn(f"scheduler-{group}", tick)

    # ----- the banner -----

    def describe(self) -> str:
        """What runs where, and how to use it."""
        assert self.functions is not None
        return "\n".join(
            [
                "Whereby bridge: local stack from template.yaml (no AWS account, no Docker). Ctrl-C stops it.",
                "",
                *self._describe_routes(),
                "",
                *self._describe_peers(),
                "",
                *self._describe_aws(),
                "",
                "Schedules (EventBridge Scheduler):",
                *(f"  {note}" for note in self.schedule_notes or ["none in the template"]),
                "Logs: below, in this terminal - the functions' JSON lines (as CloudWatch would show them), the",
                "gateway's access lines, the pump's notes about retries and the dead-letter queue, and one",
                "'schedule <function> <answer>' line per scheduled run.",
                "",
            ]
        )

    def _describe_routes(self) -> list[str]:
        assert self.functions is not None
        lines = [f"Gateway {self.gateway_url} (the tokens are local demo values from the local secret):"]
        for (method, path), function in self.functions.routes.items():  # in template order
            url = f"{self.gateway_url}{path}"
            if path.startswith("/kommo/"):
                url += f"?token={self.webhook_token}"
            elif path == "/mattermost/action":
                url += "  (a button of the bot's post, by the Mattermost simulator: mattermost_sim.click(post_id, ...))"
            elif path.startswith("/mattermost/"):
                team = next(iter(LOCAL_SECRET["mattermost_tokens"]))
                url += f"  (form fields token={self.mattermost_token}, team_id={team})"
            elif path == "/slack/action":
                url += "  (a button of a held message, by the Slack simulator: slack_sim.click(url, ts, action_id))"
            elif path.startswith("/slack/"):
                url += "  (signed by the Slack simulator: slack_sim.command(url, text))"
            reason = load_error(self.functions, function)
            status = f"  [502 until it loads: {reason}]" if reason else ""
            lines.append(f"  {method:<5}{url}  -> {function}{status}")
        lines += [
            "Try:",
            f"  curl -sS '{self.gateway_url}/kommo/stage?token={self.webhook_token}' \\",
            "       -H 'content-type: application/x-www-form-urlencoded' --data-binary @events/kommo-stage-change.form",
        ]
        if self.whereby_sim:
            lines.append(f"  curl -sS {self.whereby_sim.root_url}/_sim/meetings    # the room")
        if self.kommo_sim:
            lines.append(f"  curl -sS {self.kommo_sim.root_url}/_sim/notes       # the note on the deal")
        return lines

    def _describe_peers(self) -> list[str]:
        control = "control: GET /_sim/requests, POST /_sim/faults /_sim/fault_rate /_sim/latency /_sim/reset"
        lines = ["Peers:"]
        if self.whereby_sim:
            lines += [
                f"  Whereby simulator {self.whereby_sim.base_url}",
                f"    {control}, GET /_sim/meetings, POST /_sim/budget,",
                "    POST /_sim/rooms/join {roomName, displayName, roleName} /_sim/rooms/leave {participantId},",
                "    GET /_sim/events /_sim/deliveries (each event signed to /whereby/events),",
                "    POST /_sim/webhook /_sim/webhook/flush",
            ]
        else:
            lines.append(f"  Whereby {self.whereby_url}  REAL: every room created here is a real room on your plan")
        if self.kommo_sim:
            lines += [
                f"  Kommo simulator   {self.kommo_sim.base_url}",
                f"    {control}, GET /_sim/notes, GET|POST /_sim/events (a change Kommo sends no webhook for)",
            ]
        else:
            lines.append(f"  Kommo {self.kommo_url}  REAL: notes are written into real deals of this account")
        if self.slack_sim:
            lines += [
                f"  Slack simulator   {self.slack_sim.root_url}  workspace {self.slack_sim.team_id}",
                f"    {control}; POST /commands/… are the response_urls",
            ]
        if self.mattermost_sim:
            lines += [
                f"  Mattermost simulator {self.mattermost_sim.root_url}  the bot posts in channel {MATTERMOST_CHANNEL}"
                f" of team {MATTERMOST_TEAM}",
                f"    {control}; /api/v4/posts is the bot's API (bearer {self.mattermost_sim.bot_token}),"
                " POST /hooks/commands/… are the response_urls",
            ]
        return lines

    def _describe_aws(self) -> list[str]:
        refs = self.resources.refs
        lines = [f"AWS (moto server) {self.moto_url}  region {REGION}, credentials testing/testing"]
        for logical_id in resources_of(self.template, "AWS::DynamoDB::Table"):
            lines.append(f"  table  {refs[logical_id]}")
        for trigger in queue_triggers(self.template):
            dead_letter_queue, max_receives = redrive_policy(self.template, trigger.queue)
            lines.append(f"  queue  {refs[trigger.queue]} -> {trigger.function} (pumped continuously)")
            lines.append(f"  DLQ    {refs[dead_letter_queue]} (after {max_receives} failed tries)")
        for logical_id in resources_of(self.template, "AWS::SecretsManager::Secret"):
            lines.append(f"  secret {refs[logical_id]}")
        lines.append(
            f"  e.g. AWS_ENDPOINT_URL={self.moto_url} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "
            f"aws --region {REGION} sqs list-queues"
        )
        return lines
