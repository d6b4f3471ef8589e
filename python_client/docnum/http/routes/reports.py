"""Reports: status, history, gaps, validate, duplicates (docnum_reader)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from docnum import calls
from docnum.http.bodies import Text
from docnum.http.common import (
    ERROR_RESPONSES,
    Caller,
    as_rows,
    ok,
    run,
)
from docnum.http.settings import PREFIX

router = APIRouter()
TAGS: list[str | Enum] = ["reports"]


@router.get(
    f"{PREFIX}/status",
    tags=TAGS,
    summary="Every counter, by type, scope and period.",
    responses=ERROR_RESPONSES,
)
async def status(
    request: Request, caller: Caller, document_type: Annotated[Text | None, Query()] = None
) -> JSONResponse:
    return ok(as_rows(await run(request, caller, calls.status(document_type))))


@router.get(
    f"{PREFIX}/history",
    tags=TAGS,
    summary="The audit trail of a number (and of its replacements), oldest first.",
    responses=ERROR_RESPONSES,
)
async def history(
    request: Request, caller: Caller, document_number: Annotated[Text, Query(min_length=1)]
) -> JSONResponse:
    return ok(as_rows(await run(request, caller, calls.history(document_number))))


@router.get(
    f"{PREFIX}/gaps",
    tags=TAGS,
    summary="Counter values never issued, with their reasons.",
    responses=ERROR_RESPONSES,
)
async def gaps(
    request: Request,
    caller: Caller,
    document_type: Annotated[Text | None, Query()] = None,
    scope_value: Annotated[Text | None, Query()] = None,
    period: Annotated[Text | None, Query()] = None,
) -> JSONResponse:
    found = await run(request, caller, calls.gaps(document_type, scope=scope_value, period=period))
    return ok(as_rows(found))


@router.get(
    f"{PREFIX}/validate",
    tags=TAGS,
    summary="The integrity report (empty when healthy).",
    responses=ERROR_RESPONSES,
)
async def validate(request: Request, caller: Caller) -> JSONResponse:
    findings = await run(request, caller, calls.validate())
    healthy = not any(f.severity == "error" for f in findings)
    return ok({"healthy": healthy, "findings": as_rows(findings)})


@router.get(
    f"{PREFIX}/duplicates",
    tags=TAGS,
    summary="Numbers used twice in the ledger or the registered tables.",
    responses=ERROR_RESPONSES,
)
async def duplicates(request: Request, caller: Caller) -> JSONResponse:
    return ok(as_rows(await run(request, caller, calls.check_duplicates())))
