"""Reports: sequence_status, gaps, check_duplicates (with registered application tables), validate,
number_history and audit_export.

The reports must find what is wrong, so some tests break the data on purpose as the superuser (who bypasses
the grants, while the ledger and audit triggers still hold): a counter moved by hand, a ledger row written
without its audit row, a reservation left past its expiry.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from support.admin_helpers import (
    call_rows,
    counter_value,
    findings,
    force_expiry,
    gap_values,
    gaps,
    history,
    import_numbers,
    import_row,
    last_audit,
    number_in_state,
    override,
    scalar,
    set_counter,
    validate,
    void,
    void_and_replace,
)
from support.helpers import (
    call,
    cancel,
    confirm,
    define,
    expect_error,
    expire_reservations,
    footprint,
    next_number,
    reserve,
)

Conn = psycopg.Connection[Any]


def cor_number(value: int) -> str:
    return f"COR-{value:05d}"


@pytest.fixture
def cor(db: Conn) -> str:
    define(db, "COR", "{TYPE}-{SEQ:5}", allow_manual_override=True, max_value=500)
    return "COR"


def sequence_status(conn: Conn) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM docnum.sequence_status ORDER BY document_type, scope_value, period")
        return cur.fetchall()


# --- sequence_status ------------------------------------------------------------------------------


def test_sequence_status_counts_numbers_by_state(db: Conn, cor: str) -> None:
    plan = [
        "confirmed",
        "confirmed",
        "reserved",
        "cancelled",
        "confirmed",
        "expired",
        "voided",
        "overridden",
        "imported",
        "reserved",
    ]
    for state in plan:
        number_in_state(db, cor, state, cor_number)

    (status,) = sequence_status(db)

    assert list(status) == [
        "document_type",
        "scope_value",
        "period",
        "current_value",
        "max_value",
        "utilisation_pct",
        "reserved",
        "confirmed",
        "cancelled",
        "expired",
        "voided",
        "overridden",
        "imported",
        "last_used_at",
        "counter_id",
    ]
    counts = {
        state: status[state]
        for state in ("reserved", "confirmed", "cancelled", "expired", "voided", "overridden", "imported")
    }
    assert counts == {
        "reserved": 2,
        "confirmed": 3,
        "cancelled": 1,
        "expired": 1,
        "voided": 1,
        "overridden": 1,
        "imported": 1,
    }
    assert (status["document_type"], status["scope_value"], status["period"]) == ("COR", "", "")
    assert (status["current_value"], status["max_value"]) == (10, 500)
    assert status["utilisation_pct"] == Decimal("2.00")
    assert status["last_used_at"] is not None


def test_sequence_status_has_one_row_per_counter(db: Conn, cor: str) -> None:
    define(db, "RFA", "{SCOPE}/{TYPE}/{YYYY}/{SEQ:2}", scope="PROJECT", reset="YEARLY")
    next_number(db, "RFA", scope="P1", document_date="2023-04-01")
    next_number(db, "RFA", scope="P1", document_date="2024-04-01")
    next_number(db, "RFA", scope="P2", document_date="2024-04-01")
    set_counter(db, cor, 125)  # a counter with values but no numbers

    rows = [
        (
            r["document_type"],
            r["scope_value"],
            r["period"],
            r["current_value"],
            r["utilisation_pct"],
            r["confirmed"],
        )
        for r in sequence_status(db)
    ]

    assert rows == [
        ("COR", "", "", 125, Decimal("25.00"), 0),
        ("RFA", "P1", "2023", 1, Decimal("1.01"), 1),
        ("RFA", "P1", "2024", 1, Decimal("1.01"), 1),
        ("RFA", "P2", "2024", 1, Decimal("1.01"), 1),
    ]


# --- gaps -----------------------------------------------------------------------------------------


def test_no_gaps_whatever_became_of_the_numbers(db: Conn, cor: str) -> None:
    for state in ("confirmed", "cancelled", "expired", "voided", "reserved", "overridden", "imported"):
        number_in_state(db, cor, state, cor_number)
    assert gaps(db) == []
    assert validate(db) == []


def test_gaps_lists_values_nothing_explains(db: Conn, cor: str) -> None:
    next_number(db, cor)
    next_number(db, cor)
    db.execute("UPDATE docnum.counter SET current_value = current_value + 3 WHERE document_type = 'COR'")

    (row,) = gaps(db)

    assert list(row) == [
        "document_type",
        "scope_value",
        "period",
        "first_value",
        "last_value",
        "value_count",
        "explained",
        "source",
        "reason",
        "actor",
        "recorded_at",
    ]
    assert (row["document_type"], row["scope_value"], row["period"]) == ("COR", "", "")
    assert (row["first_value"], row["last_value"], row["value_count"]) == (3, 5, 3)
    assert (row["explained"], row["source"], row["reason"], row["actor"], row["recorded_at"]) == (
        False,
        None,
        None,
        None,
        None,
    )
    assert next_number(db, cor) == cor_number(6)
    assert list(gap_values(db)) == [3, 4, 5]


def test_gaps_explains_each_kind_of_skip(db: Conn, cor: str) -> None:
    next_number(db, cor)
    set_counter(db, cor, 3, actor="ann", reason="pages 2-3 torn")
    override(db, cor, cor_number(6), actor="bob", reason="hand-numbered letter")
    import_numbers(db, [import_row(cor, cor_number(9))], actor="carl")

    rows = [
        (r["first_value"], r["last_value"], r["explained"], r["source"], r["reason"], r["actor"])
        for r in gaps(db)
    ]

    assert rows == [
        (2, 3, True, "SET_COUNTER", "pages 2-3 torn", "ann"),
        (4, 5, True, "MANUAL_OVERRIDE", "hand-numbered letter", "bob"),
        (7, 8, True, "IMPORT", "legacy import", "carl"),
    ]
    assert all(r["recorded_at"] is not None for r in gaps(db))


def test_gaps_gives_the_latest_explanation_of_a_value(db: Conn, cor: str) -> None:
    set_counter(db, cor, 4, reason="first try")
    set_counter(db, cor, 0, reason="undo")
    set_counter(db, cor, 2, reason="second try")
    assert [(r["first_value"], r["last_value"], r["reason"]) for r in gaps(db)] == [(1, 2, "second try")]


def test_gaps_splits_a_hole_where_its_explanations_change(db: Conn, cor: str) -> None:
    next_number(db, cor)
    set_counter(db, cor, 10, reason="old jump")  # explains 2..10
    set_counter(db, cor, 4, reason="back")
    set_counter(db, cor, 6, reason="new jump")  # explains 5..6, later than the first jump
    set_counter(db, cor, 10, reason="again")  # explains 7..10, later still
    db.execute("UPDATE docnum.counter SET current_value = 14 WHERE document_type = 'COR'")  # 11..14: nothing

    rows = [
        (r["first_value"], r["last_value"], r["value_count"], r["explained"], r["reason"]) for r in gaps(db)
    ]

    assert rows == [
        (2, 4, 3, True, "old jump"),
        (5, 6, 2, True, "new jump"),
        (7, 10, 4, True, "again"),
        (11, 14, 4, False, None),
    ]


def test_gaps_merges_the_pieces_of_one_explanation(db: Conn, cor: str) -> None:
    set_counter(db, cor, 3, reason="small")  # 1..3, recorded first
    set_counter(db, cor, 0, reason="undo")
    set_counter(db, cor, 9, reason="big")  # 1..9 and later: explains all of it, in one range
    next_number(db, cor)
    override(db, cor, cor_number(5), reason="paper")  # a ledger row splits the hole in two

    rows = [(r["first_value"], r["last_value"], r["reason"]) for r in gaps(db)]

    assert rows == [(1, 4, "big"), (6, 9, "big")]


def test_gaps_and_validate_cost_nothing_for_a_huge_jump(db: Conn) -> None:
    define(db, "BIG", "{TYPE}-{SEQ:13}", max_value=10**13)
    next_number(db, "BIG")
    set_counter(db, "BIG", 10**12, reason="migrated from a system that counted in a different way")
    assert next_number(db, "BIG") == f"BIG-{10**12 + 1:013d}"
    db.execute("UPDATE docnum.counter SET current_value = %s WHERE document_type = 'BIG'", (3 * 10**12,))

    rows = [(r["first_value"], r["last_value"], r["value_count"], r["explained"]) for r in gaps(db)]

    assert rows == [(2, 10**12, 10**12 - 1, True), (10**12 + 2, 3 * 10**12, 2 * 10**12 - 1, False)]
    (finding,) = validate(db)
    assert (finding["check_name"], finding["severity"]) == ("unexplained_gap", "warning")
    assert f"{2 * 10**12 - 1} value(s)" in finding["detail"]
    assert f"{10**12 + 2}..{3 * 10**12}" in finding["detail"]


def test_gaps_filters_by_type_scope_and_period(db: Conn, cor: str) -> None:
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:3}", scope="PROJECT")
    define(db, "LTR", "{TYPE}-{YYYY}-{SEQ:3}", scope="YEARLY")
    set_counter(db, cor, 1)
    set_counter(db, "RFA", 2, scope="P1")
    set_counter(db, "RFA", 1, scope="P2")
    set_counter(db, "LTR", 1, period="2022")
    set_counter(db, "LTR", 2, period="2023")

    def keys(**arguments: Any) -> list[tuple[str, str, str, int, int]]:
        return [
            (r["document_type"], r["scope_value"], r["period"], r["first_value"], r["last_value"])
            for r in gaps(db, **arguments)
        ]

    assert keys() == [
        ("COR", "", "", 1, 1),
        ("LTR", "", "2022", 1, 1),
        ("LTR", "", "2023", 1, 2),
        ("RFA", "P1", "", 1, 2),
        ("RFA", "P2", "", 1, 1),
    ]
    assert keys(document_type="RFA") == [("RFA", "P1", "", 1, 2), ("RFA", "P2", "", 1, 1)]
    assert keys(document_type="RFA", scope="P2") == [("RFA", "P2", "", 1, 1)]
    assert keys(document_type="LTR", period="2023") == [("LTR", "", "2023", 1, 2)]
    assert keys(period="2022") == [("LTR", "", "2022", 1, 1)]


# --- register_document_table and check_duplicates -------------------------------------------------


@pytest.fixture
def invoices(db: Conn) -> str:
    """An application table storing document numbers (owned by the superuser, like an app's own table)."""
    db.execute("CREATE TABLE public.invoices (id serial PRIMARY KEY, doc_no text)")
    return "public.invoices"


def register_directly(conn: Conn, table: str, column: str) -> None:
    """Register a table as the superuser, so that the check_duplicates tests do not depend on
    register_document_table (tested on its own below)."""
    schema, name = table.split(".")
    conn.execute(
        "INSERT INTO docnum.document_table (schema_name, table_name, number_column) VALUES (%s, %s, %s)",
        (schema, name, column),
    )


def test_register_document_table_needs_no_grant_to_docnum_owner(db: Conn, invoices: str) -> None:
    # check_duplicates() reads the table with its caller's rights; docnum_owner never reads it.
    call(db, "register_document_table", table_name=invoices, number_column="doc_no")
    assert scalar(db, "SELECT has_table_privilege('docnum_owner', 'public.invoices', 'SELECT')") is False
    assert call_rows(db, "check_duplicates") == []


def test_register_document_table_needs_an_existing_column(db: Conn, invoices: str) -> None:
    before = footprint(db)
    error = expect_error(
        "NB006", lambda: call(db, "register_document_table", table_name=invoices, number_column="number")
    )
    assert "no column" in (error.diag.message_detail or "")
    assert error.diag.message_hint
    assert footprint(db) == before
    assert scalar(db, "SELECT count(*) FROM docnum.document_table") == 0


def test_register_document_table_records_and_audits_the_table(db: Conn, invoices: str) -> None:
    call(db, "register_document_table", table_name=invoices, number_column="doc_no", actor="dba")

    registered = db.execute(
        "SELECT schema_name::text, table_name::text, number_column::text FROM docnum.document_table"
    )
    assert registered.fetchall() == [("public", "invoices", "doc_no")]
    audit = last_audit(db, "REGISTER_TABLE")
    assert audit["actor"] == "dba"
    assert audit["new_value"]["number_column"] == "doc_no"


def test_check_duplicates_is_empty_without_duplicates(db: Conn, cor: str, invoices: str) -> None:
    numbers = [next_number(db, cor) for _ in range(3)]
    assert call_rows(db, "check_duplicates") == []
    register_directly(db, invoices, "doc_no")
    db.execute(
        "INSERT INTO public.invoices (doc_no) SELECT unnest(%s::text[]) UNION ALL SELECT NULL", (numbers,)
    )
    assert call_rows(db, "check_duplicates") == []  # once in the ledger and once in the table is normal


def test_check_duplicates_reports_a_number_stored_twice_in_a_table(db: Conn, cor: str, invoices: str) -> None:
    numbers = [next_number(db, cor) for _ in range(2)]
    register_directly(db, invoices, "doc_no")
    db.execute(
        "INSERT INTO public.invoices (doc_no) VALUES (%s), (%s), (%s), (NULL), (NULL)",
        (numbers[0], numbers[1], numbers[0]),
    )

    (duplicate,) = call_rows(db, "check_duplicates")

    assert duplicate["document_number"] == numbers[0]
    assert duplicate["occurrences"] == 3
    assert duplicate["found_in"][0] == "docnum.ledger"
    assert [source.split(".")[-1] for source in duplicate["found_in"][1:]] == ["invoices", "invoices"]
    assert ("duplicate_number", "error") in findings(db)


def test_check_duplicates_reports_a_number_in_two_tables(db: Conn, cor: str, invoices: str) -> None:
    number = next_number(db, cor)
    db.execute("CREATE TABLE public.credit_notes (ref text)")
    register_directly(db, invoices, "doc_no")
    register_directly(db, "public.credit_notes", "ref")
    db.execute("INSERT INTO public.invoices (doc_no) VALUES (%s), ('PAPER-1')", (number,))
    db.execute("INSERT INTO public.credit_notes (ref) VALUES (%s), ('PAPER-1')", (number,))

    found = {
        r["document_number"]: (r["occurrences"], sorted(s.split(".")[-1] for s in r["found_in"]))
        for r in call_rows(db, "check_duplicates")
    }

    assert found == {
        number: (3, ["credit_notes", "invoices", "ledger"]),
        "PAPER-1": (2, ["credit_notes", "invoices"]),
    }


@pytest.mark.parametrize(
    "change",
    [
        "DROP TABLE public.invoices",
        "ALTER TABLE public.invoices DROP COLUMN doc_no",
        "ALTER TABLE public.invoices RENAME COLUMN doc_no TO number",
        "ALTER TABLE public.invoices ALTER COLUMN doc_no TYPE integer USING NULL",
        "ALTER TABLE public.invoices ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE public.invoices RENAME TO invoices_old;"
        " CREATE VIEW public.invoices AS SELECT 'x'::text AS doc_no",
        "DROP SCHEMA app CASCADE",
    ],
    ids=["dropped", "column_dropped", "column_renamed", "column_retyped", "row_security", "view", "schema"],
)
def test_a_registered_table_that_changed_is_a_finding_not_an_error(
    db: Conn, cor: str, invoices: str, change: str
) -> None:
    number = next_number(db, cor)
    db.execute("CREATE SCHEMA app")
    db.execute("CREATE TABLE app.credit_notes (ref text)")
    db.execute("INSERT INTO app.credit_notes VALUES (%s), (%s)", (number, number))
    call(db, "register_document_table", table_name=invoices, number_column="doc_no")
    if "SCHEMA" in change:
        call(db, "register_document_table", table_name="app.credit_notes", number_column="ref")
    else:
        db.execute("INSERT INTO public.invoices (doc_no) VALUES (%s), (%s)", (number, number))
    assert [r["check_name"] for r in validate(db)] == ["duplicate_number"]

    db.execute(change)

    rows = call_rows(db, "check_duplicates")
    problems = [(r["document_number"], r["occurrences"], r["found_in"]) for r in rows if r["problem"]]
    broken = "app.credit_notes" if "SCHEMA" in change else invoices
    assert problems == [(None, None, [broken])]
    (finding,) = [f for f in validate(db) if f["check_name"] != "duplicate_number"]
    assert (finding["check_name"], finding["severity"]) == ("document_table_unchecked", "error")
    assert finding["detail"].startswith(f"{broken} could not be checked")


def test_a_table_dropped_and_created_again_is_checked_again(db: Conn, cor: str, invoices: str) -> None:
    number = next_number(db, cor)
    call(db, "register_document_table", table_name=invoices, number_column="doc_no")
    db.execute("DROP TABLE public.invoices")
    assert [r["check_name"] for r in validate(db)] == ["document_table_unchecked"]

    db.execute("CREATE TABLE public.invoices (doc_no text)")
    db.execute("INSERT INTO public.invoices (doc_no) VALUES (%s), (%s)", (number, number))

    assert [r["check_name"] for r in validate(db)] == ["duplicate_number"]


def test_register_document_table_accepts_a_partitioned_table(db: Conn, cor: str) -> None:
    number = next_number(db, cor)
    db.execute("CREATE TABLE public.invoices (year int, doc_no varchar) PARTITION BY LIST (year)")
    db.execute("CREATE TABLE public.invoices_2025 PARTITION OF public.invoices FOR VALUES IN (2025)")
    db.execute("CREATE TABLE public.invoices_2026 PARTITION OF public.invoices FOR VALUES IN (2026)")
    db.execute("INSERT INTO public.invoices VALUES (2025, %s), (2026, %s)", (number, number))
    call(db, "register_document_table", table_name="public.invoices", number_column="doc_no")

    (duplicate,) = call_rows(db, "check_duplicates")

    assert (duplicate["occurrences"], duplicate["found_in"]) == (
        3,
        ["docnum.ledger", "public.invoices", "public.invoices"],
    )


# --- validate -------------------------------------------------------------------------------------


def test_validate_is_empty_on_a_healthy_database(db: Conn, cor: str) -> None:
    define(
        db,
        "RFA",
        "{SCOPE}/{TYPE}/{YYYY}/{SEQ:3}",
        scope="PROJECT",
        reset="YEARLY",
        allow_manual_override=True,
    )
    kept = reserve(db, cor)
    confirm(db, kept["token"], document_ref="doc 1")
    cancel(db, reserve(db, cor)["token"])
    lapsed = reserve(db, cor)
    force_expiry(db, lapsed["token"])
    expire_reservations(db)
    void_and_replace(db, next_number(db, cor))
    set_counter(db, cor, 12)
    override(db, cor, cor_number(15))
    override(db, cor, "COR paper 3", skip_validation=True)
    void(db, override(db, cor, cor_number(11)))
    import_numbers(db, [import_row(cor, cor_number(20)), import_row("RFA", "P1/RFA/2019/004")])
    next_number(db, "RFA", scope="P1", document_date="2019-09-09")
    reserve(db, "RFA", scope="P2")
    call(db, "alter_type", document_type=cor, format="{TYPE}/{SEQ:5}", reason="house style")
    next_number(db, cor)

    assert validate(db) == []


def test_validate_reports_a_counter_below_the_ledger(db: Conn, cor: str) -> None:
    for _ in range(4):
        next_number(db, cor)
    set_counter(db, cor, 1)

    (finding,) = validate(db)

    assert (finding["check_name"], finding["severity"]) == ("counter_below_ledger", "error")
    assert "COR" in finding["detail"] and "1" in finding["detail"] and "4" in finding["detail"]
    for _ in range(3):
        next_number(db, cor)
    assert validate(db) == []
    assert counter_value(db, cor) == 7


def test_validate_reports_an_unswept_reservation(db: Conn, cor: str) -> None:
    reservation = reserve(db, cor)
    force_expiry(db, reservation["token"])

    (finding,) = validate(db)

    assert (finding["check_name"], finding["severity"]) == ("unswept_reservation", "warning")
    assert reservation["document_number"] in finding["detail"]
    assert expire_reservations(db) == 1
    assert validate(db) == []


def test_validate_reports_an_unexplained_gap(db: Conn, cor: str) -> None:
    next_number(db, cor)
    db.execute("UPDATE docnum.counter SET current_value = current_value + 3 WHERE document_type = 'COR'")

    (finding,) = validate(db)

    assert (finding["check_name"], finding["severity"]) == ("unexplained_gap", "warning")
    assert "3 value(s)" in finding["detail"] and "2..4" in finding["detail"]
    for value in (2, 3, 4):
        override(db, cor, cor_number(value), reason="found the paper copies")
    assert validate(db) == []


def test_validate_reports_a_duplicate_in_an_application_table(db: Conn, cor: str, invoices: str) -> None:
    number = next_number(db, cor)
    register_directly(db, invoices, "doc_no")
    db.execute("INSERT INTO public.invoices (doc_no) VALUES (%s), (%s)", (number, number))

    (finding,) = validate(db)

    assert (finding["check_name"], finding["severity"]) == ("duplicate_number", "error")
    assert number in finding["detail"]


def test_validate_reports_a_number_written_behind_docnum_s_back(db: Conn, cor: str) -> None:
    next_number(db, cor)
    set_counter(db, cor, 10)
    counter_id = scalar(db, "SELECT counter_id FROM docnum.counter WHERE document_type = 'COR'")
    # A ledger row whose text is not what value 7 renders to, and a well-formed one; neither is audited.
    db.execute(
        "INSERT INTO docnum.ledger (document_type, counter_id, sequence_value, document_number, state,"
        "                           confirmed_at)"
        " VALUES ('COR', %(c)s, 7, 'COR-7 typed by hand', 'confirmed', now()),"
        "        ('COR', %(c)s, 8, 'COR-00008', 'confirmed', now())",
        {"c": counter_id},
    )

    found = {(r["check_name"], r["severity"], r["detail"].split(" ")[0]) for r in validate(db)}

    assert found == {
        ("number_format_mismatch", "error", "COR-7"),
        ("missing_audit", "error", "COR-7"),
        ("missing_audit", "error", "COR-00008"),
    }


# --- number_history -------------------------------------------------------------------------------


def test_number_history_is_oldest_first(db: Conn, cor: str) -> None:
    reservation = reserve(db, cor, actor="u1")
    number = confirm(db, reservation["token"], actor="u2")
    void(db, number, actor="u3")
    next_number(db, cor)  # another number's rows are not part of it

    rows = call_rows(db, "number_history", document_number=number)

    assert [(r["operation"], r["actor"]) for r in rows] == [
        ("RESERVE", "u1"),
        ("CONFIRM", "u2"),
        ("VOID", "u3"),
    ]
    assert [r["audit_id"] for r in rows] == sorted(r["audit_id"] for r in rows)
    assert history(db, "COR-99999") == []


# --- audit_export ---------------------------------------------------------------------------------

EXPORT_COLUMNS = [
    "audit_id",
    "occurred_at",
    "operation",
    "document_type",
    "document_number",
    "scope_value",
    "actor",
    "session_user_name",
    "client_addr",
    "application_name",
    "old_value",
    "new_value",
    "metadata",
]


def export(conn: Conn, from_time: Any, to_time: Any, **arguments: Any) -> list[dict[str, Any]]:
    return call_rows(conn, "audit_export", from_time=from_time, to_time=to_time, **arguments)


def clock(conn: Conn) -> Any:
    return scalar(conn, "SELECT clock_timestamp()")


def test_audit_export_columns_come_in_a_stable_order(db: Conn, cor: str) -> None:
    next_number(db, cor)
    with db.cursor() as cur:
        cur.execute("SELECT * FROM docnum.audit_export(from_time => '-infinity', to_time => 'infinity')")
        assert [column.name for column in cur.description or []] == EXPORT_COLUMNS
        assert len(cur.fetchall()) == 2  # DEFINE_TYPE and NEXT


def test_audit_export_selects_a_half_open_time_range(db: Conn, cor: str) -> None:
    define(db, "LTR", "{TYPE}-{YYYY}-{SEQ:3}", scope="YEARLY")
    before = clock(db)
    first = next_number(db, cor)
    start = clock(db)
    middle = [next_number(db, cor), next_number(db, "LTR"), next_number(db, cor)]
    end = clock(db)
    next_number(db, cor)

    rows = export(db, start, end)
    assert [r["document_number"] for r in rows] == middle
    assert [r["audit_id"] for r in rows] == sorted(r["audit_id"] for r in rows)
    assert {r["operation"] for r in rows} == {"NEXT"}

    # [from, to): a row at exactly from_time is in, a row at exactly to_time is out.
    everything = export(db, before, "infinity")
    assert everything[0]["document_number"] == first
    exact = export(db, everything[1]["occurred_at"], everything[3]["occurred_at"])
    assert [r["audit_id"] for r in exact] == [everything[1]["audit_id"], everything[2]["audit_id"]]
    assert export(db, end, start) == []


def test_audit_export_filters_by_document_type(db: Conn, cor: str) -> None:
    define(db, "LTR", "{TYPE}-{YYYY}-{SEQ:3}", scope="YEARLY")
    start = clock(db)
    next_number(db, cor)
    letters = [next_number(db, "LTR"), next_number(db, "LTR")]
    set_counter(db, "LTR", 9)
    next_number(db, cor)

    rows = export(db, start, "infinity", document_type="LTR")

    assert [(r["operation"], r["document_number"]) for r in rows] == [
        ("NEXT", letters[0]),
        ("NEXT", letters[1]),
        ("SET_COUNTER", None),
    ]
    assert {r["document_type"] for r in rows} == {"LTR"}
    assert len(export(db, start, "infinity")) == 5
