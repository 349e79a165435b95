"""A fault-injecting HTTP proxy in front of the moto S3 server, on loopback only.

Clients point ``endpoint_url`` at the proxy; every request is forwarded to moto unchanged
(moto does not check SigV4 signatures, so the Host header may name the proxy) unless a
:class:`Fault` rule matches it, which then misbehaves the way object stores and networks
do:

* ``slowdown``: answer ``503 SlowDown`` (S3's throttling reply) without forwarding;
* ``reset``: forward, send the status, headers and half the body, then reset the TCP
  connection (a connection dropped mid-body);
* ``stall``: hold the request for ``seconds`` (past the client's read timeout), then
  close without an answer;
* ``drop_response``: forward (the store applies it: a PUT succeeds), then close without
  an answer (the response was lost: the client cannot know it succeeded).

Each rule fires ``times`` times on requests matching its method and path pattern, after
skipping the first ``after`` matches. ``events`` records what fired, for the tests' counts.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["Fault", "FaultProxy", "fault_proxy"]

Kind = Literal["slowdown", "reset", "stall", "drop_response"]
_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}


@dataclass
class Fault:
    kind: Kind
    method: str = ".*"
    path: str = ".*"
    times: int = 1
    after: int = 0
    seconds: float = 0.0
    seen: int = 0
    fired: int = 0

    def take(self, method: str, path: str) -> bool:
        if not (re.fullmatch(self.method, method) and re.search(self.path, path)):
            return False
        self.seen += 1
        if self.seen <= self.after or self.fired >= self.times:
            return False
        self.fired += 1
        return True


@dataclass
class FaultProxy:
    endpoint: str
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()

    def fired(self, kind: str | None = None) -> int:
        return sum(1 for k, _, _ in self.events if kind is None or k == kind)

    def _match(self, method: str, path: str) -> Fault | None:
        with self.lock:
            self.requests += 1
            for fault in self.faults:
                if fault.take(method, path):
                    self.events.append((fault.kind, method, path))
                    return fault
        return None


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    upstream = urlsplit(proxy.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet: tests read proxy.events
            return

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            finally:
                conn.close()

        def _reset(self) -> None:
            # SO_LINGER with a zero timeout: close() sends RST, as a dropped connection does.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _handle(self) -> None:
            body = self._body()
            fault = proxy._match(self.command, self.path)
            if fault is not None and fault.kind == "slowdown":
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(_SLOWDOWN)))
                self.end_headers()
                if self.command != "HEAD":  # a HEAD answer carries headers only
                    self.wfile.write(_SLOWDOWN)
                return
            if fault is not None and fault.kind == "stall":
                time.sleep(fault.seconds)
                self._reset()
                return
            status, headers, payload = self._forward(body)
            if fault is not None and fault.kind == "drop_response":
                self._reset()
                return
            self.send_response_only(status)
            head = self.command == "HEAD"  # its Content-Length is the object's, not the body's
            for key, value in headers:
                if key.lower() not in _HOP_BY_HOP and (head or key.lower() != "content-length"):
                    self.send_header(key, value)
            if not head:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if fault is not None and fault.kind == "reset":
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self._reset()
                return
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A proxy to ``upstream`` (the moto endpoint) on a free 127.0.0.1 port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    proxy = FaultProxy(f"http://127.0.0.1:{server.server_address[1]}", upstream)
    server.RequestHandlerClass = _handler(proxy)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="s3-fault-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
