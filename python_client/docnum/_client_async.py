"""The asyncio client, :class:`AsyncNumbering`: the source of ``_client_sync.py``.

Edit this file, never ``_client_sync.py``: ``scripts/async_to_sync.py`` writes the synchronous client from it
(``async``/``await`` dropped, ``AsyncX`` names mapped to ``X``; a ``# sync:`` comment run under a statement is
what the sync twin has instead of it), and ``tests/client/test_client_generated.py`` fails while the two
disagree.
What to run is shared in ``calls.py``; see ``docnum.client`` for transactions and retries.
"""
# sync: """The synchronous client, :class:`Numbering`: generated from ``_client_async.py``, never edited.
# sync:
# sync: What to run is shared in ``calls.py``; see ``docnum.client`` for transactions and retries.
# sync: """

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from docnum import calls
from docnum.calls import (
    CANCEL_FAILED,
    DEFAULT_ATTEMPTS,
    DEFAULT_FETCH_SIZE,
    LEFT_TO_EXPIRE,
    RELEASED_WITHOUT_CONFIRM,
    SET_LOCAL,
    Call,
    Interval,
    Stream,
    T,
    Token,
    backoff,
    log,
    owns_transaction,
    release_reason,
    should_retry,
)
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

__all__ = ["AsyncNumbering", "AsyncReservationHandle"]


class AsyncNumbering:
    """The asyncio flavour of :class:`Numbering`, for an ``AsyncConnection`` or ``AsyncConnectionPool``."""

    # sync: """Issue and manage document numbers through the docnum SQL functions (psycopg 3, synchronous).
    # sync:
    # sync: ``source`` is a connection or a connection pool.  A pool may be shared by any number of threads; a
    # sync: single connection serves one thread at a time.
    # sync: """

    def __init__(
        self,
        source: psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any],
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(source, psycopg.AsyncConnection | AsyncConnectionPool):
            raise TypeError(
                f"expected a psycopg AsyncConnection or AsyncConnectionPool, got {type(source).__name__}"
            )
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._source = source
        self._attempts = attempts
        self._settings = dict(settings or {})

    def with_settings(self, settings: Mapping[str, str]) -> AsyncNumbering:
        """This client, whose transactions first set these run-time parameters for themselves alone
        (``set_config(name, value, true)``). ``{"role": "docnum_app", "request.jwt.claims": claims}`` runs
        every call as that role with those claims, as PostgREST does: what ``docnum serve`` runs. Such a
        client only runs calls in transactions of its own; on a connection inside the caller's transaction
        its calls raise ``ValueError``."""
        return AsyncNumbering(self._source, attempts=self._attempts, settings={**self._settings, **settings})

    async def run(self, call: Call[T]) -> T:
        """Run a call built by :mod:`docnum.calls` the way every method runs its own: in a transaction of
        the client's own (retried after a serialization failure or deadlock), or in the caller's."""
        return await self._execute(call)

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
            calls.define_type(
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
            calls.alter_type(
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
        return await self._execute(calls.get_type(code))

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
            calls.reserve(
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
        return await self._execute(calls.confirm(token, actor=actor, document_ref=document_ref))

    async def cancel(self, token: Token, *, actor: str | None = None, reason: str | None = None) -> str:
        """Give up a reserved number for good and return it (``docnum.cancel_number``)."""
        return await self._execute(calls.cancel(token, actor=actor, reason=reason))

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
            calls.next_number(
                document_type,
                scope=scope,
                actor=actor,
                document_ref=document_ref,
                document_date=document_date,
                request_id=request_id,
            )
        )

    async def next_numbers(
        self,
        document_type: str,
        count: int,
        *,
        scope: str | None = None,
        actor: str | None = None,
        document_date: date | None = None,
    ) -> list[str]:
        """Issue and confirm the next ``count`` numbers of one counter, in order (``docnum.next_numbers``).

        One lock and one write for the batch (1 to 10,000 numbers); values the ledger already holds are
        skipped. A batch takes no request key: after a COMMIT whose answer was lost, look the numbers up in
        the ledger (by actor and time) before issuing the batch again.
        """
        return await self._execute(
            calls.next_numbers(document_type, count, scope=scope, actor=actor, document_date=document_date)
        )

    async def reserve_numbers(
        self,
        document_type: str,
        count: int,
        *,
        scope: str | None = None,
        actor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        ttl: Interval | None = None,
        document_date: date | None = None,
    ) -> list[Reservation]:
        """Reserve the next ``count`` numbers of one counter, in order (``docnum.reserve_numbers``).

        Each has its own token and is confirmed, cancelled or expires on its own; 1 to 10,000 a call.
        """
        return await self._execute(
            calls.reserve_numbers(
                document_type,
                count,
                scope=scope,
                actor=actor,
                metadata=metadata,
                ttl=ttl,
                document_date=document_date,
            )
        )

    async def find_request(self, request_id: str) -> RequestOutcome | None:
        """What was issued for ``request_id``, or None when nothing committed (``docnum.find_request``)."""
        return await self._execute(calls.find_request(request_id))

    async def expire_reservations(self) -> int:
        """Expire reservations past their ``expires_at``; return how many (``docnum.expire_reservations``)."""
        return await self._execute(calls.expire_reservations())

    async def history(self, document_number: str) -> list[AuditEntry]:
        """The audit trail of a number and of the numbers void-and-replace linked to it, oldest first
        (``docnum.number_history``; docnum_app may call it)."""
        return await self._execute(calls.history(document_number))

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
            calls.override(
                document_type, document_number, actor=actor, reason=reason, skip_validation=skip_validation
            )
        )

    async def void(self, document_number: str, *, actor: str | None = None, reason: str) -> str:
        """Take a confirmed, overridden or imported number out of use (``docnum.void_number``); returns it."""
        return await self._execute(calls.void(document_number, actor=actor, reason=reason))

    async def void_and_replace(self, document_number: str, *, actor: str | None = None, reason: str) -> str:
        """Void a number and issue its replacement in the same counter; returns the new number."""
        return await self._execute(calls.void_and_replace(document_number, actor=actor, reason=reason))

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
            calls.set_counter(
                document_type, scope=scope, period=period, value=value, actor=actor, reason=reason
            )
        )

    async def import_numbers(
        self, rows: Iterable[Mapping[str, Any]], *, actor: str | None = None
    ) -> list[ImportResult]:
        """Import legacy numbers in one call and one transaction (``docnum.import_numbers``).

        Each row maps ``document_type``, ``document_number`` and optionally ``created_at`` (a datetime, a
        date or ISO 8601 text; a naive one is read in the session's TimeZone) and ``document_ref``.  Returns
        one :class:`ImportResult` per row, in order.  Split large files into batches: each call holds the
        locks of every counter it touches until it commits.
        """
        return await self._execute(calls.import_numbers(rows, actor=actor))

    async def register_document_table(
        self, table_name: str, number_column: str, *, actor: str | None = None
    ) -> None:
        """Have ``check_duplicates`` also inspect ``table_name.number_column`` of the application.

        ``table_name`` is resolved with the session's search_path and must be a plain (or partitioned) table
        without row level security whose column is text or varchar (else NB006). It is read with the rights of
        whoever runs ``check_duplicates``/``validate``, never docnum_owner's: grant them SELECT on it.
        """
        await self._execute(calls.register_document_table(table_name, number_column, actor=actor))

    # -- reports (docnum_reader) ----------------------------------------------------------------------

    async def status(self, document_type: str | None = None) -> list[CounterStatus]:
        """Every counter (of one type, or all) from ``docnum.status``, by type, scope and period; an unknown
        type raises :class:`ConfigNotFound` (NB001)."""
        return await self._execute(calls.status(document_type))

    async def gaps(
        self, document_type: str | None = None, *, scope: str | None = None, period: str | None = None
    ) -> list[Gap]:
        """Counter values never issued, as ranges, each with the recorded reason or none (``docnum.gaps``)."""
        return await self._execute(calls.gaps(document_type, scope=scope, period=period))

    def iter_gaps(
        self,
        document_type: str | None = None,
        *,
        scope: str | None = None,
        period: str | None = None,
        fetch_size: int = DEFAULT_FETCH_SIZE,
    ) -> AsyncGenerator[Gap, None]:
        """:meth:`gaps` read lazily through a server-side cursor (see :meth:`audit_export` for its terms)."""
        return self._stream(calls.gaps_stream(document_type, scope=scope, period=period), fetch_size)

    async def check_duplicates(self) -> list[Duplicate]:
        """Numbers used twice in the ledger or in the registered tables (``docnum.check_duplicates``)."""
        return await self._execute(calls.check_duplicates())

    async def validate(self) -> list[Finding]:
        """The integrity report of ``docnum.validate``: empty when healthy."""
        return await self._execute(calls.validate())

    def audit_export(
        self,
        start: datetime | date,
        end: datetime | date,
        document_type: str | None = None,
        *,
        fetch_size: int = DEFAULT_FETCH_SIZE,
    ) -> AsyncGenerator[AuditEntry, None]:
        """Audit rows with ``start <= occurred_at < end``, by audit_id (``docnum.audit_export``), read lazily.

        Rows come through a server-side cursor, ``fetch_size`` per round trip, so any number of them fits in
        memory.  The iterator holds its connection (and, unless it joined the caller's transaction, a
        transaction of its own) until it is exhausted or closed: iterate it to the end, or close it
        (``.aclose()``, ``contextlib.aclosing``).  Naive datetimes are read in the session's TimeZone.
        """
        return self._stream(calls.audit_export(start, end, document_type), fetch_size)

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
        """Reserve a number for the ``async with`` block; unless the block confirms it, it is cancelled on exit.

        An exception in the block cancels the reservation (the reason names the exception type) and
        propagates.  When the cancel cannot run (the caller's transaction has failed) or fails, the
        original exception still propagates: a reservation made in that failed transaction rolls back
        with it; one committed earlier is logged and left to expire.
        """  # noqa: E501 (the sync twin says ``with``)
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
                        log.warning(LEFT_TO_EXPIRE, handle.document_number)
                else:
                    try:
                        await self.cancel(handle.token, actor=actor, reason=release_reason(exc))
                    except Exception:
                        log.warning(CANCEL_FAILED, handle.document_number, exc_info=True)
            raise
        if not handle.confirmed:
            await self.cancel(handle.token, actor=actor, reason=RELEASED_WITHOUT_CONFIRM)

    # -- execution ------------------------------------------------------------------------------------

    def _caller_transaction(self) -> psycopg.AsyncConnection[Any] | None:
        """The source connection when it is inside a transaction of the caller's, else None."""
        if isinstance(self._source, AsyncConnectionPool) or owns_transaction(self._source):
            return None
        return self._source

    async def _execute(self, call: Call[T]) -> T:
        with translated():
            if isinstance(self._source, AsyncConnectionPool):
                async with self._source.connection() as conn:
                    return await self._in_own_transaction(conn, call)
            conn = self._source
            if owns_transaction(conn):
                return await self._in_own_transaction(conn, call)
            if self._settings:
                raise ValueError("a client with settings runs its calls in transactions of its own")
            return await self._fetch(conn, call)

    async def _in_own_transaction(self, conn: psycopg.AsyncConnection[Any], call: Call[T]) -> T:
        attempt = 1
        while True:
            try:
                return await self._transaction(conn, call)
            except psycopg.Error as exc:
                if not should_retry(exc, attempt, self._attempts):
                    raise
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    async def _transaction(self, conn: psycopg.AsyncConnection[Any], call: Call[T]) -> T:
        """One transaction of the client's own around the call. With settings, BEGIN, the settings, the call
        and COMMIT go to the server together (pipeline mode) and are read back together, so a counter the call
        locks is not held across the round trips the settings would add."""
        if not self._settings:
            async with conn.transaction():
                return await self._fetch(conn, call)
        async with conn.pipeline(), conn.transaction():
            for name, value in self._settings.items():
                await conn.execute(SET_LOCAL, (name, value), prepare=False)
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(call.query, call.params, prepare=False)  # see "Connection poolers"
        return call.result(await cursor.fetchall())

    @staticmethod
    async def _fetch(conn: psycopg.AsyncConnection[Any], call: Call[T]) -> T:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(call.query, call.params, prepare=False)  # see "Connection poolers"
            return call.result(await cur.fetchall())

    def _connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """A connection from the pool, or the source connection itself."""
        if isinstance(self._source, AsyncConnectionPool):
            return self._source.connection()
        return nullcontext(self._source)

    async def _stream(self, stream: Stream[T], fetch_size: int) -> AsyncGenerator[T, None]:
        """Yield the rows of ``stream`` from a server-side cursor; never retried (rows may be out already)."""
        with translated():
            async with self._connection() as conn:
                # A server-side cursor lives inside a transaction: ours, or the caller's one it joins.
                transaction: AbstractAsyncContextManager[Any] = (
                    conn.transaction() if owns_transaction(conn) else nullcontext()
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
