"""The ledger's row rules and the counter of every number hold for every writer (revision 0006).

docnum's own functions write the ledger as docnum_owner (they are SECURITY DEFINER, owned by that NOLOGIN
role), and their rows are right by construction; every other writer is checked by the row trigger
ledger_verify_row, which fails a bad row as the CHECK ledger_row_check and the foreign key ledger_counter_fkey
did. Only superusers can write docnum's tables at all, and only a superuser can act as docnum_owner, so the
trigger's scope leaves out no one who could not do anything anyway. Counters are permanent: no number can lose
its counter.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.rows import dict_row

from support.admin_helpers import import_numbers, import_row, override, set_counter, void, void_and_replace
from support.helpers import (
    call,
    cancel,
    confirm,
    define,
    error_of,
    expect_error,
    expire_reservations,
    next_number,
    reserve,
)

Conn = psycopg.Connection[Any]

ISSUED = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
LATER = ISSUED + dt.timedelta(hours=1)
EARLIER = ISSUED - dt.timedelta(hours=1)


def counter_of(db: Conn, document_type: str) -> int:
    row = db.execute(
        "SELECT counter_id FROM docnum.counter WHERE document_type = %s", (document_type,)
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def counters(db: Conn) -> dict[str, int]:
    """Two types with a counter each (COR allows overrides) and a few numbers issued by the functions."""
    define(db, "COR", "{TYPE}-{SEQ:5}", allow_manual_override=True)
    define(db, "INV", "{TYPE}-{SEQ:5}")
    next_number(db, "COR")
    reserve(db, "COR")
    next_number(db, "INV")
    return {"COR": counter_of(db, "COR"), "INV": counter_of(db, "INV")}


def good_row(counters: dict[str, int], **changes: Any) -> dict[str, Any]:
    """A confirmed COR number the functions could have written, with `changes` applied."""
    row: dict[str, Any] = {
        "document_type": "COR",
        "counter_id": counters["COR"],
        "sequence_value": 900,
        "document_number": "COR-00900",
        "state": "confirmed",
        "issued_at": ISSUED,
        "confirmed_at": ISSUED,
    }
    row.update(changes)
    return row


def insert(conn: Conn, row: dict[str, Any]) -> None:
    statement = sql.SQL("INSERT INTO docnum.ledger ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, row)), sql.SQL(", ").join(map(sql.Placeholder, row))
    )
    conn.execute(statement, row)


@contextmanager
def rolled_back(conn: Conn, role: str | None = None) -> Iterator[Conn]:
    """A transaction on autocommit `conn` (acting as `role` when given) that is always rolled back."""
    conn.execute("BEGIN")
    try:
        if role is not None:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        yield conn
    finally:
        conn.execute("ROLLBACK")


def ledger(db: Conn) -> list[tuple[Any, ...]]:
    return db.execute("SELECT * FROM docnum.ledger ORDER BY number_id").fetchall()


# Each row breaks exactly one rule of docnum._ledger_row_is_valid (the rest of it is good_row's).
BAD_ROWS: dict[str, dict[str, Any]] = {
    "value not positive": {"sequence_value": 0},
    "empty number": {"document_number": ""},
    "number longer than 300": {"document_number": "C" * 301},
    "value without counter": {"state": "overridden", "counter_id": None},
    "counter without value": {"sequence_value": None},
    "expiry not after issue": {"expires_at": ISSUED},
    "confirmed without confirmed_at": {"confirmed_at": None},
    "confirmed without counter": {"counter_id": None, "sequence_value": None},
    "reserved without token": {"state": "reserved", "expires_at": LATER},
    "reserved without expiry": {"state": "reserved", "token": uuid.UUID(int=1)},
    "cancelled without cancelled_at": {"state": "cancelled"},
    "expired without expired_at": {"state": "expired"},
    "voided without voided_at": {"state": "voided"},
    "imported without counter": {"state": "imported", "counter_id": None, "sequence_value": None},
    "unknown state": {"state": "lost"},
}
# Each breaks the reference of a number to its counter, of its type.
BAD_COUNTERS: dict[str, dict[str, Any]] = {
    "missing counter": {"counter_id": 2_000_000_000},
    "counter of another type": {"document_type": "INV", "document_number": "INV-00900"},
}
# UPDATEs of numbers the functions issued that the state-transition trigger allows but the row rules do not.
BAD_UPDATES = {
    "confirmed loses confirmed_at": "UPDATE docnum.ledger SET confirmed_at = NULL WHERE state = 'confirmed'",
    "reservation loses its expiry": "UPDATE docnum.ledger SET expires_at = NULL WHERE state = 'reserved'",
    "voided without voided_at": "UPDATE docnum.ledger SET state = 'voided' WHERE state = 'confirmed'",
    "expiry before issue": "UPDATE docnum.ledger SET expires_at = issued_at - interval '1 s' "
    "WHERE state = 'reserved'",
}


def test_good_rows_are_accepted_from_a_superuser(db: Conn, counters: dict[str, int]) -> None:
    insert(db, good_row(counters))
    insert(
        db,
        good_row(counters, counter_id=None, sequence_value=None, state="overridden", document_number="X-1"),
    )
    assert db.execute("SELECT count(*) FROM docnum.ledger WHERE issued_at = %s", (ISSUED,)).fetchone() == (2,)


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_a_row_breaking_a_rule_fails_as_ledger_row_check(
    db: Conn, counters: dict[str, int], case: str
) -> None:
    row = good_row(counters, **BAD_ROWS[case])
    before = ledger(db)
    error = error_of(lambda: insert(db, row))
    assert (error.sqlstate, error.diag.constraint_name) == ("23514", "ledger_row_check"), str(error)
    assert error.diag.table_name == "ledger" and error.diag.schema_name == "docnum"
    assert str(error).startswith('new row for relation "ledger" violates check constraint "ledger_row_check"')
    assert ledger(db) == before


@pytest.mark.parametrize("case", sorted(BAD_UPDATES))
def test_an_update_breaking_a_rule_fails_as_ledger_row_check(
    db: Conn, counters: dict[str, int], case: str
) -> None:
    before = ledger(db)
    error = error_of(lambda: db.execute(BAD_UPDATES[case]))
    assert (error.sqlstate, error.diag.constraint_name) == ("23514", "ledger_row_check"), str(error)
    assert ledger(db) == before


@pytest.mark.parametrize("case", sorted(BAD_COUNTERS))
def test_a_row_without_its_counter_fails_as_ledger_counter_fkey(
    db: Conn, counters: dict[str, int], case: str
) -> None:
    row = good_row(counters, **BAD_COUNTERS[case])
    before = ledger(db)
    error = error_of(lambda: insert(db, row))
    assert (error.sqlstate, error.diag.constraint_name) == ("23503", "ledger_counter_fkey"), str(error)
    assert str(error).startswith(
        'insert or update on table "ledger" violates foreign key constraint "ledger_counter_fkey"'
    )
    assert error.diag.message_detail == (
        f"Key (counter_id, document_type)=({row['counter_id']}, {row['document_type']}) "
        'is not present in table "counter".'
    )
    assert ledger(db) == before


@pytest.mark.parametrize("link", ["replaces_number_id", "replaced_by_number_id"])
def test_a_replacement_link_to_no_number_fails_as_its_foreign_key(
    db: Conn, counters: dict[str, int], link: str
) -> None:
    """The links between a replacement and the number it replaces, on insert and on update, as the foreign
    keys checked them before revision 0009; a link to an existing number passes."""
    constraint = f"ledger_{link}_fkey"
    before = ledger(db)
    error = error_of(lambda: insert(db, good_row(counters, **{link: 2_000_000_000})))
    assert (error.sqlstate, error.diag.constraint_name) == ("23503", constraint), str(error)
    assert str(error).startswith(
        f'insert or update on table "ledger" violates foreign key constraint "{constraint}"'
    )
    assert error.diag.message_detail == f'Key ({link})=(2000000000) is not present in table "ledger".'
    assert ledger(db) == before
    existing = db.execute("SELECT min(number_id) FROM docnum.ledger").fetchone()
    assert existing is not None
    update = sql.SQL("UPDATE docnum.ledger SET {} = %s WHERE state = 'confirmed'").format(
        sql.Identifier(link)
    )
    if (
        link == "replaced_by_number_id"
    ):  # a replacement may not change what it replaces (NB009): test the other
        assert error_of(lambda: db.execute(update, (2_000_000_000,))).sqlstate == "23503"
        db.execute(update, (existing[0],))


def test_what_identifies_a_number_still_fails_first_with_nb009(db: Conn, counters: dict[str, int]) -> None:
    # The transition check fires before the row rules, as it fired before the constraints they replace.
    expect_error(
        "NB009", lambda: db.execute("UPDATE docnum.ledger SET document_number = '' WHERE state = 'confirmed'")
    )
    expect_error("NB009", lambda: db.execute("UPDATE docnum.ledger SET counter_id = 2000000000"))


def test_a_null_in_a_not_null_column_still_fails_as_not_null(db: Conn, counters: dict[str, int]) -> None:
    error = error_of(lambda: insert(db, good_row(counters, document_number=None, state="lost")))
    assert (error.sqlstate, error.diag.column_name) == ("23502", "document_number")


@pytest.mark.parametrize("case", sorted(BAD_ROWS) + sorted(BAD_COUNTERS))
def test_docnum_owner_alone_skips_the_rules(db: Conn, counters: dict[str, int], case: str) -> None:
    """The trigger's scope: rows written as docnum_owner (docnum's own functions) are not re-checked.

    docnum_owner is NOLOGIN, and only a superuser (who can disable any trigger anyway) can SET ROLE to it."""
    assert db.execute(
        "SELECT rolcanlogin, (SELECT count(*) FROM pg_auth_members m WHERE m.roleid = r.oid)"
        "  FROM pg_roles r WHERE rolname = 'docnum_owner'"
    ).fetchone() == (False, 0)
    row = good_row(counters, **{**BAD_ROWS, **BAD_COUNTERS}[case])
    with rolled_back(db, "docnum_owner"):
        insert(db, row)
        assert db.execute(
            "SELECT count(*) FROM docnum.ledger WHERE issued_at = %s", (ISSUED,)
        ).fetchone() == (1,)


# --- No role but docnum_owner writes docnum's tables --------------------------------------------------------


def test_no_role_but_docnum_owner_may_write_any_docnum_table(db: Conn, counters: dict[str, int]) -> None:
    relations = [
        name
        for (name,) in db.execute(
            "SELECT oid::regclass::text FROM pg_class"
            " WHERE relnamespace = 'docnum'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1"
        )
    ]
    assert {"docnum.ledger", "docnum.counter", "docnum.document_type", "docnum.audit_log"} <= set(relations)
    for role in ["docnum_app", "docnum_reader", "docnum_admin", "public"]:
        for relation in relations:
            for privilege in ["INSERT", "UPDATE", "DELETE", "TRUNCATE"]:
                allowed = db.execute("SELECT has_table_privilege(%s, %s, %s)", (role, relation, privilege))
                assert allowed.fetchone() == (False,), f"{role} has {privilege} on {relation}"
    # Nor was any write privilege granted to any other role (PUBLIC is grantee 0).
    grantees = db.execute(
        "SELECT DISTINCT coalesce(r.rolname, 'PUBLIC')"
        "  FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a"
        "  LEFT JOIN pg_roles r ON r.oid = a.grantee"
        " WHERE c.relnamespace = 'docnum'::regnamespace"
        "   AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')"
    ).fetchall()
    assert grantees in ([], [("docnum_owner",)])


def test_every_row_docnum_writes_keeps_the_rules(db: Conn, counters: dict[str, int]) -> None:
    """What the trigger leaves out: every kind of row docnum's own functions write keeps the rules."""
    token = reserve(db, "COR")["token"]
    confirm(db, token)
    cancel(db, reserve(db, "COR")["token"])
    reserve(db, "COR", ttl="1 second")
    call(db, "next_numbers", document_type="INV", count=3)
    call(db, "reserve_numbers", document_type="INV", count=2)
    db.execute("UPDATE docnum.ledger SET expires_at = issued_at + interval '1 ms' WHERE state = 'reserved'")
    expire_reservations(db)
    void(db, "COR-00001")
    void_and_replace(db, "INV-00001")
    override(db, "COR", "COR-00100")
    override(db, "COR", "HAND-WRITTEN-7", skip_validation=True)
    set_counter(db, "COR", 200)
    import_numbers(db, [import_row("COR", "COR-00150")])
    void(db, "HAND-WRITTEN-7")
    states = {state for (state,) in db.execute("SELECT DISTINCT state FROM docnum.ledger")}
    assert states == {"confirmed", "cancelled", "expired", "voided", "overridden", "imported"}
    broken = db.execute(
        "SELECT l.document_number FROM docnum.ledger l"
        " WHERE docnum._ledger_row_is_valid(l) IS NOT TRUE"
        "    OR (l.counter_id IS NOT NULL AND NOT EXISTS (SELECT FROM docnum.counter c"
        "        WHERE c.counter_id = l.counter_id AND c.document_type = l.document_type))"
    ).fetchall()
    assert broken == []
    # The same rows, re-written by a superuser, pass the trigger (each is checked again).
    assert db.execute("UPDATE docnum.ledger SET state = state").rowcount == len(ledger(db))


# --- Counters are permanent ---------------------------------------------------------------------------------

# A plain TRUNCATE is refused before any trigger runs (docnum.counter_skip references the counters); with
# CASCADE, or through the types, it reaches counter_no_truncate.
COUNTER_REMOVALS = [
    ("DELETE FROM docnum.counter", "NB009"),
    ("DELETE FROM docnum.counter WHERE document_type = 'INV'", "NB009"),
    ("DELETE FROM docnum.counter WHERE false", "NB009"),
    ("TRUNCATE docnum.counter", "0A000"),
    ("TRUNCATE docnum.counter CASCADE", "NB009"),
    ("TRUNCATE docnum.document_type CASCADE", "NB009"),
]


@pytest.mark.parametrize("role", [None, "docnum_owner"])
@pytest.mark.parametrize(("statement", "sqlstate"), COUNTER_REMOVALS)
def test_counters_cannot_be_removed_by_anyone(
    db: Conn, counters: dict[str, int], statement: str, sqlstate: str, role: str | None
) -> None:
    before = db.execute("SELECT * FROM docnum.counter ORDER BY counter_id").fetchall()
    with rolled_back(db, role):
        error = expect_error(sqlstate, lambda: db.execute(statement))
    if sqlstate == "NB009":
        assert error.diag.message_detail == f"{statement.split()[0]} on docnum.counter was refused."
    assert db.execute("SELECT * FROM docnum.counter ORDER BY counter_id").fetchall() == before


# --- The trigger's verdict is the rules' verdict ------------------------------------------------------------

TIMES = st.sampled_from([None, EARLIER, ISSUED, LATER])
ROWS = st.fixed_dictionaries(
    {
        "state": st.sampled_from(
            ["confirmed", "reserved", "cancelled", "expired", "voided", "overridden", "imported", "lost"]
        ),
        "counter": st.booleans(),
        "sequence_value": st.sampled_from([None, -1, 0, 901, 902]),
        "document_number": st.sampled_from(["", "C", "COR-00901", "C" * 300, "C" * 301]),
        "token": st.sampled_from([None, uuid.UUID(int=2)]),
        "expires_at": TIMES,
        "confirmed_at": TIMES,
        "cancelled_at": TIMES,
        "expired_at": TIMES,
        "voided_at": TIMES,
    }
)


@settings(
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(generated=ROWS)
def test_the_trigger_judges_a_row_as_the_rules_do(
    db: Conn, counters: dict[str, int], generated: dict[str, Any]
) -> None:
    row = {key: value for key, value in generated.items() if key != "counter"}
    row.update(
        document_type="COR", counter_id=counters["COR"] if generated["counter"] else None, issued_at=ISSUED
    )
    with rolled_back(db, "docnum_owner"):
        insert(db, row)
        with db.cursor(row_factory=dict_row) as cur:
            verdict = cur.execute(
                "SELECT docnum._ledger_row_is_valid(l) AS valid FROM docnum.ledger l WHERE l.issued_at = %s",
                (ISSUED,),
            ).fetchone()
    assert verdict is not None and verdict["valid"] is not None
    with rolled_back(db):
        if verdict["valid"]:
            insert(db, row)
        else:
            error = error_of(lambda: insert(db, row))
            assert (error.sqlstate, error.diag.constraint_name) == ("23514", "ledger_row_check"), str(error)
