"""A deal enters a stage → one room, one note, one record; whatever Kommo repeats or sends wrong."""

from __future__ import annotations

import json
import threading
from urllib.parse import urlencode

import boto3
import pytest

from bridge.core.http_api import ApiRequest
from tests.conftest import DEMO_STATUS, MATTERMOST_TOKENS, SECRET, SUBDOMAIN, sample
from tests.races import Collision

STAGE_BODY = sample("02_status_regular_stage_custom_fields_2021.form")
LEAD_ID = 30267969


def post(stack, body: bytes, token: str | None = SECRET["kommo_webhook_token"], path: str = "/kommo/stage"):
    query = urlencode({"token": token}) if token is not None else ""
    headers = {"content-type": "application/x-www-form-urlencoded", "user-agent": "amoCRM-Webhooks/3.0"}
    response = stack.request("POST", path, query=query, headers=headers, body=body)
    return response["statusCode"], json.loads(response["body"])


def table_items(stack) -> list[dict]:
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    return table.scan()["Items"]  # test inspection only; the product never scans


def rooms_in_table(stack) -> list[dict]:
    return [item for item in table_items(stack) if item["pk"].startswith("ROOM#")]


def multi_lead_body(lead_ids: list[int], status: int = DEMO_STATUS) -> bytes:
    fields = []
    for i, lead in enumerate(lead_ids):
        fields += [
            (f"leads[status][{i}][id]", str(lead)),
            (f"leads[status][{i}][status_id]", str(status)),
            (f"leads[status][{i}][old_status_id]", "16525555"),
            (f"leads[status][{i}][pipeline_id]", "788512"),
            (f"leads[status][{i}][updated_at]", "1615985846"),
        ]
    fields += [("account[subdomain]", SUBDOMAIN), ("account[id]", "16503244")]
    return urlencode(fields).encode()


def test_stage_change_creates_one_room_a_note_and_a_record(stack, whereby_sim, kommo_sim):
    status, answer = post(stack, STAGE_BODY)
    assert (status, answer) == (200, {"accepted": 1, "ignored": 0})

    assert stack.drain().processed == 1

    meetings = whereby_sim.meetings()
    assert len(meetings) == 1
    meeting = meetings[0]
    assert meeting["roomName"].startswith("/demo-z")
    notes = kommo_sim.notes(LEAD_ID)
    assert len(notes) == 1
    text = notes[0]["params"]["text"]
    assert meeting["roomUrl"] in text and meeting["hostRoomUrl"] in text and "Open until" in text
    [record] = rooms_in_table(stack)
    assert record["state"] == "active" and record["meeting_id"] == meeting["meetingId"]
    assert record["owner"] == f"LEAD#{SUBDOMAIN}#{LEAD_ID}"
    create = next(r for r in whereby_sim.requests_seen() if r["method"] == "POST")
    assert create["json"]["fields"] == ["hostRoomUrl"] and create["json"]["isLocked"] is True


def test_the_same_webhook_three_times_makes_one_room(stack, whereby_sim, kommo_sim):
    for _ in range(3):
        assert post(stack, STAGE_BODY)[0] == 200
        assert stack.drain().failed == 0
    assert len(whereby_sim.meetings()) == 1
    assert len(kommo_sim.notes(LEAD_ID)) == 1
    assert stack.queue_depth("JobsDeadLetterQueue") == 0


def test_a_retry_after_the_queue_window_still_makes_no_second_room(stack, whereby_sim, kommo_sim):
    assert post(stack, STAGE_BODY)[0] == 200
    stack.drain()
    # An hour later SQS's deduplication window is long gone; the table still knows the room.
    sqs = boto3.client("sqs", region_name="eu-west-1")
    from bridge.kommo.jobs import ENSURE_ROOM, Job

    job = Job(ENSURE_ROOM, SUBDOMAIN, LEAD_ID, "status", DEMO_STATUS, 1615985846)
    sqs.send_message(
        QueueUrl=stack.stack.refs["JobsQueue"],
        MessageBody=job.to_json(),
        MessageGroupId=job.group_id,
        MessageDeduplicationId="a-later-redelivery",
    )
    drained = stack.drain()
    assert drained.processed == 1
    assert (drained.failed, stack.queue_depth("JobsDeadLetterQueue")) == (0, 0)
    assert len(whereby_sim.meetings()) == 1
    assert len(kommo_sim.notes(LEAD_ID)) == 1


def test_concurrent_deliveries_make_one_room(stack, whereby_sim, kommo_sim, atomic_dynamodb):
    from bridge import runtime

    statuses: list[int] = []

    def deliver() -> None:
        statuses.append(post(stack, STAGE_BODY)[0])

    threads = [threading.Thread(target=deliver) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 5
    # Two workers, as the template allows, and the job delivered to both at once: they always collide on the claim.
    collision = Collision(runtime.store(), parties=2)
    drained = stack.drain(workers=2, deliver_twice=True)
    assert len(whereby_sim.meetings()) == 1
    assert len(kommo_sim.notes(LEAD_ID)) == 1
    assert drained.processed >= 1 and stack.queue_depth("JobsDeadLetterQueue") == 0
    assert (collision.claims_won, collision.claims_lost) == (1, 1)  # they did collide


def test_concurrent_workers_on_the_same_job_make_one_room(stack, whereby_sim, kommo_sim, atomic_dynamodb):
    """Four workers running the same job at once (a redelivery racing the first try): one room."""
    from bridge import runtime
    from bridge.kommo.deal_rooms import ClaimInProgress, DealPorts, run_job
    from bridge.kommo.jobs import ENSURE_ROOM, Job
    from bridge.store.meetings import MeetingsStore

    job = Job(ENSURE_ROOM, SUBDOMAIN, LEAD_ID, "status", DEMO_STATUS, 1615985846)
    store = MeetingsStore(runtime.settings().table_name)
    collision = Collision(store, parties=4)  # all four read the lead before any claims its slot
    ports = DealPorts(store=store, whereby=runtime.whereby(), kommo=runtime.kommo())
    outcomes: list[str] = []
    errors: list[Exception] = []

    def work() -> None:
        try:
            outcomes.append(run_job(job, runtime.settings(), ports))
        except Exception as exc:  # a loser fails and is retried by SQS; it must not create a room
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(whereby_sim.meetings()) == 1
    assert len(kommo_sim.notes(LEAD_ID)) == 1
    assert outcomes == ["created"], (outcomes, errors)
    assert [type(error) for error in errors] == [ClaimInProgress] * 3  # retried later by SQS, harmlessly
    assert (collision.claims_won, collision.claims_lost) == (1, 3)  # they did collide


def test_one_body_with_several_leads_opens_a_room_for_each(stack, whereby_sim, kommo_sim):
    leads = [101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112]
    status, answer = post(stack, multi_lead_body(leads))
    assert (status, answer) == (200, {"accepted": 12, "ignored": 0})
    stack.drain()
    assert len(whereby_sim.meetings()) == 12
    assert {note["entity_id"] for note in kommo_sim.notes()} == set(leads)


def test_entries_the_bridge_does_not_use_are_answered_as_ignored_one_each(stack, whereby_sim):
    # Two contacts added, one updated, a lead action the bridge does not act on, and two stray fields: six entries.
    others = b"&contacts[add][0][id]=7&contacts[add][1][id]=8&contacts[update][0][id]=9&leads[note][0][id]=10"
    status, answer = post(stack, multi_lead_body([5]) + others + b"&stray=1&unsorted[total]=1")
    assert (status, answer) == (200, {"accepted": 1, "ignored": 6})
    assert stack.queue_depth("JobsQueue") == 1


def test_the_jobs_a_delivery_enqueues_are_counted_for_the_dashboard(stack, whereby_sim, capsys):
    capsys.readouterr()
    status, answer = post(stack, multi_lead_body([201, 202, 203]) + b"&contacts[add][0][id]=7")
    assert (status, answer) == (200, {"accepted": 3, "ignored": 1})
    # The dashboard's "enqueued from webhooks" line: the jobs, not the entries Kommo sent.
    enqueued = [
        sum(record["JobsEnqueued"])
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and "JobsEnqueued" in (record := json.loads(line))
    ]
    assert enqueued == [3]


def test_a_webhook_that_names_its_account_only_by_id_is_matched_by_the_configured_id(stack, whereby_sim):
    # The README's KommoAccountId: "webhooks that carry account[id] but no subdomain are matched by it".
    body = multi_lead_body([301]).replace(f"account%5Bsubdomain%5D={SUBDOMAIN}&".encode(), b"")
    assert b"subdomain" not in body
    assert post(stack, body) == (200, {"accepted": 1, "ignored": 0})
    assert post(stack, body.replace(b"account%5Bid%5D=16503244", b"account%5Bid%5D=16503245"))[0] == 403


def test_a_deal_back_in_the_stage_after_its_room_ended_gets_a_new_room(stack, whereby_sim, kommo_sim):
    assert post(stack, multi_lead_body([401]))[0] == 200
    assert stack.drain().failed == 0
    [old] = rooms_in_table(stack)
    # Its time passed, and the sweeper has not deleted it yet.
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    table.update_item(
        Key={"pk": old["pk"], "sk": old["sk"]},
        UpdateExpression="SET end_at = :past",
        ExpressionAttributeValues={":past": 1_000},
    )
    later = multi_lead_body([401]).replace(b"1615985846", b"1615985906")
    assert post(stack, later) == (200, {"accepted": 1, "ignored": 0})
    assert stack.drain().failed == 0 and stack.queue_depth("JobsDeadLetterQueue") == 0
    states = {room["pk"]: room["state"] for room in rooms_in_table(stack)}
    assert states.pop(old["pk"]) == "deleted" and list(states.values()) == ["active"]
    assert len(kommo_sim.notes(401)) == 2


def test_a_stage_without_a_rule_is_acknowledged_and_ignored(stack, whereby_sim):
    status, answer = post(stack, multi_lead_body([5], status=999))
    assert (status, answer) == (200, {"accepted": 0, "ignored": 1})
    assert stack.queue_depth("JobsQueue") == 0


REFUSED_AS = {401: "token", 400: "malformed", 403: "other-account", 413: "too-large"}


@pytest.mark.parametrize(
    ("token", "body", "expected"),
    [
        ("wrong-token", STAGE_BODY, 401),
        (None, STAGE_BODY, 401),
        ("", STAGE_BODY, 401),
        (SECRET["kommo_webhook_token"], b"\xff\xfe garbage", 400),
        (SECRET["kommo_webhook_token"], b"hello world", 400),
        (SECRET["kommo_webhook_token"], b'{"leads": {"status": []}}', 400),
        (SECRET["kommo_webhook_token"], b"leads[status][0][id]=1&leads[status][0][status_id]=16525558", 400),
        (SECRET["kommo_webhook_token"], sample("05_add_2025.form"), 403),
        (SECRET["kommo_webhook_token"], b"a=" + b"x" * (1024 * 1024), 413),
    ],
    ids=[
        "wrong-token",
        "no-token",
        "empty-token",
        "not-utf8",
        "not-a-form",
        "json",
        "no-account",
        "other-account",
        "one-megabyte",
    ],
)
def test_bad_requests_get_a_clear_4xx_and_change_nothing(stack, whereby_sim, capsys, token, body, expected):
    capsys.readouterr()
    status, answer = post(stack, body, token=token)
    assert status == expected
    assert isinstance(answer["error"], str) and answer["error"]
    # Counted under its reason, which the dashboard's refusals line shows the operator (and once in the total).
    reasons = [
        record.get("reason")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and "WebhooksRejected" in (record := json.loads(line))
    ]
    assert sorted(reasons, key=str) == [None, REFUSED_AS[expected]]
    assert stack.queue_depth("JobsQueue") == 0
    stack.drain()
    assert whereby_sim.meetings() == []
    assert table_items(stack) == []


def test_a_body_that_is_no_kommo_webhook_is_answered_with_what_is_wrong_with_it(stack, whereby_sim):
    assert post(stack, b"\xff\xfe garbage") == (400, {"error": "body is not UTF-8"})
    assert post(stack, b"leads[status][0][id]=1") == (400, {"error": "no account in body"})


def stage_event(query: str) -> dict:
    """API Gateway's event for the stage webhook carrying STAGE_BODY, with ``query`` as its query string."""
    from devstack.lambda_events import http_api_event

    return http_api_event(
        "POST",
        "/kommo/stage",
        query=query,
        headers={"content-type": "application/x-www-form-urlencoded"},
        body=STAGE_BODY,
    )


def test_a_body_api_gateway_cannot_decode_gets_a_400_counted_as_malformed(stack, whereby_sim, capsys):

    event = stage_event(urlencode({"token": SECRET["kommo_webhook_token"]}))
    event.update(body="%%% not base64", isBase64Encoded=True)
    capsys.readouterr()
    answer = stack.invoke("KommoStageFunction", event)
    assert (answer["statusCode"], json.loads(answer["body"])) == (400, {"error": "body is not valid base64"})
    reasons = [
        record.get("reason")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and "WebhooksRejected" in (record := json.loads(line))
    ]
    assert sorted(reasons, key=str) == [None, "malformed"]
    assert stack.queue_depth("JobsQueue") == 0


def test_an_empty_configured_webhook_token_admits_nobody(stack, whereby_sim):
    from bridge import runtime
    from bridge.kommo.intake import IntakeRuntime, answer, stage_job_kind

    def deliver(query: str, tokens: tuple[str, ...]) -> int:
        route = IntakeRuntime(settings=runtime.settings, tokens=lambda: tokens, queue=runtime.job_queue)
        return answer(ApiRequest.of(stage_event(query)), stage_job_kind, route)["statusCode"]

    # The route itself, handed an empty token among the configured ones: no token, or an empty one, is no match.
    for query in ("", "token=", "token"):
        assert deliver(query, ("",)) == 401
        assert deliver(query, ("", SECRET["kommo_webhook_token"])) == 401
    # A secret whose token was left empty is a broken secret: Kommo is told to deliver again once it is fixed.
    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    secrets.put_secret_value(
        SecretId=stack.stack.refs["KommoWebhookSecret"], SecretString='{"kommo_webhook_token": ""}'
    )
    assert post(stack, STAGE_BODY, token=None) == (503, {"error": "temporarily unavailable, retry later"})
    assert post(stack, STAGE_BODY, token="")[0] == 503
    assert stack.queue_depth("JobsQueue") == 0
    assert whereby_sim.meetings() == [] and table_items(stack) == []


def test_no_secret_appears_in_logs_or_answers(stack, log_lines):
    answers = [post(stack, STAGE_BODY), post(stack, STAGE_BODY, token="wrong"), post(stack, b"\x00junk")]
    stack.drain()
    text = "\n".join(log_lines()) + json.dumps(answers)
    assert "kommo webhook accepted" in text  # the logs were captured at all
    for value in (
        SECRET["whereby_api_key"],
        SECRET["kommo_webhook_token"],
        SECRET["kommo_access_token"],
        *MATTERMOST_TOKENS,
    ):
        assert value not in text


def test_whereby_outage_is_retried_and_the_room_made_once_it_recovers(stack, whereby_sim, kommo_sim):
    whereby_sim.fail_next(3, status=503)  # every attempt of the worker's first try
    post(stack, STAGE_BODY)
    first = stack.drain(max_rounds=1)
    assert first.failed == 1
    assert whereby_sim.meetings() == []
    stack.drain()
    assert len(whereby_sim.meetings()) == 1
    assert len(kommo_sim.notes(LEAD_ID)) == 1


def test_kommo_down_after_the_room_was_made_posts_the_note_on_retry_without_a_second_room(
    stack, whereby_sim, kommo_sim
):
    kommo_sim.fail_next(3, status=502)
    post(stack, STAGE_BODY)
    assert stack.drain(max_rounds=1).failed == 1
    assert len(whereby_sim.meetings()) == 1
    stack.drain()
    assert len(whereby_sim.meetings()) == 1
    assert len(kommo_sim.notes(LEAD_ID)) == 1


def test_meeting_id_is_written_to_the_configured_custom_field(stack, whereby_sim, kommo_sim, monkeypatch):
    from bridge import runtime

    monkeypatch.setenv("KOMMO_MEETING_FIELD_ID", "884411")
    runtime.reset()
    post(stack, STAGE_BODY)
    stack.drain()
    meeting_id = whereby_sim.meetings()[0]["meetingId"]
    fields = kommo_sim.lead(LEAD_ID)["custom_fields_values"]
    assert [(f["field_id"], f["values"]) for f in fields] == [(884411, [{"value": meeting_id}])]
