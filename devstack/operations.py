"""Operator commands against a deployed stack (uses your AWS credentials): ``redrive`` and ``outputs``.

``python -m devstack.operations redrive --stack whereby-bridge`` moves every job waiting in the dead-letter queue
back to the job queue, in order, with SQS's own message-move task (it keeps each message's group).
``close-all`` runs the sweeper with a clock past every room's end until no live room is left (before removing the
stack, so that no room outlives it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import boto3


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    answer = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    return {item["OutputKey"]: item["OutputValue"] for item in answer.get("Outputs", [])}


def queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def redrive(sqs: Any, dlq_url: str, queue_url: str, wait_seconds: float = 300) -> int:
    """Start a message-move task from the dead-letter queue to the job queue and wait for it; returns moved count."""
    task = sqs.start_message_move_task(SourceArn=queue_arn(sqs, dlq_url), DestinationArn=queue_arn(sqs, queue_url))
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        tasks = sqs.list_message_move_tasks(SourceArn=queue_arn(sqs, dlq_url), MaxResults=1)["Results"]
        current = next((t for t in tasks if t.get("TaskHandle") == task["TaskHandle"]), tasks[0] if tasks else {})
        if current.get("Status") in ("COMPLETED", "FAILED", "CANCELLED"):
            if current["Status"] != "COMPLETED":
                raise RuntimeError(f"redrive {current['Status'].lower()}: {current.get('FailureReason', '')}")
            return int(current.get("ApproximateNumberOfMessagesMoved", 0))
        time.sleep(2)
    raise TimeoutError("the redrive is still running; check it in the SQS console")


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
