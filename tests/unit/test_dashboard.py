"""The dashboard draws what the code publishes: every WherebyBridge line on it, and every alarm, names a metric the
layer emits under the dimensions it emits it with, so no graph stays empty and no alarm stays silent after a rename.

Two checks: the layer's source read with ``ast`` (every metric name it can publish, and with which dimensions), and
the functions run through the local stack, reading the EMF records Powertools prints, for the lines an operator
looks at first (rooms, refusals by reason, Whereby's 429s and points).
"""

from __future__ import annotations

import ast
import copy
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from devstack.lambda_events import http_api_event
from devstack.template import load_template, resources_of
from tests.conftest import DEMO_STATUS, SECRET
from tests.kommo_bodies import status_body
from tests.unit.test_mattermost_command import WEATHER, command, form, run

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "layers" / "shared" / "bridge"
NAMESPACE = "WherebyBridge"
SERVICE = "whereby-bridge"
PSEUDO = {"AWS::Region": "eu-west-1", "AWS::StackName": "whereby-bridge", "AWS::AccountId": "123456789012"}
FORM = {"content-type": "application/x-www-form-urlencoded"}

# A line of a graph, or an alarm: the metric it reads, in CloudWatch's terms.
Line = tuple[str, str, frozenset[tuple[str, str]]]  # namespace, metric name, dimensions (name, value)


# The dashboard as CloudWatch receives it -------------------------------------------------------------------------
def the_dashboard(template: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The dashboard's body, its ``${…}`` replaced as CloudFormation would (resources by a stand-in)."""
    template = template or load_template()
    [dashboard] = resources_of(template, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(body, str), "the body is one Fn::Sub string"
    parameters, resources = template["Parameters"], template["Resources"]

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in PSEUDO:
            return PSEUDO[name]
        if name in parameters:
            return str(parameters[name]["Default"])
        resource, _, attribute = name.partition(".")
        assert resource in resources, f"the dashboard refers to {name}, which the template does not define"
        return f"{resource}-{attribute or 'ref'}"

    return json.loads(re.sub(r"\$\{([^}]+)\}", value, body))


def graph_lines(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, Line]]:
    """Every metric line of every graph, with the graph's title ("." repeats the line above, as CloudWatch reads it)."""
    for widget in dashboard["widgets"]:
        if widget["type"] != "metric":
            continue
        previous: list[str] = []
        for entry in widget["properties"]["metrics"]:
            fields = [field for field in entry if not isinstance(field, dict)]
            fields = [previous[i] if field == "." else field for i, field in enumerate(fields)]
            previous = fields
            namespace, name, *dimensions = fields
            yield (
                widget["properties"]["title"],
                (namespace, name, frozenset(zip(dimensions[::2], dimensions[1::2], strict=True))),
            )


def ours(lines: Iterable[Line]) -> set[Line]:
    return {line for line in lines if line[0] == NAMESPACE}


def alarm_lines(template: Mapping[str, Any]) -> set[Line]:
    found = set()
    for alarm in resources_of(template, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        dimensions = frozenset(
            (d["Name"], d["Value"]) for d in props.get("Dimensions", []) if isinstance(d["Value"], str)
        )
        found.add((props["Namespace"], props["MetricName"], dimensions))
    return found


# What the layer's source can publish -----------------------------------------------------------------------------
def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _peer_prefixes(calls: list[ast.Call]) -> set[str]:
    """The metric prefix of every peer session the layer opens (``WherebyThrottled``, ``KommoErrors``…)."""
    from bridge.core.peer_http import PeerSession

    names = {c.args[0].value for c in calls if _called(c) == "PeerSession" and isinstance(c.args[0], ast.Constant)}
    assert names, "no PeerSession found: the peers' metrics would go unchecked"
    return {PeerSession(name, "https://peer.invalid", {}).metric for name in names}


def _names(node: ast.expr, prefixes: set[str], where: str) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _names(node.body, prefixes, where) | _names(node.orelse, prefixes, where)
    if (
        isinstance(node, ast.JoinedStr)
        and len(node.values) == 2
        and isinstance(prefix := node.values[0], ast.FormattedValue)
        and ast.unparse(prefix.value) == "self.metric"
        and isinstance(suffix := node.values[1], ast.Constant)
    ):
        return {f"{peer}{suffix.value}" for peer in prefixes}
    raise AssertionError(f"{where}: a metric name this test cannot read ({ast.unparse(node)}); teach it here")


def published_by_the_layer() -> dict[str, set[frozenset[str]]]:
    """Each metric name the layer can publish, with the sets of dimension names it goes out with.

    ``count`` publishes under ``service``; ``count_reason`` under ``service`` and under ``service`` and ``reason``.
    """
    calls: list[tuple[ast.Call, str]] = []
    for path in sorted(BRIDGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        calls += [
            (node, f"{path.relative_to(BRIDGE)}:{node.lineno}") for node in ast.walk(tree) if isinstance(node, ast.Call)
        ]
    prefixes = _peer_prefixes([call for call, _ in calls])
    published: dict[str, set[frozenset[str]]] = {}
    for call, where in calls:
        kind = _called(call)
        if kind == "add_metric":
            assert where.startswith("core/observability.py"), f"{where}: publish through count() or count_reason()"
        if kind not in ("count", "count_reason") or where.startswith("core/observability.py"):
            continue
        sets = {frozenset({"service"})} | ({frozenset({"service", "reason"})} if kind == "count_reason" else set())
        for name in _names(call.args[0], prefixes, where):
            published.setdefault(name, set()).update(sets)
    return published


def unfed(lines: Iterable[Line], published: Mapping[str, set[frozenset[str]]]) -> set[Line]:
    """The lines of namespace WherebyBridge that nothing the layer publishes would fill."""
    return {
        line
        for line in ours(lines)
        if frozenset(name for name, _ in line[2]) not in published.get(line[1], set())
        or dict(line[2]).get("service") != SERVICE
    }


# What the functions printed --------------------------------------------------------------------------------------
def printed(out: str) -> set[Line]:
    """The lines the EMF records on stdout fed with a value above zero, each under every dimension set it names."""
    fed: set[Line] = set()
    for text in out.splitlines():
        if not (text.startswith("{") and '"_aws"' in text):
            continue
        record = json.loads(text)
        for directive in record["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                values = record[metric["Name"]]
                if sum(values) if isinstance(values, list) else values:
                    for names in directive["Dimensions"]:
                        dimensions = frozenset((name, record[name]) for name in names)
                        fed.add((directive["Namespace"], metric["Name"], dimensions))
    return fed


def lines_named(*names: str) -> set[Line]:
    found = {line for _, line in graph_lines(the_dashboard()) if line[1] in names}
    assert {line[1] for line in found} == set(names), "each of these has a line on the dashboard"
    return found


# The static checks -----------------------------------------------------------------------------------------------
def test_every_line_of_the_dashboard_and_every_alarm_reads_a_metric_the_code_publishes_with_those_dimensions():
    template = load_template()
    published = published_by_the_layer()
    dashboard = {line for _, line in graph_lines(the_dashboard(template))}
    assert len(ours(dashboard)) >= 20
    assert unfed(dashboard, published) == set()
    alarms = ours(alarm_lines(template))
    assert len(alarms) == 6
    assert unfed(alarms, published) == set()


def test_the_functions_publish_under_the_service_and_namespace_the_dashboard_reads():
    from bridge.core import observability

    variables = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    assert (variables["POWERTOOLS_METRICS_NAMESPACE"], variables["POWERTOOLS_SERVICE_NAME"]) == (NAMESPACE, SERVICE)
    assert (observability.metrics.namespace, observability.metrics.service) == (NAMESPACE, SERVICE)


def test_a_line_naming_a_metric_the_code_never_publishes_or_with_other_dimensions_is_caught():
    template = load_template()
    published = published_by_the_layer()
    broken = copy.deepcopy(template)
    body = broken["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    broken["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"] = body.replace(
        '"RoomsClosed", "service"', '"RoomClosed", "service"'
    ).replace(
        '"SweepDeleted", "service", "whereby-bridge"', '"SweepDeleted", "service", "whereby-bridge", "reason", "x"'
    )
    caught = unfed((line for _, line in graph_lines(the_dashboard(broken))), published)
    assert {(name, dict(dimensions).get("reason")) for _, name, dimensions in caught} == {
        ("RoomClosed", None),
        ("SweepDeleted", "x"),
    }


def test_the_refusal_graphs_draw_one_line_for_each_reason_the_code_gives():
    from bridge.chat import slack, slack_action
    from bridge.chat.mattermost import REFUSAL_KINDS
    from bridge.kommo.intake import REJECT_KINDS
    from bridge.whereby import events

    drawn: dict[str, set[str]] = {}
    for _, (_, name, dimensions) in graph_lines(the_dashboard()):
        if "reason" in dict(dimensions):
            drawn.setdefault(name, set()).add(dict(dimensions)["reason"])
    assert drawn == {
        "WebhooksRejected": set(REJECT_KINDS),
        "CommandsRefused": set(REFUSAL_KINDS),
        "WherebyEventsRejected": set(events.REJECT_KINDS),
        "SlackCommandsRefused": set(slack.REFUSAL_KINDS),
        "SlackActionsRefused": set(slack_action.REFUSAL_KINDS),
    }


def test_the_queue_graphs_watch_the_fifo_job_queue_and_its_dead_letter_queue():
    template = load_template()
    queues = {f"{logical_id}-QueueName" for logical_id in resources_of(template, "AWS::SQS::Queue")}
    assert queues == {"JobsQueue-QueueName", "JobsDeadLetterQueue-QueueName"}
    sqs = {
        (title, name, dict(dimensions)["QueueName"])
        for title, (namespace, name, dimensions) in graph_lines(the_dashboard(template))
        if namespace == "AWS/SQS"
    }
    assert ("Age of the oldest job (seconds)", "ApproximateAgeOfOldestMessage", "JobsQueue-QueueName") in sqs
    assert {queue for _, name, queue in sqs if name == "ApproximateNumberOfMessagesVisible"} == queues
    assert template["Resources"]["JobsQueue"]["Properties"]["FifoQueue"] is True


def test_the_stack_outputs_the_dashboards_console_address():
    template = load_template()
    url = template["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]
    assert url == (
        "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home?region=${AWS::Region}"
        "#dashboards:name=${OperationsDashboard}"
    )
    name = template["Resources"]["OperationsDashboard"]["Properties"]["DashboardName"]
    assert "${AWS::StackName}" in json.dumps(name)  # one dashboard per stack, never two stacks on one


# The functions feed the lines an operator reads first ----------------------------------------------------------
def kommo(stack, path: str, body: bytes, token: str = SECRET["kommo_webhook_token"]) -> int:
    return stack.request("POST", path, query=urlencode({"token": token}), headers=FORM, body=body)["statusCode"]


def test_making_closing_ending_and_sweeping_rooms_feeds_the_room_and_whereby_graphs(stack, whereby_sim, capsys):
    from bridge import runtime
    from bridge.whereby.client import RoomRequest, room_prefix

    capsys.readouterr()
    whereby_sim.fail_next(1, status=429, retry_after=0, method="POST")  # the first room is made on the retry
    assert kommo(stack, "/kommo/stage", status_body(1, DEMO_STATUS, 1_767_225_000)) == 200
    assert kommo(stack, "/kommo/stage", status_body(2, DEMO_STATUS, 1_767_225_000)) == 200
    stack.drain()
    assert kommo(stack, "/kommo/close", status_body(1, 142, 1_767_225_600)) == 200
    stack.drain()
    assert run(stack, "Hi", sample=WEATHER)["response_type"] == "in_channel"  # a /whereby room…
    assert "has ended" in run(stack, "end", sample=WEATHER)["text"]  # …ended by its maker
    in_an_hour = datetime.fromtimestamp(time.time() + 3600, UTC)
    store = runtime.store()
    runtime.whereby().create_meeting(RoomRequest(in_an_hour, prefix=room_prefix("demo", store.new_room_key())))
    summary = stack.invoke("SweeperFunction", {"mode": "close-all"})
    assert (summary["deleted"], summary["orphans"]) == (1, 1)  # deal 2's room, and the room no record owned
    assert whereby_sim.meetings() == []

    wanted = lines_named(
        "RoomsCreated",
        "RoomsClosed",
        "RoomsEnded",
        "SweepDeleted",
        "SweepOrphansDeleted",
        "WherebyThrottled",
        "WherebyPointsSpent",
    )
    assert wanted - printed(capsys.readouterr().out) == set()


def test_each_kind_of_refused_kommo_webhook_feeds_its_own_line(stack, capsys):
    from bridge.kommo.intake import REJECT_KINDS

    token = SECRET["kommo_webhook_token"]
    body = status_body(3, DEMO_STATUS, 1_767_225_000)
    stranger = body.replace(b"irestoremoldova", b"someoneelse").replace(b"16503244", b"99")
    unreadable = http_api_event("POST", "/kommo/stage", query=urlencode({"token": token}), headers=FORM, body=body)
    unreadable.update(body="%%% not base64", isBase64Encoded=True)
    requests = {
        "token": [(lambda: kommo(stack, "/kommo/stage", body, "kommo-hook-token-guessed"), 401)],
        "other-account": [(lambda: kommo(stack, "/kommo/stage", stranger), 403)],
        "malformed": [
            (lambda: kommo(stack, "/kommo/stage", b"leads[status][0][id]=not-a-number"), 400),
            (lambda: stack.invoke("KommoStageFunction", unreadable)["statusCode"], 400),
        ],
        "too-large": [(lambda: kommo(stack, "/kommo/stage", b"x" * 600_000), 413)],
    }
    assert set(requests) == set(REJECT_KINDS)  # a new kind gets a request here, and a line on the dashboard
    for kind, sends in requests.items():
        for send, status in sends:
            capsys.readouterr()
            assert send() == status, kind
            fed = {line for line in printed(capsys.readouterr().out) if line[1] == "WebhooksRejected"}
            # This reason's line, and the total an alarm can watch; no other reason's line.
            assert fed == {
                (NAMESPACE, "WebhooksRejected", frozenset({("service", SERVICE), ("reason", kind)})),
                (NAMESPACE, "WebhooksRejected", frozenset({("service", SERVICE)})),
            }, kind
    assert stack.queue_depth("JobsQueue") == 0  # refused: nothing was enqueued


def test_each_kind_of_refused_slash_command_feeds_its_own_line(stack, whereby_sim, capsys, monkeypatch):
    from bridge import runtime
    from bridge.chat.mattermost import REFUSAL_KINDS

    other_team = "tsb8crrn5tgqtedpkt81b4tcya"

    def post(body: str) -> int:
        return stack.request("POST", "/mattermost/command", headers=FORM, body=body.encode())["statusCode"]

    def outside_the_allowed_teams() -> int:
        monkeypatch.setenv("MATTERMOST_TEAM_IDS", other_team)
        runtime.reset()
        return command(stack, "Hi", sample=WEATHER)["statusCode"]

    requests = {
        "token": (lambda: post(form(WEATHER, token="mm-token-guessed")), 401),
        "other-team": (lambda: post(form(WEATHER, team_id=other_team)), 401),
        "malformed": (lambda: post(form(WEATHER, channel_id="")), 400),
        "team-not-enabled": (outside_the_allowed_teams, 200),  # told so in an ephemeral answer
    }
    assert set(requests) == set(REFUSAL_KINDS)
    for kind, (send, status) in requests.items():
        capsys.readouterr()
        assert send() == status, kind
        fed = {line for line in printed(capsys.readouterr().out) if line[1] == "CommandsRefused"}
        assert fed == {
            (NAMESPACE, "CommandsRefused", frozenset({("service", SERVICE), ("reason", kind)})),
            (NAMESPACE, "CommandsRefused", frozenset({("service", SERVICE)})),
        }, kind
    assert whereby_sim.meetings() == []  # refused: no room
