"""Scopes and resets: which counter a number comes from, and when counters start again at 1."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from support.helpers import define, expect_error, footprint, next_number, reserve

Conn = psycopg.Connection[Any]


def test_global_type_counts_on_forever(db: Conn) -> None:
    # reset NEVER (the default): a year in the template is the document's year, the counter never restarts.
    define(db, "GLB", "{TYPE}-{YYYY}-{SEQ:5}")
    assert next_number(db, "GLB", document_date=dt.date(2025, 12, 31)) == "GLB-2025-00001"
    assert next_number(db, "GLB", document_date=dt.date(2026, 1, 1)) == "GLB-2026-00002"
    assert next_number(db, "GLB", document_date=dt.date(2025, 6, 1)) == "GLB-2025-00003"


@pytest.mark.parametrize("kind", ["PROJECT", "CONTRACT"])
def test_each_scope_value_has_its_own_counter(db: Conn, kind: str) -> None:
    define(db, "SCP", "{SCOPE}/{TYPE}/{SEQ:4}", scope=kind)
    assert next_number(db, "SCP", scope="P-1") == "P-1/SCP/0001"
    assert next_number(db, "SCP", scope="P-1") == "P-1/SCP/0002"
    assert next_number(db, "SCP", scope="P-2") == "P-2/SCP/0001"
    assert reserve(db, "SCP", scope="P-2")["document_number"] == "P-2/SCP/0002"
    assert next_number(db, "SCP", scope="P-1") == "P-1/SCP/0003"


def test_scoped_type_requires_a_scope_value(db: Conn, subtests: pytest.Subtests) -> None:
    define(db, "PRJ", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    define(db, "CTR", "{SCOPE}/{TYPE}/{SEQ:4}", scope="CONTRACT")
    before = footprint(db)
    for code in ("PRJ", "CTR"):
        for missing in (None, ""):
            with subtests.test(document_type=code, scope=missing):
                expect_error("NB006", lambda c=code, m=missing: next_number(db, c, scope=m))  # type: ignore[misc]
                expect_error("NB006", lambda c=code, m=missing: reserve(db, c, scope=m))  # type: ignore[misc]
                assert footprint(db) == before


def test_unscoped_type_refuses_a_scope_value(db: Conn, subtests: pytest.Subtests) -> None:
    for kind in ("GLOBAL", "YEARLY", "MONTHLY"):
        define(db, kind[:3], "{TYPE}-{YYYY}-{MM}-{SEQ:4}", scope=kind)
    before = footprint(db)
    for kind in ("GLOBAL", "YEARLY", "MONTHLY"):
        with subtests.test(scope=kind):
            expect_error("NB006", lambda c=kind[:3]: next_number(db, c, scope="P-1"))  # type: ignore[misc]
            expect_error("NB006", lambda c=kind[:3]: reserve(db, c, scope="P-1"))  # type: ignore[misc]
            assert footprint(db) == before


def test_scope_values_are_case_sensitive_and_distinct(db: Conn) -> None:
    define(db, "SCP", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    assert next_number(db, "SCP", scope="abc") == "abc/SCP/0001"
    assert next_number(db, "SCP", scope="ABC") == "ABC/SCP/0001"


def test_longest_allowed_scope_value(db: Conn) -> None:
    define(db, "SCP", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    scope = "P" * 64
    assert next_number(db, "SCP", scope=scope) == f"{scope}/SCP/0001"


# --- Resets through document_date ---------------------------------------------------------------------------


def test_yearly_reset_restarts_on_january_first(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{YYYY}-{SEQ:5}", scope="YEARLY")
    assert next_number(db, "COR", document_date=dt.date(2025, 12, 31)) == "COR-2025-00001"
    assert next_number(db, "COR", document_date=dt.date(2025, 12, 31)) == "COR-2025-00002"
    assert next_number(db, "COR", document_date=dt.date(2026, 1, 1)) == "COR-2026-00001"
    assert next_number(db, "COR", document_date=dt.date(2026, 12, 31)) == "COR-2026-00002"


def test_yearly_reset_with_two_digit_year(db: Conn) -> None:
    define(db, "YY", "{TYPE}/{YY}/{SEQ:3}", scope="YEARLY")
    assert next_number(db, "YY", document_date=dt.date(2025, 12, 31)) == "YY/25/001"
    assert next_number(db, "YY", document_date=dt.date(2026, 1, 1)) == "YY/26/001"


def test_back_dated_document_gets_last_years_next_number(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{YYYY}-{SEQ:5}", scope="YEARLY")
    for _ in range(3):
        next_number(db, "COR", document_date=dt.date(2025, 11, 2))
    assert next_number(db, "COR", document_date=dt.date(2026, 1, 5)) == "COR-2026-00001"
    # A document dated last December, numbered in January, continues last year's sequence.
    assert next_number(db, "COR", document_date=dt.date(2025, 12, 30)) == "COR-2025-00004"
    assert next_number(db, "COR", document_date=dt.date(2026, 1, 6)) == "COR-2026-00002"


def test_monthly_reset_restarts_each_month(db: Conn) -> None:
    define(db, "BOQ", "{TYPE}-{YYYY}-{MM}-{SEQ:4}", scope="MONTHLY")
    assert next_number(db, "BOQ", document_date=dt.date(2025, 10, 31)) == "BOQ-2025-10-0001"
    assert next_number(db, "BOQ", document_date=dt.date(2025, 10, 1)) == "BOQ-2025-10-0002"
    assert next_number(db, "BOQ", document_date=dt.date(2025, 11, 1)) == "BOQ-2025-11-0001"
    assert next_number(db, "BOQ", document_date=dt.date(2025, 12, 31)) == "BOQ-2025-12-0001"
    assert next_number(db, "BOQ", document_date=dt.date(2026, 1, 1)) == "BOQ-2026-01-0001"
    assert next_number(db, "BOQ", document_date=dt.date(2025, 10, 15)) == "BOQ-2025-10-0003"
    # The same month of another year is another period.
    assert next_number(db, "BOQ", document_date=dt.date(2026, 10, 15)) == "BOQ-2026-10-0001"


def test_project_scope_with_yearly_reset(db: Conn) -> None:
    define(db, "DWG", "{SCOPE}/{TYPE}/{YYYY}/{SEQ:3}", scope="PROJECT", reset="YEARLY")
    d2025, d2026 = dt.date(2025, 12, 31), dt.date(2026, 1, 1)
    assert next_number(db, "DWG", scope="P1", document_date=d2025) == "P1/DWG/2025/001"
    assert next_number(db, "DWG", scope="P1", document_date=d2025) == "P1/DWG/2025/002"
    assert next_number(db, "DWG", scope="P2", document_date=d2025) == "P2/DWG/2025/001"
    assert next_number(db, "DWG", scope="P1", document_date=d2026) == "P1/DWG/2026/001"
    assert next_number(db, "DWG", scope="P2", document_date=d2026) == "P2/DWG/2026/001"
    assert next_number(db, "DWG", scope="P1", document_date=dt.date(2025, 7, 1)) == "P1/DWG/2025/003"


def test_contract_scope_with_monthly_reset(db: Conn) -> None:
    define(db, "VO", "{TYPE}-{SCOPE}-{YYYY}{MM}-{SEQ:2}", scope="CONTRACT", reset="MONTHLY")
    assert next_number(db, "VO", scope="C9", document_date=dt.date(2025, 1, 31)) == "VO-C9-202501-01"
    assert next_number(db, "VO", scope="C9", document_date=dt.date(2025, 2, 1)) == "VO-C9-202502-01"
    assert next_number(db, "VO", scope="C8", document_date=dt.date(2025, 2, 1)) == "VO-C8-202502-01"


def test_reserve_follows_the_document_date_too(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{YYYY}-{SEQ:5}", scope="YEARLY")
    assert reserve(db, "COR", document_date=dt.date(2025, 12, 31))["document_number"] == "COR-2025-00001"
    first_2026 = reserve(db, "COR", document_date=dt.date(2026, 1, 1))
    assert (first_2026["document_number"], first_2026["sequence_value"]) == ("COR-2026-00001", 1)


# --- Time zones ---------------------------------------------------------------------------------------------


def test_period_comes_from_the_types_time_zone_not_the_sessions(connect: Any) -> None:
    conn = connect(autocommit=True)
    define(conn, "TZB", "{TYPE}-{YYYY}{MM}{DD}-{SEQ:3}", time_zone="Asia/Bangkok")
    conn.execute("SET TimeZone = 'America/Los_Angeles'")
    with conn.transaction():
        # One transaction: now() is the same instant for the allocation and the comparison.
        number = next_number(conn, "TZB")
        row = conn.execute("SELECT to_char((now() AT TIME ZONE 'Asia/Bangkok')::date, 'YYYYMMDD')").fetchone()
    assert row is not None
    assert number == f"TZB-{row[0]}-001"


def test_period_uses_the_type_time_zone_when_the_dates_always_differ(connect: Any) -> None:
    # UTC+14 and UTC-12 are 26 hours apart: their calendar dates differ at every instant, so this test
    # tells the two time zones apart whenever it runs.
    conn = connect(autocommit=True)
    define(conn, "KIR", "{TYPE}-{YYYY}{MM}{DD}-{SEQ:3}", scope="YEARLY", time_zone="Pacific/Kiritimati")
    conn.execute("SET TimeZone = 'Etc/GMT+12'")
    with conn.transaction():
        number = next_number(conn, "KIR")
        row = conn.execute(
            "SELECT to_char((now() AT TIME ZONE 'Pacific/Kiritimati')::date, 'YYYYMMDD'),"
            "       to_char(now()::date, 'YYYYMMDD'),"
            "       extract(year FROM now() AT TIME ZONE 'Pacific/Kiritimati')::int::text"
        ).fetchone()
    assert row is not None
    type_day, session_day, type_year = row
    assert type_day != session_day
    assert number == f"KIR-{type_day}-001"
    counters = conn.execute("SELECT period FROM docnum.counter WHERE document_type = 'KIR'").fetchall()
    assert counters == [(type_year,)]
