"""The cost bench's counting (bench/aws_meter.py) and pricing (bench/cost.py), which `make cost` rests on."""

from __future__ import annotations

import boto3
import pytest

from bench.aws_meter import AwsMeter, Index, TableShape, Usage, item_size, read_units, write_units
from bench.cost import BillModel, bill, price
from tests.conftest import DEMO_STATUS, SECRET
from tests.kommo_bodies import status_body

FORM = {"content-type": "application/x-www-form-urlencoded"}
LEAD = 31_000_001


def test_one_stage_change_is_billed_one_sqs_send_and_its_room_claim_six_write_units(stack):
    with AwsMeter(invocations_per_container=1) as meter:
        meter.attach(stack, stack.template, stack.stack.refs)
        # The harness's poller plays Lambda's; made now, it carries the meter's hooks (the bench starts the meter
        # before the stack).
        stack.sqs = boto3.client("sqs", region_name="eu-west-1")
        start = meter.mark()
        answer = stack.request(
            "POST",
            "/kommo/stage",
            query=f"token={SECRET['kommo_webhook_token']}",
            headers=FORM,
            body=status_body(LEAD, DEMO_STATUS, 1_767_225_600),
        )
        intake = meter.usage_since(start)
        worker_start = meter.mark()
        assert stack.drain().processed == 1
        worker = meter.usage_since(worker_start)
        claims = [c for c in meter.calls if c.operation == "TransactWriteItems"]
    assert answer["statusCode"] == 200
    assert intake["invocations:KommoStageFunction"] == 1
    assert intake["api_requests"] == 1
    assert (intake["sqs:SendMessageBatch"], intake["sqs_requests"]) == (1, 1)
    assert intake["secret_calls"] == 1  # the webhook token, from an empty cache
    # The poller's receive and delete are billed; the worker sends nothing.
    assert (worker["sqs:ReceiveMessage"], worker["sqs:DeleteMessage"], worker["sqs_requests"]) == (1, 1, 2)
    # The claim writes the lead and the new room (both under 1 KB) in a transaction: 2 x 2 WRU, and the room enters
    # both indexes: 1 WRU each.
    assert [c.wru for c in claims] == [6]
    assert not meter.errors and not meter.unpriced


def test_item_sizes_and_units_follow_dynamodb_rules():
    item = {
        "pk": {"S": "ROOM#abc"},  # 2 + 8
        "n": {"N": "-123.40"},  # 1 + (4 significant digits: 2 bytes) + 1
        "ok": {"BOOL": True},  # 2 + 1
        "tags": {"L": [{"S": "a"}, {"S": "bc"}]},  # 4 + 3 + (1 + 1) + (2 + 1)
        "m": {"M": {"k": {"S": "v"}}},  # 1 + 3 + (1 + 1 + 1)
    }
    assert item_size(item) == 10 + 4 + 3 + 12 + 7
    assert [write_units(1024), write_units(1025), write_units(0)] == [1, 2, 1]
    assert [read_units(4096, True), read_units(4097, True), read_units(4097, False)] == [1, 2, 1]
    shape = TableShape(("pk",), (Index("by_end", ("bucket", "end"), "KEYS_ONLY"),))
    old = {"pk": {"S": "a"}, "bucket": {"S": "b"}, "end": {"N": "1"}, "note": {"S": "x" * 2000}}
    moved = {**old, "end": {"N": "2"}}
    assert shape.index_write_units(None, old) == 1  # enters the index: a put of its keys only
    assert shape.index_write_units(old, moved) == 2  # its index key changed: a delete and a put
    assert shape.index_write_units(old, {**old, "note": {"S": "y"}}) == 0  # nothing the index holds changed
    assert shape.index_write_units(old, {"pk": {"S": "a"}}) == 1  # left the index: a delete


def test_a_known_call_mix_costs_what_the_list_prices_make_it_by_hand():
    usage = Usage(
        {
            "invocations:WorkerFunction": 2,
            "est_ms:WorkerFunction": 1000,  # both together
            "log_bytes:WorkerFunction": 1000,
            "api_requests": 1,
            "sqs_requests": 3,
            "rru": 4,
            "wru": 10,
        }
    )
    model = BillModel(
        memory={"WorkerFunction": 512},
        init_seconds={"WorkerFunction": 0.5},
        cold_secret_reads={"WorkerFunction": 2},
        invocations_per_container=4,
        platform_log_bytes=100,
        init_log_bytes=20,
        access_log_bytes=50,
    )
    # 2 invocations in containers of 4: half a cold start. 1 s at 0.5 GB, plus 0.5 x 0.5 s INIT at 0.5 GB.
    gb_s = 1.0 * 0.5 + 0.5 * 0.5 * 0.5
    # Output, START/END/REPORT of 2 invocations, half an Init Duration, one access-log line.
    logged = 1000 + 2 * 100 + 0.5 * 20 + 1 * 50
    assert bill(usage, model) == pytest.approx(
        {
            "Lambda requests": 2 * price("lambda_request"),
            "Lambda duration": gb_s * price("lambda_gb_s"),
            "API Gateway HTTP API": 1 * price("api_request"),
            "SQS FIFO": 3 * price("sqs_fifo_request"),
            "DynamoDB on demand": 4 * price("dynamodb_rru") + 10 * price("dynamodb_wru"),
            "Secrets Manager calls": 0.5 * 2 * price("secrets_call"),
            "CloudWatch Logs ingestion": logged / 1024**3 * price("logs_gb"),
        }
    )
    assert gb_s * price("lambda_gb_s") == pytest.approx(8.333375e-6)  # 0.625 GB-s at $0.0000133334
