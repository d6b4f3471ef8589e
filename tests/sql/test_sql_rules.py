"""Rules every SQL command shares.

An unknown type code is NB001 in every command; every NB006 names the argument it refuses in the
error's COLUMN field (psycopg: `error.diag.column_name`); one scope-value rule; docnum.status().
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from docnum.ops import schema
from support.admin_helpers import call_rows, import_numbers, import_row, set_counter
from support.helpers import define, expect_error, footprint, next_number, reserve

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]


@pytest.fixture
def types(db: Conn) -> Conn:
    """A GLOBAL type COR (manual overrides allowed) and a PROJECT type RFA, each with one number issued."""
    define(db, "COR", "{TYPE}-{SEQ:5}", allow_manual_override=True)
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    next_number(db, "COR")
    next_number(db, "RFA", scope="PRJ-7")
    return db


# --- NB001: a type code that does not exist -----------------------------------------------------------------

UNKNOWN_TYPE_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("next_number", {}),
    ("reserve_number", {}),
    ("alter_type", {"max_value": 5}),
    ("set_counter", {"value": 3, "reason": "r"}),
    ("override_number", {"document_number": "NOPE-1", "reason": "r"}),
    ("gaps", {}),
    ("audit_export", {"from_time": "-infinity", "to_time": "infinity"}),
    ("status", {}),
]


def test_an_unknown_type_code_is_nb001_in_every_command(types: Conn, subtests: pytest.Subtests) -> None:
    before = footprint(types)
    for function, extra in UNKNOWN_TYPE_CALLS:
        with subtests.test(function=function):
            error = expect_error(
                "NB001",
                lambda f=function, x=extra: call_rows(types, f, document_type="NOPE", **x),  # type: ignore[misc]
            )
            assert "'NOPE'" in str(error)
            assert error.diag.column_name == "document_type"
    assert footprint(types) == before


def test_a_known_type_without_rows_is_an_empty_answer(db: Conn) -> None:
    define(db, "NEW", "{TYPE}-{SEQ:3}")
    assert call_rows(db, "gaps", document_type="NEW") == []
    exported = call_rows(db, "audit_export", from_time="-infinity", to_time="infinity", document_type="NEW")
    assert [r["operation"] for r in exported] == ["DEFINE_TYPE"]
    assert call_rows(db, "status", document_type="NEW") == []


# --- docnum.status() ----------------------------------------------------------------------------------------


def test_status_returns_the_rows_of_sequence_status(types: Conn) -> None:
    next_number(types, "RFA", scope="PRJ-8")
    view = [dict(r) for r in call_rows(types, "status")]
    with types.cursor(row_factory=psycopg.rows.dict_row) as cur:
        expected = cur.execute(
            "SELECT * FROM docnum.sequence_status ORDER BY document_type, scope_value, period"
        ).fetchall()
    assert view == expected
    assert [(r["document_type"], r["scope_value"]) for r in view] == [
        ("COR", ""),
        ("RFA", "PRJ-7"),
        ("RFA", "PRJ-8"),
    ]
    rfa = call_rows(types, "status", document_type="RFA")
    assert [(r["scope_value"], r["current_value"], r["confirmed"]) for r in rfa] == [
        ("PRJ-7", 1, 1),
        ("PRJ-8", 1, 1),
    ]


def test_status_is_granted_like_the_view(types: Conn, connect: Connect) -> None:
    for role, allowed in (("docnum_reader", True), ("docnum_admin", True), ("docnum_app", False)):
        conn = connect(autocommit=True)
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        if allowed:
            assert [r["document_type"] for r in call_rows(conn, "status", document_type="COR")] == ["COR"]
        else:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                call_rows(conn, "status")


# --- NB006 names the argument it refuses --------------------------------------------------------------------

BAD_ARGUMENTS: list[tuple[str, dict[str, Any], str]] = [
    ("next_number", {"document_type": None}, "document_type"),
    ("next_number", {"document_type": ""}, "document_type"),
    ("next_number", {"document_type": "RFA"}, "scope"),
    ("next_number", {"document_type": "RFA", "scope": " PRJ"}, "scope"),
    ("next_number", {"document_type": "COR", "scope": "PRJ-7"}, "scope"),
    ("next_number", {"document_type": "COR", "actor": ""}, "actor"),
    ("next_number", {"document_type": "COR", "document_ref": "a\u200bb"}, "document_ref"),
    ("next_number", {"document_type": "COR", "document_date": "0999-12-31"}, "document_date"),
    ("next_number", {"document_type": "COR", "request_id": "x" * 201}, "request_id"),
    ("reserve_number", {"document_type": "COR", "ttl": "8 days"}, "ttl"),
    ("reserve_number", {"document_type": "COR", "metadata": "[1]"}, "metadata"),
    ("confirm_number", {"token": None}, "token"),
    ("cancel_number", {"token": None}, "token"),
    ("cancel_number", {"token": "00000000-0000-0000-0000-000000000000", "reason": ""}, "reason"),
    ("find_request", {"request_id": None}, "request_id"),
    ("define_type", {"code": "bad", "format": "{SEQ}"}, "code"),
    ("define_type", {"code": "NEW", "format": "{SEQ}{SEQ}"}, "format"),
    ("define_type", {"code": "NEW", "format": "{TYPE}-{SEQ}", "scope": "WEEKLY"}, "scope"),
    ("define_type", {"code": "NEW", "format": "{TYPE}-{SEQ}", "reset": "DAILY"}, "reset"),
    ("define_type", {"code": "NEW", "format": "{TYPE}-{SEQ}", "time_zone": "Mars/Base"}, "time_zone"),
    ("define_type", {"code": "NEW", "format": "{TYPE}-{SEQ}", "max_value": 0}, "max_value"),
    ("define_type", {"code": "NEW", "format": "{TYPE}-{SEQ}", "reservation_ttl": "0"}, "reservation_ttl"),
    ("define_type", {"code": "NEW", "format": "{TYPE}-{SEQ}", "lock_timeout": "2 hours"}, "lock_timeout"),
    ("define_type", {"code": "NEW", "format": "{TYPE}-{SEQ}", "metadata": "[]"}, "metadata"),
    (
        "define_type",
        {"code": "NEW", "format": "{TYPE}-{SEQ}", "allow_manual_override": None},
        "allow_manual_override",
    ),
    ("alter_type", {"document_type": "COR", "format": "COR-{SEQ:5}-{SEQ}"}, "format"),
    ("alter_type", {"document_type": "COR", "max_value": 0}, "max_value"),
    ("alter_type", {"document_type": "COR", "reason": ""}, "reason"),
    ("set_counter", {"document_type": "COR", "value": 3}, "reason"),
    ("set_counter", {"document_type": "COR", "value": -1, "reason": "r"}, "value"),
    ("set_counter", {"document_type": "COR", "value": 3, "period": "2025", "reason": "r"}, "period"),
    ("set_counter", {"document_type": "RFA", "value": 3, "scope": "a\u00a0", "reason": "r"}, "scope"),
    ("set_counter", {"document_type": "COR", "value": 3, "scope": "X", "reason": "r"}, "scope"),
    ("override_number", {"document_type": "COR", "document_number": None, "reason": "r"}, "document_number"),
    ("override_number", {"document_type": "COR", "document_number": "XYZ", "reason": "r"}, "document_number"),
    (
        "override_number",
        {"document_type": "COR", "document_number": "COR-1", "reason": "r", "skip_validation": None},
        "skip_validation",
    ),
    ("void_number", {"document_number": None, "reason": "r"}, "document_number"),
    ("void_number", {"document_number": "COR-00001", "actor": "", "reason": "r"}, "actor"),
    ("import_numbers", {"rows": "{}"}, "rows"),
    ("register_document_table", {"table_name": None, "number_column": "n"}, "table_name"),
    ("register_document_table", {"table_name": "pg_class", "number_column": None}, "number_column"),
    ("register_document_table", {"table_name": "pg_class", "number_column": "relname"}, "table_name"),
]


def test_every_nb006_names_the_argument_it_refuses(types: Conn, subtests: pytest.Subtests) -> None:
    for function, arguments, column in BAD_ARGUMENTS:
        with subtests.test(function=function, arguments=arguments):
            error = expect_error(
                "NB006",
                lambda f=function, a=arguments: call_rows(types, f, **a),  # type: ignore[misc]
            )
            assert error.diag.column_name == column, (
                f"{error.diag.message_primary}: COLUMN {error.diag.column_name}"
            )


NB006_RAISE = re.compile(r"RAISE EXCEPTION .*?;", re.S)


def test_every_nb006_in_the_source_carries_a_column() -> None:
    """Each RAISE of NB006 in sql/ sets COLUMN, except the counter trigger's, which many commands can fire."""
    missing = [
        f"{path.name}: {statement.splitlines()[0].strip()}"
        for path in schema.sql_files()
        for statement in NB006_RAISE.findall(path.read_text(encoding="utf-8"))
        if "'NB006'" in statement
        and "COLUMN" not in statement
        and "cannot number a document of" not in statement
    ]
    assert missing == []


# --- One scope-value rule -----------------------------------------------------------------------------------

BAD_SCOPE_VALUES = ["", " PRJ", "PRJ\u3000", "P\u200bJ", "x" * 65]


def test_allocation_administration_and_import_refuse_the_same_scope_values(
    types: Conn, subtests: pytest.Subtests
) -> None:
    for value in BAD_SCOPE_VALUES:
        with subtests.test(value=value):
            for action in (
                lambda v=value: next_number(types, "RFA", scope=v),
                lambda v=value: reserve(types, "RFA", scope=v),
                lambda v=value: set_counter(types, "RFA", 3, scope=v),
            ):
                assert expect_error("NB006", action).diag.column_name == "scope"
            if value:
                [row] = import_numbers(types, [import_row("RFA", f"{value}/RFA/0009")])
                # (an invisible character is refused by the document-number rule first)
                assert row["status"] == "rejected"
                assert row["detail"] in ("invalid scope value", "invalid document number")
    # The longest value the rule accepts works everywhere.
    longest = "x" * 64
    assert next_number(types, "RFA", scope=longest) == f"{longest}/RFA/0001"
    assert set_counter(types, "RFA", 5, scope=longest) == 5


# --- Each rule has one home ---------------------------------------------------------------------------------


def test_shared_rules_are_written_once_in_the_source() -> None:
    """lock_timeout changes and audit inserts each have one home in 15_rules.sql (an allocation writes no
    audit row: its ledger row is its record, from revision 0005); a counter's turn is taken by allocation and
    import only, and no advisory lock is left (any role can take an advisory key)."""
    source = {path.name: path.read_text(encoding="utf-8") for path in schema.sql_files()}

    def count(pattern: str) -> dict[str, int]:
        counts = {name: len(re.findall(pattern, text)) for name, text in source.items()}
        return {name: n for name, n in counts.items() if n}

    assert count(r"advisory") == {}
    assert set(count(r"FROM docnum\.counter_queue q")) == {"30_allocation.sql", "55_import.sql"}
    assert count(r"set_config\('lock_timeout'") == {"15_rules.sql": 1}
    assert count(r"INSERT INTO docnum\.audit_log") == {"15_rules.sql": 1}
    assert count(r"ERRCODE = 'NB001'") == {"15_rules.sql": 1}
    assert count(r"_has_invisible\(p_scope\)") == {"15_rules.sql": 1}


def test_each_shared_rule_has_one_home_in_the_catalog(db: psycopg.Connection[Any]) -> None:
    """The claimed-actor rule, the scope kinds kept per scope value and the text limits are each written once:
    every other function calls the one that holds it."""
    bodies = dict(
        db.execute(
            "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p"
            " WHERE p.pronamespace = 'docnum'::regnamespace AND p.prokind = 'f'"
        ).fetchall()
    )
    assert len(bodies) > 40

    def homes(pattern: str) -> set[str]:
        return {name for name, body in bodies.items() if re.search(pattern, body)}

    assert homes(r"request\.jwt\.claims'::text, true\) <> ''") == {"_actor"}
    assert homes(r"[\[(]'PROJECT'(::text)?, 'CONTRACT'") == {"_has_scope_value"}  # not the list of all kinds
    assert homes(r"(?<!_)length\([^)]*\)\s*>\s*\d{3}") == set()  # a text's limit is _text_limit()'s
    assert homes(r"_check_text\([^)]*,[^)]*,") == set()  # the limit is never passed in
    # every public function with an actor argument takes it through _actor()
    with_actor = {
        name
        for (name,) in db.execute(
            "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'docnum'::regnamespace"
            " AND p.proname !~ '^_' AND EXISTS (SELECT 1 FROM unnest(p.proargnames, coalesce(p.proargmodes,"
            " array_fill('i'::\"char\", ARRAY[coalesce(cardinality(p.proargnames), 0)]))) AS a (name, mode)"
            " WHERE a.name = 'actor' AND a.mode IN ('i', 'b'))"
        ).fetchall()
    }
    assert len(with_actor) >= 14 and with_actor <= homes(r"docnum\._actor\(")
