"""The docnum client: one method per SQL function of docs/sql-api.md, one statement per method.

:class:`Numbering` works with a ``psycopg.Connection`` or a ``psycopg_pool.ConnectionPool``;
:class:`AsyncNumbering` with their async counterparts.  Both build the same :class:`_Call` (statement,
parameters, result shape) from the same functions below and differ only in how they wait for the database.

Transactions
    With a pool, or with a connection that is idle, the client owns the transaction: it runs the statement
    in ``conn.transaction()``, which commits on success.  Only then does it retry a serialization failure
    (40001) or a deadlock (40P01), a few times with a short jittered backoff: the transaction rolled back as
    a whole, so running it again is safe.  With a connection already inside a transaction the statement
    joins the caller's transaction; nothing is committed and nothing is retried.  No other error is ever
    retried, and the client never makes up a number: every number comes from the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
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
from docnum.models import AuditEntry, DocumentType, Reservation

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
) -> _Call[Reservation]:
    params = {
        "document_type": document_type,
        "scope": scope,
        "actor": actor,
        "metadata": _jsonb(metadata),
        "ttl": ttl,
        "document_date": document_date,
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
) -> _Call[str]:
    params = {
        "document_type": document_type,
        "scope": scope,
        "actor": actor,
        "document_ref": document_ref,
        "document_date": document_date,
    }
    return _Call(queries.NEXT_NUMBER, params, _document_number)


def _expire_reservations() -> _Call[int]:
    return _Call(queries.EXPIRE_RESERVATIONS, {}, _expired)


def _get_type(code: str) -> _Call[DocumentType | None]:
    return _Call(queries.GET_TYPE, {"code": code}, _maybe_document_type)


def _history(document_number: str) -> _Call[list[AuditEntry]]:
    return _Call(queries.HISTORY, {"document_number": document_number}, _audit_entries)


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
    ) -> str:
        """Issue and confirm the next number in one step (``docnum.next_number``)."""
        return self._execute(
            _next_number(
                document_type,
                scope=scope,
                actor=actor,
                document_ref=document_ref,
                document_date=document_date,
            )
        )

    def expire_reservations(self) -> int:
        """Expire reservations past their ``expires_at``; return how many (``docnum.expire_reservations``)."""
        return self._execute(_expire_reservations())

    def history(self, document_number: str) -> list[AuditEntry]:
        """The audit trail of a number, oldest first (needs SELECT on ``docnum.audit_log``)."""
        return self._execute(_history(document_number))

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
            cur.execute(call.query, call.params)
            return call.result(cur.fetchall())


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
    ) -> str:
        """Issue and confirm the next number in one step (``docnum.next_number``)."""
        return await self._execute(
            _next_number(
                document_type,
                scope=scope,
                actor=actor,
                document_ref=document_ref,
                document_date=document_date,
            )
        )

    async def expire_reservations(self) -> int:
        """Expire reservations past their ``expires_at``; return how many (``docnum.expire_reservations``)."""
        return await self._execute(_expire_reservations())

    async def history(self, document_number: str) -> list[AuditEntry]:
        """The audit trail of a number, oldest first (needs SELECT on ``docnum.audit_log``)."""
        return await self._execute(_history(document_number))

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
            await cur.execute(call.query, call.params)
            return call.result(await cur.fetchall())


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
