"""Every failure of the HTTP API as one ``application/problem+json`` body (RFC 9457), mapped in one table.

The database decides what went wrong (an ``NBxxx`` SQLSTATE, turned into a :class:`docnum.errors.DocnumError`
by the client's single mapping); this module only picks the HTTP status for each code and lays the problem
out: ``type``, ``title``, ``status``, ``detail`` (the database's message and DETAIL), ``instance`` (the path),
and the extension members ``code`` (``NB001``...), ``hint`` (the database's, in neutral words), ``parameter``
(the request field, path or query parameter, header or token claim at fault: the error's COLUMN, named as this
API names it) and ``success: false`` (the NestJS service's envelope).  No stack trace and no internal text
ever reaches a client: anything unexpected is logged here and answered with a bare 500.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docnum.codes import CODES
from docnum.errors import DocnumError

__all__ = [
    "NB_STATUS",
    "PARAMETERS",
    "PROBLEM_JSON",
    "Problem",
    "ResponseAbandoned",
    "install_error_handlers",
    "parameter_name",
    "problem_response",
]

log = logging.getLogger("docnum.http")

PROBLEM_JSON = "application/problem+json"
#: ``type`` of a problem: a URN per code (no page to dereference; docs/sql-api.md's table explains them).
TYPE_PREFIX = "urn:docnum:problem:"


@dataclass(frozen=True)
class _Mapping:
    status: int
    title: str
    retry_after: int | None = None


#: NB code -> HTTP status, title and Retry-After, from the one table of codes (docnum.codes).
NB_STATUS: dict[str, _Mapping] = {
    row.code: _Mapping(row.http_status, row.title, row.retry_after) for row in CODES
}
#: An NB code this version does not know yet (a newer schema): a client error of unknown kind.
_UNKNOWN_NB = _Mapping(400, "Numbering error")

#: SQL argument (an error's COLUMN) -> what carries it in a request: a body field, a path or query parameter,
#: the Idempotency-Key header, or the token's sub claim (the actor); None for an argument no route passes.
PARAMETERS: dict[str, str | None] = {
    "document_type": "document_type",
    "scope": "scope_value",
    "actor": "sub",
    "document_ref": "document_ref",
    "document_date": "document_date",
    "ttl": "ttl_seconds",
    "metadata": "metadata",
    "request_id": "Idempotency-Key",
    "count": "count",
    "token": "token",
    "reason": "reason",
    "code": "code",
    "format": "format",
    "reset": "reset",
    "time_zone": "time_zone",
    "max_value": "max_value",
    "reservation_ttl": "reservation_ttl_seconds",
    "lock_timeout": "lock_timeout_ms",
    "allow_manual_override": "allow_manual_override",
    "period": "period",
    "value": "value",
    "document_number": "document_number",
    "skip_validation": "skip_validation",
    "rows": "rows",
    "max_scopes": None,
    "table_name": None,
    "number_column": None,
}
#: The routes of document types (their path templates end so), where the SQL argument ``scope`` is the
#: type's scope kind (field ``scope``), not a scope value.
_TYPE_ROUTES = ("/types", "/types/{code}")


def parameter_name(column: str | None, route: str) -> str | None:
    """The request's name for the argument an error names in COLUMN, on the route with path template
    ``route``; an argument no route passes keeps its SQL name."""
    if not column:
        return None
    if column == "scope" and route.endswith(_TYPE_ROUTES):
        return "scope"
    return PARAMETERS.get(column) or column


class ResponseAbandoned(Exception):
    """A streamed response this server stopped after it started (its client stopped reading, or it ran out of
    time): logged once, at INFO, where it happened; the connection is dropped, so the client sees an
    incomplete body."""


class Problem(Exception):
    """An HTTP failure decided by this layer (authentication, rate limit, body too large...)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        code: str | None = None,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code
        self.hint = hint
        self.headers = headers or {}
        self.extra = extra or {}


def problem_response(
    request: Request | None,
    status: int,
    title: str,
    detail: str | None = None,
    *,
    code: str | None = None,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code if code else "about:blank",
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
    if code:
        body["code"] = code
    if hint:
        body["hint"] = hint
    body.update(extra or {})
    body["success"] = False
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def docnum_problem(request: Request | None, exc: DocnumError) -> JSONResponse:
    """The problem for an NB code raised by the database."""
    code = exc.code or ""
    mapping = NB_STATUS.get(code, _UNKNOWN_NB)
    detail = exc.message if not exc.detail else f"{exc.message}. {exc.detail}"
    headers = {"Retry-After": str(mapping.retry_after)} if mapping.retry_after is not None else None
    route = getattr(request.scope.get("route"), "path", "") if request is not None else ""
    parameter = parameter_name(exc.column, route)
    return problem_response(
        request,
        mapping.status,
        mapping.title,
        detail,
        code=code or None,
        hint=exc.hint,
        headers=headers,
        extra={"parameter": parameter} if parameter else None,
    )


def database_problem(request: Request | None, exc: psycopg.Error) -> JSONResponse:
    """A psycopg error without an NB code: a refusal by the grants, a lost server, or an internal error."""
    state = exc.sqlstate or ""
    if state == "42501":  # insufficient_privilege: PostgreSQL's grants decided
        return problem_response(
            request,
            403,
            "Forbidden",
            "the token's role may not do this",
            hint="Use a token whose role claim names a role granted this operation (docs/http-api.md).",
        )
    if isinstance(exc, psycopg.OperationalError) or state.startswith(("08", "57")):
        # connection lost, server shutting down, statement/lock timeout, admin cancel: try again later
        log.warning("database unavailable: %s", exc.sqlstate or type(exc).__name__)
        return problem_response(
            request,
            503,
            "Database unavailable",
            "the database did not answer; try again",
            headers={"Retry-After": "1"},
        )
    log.error("database error %s on %s", state or "-", request.url.path if request else "-", exc_info=exc)
    return internal_problem(request)


def internal_problem(request: Request | None) -> JSONResponse:
    return problem_response(request, 500, "Internal Server Error", "the server could not answer this request")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into a problem response."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(
            request,
            exc.status,
            exc.title,
            exc.detail,
            code=exc.code,
            hint=exc.hint,
            headers=exc.headers,
            extra=exc.extra,
        )

    async def on_docnum(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DocnumError)
        return docnum_problem(request, exc)

    async def on_psycopg(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, psycopg.Error)
        return database_problem(request, exc)

    async def on_pool_timeout(request: Request, exc: Exception) -> JSONResponse:
        log.warning("no database connection free in time (pool exhausted)")
        return problem_response(
            request,
            503,
            "Server busy",
            "no database connection became free in time; try again",
            headers={"Retry-After": "1"},
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"location": list(error.get("loc", ())), "message": str(error.get("msg", ""))}
            for error in exc.errors()
        ]
        return problem_response(
            request,
            422,
            "Invalid request",
            "the request does not match the API's schema",
            extra={"errors": errors},
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "HTTP error")
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(
            request, exc.status_code, title, detail, headers=dict(exc.headers) if exc.headers else None
        )

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(DocnumError, on_docnum)
    app.add_exception_handler(psycopg.Error, on_psycopg)
    app.add_exception_handler(PoolTimeout, on_pool_timeout)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_middleware(_CatchAll)


class _CatchAll:
    """The last net: an exception nothing mapped is logged here (with its traceback, for the operator) and
    answered with a bare 500 problem.  Once a response has started (a stream) it can only be cut short."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except ResponseAbandoned:
            raise  # logged where it happened; the server drops the connection
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await internal_problem(None)(scope, receive, send)
