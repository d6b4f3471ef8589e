"""The error codes of docnum: the one table every interface and manual is made from.

Each NB code is raised by the database (``RAISE ... USING ERRCODE = 'NB0xx'``); :mod:`docnum.errors` has one
exception class per row, the HTTP service answers with the row's status, and ``scripts/docs_tables.py``
writes the tables of ``docs/sql-api.md`` and ``docs/http-api.md`` from it. Tests fail when a code raised in
``sql/`` or ``migrations/`` is missing here, when a row is raised nowhere, or when a manual's table is stale.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CODES", "Code", "by_code"]


@dataclass(frozen=True)
class Code:
    code: str  #: the SQLSTATE
    exception: str  #: the class in docnum.errors
    title: str  #: a short name, also the HTTP problem's title
    meaning: str  #: when it is raised (Markdown)
    http_status: int
    retry_after: int | None = None  #: seconds, sent as Retry-After with the HTTP answer


CODES: tuple[Code, ...] = (
    Code(
        "NB001",
        "ConfigNotFound",
        "Unknown document type",
        "unknown document type, in every function that takes a `document_type` (reports included)",
        404,
    ),
    Code(
        "NB002",
        "SequenceExhausted",
        "Sequence exhausted",
        "the counter would pass the type's `max_value` (raise it with `alter_type`)",
        409,
    ),
    Code(
        "NB003",
        "LockTimeout",
        "Counter busy (lock timeout)",
        "waiting for a counter took longer than the type's `lock_timeout` (default 5 s) or the session's",
        503,
        retry_after=1,
    ),
    Code(
        "NB004",
        "ReservationExpired",
        "Reservation expired or unknown",
        "confirm or cancel of an unknown token; confirm of a cancelled or expired reservation, or one past"
        " `expires_at`",
        410,
    ),
    Code("NB005", "DuplicateNumber", "Duplicate number", "the number already exists (override, import)", 409),
    Code(
        "NB006",
        "InvalidArgument",
        "Invalid argument",
        "a bad template or argument (NULL or empty type, bad scope value, bad TTL, missing reason, text or"
        " metadata over its limit...); COLUMN names the argument",
        422,
    ),
    Code(
        "NB007",
        "ManualOverrideNotAllowed",
        "Manual override not allowed",
        "an override on a type with `allow_manual_override = false`",
        409,
    ),
    Code(
        "NB008",
        "NumberingUnavailable",
        "Numbering unavailable (read-only server)",
        "a read-only transaction or a hot standby: refused, never guessed",
        503,
        retry_after=5,
    ),
    Code(
        "NB009",
        "InvalidStateTransition",
        "Invalid state transition",
        "the number's state does not allow it: cancel of a confirmed number, confirm with another"
        " `document_ref`, void of a reservation, a change to audit rows or to a counter's identity",
        409,
    ),
    Code(
        "NB010",
        "TypeAlreadyExists",
        "Document type already exists",
        "`define_type` of an existing code with a different definition",
        409,
    ),
    Code(
        "NB011",
        "NumberNotFound",
        "Number not found",
        "void or void-and-replace of a number that was never issued",
        404,
    ),
    Code(
        "NB012",
        "RequestKeyReused",
        "Idempotency key reused for another request",
        "a `request_id` (HTTP: `Idempotency-Key`) already named another request: another type, scope,"
        " function or any other argument",
        422,
    ),
    Code(
        "NB013",
        "InstallNotPermitted",
        "Not permitted to install or upgrade docnum",
        "a migration (`docnum migrate`, the script of `docnum sql`) run by a role that cannot install or"
        " upgrade docnum, or outside one transaction; raised before anything changes, with the statement to"
        " run as HINT",
        403,
    ),
)


def by_code(code: str) -> Code | None:
    """The row of an NB code, or None for a code this version does not know (a newer schema)."""
    return _BY_CODE.get(code)


_BY_CODE = {row.code: row for row in CODES}
