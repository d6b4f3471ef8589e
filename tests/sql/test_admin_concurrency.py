"""Administrative operations racing allocation in the same counter, with the interleaving forced.

One session opens a transaction and does its step; the other session's step runs on a thread; the test
polls pg_blocking_pids() until PostgreSQL shows the second session waiting for the first, and only then
commits (or rolls back) the first. Whatever the order, a value is issued once and the counter ends where the
next allocation is right.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from support.admin_helpers import (
    counter_value,
    import_numbers,
    import_row,
    override,
    set_counter,
    states_by_value,
    validate,
    void_and_replace,
)
from support.helpers import define, in_thread, ledger_rows, next_number, wait_until_blocked

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]


def cor_number(value: int) -> str:
    return f"COR-{value:05d}"


@pytest.fixture
def cor(db: Conn) -> str:
    """COR with numbers 1..3 confirmed, so every session below meets on an existing counter's lock."""
    define(db, "COR", "{TYPE}-{SEQ:5}", allow_manual_override=True)
    for _ in range(3):
        next_number(db, "COR")
    return "COR"


def assert_issued_once(db: Conn, document_type: str) -> None:
    """No number and no counter value twice, and the database finds nothing wrong."""
    rows = ledger_rows(db, document_type)
    assert len({row["document_number"] for row in rows}) == len(rows)
    values = [row["sequence_value"] for row in rows]
    assert len(set(values)) == len(values)
    assert validate(db) == []


# --- (1) an override and an allocation of the same value ------------------------------------------


def test_override_waiting_for_an_allocation_of_its_value_gets_nb005(
    db: Conn, connect: Connect, cor: str
) -> None:
    allocator, admin = connect(), connect(autocommit=True)
    assert next_number(allocator, cor) == cor_number(4)  # not committed yet

    waiting = in_thread(lambda: override(admin, cor, cor_number(4), reason="typed the same number by hand"))
    assert wait_until_blocked(db, admin.info.backend_pid) == [allocator.info.backend_pid]
    assert not waiting.done()
    allocator.commit()

    with pytest.raises(psycopg.Error) as raised:
        waiting.result(timeout=10)
    assert raised.value.sqlstate == "NB005"
    assert states_by_value(db, cor) == {1: "confirmed", 2: "confirmed", 3: "confirmed", 4: "confirmed"}
    assert counter_value(db, cor) == 4
    assert_issued_once(db, cor)


def test_override_waiting_for_a_rolled_back_allocation_records_its_value(
    db: Conn, connect: Connect, cor: str
) -> None:
    allocator, admin = connect(), connect(autocommit=True)
    assert next_number(allocator, cor) == cor_number(4)

    waiting = in_thread(lambda: override(admin, cor, cor_number(4)))
    wait_until_blocked(db, admin.info.backend_pid)
    allocator.rollback()

    assert waiting.result(timeout=10) == cor_number(4)
    assert states_by_value(db, cor)[4] == "overridden"
    assert next_number(db, cor) == cor_number(5)
    assert_issued_once(db, cor)


def test_allocation_waiting_for_an_override_of_its_value_gets_the_next_one(
    db: Conn, connect: Connect, cor: str
) -> None:
    admin, allocator = connect(), connect(autocommit=True)
    assert override(admin, cor, cor_number(4)) == cor_number(4)  # not committed yet

    waiting = in_thread(lambda: next_number(allocator, cor))
    assert wait_until_blocked(db, allocator.info.backend_pid) == [admin.info.backend_pid]
    admin.commit()

    assert waiting.result(timeout=10) == cor_number(5)
    assert states_by_value(db, cor) == {
        1: "confirmed",
        2: "confirmed",
        3: "confirmed",
        4: "overridden",
        5: "confirmed",
    }
    assert_issued_once(db, cor)


def test_allocation_waiting_for_an_override_far_ahead_continues_after_it(
    db: Conn, connect: Connect, cor: str
) -> None:
    admin, allocator = connect(), connect(autocommit=True)
    override(admin, cor, cor_number(9))

    waiting = in_thread(lambda: next_number(allocator, cor))
    wait_until_blocked(db, allocator.info.backend_pid)
    admin.commit()

    assert waiting.result(timeout=10) == cor_number(10)
    assert_issued_once(db, cor)


# --- (2) void_and_replace and next_number in the same counter -------------------------------------


def test_void_and_replace_waiting_for_an_allocation(db: Conn, connect: Connect, cor: str) -> None:
    allocator, admin = connect(), connect(autocommit=True)
    assert next_number(allocator, cor) == cor_number(4)

    waiting = in_thread(lambda: void_and_replace(admin, cor_number(2), reason="wrong amount"))
    assert wait_until_blocked(db, admin.info.backend_pid) == [allocator.info.backend_pid]
    allocator.commit()

    assert waiting.result(timeout=10) == cor_number(5)
    assert states_by_value(db, cor) == {
        1: "confirmed",
        2: "voided",
        3: "confirmed",
        4: "confirmed",
        5: "confirmed",
    }
    assert counter_value(db, cor) == 5
    assert_issued_once(db, cor)


def test_allocation_waiting_for_void_and_replace(db: Conn, connect: Connect, cor: str) -> None:
    admin, allocator = connect(), connect(autocommit=True)
    assert void_and_replace(admin, cor_number(2), reason="wrong amount") == cor_number(4)

    waiting = in_thread(lambda: next_number(allocator, cor))
    assert wait_until_blocked(db, allocator.info.backend_pid) == [admin.info.backend_pid]
    admin.commit()

    assert waiting.result(timeout=10) == cor_number(5)
    assert sorted(states_by_value(db, cor)) == [1, 2, 3, 4, 5]  # distinct and contiguous
    assert_issued_once(db, cor)


def test_allocation_waiting_for_a_rolled_back_void_and_replace(db: Conn, connect: Connect, cor: str) -> None:
    admin, allocator = connect(), connect(autocommit=True)
    void_and_replace(admin, cor_number(2))

    waiting = in_thread(lambda: next_number(allocator, cor))
    wait_until_blocked(db, allocator.info.backend_pid)
    admin.rollback()

    assert waiting.result(timeout=10) == cor_number(4)
    assert states_by_value(db, cor) == {1: "confirmed", 2: "confirmed", 3: "confirmed", 4: "confirmed"}
    assert_issued_once(db, cor)


# --- (3) import_numbers and next_number in the same counter ---------------------------------------


def test_import_waiting_for_an_allocation(db: Conn, connect: Connect, cor: str) -> None:
    allocator, admin = connect(), connect(autocommit=True)
    assert next_number(allocator, cor) == cor_number(4)
    rows = [import_row(cor, cor_number(4)), import_row(cor, cor_number(8))]

    waiting = in_thread(lambda: import_numbers(admin, rows, actor="migration"))
    assert wait_until_blocked(db, admin.info.backend_pid) == [allocator.info.backend_pid]
    allocator.commit()

    results = waiting.result(timeout=10)
    assert [r["status"] for r in results] == ["rejected", "imported"]
    assert "duplicate" in results[0]["detail"]
    assert states_by_value(db, cor) == {
        1: "confirmed",
        2: "confirmed",
        3: "confirmed",
        4: "confirmed",
        8: "imported",
    }
    assert counter_value(db, cor) == 8
    assert next_number(db, cor) == cor_number(9)
    assert_issued_once(db, cor)


def test_allocation_waiting_for_an_import(db: Conn, connect: Connect, cor: str) -> None:
    admin, allocator = connect(), connect(autocommit=True)
    results = import_numbers(admin, [import_row(cor, cor_number(4)), import_row(cor, cor_number(7))])
    assert [r["status"] for r in results] == ["imported", "imported"]

    waiting = in_thread(lambda: next_number(allocator, cor))
    assert wait_until_blocked(db, allocator.info.backend_pid) == [admin.info.backend_pid]
    admin.commit()

    assert waiting.result(timeout=10) == cor_number(8)
    assert counter_value(db, cor) == 8
    assert_issued_once(db, cor)


def test_import_into_two_counters_waits_for_each(db: Conn, connect: Connect, cor: str) -> None:
    define(db, "LTR", "{TYPE}-{YYYY}-{SEQ:3}", scope="YEARLY")
    next_number(db, "LTR", document_date="2020-01-01")
    first, second, admin = connect(), connect(), connect(autocommit=True)
    assert next_number(first, cor) == cor_number(4)
    assert next_number(second, "LTR", document_date="2020-02-02") == "LTR-2020-002"
    rows = [
        import_row("LTR", "LTR-2020-002"),
        import_row(cor, cor_number(6)),
        import_row("LTR", "LTR-2020-005"),
    ]

    waiting = in_thread(lambda: import_numbers(admin, rows))
    assert wait_until_blocked(db, admin.info.backend_pid) == [first.info.backend_pid]  # counters in id order
    first.commit()
    # Still waiting, now for the other counter.
    assert wait_until_blocked(db, admin.info.backend_pid) == [second.info.backend_pid]
    assert not waiting.done()
    second.commit()

    assert [r["status"] for r in waiting.result(timeout=10)] == ["rejected", "imported", "imported"]
    assert counter_value(db, cor) == 6
    assert counter_value(db, "LTR", period="2020") == 5
    assert_issued_once(db, cor)
    assert_issued_once(db, "LTR")


# --- set_counter and next_number ------------------------------------------------------------------


def test_backward_set_counter_waiting_for_an_allocation_never_reissues(
    db: Conn, connect: Connect, cor: str
) -> None:
    allocator, admin = connect(), connect(autocommit=True)
    assert next_number(allocator, cor) == cor_number(4)

    waiting = in_thread(lambda: set_counter(admin, cor, 1, reason="rewind"))
    wait_until_blocked(db, admin.info.backend_pid)
    allocator.commit()

    assert waiting.result(timeout=10) == 1
    assert next_number(db, cor) == cor_number(5)
    assert_issued_once(db, cor)


# --- two administrators, and the type's lock_timeout ----------------------------------------------


def test_second_override_of_the_same_value_waits_and_gets_nb005(db: Conn, connect: Connect, cor: str) -> None:
    first, second = connect(), connect(autocommit=True)
    override(first, cor, cor_number(6), actor="first")

    waiting = in_thread(lambda: override(second, cor, cor_number(6), actor="second"))
    assert wait_until_blocked(db, second.info.backend_pid) == [first.info.backend_pid]
    first.commit()

    with pytest.raises(psycopg.Error) as raised:
        waiting.result(timeout=10)
    assert raised.value.sqlstate == "NB005"
    assert ledger_rows(db, cor)[-1]["actor"] == "first"
    assert_issued_once(db, cor)


@pytest.fixture
def slo(db: Conn, connect: Connect) -> Conn:
    """Type SLO (lock_timeout 200 ms) with SLO-001 committed; returns a session holding its counter."""
    define(db, "SLO", "{TYPE}-{SEQ:3}", allow_manual_override=True, lock_timeout="200 milliseconds")
    next_number(db, "SLO")
    holder = connect()
    assert next_number(holder, "SLO") == "SLO-002"  # not committed: the counter stays locked
    return holder


def sqlstate_after(action: Callable[[], object]) -> str | None:
    with pytest.raises(psycopg.Error) as raised:
        action()
    return raised.value.sqlstate


def test_administration_gives_up_after_the_type_s_lock_timeout(db: Conn, connect: Connect, slo: Conn) -> None:
    admin = connect(autocommit=True)  # no lock_timeout of its own: the type's 200 ms apply

    assert sqlstate_after(lambda: override(admin, "SLO", "SLO-007")) == "NB003"
    assert sqlstate_after(lambda: set_counter(admin, "SLO", 9)) == "NB003"
    assert sqlstate_after(lambda: void_and_replace(admin, "SLO-001")) == "NB003"

    slo.commit()
    assert states_by_value(db, "SLO") == {1: "confirmed", 2: "confirmed"}
    assert override(admin, "SLO", "SLO-007") == "SLO-007"


def test_import_gives_up_after_the_session_lock_timeout_with_nb003(connect: Connect, slo: Conn) -> None:
    admin = connect(autocommit=True)
    admin.execute("SET lock_timeout = '200ms'")
    assert sqlstate_after(lambda: import_numbers(admin, [import_row("SLO", "SLO-008")])) == "NB003"


def test_import_gives_up_after_the_type_s_lock_timeout(connect: Connect, slo: Conn) -> None:
    admin = connect(autocommit=True)
    admin.execute("SET statement_timeout = '3s'")  # only a safety net: the type's 200 ms must come first
    assert sqlstate_after(lambda: import_numbers(admin, [import_row("SLO", "SLO-008")])) == "NB003"
