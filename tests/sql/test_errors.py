"""Every error code of the contract, provoked through the public functions.

Each failure must carry its SQLSTATE, a message, a DETAIL and a HINT (helpers.expect_error), and must leave
nothing behind: the row counts of every docnum table and the counter values are compared before and after.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

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
Connect = Callable[..., Conn]


@pytest.fixture
def types(db: Conn) -> Conn:
    """A GLOBAL type COR and a PROJECT type RFA, each with one number issued."""
    define(db, "COR", "{TYPE}-{SEQ:5}")
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    next_number(db, "COR")
    next_number(db, "RFA", scope="PRJ-7")
    return db


# --- NB001 config not found ---------------------------------------------------------------------------------


def test_nb001_unknown_document_type(types: Conn, subtests: pytest.Subtests) -> None:
    db = types
    before = footprint(db)
    for function, extra in (("reserve_number", {}), ("next_number", {}), ("alter_type", {"max_value": 5})):
        with subtests.test(function=function):
            error = expect_error(
                "NB001",
                lambda f=function, x=extra: call(db, f, document_type="NOPE", **x),  # type: ignore[misc]
            )
            assert "NOPE" in str(error)
            assert footprint(db) == before


def test_nb001_codes_are_case_sensitive(types: Conn) -> None:
    expect_error("NB001", lambda: next_number(types, "cor"))


# --- NB002 sequence exhausted, and the warning before it ----------------------------------------------------


def test_nb002_when_the_counter_would_pass_max_value(db: Conn) -> None:
    define(db, "ONE", "{TYPE}-{SEQ:1}")
    numbers = [next_number(db, "ONE") for _ in range(9)]
    assert numbers[-1] == "ONE-9"
    before = footprint(db)
    expect_error("NB002", lambda: next_number(db, "ONE"))
    expect_error("NB002", lambda: reserve(db, "ONE"))
    assert footprint(db) == before
    # The remedy: raise max_value; numbering resumes with the next value, nothing skipped.
    call(db, "alter_type", document_type="ONE", max_value=99)
    assert next_number(db, "ONE") == "ONE-10"


def test_nb002_is_per_counter(db: Conn) -> None:
    define(db, "CAP", "{SCOPE}/{TYPE}/{SEQ:1}", scope="PROJECT", max_value=2)
    next_number(db, "CAP", scope="A")
    next_number(db, "CAP", scope="A")
    expect_error("NB002", lambda: next_number(db, "CAP", scope="A"))
    assert next_number(db, "CAP", scope="B") == "B/CAP/1"


def collect_notices(conn: Conn) -> list[tuple[str, str]]:
    """(severity, message) of every notice the server sends `conn` from now on."""
    notices: list[tuple[str, str]] = []
    # A Diagnostic is only valid inside the handler: copy what is needed.
    conn.add_notice_handler(lambda d: notices.append((d.severity or "", d.message_primary or "")))
    return notices


def test_warning_above_ninety_percent_of_max_value(db: Conn) -> None:
    define(db, "WRN", "{TYPE}-{SEQ:2}", max_value=20)
    notices = collect_notices(db)

    for _ in range(18):  # up to exactly 90%: no warning
        next_number(db, "WRN")
    assert notices == []

    next_number(db, "WRN")  # 19 of 20: above 90%
    reserve(db, "WRN")  # 20 of 20
    assert len(notices) == 2
    for severity, message in notices:
        assert severity == "WARNING"
        assert "WRN" in message


# --- NB003 lock timeout (see also test_concurrency) ---------------------------------------------------------


def test_nb003_lock_timeout(db: Conn, connect: Connect) -> None:
    define(db, "LCK", "{TYPE}-{SEQ:4}", lock_timeout="200 milliseconds")
    next_number(db, "LCK")
    holder = connect()
    next_number(holder, "LCK")
    waiter = connect(autocommit=True)
    waiter.execute("SET statement_timeout = '10s'")
    before = footprint(db)
    expect_error("NB003", lambda: next_number(waiter, "LCK"))
    assert footprint(db) == before
    holder.rollback()


# --- NB004 reservation expired or unknown -------------------------------------------------------------------


def test_nb004_unknown_cancelled_and_expired_reservations(types: Conn, subtests: pytest.Subtests) -> None:
    db = types
    cancelled = reserve(db, "COR")["token"]
    cancel(db, cancelled)
    swept = reserve(db, "COR", ttl="1 millisecond")["token"]
    db.execute("SELECT pg_sleep(0.01)")
    assert expire_reservations(db) == 1
    overdue = reserve(db, "COR", ttl="1 millisecond")["token"]  # past its expiry, but not swept
    db.execute("SELECT pg_sleep(0.01)")
    before = footprint(db)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("confirm of an unknown token", lambda: confirm(db, uuid.uuid4())),
        ("cancel of an unknown token", lambda: cancel(db, uuid.uuid4())),
        ("confirm of a cancelled reservation", lambda: confirm(db, cancelled)),
        ("confirm past expires_at, not yet swept", lambda: confirm(db, overdue)),
        ("confirm of an expired reservation", lambda: confirm(db, swept)),
    ]
    for label, action in cases:
        with subtests.test(msg=label):
            expect_error("NB004", action)
            assert footprint(db) == before


# --- NB005 / NB007 / NB011 ----------------------------------------------------------------------------------
# Duplicate numbers (NB005), refused manual overrides (NB007) and unknown numbers (NB011) come from the
# administration functions; test_admin.py provokes them.


# --- NB006 invalid format or argument -----------------------------------------------------------------------

BAD_ARGUMENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("NULL type", "reserve_number", {"document_type": None}),
    ("empty type", "reserve_number", {"document_type": ""}),
    ("NULL type", "next_number", {"document_type": None}),
    ("empty type", "next_number", {"document_type": ""}),
    ("scope of 65 characters", "reserve_number", {"document_type": "RFA", "scope": "P" * 65}),
    ("scope of 65 characters", "next_number", {"document_type": "RFA", "scope": "P" * 65}),
    ("scope with a newline", "reserve_number", {"document_type": "RFA", "scope": "PRJ\n7"}),
    ("scope with a tab", "next_number", {"document_type": "RFA", "scope": "PRJ\t7"}),
    ("scope with a control character", "next_number", {"document_type": "RFA", "scope": "PRJ\x017"}),
    ("scope with a leading space", "reserve_number", {"document_type": "RFA", "scope": " PRJ-7"}),
    ("scope with a trailing space", "next_number", {"document_type": "RFA", "scope": "PRJ-7 "}),
    ("missing scope", "next_number", {"document_type": "RFA"}),
    ("scope on an unscoped type", "reserve_number", {"document_type": "COR", "scope": "PRJ-7"}),
    ("negative ttl", "reserve_number", {"document_type": "COR", "ttl": "-1 minute"}),
    ("zero ttl", "reserve_number", {"document_type": "COR", "ttl": "0"}),
    ("ttl over 7 days", "reserve_number", {"document_type": "COR", "ttl": "7 days 1 second"}),
    ("ttl of a month", "reserve_number", {"document_type": "COR", "ttl": "1 month"}),
    ("array metadata", "reserve_number", {"document_type": "COR", "metadata": "[1, 2]"}),
    ("string metadata", "reserve_number", {"document_type": "COR", "metadata": '"text"'}),
    ("number metadata", "reserve_number", {"document_type": "COR", "metadata": "42"}),
    ("over-long actor", "reserve_number", {"document_type": "COR", "actor": "u" * 5000}),
    ("over-long actor", "next_number", {"document_type": "COR", "actor": "u" * 5000}),
    ("actor with a control character", "next_number", {"document_type": "COR", "actor": "u\x1b1"}),
    ("NULL token", "confirm_number", {"token": None}),
    ("NULL token", "cancel_number", {"token": None}),
]


def test_nb006_bad_arguments_write_nothing(types: Conn, subtests: pytest.Subtests) -> None:
    db = types
    before = footprint(db)
    for label, function, arguments in BAD_ARGUMENTS:
        with subtests.test(msg=f"{function}: {label}"):
            expect_error("NB006", lambda f=function, a=arguments: call(db, f, **a))  # type: ignore[misc]
            assert footprint(db) == before


def test_nb006_over_long_actor_on_confirm_and_cancel(types: Conn) -> None:
    db = types
    token = reserve(db, "COR")["token"]
    before = footprint(db)
    expect_error("NB006", lambda: confirm(db, token, actor="u" * 5000))
    expect_error("NB006", lambda: cancel(db, token, actor="u" * 5000))
    assert footprint(db) == before
    assert db.execute("SELECT state FROM docnum.ledger WHERE token = %s", (token,)).fetchone() == (
        "reserved",
    )


def test_boundary_arguments_are_accepted(types: Conn) -> None:
    db = types
    assert next_number(db, "RFA", scope="P" * 64).startswith("P" * 64 + "/RFA/")
    assert reserve(db, "COR", ttl="7 days")["document_number"] == "COR-00002"
    assert reserve(db, "COR", actor="u" * 100, metadata="{}")["document_number"] == "COR-00003"


BAD_TYPE_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("unknown scope", {"scope": "DIVISION"}),
    ("unknown reset", {"reset": "WEEKLY"}),
    ("YEARLY scope with a MONTHLY reset", {"scope": "YEARLY", "reset": "MONTHLY"}),
    ("unknown time zone", {"time_zone": "Mars/Olympus_Mons"}),
    ("NULL time zone", {"time_zone": None}),
    ("max_value 0", {"max_value": 0}),
    ("negative max_value", {"max_value": -5}),
    ("zero reservation_ttl", {"reservation_ttl": "0"}),
    ("reservation_ttl over 7 days", {"reservation_ttl": "8 days"}),
    ("lock_timeout over an hour", {"lock_timeout": "2 hours"}),
    ("negative lock_timeout", {"lock_timeout": "-1 second"}),
    ("array metadata", {"metadata": "[]"}),
    ("over-long actor", {"actor": "a" * 5000}),
]


def test_nb006_define_type_refuses_bad_settings(db: Conn, subtests: pytest.Subtests) -> None:
    before = footprint(db)
    fmt = "{TYPE}-{YYYY}-{MM}-{SEQ:4}"
    for label, settings in BAD_TYPE_SETTINGS:
        with subtests.test(msg=label):
            expect_error("NB006", lambda s=settings: define(db, "BAD", fmt, **s))  # type: ignore[misc]
            assert footprint(db) == before


def test_nb006_bad_template(db: Conn) -> None:
    before = footprint(db)
    error = expect_error("NB006", lambda: define(db, "BAD", "{TYPE}-{FOO}-{SEQ}"))
    assert "FOO" in str(error)
    assert footprint(db) == before


# --- NB008 numbering unavailable ----------------------------------------------------------------------------


def read_only_calls(token: uuid.UUID) -> list[tuple[str, Callable[[Conn], object]]]:
    return [
        ("reserve_number", lambda c: reserve(c, "COR")),
        ("next_number", lambda c: next_number(c, "COR")),
        ("next_number scoped", lambda c: next_number(c, "RFA", scope="PRJ-7")),
        ("confirm_number", lambda c: confirm(c, token)),
        ("cancel_number", lambda c: cancel(c, token)),
        ("expire_reservations", lambda c: expire_reservations(c)),
        ("define_type", lambda c: define(c, "NEW", "{TYPE}-{SEQ:4}")),
        ("alter_type", lambda c: call(c, "alter_type", document_type="COR", max_value=50)),
    ]


def test_nb008_in_a_read_only_transaction(types: Conn, connect: Connect, subtests: pytest.Subtests) -> None:
    db = types
    token = reserve(db, "COR")["token"]
    db.execute(
        "UPDATE docnum.ledger SET expires_at = issued_at + interval '1 microsecond' WHERE token = %s",
        (token,),
    )
    reserve(db, "COR", ttl="1 hour")
    before = footprint(db)
    conn = connect(autocommit=True)
    for label, action in read_only_calls(token):
        with subtests.test(msg=label):
            with pytest.raises(psycopg.Error) as failure, conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                action(conn)
            assert failure.value.sqlstate == "NB008", failure.value
            assert footprint(db) == before


def test_nb008_with_default_transaction_read_only(
    types: Conn, connect: Connect, subtests: pytest.Subtests
) -> None:
    db = types
    token = reserve(db, "COR")["token"]
    before = footprint(db)
    conn = connect(autocommit=True)
    conn.execute("SET default_transaction_read_only = on")
    for label, action in read_only_calls(token):
        with subtests.test(msg=label):
            expect_error("NB008", lambda a=action: a(conn))  # type: ignore[misc]
            assert footprint(db) == before
    conn.execute("SET default_transaction_read_only = off")
    assert next_number(conn, "COR") == "COR-00003"


def test_nb008_begin_read_only(types: Conn, connect: Connect) -> None:
    conn = connect()
    before = footprint(types)
    conn.execute("BEGIN READ ONLY")
    expect_error("NB008", lambda: reserve(conn, "COR"))
    conn.rollback()
    assert footprint(types) == before


# --- NB009 invalid state transition -------------------------------------------------------------------------


def test_nb009_invalid_state_transitions(types: Conn, subtests: pytest.Subtests) -> None:
    db = types
    token = reserve(db, "COR")["token"]
    confirm(db, token, document_ref="A-1")
    before = footprint(db)
    with subtests.test(msg="cancel of a confirmed number"):
        expect_error("NB009", lambda: cancel(db, token, reason="too late"))
        assert footprint(db) == before
    with subtests.test(msg="confirm for another document"):
        expect_error("NB009", lambda: confirm(db, token, document_ref="A-2"))
        assert footprint(db) == before


# --- NB010 type already exists ------------------------------------------------------------------------------


def test_nb010_define_type_with_another_definition(types: Conn, subtests: pytest.Subtests) -> None:
    db = types
    before = footprint(db)
    changes: list[dict[str, Any]] = [
        {"format": "{TYPE}/{SEQ:5}"},
        {"max_value": 500},
        {"time_zone": "Asia/Bangkok"},
        {"reservation_ttl": "10 minutes"},
        {"allow_manual_override": True},
        {"scope": "YEARLY", "format": "{TYPE}-{YYYY}-{SEQ:5}"},
    ]
    for change in changes:
        definition = {"format": "{TYPE}-{SEQ:5}"} | change
        with subtests.test(**change):
            expect_error("NB010", lambda d=definition: call(db, "define_type", code="COR", **d))  # type: ignore[misc]
            assert footprint(db) == before
    row = db.execute("SELECT format, max_value FROM docnum.document_type WHERE code = 'COR'").fetchone()
    assert row == ("{TYPE}-{SEQ:5}", 99_999)


# --- Durability ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["next_number", "reserve_number"])
def test_allocation_forces_synchronous_commit_for_its_transaction(
    types: Conn, connect: Connect, function: str
) -> None:
    conn = connect()
    conn.execute("SET synchronous_commit = off")
    conn.commit()
    assert conn.execute("SELECT current_setting('synchronous_commit')").fetchone() == ("off",)
    call(conn, function, document_type="COR")
    assert conn.execute("SELECT current_setting('synchronous_commit')").fetchone() == ("on",)
    conn.commit()
    # Only that transaction: the session's own setting is back afterwards.
    assert conn.execute("SELECT current_setting('synchronous_commit')").fetchone() == ("off",)
    conn.rollback()
