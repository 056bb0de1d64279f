"""Operator commands against a deployed stack (uses your AWS credentials): ``redrive`` and ``outputs``.

``python -m devstack.operations redrive --stack whereby-bridge`` moves every job waiting in the dead-letter queue
back to the job queue, keeping each message's group (so a deal's jobs stay in order); the local stack uses the same.
``close-all`` runs the sweeper with a clock past every room's end until no live room is left (before removing the
stack, so that no room outlives it).
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
        if summary.get("stopped") in ("throttled", "budget"):
            time.sleep(30)  # Whereby's points budget (and the stack's count of it) refills each minute
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["redrive", "outputs", "close-all"])
    parser.add_argument("--stack", default="whereby-bridge")
    parser.add_argument("--region", default=None)
    args = parser.parse_args(argv)
    session = boto3.Session(region_name=args.region)
    outputs = stack_outputs(session.client("cloudformation"), args.stack)
    if args.command == "outputs":
        for key, value in sorted(outputs.items()):
            print(f"{key:<26} {value}")
        return 0
    if args.command == "close-all":
        return close_all(session.client("lambda"), outputs["SweeperFunctionName"])
    sqs = session.client("sqs")
    moved = redrive(sqs, outputs["JobsDeadLetterQueueUrl"], outputs["JobsQueueUrl"])
    print(f"moved {moved} job(s) from the dead-letter queue back to the job queue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
