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
from collections.abc import Mapping
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


def close_all(lambda_client: Any, function_name: str, max_runs: int = 100) -> int:
    """Invoke the sweeper in close-all mode until a run deletes nothing more; each run is capped by its budget."""
    for _ in range(max_runs):
        answer = lambda_client.invoke(FunctionName=function_name, Payload=json.dumps({"mode": "close-all"}).encode())
        summary = json.loads(answer["Payload"].read() or b"{}")
        print(f"sweep: {summary}")
        if answer.get("FunctionError"):
            return 1
        if not summary.get("stopped") and summary.get("deleted", 0) == 0:
            return 0
        if summary.get("stopped") == "throttled":
            time.sleep(30)  # Whereby's points budget refills each minute
    return 1


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["redrive", "outputs", "close-all", "migrate-secrets"])
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
