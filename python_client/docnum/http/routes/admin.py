"""Administration: manual numbers, void, replace, set a counter, import legacy numbers (docnum_admin)."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from docnum import calls
from docnum.http.bodies import ImportBody, ManualBody, SetCounterBody, VoidBody, check_text
from docnum.http.common import (
    ERROR_RESPONSES,
    Caller,
    ok,
    run,
)
from docnum.http.errors import Problem
from docnum.http.settings import MAX_IMPORT_BYTES, MAX_IMPORT_ROWS, PREFIX
from docnum.interchange.csv_import import CsvProblem, LegacyCsv
from docnum.models import ImportResult

router = APIRouter()
TAGS: list[str | Enum] = ["administration"]


@router.post(
    f"{PREFIX}/manual",
    status_code=201,
    tags=TAGS,
    summary="Record a number chosen by a person (a manual override; docnum_admin).",
    responses=ERROR_RESPONSES,
)
async def manual(request: Request, body: ManualBody, caller: Caller) -> JSONResponse:
    number = await run(
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
    return ok({"document_number": number, "document_type": body.document_type}, 201)


@router.post(
    f"{PREFIX}/void",
    tags=TAGS,
    summary="Take a number out of use (docnum_admin).",
    responses=ERROR_RESPONSES,
)
async def void(request: Request, body: VoidBody, caller: Caller) -> JSONResponse:
    number = await run(
        request, caller, calls.void(body.document_number, actor=caller.subject, reason=body.reason)
    )
    return ok({"document_number": number})


@router.post(
    f"{PREFIX}/void-and-replace",
    status_code=201,
    tags=TAGS,
    summary="Void a number and issue its replacement in the same counter (docnum_admin).",
    responses=ERROR_RESPONSES,
)
async def void_and_replace(request: Request, body: VoidBody, caller: Caller) -> JSONResponse:
    replacement = await run(
        request,
        caller,
        calls.void_and_replace(body.document_number, actor=caller.subject, reason=body.reason),
    )
    return ok({"voided_number": body.document_number, "document_number": replacement}, 201)


@router.post(
    f"{PREFIX}/set-counter",
    tags=TAGS,
    summary="Set a counter's value (docnum_admin).",
    responses=ERROR_RESPONSES,
)
async def set_counter(request: Request, body: SetCounterBody, caller: Caller) -> JSONResponse:
    value = await run(
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
    return ok({"document_type": body.document_type, "scope_value": body.scope_value, "value": value})


@router.post(
    f"{PREFIX}/import",
    tags=TAGS,
    summary="Import legacy numbers (JSON rows or a CSV file) in one transaction; a report per row.",
    responses={**ERROR_RESPONSES, 413: {"description": f"More than {MAX_IMPORT_ROWS:,} rows."}},
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
    results: list[ImportResult] = await run(request, caller, calls.import_numbers(rows, actor=caller.subject))
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
    return ok({**counts, "rows": report})


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
                check_text(value)
            except ValueError as exc:
                raise Problem(422, "Invalid request", f"line {line}, {name}: {exc}") from None
    return rows, lines
