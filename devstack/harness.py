"""Runs the template's functions in this process: routes to handlers, and the job queue drained into the worker.

It plays the part of API Gateway and of the SQS event source mapping: successful messages are deleted, failed
ones (``batchItemFailures``) are made visible again, and SQS's redrive policy moves a message that keeps failing
to the dead-letter queue, as in AWS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devstack.lambda_events import LambdaContext, http_api_event, load_handler, sqs_event
from devstack.template import Stack, environment, functions, routes

NOT_FOUND = '{"message":"Not Found"}'  # what API Gateway answers for a route it does not have


@dataclass(frozen=True)
class DrainResult:
    processed: int
    failed: int


class LocalFunctions:
    def __init__(self, template: Mapping[str, Any], stack: Stack, sqs: Any) -> None:
        self.template = template
        self.stack = stack
        self.sqs = sqs
        self.specs = functions(template)
        self.routes = {(route.method, route.path): route.function for route in routes(template)}

    def environment(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for spec in self.specs.values():
            merged.update(environment(spec, self.stack))
        return merged

    def apply_environment(self, extra: Mapping[str, str] | None = None) -> None:
        """Put the functions' environment into this process (they share one: the template's Globals)."""
        os.environ.update(self.environment())
        os.environ.update(extra or {})
        # Imported only now: Powertools reads its settings (log level, service) from the environment at import.
        from bridge import runtime

        runtime.reset()

    def invoke(self, logical_id: str, event: dict[str, Any], timeout: float | None = None) -> Any:
        """Run a function's handler; ``timeout`` (seconds) overrides the template's, as a shorter invocation."""
        spec = self.specs[logical_id]
        handler = load_handler(spec.code_dir, spec.handler, logical_id)
        seconds = spec.timeout if timeout is None else timeout
        return handler(event, LambdaContext(function_name=logical_id, timeout_seconds=seconds))

    def request(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> dict[str, Any]:
        """An HTTP request through the route table, as API Gateway would deliver it; 404 for unknown routes."""
        function = self.routes.get((method.upper(), path))
        if function is None:
            return {"statusCode": 404, "headers": {"content-type": "application/json"}, "body": NOT_FOUND}
        event = http_api_event(method.upper(), path, query=query, headers=headers, body=body)
        return self.invoke(function, event)

    def drain(
        self,
        queue: str = "JobsQueue",
        function: str = "WorkerFunction",
        max_rounds: int = 100,
        timeout: float | None = None,
    ) -> DrainResult:
        """Feed the queue to the worker until it is empty (or ``max_rounds`` batches ran)."""
        url = self.stack.refs[queue]
        arn = self.stack.attributes[(queue, "Arn")]
        processed = failed = 0
        for _ in range(max_rounds):
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                break
            try:
                answer = self.invoke(function, sqs_event(messages, arn), timeout) or {}
                failures = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
            except Exception:  # an invocation error: the event source mapping retries the whole batch
                failures = {message["MessageId"] for message in messages}
            for message in messages:
                if message["MessageId"] in failures:
                    failed += 1
                    self.sqs.change_message_visibility(
                        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )
                else:
                    processed += 1
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return DrainResult(processed, failed)

    def queue_depth(self, queue: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.stack.refs[queue],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])
