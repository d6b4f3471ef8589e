"""Smoke tests of the Python client and CLI against a real, migrated database (fixtures from conftest.py)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from typer.testing import CliRunner

import docnum
from docnum import AsyncNumbering, Numbering
from docnum.cli.commands import app
from docnum.errors import translate


def test_define_type_sends_only_given_arguments(db: psycopg.Connection[Any]) -> None:
    numbering = Numbering(db)
    defined = numbering.define_type("INV", "{TYPE}-{SEQ:4}", max_value=50, metadata={"team": "finance"})
    assert (defined.scope, defined.reset, defined.time_zone) == ("GLOBAL", "NEVER", "UTC")
    assert defined.reservation_ttl == timedelta(minutes=5)
    assert defined.lock_timeout == timedelta(seconds=5)
    assert (defined.max_value, defined.metadata) == (50, {"team": "finance"})
    assert defined.allow_manual_override is False
    assert numbering.get_type("INV") == defined
    assert numbering.get_type("NONE") is None
    assert numbering.alter_type("INV", max_value=60, reason="more").max_value == 60


def test_reserve_confirm_cancel_and_history(db: psycopg.Connection[Any]) -> None:
    numbering = Numbering(db)
    numbering.define_type("COR", "{TYPE}-{YYYY}-{SEQ:5}", scope="YEARLY", time_zone="Asia/Bangkok")
    held = numbering.reserve("COR", actor="alice", ttl=timedelta(minutes=1), document_date=date(2025, 3, 1))
    assert (held.document_number, held.sequence_value) == ("COR-2025-00001", 1)
    assert numbering.confirm(held.token, document_ref="D-1") == "COR-2025-00001"
    other = numbering.reserve("COR", document_date=date(2025, 3, 1))
    assert numbering.cancel(str(other.token), reason="typo") == "COR-2025-00002"
    assert [e.operation for e in numbering.history("COR-2025-00001")] == ["RESERVE", "CONFIRM"]
    assert numbering.next_number("COR", document_date=date(2025, 3, 1)) == "COR-2025-00003"
    assert numbering.expire_reservations() == 0


def test_errors_carry_code_detail_hint_and_cause(db: psycopg.Connection[Any]) -> None:
    numbering = Numbering(db)
    with pytest.raises(docnum.ConfigNotFound) as caught:
        numbering.reserve("NOPE")
    error = caught.value
    assert (error.code, error.sqlstate) == ("NB001", "NB001")
    assert error.message and error.detail and error.hint
    assert isinstance(error.__cause__, psycopg.Error)
    with pytest.raises(docnum.ReservationExpired):
        numbering.confirm("00000000-0000-0000-0000-000000000000")
    with pytest.raises(psycopg.errors.DivisionByZero) as other:
        db.execute("SELECT 1 / 0")
    assert translate(other.value) is other.value


def test_caller_transaction_is_joined_not_committed(db: psycopg.Connection[Any], dsn: str) -> None:
    Numbering(db).define_type("TX", "{TYPE}-{SEQ:3}")
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")
        number = Numbering(conn).next_number("TX")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()
    assert Numbering(db).next_number("TX") == number  # rolled back with the caller: nothing was issued


def test_reservation_block_cancels_unless_confirmed(db: psycopg.Connection[Any]) -> None:
    numbering = Numbering(db)
    numbering.define_type("BOQ", "{TYPE}-{SEQ:4}")
    with numbering.reservation("BOQ", actor="bob") as kept:
        kept.confirm(document_ref="doc-1")
    assert kept.confirmed
    with numbering.reservation("BOQ") as dropped:
        pass
    with pytest.raises(KeyError), numbering.reservation("BOQ") as failed:
        raise KeyError("boom")

    def reasons(number: str) -> list[Any]:
        return [(entry.new_value or {}).get("reason") for entry in numbering.history(number)]

    assert reasons(kept.document_number) == [None, None]
    assert "without confirm" in str(reasons(dropped.document_number)[-1])
    assert "KeyError" in str(reasons(failed.document_number)[-1])


def test_pool_under_concurrency_is_gapless(db: psycopg.Connection[Any], dsn: str) -> None:
    Numbering(db).define_type("RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    with ConnectionPool(dsn, min_size=8, max_size=8, open=True) as pool:
        numbering = Numbering(pool)
        with ThreadPoolExecutor(max_workers=8) as executor:
            numbers = list(executor.map(lambda _: numbering.next_number("RFA", scope="P7"), range(40)))
    assert sorted(numbers) == [f"P7/RFA/{i:04d}" for i in range(1, 41)]


def test_async_client(db: psycopg.Connection[Any], dsn: str) -> None:
    Numbering(db).define_type("ASY", "{TYPE}-{SEQ:3}")

    async def scenario() -> list[str]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            numbering = AsyncNumbering(conn)
            async with numbering.reservation("ASY") as held:
                await held.confirm()
            with pytest.raises(ValueError):
                async with numbering.reservation("ASY"):
                    raise ValueError
            return [held.document_number, await numbering.next_number("ASY")]

    assert asyncio.run(scenario()) == ["ASY-001", "ASY-003"]


def test_cli_prints_one_error_line(dsn: str) -> None:
    result = CliRunner().invoke(app, ["--dsn", dsn, "next", "NOPE"])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith("error NB001: ")
    assert "Traceback" not in result.output
