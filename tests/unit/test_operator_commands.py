"""Operator commands: they act on the deployed stack in its region, explain the dead-letter queue, and remove the
stack without leaving a room behind."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from devstack.samconfig import SamConfigError, value
from tests.conftest import DEMO_STATUS
from tests.unit.test_close_and_sweep import post, status_body

ROOT = Path(__file__).resolve().parents[2]


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_operator_commands_use_the_stack_and_region_of_the_chosen_environment_not_the_shell_profile():
    done = make("-n", "outputs", "redrive", "why", "logs", "ENV=prod", AWS_DEFAULT_REGION="us-west-2")
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if "operations" in line or "sam logs" in line]
    assert len(commands) == 4
    for line in commands:
        assert "whereby-bridge-prod" in line and "eu-west-1" in line and "us-west-2" not in line


def test_stack_and_region_can_be_given_on_the_command_line():
    done = make("-n", "close-all", "STACK=bridge-eu", "REGION=eu-central-1")
    assert "--stack bridge-eu --region eu-central-1" in done.stdout


def test_an_unknown_environment_stops_the_command_before_aws_is_called():
    done = make("outputs", "ENV=staging")
    assert done.returncode == 2
    assert "environment 'staging' is not in samconfig.toml" in done.stderr
    assert "give ENV= one of its environments" in done.stderr


def test_the_answers_of_a_guided_deploy_win_over_the_hand_written_defaults(tmp_path):
    config = tmp_path / "samconfig.toml"
    config.write_text(
        'version = 0.1\n[default.global.parameters]\nstack_name = "whereby-bridge"\nregion = "eu-west-1"\n'
        '[default.deploy.parameters]\nstack_name = "sales-bridge"\nregion = "sa-east-1"\n'
    )
    assert value("default", "stack_name", config) == "sales-bridge"
    assert value("default", "region", config) == "sa-east-1"
    with pytest.raises(SamConfigError, match="no profile"):
        value("default", "profile", config)


# make why --------------------------------------------------------------------------------------------------------
def test_why_names_each_dead_lettered_job_and_its_reason(stack, whereby_sim):
    from devstack.operations import why

    whereby_sim.fail_next(1, status=400, method="POST")  # refused for good: its reason travels with the message
    post(stack, "/kommo/stage", status_body(1111, DEMO_STATUS, 1_767_225_000))
    stack.drain()
    sqs = boto3.client("sqs", region_name="eu-west-1")
    refs = stack.stack.refs
    # A job that failed five times carries no reason: it is in the worker's log.
    job = {"kind": "close_rooms", "account": "x", "lead_id": 2222, "action": "status", "status_id": 143, "event_at": 5}
    sqs.send_message(
        QueueUrl=refs["JobsDeadLetterQueue"],
        MessageBody=json.dumps(job),
        MessageGroupId="x:2222",
        MessageDeduplicationId="d",
    )
    logs = boto3.client("logs", region_name="eu-west-1")
    logs.create_log_group(logGroupName="/aws/lambda/worker")
    logs.create_log_stream(logGroupName="/aws/lambda/worker", logStreamName="s")
    lines = [
        {"message": "job failed, SQS will retry it", "lead_id": 3333, "reason": "another deal"},
        {"message": "job failed, SQS will retry it", "lead_id": 2222, "reason": "PeerUnavailable: kommo 503"},
    ]
    logs.put_log_events(
        logGroupName="/aws/lambda/worker",
        logStreamName="s",
        logEvents=[{"timestamp": int(time.time() * 1000), "message": json.dumps(line)} for line in lines],
    )
    report = why(sqs, logs, refs["JobsDeadLetterQueue"], "/aws/lambda/worker")
    assert len(report) == 2
    assert any("ensure_room for lead 1111" in line and "400" in line for line in report)
    assert any("close_rooms for lead 2222" in line and "kommo 503" in line for line in report)
    assert stack.queue_depth("JobsDeadLetterQueue") == 2  # only read: still there for make redrive


# make delete / close-all ---------------------------------------------------------------------------------------
def test_close_all_walks_the_whole_room_list_until_nothing_of_ours_is_left(stack, whereby_sim, monkeypatch):
    from bridge import runtime
    from bridge.whereby.client import RoomRequest, room_prefix
    from devstack.operations import close_everything

    monkeypatch.setenv("SWEEP_MAX_PAGES", "1")  # one page of 100 a run: the walk spans runs
    monkeypatch.setenv("SWEEP_MAX_DELETES", "60")
    runtime.reset()
    for lead in (1, 2, 3):
        post(stack, "/kommo/stage", status_body(lead, DEMO_STATUS, 1_767_225_000))
    stack.drain()
    store, whereby = runtime.store(), runtime.whereby()
    later = datetime.fromtimestamp(time.time() + 3600, UTC)
    foreign = whereby.create_meeting(RoomRequest(later, prefix="another-stacks-room-"))
    for _ in range(150):  # rooms of ours that no record owns: a crash, a lost answer
        whereby.create_meeting(RoomRequest(later, prefix=room_prefix("x", store.new_room_key())))
    assert len(whereby_sim.meetings()) == 154

    reports: list[str] = []
    done = close_everything(
        lambda: stack.invoke("SweeperFunction", {"mode": "close-all"}), sleep=lambda _: None, report=reports.append
    )
    assert done, reports
    assert [m["meetingId"] for m in whereby_sim.meetings()] == [foreign.meeting_id]
    assert len(reports) >= 4  # the deletes and the pages took several runs, and one clean walk at the end
