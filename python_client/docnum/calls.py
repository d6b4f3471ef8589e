"""What the clients run, shared by :class:`~docnum.client.Numbering` and its async twin.

Each public method of the clients builds a :class:`Call` (statement, parameters, result shape) or a
:class:`Stream` with one of the functions below; only the waiting on the database differs between the two
flavours (``_client_async.py``, and ``_client_sync.py`` generated from it).  The retry policy lives here too.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from docnum import queries
from docnum.models import (
    AuditEntry,
    CounterStatus,
    DocumentType,
    Duplicate,
    Finding,
    Gap,
    ImportResult,
    RequestOutcome,
    Reservation,
)

log = logging.getLogger("docnum")

T = TypeVar("T")
Row = dict[str, Any]
#: An interval: a timedelta, or any text PostgreSQL reads as an interval (``'90'`` seconds, ``'5 minutes'``).
Interval = timedelta | str
#: A reservation token: a UUID, or its text form.
Token = uuid.UUID | str

#: SQLSTATEs after which the whole transaction may simply run again: serialization failure, deadlock.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
DEFAULT_ATTEMPTS = 4
_BACKOFF_BASE = 0.01  # seconds; doubled on every attempt, then jittered
_BACKOFF_CAP = 0.2
#: Rows fetched per round trip by the server-side cursor of ``audit_export``.
DEFAULT_FETCH_SIZE = 2000

#: A run-time parameter for the current transaction alone (``AsyncNumbering.with_settings``).
SET_LOCAL = "SELECT pg_catalog.set_config(%s, %s, true)"
#: The cancel reason recorded when a ``reservation()`` block ends without confirming.
RELEASED_WITHOUT_CONFIRM = "reservation released without confirm"
CANCEL_FAILED = "could not cancel reservation %s; it stays reserved until it expires"
LEFT_TO_EXPIRE = "reservation %s stays reserved until it expires: the connection's transaction failed"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One statement, its parameters, and how to turn the fetched rows into the method's result."""

    query: str | sql.Composed
    params: Mapping[str, Any]
    result: Callable[[list[Row]], T]


@dataclass(frozen=True)
class Stream(Generic[T]):
    """One statement whose rows are read lazily through a server-side cursor, each turned into a T."""

    query: str
    params: Mapping[str, Any]
    row: Callable[[Row], T]
    cursor_name: str


def _jsonb(value: Mapping[str, Any] | None) -> Jsonb | None:
    return None if value is None else Jsonb(dict(value))


def _document_type(rows: list[Row]) -> DocumentType:
    return DocumentType(**rows[0])


def _maybe_document_type(rows: list[Row]) -> DocumentType | None:
    return DocumentType(**rows[0]) if rows else None


def _reservation(rows: list[Row]) -> Reservation:
    return Reservation(**rows[0])


def _document_number(rows: list[Row]) -> str:
    number: str = rows[0]["document_number"]
    return number


def _reservations(rows: list[Row]) -> list[Reservation]:
    return [Reservation(**row) for row in rows]


def _document_numbers(rows: list[Row]) -> list[str]:
    return [str(row["document_number"]) for row in rows]


def _expired(rows: list[Row]) -> int:
    expired: int = rows[0]["expired"]
    return expired


def _audit_entries(rows: list[Row]) -> list[AuditEntry]:
    return [AuditEntry(**row) for row in rows]


def _audit_entry(row: Row) -> AuditEntry:
    return AuditEntry(**row)


def _sequence_value(rows: list[Row]) -> int:
    value: int = rows[0]["value"]
    return value


def _nothing(rows: list[Row]) -> None:
    return None


def _import_results(rows: list[Row]) -> list[ImportResult]:
    return [ImportResult(**row) for row in rows]


def _counter_statuses(rows: list[Row]) -> list[CounterStatus]:
    return [CounterStatus(**row) for row in rows]


def _gap_rows(rows: list[Row]) -> list[Gap]:
    return [Gap(**row) for row in rows]


def _duplicates(rows: list[Row]) -> list[Duplicate]:
    return [
        Duplicate(row["document_number"], row["occurrences"], tuple(row["found_in"] or ()), row["problem"])
        for row in rows
    ]


def _findings(rows: list[Row]) -> list[Finding]:
    return [Finding(**row) for row in rows]


def _json_field(value: Any) -> Any:
    """Dates and times as ISO 8601 text, the form ``docnum.import_numbers`` reads; other values unchanged."""
    return value.isoformat() if isinstance(value, datetime | date) else value


def define_type(
    code: str,
    format: str,
    *,
    scope: str | None,
    reset: str | None,
    time_zone: str | None,
    max_value: int | None,
    reservation_ttl: Interval | None,
    lock_timeout: Interval | None,
    allow_manual_override: bool | None,
    metadata: Mapping[str, Any] | None,
    actor: str | None,
) -> Call[DocumentType]:
    # Arguments left as None are not sent, so the SQL defaults ('GLOBAL', 'UTC', '5 minutes'...) apply.
    optional: dict[str, Any] = {
        "scope": scope,
        "reset": reset,
        "time_zone": time_zone,
        "max_value": max_value,
        "reservation_ttl": reservation_ttl,
        "lock_timeout": lock_timeout,
        "allow_manual_override": allow_manual_override,
        "metadata": _jsonb(metadata),
    }
    given = {name: value for name, value in optional.items() if value is not None}
    params = {"code": code, "format": format, "actor": actor, **given}
    return Call(queries.define_type(given.keys()), params, _document_type)


def alter_type(
    document_type: str,
    *,
    format: str | None,
    time_zone: str | None,
    max_value: int | None,
    reservation_ttl: Interval | None,
    lock_timeout: Interval | None,
    allow_manual_override: bool | None,
    metadata: Mapping[str, Any] | None,
    actor: str | None,
    reason: str | None,
) -> Call[DocumentType]:
    params = {
        "document_type": document_type,
        "format": format,
        "time_zone": time_zone,
        "max_value": max_value,
        "reservation_ttl": reservation_ttl,
        "lock_timeout": lock_timeout,
        "allow_manual_override": allow_manual_override,
        "metadata": _jsonb(metadata),
        "actor": actor,
        "reason": reason,
    }
    return Call(queries.ALTER_TYPE, params, _document_type)


def reserve(
    document_type: str,
    *,
    scope: str | None,
    actor: str | None,
    metadata: Mapping[str, Any] | None,
    ttl: Interval | None,
    document_date: date | None,
    request_id: str | None,
) -> Call[Reservation]:
    params = {
        "document_type": document_type,
        "scope": scope,
        "actor": actor,
        "metadata": _jsonb(metadata),
        "ttl": ttl,
        "document_date": document_date,
        "request_id": request_id,
    }
    return Call(queries.RESERVE_NUMBER, params, _reservation)


def confirm(token: Token, *, actor: str | None, document_ref: str | None) -> Call[str]:
    params = {"token": token, "actor": actor, "document_ref": document_ref}
    return Call(queries.CONFIRM_NUMBER, params, _document_number)


def cancel(token: Token, *, actor: str | None, reason: str | None) -> Call[str]:
    params = {"token": token, "actor": actor, "reason": reason}
    return Call(queries.CANCEL_NUMBER, params, _document_number)


def next_number(
    document_type: str,
    *,
    scope: str | None,
    actor: str | None,
    document_ref: str | None,
    document_date: date | None,
    request_id: str | None,
) -> Call[str]:
    params = {
        "document_type": document_type,
        "scope": scope,
        "actor": actor,
        "document_ref": document_ref,
        "document_date": document_date,
        "request_id": request_id,
    }
    return Call(queries.NEXT_NUMBER, params, _document_number)


def next_numbers(
    document_type: str,
    count: int,
    *,
    scope: str | None,
    actor: str | None,
    document_date: date | None,
) -> Call[list[str]]:
    params = {
        "document_type": document_type,
        "count": count,
        "scope": scope,
        "actor": actor,
        "document_date": document_date,
    }
    return Call(queries.NEXT_NUMBERS, params, _document_numbers)


def reserve_numbers(
    document_type: str,
    count: int,
    *,
    scope: str | None,
    actor: str | None,
    metadata: Mapping[str, Any] | None,
    ttl: Interval | None,
    document_date: date | None,
) -> Call[list[Reservation]]:
    params = {
        "document_type": document_type,
        "count": count,
        "scope": scope,
        "actor": actor,
        "metadata": _jsonb(metadata),
        "ttl": ttl,
        "document_date": document_date,
    }
    return Call(queries.RESERVE_NUMBERS, params, _reservations)


def _request_outcome(rows: list[Row]) -> RequestOutcome | None:
    return RequestOutcome(**rows[0]) if rows else None


def find_request(request_id: str) -> Call[RequestOutcome | None]:
    return Call(queries.FIND_REQUEST, {"request_id": request_id}, _request_outcome)


def expire_reservations() -> Call[int]:
    return Call(queries.EXPIRE_RESERVATIONS, {}, _expired)


def get_type(code: str) -> Call[DocumentType | None]:
    return Call(queries.GET_TYPE, {"code": code}, _maybe_document_type)


def history(document_number: str) -> Call[list[AuditEntry]]:
    return Call(queries.NUMBER_HISTORY, {"document_number": document_number}, _audit_entries)


def override(
    document_type: str, document_number: str, *, actor: str | None, reason: str, skip_validation: bool
) -> Call[str]:
    params = {
        "document_type": document_type,
        "document_number": document_number,
        "actor": actor,
        "reason": reason,
        "skip_validation": skip_validation,
    }
    return Call(queries.OVERRIDE_NUMBER, params, _document_number)


def void(document_number: str, *, actor: str | None, reason: str) -> Call[str]:
    params = {"document_number": document_number, "actor": actor, "reason": reason}
    return Call(queries.VOID_NUMBER, params, _document_number)


def void_and_replace(document_number: str, *, actor: str | None, reason: str) -> Call[str]:
    params = {"document_number": document_number, "actor": actor, "reason": reason}
    return Call(queries.VOID_AND_REPLACE, params, _document_number)


def set_counter(
    document_type: str, *, scope: str | None, period: str | None, value: int, actor: str | None, reason: str
) -> Call[int]:
    params = {
        "document_type": document_type,
        "scope": scope,
        "period": period,
        "value": value,
        "actor": actor,
        "reason": reason,
    }
    return Call(queries.SET_COUNTER, params, _sequence_value)


def import_numbers(rows: Iterable[Mapping[str, Any]], *, actor: str | None) -> Call[list[ImportResult]]:
    # The whole batch travels as one jsonb array: one statement, one transaction, one result row per row.
    batch = [{key: _json_field(value) for key, value in row.items()} for row in rows]
    return Call(queries.IMPORT_NUMBERS, {"rows": Jsonb(batch), "actor": actor}, _import_results)


def register_document_table(table_name: str, number_column: str, *, actor: str | None) -> Call[None]:
    params = {"table_name": table_name, "number_column": number_column, "actor": actor}
    return Call(queries.REGISTER_DOCUMENT_TABLE, params, _nothing)


def status(document_type: str | None) -> Call[list[CounterStatus]]:
    return Call(queries.SEQUENCE_STATUS, {"document_type": document_type}, _counter_statuses)


def gaps(document_type: str | None, *, scope: str | None, period: str | None) -> Call[list[Gap]]:
    params = {"document_type": document_type, "scope": scope, "period": period}
    return Call(queries.GAPS, params, _gap_rows)


def _gap(row: Row) -> Gap:
    return Gap(**row)


def gaps_stream(document_type: str | None, *, scope: str | None, period: str | None) -> Stream[Gap]:
    params = {"document_type": document_type, "scope": scope, "period": period}
    return Stream(queries.GAPS, params, _gap, f"docnum_gaps_{uuid.uuid4().hex}")


def check_duplicates() -> Call[list[Duplicate]]:
    return Call(queries.CHECK_DUPLICATES, {}, _duplicates)


def validate() -> Call[list[Finding]]:
    return Call(queries.VALIDATE, {}, _findings)


def audit_export(
    start: datetime | date, end: datetime | date, document_type: str | None
) -> Stream[AuditEntry]:
    params = {"from_time": start, "to_time": end, "document_type": document_type}
    # A fresh cursor name, so two exports may be open on one connection at the same time.
    return Stream(queries.AUDIT_EXPORT, params, _audit_entry, f"docnum_audit_export_{uuid.uuid4().hex}")


def should_retry(exc: psycopg.Error, attempt: int, attempts: int) -> bool:
    return exc.sqlstate in RETRYABLE_SQLSTATES and attempt < attempts


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``: full jitter over an exponentially growing window."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1)))


def release_reason(exc: BaseException) -> str:
    return f"reservation released after {type(exc).__name__}"


def owns_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """An idle connection gets its own transaction; any other state belongs to the caller."""
    return conn.info.transaction_status == TransactionStatus.IDLE
