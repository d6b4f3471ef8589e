"""Bulk races: many sessions on one counter at once. The invariants, not the order, are checked: values
exactly 1..N, no number twice, and a ledger row for every value."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from support.helpers import define, next_number, reserve

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]

SESSIONS = 50
PER_SESSION = 20  # 50 x 20 = 1000 reservations


def run_sessions(connect: Connect, sessions: int, work: Callable[[Conn, int], list[Any]]) -> list[Any]:
    """Open `sessions` connections, start them together on their own threads, and collect what `work` returns.

    A barrier releases every thread at once, so they all compete for the counter from the first call.
    """
    connections = [connect(autocommit=True) for _ in range(sessions)]
    barrier = threading.Barrier(sessions)
    results: list[list[Any]] = [[] for _ in range(sessions)]
    errors: list[BaseException] = []

    def session(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(connections[index], index)
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a session did not finish"
    assert errors == []
    return [item for result in results for item in result]


def assert_counter_accounts_for(db: Conn, document_type: str, count: int) -> None:
    row = db.execute(
        "SELECT count(*), count(DISTINCT document_number), count(DISTINCT sequence_value),"
        "       min(sequence_value), max(sequence_value)"
        "  FROM docnum.ledger WHERE document_type = %s",
        (document_type,),
    ).fetchone()
    assert row == (count, count, count, 1, count)
    assert db.execute(
        "SELECT current_value FROM docnum.counter WHERE document_type = %s", (document_type,)
    ).fetchall() == [(count,)]


@pytest.mark.slow
def test_concurrent_reservations_are_exactly_one_to_n(db: Conn, connect: Connect) -> None:
    define(db, "LOAD", "{TYPE}-{SEQ:6}")

    def work(conn: Conn, _: int) -> list[tuple[int, str]]:
        out = []
        for _ in range(PER_SESSION):
            reservation = reserve(conn, "LOAD", actor="load")
            out.append((reservation["sequence_value"], reservation["document_number"]))
        return out

    reservations = run_sessions(connect, SESSIONS, work)
    total = SESSIONS * PER_SESSION
    values = sorted(value for value, _ in reservations)
    assert values == list(range(1, total + 1))
    numbers = {number for _, number in reservations}
    assert len(numbers) == total
    assert numbers == {f"LOAD-{value:06d}" for value in range(1, total + 1)}
    assert_counter_accounts_for(db, "LOAD", total)
    audited = db.execute(
        "SELECT count(*), count(DISTINCT document_number) FROM docnum.audit_trail WHERE operation = 'RESERVE'"
    ).fetchone()
    assert audited == (total, total)


@pytest.mark.slow
def test_concurrent_next_numbers_with_rollbacks_stay_gapless(db: Conn, connect: Connect) -> None:
    define(db, "MIX", "{TYPE}-{SEQ:6}")
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")

    def work(conn: Conn, index: int) -> list[tuple[str, str]]:
        kept = []
        for step in range(8):
            rolled_back = (index + step) % 3 == 0
            with conn.transaction(force_rollback=rolled_back):
                mix = next_number(conn, "MIX", actor=f"s{index}")
                rfa = next_number(conn, "RFA", scope=f"P{step % 2}")
            if not rolled_back:
                kept += [("MIX", mix), ("RFA", rfa)]
        return kept

    kept = run_sessions(connect, SESSIONS, work)
    mix = sorted(number for kind, number in kept if kind == "MIX")
    assert mix == [f"MIX-{value:06d}" for value in range(1, len(mix) + 1)]
    assert_counter_accounts_for(db, "MIX", len(mix))
    for project in ("P0", "P1"):
        rfa = sorted(number for kind, number in kept if kind == "RFA" and number.startswith(project + "/"))
        assert rfa == [f"{project}/RFA/{value:04d}" for value in range(1, len(rfa) + 1)]
    ledger = db.execute("SELECT count(*), count(DISTINCT document_number) FROM docnum.ledger").fetchone()
    assert ledger == (len(kept), len(kept))
