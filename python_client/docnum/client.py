"""The docnum client: one method per SQL function of docs/sql-api.md, one statement per method.

:class:`Numbering` works with a ``psycopg.Connection`` or a ``psycopg_pool.ConnectionPool``;
:class:`AsyncNumbering` with their async counterparts.  Both build the same :class:`_Call` (statement,
parameters, result shape) from the same functions below and differ only in how they wait for the database.
``audit_export`` is the one method that does not fetch everything at once: it builds a :class:`_Stream`
and reads its rows lazily through a server-side cursor (see :meth:`Numbering.audit_export`).

Transactions
    With a pool, or with a connection that is idle, the client owns the transaction: it runs the statement
    in ``conn.transaction()``, which commits on success.  Only then does it retry a serialization failure
    (40001) or a deadlock (40P01), a few times with a short jittered backoff: the transaction rolled back as
    a whole, so running it again is safe.  With a connection already inside a transaction the statement
    joins the caller's transaction; nothing is committed and nothing is retried.  No other error is ever
    retried, and the client never makes up a number: every number comes from the database.

Connection poolers
    The client works unchanged behind PgBouncer (or any pooler) in transaction pooling mode.  It keeps no
    session state: no ``SET``, no session-level advisory lock, no temporary table, no ``LISTEN``; the
    server-side cursor of ``audit_export`` lives inside a transaction.  And it never prepares a statement on
    the server (``execute(..., prepare=False)``): a prepared statement belongs to the server connection that
    ran it, which a transaction pooler hands to another client next, so psycopg's automatic preparation fails
    there with ``prepared statement "_pg3_0" already exists`` (or "does not exist").  Each statement is one
    function call whose planning costs nothing measurable; the functions' own queries are cached by PL/pgSQL
    whatever the protocol.  Statements of your own on the same connections are your psycopg settings' affair:
    create those connections or pools with ``prepare_threshold=None`` (see the README).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from docnum import queries
from docnum.errors import translated
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

__all__ = ["AsyncNumbering", "AsyncReservationHandle", "Numbering", "ReservationHandle"]

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

#: The cancel reason recorded when a ``reservation()`` block ends without confirming.
RELEASED_WITHOUT_CONFIRM = "reservation released without confirm"
_CANCEL_FAILED = "could not cancel reservation %s; it stays reserved until it expires"
_LEFT_TO_EXPIRE = "reservation %s stays reserved until it expires: the connection's transaction failed"


# ----------------------------------------------------------------------------------------------------
# What to run: shared by the sync and async clients.


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One statement, its parameters, and how to turn the fetched rows into the method's result."""

    query: str | sql.Composed
    params: Mapping[str, Any]
    result: Callable[[list[Row]], T]


@dataclass(frozen=True)
class _Stream(Generic[T]):
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


def _define_type(
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
) -> _Call[DocumentType]:
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
    return _Call(queries.define_type(given.keys()), params, _document_type)


def _alter_type(
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
) -> _Call[DocumentType]:
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
    return _Call(queries.ALTER_TYPE, params, _document_type)


def _reserve(
    document_type: str,
    *,
    scope: str | None,
    actor: str | None,
    metadata: Mapping[str, Any] | None,
    ttl: Interval | None,
    document_date: date | None,
    request_id: str | None,
) -> _Call[Reservation]:
    params = {
        "document_type": document_type,
        "scope": scope,
        "actor": actor,
        "metadata": _jsonb(metadata),
        "ttl": ttl,
        "document_date": document_date,
        "request_id": request_id,
    }
    return _Call(queries.RESERVE_NUMBER, params, _reservation)


def _confirm(token: Token, *, actor: str | None, document_ref: str | None) -> _Call[str]:
    params = {"token": token, "actor": actor, "document_ref": document_ref}
    return _Call(queries.CONFIRM_NUMBER, params, _document_number)


def _cancel(token: Token, *, actor: str | None, reason: str | None) -> _Call[str]:
    params = {"token": token, "actor": actor, "reason": reason}
    return _Call(queries.CANCEL_NUMBER, params, _document_number)


def _next_number(
    document_type: str,
    *,
    scope: str | None,
    actor: str | None,
    document_ref: str | None,
    document_date: date | None,
    request_id: str | None,
) -> _Call[str]:
    params = {
        "document_type": document_type,
        "scope": scope,
        "actor": actor,
        "document_ref": document_ref,
        "document_date": document_date,
        "request_id": request_id,
    }
    return _Call(queries.NEXT_NUMBER, params, _document_number)


def _request_outcome(rows: list[Row]) -> RequestOutcome | None:
    return RequestOutcome(**rows[0]) if rows else None


def _find_request(request_id: str) -> _Call[RequestOutcome | None]:
    return _Call(queries.FIND_REQUEST, {"request_id": request_id}, _request_outcome)


def _expire_reservations() -> _Call[int]:
    return _Call(queries.EXPIRE_RESERVATIONS, {}, _expired)


def _get_type(code: str) -> _Call[DocumentType | None]:
    return _Call(queries.GET_TYPE, {"code": code}, _maybe_document_type)


def _history(document_number: str) -> _Call[list[AuditEntry]]:
    return _Call(queries.NUMBER_HISTORY, {"document_number": document_number}, _audit_entries)


def _override(
    document_type: str, document_number: str, *, actor: str | None, reason: str, skip_validation: bool
) -> _Call[str]:
    params = {
        "document_type": document_type,
        "document_number": document_number,
        "actor": actor,
        "reason": reason,
        "skip_validation": skip_validation,
    }
    return _Call(queries.OVERRIDE_NUMBER, params, _document_number)


def _void(document_number: str, *, actor: str | None, reason: str) -> _Call[str]:
    params = {"document_number": document_number, "actor": actor, "reason": reason}
    return _Call(queries.VOID_NUMBER, params, _document_number)


def _void_and_replace(document_number: str, *, actor: str | None, reason: str) -> _Call[str]:
    params = {"document_number": document_number, "actor": actor, "reason": reason}
    return _Call(queries.VOID_AND_REPLACE, params, _document_number)


def _set_counter(
    document_type: str, *, scope: str | None, period: str | None, value: int, actor: str | None, reason: str
) -> _Call[int]:
    params = {
        "document_type": document_type,
        "scope": scope,
        "period": period,
        "value": value,
        "actor": actor,
        "reason": reason,
    }
    return _Call(queries.SET_COUNTER, params, _sequence_value)


def _import_numbers(rows: Iterable[Mapping[str, Any]], *, actor: str | None) -> _Call[list[ImportResult]]:
    # The whole batch travels as one jsonb array: one statement, one transaction, one result row per row.
    batch = [{key: _json_field(value) for key, value in row.items()} for row in rows]
    return _Call(queries.IMPORT_NUMBERS, {"rows": Jsonb(batch), "actor": actor}, _import_results)


def _register_document_table(table_name: str, number_column: str, *, actor: str | None) -> _Call[None]:
    params = {"table_name": table_name, "number_column": number_column, "actor": actor}
    return _Call(queries.REGISTER_DOCUMENT_TABLE, params, _nothing)


def _status(document_type: str | None) -> _Call[list[CounterStatus]]:
    return _Call(queries.SEQUENCE_STATUS, {"document_type": document_type}, _counter_statuses)


def _gaps(document_type: str | None, *, scope: str | None, period: str | None) -> _Call[list[Gap]]:
    params = {"document_type": document_type, "scope": scope, "period": period}
    return _Call(queries.GAPS, params, _gap_rows)


def _gap(row: Row) -> Gap:
    return Gap(**row)


def _gaps_stream(document_type: str | None, *, scope: str | None, period: str | None) -> _Stream[Gap]:
    params = {"document_type": document_type, "scope": scope, "period": period}
    return _Stream(queries.GAPS, params, _gap, f"docnum_gaps_{uuid.uuid4().hex}")


def _check_duplicates() -> _Call[list[Duplicate]]:
    return _Call(queries.CHECK_DUPLICATES, {}, _duplicates)


def _validate() -> _Call[list[Finding]]:
    return _Call(queries.VALIDATE, {}, _findings)


def _audit_export(
    start: datetime | date, end: datetime | date, document_type: str | None
) -> _Stream[AuditEntry]:
    params = {"from_time": start, "to_time": end, "document_type": document_type}
    # A fresh cursor name, so two exports may be open on one connection at the same time.
    return _Stream(queries.AUDIT_EXPORT, params, _audit_entry, f"docnum_audit_export_{uuid.uuid4().hex}")


def _should_retry(exc: psycopg.Error, attempt: int, attempts: int) -> bool:
    return exc.sqlstate in RETRYABLE_SQLSTATES and attempt < attempts


def _backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``: full jitter over an exponentially growing window."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1)))


def _release_reason(exc: BaseException) -> str:
    return f"reservation released after {type(exc).__name__}"


def _owns_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """An idle connection gets its own transaction; any other state belongs to the caller."""
    return conn.info.transaction_status == TransactionStatus.IDLE


# ----------------------------------------------------------------------------------------------------
# Synchronous client


class Numbering:
    """Issue and manage document numbers through the docnum SQL functions (psycopg 3, synchronous).

    ``source`` is a connection or a connection pool.  A pool may be shared by any number of threads; a single
    connection serves one thread at a time.
    """

    def __init__(
        self,
        source: psycopg.Connection[Any] | ConnectionPool[Any],
        *,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        if not isinstance(source, psycopg.Connection | ConnectionPool):
            raise TypeError(f"expected a psycopg Connection or ConnectionPool, got {type(source).__name__}")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._source = source
        self._attempts = attempts

    # -- administration -------------------------------------------------------------------------------

    def define_type(
        self,
        code: str,
        format: str,
        *,
        scope: str | None = None,
        reset: str | None = None,
        time_zone: str | None = None,
        max_value: int | None = None,
        reservation_ttl: Interval | None = None,
        lock_timeout: Interval | None = None,
        allow_manual_override: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> DocumentType:
        """Create a document type (``docnum.define_type``); arguments left as None take the SQL defaults."""
        return self._execute(
            _define_type(
                code,
                format,
                scope=scope,
                reset=reset,
                time_zone=time_zone,
                max_value=max_value,
                reservation_ttl=reservation_ttl,
                lock_timeout=lock_timeout,
                allow_manual_override=allow_manual_override,
                metadata=metadata,
                actor=actor,
            )
        )

    def alter_type(
        self,
        document_type: str,
        *,
        format: str | None = None,
        time_zone: str | None = None,
        max_value: int | None = None,
        reservation_ttl: Interval | None = None,
        lock_timeout: Interval | None = None,
        allow_manual_override: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> DocumentType:
        """Change a document type (``docnum.alter_type``); arguments left as None stay unchanged."""
        return self._execute(
            _alter_type(
                document_type,
                format=format,
                time_zone=time_zone,
                max_value=max_value,
                reservation_ttl=reservation_ttl,
                lock_timeout=lock_timeout,
                allow_manual_override=allow_manual_override,
                metadata=metadata,
                actor=actor,
                reason=reason,
            )
        )

    def get_type(self, code: str) -> DocumentType | None:
        """The document type ``code``, or None when there is none."""
        return self._execute(_get_type(code))

    # -- numbers --------------------------------------------------------------------------------------

    def reserve(
        self,
        document_type: str,
        *,
        scope: str | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        ttl: Interval | None = None,
        document_date: date | None = None,
        request_id: str | None = None,
    ) -> Reservation:
        """Hold the next number until it is confirmed, cancelled or expires (``docnum.reserve_number``)."""
        return self._execute(
            _reserve(
                document_type,
                scope=scope,
                actor=actor,
                metadata=metadata,
                ttl=ttl,
                document_date=document_date,
                request_id=request_id,
            )
        )

    def confirm(self, token: Token, *, actor: str | None = None, document_ref: str | None = None) -> str:
        """Make a reserved number final and return it (``docnum.confirm_number``)."""
        return self._execute(_confirm(token, actor=actor, document_ref=document_ref))

    def cancel(self, token: Token, *, actor: str | None = None, reason: str | None = None) -> str:
        """Give up a reserved number for good and return it (``docnum.cancel_number``)."""
        return self._execute(_cancel(token, actor=actor, reason=reason))

    def next_number(
        self,
        document_type: str,
        *,
        scope: str | None = None,
        actor: str | None = None,
        document_ref: str | None = None,
        document_date: date | None = None,
        request_id: str | None = None,
    ) -> str:
        """Issue and confirm the next number in one step (``docnum.next_number``).

        With ``request_id``, a retry of the same call (after a COMMIT whose answer was lost) returns the
        number already issued for it instead of a new one.
        """
        return self._execute(
            _next_number(
                document_type,
                scope=scope,
                actor=actor,
                document_ref=document_ref,
                document_date=document_date,
                request_id=request_id,
            )
        )

    def find_request(self, request_id: str) -> RequestOutcome | None:
        """What was issued for ``request_id``, or None when nothing committed (``docnum.find_request``)."""
        return self._execute(_find_request(request_id))

    def expire_reservations(self) -> int:
        """Expire reservations past their ``expires_at``; return how many (``docnum.expire_reservations``)."""
        return self._execute(_expire_reservations())

    def history(self, document_number: str) -> list[AuditEntry]:
        """The audit trail of a number and of the numbers void-and-replace linked to it, oldest first
        (``docnum.number_history``; docnum_app may call it)."""
        return self._execute(_history(document_number))

    # -- administration of numbers and counters (docnum_admin) ----------------------------------------

    def override(
        self,
        document_type: str,
        document_number: str,
        *,
        actor: str | None = None,
        reason: str,
        skip_validation: bool = False,
    ) -> str:
        """Record a number chosen by a person, state overridden (``docnum.override_number``); returns it."""
        return self._execute(
            _override(
                document_type, document_number, actor=actor, reason=reason, skip_validation=skip_validation
            )
        )

    def void(self, document_number: str, *, actor: str | None = None, reason: str) -> str:
        """Take a confirmed, overridden or imported number out of use (``docnum.void_number``); returns it."""
        return self._execute(_void(document_number, actor=actor, reason=reason))

    def void_and_replace(self, document_number: str, *, actor: str | None = None, reason: str) -> str:
        """Void a number and issue its replacement in the same counter; returns the new number."""
        return self._execute(_void_and_replace(document_number, actor=actor, reason=reason))

    def set_counter(
        self,
        document_type: str,
        *,
        scope: str | None = None,
        period: str | None = None,
        value: int,
        actor: str | None = None,
        reason: str,
    ) -> int:
        """Set a counter (period None: the current one) to ``value`` (``docnum.set_counter``); returns it."""
        return self._execute(
            _set_counter(document_type, scope=scope, period=period, value=value, actor=actor, reason=reason)
        )

    def import_numbers(
        self, rows: Iterable[Mapping[str, Any]], *, actor: str | None = None
    ) -> list[ImportResult]:
        """Import legacy numbers in one call and one transaction (``docnum.import_numbers``).

        Each row maps ``document_type``, ``document_number`` and optionally ``created_at`` (a datetime, a
        date or ISO 8601 text; a naive one is read in the session's TimeZone) and ``document_ref``.  Returns
        one :class:`ImportResult` per row, in order.  Split large files into batches: each call holds the
        locks of every counter it touches until it commits.
        """
        return self._execute(_import_numbers(rows, actor=actor))

    def register_document_table(
        self, table_name: str, number_column: str, *, actor: str | None = None
    ) -> None:
        """Have ``check_duplicates`` also inspect ``table_name.number_column`` of the application.

        ``table_name`` is resolved with the session's search_path and must be a plain (or partitioned) table
        without row level security whose column is text or varchar (else NB006). It is read with the rights of
        whoever runs ``check_duplicates``/``validate``, never docnum_owner's: grant them SELECT on it.
        """
        self._execute(_register_document_table(table_name, number_column, actor=actor))

    # -- reports (docnum_reader) ----------------------------------------------------------------------

    def status(self, document_type: str | None = None) -> list[CounterStatus]:
        """Every counter (of one type, or all) from ``docnum.sequence_status``, by type, scope and period."""
        return self._execute(_status(document_type))

    def gaps(
        self, document_type: str | None = None, *, scope: str | None = None, period: str | None = None
    ) -> list[Gap]:
        """Counter values never issued, as ranges, each with the recorded reason or none (``docnum.gaps``)."""
        return self._execute(_gaps(document_type, scope=scope, period=period))

    def iter_gaps(
        self,
        document_type: str | None = None,
        *,
        scope: str | None = None,
        period: str | None = None,
        fetch_size: int = DEFAULT_FETCH_SIZE,
    ) -> Generator[Gap, None, None]:
        """:meth:`gaps` read lazily through a server-side cursor (see :meth:`audit_export` for its terms)."""
        return self._stream(_gaps_stream(document_type, scope=scope, period=period), fetch_size)

    def check_duplicates(self) -> list[Duplicate]:
        """Numbers used twice in the ledger or in the registered tables (``docnum.check_duplicates``)."""
        return self._execute(_check_duplicates())

    def validate(self) -> list[Finding]:
        """The integrity report of ``docnum.validate``: empty when healthy."""
        return self._execute(_validate())

    def audit_export(
        self,
        start: datetime | date,
        end: datetime | date,
        document_type: str | None = None,
        *,
        fetch_size: int = DEFAULT_FETCH_SIZE,
    ) -> Generator[AuditEntry, None, None]:
        """Audit rows with ``start <= occurred_at < end``, by audit_id (``docnum.audit_export``), read lazily.

        Rows come through a server-side cursor, ``fetch_size`` per round trip, so any number of them fits in
        memory.  The iterator holds its connection (and, unless it joined the caller's transaction, a
        transaction of its own) until it is exhausted or closed: iterate it to the end, or close it
        (``.close()``, ``contextlib.closing``).  Naive datetimes are read in the session's TimeZone.
        """
        return self._stream(_audit_export(start, end, document_type), fetch_size)

    @contextmanager
    def reservation(
        self,
        document_type: str,
        *,
        scope: str | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        ttl: Interval | None = None,
        document_date: date | None = None,
    ) -> Iterator[ReservationHandle]:
        """Reserve a number for the ``with`` block; unless the block confirms it, it is cancelled on exit.

        An exception in the block cancels the reservation (the reason names the exception type) and
        propagates.  When the cancel cannot run (the caller's transaction has failed) or fails, the
        original exception still propagates: a reservation made in that failed transaction rolls back
        with it; one committed earlier is logged and left to expire.
        """
        joined = self._caller_transaction() is not None
        reserved = self.reserve(
            document_type, scope=scope, actor=actor, metadata=metadata, ttl=ttl, document_date=document_date
        )
        handle = ReservationHandle(self, reserved, actor)
        try:
            yield handle
        except BaseException as exc:
            if not handle.confirmed:
                caller = self._caller_transaction()
                if caller is not None and caller.info.transaction_status == TransactionStatus.INERROR:
                    if not joined:
                        log.warning(_LEFT_TO_EXPIRE, handle.document_number)
                else:
                    try:
                        self.cancel(handle.token, actor=actor, reason=_release_reason(exc))
                    except Exception:
                        log.warning(_CANCEL_FAILED, handle.document_number, exc_info=True)
            raise
        if not handle.confirmed:
            self.cancel(handle.token, actor=actor, reason=RELEASED_WITHOUT_CONFIRM)

    # -- execution ------------------------------------------------------------------------------------

    def _caller_transaction(self) -> psycopg.Connection[Any] | None:
        """The source connection when it is inside a transaction of the caller's, else None."""
        if isinstance(self._source, ConnectionPool) or _owns_transaction(self._source):
            return None
        return self._source

    def _execute(self, call: _Call[T]) -> T:
        with translated():
            if isinstance(self._source, ConnectionPool):
                with self._source.connection() as conn:
                    return self._in_own_transaction(conn, call)
            conn = self._source
            if _owns_transaction(conn):
                return self._in_own_transaction(conn, call)
            return self._fetch(conn, call)

    def _in_own_transaction(self, conn: psycopg.Connection[Any], call: _Call[T]) -> T:
        attempt = 1
        while True:
            try:
                with conn.transaction():
                    return self._fetch(conn, call)
            except psycopg.Error as exc:
                if not _should_retry(exc, attempt, self._attempts):
                    raise
            time.sleep(_backoff(attempt))
            attempt += 1

    @staticmethod
    def _fetch(conn: psycopg.Connection[Any], call: _Call[T]) -> T:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(call.query, call.params, prepare=False)  # never prepared: see "Connection poolers"
            return call.result(cur.fetchall())

    def _stream(self, stream: _Stream[T], fetch_size: int) -> Generator[T, None, None]:
        """Yield the rows of ``stream`` from a server-side cursor; never retried (rows may be out already)."""
        with translated():
            if isinstance(self._source, ConnectionPool):
                with self._source.connection() as conn:
                    yield from self._read(conn, stream, fetch_size, own_transaction=True)
            else:
                conn = self._source
                yield from self._read(conn, stream, fetch_size, own_transaction=_owns_transaction(conn))

    @staticmethod
    def _read(
        conn: psycopg.Connection[Any], stream: _Stream[T], fetch_size: int, *, own_transaction: bool
    ) -> Iterator[T]:
        # A server-side cursor lives inside a transaction: ours, or the caller's one it joins.
        transaction: AbstractContextManager[Any] = conn.transaction() if own_transaction else nullcontext()
        with transaction, conn.cursor(stream.cursor_name, row_factory=dict_row) as cur:
            cur.itersize = fetch_size
            cur.execute(stream.query, stream.params)
            for row in cur:
                yield stream.row(row)


class ReservationHandle:
    """The number held by ``Numbering.reservation()``; ``confirm()`` keeps it."""

    def __init__(self, numbering: Numbering, reservation: Reservation, actor: str | None) -> None:
        self._numbering = numbering
        self._actor = actor
        self.reservation = reservation
        self.confirmed = False

    @property
    def token(self) -> uuid.UUID:
        return self.reservation.token

    @property
    def document_number(self) -> str:
        return self.reservation.document_number

    @property
    def sequence_value(self) -> int:
        return self.reservation.sequence_value

    @property
    def expires_at(self) -> datetime:
        return self.reservation.expires_at

    def confirm(self, document_ref: str | None = None, actor: str | None = None) -> str:
        """Confirm the number (``actor`` defaults to the one that reserved it) and return it."""
        number = self._numbering.confirm(
            self.token, actor=actor if actor is not None else self._actor, document_ref=document_ref
        )
        self.confirmed = True
        return number

    def __repr__(self) -> str:
        return f"<ReservationHandle {self.document_number} confirmed={self.confirmed}>"


# ----------------------------------------------------------------------------------------------------
# Asynchronous client


class AsyncNumbering:
    """The asyncio flavour of :class:`Numbering`, for an ``AsyncConnection`` or ``AsyncConnectionPool``."""

    def __init__(
        self,
        source: psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any],
        *,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        if not isinstance(source, psycopg.AsyncConnection | AsyncConnectionPool):
            raise TypeError(
                f"expected a psycopg AsyncConnection or AsyncConnectionPool, got {type(source).__name__}"
            )
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._source = source
        self._attempts = attempts

    # -- administration -------------------------------------------------------------------------------

    async def define_type(
        self,
        code: str,
        format: str,
        *,
        scope: str | None = None,
        reset: str | None = None,
        time_zone: str | None = None,
        max_value: int | None = None,
        reservation_ttl: Interval | None = None,
        lock_timeout: Interval | None = None,
        allow_manual_override: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> DocumentType:
        """Create a document type (``docnum.define_type``); arguments left as None take the SQL defaults."""
        return await self._execute(
            _define_type(
                code,
                format,
                scope=scope,
                reset=reset,
                time_zone=time_zone,
                max_value=max_value,
                reservation_ttl=reservation_ttl,
                lock_timeout=lock_timeout,
                allow_manual_override=allow_manual_override,
                metadata=metadata,
                actor=actor,
            )
        )

    async def alter_type(
        self,
        document_type: str,
        *,
        format: str | None = None,
        time_zone: str | None = None,
        max_value: int | None = None,
        reservation_ttl: Interval | None = None,
        lock_timeout: Interval | None = None,
        allow_manual_override: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> DocumentType:
        """Change a document type (``docnum.alter_type``); arguments left as None stay unchanged."""
        return await self._execute(
            _alter_type(
                document_type,
                format=format,
                time_zone=time_zone,
                max_value=max_value,
                reservation_ttl=reservation_ttl,
                lock_timeout=lock_timeout,
                allow_manual_override=allow_manual_override,
                metadata=metadata,
                actor=actor,
                reason=reason,
            )
        )

    async def get_type(self, code: str) -> DocumentType | None:
        """The document type ``code``, or None when there is none."""
        return await self._execute(_get_type(code))

    # -- numbers --------------------------------------------------------------------------------------

    async def reserve(
        self,
        document_type: str,
        *,
        scope: str | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        ttl: Interval | None = None,
        document_date: date | None = None,
        request_id: str | None = None,
    ) -> Reservation:
        """Hold the next number until it is confirmed, cancelled or expires (``docnum.reserve_number``)."""
        return await self._execute(
            _reserve(
                document_type,
                scope=scope,
                actor=actor,
                metadata=metadata,
                ttl=ttl,
                document_date=document_date,
                request_id=request_id,
            )
        )

    async def confirm(
        self, token: Token, *, actor: str | None = None, document_ref: str | None = None
    ) -> str:
        """Make a reserved number final and return it (``docnum.confirm_number``)."""
        return await self._execute(_confirm(token, actor=actor, document_ref=document_ref))

    async def cancel(self, token: Token, *, actor: str | None = None, reason: str | None = None) -> str:
        """Give up a reserved number for good and return it (``docnum.cancel_number``)."""
        return await self._execute(_cancel(token, actor=actor, reason=reason))

    async def next_number(
        self,
        document_type: str,
        *,
        scope: str | None = None,
        actor: str | None = None,
        document_ref: str | None = None,
        document_date: date | None = None,
        request_id: str | None = None,
    ) -> str:
        """Issue and confirm the next number in one step (``docnum.next_number``).

        With ``request_id``, a retry of the same call (after a COMMIT whose answer was lost) returns the
        number already issued for it instead of a new one.
        """
        return await self._execute(
            _next_number(
                document_type,
                scope=scope,
                actor=actor,
                document_ref=document_ref,
                document_date=document_date,
                request_id=request_id,
            )
        )

    async def find_request(self, request_id: str) -> RequestOutcome | None:
        """What was issued for ``request_id``, or None when nothing committed (``docnum.find_request``)."""
        return await self._execute(_find_request(request_id))

    async def expire_reservations(self) -> int:
        """Expire reservations past their ``expires_at``; return how many (``docnum.expire_reservations``)."""
        return await self._execute(_expire_reservations())

    async def history(self, document_number: str) -> list[AuditEntry]:
        """The audit trail of a number and of the numbers void-and-replace linked to it, oldest first
        (``docnum.number_history``; docnum_app may call it)."""
        return await self._execute(_history(document_number))

    # -- administration of numbers and counters (docnum_admin) ----------------------------------------

    async def override(
        self,
        document_type: str,
        document_number: str,
        *,
        actor: str | None = None,
        reason: str,
        skip_validation: bool = False,
    ) -> str:
        """Record a number chosen by a person, state overridden (``docnum.override_number``); returns it."""
        return await self._execute(
            _override(
                document_type, document_number, actor=actor, reason=reason, skip_validation=skip_validation
            )
        )

    async def void(self, document_number: str, *, actor: str | None = None, reason: str) -> str:
        """Take a confirmed, overridden or imported number out of use (``docnum.void_number``); returns it."""
        return await self._execute(_void(document_number, actor=actor, reason=reason))

    async def void_and_replace(self, document_number: str, *, actor: str | None = None, reason: str) -> str:
        """Void a number and issue its replacement in the same counter; returns the new number."""
        return await self._execute(_void_and_replace(document_number, actor=actor, reason=reason))

    async def set_counter(
        self,
        document_type: str,
        *,
        scope: str | None = None,
        period: str | None = None,
        value: int,
        actor: str | None = None,
        reason: str,
    ) -> int:
        """Set a counter (period None: the current one) to ``value`` (``docnum.set_counter``); returns it."""
        return await self._execute(
            _set_counter(document_type, scope=scope, period=period, value=value, actor=actor, reason=reason)
        )

    async def import_numbers(
        self, rows: Iterable[Mapping[str, Any]], *, actor: str | None = None
    ) -> list[ImportResult]:
        """Import legacy numbers in one call and one transaction; see :meth:`Numbering.import_numbers`."""
        return await self._execute(_import_numbers(rows, actor=actor))

    async def register_document_table(
        self, table_name: str, number_column: str, *, actor: str | None = None
    ) -> None:
        """Have ``check_duplicates`` also inspect ``table_name.number_column`` of the application."""
        await self._execute(_register_document_table(table_name, number_column, actor=actor))

    # -- reports (docnum_reader) ----------------------------------------------------------------------

    async def status(self, document_type: str | None = None) -> list[CounterStatus]:
        """Every counter (of one type, or all) from ``docnum.sequence_status``, by type, scope and period."""
        return await self._execute(_status(document_type))

    async def gaps(
        self, document_type: str | None = None, *, scope: str | None = None, period: str | None = None
    ) -> list[Gap]:
        """Counter values never issued, as ranges, each with the recorded reason or none (``docnum.gaps``)."""
        return await self._execute(_gaps(document_type, scope=scope, period=period))

    def iter_gaps(
        self,
        document_type: str | None = None,
        *,
        scope: str | None = None,
        period: str | None = None,
        fetch_size: int = DEFAULT_FETCH_SIZE,
    ) -> AsyncGenerator[Gap, None]:
        """:meth:`gaps` read lazily: ``async for gap in ...``; see :meth:`Numbering.iter_gaps`."""
        return self._stream(_gaps_stream(document_type, scope=scope, period=period), fetch_size)

    async def check_duplicates(self) -> list[Duplicate]:
        """Numbers used twice in the ledger or in the registered tables (``docnum.check_duplicates``)."""
        return await self._execute(_check_duplicates())

    async def validate(self) -> list[Finding]:
        """The integrity report of ``docnum.validate``: empty when healthy."""
        return await self._execute(_validate())

    def audit_export(
        self,
        start: datetime | date,
        end: datetime | date,
        document_type: str | None = None,
        *,
        fetch_size: int = DEFAULT_FETCH_SIZE,
    ) -> AsyncGenerator[AuditEntry, None]:
        """Audit rows with ``start <= occurred_at < end``, read lazily: ``async for entry in ...``.

        See :meth:`Numbering.audit_export`; close an iterator left unfinished with ``await it.aclose()``.
        """
        return self._stream(_audit_export(start, end, document_type), fetch_size)

    @asynccontextmanager
    async def reservation(
        self,
        document_type: str,
        *,
        scope: str | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        ttl: Interval | None = None,
        document_date: date | None = None,
    ) -> AsyncIterator[AsyncReservationHandle]:
        """Reserve a number for the ``async with`` block; see :meth:`Numbering.reservation`."""
        joined = self._caller_transaction() is not None
        reserved = await self.reserve(
            document_type, scope=scope, actor=actor, metadata=metadata, ttl=ttl, document_date=document_date
        )
        handle = AsyncReservationHandle(self, reserved, actor)
        try:
            yield handle
        except BaseException as exc:
            if not handle.confirmed:
                caller = self._caller_transaction()
                if caller is not None and caller.info.transaction_status == TransactionStatus.INERROR:
                    if not joined:
                        log.warning(_LEFT_TO_EXPIRE, handle.document_number)
                else:
                    try:
                        await self.cancel(handle.token, actor=actor, reason=_release_reason(exc))
                    except Exception:
                        log.warning(_CANCEL_FAILED, handle.document_number, exc_info=True)
            raise
        if not handle.confirmed:
            await self.cancel(handle.token, actor=actor, reason=RELEASED_WITHOUT_CONFIRM)

    # -- execution ------------------------------------------------------------------------------------

    def _caller_transaction(self) -> psycopg.AsyncConnection[Any] | None:
        """The source connection when it is inside a transaction of the caller's, else None."""
        if isinstance(self._source, AsyncConnectionPool) or _owns_transaction(self._source):
            return None
        return self._source

    async def _execute(self, call: _Call[T]) -> T:
        with translated():
            if isinstance(self._source, AsyncConnectionPool):
                async with self._source.connection() as conn:
                    return await self._in_own_transaction(conn, call)
            conn = self._source
            if _owns_transaction(conn):
                return await self._in_own_transaction(conn, call)
            return await self._fetch(conn, call)

    async def _in_own_transaction(self, conn: psycopg.AsyncConnection[Any], call: _Call[T]) -> T:
        attempt = 1
        while True:
            try:
                async with conn.transaction():
                    return await self._fetch(conn, call)
            except psycopg.Error as exc:
                if not _should_retry(exc, attempt, self._attempts):
                    raise
            await asyncio.sleep(_backoff(attempt))
            attempt += 1

    @staticmethod
    async def _fetch(conn: psycopg.AsyncConnection[Any], call: _Call[T]) -> T:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(call.query, call.params, prepare=False)  # see "Connection poolers"
            return call.result(await cur.fetchall())

    async def _stream(self, stream: _Stream[T], fetch_size: int) -> AsyncGenerator[T, None]:
        """Yield the rows of ``stream`` from a server-side cursor; never retried (rows may be out already)."""
        with translated():
            if isinstance(self._source, AsyncConnectionPool):
                async with self._source.connection() as conn:
                    async for item in self._read(conn, stream, fetch_size, own_transaction=True):
                        yield item
            else:
                conn = self._source
                own = _owns_transaction(conn)
                async for item in self._read(conn, stream, fetch_size, own_transaction=own):
                    yield item

    @staticmethod
    async def _read(
        conn: psycopg.AsyncConnection[Any], stream: _Stream[T], fetch_size: int, *, own_transaction: bool
    ) -> AsyncIterator[T]:
        # A server-side cursor lives inside a transaction: ours, or the caller's one it joins.
        transaction: AbstractAsyncContextManager[Any] = (
            conn.transaction() if own_transaction else nullcontext()
        )
        async with transaction, conn.cursor(stream.cursor_name, row_factory=dict_row) as cur:
            cur.itersize = fetch_size
            await cur.execute(stream.query, stream.params)
            async for row in cur:
                yield stream.row(row)


class AsyncReservationHandle:
    """The number held by ``AsyncNumbering.reservation()``; ``await confirm()`` keeps it."""

    def __init__(self, numbering: AsyncNumbering, reservation: Reservation, actor: str | None) -> None:
        self._numbering = numbering
        self._actor = actor
        self.reservation = reservation
        self.confirmed = False

    @property
    def token(self) -> uuid.UUID:
        return self.reservation.token

    @property
    def document_number(self) -> str:
        return self.reservation.document_number

    @property
    def sequence_value(self) -> int:
        return self.reservation.sequence_value

    @property
    def expires_at(self) -> datetime:
        return self.reservation.expires_at

    async def confirm(self, document_ref: str | None = None, actor: str | None = None) -> str:
        """Confirm the number (``actor`` defaults to the one that reserved it) and return it."""
        number = await self._numbering.confirm(
            self.token, actor=actor if actor is not None else self._actor, document_ref=document_ref
        )
        self.confirmed = True
        return number

    def __repr__(self) -> str:
        return f"<AsyncReservationHandle {self.document_number} confirmed={self.confirmed}>"
