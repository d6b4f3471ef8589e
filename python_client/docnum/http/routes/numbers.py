"""Issuing numbers: reserve, confirm, cancel, next, the batches, request keys and the sweep (docnum_app)."""

from __future__ import annotations

import dataclasses
from enum import Enum

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from docnum import calls
from docnum.http.bodies import BatchBody, NextBody, ReserveBatchBody, ReserveBody, Text, TokenBody
from docnum.http.common import (
    ERROR_RESPONSES,
    ISSUING_RESPONSES,
    Caller,
    IdempotencyKey,
    as_interval,
    as_rows,
    idempotency_request_id,
    ok,
    reservation_token,
    run,
)
from docnum.http.errors import Problem
from docnum.http.settings import PREFIX

router = APIRouter()
TAGS: list[str | Enum] = ["numbers"]


@router.post(
    f"{PREFIX}/reserve",
    status_code=201,
    tags=TAGS,
    summary="Reserve the next number (held until confirmed, cancelled or expired).",
    responses=ISSUING_RESPONSES,
)
async def reserve(
    request: Request, body: ReserveBody, caller: Caller, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    request_id = idempotency_request_id(caller, idempotency_key)
    reservation = await run(
        request,
        caller,
        calls.reserve(
            body.document_type,
            scope=body.scope_value,
            actor=caller.subject,
            metadata=body.metadata,
            ttl=as_interval(body.ttl_seconds),
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
    return ok(data, 201)


@router.post(
    f"{PREFIX}/confirm",
    tags=TAGS,
    summary="Make a reserved number final.",
    responses=ERROR_RESPONSES,
)
async def confirm(request: Request, body: TokenBody, caller: Caller) -> JSONResponse:
    token = reservation_token(body.token)
    number = await run(
        request, caller, calls.confirm(token, actor=caller.subject, document_ref=body.document_ref)
    )
    return ok({"document_number": number, "token": body.token})


@router.post(
    f"{PREFIX}/cancel",
    tags=TAGS,
    summary="Give up a reserved number (it is never reissued).",
    responses=ERROR_RESPONSES,
)
async def cancel(request: Request, body: TokenBody, caller: Caller) -> JSONResponse:
    token = reservation_token(body.token)
    number = await run(request, caller, calls.cancel(token, actor=caller.subject, reason=body.reason))
    return ok({"document_number": number, "token": body.token}, message="Reservation cancelled")


@router.post(
    f"{PREFIX}/next",
    status_code=201,
    tags=TAGS,
    summary="Issue and confirm the next number in one step.",
    responses=ISSUING_RESPONSES,
)
async def next_number(
    request: Request, body: NextBody, caller: Caller, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    request_id = idempotency_request_id(caller, idempotency_key)
    number = await run(
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
    return ok(data, 201)


@router.get(
    f"{PREFIX}/requests/{{idempotency_key}}",
    tags=TAGS,
    summary="What an Idempotency-Key of yours was served with (404 when nothing committed).",
    responses=ERROR_RESPONSES,
)
async def find_request(request: Request, idempotency_key: Text, caller: Caller) -> JSONResponse:
    request_id = idempotency_request_id(caller, idempotency_key)
    assert request_id is not None
    outcome = await run(request, caller, calls.find_request(request_id))
    if outcome is None:
        raise Problem(404, "Not Found", "nothing was issued for this Idempotency-Key")
    return ok(dataclasses.asdict(outcome))


@router.post(
    f"{PREFIX}/next-batch",
    status_code=201,
    tags=TAGS,
    summary="Issue and confirm the next count numbers of one counter, in order (1 to 10,000).",
    responses=ISSUING_RESPONSES,
)
async def next_batch(request: Request, body: BatchBody, caller: Caller) -> JSONResponse:
    numbers = await run(
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
    return ok({"document_numbers": numbers, "document_type": body.document_type}, 201)


@router.post(
    f"{PREFIX}/reserve-batch",
    status_code=201,
    tags=TAGS,
    summary="Reserve the next count numbers of one counter, each with its own token (1 to 10,000).",
    responses=ISSUING_RESPONSES,
)
async def reserve_batch(request: Request, body: ReserveBatchBody, caller: Caller) -> JSONResponse:
    reservations = await run(
        request,
        caller,
        calls.reserve_numbers(
            body.document_type,
            body.count,
            scope=body.scope_value,
            actor=caller.subject,
            metadata=body.metadata,
            ttl=as_interval(body.ttl_seconds),
            document_date=body.document_date,
        ),
        issuing=True,
    )
    return ok({"reservations": as_rows(reservations), "document_type": body.document_type}, 201)


@router.post(
    f"{PREFIX}/expire",
    tags=TAGS,
    summary="Expire the reservations past their expires_at; returns how many.",
    responses=ERROR_RESPONSES,
)
async def expire(request: Request, caller: Caller) -> JSONResponse:
    expired = await run(request, caller, calls.expire_reservations())
    return ok({"expired": expired})
