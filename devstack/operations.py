"""Operator commands against a deployed stack (uses your AWS credentials): ``redrive``, ``outputs``, ``close-all``
and ``migrate-secrets``.

``python -m devstack.operations redrive --stack whereby-bridge`` moves every job waiting in the dead-letter queue
back to the job queue, keeping each message's group (so a deal's jobs stay in order); the local stack uses the same.
``close-all`` runs the sweeper with a clock past every room's end until no live room is left (before removing the
stack, so that no room outlives it).
``migrate-secrets`` moves the keys of the first version's single secret into the per-peer secrets (once, after the
update that introduced them); ``--team`` names the Mattermost team of a flat token list.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import boto3


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    answer = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    return {item["OutputKey"]: item["OutputValue"] for item in answer.get("Outputs", [])}


def redrive(sqs: Any, dlq_url: str, queue_url: str, visibility_timeout: int = 30) -> int:
    """Move every message of the dead-letter queue back to the queue; returns how many moved.

    Each keeps its body, attributes and MessageGroupId (so a deal's jobs stay in order) and gets a fresh
    deduplication id, since the original one may still be inside SQS's five-minute window and would be dropped.
    """
    moved = 0
    while True:
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=visibility_timeout,
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not messages:
            return moved
        for message in messages:
            sqs.send_message(QueueUrl=queue_url, **_resend_arguments(message))
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1


def _resend_arguments(message: Mapping[str, Any]) -> dict[str, Any]:
    arguments: dict[str, Any] = {"MessageBody": message["Body"]}
    group = message.get("Attributes", {}).get("MessageGroupId")
    if group:
        arguments["MessageGroupId"] = group
        arguments["MessageDeduplicationId"] = uuid.uuid4().hex
    if message.get("MessageAttributes"):
        arguments["MessageAttributes"] = message["MessageAttributes"]
    return arguments


def close_all(lambda_client: Any, function_name: str, max_runs: int = 200) -> int:
    """Run the sweeper in close-all mode until a whole walk of Whereby's list finds nothing of ours; 0 when it did."""

    def invoke() -> dict[str, Any]:
        answer = lambda_client.invoke(FunctionName=function_name, Payload=json.dumps({"mode": "close-all"}).encode())
        summary = json.loads(answer["Payload"].read() or b"{}")
        if answer.get("FunctionError"):
            raise RuntimeError(f"the sweeper failed: {summary}")
        return summary

    return 0 if close_everything(invoke, max_runs=max_runs) else 1


def close_everything(
    invoke: Callable[[], Mapping[str, Any]],
    max_runs: int = 200,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = print,
) -> bool:
    """Repeat close-all sweeps until one walk of Whereby's list, from its first page to its last, found nothing of
    ours to delete: every recorded room and every orphan is gone. A run covers a few pages and a capped number of
    deletes, so the walk spans runs; any deletion, failure or early stop on the way starts the count again.
    """
    clean = False
    for _ in range(max_runs):
        summary = invoke()
        report(f"sweep: {dict(summary)}")
        if summary.get("walk_from_start"):
            clean = True
        if any(summary.get(k) for k in ("deleted", "orphans", "failed", "completed", "stopped")):
            clean = False
        if clean and summary.get("walk_done"):
            report("Whereby's whole room list was walked and nothing of this stack is left.")
            return True
        if summary.get("stopped") in ("throttled", "budget"):
            sleep(30)  # Whereby's points budget refills each minute
    report(f"gave up after {max_runs} sweeps: rooms of this stack may be left; run it again")
    return False


def why(sqs: Any, logs: Any, dlq_url: str, worker_log_group: str, limit: int = 50) -> list[str]:
    """A line per job waiting in the dead-letter queue: what it is and why it failed.

    A job refused for good carries its reason as a message attribute; for one that failed five times, the reason is
    the worker's last "job failed" log line for that deal (the last day is searched).
    """
    lines: list[str] = []
    seen: set[str] = set()
    for message in _peek(sqs, dlq_url, limit):
        if message["MessageId"] in seen:
            continue
        seen.add(message["MessageId"])
        try:
            job = json.loads(message["Body"])
            what = f"{job['kind']} for lead {job['lead_id']} ({job['action']}, status {job.get('status_id')})"
        except (ValueError, KeyError, TypeError):
            job, what = {}, "not a job"
        reason = message.get("MessageAttributes", {}).get("reason", {}).get("StringValue")
        if reason is None and job.get("lead_id"):
            reason = _last_failure(logs, worker_log_group, int(job["lead_id"]))
        lines.append(f"{what}: {reason or 'no failure found in the last day of logs'}")
    return lines or ["the dead-letter queue is empty"]


def _peek(sqs: Any, queue_url: str, limit: int) -> list[dict[str, Any]]:
    """Read messages without taking them: each is made visible again at once."""
    found: list[dict[str, Any]] = []
    while len(found) < limit:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=5
        ).get("Messages", [])
        if not batch:
            break
        found += batch
    for message in found:
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    return found


def _last_failure(logs: Any, group: str, lead_id: int) -> str | None:
    events = logs.filter_log_events(
        logGroupName=group,
        startTime=int((time.time() - 86400) * 1000),
        filterPattern=f"{{ $.lead_id = {lead_id} && $.reason = * }}",
    ).get("events", [])
    for event in reversed(events):
        try:
            line = json.loads(event["message"])
        except ValueError:
            continue
        if line.get("lead_id") == lead_id and line.get("reason"):  # the pattern is a hint; the check is here
            return f"{line.get('message')}: {line['reason']}"
    return None


def test_alarm(cloudwatch: Any, alarm_name: str) -> str:
    """Set one alarm to ALARM, so the operator sees the page arrive; CloudWatch sets it back at its next check."""
    cloudwatch.set_alarm_state(
        AlarmName=alarm_name,
        StateValue="ALARM",
        StateReason="make test-alarm: checking that alarms reach their subscribers",
    )
    return (
        f"{alarm_name} is in ALARM now: the alarm topic's subscribers get a message within a minute. CloudWatch puts"
        " it back to OK at its next evaluation. No message? Confirm the subscription mail (see docs/runbook.md)."
    )


# Where each key of the first version's single secret lives now (output name of its secret).
MOVED_KEYS = {
    "whereby_api_key": "WherebySecretArn",
    "kommo_webhook_token": "KommoWebhookSecretArn",
    "mattermost_tokens": "MattermostSecretArn",
}


def migrate_secrets(secrets: Any, outputs: Mapping[str, str], team: str | None) -> list[str]:
    """Copy the moved keys out of the Kommo secret into their own secrets, then drop them from the Kommo secret.

    The webhook token is copied as it is, so the URLs configured in Kommo keep working. A flat Mattermost token
    list becomes ``{team: tokens}``; it needs ``team``. Values are never printed. Returns what was done.
    """
    source_id = outputs["KommoSecretArn"]
    source = json.loads(secrets.get_secret_value(SecretId=source_id)["SecretString"])
    flat = source.get("mattermost_tokens")
    if isinstance(flat, list | str):  # checked first, so that a refusal leaves every secret as it was
        tokens = [t.strip() for t in (flat.split(",") if isinstance(flat, str) else flat) if t.strip()]
        if tokens and not team:
            raise SystemExit(
                "mattermost_tokens is a flat list: give the team it belongs to with TEAM=<team id> (with several"
                ' teams, write {"<team id>": ["<token>"]} into the Mattermost secret by hand)'
            )
        source["mattermost_tokens"] = {team: tokens} if tokens and team else {}
    done: list[str] = []
    for key, output in MOVED_KEYS.items():
        if key not in source:
            continue
        value = source[key]
        target_id = outputs[output]
        target = json.loads(secrets.get_secret_value(SecretId=target_id)["SecretString"])
        if _filled(target.get(key)) and key != "kommo_webhook_token":
            done.append(f"{key}: already set in {output}, left as it is")
        else:
            target[key] = value
            secrets.put_secret_value(SecretId=target_id, SecretString=json.dumps(target))
            done.append(f"{key}: copied to {output}")
        del source[key]
    secrets.put_secret_value(SecretId=source_id, SecretString=json.dumps(source))
    done.append("the Kommo secret now holds only the Kommo API keys")
    return done


def _filled(value: object) -> bool:
    return bool(value) and value not in ("", [], {})


def prepare_removal(session: Any, outputs: Mapping[str, str], wait: Callable[[float], None] = time.sleep) -> int:
    """Before ``sam delete``: stop intake, empty the queues, close every room; 0 when nothing of ours is left."""
    lambda_client, sqs = session.client("lambda"), session.client("sqs")
    # 1. Nothing new comes in: every function but the sweeper is held at zero concurrency.
    for output in (
        "KommoStageFunctionName",
        "KommoCloseFunctionName",
        "MattermostCommandFunctionName",
        "KommoReconcileFunctionName",
        "WorkerFunctionName",
    ):
        lambda_client.put_function_concurrency(FunctionName=outputs[output], ReservedConcurrentExecutions=0)
        print(f"stopped {outputs[output]}")
    wait(65)  # a worker already running finishes (its timeout is 60 s) before the queues are emptied
    # 2. Queued jobs would make rooms after the clean-up: they are dropped (close-all deletes every room anyway).
    for output in ("JobsQueueUrl", "JobsDeadLetterQueueUrl"):
        sqs.purge_queue(QueueUrl=outputs[output])
        print(f"purged {outputs[output]}")
    # 3. Every room of this stack, recorded or orphaned, is deleted at Whereby.
    if close_all(lambda_client, outputs["SweeperFunctionName"]) != 0:
        print("rooms may be left at Whereby: the stack is kept; run make delete again")
        return 1
    print("nothing of this stack is left at Whereby")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "command",
        choices=["redrive", "outputs", "close-all", "migrate-secrets", "why", "test-alarm", "prepare-removal"],
    )
    parser.add_argument("--stack", default="whereby-bridge")
    parser.add_argument("--region", default=None)
    parser.add_argument("--team", default=None, help="migrate-secrets: the Mattermost team of a flat token list")
    args = parser.parse_args(argv)
    session = boto3.Session(region_name=args.region)
    outputs = stack_outputs(session.client("cloudformation"), args.stack)
    if args.command == "outputs":
        for key, value in sorted(outputs.items()):
            print(f"{key:<26} {value}")
        return 0
    if args.command == "close-all":
        return close_all(session.client("lambda"), outputs["SweeperFunctionName"])
    if args.command == "why":
        for line in why(
            session.client("sqs"), session.client("logs"), outputs["JobsDeadLetterQueueUrl"], outputs["WorkerLogGroup"]
        ):
            print(line)
        return 0
    if args.command == "test-alarm":
        print(test_alarm(session.client("cloudwatch"), outputs["TestAlarmName"]))
        return 0
    if args.command == "prepare-removal":
        return prepare_removal(session, outputs)
    if args.command == "migrate-secrets":
        for line in migrate_secrets(session.client("secretsmanager"), outputs, args.team):
            print(line)
        return 0
    sqs = session.client("sqs")
    moved = redrive(sqs, outputs["JobsDeadLetterQueueUrl"], outputs["JobsQueueUrl"])
    print(f"moved {moved} job(s) from the dead-letter queue back to the job queue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
