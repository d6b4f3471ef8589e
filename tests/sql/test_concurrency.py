"""Forced interleavings of two sessions on one counter, each step ordered with pg_blocking_pids().

The session that must wait runs on a thread; the test polls until PostgreSQL shows it blocked by the other
session, and only then lets the other session go on. Nothing depends on timing luck.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from support.helpers import (
    cancel,
    define,
    expect_error,
    footprint,
    in_thread,
    ledger_rows,
    next_number,
    reserve,
    wait_until_blocked,
)

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]


@pytest.fixture
def cor(db: Conn) -> str:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    next_number(db, "COR")  # the counter exists: the sessions below meet on its lock, not on its creation
    return "COR"


def test_waiter_gets_the_value_a_rolled_back_session_gave_back(db: Conn, connect: Connect, cor: str) -> None:
    holder, waiter = connect(), connect(autocommit=True)
    assert next_number(holder, cor) == "COR-00002"

    waiting = in_thread(lambda: next_number(waiter, cor))
    assert wait_until_blocked(db, waiter.info.backend_pid) == [holder.info.backend_pid]
    assert not waiting.done()
    holder.rollback()

    assert waiting.result(timeout=10) == "COR-00002"
    assert [row["sequence_value"] for row in ledger_rows(db, cor)] == [1, 2]


def test_waiter_for_a_reservation_gets_the_value_a_rolled_back_session_gave_back(
    db: Conn, connect: Connect, cor: str
) -> None:
    holder, waiter = connect(), connect(autocommit=True)
    assert reserve(holder, cor)["sequence_value"] == 2

    waiting = in_thread(lambda: reserve(waiter, cor))
    wait_until_blocked(db, waiter.info.backend_pid)
    holder.rollback()

    assert waiting.result(timeout=10)["document_number"] == "COR-00002"


def test_waiter_after_a_committed_session_gets_the_next_value(db: Conn, connect: Connect, cor: str) -> None:
    holder, waiter = connect(), connect(autocommit=True)
    assert next_number(holder, cor) == "COR-00002"

    waiting = in_thread(lambda: next_number(waiter, cor))
    wait_until_blocked(db, waiter.info.backend_pid)
    holder.commit()

    assert waiting.result(timeout=10) == "COR-00003"


def test_reservation_after_a_concurrent_cancel_skips_the_cancelled_number(
    db: Conn, connect: Connect, cor: str
) -> None:
    holder, waiter = connect(), connect(autocommit=True)
    reservation = reserve(holder, cor)
    assert cancel(holder, reservation["token"]) == "COR-00002"

    waiting = in_thread(lambda: reserve(waiter, cor))
    wait_until_blocked(db, waiter.info.backend_pid)
    holder.commit()

    assert waiting.result(timeout=10)["document_number"] == "COR-00003"
    states = {row["sequence_value"]: row["state"] for row in ledger_rows(db, cor)}
    assert states == {1: "confirmed", 2: "cancelled", 3: "reserved"}


def test_first_use_of_a_scope_from_two_sessions(db: Conn, connect: Connect) -> None:
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    holder, waiter = connect(), connect(autocommit=True)
    assert next_number(holder, "RFA", scope="NEW") == "NEW/RFA/0001"

    waiting = in_thread(lambda: next_number(waiter, "RFA", scope="NEW"))
    wait_until_blocked(db, waiter.info.backend_pid)
    holder.commit()

    assert waiting.result(timeout=10) == "NEW/RFA/0002"  # no unique violation
    assert db.execute("SELECT count(*) FROM docnum.counter WHERE scope_value = 'NEW'").fetchone() == (1,)


def test_first_use_of_a_scope_rolled_back_while_another_session_waits(db: Conn, connect: Connect) -> None:
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    holder, waiter = connect(), connect(autocommit=True)
    assert next_number(holder, "RFA", scope="NEW") == "NEW/RFA/0001"

    waiting = in_thread(lambda: next_number(waiter, "RFA", scope="NEW"))
    wait_until_blocked(db, waiter.info.backend_pid)
    holder.rollback()

    assert waiting.result(timeout=10) == "NEW/RFA/0001"


def test_first_use_of_a_period_from_two_sessions(db: Conn, connect: Connect) -> None:
    define(db, "BOQ", "{TYPE}-{YYYY}-{MM}-{SEQ:4}", scope="MONTHLY")
    holder, waiter = connect(), connect(autocommit=True)
    day = dt.date(2027, 2, 1)
    assert reserve(holder, "BOQ", document_date=day)["document_number"] == "BOQ-2027-02-0001"

    waiting = in_thread(lambda: reserve(waiter, "BOQ", document_date=day))
    wait_until_blocked(db, waiter.info.backend_pid)
    holder.commit()

    assert waiting.result(timeout=10)["document_number"] == "BOQ-2027-02-0002"


# --- Independent counters do not wait for each other --------------------------------------------------------


@pytest.mark.parametrize(
    ("other", "arguments", "expected"),
    [
        pytest.param("RFA", {"scope": "P-2"}, "P-2/RFA/0002", id="other-scope"),
        pytest.param("BOQ", {"document_date": dt.date(2026, 1, 1)}, "BOQ-2026-01-0002", id="other-period"),
        pytest.param("COR", {}, "COR-00002", id="other-type"),
    ],
)
def test_a_different_counter_is_not_blocked(
    db: Conn, connect: Connect, other: str, arguments: dict[str, Any], expected: str
) -> None:
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    define(db, "BOQ", "{TYPE}-{YYYY}-{MM}-{SEQ:4}", scope="MONTHLY")
    define(db, "COR", "{TYPE}-{SEQ:5}")
    for scope in ("P-1", "P-2"):
        next_number(db, "RFA", scope=scope)
    for day in (dt.date(2025, 12, 1), dt.date(2026, 1, 1)):
        next_number(db, "BOQ", document_date=day)
    next_number(db, "COR")

    holder = connect()
    # The holder keeps the counters of RFA/P-1 and BOQ/2025-12 locked until it ends.
    next_number(holder, "RFA", scope="P-1")
    next_number(holder, "BOQ", document_date=dt.date(2025, 12, 1))

    other_session = connect()
    # A guard, shorter than the type's lock_timeout: had this session to wait for the holder, which keeps its
    # locks until the end of the test, it would fail here instead of returning a number.
    other_session.execute("SET statement_timeout = '3s'")
    assert next_number(other_session, other, **arguments) == expected
    # Both sessions now hold a counter at the same time, and neither waits for the other.
    pids = (holder.info.backend_pid, other_session.info.backend_pid)
    blocked = db.execute("SELECT pg_blocking_pids(%s), pg_blocking_pids(%s)", pids).fetchone()
    assert blocked == ([], [])
    # Each session holds the locks of exactly the counters it allocated from, and of no other counter.
    assert counters_locked_by(db, holder) == {("RFA", "P-1", ""), ("BOQ", "", "2025-12")}
    other_period = "2026-01" if other == "BOQ" else ""
    assert counters_locked_by(db, other_session) == {(other, arguments.get("scope", ""), other_period)}
    other_session.commit()
    holder.commit()


def counters_locked_by(db: Conn, session: Conn) -> set[tuple[str, str, str]]:
    """The (type, scope value, period) of every counter whose turn (its docnum.counter_queue row) `session`
    holds: rows locked right now (a SKIP LOCKED read passes them over) whose locker is the session's
    transaction."""
    rows = db.execute(
        "SELECT q.document_type, q.scope_value, q.period FROM docnum.counter_queue q"
        " JOIN pg_stat_activity a ON a.backend_xid = q.xmax AND a.pid = %s"
        " WHERE q.counter_id NOT IN (SELECT f.counter_id FROM docnum.counter_queue f FOR UPDATE SKIP LOCKED)",
        (session.info.backend_pid,),
    ).fetchall()
    return set(rows)


# --- Lock timeouts ------------------------------------------------------------------------------------------


def hold_counter(connect: Connect, document_type: str, **arguments: Any) -> Conn:
    """A session inside an open transaction that has just allocated from (and so holds) a counter."""
    holder = connect()
    next_number(holder, document_type, **arguments)
    return holder


def timed(action: Callable[[], object]) -> tuple[psycopg.Error, float]:
    started = time.monotonic()
    error = expect_error("NB003", action)
    return error, time.monotonic() - started


def test_type_lock_timeout_gives_nb003(db: Conn, connect: Connect) -> None:
    define(db, "LCK", "{TYPE}-{SEQ:4}", lock_timeout="200 milliseconds")
    next_number(db, "LCK")
    holder = hold_counter(connect, "LCK")
    waiter = connect(autocommit=True)
    waiter.execute("SET statement_timeout = '10s'")
    before = footprint(db)

    _, elapsed = timed(lambda: next_number(waiter, "LCK"))
    assert 0.15 <= elapsed < 5
    _, elapsed = timed(lambda: reserve(waiter, "LCK"))
    assert 0.15 <= elapsed < 5
    assert footprint(db) == before

    holder.rollback()
    assert next_number(waiter, "LCK") == "LCK-0002"


def test_type_lock_timeout_applies_to_the_first_use_of_a_counter(db: Conn, connect: Connect) -> None:
    define(db, "LCK", "{SCOPE}-{TYPE}-{SEQ:4}", scope="PROJECT", lock_timeout="200 milliseconds")
    holder = hold_counter(connect, "LCK", scope="NEW")  # creates the counter, not yet committed
    waiter = connect(autocommit=True)
    waiter.execute("SET statement_timeout = '10s'")

    _, elapsed = timed(lambda: next_number(waiter, "LCK", scope="NEW"))
    assert elapsed < 5
    holder.commit()
    assert next_number(waiter, "LCK", scope="NEW") == "NEW-LCK-0002"


def test_shorter_session_lock_timeout_wins_over_the_types(db: Conn, connect: Connect) -> None:
    define(db, "LCK", "{TYPE}-{SEQ:4}", lock_timeout="30 seconds")
    next_number(db, "LCK")
    holder = hold_counter(connect, "LCK")
    waiter = connect(autocommit=True)
    waiter.execute("SET lock_timeout = '100ms'")
    waiter.execute("SET statement_timeout = '10s'")

    _, elapsed = timed(lambda: next_number(waiter, "LCK"))
    assert elapsed < 5
    holder.rollback()


def test_session_lock_timeout_alone_when_the_type_has_none(db: Conn, connect: Connect) -> None:
    define(db, "LCK", "{TYPE}-{SEQ:4}", lock_timeout=None)
    assert db.execute("SELECT lock_timeout FROM docnum.document_type WHERE code = 'LCK'").fetchone() == (
        None,
    )
    next_number(db, "LCK")
    holder = hold_counter(connect, "LCK")
    waiter = connect(autocommit=True)
    waiter.execute("SET lock_timeout = '100ms'")
    waiter.execute("SET statement_timeout = '10s'")

    _, elapsed = timed(lambda: reserve(waiter, "LCK"))
    assert elapsed < 5
    holder.rollback()


def test_type_lock_timeout_does_not_leak_into_the_rest_of_the_transaction(connect: Connect, db: Conn) -> None:
    define(db, "LCK", "{TYPE}-{SEQ:4}", lock_timeout="200 milliseconds")
    conn = connect()
    conn.execute("SET lock_timeout = 0")
    conn.commit()
    next_number(conn, "LCK")
    assert conn.execute("SELECT current_setting('lock_timeout')").fetchone() == ("0",)
    conn.rollback()


# --- REPEATABLE READ ----------------------------------------------------------------------------------------


def test_repeatable_read_conflict_surfaces_as_serialization_failure(
    db: Conn, connect: Connect, cor: str
) -> None:
    holder = connect()
    waiter = connect()
    waiter.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    assert next_number(holder, cor) == "COR-00002"

    waiting = in_thread(lambda: next_number(waiter, cor))
    wait_until_blocked(db, waiter.info.backend_pid)
    holder.commit()

    with pytest.raises(psycopg.Error) as failure:
        waiting.result(timeout=10)
    assert failure.value.sqlstate == "40001"
    waiter.rollback()
    # The application's retry gets the next value; nothing was lost or issued twice.
    assert next_number(waiter, cor) == "COR-00003"
    waiter.commit()
    assert [row["sequence_value"] for row in ledger_rows(db, cor)] == [1, 2, 3]
