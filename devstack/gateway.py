"""API Gateway (HTTP API, payload 2.0) on 127.0.0.1: each HTTP request becomes the event its routed function gets.

The answer follows API Gateway: 404 ``{"message":"Not Found"}`` for a route the template does not have, the
function's ``statusCode``/``headers``/``cookies``/``body`` (base64-decoded when ``isBase64Encoded``), and 500
``{"message":"Internal Server Error"}`` when the function raises. A function whose module cannot even be imported
(someone is still writing it) gets a 502 with the reason, so the rest of the stack stays usable meanwhile.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

from devstack.harness import LocalFunctions
from devstack.lambda_events import load_handler
from devstack.lifecycle import StartStop

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request payload limit
JSON_TYPE = "application/json"
# Set by this server from the body it writes, whatever the function says.
HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_error(functions: LocalFunctions, logical_id: str) -> str | None:
    """None if the function's handler imports, else why not."""
    spec = functions.specs[logical_id]
    try:
        load_handler(spec.code_dir, spec.handler, logical_id)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def json_answer(status: int, payload: Mapping[str, Any]) -> HttpAnswer:
    return HttpAnswer(status, [("content-type", JSON_TYPE)], json.dumps(payload).encode())


def answer_from_result(result: Any) -> HttpAnswer:
    """What API Gateway makes of a payload 2.0 function result."""
    if not isinstance(result, Mapping) or "statusCode" not in result:
        # A result without statusCode is taken as a 200 JSON body.
        text = result if isinstance(result, str) else json.dumps(result)
        return HttpAnswer(200, [("content-type", JSON_TYPE)], text.encode())
    body = result.get("body") or ""
    if not isinstance(body, str):
        body = json.dumps(body)
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    headers = [(name, str(value)) for name, value in (result.get("headers") or {}).items()]
    headers = [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP]
    headers += [("set-cookie", str(cookie)) for cookie in result.get("cookies") or []]
    return HttpAnswer(int(result["statusCode"]), headers, raw)


class Gateway(StartStop):
    """A ThreadingHTTPServer in front of the template's HttpApi routes."""

    def __init__(
        self,
        functions: LocalFunctions,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        log: Callable[[str], None] | None = _stderr,
    ) -> None:
        self.functions = functions
        self.host = host
        self.port = port
        self.log = log
        self._server: _GatewayServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("gateway is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        if self._server is None:
            self._server = _GatewayServer((self.host, self.port), _GatewayHandler, self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="gateway", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def answer(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> HttpAnswer:
        started = time.monotonic()
        matched = self.functions.match(method, path)
        function = matched[0] if matched else None
        answer = self._invoke(function, method, path, query, headers, body)
        if self.log is not None:
            # The route, as API Gateway's access log has it: the query string carries the Kommo webhook token and
            # a recording link's path its id.
            elapsed = (time.monotonic() - started) * 1000
            route = matched[1] if matched else "(no route)"
            self.log(f"gateway  {method} {route} -> {function or 'no route'} {answer.status} in {elapsed:.0f} ms")
        return answer

    def _invoke(
        self, function: str | None, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> HttpAnswer:
        if function is not None:
            reason = load_error(self.functions, function)
            if reason is not None:
                return json_answer(502, {"message": "Bad Gateway", "reason": f"{function} failed to load: {reason}"})
        try:
            result = self.functions.request(method, path, query=query, headers=headers, body=body)
        except Exception:
            if self.log is not None:
                self.log(f"gateway  {function} raised:\n{traceback.format_exc().rstrip()}")
            return json_answer(500, {"message": "Internal Server Error"})
        try:
            return answer_from_result(result)
        except (TypeError, ValueError):
            return json_answer(502, {"message": "Bad Gateway", "reason": f"{function} returned a malformed response"})


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], gateway: Gateway) -> None:
        self.gateway = gateway
        super().__init__(address, handler)


class _GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, the client's delayed ACK adds 40 ms to every answer.
    disable_nagle_algorithm = True
    server: _GatewayServer

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            self._write(json_answer(413, {"message": "Request Entity Too Large"}))
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        answer = self.server.gateway.answer(self.command, parts.path, parts.query, self._headers(), body)
        self._write(answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def _headers(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            # API Gateway joins repeated headers with commas.
            merged[key] = f"{merged[key]},{value}" if key in merged else value
        return merged

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_PAYLOAD_BYTES:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_PAYLOAD_BYTES:
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _write(self, answer: HttpAnswer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:  # the gateway logs its own line, without the query
        pass
