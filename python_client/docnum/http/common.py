"""What every route shares: the envelope, the caller, the one way to run a call, the documented errors."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from docnum.calls import Call
from docnum.errors import ReservationExpired
from docnum.http.auth import Principal
from docnum.http.bodies import Text
from docnum.http.errors import Problem
from docnum.http.settings import AppState
from docnum.interchange.jsonable import json_value

T = TypeVar("T")

# -- helpers ----------------------------------------------------------------------------------------------


class Envelope(JSONResponse):
    """The NestJS service's ``{"success": true, ...}`` body, encoded with the CLI's JSON conventions (times in
    ISO 8601, UUIDs as text, decimals as numbers, intervals in seconds)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=json_value, ensure_ascii=False, separators=(",", ":")).encode()


def ok(data: Any, status: int = 200, **extra: Any) -> JSONResponse:
    return Envelope({"success": True, **extra, "data": data}, status_code=status)


def as_rows(items: list[Any]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(item) for item in items]


def as_interval(value: int | None, unit: str = "seconds") -> str | None:
    return None if value is None else f"{value} {unit}"


def idempotency_request_id(principal: Principal, key: str | None) -> str | None:
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


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.docnum
    return state


_bearer = HTTPBearer(
    auto_error=False,
    description="A JWT with claims sub (the actor), exp and role (docnum_app, docnum_reader, docnum_admin).",
)


async def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The verified caller; 401/403 before anything runs."""
    return app_state(request).verifier.verify(credentials.credentials if credentials else None)


Caller = Annotated[Principal, Depends(principal)]
IdempotencyKey = Annotated[
    Text | None,
    Header(
        alias="Idempotency-Key",
        description="Retries with the same key get the same number (per subject); a key names one request.",
    ),
]


async def run(request: Request, caller: Principal, call: Call[T], *, issuing: bool = False) -> T:
    """Run ``call`` as ``caller``. A call that issues numbers first takes one from the caller's rate limit
    (429 otherwise): only a request that got this far, past every check of its input, counts."""
    state = app_state(request)
    if issuing:
        state.limiter.check(caller.subject)
    return await state.database.call(caller, call)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
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
ISSUING_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    429: {"description": "Over the per-subject rate limit; see Retry-After."},
}


def reservation_token(text: str) -> str:
    """A reservation token as the SQL takes it; not a UUID: NB004 like any unknown token (the NestJS
    service's 'not found or expired')."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ReservationExpired(
            "reservation token is not a valid token",
            code="NB004",
            hint="Pass the token returned by reserve; reserve a new number if it is lost.",
        ) from None
