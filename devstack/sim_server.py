"""Shared base of the HTTP simulators: a threaded server, a request log, JSON helpers and fault injection.

A subclass implements the service itself (`_authorized`, `_route`, the error and fault bodies); this module
does everything around it. Requests under `/_sim/` are control calls: they skip auth, latency, faults and
the request log.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from devstack.lifecycle import StartStop

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
CONTROL_PREFIX = "/_sim/"
FAULT_KINDS_NAMED = ("timeout", "html")
# How a fault's wait is told: a Retry-After in seconds, a Retry-After as an HTTP date that far ahead (RFC 9110
# allows both), or only in the body (Whereby's data.msLeft; other peers then say nothing).
RETRY_AFTER_FORMS = ("seconds", "date", "body")
PASS_THROUGH = -1  # the status of a queued placeholder fault: that request is answered normally


@dataclass(frozen=True)
class Response:
    """What a simulator answers. Status 0 means: send nothing and close the connection."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


DROP = Response(0)


def json_response(
    status: int, payload: Any, content_type: str = JSON_TYPE, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return Response(status, body, content_type, dict(headers or {}))


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def html_error(status: int) -> Response:
    """The bare HTML page a reverse proxy (nginx) serves for an error status."""
    text = f"{status} {status_phrase(status)}"
    return Response(status, f"<html><body><h1>{text}</h1></body></html>".encode(), HTML_TYPE)


def empty_response(status: int = 204) -> Response:
    return Response(status)


class SimError(Exception):
    """Raised by request handlers; the simulator renders it in its own error format."""

    def __init__(self, status: int, detail: str, issues: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.issues = issues or []


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query_lists: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def query(self) -> dict[str, str]:
        return {key: values[-1] for key, values in self.query_lists.items()}

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)

    def bearer_token(self) -> str | None:
        scheme, _, token = (self.header("Authorization") or "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    def lenient_json(self) -> Any:
        """The body as JSON for the request log, or None if it is not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def json_body(self, *, unsupported_status: int = 415) -> Any:
        """The body as JSON; a wrong Content-Type or unparsable body raises SimError."""
        media_type = (self.header("Content-Type") or "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise SimError(unsupported_status, "Content-Type must be application/json")
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise SimError(400, f"Request body is not valid JSON: {exc}") from exc


@dataclass(frozen=True)
class Fault:
    status: int
    retry_after: float | None = None
    delay: float = 0.0
    method: str | None = None
    html: bool = False
    lost_answer: bool = False  # carry the request out, then drop the connection: the peer acted, the caller never heard
    retry_after_as: str = "seconds"  # one of RETRY_AFTER_FORMS

    def matches(self, method: str) -> bool:
        return self.method is None or self.method.upper() == method.upper()


def check_fault_kind(kind: str) -> None:
    if kind in FAULT_KINDS_NAMED:
        return
    if not (kind.isdigit() and 400 <= int(kind) <= 599):
        raise ValueError(f"unknown fault kind {kind!r}: use an HTTP status like '500', 'timeout' or 'html'")


ControlHandler = Callable[[Request], Response]


class SimServer(StartStop):
    """Base class: lifecycle, request log, latency and fault injection, control endpoints."""

    # Retry-After (seconds) sent with 429s drawn by set_fault_rate; None sends no header.
    random_retry_after: float | None = None

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.latency: float = 0.0
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _SimHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log: list[dict[str, Any]] = []
        self._faults: list[Fault] = []
        self._fault_rate = 0.0
        self._fault_rng = random.Random(0)
        self._fault_kinds: tuple[str, ...] = ()
        self._timeout_delay = 2.0

    # ----- lifecycle -----

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _SimHTTPServer((self.host, self.port), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes requests sleeping on latency or a fault delay
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def root_url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ----- inspection and control -----

    def requests_seen(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._log)

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._faults.clear()
            self._fault_rate = 0.0
            self.latency = 0.0
            self._reset_state()

    def reset_faults(self) -> None:
        """Forget the faults not yet consumed and switch random faults off; state and the request log stay."""
        with self._lock:
            self._faults.clear()
            self._fault_rate = 0.0

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        retry_after: float | None = None,
        delay: float = 0.0,
        method: str | None = None,
        after: int = 0,
        lost_answer: bool = False,
        retry_after_as: str = "seconds",
    ) -> None:
        """The next n requests (of `method`, if given) get `status` after sleeping `delay` seconds.

        status=0 answers nothing and closes the connection. `retry_after` adds a Retry-After header
        (and, on a Whereby 429, sets data.msLeft; without it msLeft is 1000); `retry_after_as="date"` sends
        the header as the HTTP date that many seconds ahead, `"body"` sends no header (only msLeft). `after`
        lets that many requests (of `method`) through first, for a fault in the middle of a conversation.
        `lost_answer=True` (with status 0) carries the request out first: the answer is lost, as when a caller
        crashes or times out after the peer acted.
        """
        if lost_answer and status != 0:
            raise ValueError("lost_answer=True loses the answer: use it with status=0")
        if status != 0 and not 100 <= status <= 599:
            raise ValueError(f"status must be 0 (no answer) or an HTTP status, not {status}")
        if n < 0 or after < 0 or delay < 0 or (retry_after is not None and retry_after < 0):
            raise ValueError("n, after, delay and retry_after must not be negative")
        if retry_after_as not in RETRY_AFTER_FORMS:
            raise ValueError(f"retry_after_as must be one of {RETRY_AFTER_FORMS}, not {retry_after_as!r}")
        method = method.upper() if method else None
        fault = Fault(status, retry_after, delay, method, lost_answer=lost_answer, retry_after_as=retry_after_as)
        with self._lock:
            self._faults.extend([Fault(PASS_THROUGH, method=method)] * after + [fault] * n)

    def set_fault_rate(
        self,
        rate: float,
        seed: int = 0,
        kinds: tuple[str, ...] = ("500", "429", "timeout"),
        timeout_delay: float = 2.0,
    ) -> None:
        """Random faults on `rate` of the requests. kinds: HTTP statuses ("500", "429", ...), "timeout"
        (no answer after `timeout_delay` s) or "html" (502 with an HTML body); `seed` makes the draw repeatable.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        for kind in kinds:
            check_fault_kind(kind)
        if rate > 0 and not kinds:
            raise ValueError("kinds must not be empty")
        with self._lock:
            self._fault_rate = rate
            self._fault_rng = random.Random(seed)
            self._fault_kinds = tuple(kinds)
            self._timeout_delay = timeout_delay

    # ----- hooks for subclasses -----

    def _reset_state(self) -> None:
        raise NotImplementedError

    def _authorized(self, request: Request) -> bool:
        raise NotImplementedError

    def _unauthorized(self) -> Response:
        raise NotImplementedError

    def _route(self, request: Request) -> Response:
        raise NotImplementedError

    def _error_response(self, error: SimError) -> Response:
        raise NotImplementedError

    def _fault_body(self, fault: Fault) -> Response:
        raise NotImplementedError

    def _admit(self, request: Request) -> Response | None:
        """Gatekeeping before auth (e.g. a rate limiter); None lets the request through."""
        return None

    def _extra_control_routes(self) -> dict[tuple[str, str], ControlHandler]:
        return {}

    # ----- request pipeline (runs in the server's handler threads) -----

    def handle(self, request: Request) -> Response:
        if request.path.startswith(CONTROL_PREFIX):
            return self._handle_control(request)
        entry = self._log_arrival(request)
        self._sleep(self.latency)
        fault = self._take_fault(request.method)
        if fault is not None and fault.lost_answer:
            with self._lock:
                entry["status"] = self._answer(request).status
            self._sleep(fault.delay)
            return DROP
        if fault is not None and fault.status != PASS_THROUGH:
            self._set_logged_status(entry, fault.status)
            self._sleep(fault.delay)
            return DROP if fault.status == 0 else self._fault_response(fault)
        with self._lock:
            response = self._answer(request)
            entry["status"] = response.status
        return response

    def _answer(self, request: Request) -> Response:
        try:
            gate = self._admit(request)
            if gate is not None:
                return gate
            if not self._authorized(request):
                return self._unauthorized()
            return self._route(request)
        except SimError as error:
            return self._error_response(error)
        except Exception as exc:  # a simulator bug: answer it rather than drop the connection
            return json_response(500, {"error": f"simulator error: {exc!r}"})

    def _log_arrival(self, request: Request) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "at": time.monotonic(),  # arrival, to measure the spacing of a client's calls
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": dict(request.headers),
            "json": request.lenient_json(),
            "status": None,
        }
        with self._lock:
            self._log.append(entry)
        return entry

    def _set_logged_status(self, entry: dict[str, Any], status: int) -> None:
        with self._lock:
            entry["status"] = status

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(method):
                    return self._faults.pop(index)
            if self._fault_rate > 0 and self._fault_rng.random() < self._fault_rate:
                return self._fault_for_kind(self._fault_rng.choice(self._fault_kinds))
        return None

    def _fault_for_kind(self, kind: str) -> Fault:
        if kind == "timeout":
            return Fault(0, delay=self._timeout_delay)
        if kind == "html":
            return Fault(502, html=True)
        status = int(kind)
        return Fault(status, retry_after=self.random_retry_after if status == 429 else None)

    def _fault_response(self, fault: Fault) -> Response:
        response = self._fault_body(fault)
        if fault.retry_after is None or fault.retry_after_as == "body":
            return response
        if fault.retry_after_as == "date":
            header = formatdate(time.time() + fault.retry_after, usegmt=True)
        else:
            header = f"{fault.retry_after:g}"
        headers = {**response.headers, "Retry-After": header}
        return Response(response.status, response.body, response.content_type, headers)

    # ----- control endpoints -----

    def _handle_control(self, request: Request) -> Response:
        routes = {**self._base_control_routes(), **self._extra_control_routes()}
        handler = routes.get((request.method, request.path))
        if handler is None:
            return json_response(404, {"error": f"no control endpoint {request.method} {request.path}"})
        try:
            return handler(request)
        except SimError as error:
            return json_response(error.status, {"error": error.detail})
        except (TypeError, ValueError, AttributeError) as exc:
            return json_response(400, {"error": str(exc)})

    def _base_control_routes(self) -> dict[tuple[str, str], ControlHandler]:
        return {
            ("GET", "/_sim/requests"): lambda _: json_response(200, self.requests_seen()),
            ("POST", "/_sim/reset"): self._control_reset,
            ("POST", "/_sim/faults"): self._control_faults,
            ("POST", "/_sim/fault_rate"): self._control_fault_rate,
            ("POST", "/_sim/latency"): self._control_latency,
        }

    def _control_reset(self, _: Request) -> Response:
        self.reset()
        return empty_response()

    def _control_faults(self, request: Request) -> Response:
        body = _control_object(request)
        retry_after = body.get("retry_after")
        self.fail_next(
            int(body.get("n", 1)),
            status=int(body.get("status", 503)),
            retry_after=None if retry_after is None else float(retry_after),
            delay=float(body.get("delay") or 0.0),
            method=body.get("method"),
            after=int(body.get("after", 0)),
            retry_after_as=str(body.get("retry_after_as", "seconds")),
        )
        return empty_response()

    def _control_fault_rate(self, request: Request) -> Response:
        body = _control_object(request)
        kinds = tuple(body.get("kinds", ("500", "429", "timeout")))
        self.set_fault_rate(float(body["rate"]), int(body.get("seed", 0)), kinds, float(body.get("timeout_delay", 2.0)))
        return empty_response()

    def _control_latency(self, request: Request) -> Response:
        seconds = float(_control_object(request)["seconds"])
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self.latency = seconds
        return empty_response()


def _control_object(request: Request) -> dict[str, Any]:
    body = json.loads(request.body or b"{}")
    if not isinstance(body, dict):
        raise ValueError("control body must be a JSON object")
    return body


class _SimHTTPServer(ThreadingHTTPServer):
    """Tracks open connections so that stop() also ends keep-alive connections held by client pools."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], sim: SimServer) -> None:
        self.sim = sim
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        with self._open_lock:
            self._open.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not self.sim.stopping:  # errors from connections cut by stop() are expected
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real services behind their load balancers
    # Headers and body go out in two writes: with Nagle on, the client's delayed ACK adds 40 ms to every answer.
    disable_nagle_algorithm = True
    server: _SimHTTPServer

    def _dispatch(self) -> None:
        request = self._read_request()
        response = DROP if self.server.sim.stopping else self.server.sim.handle(request)
        if response.status == 0:
            self.close_connection = True
            return
        self._write(response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def _read_request(self) -> Request:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        return Request(
            method=self.command,
            path=parts.path,
            query_lists=parse_qs(parts.query, keep_blank_values=True),
            headers=dict(self.headers.items()),
            body=body,
        )

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status not in (204, 304):
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.status not in (204, 304):
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr access log
        pass
