"""Runs the template's functions in this process: routes to handlers, and the job queue drained into the worker.

It plays the part of API Gateway and of the SQS event source mapping: successful messages are deleted, failed
ones (``batchItemFailures``) are made visible again, and SQS's redrive policy moves a message that keeps failing
to the dead-letter queue, as in AWS.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from devstack.lambda_events import LambdaContext, http_api_event, load_handler, sqs_event
from devstack.template import Stack, environment, functions, route_pattern, routes

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
        # Routes with path parameters ("/recordings/{id}"), tried when no route matches the path as it is.
        self._patterns = [(route, route_pattern(route.path)) for route in routes(template) if "{" in route.path]

    def match(self, method: str, path: str) -> tuple[str, str, dict[str, str]] | None:
        """The function, the route's path (its template, as API Gateway's routeKey has it) and the path parameters."""
        method = method.upper()
        function = self.routes.get((method, path))
        if function is not None:
            return function, path, {}
        for route, pattern in self._patterns:
            found = pattern.fullmatch(path)
            if route.method == method and found:
                return route.function, route.path, found.groupdict()
        return None

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
        matched = self.match(method, path)
        if matched is None:
            return {"statusCode": 404, "headers": {"content-type": "application/json"}, "body": NOT_FOUND}
        function, route_path, parameters = matched
        event = http_api_event(
            method.upper(),
            path,
            route_key=f"{method.upper()} {route_path}",
            query=query,
            headers=headers,
            body=body,
            path_parameters=parameters,
        )
        return self.invoke(function, event)

    def drain(
        self,
        queue: str = "JobsQueue",
        function: str = "WorkerFunction",
        max_rounds: int = 100,
        timeout: float | None = None,
        workers: int = 1,
        deliver_twice: bool = False,
    ) -> DrainResult:
        """Feed the queue to the worker until it is empty (or ``max_rounds`` batches ran).

        ``workers`` runs that many workers at once, as the event source mapping does up to its MaximumConcurrency;
        a message that failed then comes back once the tries running at that moment have ended, as its visibility
        timeout outlasts an invocation. ``deliver_twice`` also hands each new batch to a second worker while the
        first still runs it: SQS and Lambda deliver at least once, and now and then twice.
        """
        if workers > 1:
            return _Workers(self, queue, function, max_rounds, timeout, deliver_twice).run(workers)
        if deliver_twice:
            raise ValueError("deliver_twice needs a second worker: workers >= 2")
        url = self.stack.refs[queue]
        processed = failed = 0
        for _ in range(max_rounds):
            messages = self._receive(url)
            if not messages:
                break
            for message, ok in self._run_batch(queue, function, messages, timeout):
                if ok:
                    processed += 1
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                else:
                    failed += 1
                    self.sqs.change_message_visibility(
                        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )
        return DrainResult(processed, failed)

    def _receive(self, url: str) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=0
        )
        messages: list[dict[str, Any]] = answer.get("Messages", [])
        return messages

    def _run_batch(
        self, queue: str, function: str, messages: list[dict[str, Any]], timeout: float | None
    ) -> list[tuple[dict[str, Any], bool]]:
        """Invoke the function with one batch; each message with whether it succeeded."""
        arn = self.stack.attributes[(queue, "Arn")]
        try:
            answer = self.invoke(function, sqs_event(messages, arn), timeout) or {}
            failures = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
        except Exception:  # an invocation error: the event source mapping retries the whole batch
            failures = {message["MessageId"] for message in messages}
        return [(message, message["MessageId"] not in failures) for message in messages]

    def queue_depth(self, queue: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.stack.refs[queue],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


class _Workers:
    """Several workers draining one queue at once (``LocalFunctions.drain(workers=n)``)."""

    POLL_SECONDS = 0.02  # how long an idle worker waits before it looks again while others still run

    def __init__(
        self,
        functions: LocalFunctions,
        queue: str,
        function: str,
        max_rounds: int,
        timeout: float | None,
        deliver_twice: bool,
    ) -> None:
        self.functions = functions
        self.queue = queue
        self.function = function
        self.url = functions.stack.refs[queue]
        self.rounds_left = max_rounds
        self.timeout = timeout
        self.deliver_twice = deliver_twice
        self.state = threading.Condition()
        self.busy = 0
        self.retry_later: list[str] = []  # receipt handles of failed messages, visible again once nobody runs
        self.processed = self.failed = 0
        self.errors: list[BaseException] = []
        self.sqs_lock = threading.Lock()  # the harness's own SQS calls, one at a time, as moto's are not atomic

    def run(self, workers: int) -> DrainResult:
        threads = [threading.Thread(target=self._work, name=f"worker-{i}") for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise self.errors[0]
        return DrainResult(self.processed, self.failed)

    def _work(self) -> None:
        try:
            while self._next_batch():
                pass
        except BaseException as exc:  # reported by run(); the other workers must not wait for this one
            with self.state:
                self.errors.append(exc)
                self.rounds_left = 0
                self.state.notify_all()

    def _next_batch(self) -> bool:
        """Receive and run one batch; False when this worker is done."""
        with self.state:
            if self.rounds_left <= 0:
                return False
            self.busy += 1
        with self.sqs_lock:
            messages = self.functions._receive(self.url)
            if self.deliver_twice:
                for message in messages:
                    if message.get("Attributes", {}).get("ApproximateReceiveCount") == "1":
                        self._show_again(message["ReceiptHandle"])
        if messages:
            with self.state:
                self.rounds_left -= 1
                self.state.notify_all()  # a batch delivered twice waits for its second worker
            outcomes = self.functions._run_batch(self.queue, self.function, messages, self.timeout)
            with self.sqs_lock:
                for message, ok in outcomes:
                    if ok:
                        self.functions.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
            with self.state:
                self.processed += sum(ok for _, ok in outcomes)
                self.failed += sum(not ok for _, ok in outcomes)
                self.retry_later += [message["ReceiptHandle"] for message, ok in outcomes if not ok]
        with self.state:
            self.busy -= 1
            self.state.notify_all()
            if messages:
                return True
            if self.busy:
                self.state.wait(self.POLL_SECONDS)  # another worker may yet fail a message or deliver one twice
                return True
            if self.retry_later:
                handles, self.retry_later = self.retry_later, []
                with self.sqs_lock:
                    for handle in handles:
                        self._show_again(handle)
                return True
            return False

    def _show_again(self, receipt_handle: str) -> None:
        with contextlib.suppress(ClientError):  # deleted meanwhile: the other delivery of it succeeded
            self.functions.sqs.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=receipt_handle, VisibilityTimeout=0
            )
