"""Reliability: duplicates, injected peer faults, dependency outages and random input never lose or leak a room.

Sizes are bounded for CI; ``pytest -m reliability --reliability-size 500`` runs a larger round.
"""

from __future__ import annotations

import contextlib
import json
import threading
from urllib.parse import urlencode

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DEMO_STATUS, MATTERMOST_TOKENS, SECRET, SUBDOMAIN, sample
from tests.races import Collision

pytestmark = pytest.mark.reliability
STAGE_BODY = sample("02_status_regular_stage_custom_fields_2021.form")
TOKEN_QUERY = urlencode({"token": SECRET["kommo_webhook_token"]})
FORM = {"content-type": "application/x-www-form-urlencoded"}


def post(stack, path: str, body: bytes, query: str = TOKEN_QUERY) -> dict:
    return stack.request("POST", path, query=query, headers=FORM, body=body)


def lead_body(lead: int, status: int, at: int) -> bytes:
    return urlencode(
        [
            ("leads[status][0][id]", str(lead)),
            ("leads[status][0][status_id]", str(status)),
            ("leads[status][0][pipeline_id]", "1"),
            ("leads[status][0][updated_at]", str(at)),
            ("account[subdomain]", SUBDOMAIN),
        ]
    ).encode()


def table_rooms(stack) -> list[dict]:
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    return [i for i in table.scan()["Items"] if i["pk"].startswith("ROOM#")]  # inspection only


def dead_letters(stack) -> list[dict]:
    sqs = boto3.client("sqs", region_name="eu-west-1")
    found = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=stack.stack.refs["JobsDeadLetterQueue"], MaxNumberOfMessages=10, VisibilityTimeout=300
        ).get("Messages", [])
        if not batch:
            return found
        found += [json.loads(m["Body"]) for m in batch]


def test_ten_concurrent_deliveries_of_one_webhook_make_exactly_one_room(stack, whereby_sim, kommo_sim, atomic_dynamodb):
    from bridge import runtime

    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda: answers.append(post(stack, "/kommo/stage", STAGE_BODY)["statusCode"]))
        for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Two workers, the job delivered to both at once: they always collide on the lead's claim.
    collision = Collision(runtime.store(), parties=2)
    stack.drain(workers=2, deliver_twice=True)
    for _ in range(2):  # and late redeliveries
        post(stack, "/kommo/stage", STAGE_BODY)
        stack.drain(workers=2)
    assert answers == [200] * 10
    assert len(whereby_sim.meetings()) == 1
    assert len(kommo_sim.notes()) == 1
    assert stack.queue_depth("JobsQueue") == 0 and stack.queue_depth("JobsDeadLetterQueue") == 0
    assert (collision.claims_won, collision.claims_lost) == (1, 1)  # they did collide


def test_with_20_percent_peer_faults_every_event_ends_done_or_dead_lettered_and_nothing_leaks(
    stack, whereby_sim, kommo_sim, reliability_size
):
    from bridge import runtime
    from bridge.whereby.sweeper import sweep

    whereby_sim.set_fault_rate(0.2, seed=7, kinds=("500", "429", "timeout"), timeout_delay=0.3)
    kommo_sim.set_fault_rate(0.2, seed=11, kinds=("500", "429", "html", "timeout"), timeout_delay=0.3)
    leads = list(range(1000, 1000 + reliability_size))
    for lead in leads:
        assert post(stack, "/kommo/stage", lead_body(lead, DEMO_STATUS, 100))["statusCode"] == 200
    for lead in leads[::3]:  # a third of the deals are lost right away
        assert post(stack, "/kommo/close", lead_body(lead, 143, 101))["statusCode"] == 200
    stack.drain(max_rounds=2000)
    assert stack.queue_depth("JobsQueue") == 0

    whereby_sim.set_fault_rate(0.0)
    kommo_sim.set_fault_rate(0.0)
    dead = {(job["lead_id"], job["kind"]) for job in dead_letters(stack)}
    active = {r["owner"].rsplit("#", 1)[1]: r for r in table_rooms(stack) if r["state"] == "active"}
    for lead in leads:
        lost = lead in leads[::3]
        done = (str(lead) not in active) if lost else (str(lead) in active)
        assert done or (lead, "close_rooms" if lost else "ensure_room") in dead, f"lead {lead} neither done nor in DLQ"

    summary = sweep(runtime.store(), runtime.whereby(), runtime.settings())
    known = {r["meeting_id"] for r in table_rooms(stack) if r["state"] == "active"}
    leaked = [m for m in whereby_sim.meetings() if m["meetingId"] not in known]
    assert leaked == [], f"{len(leaked)} rooms at Whereby that no active record knows (sweep: {summary.as_dict()})"


def test_a_secrets_manager_outage_gets_a_retryable_answer_and_changes_nothing(stack, whereby_sim, monkeypatch):
    from aws_lambda_powertools.utilities import parameters

    from bridge import runtime

    real_get_secret = parameters.get_secret
    outage = {"on": True}

    def unreachable(*args, **kwargs):
        if not outage["on"]:
            return real_get_secret(*args, **kwargs)
        raise parameters.exceptions.GetParameterError("endpoint") from EndpointConnectionError(endpoint_url="x")

    runtime.reset()
    monkeypatch.setattr(parameters, "get_secret", unreachable)
    response = post(stack, "/kommo/stage", STAGE_BODY)
    assert response["statusCode"] == 503
    assert "retry" in json.loads(response["body"])["error"]
    assert stack.queue_depth("JobsQueue") == 0
    outage["on"] = False
    runtime.reset()
    assert post(stack, "/kommo/stage", STAGE_BODY)["statusCode"] == 200  # Kommo's redelivery goes through
    stack.drain()
    assert len(whereby_sim.meetings()) == 1


def test_a_dynamodb_outage_in_the_worker_keeps_the_job_for_a_retry(stack, whereby_sim, monkeypatch):
    from botocore.client import BaseClient

    original = BaseClient._make_api_call
    outage = {"on": True}

    def flaky(self, operation, params):
        if outage["on"] and self.meta.service_model.service_name == "dynamodb":
            raise EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com")
        return original(self, operation, params)

    assert post(stack, "/kommo/stage", STAGE_BODY)["statusCode"] == 200
    monkeypatch.setattr(BaseClient, "_make_api_call", flaky)
    assert stack.drain(max_rounds=2).failed == 2
    assert whereby_sim.meetings() == []
    outage["on"] = False
    stack.drain()
    assert len(whereby_sim.meetings()) == 1


def test_an_sqs_outage_answers_503_so_kommo_delivers_again(stack, monkeypatch):
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def down(self, operation, params):
        if self.meta.service_model.service_name == "sqs" and operation == "SendMessageBatch":
            raise EndpointConnectionError(endpoint_url="https://sqs.eu-west-1.amazonaws.com")
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", down)
    assert post(stack, "/kommo/stage", STAGE_BODY)["statusCode"] == 503


# Random input --------------------------------------------------------------------------------------------------

form_keys = st.one_of(
    st.sampled_from(
        [
            "account[subdomain]",
            "account[id]",
            "leads[status][0][id]",
            "leads[status][0][status_id]",
            "leads[delete][0][id]",
            "leads[add][]",
            "leads",
            "account",
            "leads[status][x][id]",
            "token",
            "text",
            "command",
            "team_id",
            "channel_id",
            "user_id",
            "a[b][c][d][e][f][g][h][i][j][k]",
        ]
    ),
    st.text(min_size=0, max_size=20),
)
form_values = st.one_of(
    st.sampled_from([SUBDOMAIN, str(DEMO_STATUS), "142", "-1", "", "0", "9" * 30]), st.text(max_size=40)
)
form_bodies = st.one_of(
    st.lists(st.tuples(form_keys, form_values), max_size=12).map(lambda pairs: urlencode(pairs).encode()),
    st.binary(max_size=300),
)
fuzz = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(body=form_bodies, with_token=st.booleans(), path=st.sampled_from(["/kommo/stage", "/kommo/close"]))
def test_random_kommo_bodies_never_get_a_5xx(stack, body, with_token, path):
    response = post(stack, path, body, query=TOKEN_QUERY if with_token else "token=nope")
    assert response["statusCode"] < 500, response


@fuzz
@given(body=form_bodies, token=st.sampled_from([MATTERMOST_TOKENS[0], "nope", ""]))
def test_random_mattermost_bodies_never_get_a_5xx(stack, whereby_sim, body, token):
    payload = body if token == "" else body + b"&" + urlencode({"token": token}).encode()
    response = stack.request("POST", "/mattermost/command", headers=FORM, body=payload)
    assert response["statusCode"] < 500, response


@fuzz
@given(body=form_bodies)
def test_the_kommo_parser_only_ever_raises_its_own_error(body):
    from bridge.kommo.webhook import MalformedWebhook, parse_webhook

    with contextlib.suppress(MalformedWebhook):
        parse_webhook(body)


def test_no_secret_value_in_any_log_line_of_a_faulty_run(stack, whereby_sim, kommo_sim, log_lines):
    whereby_sim.fail_next(9, status=503)  # three jobs fail all their attempts and are logged as failed
    kommo_sim.set_fault_rate(0.3, seed=5, kinds=("500", "html"))
    for lead in range(10):
        post(stack, "/kommo/stage", lead_body(lead + 1, DEMO_STATUS, 100))
    post(stack, "/kommo/stage", STAGE_BODY, query="token=" + SECRET["kommo_webhook_token"][:-1])
    stack.request(
        "POST",
        "/mattermost/command",
        headers=FORM,
        body=urlencode(
            {
                "token": MATTERMOST_TOKENS[1],
                "text": "standup 30m",
                "team_id": "wx4zz8t4ttgmtxqiwfohijayzc",
                "channel_id": "c",
                "user_id": "u",
                "command": "/whereby",
            }
        ).encode(),
    )
    stack.drain(max_rounds=200)
    lines = log_lines()
    assert any("job failed" in line for line in lines)  # the faults really happened and were logged
    text = "\n".join(lines)
    for value in (
        SECRET["whereby_api_key"],
        SECRET["kommo_webhook_token"],
        SECRET["kommo_access_token"],
        *MATTERMOST_TOKENS,
    ):
        assert value not in text
