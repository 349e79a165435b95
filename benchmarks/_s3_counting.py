"""moto's S3 server with every request counted on the server side (issue 27 item 5).

    python -m benchmarks._s3_counting PORT      # serves 127.0.0.1:PORT until killed

A WSGI middleware in front of moto's own application (the one ``python -m moto.server``
serves) classifies each request the way S3 bills it (:func:`classify`) and by the part of
the store it touches (:func:`component`). ``GET /_counts`` answers the counts so far as
JSON; ``GET /_counts?reset=1`` answers them and starts again from zero. No S3 bucket can
be named ``_counts`` (bucket names start with a letter or digit), so the route never
shadows a request.

:func:`counting_moto` starts it in a subprocess (the benchmark's own process stays free
for the driver) on a free loopback port; :func:`read_counts` reads them.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs

__all__ = ["PRICES", "area", "classify", "component", "counting_moto", "price", "read_counts"]

#: S3 Standard request prices, us-east-1, USD per 1,000 requests
#: (../shared/research/cloud.md: PUT/COPY/POST/LIST $0.005, GET/HEAD $0.0004; DELETE free)
PRICES = {"PUT": 0.005, "COPY": 0.005, "POST": 0.005, "LIST": 0.005, "GET": 0.0004, "HEAD": 0.0004}


def classify(method: str, path: str, query: str, copy_source: bool) -> str:
    """The billed request class: PUT, COPY, POST, LIST, GET, HEAD or DELETE."""
    params = parse_qs(query, keep_blank_values=True)
    has_key = "/" in path.strip("/")  # path-style: /bucket/key
    if method == "PUT":
        return "COPY" if copy_source else "PUT"
    if method == "POST":
        # multi-object delete is a DELETE request for billing (free)
        return "DELETE" if "delete" in params else "POST"
    if method == "GET":
        return "GET" if has_key else "LIST"
    return method  # HEAD, DELETE


def component(path: str, query: str = "") -> str:
    """Which part of a store a request touches: ``<table>:<dir>`` for a Lance table
    (``tiles:data``, ``tiles:_versions``, ``slides:_transactions``...), else its folder.
    A listing's part is its ``prefix``'s."""
    parts = path.strip("/").split("/")[1:]  # without the bucket (path-style)
    if not parts:
        prefix = parse_qs(query).get("prefix", [""])[0]
        parts = [p for p in prefix.split("/") if p]
    if "zarr" in parts:  # zarr/<slide>/<array>/...: a slide's thumbnail, mask, grids
        at = parts.index("zarr")
        return f"zarr:{parts[at + 2]}" if len(parts) > at + 2 else "zarr"
    for i, part in enumerate(parts):
        if part.endswith(".lance"):
            name = part[: -len(".lance")]
            # tiles/<encoder>.lance and derived/<kind>/<name>.lance go by their folder
            table = name if name in ("slides", "runs") or i == 0 else parts[i - 1]
            sub = parts[i + 1] if i + 1 < len(parts) else ""
            return f"{table}:{sub}" if sub else table
    return parts[-2] if len(parts) >= 2 else (parts[0] if parts else "(bucket)")


class Counting:
    """WSGI middleware: counts each request, then hands it to moto unchanged."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app, self.lock = app, threading.Lock()
        self.ops: Counter[str] = Counter()
        self.parts: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        if path == "/_counts":
            with self.lock:
                body = json.dumps({"ops": dict(self.ops), "parts": dict(self.parts)}).encode()
                if "reset" in query:
                    self.ops.clear()
                    self.parts.clear()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        op = classify(
            environ.get("REQUEST_METHOD", ""), path, query, "HTTP_X_AMZ_COPY_SOURCE" in environ
        )
        with self.lock:
            self.ops[op] += 1
            self.parts[f"{op} {component(path, query)}"] += 1
        return self.app(environ, start_response)


def serve(port: int) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = Counting(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    server.serve_forever()


def area(part: str) -> str:
    """The store area of a :func:`component`: tiles, slides, runs (run records and
    heartbeats), arrays (zarr), slide_embeddings, or other."""
    name = part.split(":", 1)[0]
    if name in ("tiles", "slides", "slide_embeddings", "zarr"):
        return "arrays" if name == "zarr" else name
    if name in ("runs", "_heartbeats"):
        return "runs"
    return "other"


def read_counts(endpoint: str, *, reset: bool = False) -> dict[str, dict[str, int]]:
    url = f"{endpoint}/_counts" + ("?reset=1" if reset else "")
    with urllib.request.urlopen(url, timeout=30) as response:
        return dict(json.loads(response.read()))


def price(ops: dict[str, int], per: float = 1.0) -> float:
    """USD for ``ops`` requests (``per``: divide, e.g. by slides)."""
    return sum(PRICES.get(op, 0.0) * n / 1000 for op, n in ops.items()) / per


@contextmanager
def counting_moto(env: dict[str, str]) -> Iterator[str]:
    """The counting server on a free loopback port; yields its endpoint."""
    from tests._support.moto import moto_server

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "benchmarks._s3_counting", str(port)]

    with moto_server(env, command=command) as endpoint:
        read_counts(endpoint, reset=True)  # the counter answers; start-up probes not counted
        yield endpoint


if __name__ == "__main__":
    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")
    serve(int(sys.argv[1]))
