"""Writes the sample events of this folder (``.venv/bin/python -m events.generate`` from the repository root).

- ``kommo-stage-change.form`` is the real 2021 webhook (contracts sample 02) and is not generated: the others are
  derived from it or built like the contracts samples, for the same account and lead.
- The ``*.json`` files are the events AWS would deliver, built with ``devstack.lambda_events`` (the same code the
  gateway and the queue pump use), with the random ids and clock fixed so that regenerating changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from devstack import local  # puts the shared layer on sys.path
from devstack.lambda_events import http_api_event, sqs_event
from devstack.template import load_template

EVENTS = Path(__file__).resolve().parent
STAGE_FORM = EVENTS / "kommo-stage-change.form"
REQUEST_ID = "0d1f5e7c9a2b4c6d8e0f1a3b5c7d9e1f"
EVENT_MILLIS = 1615985847000  # a second after the sample's updated_at
LOST_AT = 1615989446  # an hour after the stage change, so the worker applies it after the room was opened
LOST_STATUS = 143  # "lost" exists in every Kommo pipeline


def stage_fields() -> dict[str, str]:
    return dict(parse_qsl(STAGE_FORM.read_text(), keep_blank_values=True))


def account_fields(stage: dict[str, str]) -> list[tuple[str, str]]:
    return [(key, value) for key, value in stage.items() if key.startswith("account[")]


def lost_form(stage: dict[str, str]) -> bytes:
    """Built like contracts sample 09 (account block first, the field set of sample 02) for the sample's lead."""
    lead = "leads[status][0]"
    fields = [
        ("id", stage[f"{lead}[id]"]),
        ("name", stage[f"{lead}[name]"]),
        ("status_id", str(LOST_STATUS)),
        ("old_status_id", stage[f"{lead}[status_id]"]),
        ("price", stage[f"{lead}[price]"]),
        ("responsible_user_id", stage[f"{lead}[responsible_user_id]"]),
        ("last_modified", str(LOST_AT)),
        ("modified_user_id", stage[f"{lead}[modified_user_id]"]),
        ("created_user_id", stage[f"{lead}[created_user_id]"]),
        ("date_create", stage[f"{lead}[date_create]"]),
        ("pipeline_id", stage[f"{lead}[pipeline_id]"]),
        ("account_id", stage[f"{lead}[account_id]"]),
        ("created_at", stage[f"{lead}[created_at]"]),
        ("updated_at", str(LOST_AT)),
    ]
    return urlencode(account_fields(stage) + [(f"{lead}[{key}]", value) for key, value in fields]).encode()


def delete_form(stage: dict[str, str]) -> bytes:
    """Built like contracts sample 07: a deleted lead carries only its id, status and pipeline."""
    lead = "leads[status][0]"
    fields = [
        ("leads[delete][0][id]", stage[f"{lead}[id]"]),
        ("leads[delete][0][status_id]", stage[f"{lead}[status_id]"]),
        ("leads[delete][0][pipeline_id]", stage[f"{lead}[pipeline_id]"]),
    ]
    return urlencode(account_fields(stage) + fields).encode()


def mattermost_body() -> bytes:
    """Built like contracts sample 01 (same fields, same order), for /whereby with the local command token."""
    fields = [
        ("channel_id", "fukxanjgjbnp7ng383at53k1sy"),
        ("channel_name", "town-square"),
        ("command", "/whereby"),
        ("response_url", "http://localhost:8066/hooks/commands/i11f6nnfgfyk8eg56x9omc6dpa"),
        ("team_domain", "team-awesome"),
        ("team_id", "wx4zz8t4ttgmtxqiwfohijayzc"),
        ("text", "Design review 30m"),
        ("token", local.LOCAL_SECRET["mattermost_tokens"]["wx4zz8t4ttgmtxqiwfohijayzc"][0]),
        (
            "trigger_id",
            "ZWZ5ZjRndzR4YmJxOHJlZWh4MXpkaHozbnI6ZXJqNnFjazNyZmd0dWpzODZ3NXI2cmNremg6MTY2MjA0MTY5Njg5Nj"
            "pNRVFDSUQ5cTZ3MkRHU1RaNjhyaDh1TGl1STlSVHh2R1czSXZ5aGVRYjhkWThuZnlBaUI2YnlPR2ZpWlczR1FmVkdIODlreEp4Mml"
            "VT0UxMm9LMjlkZ1d0RC8xbjZRPT0=",
        ),
        ("user_id", "erj6qck3rfgtujs86w5r6rckzh"),
        ("user_name", "alan"),
    ]
    return urlencode(fields).encode()


def stage_http_event(body: bytes) -> dict[str, Any]:
    """What the HTTP API hands KommoStageFunction for the sample webhook (form bodies arrive base64-encoded)."""
    event = http_api_event(
        "POST",
        "/kommo/stage",
        query=urlencode({"token": local.LOCAL_SECRET["kommo_webhook_token"]}),
        headers={
            "accept": "*/*",
            "content-length": str(len(body)),
            "content-type": "application/x-www-form-urlencoded",
            "host": "127.0.0.1:3000",
            "user-agent": "amoCRM-Webhooks/3.0",
        },
        body=body,
    )
    context = event["requestContext"]
    context.update(requestId=REQUEST_ID, time="17/Mar/2021:12:57:27 +0000", timeEpoch=EVENT_MILLIS)
    return event


def worker_sqs_event(stage: dict[str, str], template: dict[str, Any]) -> dict[str, Any]:
    """What the SQS event source mapping hands WorkerFunction: one ensure_room job for the sample's lead."""
    from bridge.kommo.jobs import ENSURE_ROOM, Job

    lead = "leads[status][0]"
    job = Job(
        ENSURE_ROOM,
        stage["account[subdomain]"],
        int(stage[f"{lead}[id]"]),
        "status",
        int(stage[f"{lead}[status_id]"]),
        int(stage[f"{lead}[updated_at]"]),
    )
    queue = next(t.queue for t in local.queue_triggers(template) if t.function == "WorkerFunction")
    queue_arn = f"arn:aws:sqs:{local.REGION}:123456789012:local-{queue}.fifo"  # as create_resources names it
    message = {
        "MessageId": "5b0ad2e4-8a8e-4b6e-9f3c-2d7c1e0a9b41",
        "ReceiptHandle": "AQEBlocal-sample-receipt-handle",
        "Body": job.to_json(),
        "MD5OfBody": hashlib.md5(job.to_json().encode()).hexdigest(),  # what SQS computes
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(EVENT_MILLIS),
            "SenderId": "AIDAIT2UOQQY3AUEKVGXU",
            "ApproximateFirstReceiveTimestamp": str(EVENT_MILLIS + 15),
            "SequenceNumber": "18861138745012345600",
            "MessageGroupId": job.group_id,
            "MessageDeduplicationId": job.dedup_id,
        },
    }
    return sqs_event([message], queue_arn)


def sweeper_input(template: dict[str, Any]) -> dict[str, Any]:
    """What EventBridge Scheduler hands SweeperFunction: the schedule's Input, verbatim."""
    return next(t.input for t in local.schedule_triggers(template) if t.function == "SweeperFunction")


def write_json(name: str, payload: dict[str, Any]) -> None:
    (EVENTS / name).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    template = load_template()
    stage = stage_fields()
    (EVENTS / "kommo-lost.form").write_bytes(lost_form(stage))
    (EVENTS / "kommo-delete.form").write_bytes(delete_form(stage))
    (EVENTS / "mattermost-command.body").write_bytes(mattermost_body())
    write_json("kommo-stage-change.http-api.json", stage_http_event(STAGE_FORM.read_bytes()))
    write_json("worker-ensure-room.sqs.json", worker_sqs_event(stage, template))
    write_json("sweeper-schedule.json", sweeper_input(template))


if __name__ == "__main__":
    main()
