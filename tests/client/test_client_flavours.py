"""The same scenarios against both clients: Numbering (sync) and AsyncNumbering (asyncio).

The transaction rules of docnum.client are the ones a caller relies on: the client retries a serialization
failure only in a transaction of its own, joins the caller's transaction without committing it, and never
hides a failed one. Each scenario is written once, against the blocking interface; the `flavour` fixture
hands it either the sync client on a psycopg.Connection, or the async client on a psycopg.AsyncConnection
driven by an event loop on a thread of its own (`Blocking` below runs each coroutine there and waits). The
loop lives on a thread so that a call can wait on a lock while the test releases it, as in the sync case.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Iterator
from contextlib import AbstractContextManager, closing
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from docnum import AsyncNumbering, AsyncReservationHandle, Numbering
from support.helpers import define, in_thread, ledger_rows, next_number, wait_until_blocked

Conn = psycopg.Connection[Any]


class Blocking:
    """A blocking view of an asyncio object: coroutines run on `loop` and are waited for, async context
    managers become context managers; the objects they hand back are wrapped in turn."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def _wrap(self, value: Any) -> Any:
        if asyncio.iscoroutine(value):
            return self._wrap(self.run(value))
        if isinstance(value, psycopg.AsyncConnection | psycopg.AsyncCursor | AsyncReservationHandle):
            return Blocking(value, self._loop)
        if hasattr(value, "__aenter__"):
            return _BlockingContext(value, self)
        if inspect.isasyncgen(value):
            return self._iterate(value)
        return value

    def _iterate(self, agen: AsyncGenerator[Any, None]) -> Generator[Any, None, None]:
        try:
            while True:
                try:
                    item = self.run(agen.__anext__())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            self.run(agen.aclose())

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value
        return lambda *args, **kwargs: self._wrap(value(*args, **kwargs))


class _BlockingContext(AbstractContextManager[Any]):
    def __init__(self, manager: Any, blocking: Blocking) -> None:
        self._manager = manager
        self._blocking = blocking

    def __enter__(self) -> Any:
        return self._blocking._wrap(self._blocking.run(self._manager.__aenter__()))

    def __exit__(self, *exc_info: Any) -> bool:
        return bool(self._blocking.run(self._manager.__aexit__(*exc_info)))


class Flavour:
    """Connections and clients of one flavour, all closed at teardown."""

    def __init__(self, name: str, dsn: str) -> None:
        self.name = name
        self._dsn = dsn
        self._closers: list[Callable[[], Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        if name == "async":
            self._loop = asyncio.new_event_loop()
            thread = threading.Thread(target=self._loop.run_forever, name="docnum-test-loop", daemon=True)
            thread.start()
            self._thread = thread

    def connect(self, **kwargs: Any) -> Any:
        """A connection the client will use: psycopg.Connection, or a blocking view of an AsyncConnection."""
        if self._loop is None:
            conn = psycopg.connect(self._dsn, **kwargs)
            self._closers.append(conn.close)
            return conn
        view = Blocking(psycopg.AsyncConnection, self._loop).connect(self._dsn, **kwargs)
        self._closers.append(view.close)
        return view

    def numbering(self, conn: Any, **kwargs: Any) -> Any:
        if self._loop is None:
            return Numbering(conn, **kwargs)
        return Blocking(AsyncNumbering(conn._target, **kwargs), self._loop)

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest, dsn: str) -> Iterator[Flavour]:
    made = Flavour(request.param, dsn)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def cor(db: Conn) -> str:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    next_number(db, "COR")  # the counter exists: the sessions below meet on its lock, not on its creation
    return "COR"


def _serialization_conflict(db: Conn, holder: Conn, waiter: Any, call: Callable[[], Any]) -> Any:
    """Run `call` on `waiter` (REPEATABLE READ) while `holder` has taken the next number, then let the holder
    commit: the waiter's snapshot no longer sees the counter row it waits for, which is a 40001."""
    assert next_number(holder, "COR") == "COR-00002"
    waiting = in_thread(call)
    wait_until_blocked(db, waiter.info.backend_pid)
    holder.commit()
    return waiting


def test_serialization_failure_is_retried_in_the_clients_own_transaction(
    flavour: Flavour, db: Conn, connect: Callable[..., Conn], cor: str
) -> None:
    holder = connect()
    waiter = flavour.connect()
    waiter.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    numbering = flavour.numbering(waiter)

    waiting = _serialization_conflict(db, holder, waiter, lambda: numbering.next_number(cor))

    # The first attempt failed with 40001 and rolled back; the retry, in a new snapshot, got the next value.
    assert waiting.result(timeout=10) == "COR-00003"
    assert waiter.info.transaction_status == TransactionStatus.IDLE
    assert [row["sequence_value"] for row in ledger_rows(db, cor)] == [1, 2, 3]


def test_serialization_failure_surfaces_when_attempts_run_out(
    flavour: Flavour, db: Conn, connect: Callable[..., Conn], cor: str
) -> None:
    holder = connect()
    waiter = flavour.connect()
    waiter.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    numbering = flavour.numbering(waiter, attempts=1)

    waiting = _serialization_conflict(db, holder, waiter, lambda: numbering.next_number(cor))

    with pytest.raises(psycopg.errors.SerializationFailure):
        waiting.result(timeout=10)
    # The client's transaction rolled back as a whole: the connection is ready, nothing was issued.
    assert waiter.info.transaction_status == TransactionStatus.IDLE
    assert [row["sequence_value"] for row in ledger_rows(db, cor)] == [1, 2]
    assert numbering.next_number(cor) == "COR-00003"


def test_joined_transaction_is_neither_committed_nor_retried(
    flavour: Flavour, db: Conn, connect: Callable[..., Conn], cor: str
) -> None:
    holder = connect()
    caller = flavour.connect()
    caller.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    numbering = flavour.numbering(caller)

    # The client's statement runs inside the caller's transaction and a rollback by the caller takes it back.
    caller.execute("SELECT 1")
    assert numbering.next_number(cor) == "COR-00002"
    assert caller.info.transaction_status == TransactionStatus.INTRANS
    caller.rollback()
    assert [row["sequence_value"] for row in ledger_rows(db, cor)] == [1]

    # A conflict inside the caller's transaction is the caller's to handle: the client does not retry it.
    caller.execute("SELECT 1")  # the snapshot is taken here, before the holder commits
    waiting = _serialization_conflict(db, holder, caller, lambda: numbering.next_number(cor))
    with pytest.raises(psycopg.errors.SerializationFailure):
        waiting.result(timeout=10)
    assert caller.info.transaction_status == TransactionStatus.INERROR
    caller.rollback()
    assert numbering.next_number(cor) == "COR-00003"


def test_a_failed_caller_transaction_is_not_hidden(
    flavour: Flavour, db: Conn, connect: Callable[..., Conn], cor: str
) -> None:
    caller = flavour.connect()
    numbering = flavour.numbering(caller)
    with pytest.raises(psycopg.errors.DivisionByZero):
        caller.execute("SELECT 1 / 0")

    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        numbering.next_number(cor)
    # Still the caller's failed transaction: the client neither rolled it back nor issued a number.
    assert caller.info.transaction_status == TransactionStatus.INERROR
    caller.rollback()
    assert numbering.next_number(cor) == "COR-00002"


def _states(db: Conn) -> dict[str, Any]:
    return {row["document_number"]: (row["state"], row["cancel_reason"]) for row in ledger_rows(db, "COR")}


def test_reservation_block_cancels_on_exception(flavour: Flavour, db: Conn, cor: str) -> None:
    numbering = flavour.numbering(flavour.connect())
    with pytest.raises(KeyError), numbering.reservation(cor, actor="alice") as failed:
        assert failed.document_number == "COR-00002"
        raise KeyError("boom")
    with numbering.reservation(cor) as kept:
        assert kept.confirm(document_ref="DOC-3") == "COR-00003"

    assert _states(db) == {
        "COR-00001": ("confirmed", None),
        "COR-00002": ("cancelled", "reservation released after KeyError"),
        "COR-00003": ("confirmed", None),
    }


def test_reservation_in_a_transaction_that_fails_propagates_the_failure(
    flavour: Flavour, db: Conn, cor: str
) -> None:
    caller = flavour.connect()
    numbering = flavour.numbering(caller)
    caller.execute("SELECT 1")
    # The block's own error propagates, not the cancel's "current transaction is aborted".
    with pytest.raises(psycopg.errors.DivisionByZero), numbering.reservation(cor) as held:
        assert held.document_number == "COR-00002"
        caller.execute("SELECT 1 / 0")
    assert caller.info.transaction_status == TransactionStatus.INERROR
    caller.rollback()
    # The reservation rolled back with the caller's transaction: its value is issued again.
    assert [row["sequence_value"] for row in ledger_rows(db, cor)] == [1]
    assert numbering.next_number(cor) == "COR-00002"


def test_an_export_closed_early_ends_its_cursor_and_transaction(flavour: Flavour, db: Conn, cor: str) -> None:
    conn = flavour.connect()
    numbering = flavour.numbering(conn)
    for _ in range(3):
        numbering.next_number(cor)
    now = datetime.now(timezone.utc)
    with closing(
        numbering.audit_export(now - timedelta(hours=1), now + timedelta(hours=1), cor, fetch_size=1)
    ) as rows:
        assert next(rows).document_type == cor  # one row of several read, the rest left unread
        assert conn.info.transaction_status == TransactionStatus.INTRANS  # the export's own transaction
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)
    assert numbering.next_number(cor) == "COR-00005"
