"""The client's administration and report methods against a real, migrated database (conftest.py)."""

from __future__ import annotations

import asyncio
from contextlib import closing
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

import docnum
from docnum import AsyncNumbering, Numbering
from docnum.models import AuditEntry, CounterStatus, Duplicate, Finding, Gap, ImportResult

DAY = date(2025, 3, 1)


def _project_type(numbering: Numbering, *, override: bool = True) -> None:
    numbering.define_type(
        "RFA",
        "{SCOPE}/{TYPE}/{YYYY}/{SEQ:4}",
        scope="PROJECT",
        reset="YEARLY",
        allow_manual_override=override,
    )


def test_override_void_replace_and_linked_history(db: psycopg.Connection[Any]) -> None:
    numbering = Numbering(db)
    _project_type(numbering)
    first = numbering.next_number("RFA", scope="P1", document_ref="doc-1", document_date=DAY)
    assert first == "P1/RFA/2025/0001"

    manual = numbering.override("RFA", "P1/RFA/2025/0005", actor="alice", reason="paper register")
    assert manual == "P1/RFA/2025/0005"
    assert numbering.next_number("RFA", scope="P1", document_date=DAY) == "P1/RFA/2025/0006"
    assert numbering.override("RFA", "free text", reason="legacy", skip_validation=True) == "free text"

    assert numbering.void(manual, actor="alice", reason="entered twice") == manual
    replacement = numbering.void_and_replace(first, actor="bob", reason="typo in the title")
    assert replacement == "P1/RFA/2025/0007"

    trail = numbering.history(first)
    assert all(isinstance(entry, AuditEntry) for entry in trail)
    assert [(entry.operation, entry.document_number) for entry in trail] == [
        ("NEXT", first),
        ("VOID", first),
        ("REPLACE", replacement),
        ("REPLACE_LINK", first),
    ]
    assert [entry.audit_id for entry in trail] == sorted(entry.audit_id for entry in trail)
    assert [entry.operation for entry in numbering.history(replacement)] == [e.operation for e in trail]
    assert trail[1].metadata == {"reason": "typo in the title"} and trail[1].actor == "bob"


def test_admin_errors_map_to_their_classes(db: psycopg.Connection[Any]) -> None:
    numbering = Numbering(db)
    _project_type(numbering)
    numbering.define_type("COR", "{TYPE}-{SEQ:4}")
    number = numbering.next_number("COR")

    with pytest.raises(docnum.NumberNotFound) as missing:
        numbering.void("COR-9999", reason="x")
    assert (missing.value.code, missing.value.sqlstate) == ("NB011", "NB011")
    assert missing.value.detail and missing.value.hint
    with pytest.raises(docnum.NumberNotFound):
        numbering.void_and_replace("COR-9999", reason="x")

    numbering.void(number, reason="wrong")
    with pytest.raises(docnum.InvalidStateTransition):
        numbering.void(number, reason="again")
    with pytest.raises(docnum.ManualOverrideNotAllowed):
        numbering.override("COR", "COR-0100", reason="manual")
    with pytest.raises(docnum.InvalidArgument):
        numbering.override("RFA", "not an RFA number", reason="manual")
    with pytest.raises(docnum.InvalidArgument):
        numbering.void(numbering.next_number("COR"), reason="")
    numbering.override("RFA", "P1/RFA/2025/0003", reason="manual")
    with pytest.raises(docnum.DuplicateNumber):
        numbering.override("RFA", "P1/RFA/2025/0003", reason="manual")
    with pytest.raises(docnum.InvalidArgument):
        numbering.set_counter("COR", value=-1, reason="below zero")
    with pytest.raises(docnum.ConfigNotFound):
        numbering.set_counter("NOPE", value=1, reason="unknown type")


def test_set_counter_status_and_gaps(db: psycopg.Connection[Any]) -> None:
    numbering = Numbering(db)
    _project_type(numbering)
    numbering.next_number("RFA", scope="P1", document_date=DAY)
    assert numbering.set_counter("RFA", scope="P1", period="2025", value=4, actor="ops", reason="align") == 4
    assert numbering.next_number("RFA", scope="P1", document_date=DAY) == "P1/RFA/2025/0005"
    numbering.next_number("RFA", scope="P2", document_date=DAY)

    status = numbering.status()
    assert [(s.scope_value, s.period, s.current_value) for s in status] == [
        ("P1", "2025", 5),
        ("P2", "2025", 1),
    ]
    p1 = status[0]
    assert isinstance(p1, CounterStatus)
    assert (p1.document_type, p1.confirmed, p1.reserved, p1.max_value) == ("RFA", 2, 0, 9999)
    assert p1.utilisation_pct == Decimal("0.05") and p1.last_used_at is not None
    assert numbering.status("RFA") == status
    with pytest.raises(docnum.ConfigNotFound):  # as in SQL and the CLI: an unknown type is NB001
        numbering.status("NOPE")

    found = numbering.gaps("RFA")
    assert [(g.scope_value, g.first_value, g.last_value, g.value_count) for g in found] == [("P1", 2, 4, 3)]
    assert all(isinstance(g, Gap) and g.explained for g in found)
    assert {(g.source, g.reason, g.actor) for g in found} == {("SET_COUNTER", "align", "ops")}
    assert numbering.gaps("RFA", scope="P2") == [] and numbering.gaps(period="2024") == []
    assert list(numbering.iter_gaps("RFA", fetch_size=1)) == found


def test_gaps_of_a_huge_jump_is_one_range(db: psycopg.Connection[Any]) -> None:
    numbering = Numbering(db)
    numbering.define_type("BIG", "{TYPE}-{SEQ:13}", max_value=10**13)
    numbering.next_number("BIG")
    numbering.set_counter("BIG", value=10**12, reason="migration")
    numbering.next_number("BIG")
    (gap,) = numbering.iter_gaps("BIG")
    assert (gap.first_value, gap.last_value, gap.value_count, gap.explained) == (2, 10**12, 10**12 - 1, True)
    assert numbering.validate() == []


def test_import_numbers_reports_every_row(db: psycopg.Connection[Any]) -> None:
    numbering = Numbering(db)
    _project_type(numbering)
    created = datetime(2019, 6, 1, 8, 30, tzinfo=timezone.utc)
    rows: list[dict[str, Any]] = [
        {"document_type": "RFA", "document_number": "P1/RFA/2019/0001", "created_at": created},
        {"document_type": "RFA", "document_number": "P1/RFA/2019/0004", "document_ref": "old-4"},
        {"document_type": "RFA", "document_number": "P1/RFA/2019/0001"},
        {"document_type": "RFA", "document_number": "nonsense"},
        {"document_type": "NOPE", "document_number": "X-1"},
        {"document_type": "RFA", "document_number": "P2/RFA/2019/0002", "created_at": date(2019, 7, 1)},
    ]
    results = numbering.import_numbers(iter(rows), actor="migration")
    assert all(isinstance(r, ImportResult) for r in results)
    assert [(r.row_number, r.status) for r in results] == [
        (1, "imported"),
        (2, "imported"),
        (3, "rejected"),
        (4, "rejected"),
        (5, "rejected"),
        (6, "imported"),
    ]
    assert results[2].detail == "duplicate of row 1"
    assert "format" in (results[3].detail or "") and "NOPE" in (results[4].detail or "")

    ledger = db.execute(
        "SELECT document_number, state, issued_at, document_ref, actor FROM docnum.ledger"
        " ORDER BY document_number"
    ).fetchall()
    assert [row[:2] for row in ledger] == [
        ("P1/RFA/2019/0001", "imported"),
        ("P1/RFA/2019/0004", "imported"),
        ("P2/RFA/2019/0002", "imported"),
    ]
    assert ledger[0][2] == created and ledger[1][3] == "old-4" and ledger[0][4] == "migration"

    again = numbering.import_numbers(rows[:2])
    assert [(r.status, r.detail) for r in again] == [("already_present", "imported earlier")] * 2
    assert numbering.import_numbers([]) == []
    assert [s.current_value for s in numbering.status("RFA")] == [4, 2]
    assert numbering.validate() == []


def _letters_table(db: psycopg.Connection[Any]) -> None:
    db.execute("CREATE TABLE public.letters (id serial PRIMARY KEY, doc_no text)")


def test_register_document_table(db: psycopg.Connection[Any]) -> None:
    numbering = Numbering(db)
    db.execute("CREATE TABLE public.letters (id serial PRIMARY KEY, doc_no text)")
    db.execute("CREATE VIEW public.letter_numbers AS SELECT doc_no FROM public.letters")
    with pytest.raises(docnum.InvalidArgument):  # only plain tables: a view is code
        numbering.register_document_table("letter_numbers", "doc_no")
    with pytest.raises(docnum.InvalidArgument):
        numbering.register_document_table("letters", "no_such_column")
    numbering.register_document_table("letters", "doc_no", actor="dba")
    registered = db.execute(
        "SELECT schema_name::text, table_name::text, number_column FROM docnum.document_table"
    )
    assert registered.fetchall() == [("public", "letters", "doc_no")]


def test_check_duplicates_and_validate_see_registered_tables(db: psycopg.Connection[Any]) -> None:
    numbering = Numbering(db)
    numbering.define_type("COR", "{TYPE}-{SEQ:4}")
    number = numbering.next_number("COR")
    assert numbering.check_duplicates() == [] and numbering.validate() == []
    _letters_table(db)
    numbering.register_document_table("letters", "doc_no")

    db.execute("INSERT INTO public.letters (doc_no) VALUES (%s), ('COR-0099')", (number,))
    assert numbering.check_duplicates() == []  # once in the ledger and once in the application: normal
    db.execute("INSERT INTO public.letters (doc_no) VALUES (%s)", (number,))
    found_in = ("docnum.ledger", "public.letters", "public.letters")
    assert numbering.check_duplicates() == [Duplicate(number, 3, found_in)]
    findings = numbering.validate()
    assert [(f.check_name, f.severity) for f in findings] == [("duplicate_number", "error")]
    assert isinstance(findings[0], Finding) and number in findings[0].detail

    db.execute("DROP TABLE public.letters")
    assert numbering.check_duplicates() == [
        Duplicate(None, None, ("public.letters",), "the table does not exist")
    ]
    assert [f.check_name for f in numbering.validate()] == ["document_table_unchecked"]


def test_audit_export_streams_through_a_server_side_cursor(db: psycopg.Connection[Any], dsn: str) -> None:
    numbering = Numbering(db)
    numbering.define_type("COR", "{TYPE}-{SEQ:4}")
    numbering.define_type("BOQ", "{TYPE}-{SEQ:4}")
    for _ in range(5):
        numbering.next_number("COR")
    numbering.next_number("BOQ")
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    end = datetime.now(timezone.utc) + timedelta(hours=1)

    everything = list(numbering.audit_export(start, end, fetch_size=2))
    expected = db.execute("SELECT audit_id FROM docnum.audit_trail ORDER BY audit_id").fetchall()
    assert [e.audit_id for e in everything] == [row[0] for row in expected]
    assert all(isinstance(e, AuditEntry) for e in everything)
    cor = list(numbering.audit_export(start, end, "COR"))
    assert [e.operation for e in cor] == ["DEFINE_TYPE"] + ["NEXT"] * 5
    assert list(numbering.audit_export(end, end + timedelta(hours=1))) == []

    # While it is read the iterator holds a transaction of its own; closing it early ends that transaction.
    with closing(numbering.audit_export(start, end, fetch_size=1)) as rows:
        assert next(rows).operation == "DEFINE_TYPE"
        during = db.info.transaction_status
    assert (during, db.info.transaction_status) == (TransactionStatus.INTRANS, TransactionStatus.IDLE)

    # In a caller's transaction, it joins it and leaves it open.
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")
        assert len(list(Numbering(conn).audit_export(start, end))) == len(everything)
        assert conn.info.transaction_status == TransactionStatus.INTRANS


def test_history_is_open_to_docnum_app(db: psycopg.Connection[Any], connect: Any) -> None:
    numbering = Numbering(db)
    numbering.define_type("COR", "{TYPE}-{SEQ:4}")
    number = numbering.next_number("COR", actor="app")
    app_conn = connect(autocommit=True)
    app_conn.execute("SET ROLE docnum_app")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute("SELECT * FROM docnum.audit_log")
    assert [e.operation for e in Numbering(app_conn).history(number)] == ["NEXT"]


def test_async_admin_and_reports(db: psycopg.Connection[Any], dsn: str) -> None:
    Numbering(db).define_type("ASY", "{TYPE}-{SEQ:3}", allow_manual_override=True)

    async def scenario() -> tuple[list[str], list[str], int, list[Any]]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            numbering = AsyncNumbering(conn)
            first = await numbering.next_number("ASY")
            manual = await numbering.override("ASY", "ASY-010", reason="manual")
            new = await numbering.void_and_replace(first, reason="typo")
            await numbering.void(manual, reason="gone")
            value = await numbering.set_counter("ASY", value=20, reason="jump")
            imported = await numbering.import_numbers(
                [{"document_type": "ASY", "document_number": "ASY-030"}]
            )
            with pytest.raises(docnum.NumberNotFound):
                await numbering.void("ASY-999", reason="x")
            history = [e.operation for e in await numbering.history(first)]
            now = datetime.now(timezone.utc)
            exported = [
                e.operation async for e in numbering.audit_export(now - timedelta(hours=1), now, "ASY")
            ]
            reports = [
                await numbering.status("ASY"),
                await numbering.gaps("ASY"),
                await numbering.check_duplicates(),
                await numbering.validate(),
                [r.status for r in imported],
                new,
            ]
            return history, exported, value, reports

    history, exported, value, reports = asyncio.run(scenario())
    status, found, duplicates, findings, imported, new = reports
    assert new == "ASY-011" and value == 20 and imported == ["imported"]
    assert history == ["NEXT", "VOID", "REPLACE", "REPLACE_LINK"]
    assert exported[:2] == ["DEFINE_TYPE", "NEXT"] and exported[-1] == "IMPORT"
    assert [s.current_value for s in status] == [30]
    assert {g.source for g in found} == {"MANUAL_OVERRIDE", "SET_COUNTER", "IMPORT"}
    assert duplicates == [] and findings == []
