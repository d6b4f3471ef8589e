"""The lean write set: an allocation's ledger row is its audit record, and the trail reads as before."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from docnum.ops import schema
from support.helpers import (
    ServerInfo,
    call,
    call_sql,
    confirm,
    define,
    expect_error,
    footprint,
    next_number,
    reserve,
)

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]


@pytest.fixture
def cor(db: Conn) -> str:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    return "COR"


def history(conn: Conn, number: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(call_sql("number_history", {"document_number": number}), {"document_number": number})
        return cur.fetchall()


def test_an_allocation_writes_one_ledger_row_and_no_audit_row(db: Conn, cor: str) -> None:
    next_number(db, cor)
    before = footprint(db)
    next_number(db, cor)
    reserve(db, cor)
    after = footprint(db)
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {
        "ledger": 2,
        "counter_values": 2,
    }


def test_the_allocation_reads_as_the_first_event_of_its_number(db: Conn, connect: Connect, cor: str) -> None:
    app = connect(autocommit=True, application_name="billing-app")
    app.execute("SET ROLE docnum_app")
    with app.transaction():
        held = reserve(app, cor, actor="u1", metadata='{"batch": 3}')
        confirm(app, held["token"], actor="u2", document_ref="INV-9")

    [issued, confirmed] = history(db, "COR-00001")
    assert (issued["operation"], confirmed["operation"]) == ("RESERVE", "CONFIRM")
    assert issued["audit_id"] < confirmed["audit_id"]
    assert issued["occurred_at"] == confirmed["occurred_at"]  # one transaction
    login = db.execute("SELECT session_user").fetchone()
    assert login is not None
    assert (issued["document_type"], issued["document_number"], issued["scope_value"], issued["actor"]) == (
        "COR",
        "COR-00001",
        None,
        "u1",
    )
    assert (issued["session_user_name"], issued["application_name"]) == (login[0], "billing-app")
    assert issued["old_value"] is None
    assert issued["new_value"] == {
        "state": "reserved",
        "sequence_value": 1,
        "period": "",
        "document_ref": None,
        "expires_at": issued["new_value"]["expires_at"],
    }
    assert issued["metadata"] == {"batch": 3}
    exported = db.execute(
        "SELECT audit_id, operation FROM docnum.audit_export('-infinity', 'infinity', 'COR')"
        " WHERE document_number IS NOT NULL"
    ).fetchall()
    assert exported == [(issued["audit_id"], "RESERVE"), (confirmed["audit_id"], "CONFIRM")]


def test_audit_ids_order_allocations_among_audit_rows(db: Conn, cor: str) -> None:
    define(db, "VOI", "V{SEQ:3}")
    first = next_number(db, "VOI")
    replacement = call(db, "void_and_replace", document_number=first, reason="typo")["void_and_replace"]
    rows = db.execute(
        "SELECT operation, document_number FROM docnum.audit_trail WHERE document_type = 'VOI'"
        " AND document_number IS NOT NULL ORDER BY audit_id"
    ).fetchall()
    assert rows == [("NEXT", first), ("VOID", first), ("REPLACE", replacement), ("REPLACE_LINK", first)]


@pytest.mark.parametrize(
    "change",
    [
        "actor = 'someone else'",
        "audit_id = audit_id + 1",
        "session_user_name = 'mallory'",
        "client_addr = '10.0.0.1'",
        "application_name = 'forged'",
        "metadata = '{\"forged\": true}'",
        "replaces_number_id = NULL",
    ],
)
def test_the_record_of_an_issue_cannot_change_even_for_a_superuser(db: Conn, cor: str, change: str) -> None:
    define(db, "VOI", "V{SEQ:3}")
    first = next_number(db, "VOI")
    call(db, "void_and_replace", document_number=first, reason="typo")
    expect_error("NB009", lambda: db.execute(f"UPDATE docnum.ledger SET {change} WHERE audit_id IS NOT NULL"))


def test_no_role_may_write_the_tables_or_the_trail(db: Conn) -> None:
    rows = db.execute(
        "SELECT r.rolname, c.relname, p.privilege FROM pg_roles r"
        " CROSS JOIN pg_class c"
        " CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p(privilege)"
        " WHERE c.relnamespace = 'docnum'::regnamespace AND c.relkind IN ('r', 'v')"
        "   AND r.rolname IN ('docnum_app', 'docnum_reader', 'docnum_admin')"
        "   AND has_table_privilege(r.oid, c.oid, p.privilege)"
    ).fetchall()
    assert rows == []
    assert db.execute(
        "SELECT has_table_privilege('docnum_reader', 'docnum.audit_trail', 'SELECT')"
    ).fetchone() == (True,)


def test_a_number_without_any_audit_record_is_still_found(db: Conn, cor: str) -> None:
    next_number(db, cor)
    db.execute(
        "INSERT INTO docnum.ledger"
        " (document_type, counter_id, sequence_value, document_number, state, confirmed_at)"
        " SELECT 'COR', counter_id, 2, 'COR-00002', 'confirmed', now() FROM docnum.counter"
    )
    db.execute("UPDATE docnum.counter SET current_value = 2")
    findings = db.execute("SELECT check_name, detail FROM docnum.validate()").fetchall()
    assert findings == [("missing_audit", "COR-00002 (confirmed) has no audit row")]


def _dbname() -> str:
    return f"docnum_ws_{uuid.uuid4().hex[:8]}"


def test_numbers_issued_before_the_revision_keep_their_rows_and_downgrade_keeps_the_new_ones(
    server_info: ServerInfo,
) -> None:
    name = _dbname()
    with server_info.scratch_database(name) as dsn:
        schema.migrate(dsn, "0004")
        with server_info.connect(name, autocommit=True) as conn:
            define(conn, "COR", "{TYPE}-{SEQ:5}")
            next_number(conn, "COR")
        schema.migrate(dsn, "head")
        with server_info.connect(name, autocommit=True) as conn:
            next_number(conn, "COR")
            reserve(conn, "COR", actor="u1")
            trail = [(r["operation"], r["document_number"]) for r in history(conn, "COR-00001")]
            assert trail == [("NEXT", "COR-00001")]
            assert conn.execute("SELECT * FROM docnum.validate()").fetchall() == []
            expected = conn.execute(
                "SELECT audit_id, occurred_at, operation, document_number, actor, new_value, metadata"
                " FROM docnum.audit_trail WHERE document_number IS NOT NULL ORDER BY audit_id"
            ).fetchall()
        schema.downgrade(dsn, "0004")
        with server_info.connect(name, autocommit=True) as conn:
            carried = conn.execute(
                "SELECT audit_id, occurred_at, operation, document_number, actor, new_value, metadata"
                " FROM docnum.audit_log WHERE document_number IS NOT NULL ORDER BY audit_id"
            ).fetchall()
            assert carried == expected
            assert conn.execute("SELECT * FROM docnum.validate()").fetchall() == []
