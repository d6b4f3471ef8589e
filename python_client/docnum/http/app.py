"""The HTTP API of docnum: a thin FastAPI layer over the SQL functions, every rule left to the database.

``create_app(Settings.from_env())`` builds the ASGI application; ``docnum serve`` runs it under uvicorn.
Paths, bodies and the ``{"success": true, "data": ...}`` envelope of the NestJS service's three endpoints are
kept (``POST /document-numbering/reserve``, ``/confirm``, ``/cancel``); every other operation of the SQL API
has an endpoint beside them.  Each request: the bearer token is checked (:mod:`docnum.http.auth`), the
number-issuing calls are rate limited per subject (:mod:`docnum.http.ratelimit`), then one transaction runs as
the token's role (:mod:`docnum.http.db`) running the Python client's statement for the operation (the SQL is
written once, in ``docnum.calls``), and any error becomes a problem response (:mod:`docnum.http.errors`).  The
token's ``sub`` is the actor of everything recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from docnum.http.auth import Verifier
from docnum.http.common import app_state
from docnum.http.db import Database
from docnum.http.errors import install_error_handlers
from docnum.http.limits import RequestLimits
from docnum.http.ratelimit import RateLimiter
from docnum.http.routes import admin, export, numbers, reports, types
from docnum.http.settings import MAX_IMPORT_BYTES, MAX_IMPORT_ROWS, PREFIX, AppState, Settings

__all__ = ["MAX_IMPORT_ROWS", "Settings", "create_app"]

log = logging.getLogger("docnum.http")


# -- the application --------------------------------------------------------------------------------------


def install_metrics(app: FastAPI) -> None:
    """``GET /metrics`` and the request counter (:mod:`docnum.http.metrics`), unless turned off."""
    from docnum.http import metrics

    metrics.install(app)


def create_app(settings: Settings) -> FastAPI:
    """The ASGI application for ``settings`` (the pool opens when the application starts)."""
    if not settings.dsn:
        raise ValueError("no database: set DOCNUM_DSN (or pass --dsn)")
    verifier = Verifier(
        secret=settings.jwt_secret, jwks_file=settings.jwks_file, audience=settings.jwt_audience
    )
    database = Database(
        settings.dsn, min_size=settings.pool_min, max_size=settings.pool_max, timeout=settings.pool_timeout
    )
    state = AppState(settings, verifier, RateLimiter(settings.rate_limit), database)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await database.open()

        async def check_login_role() -> None:  # in the background: a database that is down delays nothing
            warning = await database.login_role_warning()
            if warning:
                log.warning("docnum serve: %s", warning)

        check = asyncio.create_task(check_login_role())
        try:
            yield
        finally:
            check.cancel()
            await database.close()

    app = FastAPI(
        title="docnum",
        summary="Gapless, auditable document numbering in PostgreSQL, over HTTP.",
        description=(
            "Every rule lives in the database: each request runs as the database role named by its token's"
            " `role` claim, and PostgreSQL's grants decide what it may do. Errors are"
            " `application/problem+json` bodies carrying the docnum code (NB001...)."
        ),
        version=_version(),
        lifespan=lifespan,
    )
    app.state.docnum = state
    install_error_handlers(app)
    _routes(app)
    # Around the application: body limits, and the token checked before a body is read (docnum.http.limits).
    app.add_middleware(
        RequestLimits,
        verify=verifier.verify,
        needs_token=lambda path: path.startswith(PREFIX),
        limits={f"{PREFIX}/import": MAX_IMPORT_BYTES},
    )
    install_metrics(app)
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("docnum")
    except Exception:
        return "0"


def _routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], summary="The process is up (no database call).")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Database reachable, migrations at head, not a standby, a pool connection free.",
    )
    async def readyz(request: Request) -> JSONResponse:
        state = app_state(request)
        checks = await state.database.readiness(state.exports)
        ready = all(check.get("ok") for check in checks.values()) and "migrations" in checks
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
        )

    for module in (numbers, types, reports, admin, export):
        app.include_router(module.router)
