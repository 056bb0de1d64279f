"""The local stack over real HTTP: gateway → Kommo handlers → FIFO queue → worker → Whereby and Kommo simulators.

Every request goes through sockets: the webhook to the gateway, the functions to moto and to the simulators, and
the tests' own look at the simulators through their ``/_sim/`` control endpoints.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import boto3
import pytest
import requests

from devstack.gateway import Gateway
from devstack.harness import LocalFunctions
from devstack.local import LocalConfig, LocalStack, plan_schedules, schedule_triggers
from devstack.mattermost_sim import BOT_USER_ID
from devstack.operations import redrive
from devstack.template import ROOT, Stack, load_template, redrive_policy
from tests.conftest import sample

pytestmark = pytest.mark.integration

EVENTS = ROOT / "events"
STAGE_FORM = (EVENTS / "kommo-stage-change.form").read_bytes()
LOST_FORM = (EVENTS / "kommo-lost.form").read_bytes()
SAMPLE_LEAD = 30267969
KOMMO_HEADERS = {"content-type": "application/x-www-form-urlencoded", "user-agent": "amoCRM-Webhooks/3.0"}
JOBS, WORKER = "JobsQueue", "WorkerFunction"


# ----- helpers -----


def for_lead(body: bytes, lead_id: int) -> bytes:
    """The same webhook for another lead (each test has its own, so SQS deduplication and the table stay apart)."""
    pairs = parse_qsl(body.decode(), keep_blank_values=True)
    return urlencode([(k, str(lead_id) if k == "leads[status][0][id]" else v) for k, v in pairs]).encode()


def post_kommo(stack: LocalStack, path: str, body: bytes, token: str | None) -> requests.Response:
    params = {"token": token} if token is not None else {}
    return requests.post(f"{stack.gateway_url}{path}", params=params, data=body, headers=KOMMO_HEADERS, timeout=10)


def meetings(stack: LocalStack) -> list[dict]:
    return requests.get(f"{stack.whereby_sim.root_url}/_sim/meetings", timeout=5).json()


def notes(stack: LocalStack, lead_id: int) -> list[dict]:
    return requests.get(f"{stack.kommo_sim.root_url}/_sim/notes", params={"lead_id": lead_id}, timeout=5).json()


def whereby_requests(stack: LocalStack) -> list[dict]:
    return requests.get(f"{stack.whereby_sim.root_url}/_sim/requests", timeout=5).json()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def queues_are_empty(stack: LocalStack) -> bool:
    dead_letter_queue, _ = redrive_policy(stack.template, JOBS)
    return stack.queue_depth(JOBS) == 0 and stack.queue_depth(dead_letter_queue) == 0


def reset_peers(stack: LocalStack) -> None:
    for sim in (stack.whereby_sim, stack.kommo_sim):
        requests.post(f"{sim.root_url}/_sim/reset", timeout=5).raise_for_status()


def empty_the_queue(stack: LocalStack, logical_id: str) -> None:
    """Received and deleted rather than purged: SQS allows one purge a minute."""
    url = stack.queue_url(logical_id)
    receive = {"QueueUrl": url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0}
    while messages := stack.sqs.receive_message(**receive).get("Messages"):
        for message in messages:
            stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def empty_the_table(stack: LocalStack) -> None:
    table = boto3.resource("dynamodb", endpoint_url=stack.moto_url).Table(stack.resources.refs["MeetingsTable"])
    scan: dict = {}
    with table.batch_writer() as batch:
        while True:
            page = table.scan(ProjectionExpression="pk, sk", **scan)
            for key in page["Items"]:
                batch.delete_item(Key=key)
            if "LastEvaluatedKey" not in page:
                break
            scan = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


@pytest.fixture
def peers(local_stack: LocalStack) -> LocalStack:
    """The stack as if new: no job in either queue, an empty table, both simulators reset (rooms, notes, request
    logs, faults). The stack is shared by the module and the tests run in any order, so what one test left behind
    (a room record for the sample's lead, a job still running) must not decide what the next one sees."""
    reset_peers(local_stack)  # first: a fault left behind must not keep a job failing
    wait_until(lambda: local_stack.queue_depth(JOBS) == 0, "the previous test's jobs to finish")
    dead_letter_queue, _ = redrive_policy(local_stack.template, JOBS)
    empty_the_queue(local_stack, dead_letter_queue)
    empty_the_table(local_stack)
    reset_peers(local_stack)  # again: the rooms and notes those jobs made
    return local_stack


# ----- the Kommo flow -----


def test_the_sample_stage_change_makes_exactly_one_room_and_one_note(peers):
    response = post_kommo(peers, "/kommo/stage", STAGE_FORM, peers.webhook_token)
    assert (response.status_code, response.json()) == (200, {"accepted": 1, "ignored": 0})

    wait_until(lambda: meetings(peers) and notes(peers, SAMPLE_LEAD), "the room and the note")
    wait_until(lambda: queues_are_empty(peers), "the job to leave the queue")
    [room] = meetings(peers)
    [note] = notes(peers, SAMPLE_LEAD)
    assert room["roomName"].startswith("/demo-")
    assert room["roomUrl"] in note["params"]["text"] and room["hostRoomUrl"] in note["params"]["text"]


def test_a_bad_token_changes_nothing(peers):
    lead = 30267970
    for token in ("not-the-token", "", None):
        response = post_kommo(peers, "/kommo/stage", for_lead(STAGE_FORM, lead), token)
        assert response.status_code == 401
        assert peers.webhook_token not in response.text
    # No wait: a handler that queued a job did so before it answered, and the job stays in the queue until the
    # worker is done with it, so a job made here is in the queue now, or its room and note are already there.
    assert queues_are_empty(peers)
    assert meetings(peers) == [] and whereby_requests(peers) == []
    assert notes(peers, lead) == []


def test_a_lost_deal_gets_its_room_deleted(peers):
    lead = 30267971
    assert post_kommo(peers, "/kommo/stage", for_lead(STAGE_FORM, lead), peers.webhook_token).status_code == 200
    wait_until(lambda: meetings(peers) and notes(peers, lead), "the room")

    response = post_kommo(peers, "/kommo/close", for_lead(LOST_FORM, lead), peers.webhook_token)
    assert (response.status_code, response.json()) == (200, {"accepted": 1, "ignored": 0})
    wait_until(lambda: meetings(peers) == [] and len(notes(peers, lead)) == 2, "the room to be deleted")
    assert any(r["method"] == "DELETE" and r["status"] == 204 for r in whereby_requests(peers))


def test_a_whereby_outage_ends_in_the_dead_letter_queue_and_a_redrive_finishes_the_job(peers):
    lead = 30267972
    dead_letter_queue, max_receives = redrive_policy(peers.template, JOBS)
    pump = peers.pumps[JOBS]
    failed_before = pump.stats.failed
    outage = {"n": 10_000, "status": 503, "method": "POST"}
    requests.post(f"{peers.whereby_sim.root_url}/_sim/faults", json=outage, timeout=5).raise_for_status()

    assert post_kommo(peers, "/kommo/stage", for_lead(STAGE_FORM, lead), peers.webhook_token).status_code == 200
    wait_until(lambda: peers.queue_depth(dead_letter_queue) == 1, "the job in the dead-letter queue", timeout=40)

    assert pump.stats.failed - failed_before == max_receives  # the worker ran it exactly maxReceiveCount times
    assert peers.queue_depth(JOBS) == 0
    assert meetings(peers) == [] and notes(peers, lead) == []
    posts = [r for r in whereby_requests(peers) if r["method"] == "POST"]
    assert len(posts) >= max_receives and {r["status"] for r in posts} == {503}

    requests.post(f"{peers.whereby_sim.root_url}/_sim/reset", timeout=5).raise_for_status()  # Whereby is back
    moved = redrive(peers.sqs, peers.queue_url(dead_letter_queue), peers.queue_url(JOBS))
    assert moved == 1
    wait_until(lambda: meetings(peers) and notes(peers, lead), "the redriven job's room and note")
    wait_until(lambda: queues_are_empty(peers), "both queues to be empty")
    assert len(meetings(peers)) == 1 and len(notes(peers, lead)) == 1


def test_redrive_keeps_the_message_group_and_order_with_fresh_deduplication_ids(local_stack):
    sqs = local_stack.sqs
    fifo = {"FifoQueue": "true"}
    source = sqs.create_queue(QueueName=f"redrive-src-{uuid.uuid4().hex[:8]}.fifo", Attributes=fifo)["QueueUrl"]
    target = sqs.create_queue(QueueName=f"redrive-dst-{uuid.uuid4().hex[:8]}.fifo", Attributes=fifo)["QueueUrl"]
    for n in range(3):
        sqs.send_message(QueueUrl=source, MessageBody=f"job {n}", MessageGroupId="g7", MessageDeduplicationId=f"d{n}")

    assert redrive(sqs, source, target) == 3

    got = sqs.receive_message(QueueUrl=target, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in got] == ["job 0", "job 1", "job 2"]
    assert {m["Attributes"]["MessageGroupId"] for m in got} == {"g7"}
    assert not {m["Attributes"]["MessageDeduplicationId"] for m in got} & {"d0", "d1", "d2"}
    assert sqs.receive_message(QueueUrl=source, WaitTimeSeconds=0).get("Messages") is None


def test_a_finished_recordings_note_link_opens_a_fresh_whereby_link_through_the_gateway(peers):
    post_kommo(peers, "/kommo/stage", STAGE_FORM, peers.webhook_token)
    wait_until(lambda: meetings(peers) and queues_are_empty(peers), "the room")
    [room] = meetings(peers)
    # Whereby's signed recording.finished reaches the gateway, and the worker posts the note.
    finished = requests.post(
        f"{peers.whereby_sim.root_url}/_sim/recordings", json={"roomName": room["roomName"]}, timeout=5
    )
    assert finished.status_code == 201
    wait_until(
        lambda: [n for n in notes(peers, SAMPLE_LEAD) if "/recordings/" in n["params"]["text"]], "the recording note"
    )
    [note] = [n for n in notes(peers, SAMPLE_LEAD) if "/recordings/" in n["params"]["text"]]
    link = next(word for word in note["params"]["text"].split() if "/recordings/" in word)
    assert link.startswith(peers.gateway_url + "/recordings/")  # the API the stack serves, not Whereby's
    answer = requests.get(link, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith(peers.whereby_sim.root_url + "/_media/")


# ----- the chats -----


def test_the_sample_mattermost_command_gets_the_host_link_and_the_bots_post_in_the_channel(peers):
    """The local stack runs with the Mattermost simulator's bot: the room's post is the bot's, not the answer."""
    body = (EVENTS / "mattermost-command.body").read_bytes()
    fields = dict(parse_qsl(body.decode()))
    headers = {"content-type": "application/x-www-form-urlencoded"}
    response = requests.post(f"{peers.gateway_url}/mattermost/command", data=body, headers=headers, timeout=10)

    [room] = meetings(peers)
    assert response.status_code == 200 and response.json()["response_type"] == "ephemeral"
    assert room["hostRoomUrl"] in response.json()["text"]
    [post] = [p for p in peers.mattermost_sim.posts(fields["channel_id"]) if room["roomUrl"] in p["message"]]
    assert post["user_id"] == BOT_USER_ID and post["props"]["meeting_status"] == "STARTED"
    assert (
        post["props"]["attachments"][0]["actions"][0]["integration"]["url"] == f"{peers.gateway_url}/mattermost/action"
    )


# ----- the gateway -----


def test_routes_the_template_does_not_have_get_api_gateways_404(local_stack):
    for method, path in (("GET", "/nope"), ("GET", "/kommo/stage"), ("POST", "/kommo/stage/")):
        response = requests.request(method, f"{local_stack.gateway_url}{path}", timeout=5)
        assert (response.status_code, response.json()) == (404, {"message": "Not Found"})


def test_a_function_that_cannot_load_answers_502_with_the_reason_and_is_retried():
    template = {
        "Resources": {
            "HalfWrittenFunction": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "CodeUri": "functions/not_written_yet/",
                    "Handler": "app.lambda_handler",
                    "Events": {"Api": {"Type": "HttpApi", "Properties": {"Method": "POST", "Path": "/half"}}},
                },
            }
        }
    }
    with Gateway(LocalFunctions(template, Stack(), sqs=None), port=0, log=None) as gateway:
        for _ in range(2):  # the second try imports again rather than reusing a broken module
            response = requests.post(f"{gateway.url}/half", data=b"x=1", timeout=5)
            assert response.status_code == 502
            assert "HalfWrittenFunction failed to load: FileNotFoundError" in response.json()["reason"]


ECHO_HANDLER = """
import base64


def lambda_handler(event, context):
    body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/octet-stream", "x-query": event["rawQueryString"]},
        "cookies": ["a=1", "b=2"],
        "isBase64Encoded": True,
        "body": base64.b64encode(b"got " + body).decode(),
    }
"""


def test_the_gateway_sends_the_function_a_payload_2_event_and_writes_back_its_answer(tmp_path):
    (tmp_path / "app.py").write_text(ECHO_HANDLER)
    route = {"Type": "HttpApi", "Properties": {"Method": "POST", "Path": "/echo"}}
    function = {"CodeUri": str(tmp_path), "Handler": "app.lambda_handler", "Events": {"Api": route}}
    template = {"Resources": {"EchoFunction": {"Type": "AWS::Serverless::Function", "Properties": function}}}
    with Gateway(LocalFunctions(template, Stack(), sqs=None), port=0, log=None) as gateway:
        response = requests.post(f"{gateway.url}/echo?q=1", data={"x": "1"}, timeout=5)
    assert (response.status_code, response.content) == (201, b"got x=1")  # form bodies arrive base64-encoded
    assert response.headers["x-query"] == "q=1"
    assert response.headers["set-cookie"] == "a=1, b=2"


# ----- the scheduler -----


def stand_in_template(code_dir: Path, prefix: str) -> dict:
    """The template with every scheduled function's code elsewhere, under logical ids of their own (handlers are
    cached by id)."""
    template = copy.deepcopy(load_template())
    for logical_id in [trigger.function for trigger in schedule_triggers(template)]:
        function = template["Resources"].pop(logical_id)
        function["Properties"]["CodeUri"] = str(code_dir)
        template["Resources"][f"{prefix}{logical_id}"] = function
    return template


SCHEDULES = {"SweepSchedule": "rate(15 minutes)", "ReconcileSchedule": "rate(10 minutes)"}


def test_every_schedule_runs_on_its_own_rate_with_its_template_input(tmp_path):
    (tmp_path / "app.py").write_text("def lambda_handler(event, context):\n    return {'got': event}\n")
    functions = LocalFunctions(stand_in_template(tmp_path, "StandIn"), Stack(parameters=SCHEDULES), sqs=None)

    plans = plan_schedules(functions, functions.stack, LocalConfig(), log=lambda line: None)
    assert [(timer.trigger.function, timer.every) for timer, _ in plans] == [
        ("StandInSweeperFunction", 900),
        ("StandInKommoReconcileFunction", 600),
    ]
    assert [note.split()[:3] for _, note in plans] == [
        ["StandInSweeperFunction", "every", "900"],
        ["StandInKommoReconcileFunction", "every", "600"],
    ]
    assert [timer.fire() for timer, _ in plans] == [{"got": {"source": "schedule"}}] * 2

    plans = plan_schedules(functions, functions.stack, LocalConfig(sweep_every=2), log=lambda line: None)
    assert [(timer.every, "--sweep-every" in note) for timer, note in plans] == [(2, True), (2, True)]


def test_each_scheduled_run_logs_one_line_naming_its_function(tmp_path):
    (tmp_path / "app.py").write_text("def lambda_handler(event, context):\n    return {'ok': 1}\n")
    lines: list[str] = []
    functions = LocalFunctions(stand_in_template(tmp_path, "Logging"), Stack(parameters=SCHEDULES), sqs=None)
    for timer, _ in plan_schedules(functions, functions.stack, LocalConfig(sweep_every=1), log=lines.append):
        timer.fire()
    assert lines == [
        'schedule LoggingSweeperFunction {"ok": 1}',
        'schedule LoggingKommoReconcileFunction {"ok": 1}',
    ]


def test_a_scheduled_function_that_cannot_load_is_skipped_and_the_others_run(tmp_path):
    (tmp_path / "app.py").write_text("def lambda_handler(event, context):\n    return {}\n")
    template = stand_in_template(tmp_path, "Missing")
    template["Resources"]["MissingSweeperFunction"]["Properties"]["CodeUri"] = str(tmp_path / "missing")
    functions = LocalFunctions(template, Stack(parameters=SCHEDULES), sqs=None)
    [(sweeper, note), (reconciler, _)] = plan_schedules(functions, functions.stack, LocalConfig(), lambda line: None)
    assert sweeper is None and note.startswith("MissingSweeperFunction off: it cannot load (FileNotFoundError")
    assert reconciler is not None and reconciler.every == 600


# ----- the sample events -----


def test_the_sample_events_are_what_aws_would_deliver(peers):
    assert sample("02_status_regular_stage_custom_fields_2021.form") == STAGE_FORM
    http_event = json.loads((EVENTS / "kommo-stage-change.http-api.json").read_text())
    assert http_event["isBase64Encoded"] and base64.b64decode(http_event["body"]) == STAGE_FORM
    sqs_event = json.loads((EVENTS / "worker-ensure-room.sqs.json").read_text())
    [record] = sqs_event["Records"]
    assert json.loads(record["body"])["lead_id"] == SAMPLE_LEAD
    assert record["attributes"]["MessageGroupId"] == f"irestoremoldova:{SAMPLE_LEAD}"
    sweeper_input = json.loads((EVENTS / "sweeper-schedule.json").read_text())
    assert sweeper_input == schedule_triggers(peers.template)[0].input

    answer = peers.functions.invoke("KommoStageFunction", http_event)
    assert (answer["statusCode"], json.loads(answer["body"])) == (200, {"accepted": 1, "ignored": 0})
    wait_until(lambda: queues_are_empty(peers), "the job to leave the queue")


# ----- the command line -----


def test_make_local_serves_until_sigterm_and_stops_cleanly():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--port", "0", "--sweep-every", "3600"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(60, process.kill)  # a stack that never prints its banner must not hang the suite
    watchdog.start()
    try:
        gateway = ""
        for line in process.stdout:
            if line.startswith("Gateway http://"):
                gateway = line.split()[1]
                break
        assert gateway, "the banner never named the gateway"
        response = requests.post(f"{gateway}/kommo/stage", params={"token": "wrong"}, data=STAGE_FORM, timeout=10)
        assert response.status_code == 401

        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=20)
    finally:
        watchdog.cancel()
        process.kill()
    assert process.returncode == 0
    assert "Stopped." in rest and "Traceback" not in rest
