"""Batch allocation: docnum.next_numbers and reserve_numbers, in order, under one lock, audited per number."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from docnum import AsyncNumbering, Numbering
from docnum.models import Reservation
from support.helpers import (
    call,
    call_sql,
    confirm,
    define,
    expect_error,
    footprint,
    in_thread,
    ledger_rows,
    next_number,
    wait_until_blocked,
)

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]


def batch(conn: Conn, function: str, **arguments: Any) -> list[dict[str, Any]]:
    """All rows of docnum.<function>(...), in the order the function returns them."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(call_sql(function, arguments), arguments)
        return cur.fetchall()


@pytest.fixture
def cor(db: Conn) -> str:
    define(db, "COR", "{TYPE}-{SEQ:5}", allow_manual_override=True, max_value=20)
    return "COR"


def test_next_numbers_returns_consecutive_numbers_in_order(db: Conn, cor: str) -> None:
    assert next_number(db, cor) == "COR-00001"

    rows = batch(db, "next_numbers", document_type=cor, count=5, actor="billing")

    assert rows == [{"document_number": f"COR-{v:05}", "sequence_value": v} for v in range(2, 7)]
    assert next_number(db, cor) == "COR-00007"
    issued = ledger_rows(db, cor)
    assert [(r["sequence_value"], r["state"], r["actor"]) for r in issued[1:6]] == [
        (v, "confirmed", "billing") for v in range(2, 7)
    ]


def test_next_numbers_skips_values_the_ledger_holds(db: Conn, cor: str) -> None:
    # An override inside the range the batch would use, recorded above a counter moved back below it.
    call(db, "override_number", document_type=cor, document_number="COR-00003", reason="paper invoice")
    call(db, "set_counter", document_type=cor, value=0, reason="rewind")

    rows = batch(db, "next_numbers", document_type=cor, count=4)

    assert [r["sequence_value"] for r in rows] == [1, 2, 4, 5]
    assert db.execute("SELECT current_value FROM docnum.counter").fetchone() == (5,)
    assert [r[0] for r in db.execute("SELECT check_name FROM docnum.validate()").fetchall()] == []


def test_reserve_numbers_gives_each_number_its_own_token(db: Conn, cor: str) -> None:
    rows = batch(db, "reserve_numbers", document_type=cor, count=3, actor="import", metadata='{"run": 7}')

    assert [r["sequence_value"] for r in rows] == [1, 2, 3]
    assert len({r["token"] for r in rows}) == 3
    assert len({r["expires_at"] for r in rows}) == 1
    assert confirm(db, rows[1]["token"]) == "COR-00002"
    states = {r["sequence_value"]: (r["state"], r["metadata"]) for r in ledger_rows(db, cor)}
    assert states == {1: ("reserved", {"run": 7}), 2: ("confirmed", {"run": 7}), 3: ("reserved", {"run": 7})}


def test_a_batch_past_max_value_issues_nothing(db: Conn, cor: str) -> None:
    batch(db, "next_numbers", document_type=cor, count=18)
    before = footprint(db)

    error = expect_error("NB002", lambda: batch(db, "next_numbers", document_type=cor, count=3))
    assert "Nothing was issued" in (error.diag.message_detail or "")
    expect_error("NB002", lambda: batch(db, "reserve_numbers", document_type=cor, count=3))

    assert footprint(db) == before
    assert [r["sequence_value"] for r in batch(db, "next_numbers", document_type=cor, count=2)] == [19, 20]


@pytest.mark.parametrize("count", [0, -1, 10001, None])
def test_count_out_of_range_is_nb006(db: Conn, cor: str, count: int | None) -> None:
    for function in ("next_numbers", "reserve_numbers"):
        error = expect_error("NB006", lambda f=function: batch(db, f, document_type=cor, count=count))  # type: ignore[misc]
        assert error.diag.column_name == "count"


def test_the_largest_batch_is_issued_in_one_call(db: Conn) -> None:
    define(db, "BIG", "B{SEQ:6}")
    rows = batch(db, "next_numbers", document_type="BIG", count=10000)
    assert [r["sequence_value"] for r in rows] == list(range(1, 10001))


def test_a_batch_waits_for_a_single_allocation_and_then_follows_it(
    db: Conn, connect: Connect, cor: str
) -> None:
    next_number(db, cor)  # the counter exists: both sessions meet on its lock
    holder, waiter = connect(), connect(autocommit=True)
    assert next_number(holder, cor) == "COR-00002"

    waiting = in_thread(lambda: batch(waiter, "next_numbers", document_type=cor, count=3))
    assert wait_until_blocked(db, waiter.info.backend_pid) == [holder.info.backend_pid]
    holder.commit()

    assert [r["sequence_value"] for r in waiting.result(timeout=10)] == [3, 4, 5]


def test_a_single_allocation_waits_for_a_batch_and_gets_what_a_rollback_gave_back(
    db: Conn, connect: Connect, cor: str
) -> None:
    next_number(db, cor)
    holder, waiter = connect(), connect(autocommit=True)
    assert [r["sequence_value"] for r in batch(holder, "next_numbers", document_type=cor, count=4)] == [
        2,
        3,
        4,
        5,
    ]

    waiting = in_thread(lambda: next_number(waiter, cor))
    assert wait_until_blocked(db, waiter.info.backend_pid) == [holder.info.backend_pid]
    holder.rollback()

    assert waiting.result(timeout=10) == "COR-00002"
    assert [r["sequence_value"] for r in ledger_rows(db, cor)] == [1, 2]


def test_every_batch_number_is_audited_and_validate_is_clean(db: Conn, cor: str) -> None:
    batch(db, "next_numbers", document_type=cor, count=3, actor="billing")
    reserved = batch(db, "reserve_numbers", document_type=cor, count=2, actor="import")

    for row in ("COR-00001", "COR-00002", "COR-00003"):
        [entry] = batch(db, "number_history", document_number=row)
        assert (entry["operation"], entry["actor"], entry["new_value"]["state"]) == (
            "NEXT",
            "billing",
            "confirmed",
        )
    [entry] = batch(db, "number_history", document_number=reserved[0]["document_number"])
    assert (entry["operation"], entry["actor"], entry["new_value"]["state"]) == (
        "RESERVE",
        "import",
        "reserved",
    )
    exported = db.execute(
        "SELECT operation, document_number FROM docnum.audit_export('-infinity', 'infinity', 'COR')"
        " WHERE document_number IS NOT NULL ORDER BY audit_id"
    ).fetchall()
    assert exported == [("NEXT", f"COR-{v:05}") for v in (1, 2, 3)] + [
        ("RESERVE", f"COR-{v:05}") for v in (4, 5)
    ]
    assert db.execute("SELECT check_name, detail FROM docnum.validate()").fetchall() == []


def test_the_app_role_may_issue_batches(db: Conn, connect: Connect, cor: str) -> None:
    app = connect(autocommit=True)
    app.execute("SET ROLE docnum_app")
    assert len(batch(app, "next_numbers", document_type=cor, count=2)) == 2
    assert len(batch(app, "reserve_numbers", document_type=cor, count=2)) == 2


# --- clients and command line -------------------------------------------------------------------------------


def test_the_sync_client_returns_lists(db: Conn, cor: str) -> None:
    numbering = Numbering(db)
    assert numbering.next_numbers(cor, 2, actor="billing") == ["COR-00001", "COR-00002"]
    held = numbering.reserve_numbers(cor, 2, metadata={"run": 1}, ttl="1 hour")
    assert [(r.document_number, r.sequence_value) for r in held] == [("COR-00003", 3), ("COR-00004", 4)]
    assert numbering.confirm(held[0].token) == "COR-00003"


def test_the_async_client_returns_lists(dsn: str, cor: str) -> None:
    async def scenario() -> tuple[list[str], list[Reservation]]:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        async with conn:
            numbering = AsyncNumbering(conn)
            return await numbering.next_numbers(cor, 3), await numbering.reserve_numbers(cor, 1)

    numbers, held = asyncio.run(scenario())
    assert numbers == ["COR-00001", "COR-00002", "COR-00003"]
    assert [r.document_number for r in held] == ["COR-00004"]


def run_cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "DOCNUM_DSN"}
    command = [sys.executable, "-m", "docnum", "--dsn", dsn, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_cli_next_batch_prints_one_number_per_line(dsn: str, cor: str) -> None:
    result = run_cli(dsn, "next-batch", cor, "3", "--actor", "billing")
    assert (result.returncode, result.stdout, result.stderr) == (0, "COR-00001\nCOR-00002\nCOR-00003\n", "")

    as_json = run_cli(dsn, "next-batch", cor, "2", "--json")
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == [
        {"document_number": "COR-00004", "state": "confirmed"},
        {"document_number": "COR-00005", "state": "confirmed"},
    ]


def test_cli_next_batch_refusals_are_one_line_and_issue_nothing(dsn: str, cor: str) -> None:
    too_many = run_cli(dsn, "next-batch", cor, "21")
    assert too_many.returncode == 1 and too_many.stdout == ""
    assert "NB002" in too_many.stderr and "Traceback" not in too_many.stderr
    zero = run_cli(dsn, "next-batch", cor, "0")
    assert zero.returncode != 0 and "NB006" in zero.stderr and "Traceback" not in zero.stderr
    assert run_cli(dsn, "next-batch", cor, "1").stdout == "COR-00001\n"
