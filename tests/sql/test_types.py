"""define_type and alter_type: idempotent definition, audited changes, and changes refused to keep numbers
unique and readable."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from support.helpers import audit_rows, call, define, expect_error, footprint, next_number, reserve

Conn = psycopg.Connection[Any]


def alter(conn: Conn, document_type: str, **changes: Any) -> dict[str, Any]:
    return call(conn, "alter_type", document_type=document_type, **changes)


# --- define_type --------------------------------------------------------------------------------------------


def test_define_type_returns_the_new_type_and_audits_it(db: Conn) -> None:
    row = define(
        db, "COR", "{TYPE}-{SEQ:5}", time_zone="Asia/Bangkok", actor="admin", metadata='{"owner": "QA"}'
    )
    assert row["code"] == "COR"
    assert row["format"] == "{TYPE}-{SEQ:5}"
    assert (row["scope"], row["reset"], row["time_zone"]) == ("GLOBAL", "NEVER", "Asia/Bangkok")
    assert row["reservation_ttl"] == dt.timedelta(minutes=5)
    assert row["lock_timeout"] == dt.timedelta(seconds=5)
    assert row["allow_manual_override"] is False
    assert row["metadata"] == {"owner": "QA"}
    [audit] = audit_rows(db, "operation = 'DEFINE_TYPE'")
    assert (audit["document_type"], audit["actor"]) == ("COR", "admin")
    assert audit["new_value"]["format"] == "{TYPE}-{SEQ:5}"


def test_identical_redefinition_returns_the_existing_type_and_writes_nothing(db: Conn) -> None:
    first = define(db, "COR", "{TYPE}-{YYYY}-{SEQ:5}", scope="YEARLY", time_zone="Asia/Bangkok")
    next_number(db, "COR")
    before = footprint(db)
    again = define(db, "COR", "{TYPE}-{YYYY}-{SEQ:5}", scope="YEARLY", time_zone="Asia/Bangkok")
    assert again == first
    assert footprint(db) == before
    assert len(audit_rows(db, "operation = 'DEFINE_TYPE'")) == 1


def test_redefinition_spelling_out_the_defaults_is_identical(db: Conn) -> None:
    first = define(db, "COR", "{TYPE}-{SEQ:5}")
    before = footprint(db)
    again = define(
        db,
        "COR",
        "{TYPE}-{SEQ:5}",
        scope="GLOBAL",
        reset="NEVER",
        time_zone="UTC",
        max_value=99_999,
        reservation_ttl="5 minutes",
        lock_timeout="5 seconds",
        allow_manual_override=False,
        metadata="{}",
    )
    assert again == first
    assert footprint(db) == before


def test_different_definition_is_refused_with_nb010(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    before = footprint(db)
    expect_error("NB010", lambda: define(db, "COR", "{TYPE}-{SEQ:6}"))
    assert footprint(db) == before
    assert next_number(db, "COR") == "COR-00001"


def test_define_type_refuses_a_format_another_type_already_renders(db: Conn) -> None:
    define(db, "AAA", "DOC-{SEQ:4}")
    before = footprint(db)
    expect_error("NB006", lambda: define(db, "BBB", "DOC-{SEQ:4}"))
    assert footprint(db) == before


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("DOC-{SEQ}", "DOC-{SEQ:1}", id="unpadded-and-width-1-render-identically"),
        pytest.param("DOC-{SEQ:2}", "DOC-{SEQ:3}", id="widths-2-and-3-meet-at-100"),
    ],
)
def test_define_type_refuses_templates_that_render_overlapping_numbers(
    db: Conn, first: str, second: str
) -> None:
    # AAA's value 1 (or 100) and BBB's value 1 (or 100) would be the same text: two types competing for one
    # number, so one of them would have to skip a value and its sequence would no longer be gapless.
    define(db, "AAA", first, max_value=1000)
    before = footprint(db)
    expect_error("NB006", lambda: define(db, "BBB", second, max_value=1000))
    assert footprint(db) == before


# --- alter_type ---------------------------------------------------------------------------------------------


def test_alter_type_audits_old_and_new_values(db: Conn) -> None:
    define(db, "ONE", "{TYPE}-{SEQ:1}")
    row = alter(db, "ONE", max_value=99, actor="admin", reason="ran out")
    assert row["max_value"] == 99
    assert row["format"] == "{TYPE}-{SEQ:1}"  # NULL arguments leave settings unchanged
    [audit] = audit_rows(db, "operation = 'ALTER_TYPE'")
    assert (audit["document_type"], audit["actor"]) == ("ONE", "admin")
    assert audit["old_value"]["max_value"] == 9
    assert audit["new_value"]["max_value"] == 99
    assert audit["old_value"]["format"] == audit["new_value"]["format"] == "{TYPE}-{SEQ:1}"
    assert "ran out" in str(audit)


def test_alter_type_changes_ttl_time_zone_and_lock_timeout(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    row = alter(
        db,
        "COR",
        reservation_ttl="1 hour",
        time_zone="Europe/Paris",
        lock_timeout="1 second",
        metadata='{"a": 1}',
    )
    assert (row["reservation_ttl"], row["time_zone"]) == (dt.timedelta(hours=1), "Europe/Paris")
    assert (row["lock_timeout"], row["metadata"]) == (dt.timedelta(seconds=1), {"a": 1})
    with db.transaction():
        reservation = reserve(db, "COR")
        now = db.execute("SELECT now()").fetchone()
    assert now is not None
    assert reservation["expires_at"] >= now[0] + dt.timedelta(hours=1)


def test_alter_type_without_changes_writes_nothing(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    before = footprint(db)
    alter(db, "COR", max_value=99_999)
    alter(db, "COR")
    assert footprint(db) == before


def test_alter_type_refuses_max_value_below_a_counter(db: Conn) -> None:
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    for _ in range(5):
        next_number(db, "RFA", scope="P1")
    next_number(db, "RFA", scope="P2")
    before = footprint(db)
    expect_error("NB006", lambda: alter(db, "RFA", max_value=4))
    assert footprint(db) == before
    assert db.execute("SELECT max_value FROM docnum.document_type WHERE code = 'RFA'").fetchone() == (9_999,)
    # Down to the highest counter is allowed; that counter is then exhausted, the other is not.
    assert alter(db, "RFA", max_value=5)["max_value"] == 5
    expect_error("NB002", lambda: next_number(db, "RFA", scope="P1"))
    assert next_number(db, "RFA", scope="P2") == "P2/RFA/0002"


def test_alter_type_refuses_a_format_that_makes_existing_numbers_ambiguous(db: Conn) -> None:
    define(db, "AAA", "{TYPE}-{SEQ}", max_value=1000)
    define(db, "BBB", "{TYPE}-{SEQ:4}")
    next_number(db, "AAA")
    next_number(db, "BBB")
    before = footprint(db)
    # Under this template AAA-1, which already names AAA's first document, would read as BBB's value 1.
    expect_error("NB006", lambda: alter(db, "BBB", format="AAA-{SEQ}"))
    assert footprint(db) == before
    assert next_number(db, "BBB") == "BBB-0002"


def test_alter_type_refuses_a_format_another_type_already_renders(db: Conn) -> None:
    define(db, "AAA", "{TYPE}-{SEQ:4}")
    define(db, "BBB", "{TYPE}-{SEQ:4}")
    before = footprint(db)
    # Neither type has issued anything yet, but from now on both would render AAA-0001, AAA-0002...
    expect_error("NB006", lambda: alter(db, "BBB", format="AAA-{SEQ:4}"))
    assert footprint(db) == before


def test_alter_type_refuses_an_invalid_format(db: Conn) -> None:
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    before = footprint(db)
    expect_error("NB006", lambda: alter(db, "RFA", format="{TYPE}/{SEQ:4}"))  # loses {SCOPE}
    expect_error("NB006", lambda: alter(db, "RFA", format="{SCOPE}/{TYPE}"))  # loses {SEQ}
    assert footprint(db) == before


def test_alter_type_accepts_a_harmless_format_change(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{SEQ:4}")
    for _ in range(3):
        next_number(db, "COR")
    row = alter(db, "COR", format="{TYPE}/{SEQ:4}", actor="admin")
    assert row["format"] == "{TYPE}/{SEQ:4}"
    # The counter goes on; only the look of new numbers changes.
    assert next_number(db, "COR") == "COR/0004"
    [audit] = audit_rows(db, "operation = 'ALTER_TYPE'")
    assert (audit["old_value"]["format"], audit["new_value"]["format"]) == (
        "{TYPE}-{SEQ:4}",
        "{TYPE}/{SEQ:4}",
    )
