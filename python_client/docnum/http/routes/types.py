"""Document types: read, define and change one (docnum_admin)."""

from __future__ import annotations

import dataclasses
from enum import Enum

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from docnum import calls
from docnum.http.bodies import AlterTypeBody, DefineTypeBody, Text
from docnum.http.common import (
    ERROR_RESPONSES,
    Caller,
    as_interval,
    ok,
    run,
)
from docnum.http.errors import Problem
from docnum.http.settings import PREFIX

router = APIRouter()
TAGS: list[str | Enum] = ["administration"]


@router.get(
    f"{PREFIX}/types/{{code}}",
    tags=TAGS,
    summary="A document type's definition.",
    responses=ERROR_RESPONSES,
)
async def get_type(request: Request, code: Text, caller: Caller) -> JSONResponse:
    found = await run(request, caller, calls.get_type(code))
    if found is None:
        raise Problem(404, "Unknown document type", f"document type {code!r} is not defined", code="NB001")
    return ok(dataclasses.asdict(found))


@router.post(
    f"{PREFIX}/types",
    status_code=201,
    tags=TAGS,
    summary="Define a document type (docnum_admin); the same definition again is harmless.",
    responses=ERROR_RESPONSES,
)
async def define_type(request: Request, body: DefineTypeBody, caller: Caller) -> JSONResponse:
    defined = await run(
        request,
        caller,
        calls.define_type(
            body.code,
            body.format,
            scope=body.scope,
            reset=body.reset,
            time_zone=body.time_zone,
            max_value=body.max_value,
            reservation_ttl=as_interval(body.reservation_ttl_seconds),
            lock_timeout=as_interval(body.lock_timeout_ms, "milliseconds"),
            allow_manual_override=body.allow_manual_override,
            metadata=body.metadata,
            actor=caller.subject,
        ),
    )
    return ok(dataclasses.asdict(defined), 201)


@router.patch(
    f"{PREFIX}/types/{{code}}",
    tags=TAGS,
    summary="Change a document type (docnum_admin); fields left out stay as they are.",
    responses=ERROR_RESPONSES,
)
async def alter_type(request: Request, code: Text, body: AlterTypeBody, caller: Caller) -> JSONResponse:
    altered = await run(
        request,
        caller,
        calls.alter_type(
            code,
            format=body.format,
            time_zone=body.time_zone,
            max_value=body.max_value,
            reservation_ttl=as_interval(body.reservation_ttl_seconds),
            lock_timeout=as_interval(body.lock_timeout_ms, "milliseconds"),
            allow_manual_override=body.allow_manual_override,
            metadata=body.metadata,
            actor=caller.subject,
            reason=body.reason,
        ),
    )
    return ok(dataclasses.asdict(altered))
