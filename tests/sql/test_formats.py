"""Number templates: what each token renders, padding and max_value, and the templates define_type refuses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from support.helpers import define, expect_error, footprint, next_number, reserve

Conn = psycopg.Connection[Any]


def allocate(conn: Conn, document_type: str, count: int, **arguments: Any) -> list[str]:
    """`count` numbers of one type, one next_number call (and transaction) each."""
    return [next_number(conn, document_type, **arguments) for _ in range(count)]


# --- The examples of the documentation, reached by allocating -----------------------------------------------


def test_yearly_correspondence_number_renders_type_year_and_five_digits(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{YYYY}-{SEQ:5}", scope="YEARLY")
    numbers = allocate(db, "COR", 42, document_date=dt.date(2025, 3, 14))
    assert numbers[0] == "COR-2025-00001"
    assert numbers[-1] == "COR-2025-00042"


def test_monthly_boq_number_renders_year_month_and_four_digits(db: Conn) -> None:
    define(db, "BOQ", "{TYPE}-{YYYY}-{MM}-{SEQ:4}", scope="MONTHLY")
    numbers = allocate(db, "BOQ", 43, document_date=dt.date(2025, 10, 7))
    assert numbers[0] == "BOQ-2025-10-0001"
    assert numbers[-1] == "BOQ-2025-10-0043"


def test_project_rfa_number_renders_scope_type_and_four_digits(db: Conn) -> None:
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    numbers = allocate(db, "RFA", 12, scope="PRJ-7")
    assert numbers[0] == "PRJ-7/RFA/0001"
    assert numbers[-1] == "PRJ-7/RFA/0012"


def test_reserve_renders_the_same_template_as_next_number(db: Conn) -> None:
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    assert reserve(db, "RFA", scope="PRJ-7")["document_number"] == "PRJ-7/RFA/0001"
    assert next_number(db, "RFA", scope="PRJ-7") == "PRJ-7/RFA/0002"


# --- Every token --------------------------------------------------------------------------------------------


TOKEN_EXAMPLES: list[tuple[str, str, dt.date, str]] = [
    ("YYT", "{TYPE}{YY}-{SEQ:3}", dt.date(2025, 3, 4), "YYT25-001"),
    ("YYZ", "{TYPE}/{YY}/{SEQ:3}", dt.date(2007, 3, 4), "YYZ/07/001"),
    ("DDT", "{TYPE}-{YYYY}{MM}{DD}-{SEQ:2}", dt.date(2025, 3, 4), "DDT-20250304-01"),
    ("MMT", "{MM}.{YYYY}/{TYPE}/{SEQ:2}", dt.date(2025, 11, 30), "11.2025/MMT/01"),
    ("PLAIN", "{TYPE}-{SEQ}", dt.date(2025, 1, 1), "PLAIN-1"),
    ("LIT", "Invoice No. {SEQ:3} (issued {YYYY})", dt.date(2025, 1, 1), "Invoice No. 001 (issued 2025)"),
    ("REGEX", "^$.*+?[]()|\\#%{SEQ:2}", dt.date(2025, 1, 1), "^$.*+?[]()|\\#%01"),
    ("WORD", "TYPE-SEQ-{TYPE}-{SEQ:2}", dt.date(2025, 1, 1), "TYPE-SEQ-WORD-01"),
    ("TAIL", "{SEQ:4}/{TYPE}/{YYYY}", dt.date(2025, 1, 1), "0001/TAIL/2025"),
]


def test_every_token_renders(db: Conn, subtests: pytest.Subtests) -> None:
    # One type per example, all in one database: their templates render distinct numbers.
    for code, template, document_date, expected in TOKEN_EXAMPLES:
        with subtests.test(msg=template):
            define(db, code, template)
            assert next_number(db, code, document_date=document_date) == expected


def test_unpadded_seq_grows_without_leading_zeros(db: Conn) -> None:
    define(db, "UNP", "{TYPE}-{SEQ}")
    numbers = allocate(db, "UNP", 11)
    assert numbers[8:] == ["UNP-9", "UNP-10", "UNP-11"]


def test_scope_value_is_rendered_verbatim(db: Conn) -> None:
    # A scope value that looks like a token stays literal text.
    define(db, "CTR", "{TYPE}-{SCOPE}-{SEQ:3}", scope="CONTRACT")
    assert next_number(db, "CTR", scope="C/{YYYY}") == "CTR-C/{YYYY}-001"


# --- Padding and max_value ----------------------------------------------------------------------------------


def test_padding_is_a_minimum_width_wider_values_are_not_truncated(db: Conn) -> None:
    define(db, "PAD", "{TYPE}-{SEQ:2}", max_value=1000)
    numbers = allocate(db, "PAD", 100)
    assert numbers[0] == "PAD-01"
    assert numbers[98] == "PAD-99"
    assert numbers[99] == "PAD-100"


DEFAULT_MAX_VALUES: list[tuple[str, int]] = [
    ("{TYPE}-{SEQ:1}", 9),
    ("{TYPE}-{SEQ:4}", 9_999),
    ("{TYPE}-{SEQ:5}", 99_999),
    ("{TYPE}-{SEQ:18}", 999_999_999_999_999_999),
    ("{TYPE}-{SEQ}", 9_223_372_036_854_775_806),  # 2^63 - 2: the value after it still fits a bigint
]


def test_default_max_value_is_the_largest_the_padding_shows(db: Conn, subtests: pytest.Subtests) -> None:
    for index, (template, expected_max) in enumerate(DEFAULT_MAX_VALUES):
        code = f"MAX{index}"
        with subtests.test(msg=template):
            assert define(db, code, template)["max_value"] == expected_max
            stored = db.execute(
                "SELECT max_value FROM docnum.document_type WHERE code = %s", (code,)
            ).fetchone()
            assert stored == (expected_max,)


def test_explicit_max_value_overrides_the_padding_default(db: Conn) -> None:
    assert define(db, "MAXE", "{TYPE}-{SEQ:4}", max_value=50_000)["max_value"] == 50_000


def test_very_large_explicit_max_value_allocates(db: Conn) -> None:
    define(db, "BIG", "{TYPE}-{SEQ:4}", max_value=9_000_000_000_000_000_000)
    assert next_number(db, "BIG") == "BIG-0001"


def test_padding_default_max_value_is_enforced(db: Conn) -> None:
    define(db, "ONE", "{TYPE}-{SEQ:1}")
    assert allocate(db, "ONE", 9)[-1] == "ONE-9"
    expect_error("NB002", lambda: next_number(db, "ONE"))


# --- Templates define_type refuses --------------------------------------------------------------------------
# One database for the whole list (a refused definition writes nothing); each case is its own subtest.

REFUSED_TEMPLATES: list[tuple[str, str | None, dict[str, Any]]] = [
    ("unknown token", "{TYPE}-{FOO}-{SEQ}", {}),
    ("SEQ width 0", "{TYPE}-{SEQ:0}", {}),
    ("SEQ width 19", "{TYPE}-{SEQ:19}", {}),
    ("SEQ width not a number", "{TYPE}-{SEQ:x}", {}),
    ("empty token", "{TYPE}-{}-{SEQ}", {}),
    ("no SEQ", "{TYPE}-{YYYY}", {}),
    ("no token at all", "FIXED", {}),
    ("two SEQ", "{SEQ}-{SEQ:3}", {}),
    ("two padded SEQ", "{TYPE}-{SEQ:3}-{SEQ:3}", {}),
    ("PROJECT type without SCOPE", "{TYPE}-{SEQ:4}", {"scope": "PROJECT"}),
    ("CONTRACT type without SCOPE", "{TYPE}-{SEQ:4}", {"scope": "CONTRACT"}),
    ("SCOPE on a GLOBAL type", "{SCOPE}-{SEQ:4}", {}),
    ("YEARLY scope without a year", "{TYPE}-{SEQ:4}", {"scope": "YEARLY"}),
    ("YEARLY reset without a year", "{SCOPE}/{SEQ:4}", {"scope": "PROJECT", "reset": "YEARLY"}),
    ("MONTHLY scope without a month", "{TYPE}-{YYYY}-{SEQ:4}", {"scope": "MONTHLY"}),
    ("MONTHLY scope without a year", "{TYPE}-{MM}-{SEQ:4}", {"scope": "MONTHLY"}),
    ("MONTHLY reset without a month", "{SCOPE}/{YYYY}/{SEQ:4}", {"scope": "PROJECT", "reset": "MONTHLY"}),
    ("SCOPE then SEQ adjacent", "{TYPE}/{SCOPE}{SEQ}", {"scope": "PROJECT"}),
    ("SEQ then SCOPE adjacent", "{TYPE}/{SEQ}{SCOPE}", {"scope": "PROJECT"}),
    # Only digits between {SCOPE} and {SEQ}: scope A01 value 1 and scope A value 100001 are both A0100001.
    ("digit between SCOPE and SEQ", "{SCOPE}0{SEQ:4}", {"scope": "PROJECT"}),
    ("digit between SEQ and SCOPE", "{TYPE}-{SEQ}9{SCOPE}", {"scope": "PROJECT"}),
    ("padded SEQ right after SCOPE", "{SCOPE}{SEQ:4}", {"scope": "PROJECT"}),
    ("only digits between SCOPE and SEQ", "{SCOPE}0{YYYY}0{SEQ:2}", {"scope": "PROJECT"}),
    ("unclosed brace", "{TYPE-{SEQ}", {}),
    ("unclosed brace at the end", "{TYPE}-{SEQ", {}),
    ("stray closing brace", "{TYPE}}-{SEQ}", {}),
    ("nested braces", "{TYPE}-{{SEQ}}", {}),
    ("duplicate TYPE", "{TYPE}-{TYPE}-{SEQ}", {}),
    ("duplicate YYYY", "{TYPE}-{YYYY}-{YYYY}-{SEQ}", {}),
    ("YYYY and YY", "{TYPE}-{YYYY}-{YY}-{SEQ}", {}),
    ("empty", "", {}),
    ("NULL", None, {}),
]


def test_define_type_refuses_bad_templates(db: Conn, subtests: pytest.Subtests) -> None:
    before = footprint(db)
    for label, template, settings in REFUSED_TEMPLATES:
        with subtests.test(msg=label, template=template, **settings):
            expect_error("NB006", lambda t=template, s=settings: define(db, "BAD", t, **s))  # type: ignore[misc]
            assert footprint(db) == before
    # Nothing of any attempt is left: the code is still free.
    expect_error("NB001", lambda: next_number(db, "BAD"))
    assert define(db, "BAD", "{TYPE}-{SEQ:4}")["code"] == "BAD"


# --- Type codes ---------------------------------------------------------------------------------------------


def test_define_type_refuses_bad_codes(db: Conn, subtests: pytest.Subtests) -> None:
    before = footprint(db)
    for code in ["cor", "Cor", "1AB", "_AB", "", "A-B", "A B", None]:
        with subtests.test(code=code):
            expect_error("NB006", lambda c=code: define(db, c, "{SEQ:4}/{TYPE}"))  # type: ignore[misc]
            assert footprint(db) == before


def test_define_type_accepts_codes(db: Conn, subtests: pytest.Subtests) -> None:
    for code in ["COR", "RFA_2", "A", "X9"]:
        with subtests.test(code=code):
            assert define(db, code, "{TYPE}-{SEQ:4}")["code"] == code
            assert next_number(db, code) == f"{code}-0001"


# --- Allocation's renderer agrees with docnum._fill ---------------------------------------------------------

# Literal text that to_char() would read as fields, quotes and backslashes it must escape, and braces.
LITERALS = st.text(alphabet='YMDHFTHhmsy"\\/-_. %{}AZaz09', min_size=1, max_size=6)
TEMPLATE_PIECES = st.one_of(st.sampled_from(["{YYYY}", "{YY}", "{MM}", "{DD}", "{SCOPE}"]), LITERALS)


@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pieces=st.lists(TEMPLATE_PIECES, max_size=8),
    day=st.dates(min_value=dt.date(1000, 1, 1), max_value=dt.date(9999, 12, 31)),
    scope=st.text(alphabet='PRJ-7/"\\{}YMD', min_size=1, max_size=8),
)
def test_one_to_char_call_renders_what_fill_renders(
    db: Conn, pieces: list[str], day: dt.date, scope: str
) -> None:
    # Allocation fills a head or tail with to_char() and a compiled pattern; _fill() (used to read numbers
    # back) substitutes token by token. A number must read back as exactly the text it was issued with.
    text = "".join(pieces)
    row = db.execute(
        "SELECT replace(to_char(%(day)s::date::timestamp, docnum._to_char_pattern(%(text)s)),"
        "               '{SCOPE}', %(scope)s),"
        "       docnum._fill(%(text)s, %(scope)s, %(day)s::date)",
        {"text": text, "day": day, "scope": scope},
    ).fetchone()
    assert row is not None
    assert row[0] == row[1]
