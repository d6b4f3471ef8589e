"""Number templates are injective: two counters never render the same text.

The rule (sql/20_format.sql, docs/usage.md "Formats"): within a template, a literal non-digit separates
{SCOPE} from {SEQ}; across types, no two templates (current or former) can render a common text; the same
type may change only the padding of {SEQ} when its old and new templates can meet; {YY} with a reset holds
2000..2099 only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from support.admin_helpers import validate
from support.helpers import call, define, expect_error, footprint, in_thread, next_number, wait_until_blocked

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]


def alter(conn: Conn, document_type: str, **arguments: Any) -> dict[str, Any]:
    return call(conn, "alter_type", document_type=document_type, **arguments)


# --- What the outside test found ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "witness"),
    [
        pytest.param("GL{SEQ:3}", "GL0{SEQ}", "GL01", id="GL0-SEQ-beside-GL-SEQ3"),
        pytest.param("GL0{SEQ}", "GL{SEQ:3}", "GL01", id="GL-SEQ3-beside-GL0-SEQ"),
        pytest.param("OV{SEQ:2}", "OV1{SEQ}", "OV11", id="OV1-SEQ-beside-OV-SEQ2"),
        pytest.param("DOC-{SEQ:2}", "DOC-{SEQ:3}", "DOC-111", id="widths-2-and-3"),
        pytest.param("{TYPE}-{SEQ}", "AAA-{SEQ:4}", "AAA-1111", id="literal-spelling-of-another-code"),
    ],
)
def test_a_template_that_meets_another_types_is_refused(
    db: Conn, first: str, second: str, witness: str
) -> None:
    define(db, "AAA", first)
    before = footprint(db)
    error = expect_error("NB006", lambda: define(db, "BBB", second))
    assert footprint(db) == before
    detail = error.diag.message_detail or ""
    # The DETAIL names the other type, its template and a text both can render.
    assert "AAA" in detail and first in detail and witness in detail


def test_the_outside_collisions_are_real(db: Conn) -> None:
    # What the refusals above prevent: value 10 of GL{SEQ:3} and of GL0{SEQ} are both GL010.
    rendered = db.execute(
        "SELECT docnum._seq_text(10, 3), '0' || docnum._seq_text(10, 0), docnum._seq_text(1, 2)"
    ).fetchone()
    assert rendered == ("010", "010", "01")


@pytest.mark.parametrize(
    "template",
    [
        # Scope A01 value 1 and scope A value 100001 are both A0100001.
        pytest.param("{SCOPE}0{SEQ:4}", id="digit-between-scope-and-seq"),
        # Scope 95 value 1 and scope 5 value 19 are both X-195.
        pytest.param("{TYPE}-{SEQ}9{SCOPE}", id="digit-between-seq-and-scope"),
        # Scope P1 value 1 and scope P value 10001 are both P10001.
        pytest.param("{SCOPE}{SEQ:4}", id="padded-seq-right-after-scope"),
        pytest.param("{SCOPE}0{YYYY}0{SEQ:2}", id="only-digits-between"),
    ],
)
def test_scope_and_seq_need_a_non_digit_between_them(db: Conn, template: str) -> None:
    before = footprint(db)
    error = expect_error("NB006", lambda: define(db, "SCP", template, scope="PROJECT"))
    assert footprint(db) == before
    assert "between" in (error.diag.message_primary or "")


@pytest.mark.parametrize(
    "template",
    [
        "{SCOPE}-{SEQ:4}",
        "{SCOPE}/{TYPE}/{SEQ:4}",
        "{SCOPE}-{YYYY}{SEQ:3}",  # the digit run before {SEQ} stops at '-': its width is known
        "{SEQ:4}/{SCOPE}",
        "{TYPE}{YY}-{SEQ:3}~{SCOPE}",
        "{SCOPE}Z00{SEQ:2}",
    ],
)
def test_templates_with_a_non_digit_between_scope_and_seq_are_accepted(db: Conn, template: str) -> None:
    define(db, "SCP", template, scope="PROJECT", reset="NEVER")
    for scope in ["P", "P-1", "1", "Z00", "9-9/9"]:
        for _ in range(2):
            number = next_number(db, "SCP", scope=scope, document_date=dt.date(2025, 3, 4))
            assert read_back(db, "SCP", number)[:2] == (scope, "")
    assert validate(db) == []


def read_back(db: Conn, code: str, number: str) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT p.scope_value, p.period, p.sequence_value FROM docnum.document_type t,"
        " docnum._parse(t, %s) p WHERE t.code = %s",
        (number, code),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_two_definitions_that_meet_cannot_both_pass_the_check(db: Conn, connect: Connect) -> None:
    # The check reads the other types' templates under a lock only docnum's owner can take: the second
    # definition waits for the first to commit, then sees its template and is refused.
    first, second = connect(), connect(autocommit=True)
    define(first, "AAA", "GL{SEQ:3}")
    waiting = in_thread(lambda: expect_error("NB006", lambda: define(second, "BBB", "GL0{SEQ}")))
    assert wait_until_blocked(db, second.info.backend_pid) == [first.info.backend_pid]
    first.commit()
    assert "AAA" in (waiting.result(timeout=10).diag.message_detail or "")
    assert db.execute("SELECT array_agg(code) FROM docnum.document_type").fetchone() == (["AAA"],)


# --- Former templates ---------------------------------------------------------------------------------------


def test_a_former_template_of_another_type_still_counts(db: Conn) -> None:
    define(db, "AAA", "OLD-{SEQ}")
    assert next_number(db, "AAA") == "OLD-1"
    alter(db, "AAA", format="{TYPE}-{SEQ}", reason="house style")
    before = footprint(db)
    # OLD-1 is in the ledger for AAA; BBB's value 1 would be OLD-001, but its value 1000 would be OLD-1000,
    # a number AAA's former template renders too.
    error = expect_error("NB006", lambda: define(db, "BBB", "OLD-{SEQ:3}"))
    assert "former" in (error.diag.message_detail or "") and "OLD-{SEQ}" in (error.diag.message_detail or "")
    assert footprint(db) == before


def test_a_type_may_change_only_the_padding_of_a_template_its_new_one_meets(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{SEQ:2}", max_value=10_000)
    for _ in range(3):
        next_number(db, "COR")
    # Same text around {SEQ}: a shared text (COR-100) is the same value under both.
    assert alter(db, "COR", format="{TYPE}-{SEQ:3}")["format"] == "{TYPE}-{SEQ:3}"
    assert next_number(db, "COR") == "COR-004"
    before = footprint(db)
    # COR-1{SEQ:2} renders COR-123 for value 23, which COR-{SEQ:2} rendered for value 123.
    error = expect_error("NB006", lambda: alter(db, "COR", format="{TYPE}-1{SEQ:2}"))
    assert "former" in (error.diag.message_detail or "") or "current" in (error.diag.message_detail or "")
    assert footprint(db) == before
    # A template no earlier one can meet is fine.
    assert alter(db, "COR", format="{TYPE}/{SEQ:4}")["format"] == "{TYPE}/{SEQ:4}"
    assert next_number(db, "COR") == "COR/0005"
    assert validate(db) == []


# --- {YY} ---------------------------------------------------------------------------------------------------


def test_a_resetting_yy_type_refuses_years_outside_its_century(db: Conn) -> None:
    define(db, "YYR", "{TYPE}/{YY}/{SEQ:3}", scope="YEARLY")
    assert next_number(db, "YYR", document_date=dt.date(2000, 1, 1)) == "YYR/00/001"
    assert next_number(db, "YYR", document_date=dt.date(2099, 12, 31)) == "YYR/99/001"
    before = footprint(db)
    for day in [dt.date(1999, 12, 31), dt.date(2100, 1, 1), dt.date(1000, 1, 1), dt.date(9999, 12, 31)]:
        error = expect_error("NB006", lambda d=day: next_number(db, "YYR", document_date=d))  # type: ignore[misc]
        assert "{YY}" in (error.diag.message_detail or "")
    assert footprint(db) == before
    assert validate(db) == []


def test_a_monthly_yy_type_refuses_years_outside_its_century(db: Conn) -> None:
    define(db, "YYM", "{TYPE}{YY}{MM}-{SEQ:3}", scope="MONTHLY")
    assert next_number(db, "YYM", document_date=dt.date(2025, 2, 1)) == "YYM2502-001"
    expect_error("NB006", lambda: next_number(db, "YYM", document_date=dt.date(1925, 2, 1)))


def test_a_never_resetting_yy_type_numbers_any_year_and_reads_it_back(db: Conn) -> None:
    # One counter: its values alone tell the numbers apart, whatever century the two digits stand for.
    define(db, "YYN", "{TYPE}/{YY}/{SEQ:3}")
    assert next_number(db, "YYN", document_date=dt.date(1999, 5, 6)) == "YYN/99/001"
    assert next_number(db, "YYN", document_date=dt.date(2099, 5, 6)) == "YYN/99/002"
    assert read_back(db, "YYN", "YYN/99/001") == ("", "", 1)
    assert validate(db) == []


def test_alter_type_refuses_yy_over_a_counter_of_another_century(db: Conn) -> None:
    define(db, "YYA", "{TYPE}/{YYYY}/{SEQ:3}", scope="YEARLY")
    next_number(db, "YYA", document_date=dt.date(1999, 5, 6))
    before = footprint(db)
    error = expect_error("NB006", lambda: alter(db, "YYA", format="{TYPE}/{YY}/{SEQ:3}"))
    assert "1999" in (error.diag.message_primary or "")
    assert footprint(db) == before


# --- Error messages stay small ------------------------------------------------------------------------------


def test_errors_quote_a_bounded_part_of_what_they_were_given(db: Conn) -> None:
    huge = "{TYPE}-" + "x" * 10_000_000 + "{SEQ}"
    define(db, "AAA", "{TYPE}-" + "y" * 150 + "{SEQ}")
    cases = [
        lambda: define(db, "BBB", huge),
        lambda: define(db, "BBB", "{TYPE}-{" + "Q" * 150 + "}-{SEQ}"),
        lambda: define(db, "BBB", "{TYPE}-{SEQ}", scope="x" * 100_000),
        lambda: define(db, "BBB", "{TYPE}-{SEQ}", reset="x" * 100_000),
        lambda: define(db, "BBB", "AAA-" + "y" * 150 + "{SEQ:2}"),
        lambda: define(db, "BBB", "{SCOPE}0{SEQ}" + "z" * 150, scope="PROJECT"),
        lambda: alter(db, "AAA", format=huge),
    ]
    for action in cases:
        error = expect_error("NB006", action)
        text = (error.diag.message_primary or "") + (error.diag.message_detail or "")
        assert len(text) < 600, text[:200]


# --- The property: equal text implies the same counter and value --------------------------------------------

CODES = ["A", "AB", "A1", "GL", "OV", "B"]
# Few characters, many of them digits: literals, codes and scope values that can imitate each other's numbers.
LITERAL = st.one_of(
    st.sampled_from(["0", "1", "9", "00", "-", "/", "A"]), st.text(alphabet="A-1/09G", min_size=1, max_size=3)
)
FIXED_TOKEN = st.sampled_from(["{TYPE}", "{YYYY}", "{YY}", "{MM}", "{DD}"])
SEQ_TOKEN = st.sampled_from(["{SEQ}", "{SEQ:1}", "{SEQ:2}", "{SEQ:3}", "{SEQ:4}"])
PIECES = st.lists(st.one_of(LITERAL, FIXED_TOKEN), max_size=2)
SCOPES = st.lists(st.text(alphabet="A-1/09", min_size=1, max_size=3), min_size=1, max_size=3, unique=True)
DATES = [
    dt.date(1999, 12, 31),
    dt.date(2000, 1, 1),
    dt.date(2025, 3, 4),
    dt.date(2099, 10, 30),
    dt.date(2100, 2, 1),
]
VALUES = [1, 9, 10, 11, 19, 99, 100, 101, 1000, 10_000, 100_001, 123_456_789]


@st.composite
def type_specs(draw: st.DrawFn) -> list[tuple[str, str, str, str]]:
    """2 to 4 (code, format, scope, reset): pieces around one {SEQ}, and half the time a {SCOPE} before or
    after it with a few pieces (often digits) in between."""
    specs = []
    codes = draw(st.lists(st.sampled_from(CODES), min_size=2, max_size=4, unique=True))
    for code in codes:
        seq = draw(SEQ_TOKEN)
        middle = seq
        if draw(st.booleans()):
            between = "".join(draw(PIECES))
            middle = "{SCOPE}" + between + seq if draw(st.booleans()) else seq + between + "{SCOPE}"
        template = "".join(draw(PIECES)) + middle + "".join(draw(PIECES))
        scope = "PROJECT" if "{SCOPE}" in template else "GLOBAL"
        resets = ["NEVER"]
        if "{YYYY}" in template or "{YY}" in template:
            resets.append("YEARLY")
            if "{MM}" in template:
                resets.append("MONTHLY")
        specs.append((code, template, scope, draw(st.sampled_from(resets))))
    return specs


RENDER_AND_PARSE = """
WITH sample AS (
    SELECT * FROM unnest(%(codes)s::text[], %(scopes)s::text[], %(dates)s::date[], %(values)s::bigint[])
                  AS s(code, scope_value, document_date, sequence_value)
), rendered AS (
    SELECT s.*, docnum._period(t.reset, s.document_date) AS period,
           docnum._fill(t.render_head, s.scope_value, s.document_date)
           || docnum._seq_text(s.sequence_value, t.seq_width)
           || docnum._fill(t.render_tail, s.scope_value, s.document_date) AS document_number
      FROM sample s JOIN docnum.document_type t ON t.code = s.code
)
SELECT r.code, r.scope_value, r.period, r.sequence_value, r.document_number,
       t.code AS reader, p.scope_value AS read_scope, p.period AS read_period, p.sequence_value AS read_value
  FROM rendered r CROSS JOIN docnum.document_type t CROSS JOIN LATERAL docnum._parse(t, r.document_number) p
"""


@settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=type_specs(), scopes=SCOPES)
def test_accepted_templates_render_each_number_once(
    db: Conn, specs: list[tuple[str, str, str, str]], scopes: list[str]
) -> None:
    with db.transaction(force_rollback=True):
        accepted: dict[str, tuple[str, str, str]] = {}
        for code, template, scope, reset in specs:
            try:
                with db.transaction():
                    define(db, code, template, scope=scope, reset=reset, max_value=999_999_999_999)
            except psycopg.Error as error:
                assert error.sqlstate == "NB006", f"{template}: {error}"
                continue
            accepted[code] = (template, scope, reset)
        samples = []
        for code, (template, scope, reset) in accepted.items():
            for scope_value in scopes if scope == "PROJECT" else [""]:
                for day in DATES:
                    if reset != "NEVER" and "{YY}" in template and not 2000 <= day.year <= 2099:
                        continue  # refused at allocation (test above)
                    samples += [(code, scope_value, day, value) for value in VALUES]
        if not samples:
            return
        columns = list(zip(*samples, strict=True))
        with db.cursor(row_factory=dict_row) as cur:
            cur.execute(
                RENDER_AND_PARSE,
                {
                    "codes": list(columns[0]),
                    "scopes": list(columns[1]),
                    "dates": list(columns[2]),
                    "values": list(columns[3]),
                },
            )
            rows = cur.fetchall()

    owners: dict[str, tuple[str, str, str, int]] = {}
    for row in rows:
        key = (row["code"], row["scope_value"], row["period"], row["sequence_value"])
        text = row["document_number"]
        # Equal text implies equal type, counter and value.
        assert owners.setdefault(text, key) == key, f"{text!r} is both {owners[text]} and {key}: {accepted}"
        read = (row["read_scope"], row["read_period"], row["read_value"])
        if row["reader"] == row["code"]:
            # Every number reads back through its own type's template as exactly its counter and value.
            assert read == key[1:], f"{text!r} of {key} reads back as {read}: {accepted[row['code']]}"
        else:
            # No other type can render it (its parse finds no number of its own that renders this text).
            assert read[2] is None, f"{text!r} of {key} is also {row['reader']} {read}: {accepted}"
