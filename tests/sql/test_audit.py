"""The audit log records every operation with who did it and from where, and neither the audit log nor the
ledger can be rewritten afterwards, not even by a superuser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from support.helpers import (
    audit_rows,
    call,
    cancel,
    confirm,
    define,
    error_of,
    expire_reservations,
    next_number,
    reserve,
)

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]

APP = "docnum-audit-test"


@pytest.fixture
def app(connect: Connect) -> Conn:
    """A connection that names itself, as an application would."""
    return connect(autocommit=True, application_name=APP)


def test_every_operation_writes_an_audit_row(db: Conn, app: Conn) -> None:
    login = db.info.user
    define(app, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT", actor="admin")
    call(app, "alter_type", document_type="RFA", reservation_ttl="1 hour", actor="admin")
    next_number(app, "RFA", scope="PRJ-7", actor="u-next", document_ref="doc-1")
    kept = reserve(app, "RFA", scope="PRJ-7", actor="u-res")
    confirm(app, kept["token"], actor="u-conf", document_ref="doc-2")
    dropped = reserve(app, "RFA", scope="PRJ-7", actor="u-res")
    cancel(app, dropped["token"], actor="u-can", reason="withdrawn")
    reserve(app, "RFA", scope="PRJ-7", actor="u-res", ttl="1 millisecond")
    app.execute("SELECT pg_sleep(0.01)")
    assert expire_reservations(app) == 1

    rows = [
        (r["operation"], r["document_type"], r["document_number"], r["scope_value"], r["actor"])
        for r in audit_rows(db)
    ]
    assert rows == [
        ("DEFINE_TYPE", "RFA", None, None, "admin"),
        ("ALTER_TYPE", "RFA", None, None, "admin"),
        ("NEXT", "RFA", "PRJ-7/RFA/0001", "PRJ-7", "u-next"),
        ("RESERVE", "RFA", "PRJ-7/RFA/0002", "PRJ-7", "u-res"),
        ("CONFIRM", "RFA", "PRJ-7/RFA/0002", "PRJ-7", "u-conf"),
        ("RESERVE", "RFA", "PRJ-7/RFA/0003", "PRJ-7", "u-res"),
        ("CANCEL", "RFA", "PRJ-7/RFA/0003", "PRJ-7", "u-can"),
        ("RESERVE", "RFA", "PRJ-7/RFA/0004", "PRJ-7", "u-res"),
        ("EXPIRE", "RFA", "PRJ-7/RFA/0004", "PRJ-7", None),
    ]
    for row in audit_rows(db):
        assert row["session_user_name"] == login
        assert row["application_name"] == APP
        assert row["occurred_at"] is not None


def test_audit_row_of_an_unscoped_allocation(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    next_number(db, "COR", document_ref="doc-9")
    [row] = audit_rows(db, "operation = 'NEXT'")
    assert row["document_number"] == "COR-00001"
    assert row["scope_value"] in (None, "")
    assert row["new_value"]["state"] == "confirmed"
    assert row["new_value"]["sequence_value"] == 1


def test_audit_records_the_login_user_even_under_set_role(db: Conn, app: Conn) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    app.execute("SET ROLE docnum_app")
    next_number(app, "COR", actor="u1")
    [row] = audit_rows(db, "operation = 'NEXT'")
    assert row["session_user_name"] == db.info.user
    assert row["application_name"] == APP


def test_application_name_changed_in_the_session_is_recorded(db: Conn, app: Conn) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    app.execute("SET application_name = 'billing-batch'")
    next_number(app, "COR")
    [row] = audit_rows(db, "operation = 'NEXT'")
    assert row["application_name"] == "billing-batch"


def test_audit_rows_of_a_rolled_back_transaction_disappear_with_it(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    with db.transaction(force_rollback=True):
        next_number(db, "COR")
    assert audit_rows(db, "operation = 'NEXT'") == []


# --- Append-only audit log, permanent ledger ----------------------------------------------------------------


@pytest.fixture
def history(db: Conn) -> Conn:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    confirm(db, reserve(db, "COR")["token"])
    cancel(db, reserve(db, "COR")["token"])
    next_number(db, "COR")
    return db


def snapshot(db: Conn, table: str) -> list[tuple[Any, ...]]:
    query = {
        "audit_log": "SELECT * FROM docnum.audit_log ORDER BY audit_id",
        "ledger": "SELECT * FROM docnum.ledger ORDER BY number_id",
        "counter": "SELECT * FROM docnum.counter ORDER BY counter_id",
    }[table]
    return db.execute(query).fetchall()


def assert_refused(db: Conn, statement: str, table: str, sqlstate: str | None = None) -> None:
    """`statement` must fail (for a real reason, not a typo) and leave `table` exactly as it was."""
    before = snapshot(db, table)
    error = error_of(lambda: db.execute(statement))
    assert error.sqlstate is not None
    assert not error.sqlstate.startswith("42"), f"statement did not run: {error}"
    if sqlstate is not None:
        assert error.sqlstate == sqlstate, str(error)
    assert snapshot(db, table) == before


AUDIT_LOG_CHANGES = [
    "UPDATE docnum.audit_log SET actor = 'someone else'",
    "UPDATE docnum.audit_log SET operation = 'NEXT' WHERE operation = 'CANCEL'",
    "DELETE FROM docnum.audit_log",
    "DELETE FROM docnum.audit_log WHERE operation = 'CANCEL'",
    "TRUNCATE docnum.audit_log",
]
LEDGER_REMOVALS = [
    "DELETE FROM docnum.ledger",
    "DELETE FROM docnum.ledger WHERE state = 'cancelled'",
    "TRUNCATE docnum.ledger",
    "TRUNCATE docnum.ledger CASCADE",
]
LEDGER_ILLEGAL_CHANGES = [
    "UPDATE docnum.ledger SET state = 'reserved' WHERE state = 'confirmed'",
    "UPDATE docnum.ledger SET state = 'reserved' WHERE state = 'cancelled'",
    "UPDATE docnum.ledger SET state = 'confirmed' WHERE state = 'cancelled'",
    "UPDATE docnum.ledger SET document_number = 'COR-99999' WHERE sequence_value = 1",
    "UPDATE docnum.ledger SET sequence_value = 42 WHERE sequence_value = 3",
]

# What a counter is (type, scope value, period, id) never changes once numbers were rendered from it, and a
# new counter must be one the engine could have made.
COUNTER_ILLEGAL_CHANGES = [
    ("UPDATE docnum.counter SET period = '2031'", "NB009"),
    ("UPDATE docnum.counter SET scope_value = 'PRJ-7'", "NB009"),
    ("UPDATE docnum.counter SET current_value = -1", "23514"),
    (
        "INSERT INTO docnum.counter (document_type, scope_value, period) VALUES ('COR', 'X', '2025-13')",
        "23514",
    ),
    (
        "INSERT INTO docnum.counter (counter_id, document_type, scope_value) OVERRIDING SYSTEM VALUE"
        " VALUES (2147483648, 'COR', 'X')",
        "23514",
    ),
]


def test_audit_log_cannot_be_changed_even_by_a_superuser(history: Conn, subtests: pytest.Subtests) -> None:
    assert history.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
    for statement in AUDIT_LOG_CHANGES:
        with subtests.test(msg=statement):
            assert_refused(history, statement, "audit_log")


def test_ledger_rows_cannot_be_removed_even_by_a_superuser(history: Conn, subtests: pytest.Subtests) -> None:
    for statement in LEDGER_REMOVALS:
        with subtests.test(msg=statement):
            assert_refused(history, statement, "ledger")


def test_ledger_rejects_illegal_changes_even_by_a_superuser(history: Conn, subtests: pytest.Subtests) -> None:
    for statement in LEDGER_ILLEGAL_CHANGES:
        with subtests.test(msg=statement):
            assert_refused(history, statement, "ledger")


def test_counters_reject_illegal_changes_even_by_a_superuser(
    history: Conn, subtests: pytest.Subtests
) -> None:
    for statement, sqlstate in COUNTER_ILLEGAL_CHANGES:
        with subtests.test(msg=statement):
            assert_refused(history, statement, "counter", sqlstate)


def test_a_counter_changes_only_its_value(history: Conn) -> None:
    # Setting an identity column to the value it has is no change; the allocations' own UPDATE is allowed.
    history.execute("UPDATE docnum.counter SET period = period, scope_value = scope_value")
    history.execute("UPDATE docnum.counter SET current_value = current_value + 1, last_used_at = now()")
    assert next_number(history, "COR") == "COR-00005"
