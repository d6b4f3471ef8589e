"""The HTTP API of docnum: a thin FastAPI layer over the SQL functions, every rule left to the database.

``create_app(Settings.from_env())`` builds the ASGI application; ``docnum serve`` runs it under uvicorn.
Paths, bodies and the ``{"success": true, "data": ...}`` envelope of the seed's three endpoints are kept
(``POST /document-numbering/reserve``, ``/confirm``, ``/cancel``); every other operation of the SQL API has an
endpoint beside them.  Each request: the bearer token is checked (:mod:`docnum.http.auth`), the number-issuing
calls are rate limited per subject (:mod:`docnum.http.ratelimit`), then one transaction runs as the token's
role (:mod:`docnum.http.db`) running the Python client's statement for the operation (the SQL is written
once, in ``docnum.calls``), and any error becomes a problem response
(:mod:`docnum.http.errors`).  The token's ``sub`` is the actor of everything recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.lowlevel
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, Field
from starlette.types import Send

from docnum import calls
from docnum.calls import Call
from docnum.errors import ReservationExpired
from docnum.http.auth import Principal, Verifier
from docnum.http.db import Database
from docnum.http.errors import Problem, ResponseAbandoned, install_error_handlers
from docnum.http.limits import RequestLimits
from docnum.http.ratelimit import RateLimiter
from docnum.interchange.csv_import import CsvProblem, LegacyCsv
from docnum.interchange.exports import ExportEncoder, ExportFormat
from docnum.interchange.jsonable import json_value
from docnum.models import AuditEntry, ImportResult

__all__ = ["MAX_IMPORT_ROWS", "Settings", "create_app"]

log = logging.getLogger("docnum.http")

T = TypeVar("T")

PREFIX = "/document-numbering"
#: Rows one import request may carry: one request is one transaction holding every counter it touches.
MAX_IMPORT_ROWS = 10_000
#: Bytes one import request may carry (a CSV row of a legacy number is well under 200 bytes).
MAX_IMPORT_BYTES = 16 * 1024 * 1024
#: Audit rows sent per chunk of a streamed export (and fetched per round trip).
EXPORT_CHUNK = 500
DEFAULT_RATE_LIMIT = 100


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the server needs; :meth:`from_env` reads the ``DOCNUM_*`` variables."""

    dsn: str
    jwt_secret: str | None = None
    jwks_file: Path | None = None
    jwt_audience: str | None = None
    #: Number-issuing requests (reserve, next, batches) per subject per minute; 0 turns the limit off.
    rate_limit: int = DEFAULT_RATE_LIMIT
    pool_min: int = 2
    pool_max: int = 20
    #: Seconds a request waits for a free connection before it gets 503.
    pool_timeout: float = 5.0
    #: Serve GET /metrics (docnum.http.metrics).
    metrics: bool = True
    #: Audit exports streaming at once, each holding a pooled connection (0: a quarter of pool_max).
    export_slots: int = 0
    #: Seconds a client of an export may take to accept the next chunk before the export is stopped.
    export_send_timeout: float = 30.0
    #: Seconds an export may stream in all.
    export_max_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.export_slots <= 0:
            object.__setattr__(self, "export_slots", max(1, self.pool_max // 4))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "dsn": env.get("DOCNUM_DSN", ""),
            "jwt_secret": env.get("DOCNUM_JWT_SECRET") or None,
            "jwks_file": Path(env["DOCNUM_JWKS_FILE"]) if env.get("DOCNUM_JWKS_FILE") else None,
            "jwt_audience": env.get("DOCNUM_JWT_AUDIENCE") or None,
        }
        if env.get("DOCNUM_RATE_LIMIT"):
            values["rate_limit"] = int(env["DOCNUM_RATE_LIMIT"])
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


@dataclasses.dataclass
class _State:
    settings: Settings
    verifier: Verifier
    limiter: RateLimiter
    database: Database
    exports: int = 0  # audit exports streaming now


# -- what a request may carry ------------------------------------------------------------------------------
# Every text and number a request carries is checked here for what PostgreSQL cannot store at all (a NUL
# character, a lone surrogate, a number past its type, a JSON number JSON cannot write): such input would
# otherwise fail inside the driver or the server as an error of ours. It is a 422 naming the field, before
# anything runs. What docnum's rules allow (lengths, ranges, formats) stays the database's to say.

#: Levels of nesting a JSON value in a request (metadata) may have.
MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000), which PostgreSQL cannot store")
    if _SURROGATE.search(value):
        raise ValueError("must not contain a lone surrogate (U+D800 to U+DFFF): it is no character")
    return value


def _check_json(value: Any, depth: int = 1) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"must not be nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("holds a number JSON cannot carry (Infinity, NaN, or one too large for a double)")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
    return value


#: A text PostgreSQL can store.
Text = Annotated[str, AfterValidator(_check_text)]
#: A JSON object PostgreSQL can store (jsonb), nested at most MAX_JSON_DEPTH levels.
JsonObject = Annotated[dict[str, Any], AfterValidator(_check_json)]
#: The ranges of PostgreSQL's integer and bigint.
Int4 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int8 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
#: A duration in seconds or milliseconds: positive, and an interval PostgreSQL can hold.
Duration = Annotated[int, Field(gt=0, le=2**31 - 1)]

ScopeValue = Annotated[
    Text | None, Field(description="Scope value (a project or contract code) for PROJECT and CONTRACT types.")
]


class ReserveBody(BaseModel):
    document_type: Text = Field(description="The document type's code.", examples=["COR"])
    scope_value: ScopeValue = None
    metadata: JsonObject | None = Field(
        None, description="A JSON object kept with the reservation (at most 8 KiB as JSON text)."
    )
    ttl_seconds: Duration | None = Field(
        None, description="How long the reservation holds (default: the type's reservation_ttl)."
    )
    document_date: date | None = Field(None, description="The document's date (default: today).")


class TokenBody(BaseModel):
    token: Text = Field(description="The reservation token returned by reserve.")
    document_ref: Text | None = Field(None, description="confirm: your document's id, kept in the ledger.")
    reason: Text | None = Field(None, description="cancel: why, kept in the audit log.")


class NextBody(BaseModel):
    document_type: Text = Field(examples=["COR"])
    scope_value: ScopeValue = None
    document_ref: Text | None = None
    document_date: date | None = None


class BatchBody(BaseModel):
    document_type: Text
    count: Int4 = Field(description="How many numbers, 1 to 10,000.")
    scope_value: ScopeValue = None
    document_date: date | None = None


class ReserveBatchBody(BatchBody):
    metadata: JsonObject | None = Field(
        None, description="Kept with every number: at most 8 KiB, and 1 MiB for the whole batch."
    )
    ttl_seconds: Duration | None = None


class _TypeSettings(BaseModel):
    format: Text | None = Field(None, description="The template, e.g. COR-{YYYY}-{SEQ:5}.")
    time_zone: Text | None = None
    max_value: Int8 | None = None
    reservation_ttl_seconds: Duration | None = None
    lock_timeout_ms: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    allow_manual_override: bool | None = None
    metadata: JsonObject | None = None


class DefineTypeBody(_TypeSettings):
    code: Text = Field(examples=["COR"])
    format: Text = Field(description="The template, e.g. COR-{YYYY}-{SEQ:5}.")
    scope: Text | None = Field(None, description="GLOBAL (default), PROJECT or CONTRACT.")
    reset: Text | None = Field(None, description="NEVER (default), YEARLY, MONTHLY...")


class AlterTypeBody(_TypeSettings):
    reason: Text | None = None


class ManualBody(BaseModel):
    document_type: Text
    document_number: Text = Field(description="The number a person chose.")
    reason: Text
    skip_validation: bool = False


class VoidBody(BaseModel):
    document_number: Text
    reason: Text


class SetCounterBody(BaseModel):
    document_type: Text
    scope_value: ScopeValue = None
    period: Text | None = Field(None, description="The counter's period (default: the current one).")
    value: Int8
    reason: Text


class ImportRow(BaseModel):
    document_type: Text | None = None
    document_number: Text | None = None
    created_at: Text | None = None
    document_ref: Text | None = None


class ImportBody(BaseModel):
    rows: list[ImportRow]


# -- helpers ----------------------------------------------------------------------------------------------


class _Envelope(JSONResponse):
    """The seed's ``{"success": true, ...}`` body, encoded with the CLI's JSON conventions (times in ISO 8601,
    UUIDs as text, decimals as numbers, intervals in seconds)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=json_value, ensure_ascii=False, separators=(",", ":")).encode()


def _ok(data: Any, status: int = 200, **extra: Any) -> JSONResponse:
    return _Envelope({"success": True, **extra, "data": data}, status_code=status)


def _rows(items: list[Any]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(item) for item in items]


def _seconds(value: int | None, unit: str = "seconds") -> str | None:
    return None if value is None else f"{value} {unit}"


def _request_id(principal: Principal, key: str | None) -> str | None:
    """The SQL request_id of an Idempotency-Key: namespaced by subject, so one caller never gets another's.

    ``<length of sub>:<sub>:<key>`` cannot be forged by choosing a key, whatever the sub holds.
    """
    if key is None:
        return None
    if not key.strip() or len(key) > 100:
        raise Problem(
            422,
            "Invalid Idempotency-Key",
            "an Idempotency-Key has 1 to 100 characters",
            hint="Use a fresh UUID per request, and the same one for its retries.",
        )
    request_id = f"{len(principal.subject)}:{principal.subject}:{key}"
    if len(request_id) > 200:
        raise Problem(422, "Invalid Idempotency-Key", "the subject and the key together are too long")
    return request_id


def _state(request: Request) -> _State:
    state: _State = request.app.state.docnum
    return state


_bearer = HTTPBearer(
    auto_error=False,
    description="A JWT with claims sub (the actor), exp and role (docnum_app, docnum_reader, docnum_admin).",
)


async def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The verified caller; 401/403 before anything runs."""
    return _state(request).verifier.verify(credentials.credentials if credentials else None)


Caller = Annotated[Principal, Depends(principal)]
IdempotencyKey = Annotated[
    Text | None,
    Header(
        alias="Idempotency-Key",
        description="Retries with the same key get the same number (per subject); a key names one request.",
    ),
]


async def _call(request: Request, caller: Principal, call: Call[T], *, issuing: bool = False) -> T:
    """Run ``call`` as ``caller``. A call that issues numbers first takes one from the caller's rate limit
    (429 otherwise): only a request that got this far, past every check of its input, counts."""
    state = _state(request)
    if issuing:
        state.limiter.check(caller.subject)
    return await state.database.call(caller, call)


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, a bad signature, an expired token (problem+json)."},
    403: {"description": "The token's role may not do this (problem+json)."},
    404: {"description": "NB001 unknown type, NB011 unknown number (problem+json)."},
    409: {"description": "NB002, NB005, NB007, NB009 (problem+json)."},
    422: {"description": "NB006 invalid argument, NB012 idempotency key reused, a malformed body."},
    503: {
        "description": "NB003 counter busy, NB008 read-only server, database unavailable; see Retry-After."
    },
}
#: What a call that issues numbers may answer besides: the per-subject rate limit.
_ISSUING_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERROR_RESPONSES,
    429: {"description": "Over the per-subject rate limit; see Retry-After."},
}


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
    state = _State(settings, verifier, RateLimiter(settings.rate_limit), database)

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
    tags_numbers: list[str | Enum] = ["numbers"]
    tags_admin: list[str | Enum] = ["administration"]
    tags_reports: list[str | Enum] = ["reports"]

    @app.get("/healthz", tags=["health"], summary="The process is up (no database call).")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Database reachable, migrations at head, not a standby, a pool connection free.",
    )
    async def readyz(request: Request) -> JSONResponse:
        state = _state(request)
        checks = await state.database.readiness(state.exports)
        ready = all(check.get("ok") for check in checks.values()) and "migrations" in checks
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
        )

    @app.post(
        f"{PREFIX}/reserve",
        status_code=201,
        tags=tags_numbers,
        summary="Reserve the next number (held until confirmed, cancelled or expired).",
        responses=_ISSUING_RESPONSES,
    )
    async def reserve(
        request: Request, body: ReserveBody, caller: Caller, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        request_id = _request_id(caller, idempotency_key)
        reservation = await _call(
            request,
            caller,
            calls.reserve(
                body.document_type,
                scope=body.scope_value,
                actor=caller.subject,
                metadata=body.metadata,
                ttl=_seconds(body.ttl_seconds),
                document_date=body.document_date,
                request_id=request_id,
            ),
            issuing=True,
        )
        data = {
            **dataclasses.asdict(reservation),
            "document_type": body.document_type,
            "scope_value": body.scope_value,
            "metadata": body.metadata,
        }
        return _ok(data, 201)

    @app.post(
        f"{PREFIX}/confirm",
        tags=tags_numbers,
        summary="Make a reserved number final.",
        responses=_ERROR_RESPONSES,
    )
    async def confirm(request: Request, body: TokenBody, caller: Caller) -> JSONResponse:
        token = _token(body.token)
        number = await _call(
            request, caller, calls.confirm(token, actor=caller.subject, document_ref=body.document_ref)
        )
        return _ok({"document_number": number, "token": body.token})

    @app.post(
        f"{PREFIX}/cancel",
        tags=tags_numbers,
        summary="Give up a reserved number (it is never reissued).",
        responses=_ERROR_RESPONSES,
    )
    async def cancel(request: Request, body: TokenBody, caller: Caller) -> JSONResponse:
        token = _token(body.token)
        number = await _call(request, caller, calls.cancel(token, actor=caller.subject, reason=body.reason))
        return _ok({"document_number": number, "token": body.token}, message="Reservation cancelled")

    @app.post(
        f"{PREFIX}/next",
        status_code=201,
        tags=tags_numbers,
        summary="Issue and confirm the next number in one step.",
        responses=_ISSUING_RESPONSES,
    )
    async def next_number(
        request: Request, body: NextBody, caller: Caller, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        request_id = _request_id(caller, idempotency_key)
        number = await _call(
            request,
            caller,
            calls.next_number(
                body.document_type,
                scope=body.scope_value,
                actor=caller.subject,
                document_ref=body.document_ref,
                document_date=body.document_date,
                request_id=request_id,
            ),
            issuing=True,
        )
        data = {
            "document_number": number,
            "document_type": body.document_type,
            "scope_value": body.scope_value,
        }
        return _ok(data, 201)

    @app.get(
        f"{PREFIX}/requests/{{idempotency_key}}",
        tags=tags_numbers,
        summary="What an Idempotency-Key of yours was served with (404 when nothing committed).",
        responses=_ERROR_RESPONSES,
    )
    async def find_request(request: Request, idempotency_key: Text, caller: Caller) -> JSONResponse:
        request_id = _request_id(caller, idempotency_key)
        assert request_id is not None
        outcome = await _call(request, caller, calls.find_request(request_id))
        if outcome is None:
            raise Problem(404, "Not Found", "nothing was issued for this Idempotency-Key")
        return _ok(dataclasses.asdict(outcome))

    @app.post(
        f"{PREFIX}/next-batch",
        status_code=201,
        tags=tags_numbers,
        summary="Issue and confirm the next count numbers of one counter, in order (1 to 10,000).",
        responses=_ISSUING_RESPONSES,
    )
    async def next_batch(request: Request, body: BatchBody, caller: Caller) -> JSONResponse:
        numbers = await _call(
            request,
            caller,
            calls.next_numbers(
                body.document_type,
                body.count,
                scope=body.scope_value,
                actor=caller.subject,
                document_date=body.document_date,
            ),
            issuing=True,
        )
        return _ok({"document_numbers": numbers, "document_type": body.document_type}, 201)

    @app.post(
        f"{PREFIX}/reserve-batch",
        status_code=201,
        tags=tags_numbers,
        summary="Reserve the next count numbers of one counter, each with its own token (1 to 10,000).",
        responses=_ISSUING_RESPONSES,
    )
    async def reserve_batch(request: Request, body: ReserveBatchBody, caller: Caller) -> JSONResponse:
        reservations = await _call(
            request,
            caller,
            calls.reserve_numbers(
                body.document_type,
                body.count,
                scope=body.scope_value,
                actor=caller.subject,
                metadata=body.metadata,
                ttl=_seconds(body.ttl_seconds),
                document_date=body.document_date,
            ),
            issuing=True,
        )
        return _ok({"reservations": _rows(reservations), "document_type": body.document_type}, 201)

    @app.get(
        f"{PREFIX}/types/{{code}}",
        tags=tags_admin,
        summary="A document type's definition.",
        responses=_ERROR_RESPONSES,
    )
    async def get_type(request: Request, code: Text, caller: Caller) -> JSONResponse:
        found = await _call(request, caller, calls.get_type(code))
        if found is None:
            raise Problem(
                404, "Unknown document type", f"document type {code!r} is not defined", code="NB001"
            )
        return _ok(dataclasses.asdict(found))

    @app.post(
        f"{PREFIX}/types",
        status_code=201,
        tags=tags_admin,
        summary="Define a document type (docnum_admin); the same definition again is harmless.",
        responses=_ERROR_RESPONSES,
    )
    async def define_type(request: Request, body: DefineTypeBody, caller: Caller) -> JSONResponse:
        defined = await _call(
            request,
            caller,
            calls.define_type(
                body.code,
                body.format,
                scope=body.scope,
                reset=body.reset,
                time_zone=body.time_zone,
                max_value=body.max_value,
                reservation_ttl=_seconds(body.reservation_ttl_seconds),
                lock_timeout=_seconds(body.lock_timeout_ms, "milliseconds"),
                allow_manual_override=body.allow_manual_override,
                metadata=body.metadata,
                actor=caller.subject,
            ),
        )
        return _ok(dataclasses.asdict(defined), 201)

    @app.patch(
        f"{PREFIX}/types/{{code}}",
        tags=tags_admin,
        summary="Change a document type (docnum_admin); fields left out stay as they are.",
        responses=_ERROR_RESPONSES,
    )
    async def alter_type(request: Request, code: Text, body: AlterTypeBody, caller: Caller) -> JSONResponse:
        altered = await _call(
            request,
            caller,
            calls.alter_type(
                code,
                format=body.format,
                time_zone=body.time_zone,
                max_value=body.max_value,
                reservation_ttl=_seconds(body.reservation_ttl_seconds),
                lock_timeout=_seconds(body.lock_timeout_ms, "milliseconds"),
                allow_manual_override=body.allow_manual_override,
                metadata=body.metadata,
                actor=caller.subject,
                reason=body.reason,
            ),
        )
        return _ok(dataclasses.asdict(altered))

    @app.post(
        f"{PREFIX}/expire",
        tags=tags_numbers,
        summary="Expire the reservations past their expires_at; returns how many.",
        responses=_ERROR_RESPONSES,
    )
    async def expire(request: Request, caller: Caller) -> JSONResponse:
        expired = await _call(request, caller, calls.expire_reservations())
        return _ok({"expired": expired})

    @app.get(
        f"{PREFIX}/status",
        tags=tags_reports,
        summary="Every counter, by type, scope and period.",
        responses=_ERROR_RESPONSES,
    )
    async def status(
        request: Request, caller: Caller, document_type: Annotated[Text | None, Query()] = None
    ) -> JSONResponse:
        return _ok(_rows(await _call(request, caller, calls.status(document_type))))

    @app.get(
        f"{PREFIX}/history",
        tags=tags_reports,
        summary="The audit trail of a number (and of its replacements), oldest first.",
        responses=_ERROR_RESPONSES,
    )
    async def history(
        request: Request, caller: Caller, document_number: Annotated[Text, Query(min_length=1)]
    ) -> JSONResponse:
        return _ok(_rows(await _call(request, caller, calls.history(document_number))))

    @app.get(
        f"{PREFIX}/gaps",
        tags=tags_reports,
        summary="Counter values never issued, with their reasons.",
        responses=_ERROR_RESPONSES,
    )
    async def gaps(
        request: Request,
        caller: Caller,
        document_type: Annotated[Text | None, Query()] = None,
        scope_value: Annotated[Text | None, Query()] = None,
        period: Annotated[Text | None, Query()] = None,
    ) -> JSONResponse:
        found = await _call(request, caller, calls.gaps(document_type, scope=scope_value, period=period))
        return _ok(_rows(found))

    @app.get(
        f"{PREFIX}/validate",
        tags=tags_reports,
        summary="The integrity report (empty when healthy).",
        responses=_ERROR_RESPONSES,
    )
    async def validate(request: Request, caller: Caller) -> JSONResponse:
        findings = await _call(request, caller, calls.validate())
        healthy = not any(f.severity == "error" for f in findings)
        return _ok({"healthy": healthy, "findings": _rows(findings)})

    @app.get(
        f"{PREFIX}/duplicates",
        tags=tags_reports,
        summary="Numbers used twice in the ledger or the registered tables.",
        responses=_ERROR_RESPONSES,
    )
    async def duplicates(request: Request, caller: Caller) -> JSONResponse:
        return _ok(_rows(await _call(request, caller, calls.check_duplicates())))

    @app.post(
        f"{PREFIX}/manual",
        status_code=201,
        tags=tags_admin,
        summary="Record a number chosen by a person (the seed's manual override; docnum_admin).",
        responses=_ERROR_RESPONSES,
    )
    async def manual(request: Request, body: ManualBody, caller: Caller) -> JSONResponse:
        number = await _call(
            request,
            caller,
            calls.override(
                body.document_type,
                body.document_number,
                actor=caller.subject,
                reason=body.reason,
                skip_validation=body.skip_validation,
            ),
        )
        return _ok({"document_number": number, "document_type": body.document_type}, 201)

    @app.post(
        f"{PREFIX}/void",
        tags=tags_admin,
        summary="Take a number out of use (docnum_admin).",
        responses=_ERROR_RESPONSES,
    )
    async def void(request: Request, body: VoidBody, caller: Caller) -> JSONResponse:
        number = await _call(
            request, caller, calls.void(body.document_number, actor=caller.subject, reason=body.reason)
        )
        return _ok({"document_number": number})

    @app.post(
        f"{PREFIX}/void-and-replace",
        status_code=201,
        tags=tags_admin,
        summary="Void a number and issue its replacement in the same counter (docnum_admin).",
        responses=_ERROR_RESPONSES,
    )
    async def void_and_replace(request: Request, body: VoidBody, caller: Caller) -> JSONResponse:
        replacement = await _call(
            request,
            caller,
            calls.void_and_replace(body.document_number, actor=caller.subject, reason=body.reason),
        )
        return _ok({"voided_number": body.document_number, "document_number": replacement}, 201)

    @app.post(
        f"{PREFIX}/set-counter",
        tags=tags_admin,
        summary="Set a counter's value (docnum_admin).",
        responses=_ERROR_RESPONSES,
    )
    async def set_counter(request: Request, body: SetCounterBody, caller: Caller) -> JSONResponse:
        value = await _call(
            request,
            caller,
            calls.set_counter(
                body.document_type,
                scope=body.scope_value,
                period=body.period,
                value=body.value,
                actor=caller.subject,
                reason=body.reason,
            ),
        )
        return _ok({"document_type": body.document_type, "scope_value": body.scope_value, "value": value})

    @app.post(
        f"{PREFIX}/import",
        tags=tags_admin,
        summary="Import legacy numbers (JSON rows or a CSV file) in one transaction; a report per row.",
        responses={**_ERROR_RESPONSES, 413: {"description": f"More than {MAX_IMPORT_ROWS:,} rows."}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": ImportBody.model_json_schema()},
                    "text/csv": {
                        "schema": {"type": "string"},
                        "example": "document_type,document_number,created_at,document_ref\n"
                        "COR,COR-0001,2019-01-05,ref-1\n",
                    },
                },
            }
        },
    )
    async def import_numbers(request: Request, caller: Caller) -> JSONResponse:
        rows, lines = await _import_rows(request)
        results: list[ImportResult] = await _call(
            request, caller, calls.import_numbers(rows, actor=caller.subject)
        )
        report = []
        for result in results:
            item = dataclasses.asdict(result)
            if lines is not None:
                item["line"] = lines[result.row_number - 1]
            report.append(item)
        counts = {
            status: sum(1 for r in results if r.status == status)
            for status in ("imported", "already_present", "rejected")
        }
        return _ok({**counts, "rows": report})

    @app.get(
        f"{PREFIX}/audit-export",
        tags=tags_reports,
        summary="Audit rows with from <= occurred_at < to, streamed as JSON Lines or CSV (docnum_reader).",
        responses={
            **_ERROR_RESPONSES,
            200: {"content": {"application/x-ndjson": {}, "text/csv": {}}, "description": "The rows."},
        },
    )
    async def audit_export(
        request: Request,
        caller: Caller,
        start: Annotated[datetime, Query(alias="from", description="Start (inclusive), ISO 8601.")],
        end: Annotated[datetime, Query(alias="to", description="End (exclusive), ISO 8601.")],
        document_type: Annotated[Text | None, Query()] = None,
        format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl",
    ) -> StreamingResponse:
        return await _export_response(_state(request), caller, start, end, document_type, format)


def _token(text: str) -> str:
    """A reservation token as the SQL takes it; not a UUID: NB004 like any unknown token (the seed's 'not
    found or expired')."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ReservationExpired(
            "reservation token is not a valid token",
            code="NB004",
            hint="Pass the token returned by reserve; reserve a new number if it is lost.",
        ) from None


async def _import_rows(request: Request) -> tuple[list[dict[str, Any]], list[int] | None]:
    """The rows of an import body (JSON object with rows, a JSON array, or CSV), and the CSV line of each.
    The body is at most MAX_IMPORT_BYTES (RequestLimits refused a larger one before reading it)."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    if media in ("text/csv", "application/csv"):
        return _csv_rows(raw)
    if media != "application/json":
        raise Problem(415, "Unsupported Media Type", "send application/json or text/csv")
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested deeper than Python parses
        raise Problem(422, "Invalid request", "the body is not valid JSON") from None
    if isinstance(parsed, list):
        parsed = {"rows": parsed}
    try:
        body = ImportBody.model_validate(parsed)
    except ValueError as exc:
        errors = exc.errors() if hasattr(exc, "errors") else []
        where = "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in errors[:5]
        )
        raise Problem(
            422, "Invalid request", f"rows must be objects of text fields ({where})"[:500]
        ) from None
    _check_size(len(body.rows))
    return [row.model_dump(exclude_none=True) for row in body.rows], None


def _too_large(what: str) -> Problem:
    return Problem(
        413,
        "Content Too Large",
        f"{what}; one request imports at most {MAX_IMPORT_ROWS:,} rows and {MAX_IMPORT_BYTES:,} bytes",
        hint="Split the file: each request is one transaction, and importing a row again is harmless.",
    )


def _check_size(count: int) -> None:
    if count > MAX_IMPORT_ROWS:
        raise _too_large(f"{count:,} rows")


def _csv_rows(raw: bytes) -> tuple[list[dict[str, Any]], list[int]]:
    """CSV read as ``docnum import`` reads a file (the same reader): header names (any case), empty cell =
    missing; a cell, a line or the text that cannot be read is 422 naming the line."""
    try:
        source = LegacyCsv.from_bytes(raw)
        rows: list[dict[str, Any]] = []
        lines: list[int] = []
        for batch in source.batches(MAX_IMPORT_ROWS + 1):
            rows += [{k: v for k, v in row.items() if v is not None} for row in batch.rows]
            lines += batch.lines
            _check_size(len(rows))
    except CsvProblem as exc:
        raise Problem(422, "Invalid request", str(exc)) from None
    for line, row in zip(lines, rows, strict=True):
        for name, value in row.items():
            try:
                _check_text(value)
            except ValueError as exc:
                raise Problem(422, "Invalid request", f"line {line}, {name}: {exc}") from None
    return rows, lines


class _ExportStream(StreamingResponse):
    """A streamed export that cannot hold its connection for ever: every chunk must be taken by the client
    within ``send_timeout`` seconds and the whole export must end within ``max_seconds``; otherwise the
    export stops, its database transaction ends and the connection is dropped (the client sees an incomplete
    body, never a complete-looking truncated one)."""

    def __init__(self, *args: Any, send_timeout: float, max_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_timeout = send_timeout
        self.max_seconds = max_seconds

    async def stream_response(self, send: Send) -> None:
        deadline = anyio.current_time() + self.max_seconds
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            async for chunk in self.body_iterator:
                data = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
                left = min(self.send_timeout, deadline - anyio.current_time())
                with anyio.move_on_after(max(left, 0.0)) as waited:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                # A send to a client that has gone returns at once, and so may a fetch: without this, nothing
                # would let the server's disconnect watcher stop an export whose client hung up.
                await anyio.lowlevel.checkpoint()
                if waited.cancelled_caught:
                    reason = (
                        f"it ran past its limit of {self.max_seconds:g} s"
                        if anyio.current_time() >= deadline
                        else f"its client took nothing for {self.send_timeout:g} s"
                    )
                    log.info("audit export stopped: %s", reason)
                    raise ResponseAbandoned(reason)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (asyncio.CancelledError, OSError):
            log.info("audit export ended early: the client hung up")
            raise
        finally:  # whatever ended it, its transaction ends and its connection goes back now
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]


async def _export_response(
    state: _State,
    caller: Principal,
    start: datetime,
    end: datetime,
    document_type: str | None,
    fmt: str,
) -> StreamingResponse:
    """Stream an audit export from a server-side cursor, a chunk at a time; the connection (one transaction
    as the caller's role) is held until the last row is sent, and then given back.

    At most ``export_slots`` exports stream at once (503 beyond), so the exports hold a bounded share of the
    pool and every other request keeps the rest; each is bounded in time (:class:`_ExportStream`), and
    PostgreSQL ends its transaction should this process stop fetching (idle_in_transaction_session_timeout).
    The first row is read before the response starts, so a refusal (403, NB006) is still a proper problem
    response; a failure after that cuts the response short."""
    settings = state.settings
    if state.exports >= settings.export_slots:
        raise Problem(
            503,
            "Too many exports",
            f"{settings.export_slots} audit exports are streaming already; this server runs no more at once",
            hint="Try again shortly, or export a shorter time range.",
            headers={"Retry-After": "5"},
        )
    state.exports += 1
    stack = AsyncExitStack()
    stack.callback(_release_export_slot, state)
    try:
        numbering = await stack.enter_async_context(
            state.database.session(caller, idle_timeout_s=int(settings.export_send_timeout * 2 + 10))
        )
        rows = numbering.audit_export(start, end, document_type, fetch_size=EXPORT_CHUNK)
        first: AuditEntry | None = await rows.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await stack.__aexit__(*sys.exc_info())
        raise

    encoder = ExportEncoder(ExportFormat(fmt))

    async def body() -> AsyncIterator[str]:
        failed: BaseException | None = None
        try:
            yield encoder.header()
            chunk: list[AuditEntry] = [first] if first is not None else []
            more = first is not None
            while more:
                # A fetch is never interrupted: a client that hangs up stops the export between two chunks,
                # and its connection goes back to the pool whole.
                with anyio.CancelScope(shield=True):
                    more = await _fill(chunk, rows, EXPORT_CHUNK)
                yield encoder.rows(chunk)
                chunk = []
            if first is None:
                yield encoder.rows(chunk)
        except (
            GeneratorExit,
            asyncio.CancelledError,
        ) as exc:  # stopped, or its client hung up (logged there)
            failed = exc
            raise
        except BaseException as exc:
            failed = exc
            log.error("audit export failed after it started", exc_info=exc)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await rows.aclose()
                if failed is None:
                    await stack.aclose()
                else:
                    await stack.__aexit__(type(failed), failed, failed.__traceback__)

    media = "application/x-ndjson" if fmt == "jsonl" else "text/csv; charset=utf-8"
    return _ExportStream(
        body(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit-export.{fmt}"'},
        send_timeout=settings.export_send_timeout,
        max_seconds=settings.export_max_seconds,
    )


async def _fill(chunk: list[AuditEntry], rows: AsyncIterator[AuditEntry], size: int) -> bool:
    """Add rows to ``chunk`` until it holds ``size``; False when there were no more."""
    async for entry in rows:
        chunk.append(entry)
        if len(chunk) >= size:
            return True
    return False


def _release_export_slot(state: _State) -> None:
    state.exports -= 1
