"""Counts what AWS bills for the calls the local stack makes, by instrumenting botocore in this process.

While the meter is installed, every botocore session made (the functions' clients, Powertools' secrets client, the
harness's SQS poller) gets two event hooks: ``before-call`` notes the request and ``after-call`` turns request and
answer into billed units by each service's rules:

- SQS: one request per call and per 64 KB of payload (message bodies and attributes). Receives that found nothing
  are kept apart: in AWS they are the event source mapping's idle long polls, a cost of the month, not of a room.
- DynamoDB on demand: moto answers ReturnConsumedCapacity with constants, so the units come from item sizes by
  DynamoDB's rules. A write costs 1 WRU per KB of the larger of the item before and after it (twice in a
  transaction, also when a condition fails) plus the writes it causes in each global secondary index; a read costs
  1 RRU per 4 KB, half when eventually consistent; a query reads the items its key condition matches (its filter
  reduces nothing), summed and rounded up to 4 KB. The meter reads the items before and after each write itself;
  its own calls are neither counted nor timed.
- Secrets Manager and anything else: one request per call.

Each Lambda invocation is timed (wall time and this thread's CPU time, less the meter's own work) and is given the
bytes it logs and the EMF metrics it emits. Powertools caches secrets per container: here each function has its
own cache, emptied every ``invocations_per_container`` invocations, as a new container starts empty.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Self

import boto3
from botocore import handlers

from devstack.template import resources_of

ESM = "event source mapping"  # the harness playing Lambda's SQS poller
_OWN = "\0meter"  # the meter's own look-ups: not counted
CALLER: ContextVar[str] = ContextVar("aws_meter_caller", default="")
SQS_CHUNK = 64 * 1024
WRITE_UNIT = 1024
READ_UNIT = 4 * 1024
API_CHUNK = 512 * 1024  # HTTP APIs are metered in 512 KB increments
ONE_VCPU_MB = 1769  # Lambda gives a function one vCPU at 1,769 MB, and CPU in proportion to memory below that
WRITES = ("PutItem", "UpdateItem", "DeleteItem")


# ----- DynamoDB's item sizes and capacity units -----


def number_size(text: str) -> int:
    """A number takes about one byte per two significant digits, plus one; leading and trailing zeros are dropped."""
    mantissa = text.lower().split("e")[0].lstrip("+-").replace(".", "").strip("0")
    return math.ceil(len(mantissa) / 2) + 1


def _binary_size(value: Any) -> int:
    return len(value) if isinstance(value, bytes | bytearray) else len(base64.b64decode(value))


def value_size(value: Mapping[str, Any]) -> int:
    """Bytes of one DynamoDB JSON value such as ``{"S": "abc"}``."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        return number_size(raw)
    if kind == "B":
        return _binary_size(raw)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in raw)
    if kind == "NS":
        return sum(number_size(n) for n in raw)
    if kind == "BS":
        return sum(_binary_size(b) for b in raw)
    if kind == "L":  # 3 bytes for the list, 1 per element
        return 3 + sum(value_size(v) + 1 for v in raw)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in raw.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: Mapping[str, Any] | None) -> int:
    """An item's size: its attribute names and values (a missing item is 0)."""
    return sum(len(name.encode()) + value_size(value) for name, value in (item or {}).items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / WRITE_UNIT))


def read_units(size: int, consistent: bool) -> float:
    return max(1, math.ceil(size / READ_UNIT)) * (1.0 if consistent else 0.5)


@dataclass(frozen=True)
class Index:
    name: str
    keys: tuple[str, ...]
    projection: str  # ALL, KEYS_ONLY or INCLUDE
    include: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableShape:
    keys: tuple[str, ...]
    indexes: tuple[Index, ...] = ()

    def key_of(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in self.keys}

    def projected(self, index: Index, item: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The item as the index stores it, or None when the item is not in the index."""
        if not item or any(name not in item for name in index.keys):
            return None
        if index.projection == "ALL":
            return dict(item)
        names = {*self.keys, *index.keys, *(index.include if index.projection == "INCLUDE" else ())}
        return {name: value for name, value in item.items() if name in names}

    def index_write_units(self, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> int:
        """The writes a change of the item causes in the indexes: a put, a delete, both when its index key
        changed, or an update when only projected attributes did."""
        total = 0
        for index in self.indexes:
            before, after = self.projected(index, old), self.projected(index, new)
            if before is None and after is None:
                continue
            if before is None or after is None:
                total += write_units(item_size(before or after))
            elif any(before[name] != after[name] for name in index.keys):
                total += write_units(item_size(before)) + write_units(item_size(after))
            elif before != after:
                total += write_units(item_size(after))
        return total


def table_shapes(template: Mapping[str, Any], refs: Mapping[str, str]) -> dict[str, TableShape]:
    """Key schema and indexes of each table of the template, by the table's physical name."""
    shapes = {}
    for logical_id, resource in resources_of(template, "AWS::DynamoDB::Table").items():
        props = resource["Properties"]
        indexes = tuple(
            Index(
                name=gsi["IndexName"],
                keys=tuple(key["AttributeName"] for key in gsi["KeySchema"]),
                projection=gsi["Projection"]["ProjectionType"],
                include=tuple(gsi["Projection"].get("NonKeyAttributes", ())),
            )
            for gsi in props.get("GlobalSecondaryIndexes", [])
        )
        shapes[refs[logical_id]] = TableShape(tuple(key["AttributeName"] for key in props["KeySchema"]), indexes)
    return shapes


# ----- SQS -----


def message_bytes(message: Mapping[str, Any]) -> int:
    """The billed payload of one message: its body and its attributes' names, types and values."""
    body = message.get("MessageBody", message.get("Body", ""))
    size = len(body.encode())
    for name, attribute in (message.get("MessageAttributes") or {}).items():
        value = attribute.get("StringValue") or attribute.get("BinaryValue") or ""
        size += len(name.encode()) + len(attribute.get("DataType", "").encode()) + len(str(value).encode())
    return size


# ----- what was counted -----


@dataclass
class Call:
    caller: str  # a function's logical id, or ESM
    service: str  # botocore's name: sqs, dynamodb, secretsmanager
    operation: str
    requests: float = 1.0  # billed requests (SQS: one per 64 KB chunk)
    rru: float = 0.0
    wru: float = 0.0
    idle: bool = False  # an SQS receive that found nothing


@dataclass
class Invocation:
    function: str
    cold: bool  # the first of its emulated container
    wall: float = 0.0  # seconds
    cpu: float = 0.0  # seconds of this thread's CPU
    secret_reads: int = 0
    log_bytes: int = 0


class Usage(dict[str, float]):
    """Counts by name (``invocations:WorkerFunction``, ``wru``, ``sqs:ReceiveMessage`` ...), with arithmetic."""

    def plus(self, other: Mapping[str, float]) -> Usage:
        return Usage({key: self.get(key, 0.0) + other.get(key, 0.0) for key in {*self, *other}})

    def minus(self, other: Mapping[str, float]) -> Usage:
        return Usage({key: self.get(key, 0.0) - other.get(key, 0.0) for key in {*self, *other}})

    def times(self, factor: float) -> Usage:
        return Usage({key: value * factor for key, value in self.items()})

    def add(self, key: str, value: float) -> None:
        self[key] = self.get(key, 0.0) + value

    def by_prefix(self, prefix: str) -> dict[str, float]:
        return {key.removeprefix(prefix): value for key, value in sorted(self.items()) if key.startswith(prefix)}


@dataclass(frozen=True)
class Mark:
    calls: int
    invocations: int
    api_requests: int


# ----- the meter -----


class _CountingStream(io.TextIOBase):
    """Stands for the functions' stdout, as CloudWatch Logs would receive it."""

    def __init__(self, meter: AwsMeter) -> None:
        self._meter = meter

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._meter._logged(text)
        return len(text)


class AwsMeter:
    """``with AwsMeter() as meter:`` count the AWS calls of every botocore session made meanwhile."""

    def __init__(self, invocations_per_container: int = 10) -> None:
        self.invocations_per_container = invocations_per_container
        self.calls: list[Call] = []
        self.invocations: list[Invocation] = []
        self.api_requests: list[int] = []  # billed requests of each HTTP API request
        self.metrics: set[tuple[str, str, tuple[tuple[str, str], ...]]] = set()  # namespace, name, dimensions
        self.unpriced: Counter[str] = Counter()  # calls no billing rule here covers
        self.errors: list[str] = []  # the meter's own failures: they must not fail the function it watches
        self.tables: dict[str, TableShape] = {}
        self.memory: dict[str, int] = {}  # MB by function
        self._hooks = [("before-call", self._before_call), ("after-call", self._after_call)]
        self._installed = False
        self._saved_session: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._containers: dict[str, tuple[int, dict[Any, Any]]] = {}
        self._client: Any = None
        self.stream = _CountingStream(self)

    # lifecycle ---------------------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        # Every botocore session registers the built-in handlers when it is made (moto's mock adds its own the same
        # way), so sessions made from now on, whoever makes them, carry the hooks.
        handlers.BUILTIN_HANDLERS.extend(self._hooks)
        self._saved_session = boto3.DEFAULT_SESSION
        boto3.DEFAULT_SESSION = None  # boto3.client() makes a new default session, with the hooks
        self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._installed = False  # sessions made meanwhile keep the hooks: they do nothing from now on
        for hook in self._hooks:
            handlers.BUILTIN_HANDLERS.remove(hook)
        boto3.DEFAULT_SESSION = self._saved_session

    def attach(self, functions: Any, template: Mapping[str, Any], refs: Mapping[str, str]) -> None:
        """Time every invocation of a ``LocalFunctions``, count its HTTP API requests, learn the tables' shapes."""
        self.tables = table_shapes(template, refs)
        self.memory = memory_sizes(template)
        invoke, drain, request = functions.invoke, functions.drain, functions.request

        def timed_invoke(logical_id: str, event: dict[str, Any], timeout: float | None = None) -> Any:
            return self._invoke(logical_id, lambda: invoke(logical_id, event, timeout))

        def polling_drain(*args: Any, **kwargs: Any) -> Any:
            token = CALLER.set(ESM)
            try:
                return drain(*args, **kwargs)
            finally:
                CALLER.reset(token)

        def api_request(method: str, path: str, **kwargs: Any) -> Any:
            with self._lock:
                self.api_requests.append(max(1, math.ceil(len(kwargs.get("body", b"")) / API_CHUNK)))
            return request(method, path, **kwargs)

        # The harness's own methods call these through the instance, so the gateway and the pump go through them.
        functions.invoke, functions.drain, functions.request = timed_invoke, polling_drain, api_request

    @contextlib.contextmanager
    def capturing_logs(self, logger_name: str) -> Iterator[None]:
        """Send the functions' log lines and EMF metrics (Powertools writes both to stdout) to the meter."""
        handlers_ = [h for h in logging.getLogger(logger_name).handlers if isinstance(h, logging.StreamHandler)]
        saved = [(handler, handler.stream) for handler in handlers_]
        for handler in handlers_:
            handler.setStream(self.stream)
        try:
            with contextlib.redirect_stdout(self.stream):
                yield
        finally:
            for handler, stream in saved:
                handler.setStream(stream)

    # reading the counts ------------------------------------------------------------------------------------------
    def mark(self) -> Mark:
        with self._lock:
            return Mark(len(self.calls), len(self.invocations), len(self.api_requests))

    def usage_since(self, mark: Mark) -> Usage:
        with self._lock:
            calls, invocations = self.calls[mark.calls :], self.invocations[mark.invocations :]
            api = self.api_requests[mark.api_requests :]
        usage = Usage()
        for inv in invocations:
            share = max(1.0, ONE_VCPU_MB / self.memory.get(inv.function, ONE_VCPU_MB))
            usage.add(f"invocations:{inv.function}", 1)
            usage.add(f"wall_ms:{inv.function}", math.ceil(inv.wall * 1000))
            usage.add(f"est_ms:{inv.function}", math.ceil((inv.wall + inv.cpu * (share - 1)) * 1000))
            usage.add(f"log_bytes:{inv.function}", inv.log_bytes)
        usage.add("api_requests", sum(api))
        for call in calls:
            if call.service == "sqs":
                if call.idle:
                    usage.add("sqs_idle_receives", call.requests)
                    continue
                usage.add("sqs_requests", call.requests)
            elif call.service == "dynamodb":
                usage.add("rru", call.rru)
                usage.add("wru", call.wru)
            elif call.service == "secretsmanager":
                usage.add("secret_calls", call.requests)
            else:
                usage.add("other_requests", call.requests)
            usage.add(f"{call.service}:{call.operation}", 1)
        return usage

    def cold_secret_reads(self) -> dict[str, float]:
        """Secret reads of an invocation that finds the cache empty, by function (its cold invocations' mean)."""
        with self._lock:
            cold = [inv for inv in self.invocations if inv.cold]
        reads: dict[str, list[int]] = {}
        for inv in cold:
            reads.setdefault(inv.function, []).append(inv.secret_reads)
        return {function: sum(values) / len(values) for function, values in reads.items()}

    # invocations -------------------------------------------------------------------------------------------------
    def _invoke(self, function: str, run: Callable[[], Any]) -> Any:
        record = Invocation(function, cold=self._enter_container(function))
        state = self._local
        state.invocation, state.own_wall, state.own_cpu = record, 0.0, 0.0
        token = CALLER.set(function)
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return run()
        finally:
            record.wall = time.perf_counter() - wall - state.own_wall
            record.cpu = max(0.0, time.thread_time() - cpu - state.own_cpu)
            CALLER.reset(token)
            state.invocation = None
            with self._lock:
                self.invocations.append(record)

    def _enter_container(self, function: str) -> bool:
        """Give Powertools' secrets provider this function's cache; a new container's every n-th invocation."""
        from aws_lambda_powertools.utilities.parameters.base import DEFAULT_PROVIDERS
        from aws_lambda_powertools.utilities.parameters.secrets import SecretsProvider

        served, store = self._containers.get(function, (0, {}))
        cold = served % self.invocations_per_container == 0
        if cold:
            store = {}
        self._containers[function] = (served + 1, store)
        if "secrets" not in DEFAULT_PROVIDERS:
            DEFAULT_PROVIDERS["secrets"] = SecretsProvider()
        DEFAULT_PROVIDERS["secrets"].store = store
        return cold

    def _logged(self, text: str) -> None:
        invocation = getattr(self._local, "invocation", None)
        if invocation is None:
            return
        invocation.log_bytes += len(text.encode())
        if text.startswith('{"_aws"'):
            self._note_metrics(json.loads(text))

    def _note_metrics(self, document: Mapping[str, Any]) -> None:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"]:
                values = tuple((name, str(document.get(name, ""))) for name in dimensions)
                for metric in directive["Metrics"]:
                    with self._lock:
                        self.metrics.add((directive["Namespace"], metric["Name"], values))

    @contextlib.contextmanager
    def _own_work(self) -> Iterator[None]:
        """The meter's work inside an invocation: its AWS calls are not counted, its time is taken off."""
        state = self._local
        depth = getattr(state, "depth", 0)
        state.depth = depth + 1
        token = CALLER.set(_OWN)
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            CALLER.reset(token)
            state.depth = depth
            if depth == 0:
                state.own_wall = getattr(state, "own_wall", 0.0) + time.perf_counter() - wall
                state.own_cpu = getattr(state, "own_cpu", 0.0) + time.thread_time() - cpu

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    # the hooks ---------------------------------------------------------------------------------------------------
    def _before_call(self, model: Any, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        caller = CALLER.get()
        if not self._installed or caller in ("", _OWN):
            return  # the local stack's own set-up and checks, or the meter's look-ups
        with self._own_work(), self._guarded():
            request = _json(params.get("body"))
            note: dict[str, Any] = {"caller": caller, "request": request}
            if model.service_model.service_name == "dynamodb":
                note["before"] = [self._lookup(table, key) for table, key in self._written(model.name, request)]
            context["aws_meter"] = note

    def _after_call(self, http_response: Any, model: Any, context: Mapping[str, Any], **_: Any) -> None:
        note = context.get("aws_meter")
        if note is None or not self._installed:
            return
        with self._own_work(), self._guarded():
            call = Call(note["caller"], model.service_model.service_name, model.name)
            answer = _json(getattr(http_response, "content", b""))
            if call.service == "sqs":
                self._price_sqs(call, note["request"], answer)
            elif call.service == "dynamodb":
                self._price_dynamodb(call, note, answer)
            elif call.service == "secretsmanager":
                invocation = getattr(self._local, "invocation", None)
                if invocation is not None and call.operation == "GetSecretValue":
                    invocation.secret_reads += 1
            with self._lock:
                self.calls.append(call)

    # the services' billing rules ---------------------------------------------------------------------------------
    @staticmethod
    def _price_sqs(call: Call, request: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        if call.operation == "SendMessage":
            payload = message_bytes(request)
        elif call.operation == "SendMessageBatch":
            payload = sum(message_bytes(entry) for entry in request.get("Entries", []))
        elif call.operation == "ReceiveMessage":
            messages = answer.get("Messages") or []
            call.idle = not messages
            payload = sum(message_bytes(message) for message in messages)
        else:
            payload = 0
        call.requests = max(1, math.ceil(payload / SQS_CHUNK))

    def _price_dynamodb(self, call: Call, note: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        request = note["request"]
        if call.operation in (*WRITES, "TransactWriteItems"):
            factor = 2 if call.operation == "TransactWriteItems" else 1
            for (table, key), old in zip(self._written(call.operation, request), note["before"], strict=True):
                new = self._lookup(table, key)
                call.wru += factor * write_units(max(item_size(old), item_size(new)))
                call.wru += self.tables[table].index_write_units(old, new)
        elif call.operation == "GetItem":
            item = answer.get("Item")
            if "ProjectionExpression" in request:  # a projection reads (and costs) the whole item all the same
                item = self._lookup(request["TableName"], request["Key"])
            call.rru = read_units(item_size(item), bool(request.get("ConsistentRead")))
        elif call.operation == "Query":
            items = answer.get("Items") or []
            if {"FilterExpression", "ProjectionExpression", "Select"} & set(request):
                items = self._read_by_query(request)
            call.rru = read_units(sum(item_size(item) for item in items), bool(request.get("ConsistentRead")))
        else:
            self.unpriced[f"dynamodb {call.operation}"] += 1

    def _written(self, operation: str, request: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """(table, key) of each item a write request changes."""
        if operation in WRITES:
            actions = [request]
        elif operation == "TransactWriteItems":
            actions = [next(iter(action.values())) for action in request.get("TransactItems", [])]
        else:
            return []
        written = []
        for action in actions:
            table = action["TableName"]
            written.append((table, self.tables[table].key_of(action.get("Key") or action["Item"])))
        return written

    def _dynamodb(self) -> Any:
        if self._client is None:
            self._client = boto3.session.Session().client("dynamodb")
        return self._client

    def _lookup(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._dynamodb().get_item(TableName=table, Key=dict(key), ConsistentRead=True).get("Item")

    def _read_by_query(self, request: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The items a query reads: the same page of its key condition, without its filter or projection."""
        condition = request["KeyConditionExpression"]

        def used(name: str) -> bool:
            return re.search(re.escape(name) + r"(?![A-Za-z0-9_])", condition) is not None

        query = {
            name: request[name]
            for name in ("TableName", "IndexName", "KeyConditionExpression", "Limit", "ExclusiveStartKey")
            if name in request
        }
        query["ScanIndexForward"] = request.get("ScanIndexForward", True)
        query["ConsistentRead"] = request.get("ConsistentRead", False)
        names = {k: v for k, v in request.get("ExpressionAttributeNames", {}).items() if used(k)}
        values = {k: v for k, v in request.get("ExpressionAttributeValues", {}).items() if used(k)}
        if names:
            query["ExpressionAttributeNames"] = names
        if values:
            query["ExpressionAttributeValues"] = values
        return self._dynamodb().query(**query).get("Items", [])


def memory_sizes(template: Mapping[str, Any]) -> dict[str, int]:
    """MemorySize of each function (MB), its own or the Globals'."""
    default = int(template.get("Globals", {}).get("Function", {}).get("MemorySize", 128))
    return {
        logical_id: int(resource["Properties"].get("MemorySize", default))
        for logical_id, resource in resources_of(template, "AWS::Serverless::Function").items()
    }


def _json(body: Any) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
