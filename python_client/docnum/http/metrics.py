"""``GET /metrics`` of ``docnum serve``: docnum's figures, as ``docnum metrics`` serves them, and its own.

The docnum families are read from the database at scrape time by
:class:`docnum.ops.metrics.DocnumCollector`, on
a connection of their own that switches to ``docnum_reader`` (the server's login role may only switch), with
the background validation of ``numbering_unexplained_gaps`` started at the first scrape. The server adds what
only it knows, for this process: requests by route template, method and status, and their latency.

``/metrics`` takes no token, as exporters usually do: it shows type codes and the scope values of the fullest
counters, so keep it behind the proxy when those are private, or start the server with ``--no-metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docnum.ops.metrics import DocnumCollector, Validator, registry

__all__ = ["VALIDATE_INTERVAL", "install"]

#: Seconds between background validations (gaps and validate()), as ``docnum metrics``'s default.
VALIDATE_INTERVAL = 300.0
READER_ROLE = "docnum_reader"


def _route_of(app: FastAPI, scope: Scope) -> str:
    """The route template a request matched (``/document-numbering/types/{code}``), never the raw path."""
    return _matched(app.router.routes, scope) or "unmatched"


def _matched(routes: Sequence[BaseRoute], scope: Scope) -> str | None:
    for route in routes:
        match, child = route.matches(scope)
        if match != Match.FULL:
            continue
        # an included router (FastAPI keeps it whole, as the router it was): its own routes hold the template
        inner = getattr(getattr(route, "original_router", route), "routes", None)
        if inner is not None and not hasattr(route, "path"):
            return _matched(inner, {**scope, **child})
        return str(getattr(route, "path", "other"))
    return None


class _RequestMetrics:
    """Pure ASGI middleware: counts and times every answer by route template, method and status. It only
    watches the response's start message, so a streamed body (the audit export) passes through untouched and a
    client that hangs up still cancels it at once."""

    def __init__(self, app: ASGIApp, *, owner: FastAPI, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.owner = owner
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = _route_of(self.owner, scope)
            if route != "/metrics":
                method = str(scope.get("method", ""))
                self.requests.labels(route, method, str(status)).inc()
                self.latency.labels(route, method).observe(time.perf_counter() - started)


def install(app: FastAPI) -> None:
    settings = app.state.docnum.settings
    if not getattr(settings, "metrics", True):
        return
    validator = Validator(settings.dsn, VALIDATE_INTERVAL, role=READER_ROLE)
    collector = DocnumCollector(settings.dsn, validator=validator, role=READER_ROLE)
    found = registry(collector)
    requests = Counter(
        "numbering_http_requests",
        "HTTP requests this docnum serve process answered, by route template, method and status",
        ["route", "method", "status"],
        registry=found,
    )
    latency = Histogram(
        "numbering_http_request_duration_seconds",
        "Time this docnum serve process took to answer, by route template and method",
        ["route", "method"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        registry=found,
    )

    app.add_middleware(_RequestMetrics, owner=app, requests=requests, latency=latency)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics: docnum's figures and this server's.")
    async def metrics() -> Response:
        validator.start()
        body = await anyio.to_thread.run_sync(generate_latest, found)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
