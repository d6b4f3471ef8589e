"""Administration through the public SQL API: override, void, void-and-replace, set_counter, alter_type as the
remedy for exhaustion (and the capacity warning), and legacy import.

Every administrative change must keep numbers unique, leave the counter where the next allocation stays
correct, explain the values it jumps over (docnum.gaps) and be audited with who and why.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

import psycopg
import psycopg.sql
import pytest

from support.admin_helpers import (
    counter_value,
    force_expiry,
    gap_values,
    gaps,
    history,
    import_numbers,
    import_row,
    last_audit,
    ledger_row,
    number_in_state,
    override,
    scalar,
    set_counter,
    state_of,
    states_by_value,
    utc,
    validate,
    void,
    void_and_replace,
)
from support.helpers import (
    audit_rows,
    call,
    define,
    expect_error,
    expire_reservations,
    footprint,
    next_number,
    reserve,
    sqlstate_of,
)

Conn = psycopg.Connection[Any]

ALL_STATES = ("reserved", "confirmed", "cancelled", "expired", "voided", "overridden", "imported")


def cor_number(value: int) -> str:
    return f"COR-{value:05d}"


@pytest.fixture
def cor(db: Conn) -> str:
    """A GLOBAL type that allows manual override, max_value 500."""
    define(db, "COR", "{TYPE}-{SEQ:5}", allow_manual_override=True, max_value=500)
    return "COR"


@pytest.fixture
def ltr(db: Conn) -> str:
    """A YEARLY type: one counter per calendar year."""
    define(db, "LTR", "{TYPE}-{YYYY}-{SEQ:5}", scope="YEARLY", allow_manual_override=True)
    return "LTR"


@pytest.fixture
def rfa(db: Conn) -> str:
    """A PROJECT type: one counter per project."""
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT", allow_manual_override=True)
    return "RFA"


# --- override_number ------------------------------------------------------------------------------


def test_override_is_refused_when_the_type_does_not_allow_it(db: Conn) -> None:
    define(db, "FIX", "{TYPE}-{SEQ:5}")
    next_number(db, "FIX")
    before = footprint(db)

    error = expect_error("NB007", lambda: override(db, "FIX", "FIX-00007"))
    assert error.diag.message_hint == "An administrator can allow manual numbers for the type."
    assert footprint(db) == before

    call(db, "alter_type", document_type="FIX", allow_manual_override=True, reason="migration week")
    assert override(db, "FIX", "FIX-00007") == "FIX-00007"


def test_override_of_a_number_the_template_does_not_produce_is_refused(
    db: Conn, cor: str, subtests: pytest.Subtests
) -> None:
    next_number(db, cor)
    before = footprint(db)
    not_numbers_of_cor = [
        "COR-0002",  # narrower than {SEQ:5}
        "COR-000002",  # padded wider than the template would write it
        "COR-00000",  # value 0
        "cor-00002",  # wrong case
        "COR-00002 ",  # trailing space
        "COR_00002",  # wrong separator
        "XYZ-00002",  # another prefix
        "COR-00501",  # above max_value 500
        "",
    ]
    for number in not_numbers_of_cor:
        with subtests.test(msg=repr(number)):
            expect_error("NB006", partial(override, db, cor, number))
    expect_error(
        "NB006", lambda: call(db, "override_number", document_type=cor, reason="x", document_number=None)
    )
    assert footprint(db) == before


def test_override_requires_a_reason(db: Conn, cor: str) -> None:
    before = footprint(db)
    expect_error("NB006", lambda: override(db, cor, cor_number(3), reason=None))
    expect_error("NB006", lambda: override(db, cor, cor_number(3), reason=""))
    assert footprint(db) == before


def test_override_of_an_existing_number_is_refused_whatever_its_state(
    db: Conn, cor: str, subtests: pytest.Subtests
) -> None:
    existing = {state: number_in_state(db, cor, state, cor_number) for state in ALL_STATES}
    assert {state: state_of(db, number) for state, number in existing.items()} == {s: s for s in ALL_STATES}
    before = footprint(db)

    for state, number in existing.items():
        with subtests.test(msg=state):
            error = expect_error("NB005", partial(override, db, cor, number))
            assert number in (error.diag.message_primary or "")
            expect_error("NB005", partial(override, db, cor, number, skip_validation=True))

    assert footprint(db) == before
    assert {state: state_of(db, number) for state, number in existing.items()} == {s: s for s in ALL_STATES}


def test_override_above_the_counter_moves_it_and_explains_the_jump(db: Conn, cor: str) -> None:
    assert [next_number(db, cor) for _ in range(2)] == [cor_number(1), cor_number(2)]

    result = override(db, cor, cor_number(10), actor="alice", reason="paper register page 12")

    assert result == cor_number(10)
    row = ledger_row(db, cor_number(10))
    assert (row["state"], row["sequence_value"], row["actor"]) == ("overridden", 10, "alice")
    assert counter_value(db, cor) == 10
    assert next_number(db, cor) == cor_number(11)
    jumped = gaps(db, document_type=cor)
    assert [(row["first_value"], row["last_value"]) for row in jumped] == [(3, 9)]
    assert {(row["explained"], row["source"], row["reason"], row["actor"]) for row in jumped} == {
        (True, "MANUAL_OVERRIDE", "paper register page 12", "alice")
    }
    assert validate(db) == []


def test_override_of_the_value_right_after_the_counter_leaves_no_gap(db: Conn, cor: str) -> None:
    next_number(db, cor)
    override(db, cor, cor_number(2))
    assert counter_value(db, cor) == 2
    assert gaps(db, document_type=cor) == []
    assert next_number(db, cor) == cor_number(3)


def test_override_below_the_counter_fills_a_gap_without_moving_it(db: Conn, cor: str) -> None:
    next_number(db, cor)
    set_counter(db, cor, 6, reason="numbers 2-6 lost in the flood")
    assert set(gap_values(db, document_type=cor)) == {2, 3, 4, 5, 6}

    override(db, cor, cor_number(4), reason="found number 4 after all")

    assert counter_value(db, cor) == 6
    assert gap_values(db, document_type=cor) == {
        2: "SET_COUNTER",
        3: "SET_COUNTER",
        5: "SET_COUNTER",
        6: "SET_COUNTER",
    }
    assert next_number(db, cor) == cor_number(7)
    assert states_by_value(db, cor) == {1: "confirmed", 4: "overridden", 7: "confirmed"}
    assert validate(db) == []


def test_override_fills_an_unexplained_gap(db: Conn, cor: str) -> None:
    next_number(db, cor)
    db.execute("UPDATE docnum.counter SET current_value = 3 WHERE document_type = 'COR'")  # lost 2 and 3
    assert gap_values(db, document_type=cor) == {2: None, 3: None}

    override(db, cor, cor_number(2), reason="number 2 was used on paper")

    assert gap_values(db, document_type=cor) == {3: None}
    assert counter_value(db, cor) == 3


def test_override_with_skip_validation_records_a_number_outside_the_template(db: Conn, cor: str) -> None:
    next_number(db, cor)
    before_counter = counter_value(db, cor)
    expect_error("NB006", lambda: override(db, cor, "COR 17/b (legacy)"))

    assert override(db, cor, "COR 17/b (legacy)", skip_validation=True, reason="old ledger book") == (
        "COR 17/b (legacy)"
    )

    row = ledger_row(db, "COR 17/b (legacy)")
    assert (row["state"], row["counter_id"], row["sequence_value"]) == ("overridden", None, None)
    assert counter_value(db, cor) == before_counter
    assert next_number(db, cor) == cor_number(2)
    expect_error("NB005", lambda: override(db, cor, "COR 17/b (legacy)", skip_validation=True))
    assert validate(db) == []


def test_override_with_skip_validation_still_counts_a_number_that_parses(db: Conn, cor: str) -> None:
    next_number(db, cor)
    override(db, cor, cor_number(9), skip_validation=True)
    assert ledger_row(db, cor_number(9))["sequence_value"] == 9
    assert counter_value(db, cor) == 9
    assert next_number(db, cor) == cor_number(10)


def test_override_is_audited_as_manual_override_with_its_reason(db: Conn, cor: str) -> None:
    next_number(db, cor)
    override(db, cor, cor_number(4), actor="alice", reason="typed by hand in 2019")

    audit = last_audit(db, "MANUAL_OVERRIDE")
    assert (audit["document_type"], audit["document_number"], audit["actor"]) == (
        "COR",
        cor_number(4),
        "alice",
    )
    assert audit["metadata"]["reason"] == "typed by hand in 2019"
    assert audit["old_value"]["counter_value"] == 1
    assert audit["new_value"]["state"] == "overridden"
    assert audit["new_value"]["sequence_value"] == 4
    assert audit["new_value"]["counter_value"] == 4
    assert audit["session_user_name"]


def test_override_reads_the_scope_of_a_project_type(db: Conn, rfa: str) -> None:
    assert next_number(db, rfa, scope="P7") == "P7/RFA/0001"

    override(db, rfa, "P7/RFA/0005")

    assert counter_value(db, rfa, scope="P7") == 5
    assert counter_value(db, rfa, scope="P8") is None
    assert next_number(db, rfa, scope="P7") == "P7/RFA/0006"
    assert next_number(db, rfa, scope="P8") == "P8/RFA/0001"
    override(db, rfa, "NEW-1/RFA/0003")  # a scope nobody allocated in yet gets its counter
    assert counter_value(db, rfa, scope="NEW-1") == 3
    assert set(gap_values(db, document_type=rfa, scope="NEW-1")) == {1, 2}
    expect_error("NB006", lambda: override(db, rfa, " P7/RFA/0009"))  # a scope value never has edge spaces


def test_override_reads_the_period_of_a_monthly_type(db: Conn) -> None:
    define(db, "BOQ", "{TYPE}-{YYYY}-{MM}-{SEQ:4}", scope="MONTHLY", allow_manual_override=True)

    override(db, "BOQ", "BOQ-2024-02-0007")

    assert counter_value(db, "BOQ", period="2024-02") == 7
    assert db.execute("SELECT count(*) FROM docnum.counter WHERE document_type = 'BOQ'").fetchone() == (1,)
    assert next_number(db, "BOQ", document_date=dt.date(2024, 2, 29)) == "BOQ-2024-02-0008"
    assert next_number(db, "BOQ", document_date=dt.date(2024, 3, 1)) == "BOQ-2024-03-0001"
    expect_error("NB006", lambda: override(db, "BOQ", "BOQ-2024-13-0001"))
    expect_error("NB006", lambda: override(db, "BOQ", "BOQ-2024-2-0001"))


def test_override_reads_the_year_of_a_yearly_type(db: Conn, ltr: str) -> None:
    override(db, ltr, "LTR-2021-00003")
    assert counter_value(db, ltr, period="2021") == 3
    assert next_number(db, ltr, document_date=dt.date(2021, 12, 31)) == "LTR-2021-00004"


def test_override_of_a_value_held_under_an_earlier_template_is_refused(db: Conn, cor: str) -> None:
    next_number(db, cor)  # COR-00001
    call(db, "alter_type", document_type=cor, format="{TYPE}/{SEQ:5}", reason="new house style")
    before = footprint(db)

    expect_error("NB005", lambda: override(db, cor, "COR/00001"))

    assert footprint(db) == before
    assert override(db, cor, "COR/00002") == "COR/00002"


# --- void_number ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["confirmed", "overridden", "imported"])
def test_void_takes_a_number_out_of_use(db: Conn, cor: str, state: str) -> None:
    number = number_in_state(db, cor, state, cor_number)

    assert void(db, number, actor="carol", reason="issued by mistake") == number

    row = ledger_row(db, number)
    assert (row["state"], row["void_reason"]) == ("voided", "issued by mistake")
    assert row["voided_at"] is not None
    audit = last_audit(db, "VOID")
    assert (audit["document_number"], audit["actor"]) == (number, "carol")
    assert (audit["old_value"], audit["new_value"]) == ({"state": state}, {"state": "voided"})
    assert audit["metadata"] == {"reason": "issued by mistake"}
    assert validate(db) == []


def test_a_voided_number_is_never_issued_again(db: Conn, cor: str) -> None:
    for _ in range(3):
        next_number(db, cor)
    voided = void(db, cor_number(2))
    set_counter(db, cor, 0, reason="even with the counter moved back")

    assert next_number(db, cor) == cor_number(4)
    expect_error("NB005", lambda: override(db, cor, voided))
    (result,) = import_numbers(db, [import_row(cor, voided)])
    assert result["status"] == "rejected"
    expect_error("NB009", lambda: void(db, voided))
    assert state_of(db, voided) == "voided"


@pytest.mark.parametrize("function", [void, void_and_replace])
def test_void_refuses_a_number_that_is_not_in_use(db: Conn, cor: str, function: Any) -> None:
    out_of_use = {
        state: number_in_state(db, cor, state, cor_number)
        for state in ("reserved", "cancelled", "expired", "voided")
    }
    before = footprint(db)

    for state, number in out_of_use.items():
        error = expect_error("NB009", partial(function, db, number))
        assert state in (error.diag.message_primary or "")

    assert footprint(db) == before
    assert {state: state_of(db, number) for state, number in out_of_use.items()} == {
        state: state for state in out_of_use
    }


@pytest.mark.parametrize("function", [void, void_and_replace])
def test_void_of_a_number_never_issued_is_nb011(db: Conn, cor: str, function: Any) -> None:
    next_number(db, cor)
    before = footprint(db)
    expect_error("NB011", lambda: function(db, cor_number(2)))
    expect_error("NB011", lambda: function(db, "nothing like it"))
    assert footprint(db) == before


@pytest.mark.parametrize("function", [void, void_and_replace])
def test_void_requires_a_reason(db: Conn, cor: str, function: Any) -> None:
    number = next_number(db, cor)
    before = footprint(db)
    expect_error("NB006", lambda: function(db, number, reason=None))
    expect_error("NB006", lambda: function(db, number, reason=""))
    assert footprint(db) == before
    assert state_of(db, number) == "confirmed"


# --- void_and_replace -----------------------------------------------------------------------------


def test_void_and_replace_issues_the_replacement_in_the_original_year(db: Conn, ltr: str) -> None:
    in_2024 = dt.date(2024, 6, 1)
    original = next_number(db, ltr, document_date=in_2024, document_ref="contract 88")
    next_number(db, ltr, document_date=in_2024)
    today = next_number(db, ltr)  # this year's counter, whatever this year is
    this_year = today.split("-")[1]
    assert this_year != "2024"

    replacement = void_and_replace(db, original, actor="dave", reason="wrong recipient")

    assert replacement == "LTR-2024-00003"
    old, new = ledger_row(db, original), ledger_row(db, replacement)
    assert (old["state"], old["replaced_by_number_id"]) == ("voided", new["number_id"])
    assert (new["state"], new["replaces_number_id"]) == ("confirmed", old["number_id"])
    assert new["counter_id"] == old["counter_id"]
    assert new["document_ref"] == "contract 88"
    assert counter_value(db, ltr, period="2024") == 3
    assert counter_value(db, ltr, period=this_year) == 1
    assert validate(db) == []


def test_void_and_replace_keeps_the_scope_and_the_period(db: Conn) -> None:
    define(db, "SUB", "{SCOPE}/{TYPE}/{YYYY}/{SEQ:3}", scope="PROJECT", reset="YEARLY")
    in_2023 = dt.date(2023, 5, 5)
    original = next_number(db, "SUB", scope="P1", document_date=in_2023)
    next_number(db, "SUB", scope="P1", document_date=in_2023)
    next_number(db, "SUB", scope="P2", document_date=in_2023)

    assert void_and_replace(db, original) == "P1/SUB/2023/003"
    assert counter_value(db, "SUB", scope="P2", period="2023") == 1


def test_void_and_replace_is_audited_and_history_follows_the_link(db: Conn, cor: str) -> None:
    original = next_number(db, cor, actor="erin")
    replacement = void_and_replace(db, original, actor="frank", reason="duplicate invoice")
    expected = [("NEXT", original), ("VOID", original), ("REPLACE", replacement), ("REPLACE_LINK", original)]

    assert history(db, original) == expected
    assert history(db, replacement) == expected
    replace = last_audit(db, "REPLACE")
    assert (replace["actor"], replace["metadata"]) == (
        "frank",
        {"replaces": original, "reason": "duplicate invoice"},
    )
    link = last_audit(db, "REPLACE_LINK")
    assert (link["new_value"], link["metadata"]) == (
        {"replaced_by": replacement},
        {"reason": "duplicate invoice"},
    )

    # A replacement replaced in turn: the history of the first number reaches the whole chain.
    third = void_and_replace(db, replacement)
    operations = [operation for operation, _ in history(db, original)]
    assert operations == ["NEXT", "VOID", "REPLACE", "REPLACE_LINK", "VOID", "REPLACE", "REPLACE_LINK"]
    assert history(db, third) == history(db, original)


def test_void_and_replace_of_a_number_without_a_counter_changes_nothing(db: Conn, cor: str) -> None:
    override(db, cor, "COR handwritten 3", skip_validation=True)
    before = footprint(db)

    expect_error("NB006", lambda: void_and_replace(db, "COR handwritten 3"))

    assert footprint(db) == before
    assert state_of(db, "COR handwritten 3") == "overridden"
    assert void(db, "COR handwritten 3") == "COR handwritten 3"


def test_void_and_replace_of_a_number_written_with_an_earlier_template(db: Conn, ltr: str) -> None:
    original = next_number(db, ltr, document_date=dt.date(2024, 11, 30))
    call(db, "alter_type", document_type=ltr, format="{TYPE}/{YYYY}/{SEQ:5}", reason="new house style")

    assert void_and_replace(db, original) == "LTR/2024/00002"  # still the 2024 counter
    assert state_of(db, original) == "voided"
    assert validate(db) == []


def test_void_and_replace_in_an_exhausted_counter_keeps_the_original(db: Conn) -> None:
    define(db, "TIN", "{TYPE}-{SEQ:1}")
    for _ in range(9):
        next_number(db, "TIN")
    before = footprint(db)

    expect_error("NB002", lambda: void_and_replace(db, "TIN-3"))

    assert footprint(db) == before
    assert state_of(db, "TIN-3") == "confirmed"


# --- set_counter ----------------------------------------------------------------------------------


def test_set_counter_forward_records_the_skipped_values(db: Conn, cor: str) -> None:
    next_number(db, cor)

    assert set_counter(db, cor, 2, actor="gina", reason="number 2 torn out") == 2
    assert set_counter(db, cor, 5, actor="gina", reason="numbers 3-5 torn out") == 5

    assert next_number(db, cor) == cor_number(6)
    assert [
        (row["first_value"], row["last_value"], row["source"], row["reason"], row["actor"])
        for row in gaps(db, document_type=cor)
    ] == [
        (2, 2, "SET_COUNTER", "number 2 torn out", "gina"),
        (3, 5, "SET_COUNTER", "numbers 3-5 torn out", "gina"),
    ]
    audit = last_audit(db, "SET_COUNTER")
    assert (audit["document_type"], audit["actor"]) == ("COR", "gina")
    assert (audit["old_value"], audit["new_value"]) == (
        {"period": "", "value": 2},
        {"period": "", "value": 5},
    )
    assert audit["metadata"] == {"reason": "numbers 3-5 torn out"}
    assert validate(db) == []


def test_set_counter_backward_is_audited_and_never_reissues_a_held_value(db: Conn, cor: str) -> None:
    for _ in range(5):
        next_number(db, cor)
    override(db, cor, cor_number(7))  # 6 jumped over, explained

    assert set_counter(db, cor, 2, actor="hank", reason="restart after restore test") == 2

    audit = last_audit(db, "SET_COUNTER")
    assert (audit["old_value"]["value"], audit["new_value"]["value"], audit["actor"]) == (7, 2, "hank")
    assert audit["metadata"] == {"reason": "restart after restore test"}
    assert {row["check_name"] for row in validate(db)} == {"counter_below_ledger"}

    # 3, 4, 5 and 7 are held; 6 never had a ledger row, so it is the first free value.
    assert next_number(db, cor) == cor_number(6)
    assert next_number(db, cor) == cor_number(8)
    assert states_by_value(db, cor) == {
        1: "confirmed",
        2: "confirmed",
        3: "confirmed",
        4: "confirmed",
        5: "confirmed",
        6: "confirmed",
        7: "overridden",
        8: "confirmed",
    }
    assert counter_value(db, cor) == 8
    assert validate(db) == []


def test_set_counter_backward_then_reservations_skip_held_values(db: Conn, cor: str) -> None:
    for _ in range(3):
        next_number(db, cor)
    set_counter(db, cor, 0, reason="back to zero")
    assert reserve(db, cor)["sequence_value"] == 4


def test_set_counter_refuses_bad_arguments(
    db: Conn, cor: str, ltr: str, rfa: str, subtests: pytest.Subtests
) -> None:
    define(db, "BOQ", "{TYPE}-{YYYY}-{MM}-{SEQ:4}", scope="MONTHLY")
    next_number(db, cor)
    before = footprint(db)

    bad: list[tuple[str, dict[str, Any]]] = [
        ("NB006", {"document_type": cor, "value": -1}),
        ("NB006", {"document_type": cor, "value": 501}),  # above max_value 500
        ("NB006", {"document_type": cor, "value": None}),
        ("NB006", {"document_type": cor, "value": 3, "reason": None}),
        ("NB006", {"document_type": cor, "value": 3, "period": "2025"}),  # a NEVER type has no period
        ("NB006", {"document_type": cor, "value": 3, "scope": "P1"}),  # a GLOBAL type has no scope
        ("NB006", {"document_type": ltr, "value": 3, "period": "25"}),
        ("NB006", {"document_type": ltr, "value": 3, "period": "2025-01"}),
        ("NB006", {"document_type": "BOQ", "value": 3, "period": "2025-13"}),
        ("NB006", {"document_type": "BOQ", "value": 3, "period": "2025"}),
        ("NB006", {"document_type": rfa, "value": 3}),  # a PROJECT type needs its scope
        ("NB006", {"document_type": None, "value": 3}),
        ("NB001", {"document_type": "NOPE", "value": 3}),
    ]
    for code, arguments in bad:
        arguments.setdefault("reason", "test")
        with subtests.test(msg=repr(arguments)):
            expect_error(code, partial(call, db, "set_counter", **arguments))

    assert footprint(db) == before


def test_set_counter_of_a_given_period_and_scope(db: Conn, ltr: str, rfa: str) -> None:
    assert set_counter(db, ltr, 5, period="2023") == 5
    assert next_number(db, ltr, document_date=dt.date(2023, 6, 1)) == "LTR-2023-00006"
    assert db.execute("SELECT count(*) FROM docnum.counter WHERE document_type = 'LTR'").fetchone() == (1,)

    set_counter(db, rfa, 20, scope="P9")
    assert next_number(db, rfa, scope="P9") == "P9/RFA/0021"
    assert next_number(db, rfa, scope="P1") == "P1/RFA/0001"

    this_year = str(scalar(db, "SELECT extract(year FROM now() AT TIME ZONE 'UTC')::int"))
    set_counter(db, ltr, 7)  # period omitted: the current year
    assert counter_value(db, ltr, period=this_year) == 7


# --- alter_type, exhaustion and the capacity warning ----------------------------------------------


def test_raising_max_value_is_the_remedy_for_an_exhausted_counter(db: Conn) -> None:
    define(db, "TIN", "{TYPE}-{SEQ:1}")
    assert [next_number(db, "TIN") for _ in range(9)][-1] == "TIN-9"
    before = footprint(db)

    expect_error("NB002", lambda: next_number(db, "TIN"))
    expect_error("NB002", lambda: reserve(db, "TIN"))
    assert footprint(db) == before

    call(db, "alter_type", document_type="TIN", max_value=99, actor="ivan", reason="more letters this year")

    assert next_number(db, "TIN") == "TIN-10"  # wider than {SEQ:1}, never truncated
    audit = last_audit(db, "ALTER_TYPE")
    assert (audit["old_value"]["max_value"], audit["new_value"]["max_value"]) == (9, 99)
    assert (audit["actor"], audit["metadata"]) == ("ivan", {"reason": "more letters this year"})
    assert validate(db) == []


def test_max_value_cannot_drop_below_a_counter(db: Conn, cor: str) -> None:
    set_counter(db, cor, 40)
    expect_error("NB006", lambda: call(db, "alter_type", document_type=cor, max_value=39))
    call(db, "alter_type", document_type=cor, max_value=40)
    expect_error("NB002", lambda: next_number(db, cor))


def warnings_during(conn: Conn, action: Any) -> list[str]:
    """The WARNING messages the server sends while `action` runs."""
    messages: list[str] = []

    def handler(diagnostic: psycopg.errors.Diagnostic) -> None:
        if diagnostic.severity_nonlocalized == "WARNING":
            messages.append(diagnostic.message_primary or "")

    conn.add_notice_handler(handler)
    try:
        action()
    finally:
        conn.remove_notice_handler(handler)
    return messages


def test_allocation_past_90_percent_warns_with_the_type(db: Conn) -> None:
    define(db, "CAP", "{TYPE}-{SEQ:2}", max_value=20)
    set_counter(db, "CAP", 16)
    assert warnings_during(db, lambda: next_number(db, "CAP")) == []  # 17 of 20

    set_counter(db, "CAP", 18)
    messages = warnings_during(db, lambda: next_number(db, "CAP"))  # 19 of 20
    assert len(messages) == 1
    assert "CAP" in messages[0]

    assert len(warnings_during(db, lambda: reserve(db, "CAP"))) == 1  # 20 of 20
    call(db, "alter_type", document_type="CAP", max_value=99)
    assert warnings_during(db, lambda: next_number(db, "CAP")) == []  # 21 of 99


def test_capacity_warning_states_the_utilisation_as_a_percentage(db: Conn) -> None:
    define(db, "CAP", "{TYPE}-{SEQ:2}", max_value=20)
    set_counter(db, "CAP", 18)
    (message,) = warnings_during(db, lambda: next_number(db, "CAP"))  # 19 of 20
    assert "95.0%" in message, message


def test_allocation_on_an_unpadded_template_passes_the_capacity_check(db: Conn) -> None:
    # {SEQ} without a width has no natural limit: max_value defaults to the largest bigint.
    define(db, "UNP", "{TYPE}-{SEQ}")
    assert next_number(db, "UNP") == "UNP-1"
    assert reserve(db, "UNP")["document_number"] == "UNP-2"


# --- import_numbers -------------------------------------------------------------------------------


def test_import_reports_every_row_with_its_reason(db: Conn, cor: str, ltr: str) -> None:
    next_number(db, cor)  # COR-00001 exists
    rows: list[Any] = [
        import_row(cor, "COR-00005", created_at="2019-05-01T10:00:00Z"),  # 1 imported
        import_row(cor, "COR-5"),  # 2 bad format
        import_row("NOPE", "NOPE-00001"),  # 3 unknown type
        import_row(cor, "COR-00005"),  # 4 duplicate of row 1
        import_row(cor, "COR-00001"),  # 5 already issued
        import_row(cor, "COR-00006", created_at="2019-02-30"),  # 6 impossible date
        import_row(cor, "COR-00007", created_at="last tuesday"),  # 7 not a timestamp
        {"document_type": cor},  # 8 no number
        42,  # 9 not an object
        import_row(ltr, "LTR-2019-00003"),  # 10 imported
        import_row(cor, "COR-00999"),  # 11 above max_value 500
    ]

    results = import_numbers(db, rows, actor="migration")

    assert [(r["row_number"], r["status"]) for r in results] == [
        (1, "imported"),
        (2, "rejected"),
        (3, "rejected"),
        (4, "rejected"),
        (5, "rejected"),
        (6, "rejected"),
        (7, "rejected"),
        (8, "rejected"),
        (9, "rejected"),
        (10, "imported"),
        (11, "rejected"),
    ]
    details = {r["row_number"]: r["detail"] or "" for r in results}
    assert details[1] == "" and details[10] == ""
    assert "format" in details[2]
    assert "unknown document type" in details[3]
    assert "duplicate of row 1" in details[4]
    assert "duplicate" in details[5] and "confirmed" in details[5]
    assert "created_at" in details[6] and "created_at" in details[7]
    assert "required" in details[8] and "required" in details[9]
    assert "max_value" in details[11]
    assert [(r["document_type"], r["document_number"]) for r in results][:2] == [
        (cor, "COR-00005"),
        (cor, "COR-5"),
    ]

    imported = db.execute("SELECT document_number FROM docnum.ledger WHERE state = 'imported' ORDER BY 1")
    assert imported.fetchall() == [("COR-00005",), ("LTR-2019-00003",)]
    assert states_by_value(db, cor) == {1: "confirmed", 5: "imported"}


def test_import_moves_each_counter_to_its_highest_imported_value(
    db: Conn, cor: str, ltr: str, rfa: str
) -> None:
    next_number(db, cor)
    next_number(db, cor)
    results = import_numbers(
        db,
        [
            import_row(cor, "COR-00009"),
            import_row(cor, "COR-00004"),
            import_row(ltr, "LTR-2018-00002"),
            import_row(ltr, "LTR-2018-00007"),
            import_row(ltr, "LTR-2019-00001"),
            import_row(rfa, "P1/RFA/0003"),
        ],
        actor="migration",
    )
    assert {r["status"] for r in results} == {"imported"}

    assert counter_value(db, cor) == 9
    assert counter_value(db, ltr, period="2018") == 7
    assert counter_value(db, ltr, period="2019") == 1
    assert counter_value(db, rfa, scope="P1") == 3
    assert next_number(db, cor) == cor_number(10)
    assert next_number(db, ltr, document_date=dt.date(2018, 3, 3)) == "LTR-2018-00008"
    assert next_number(db, rfa, scope="P1") == "P1/RFA/0004"
    assert gap_values(db, document_type=cor) == {
        3: "IMPORT",
        5: "IMPORT",
        6: "IMPORT",
        7: "IMPORT",
        8: "IMPORT",
    }
    assert {row["reason"] for row in gaps(db)} == {"legacy import"}
    assert validate(db) == []

    # A value below the counter that nothing holds is imported where it is; the counter stays.
    (late,) = import_numbers(db, [import_row(cor, "COR-00006")])
    assert late["status"] == "imported"
    assert counter_value(db, cor) == 10
    assert set(gap_values(db, document_type=cor)) == {3, 5, 7, 8}


def test_import_run_twice_changes_nothing_the_second_time(db: Conn, cor: str, ltr: str) -> None:
    rows = [
        import_row(cor, "COR-00002", document_ref="old-2"),
        import_row(ltr, "LTR-2017-00010"),
        import_row(cor, "COR-00007", created_at="2017-01-01"),
    ]
    assert {r["status"] for r in import_numbers(db, rows)} == {"imported"}
    before = footprint(db)
    gaps_before = gaps(db)

    again = import_numbers(db, rows)

    assert [(r["row_number"], r["status"], r["detail"]) for r in again] == [
        (1, "already_present", "imported earlier"),
        (2, "already_present", "imported earlier"),
        (3, "already_present", "imported earlier"),
    ]
    assert footprint(db) == before
    assert gaps(db) == gaps_before

    # Adding one new row to the batch imports that row only.
    third = import_numbers(db, [*rows, import_row(cor, "COR-00008")])
    assert [r["status"] for r in third] == ["already_present"] * 3 + ["imported"]


def test_import_keeps_created_at_as_issued_at(db: Conn, cor: str) -> None:
    start = scalar(db, "SELECT now()")
    import_numbers(
        db,
        [
            import_row(cor, "COR-00001", created_at="2019-05-01T10:00:00Z", document_ref="INV 1"),
            import_row(cor, "COR-00002", created_at="2018-12-31 23:30:00-02:00"),
            import_row(cor, "COR-00003"),
        ],
    )
    assert ledger_row(db, "COR-00001")["issued_at"] == utc(2019, 5, 1, 10)
    assert ledger_row(db, "COR-00001")["document_ref"] == "INV 1"
    assert ledger_row(db, "COR-00002")["issued_at"] == utc(2019, 1, 1, 1, 30)
    assert ledger_row(db, "COR-00003")["issued_at"] >= start


def test_import_audits_one_import_row_per_number(db: Conn, cor: str, rfa: str) -> None:
    import_numbers(
        db,
        [import_row(cor, "COR-00003"), import_row(rfa, "P2/RFA/0004"), import_row(cor, "bad")],
        actor="migration",
    )
    audits = audit_rows(db, "operation = 'IMPORT'")
    assert sorted(
        (a["document_type"], a["document_number"], a["scope_value"], a["actor"]) for a in audits
    ) == [
        (cor, "COR-00003", None, "migration"),
        (rfa, "P2/RFA/0004", "P2", "migration"),
    ]
    assert {a["new_value"]["sequence_value"] for a in audits} == {3, 4}
    assert {a["new_value"]["state"] for a in audits} == {"imported"}
    assert validate(db) == []


def test_import_rejects_a_value_its_counter_already_holds_under_another_text(db: Conn, cor: str) -> None:
    next_number(db, cor)  # COR-00001
    call(db, "alter_type", document_type=cor, format="{TYPE}/{SEQ:5}", reason="new house style")

    (result,) = import_numbers(db, [import_row(cor, "COR/00001")])

    assert result["status"] == "rejected"
    assert "COR-00001" in result["detail"]
    assert next_number(db, cor) == "COR/00002"


def test_import_needs_a_json_array(db: Conn, cor: str) -> None:
    before = footprint(db)
    for rows in ({"document_type": cor, "document_number": "COR-00001"}, "COR-00001", None):
        expect_error("NB006", partial(import_numbers, db, rows))
    assert footprint(db) == before
    assert import_numbers(db, []) == []


def test_import_then_expire_and_reserve_keep_the_ledger_consistent(db: Conn, cor: str) -> None:
    reservation = reserve(db, cor)  # COR-00001, left to expire
    import_numbers(db, [import_row(cor, "COR-00003")])
    force_expiry(db, reservation["token"])
    assert expire_reservations(db) == 1
    assert next_number(db, cor) == cor_number(4)
    assert states_by_value(db, cor) == {1: "expired", 3: "imported", 4: "confirmed"}
    assert gap_values(db, document_type=cor) == {2: "IMPORT"}


# --- who may do what ------------------------------------------------------------------------------


def as_role(connect: Any, role: str) -> Conn:
    conn: Conn = connect(autocommit=True)
    conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(role)))
    return conn


def test_admin_role_runs_every_administration_function(db: Conn, connect: Any, cor: str) -> None:
    admin = as_role(connect, "docnum_admin")
    first = next_number(admin, cor)
    override(admin, cor, cor_number(5), actor="admin")
    void(admin, first)
    replacement = void_and_replace(admin, cor_number(5))
    set_counter(admin, cor, 20)
    (imported,) = import_numbers(admin, [import_row(cor, cor_number(30))])

    assert replacement == cor_number(6)
    assert imported["status"] == "imported"
    assert counter_value(db, cor) == 30
    assert validate(admin) == []
    assert set(gap_values(admin, document_type=cor)) == set(range(2, 5)) | set(range(7, 30))


def test_reader_reads_the_reports_but_changes_nothing(db: Conn, connect: Any, cor: str) -> None:
    number = next_number(db, cor)
    reader = as_role(connect, "docnum_reader")
    for relation in ("sequence_status", "counter_skip", "document_table"):
        reader.execute(psycopg.sql.SQL("SELECT * FROM docnum.{}").format(psycopg.sql.Identifier(relation)))
    assert validate(reader) == []
    assert gaps(reader) == []
    assert history(reader, number) == [("NEXT", number)]
    before = footprint(db)
    for action in (
        lambda: override(reader, cor, cor_number(9)),
        lambda: void(reader, number),
        lambda: void_and_replace(reader, number),
        lambda: set_counter(reader, cor, 9),
        lambda: import_numbers(reader, [import_row(cor, cor_number(9))]),
    ):
        assert sqlstate_of(action) == "42501"
    assert footprint(db) == before


def test_app_role_reads_only_the_history_of_its_numbers(db: Conn, connect: Any, cor: str) -> None:
    app = as_role(connect, "docnum_app")
    number = next_number(app, cor)
    assert history(app, number) == [("NEXT", number)]
    before = footprint(db)
    for action in (
        lambda: override(app, cor, cor_number(9)),
        lambda: void(app, number),
        lambda: void_and_replace(app, number),
        lambda: set_counter(app, cor, 9),
        lambda: import_numbers(app, [import_row(cor, cor_number(9))]),
        lambda: validate(app),
        lambda: gaps(app),
        lambda: app.execute("SELECT * FROM docnum.sequence_status"),
    ):
        assert sqlstate_of(action) == "42501"
    assert footprint(db) == before


def test_administration_is_refused_in_a_read_only_transaction(db: Conn, connect: Any, cor: str) -> None:
    number = next_number(db, cor)
    read_only = connect(autocommit=True, options="-c default_transaction_read_only=on")
    before = footprint(db)
    for action in (
        lambda: override(read_only, cor, cor_number(9)),
        lambda: void(read_only, number),
        lambda: void_and_replace(read_only, number),
        lambda: set_counter(read_only, cor, 9),
        lambda: import_numbers(read_only, [import_row(cor, cor_number(9))]),
    ):
        expect_error("NB008", action)
    assert footprint(db) == before
    assert validate(read_only) == []  # the reports still work
