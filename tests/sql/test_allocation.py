"""Reserve, confirm, cancel, expire and next_number: what each returns, and that numbering stays gapless."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.helpers import (
    audit_rows,
    cancel,
    confirm,
    define,
    expect_error,
    expire_reservations,
    footprint,
    ledger_rows,
    next_number,
    reserve,
)

Conn = psycopg.Connection[Any]


@pytest.fixture
def cor(db: Conn) -> str:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    return "COR"


def expire_now(db: Conn, token: uuid.UUID) -> None:
    """Move a reservation's expiry into the past (as the superuser), deterministically."""
    db.execute(
        "UPDATE docnum.ledger SET expires_at = issued_at + interval '1 microsecond' WHERE token = %s",
        (token,),
    )


def states(db: Conn, document_type: str) -> dict[int, str]:
    return {row["sequence_value"]: row["state"] for row in ledger_rows(db, document_type)}


# --- reserve_number -----------------------------------------------------------------------------------------


def test_reserve_returns_token_number_value_and_expiry(db: Conn, cor: str) -> None:
    with db.transaction():
        first = reserve(db, cor, actor="u1")
        now = db.execute("SELECT now(), clock_timestamp()").fetchone()
    assert now is not None
    assert set(first) == {"token", "document_number", "sequence_value", "expires_at"}
    assert isinstance(first["token"], uuid.UUID)
    assert (first["document_number"], first["sequence_value"]) == ("COR-00001", 1)
    # The default TTL is the type's reservation_ttl, 5 minutes unless defined otherwise.
    assert now[0] + dt.timedelta(minutes=5) <= first["expires_at"] <= now[1] + dt.timedelta(minutes=5)
    second = reserve(db, cor)
    assert (second["document_number"], second["sequence_value"]) == ("COR-00002", 2)
    assert second["token"] != first["token"]


def test_reserve_ttl_override(db: Conn, cor: str) -> None:
    with db.transaction():
        reservation = reserve(db, cor, ttl="30 seconds")
        now = db.execute("SELECT now(), clock_timestamp()").fetchone()
    assert now is not None
    assert now[0] + dt.timedelta(seconds=30) <= reservation["expires_at"] <= now[1] + dt.timedelta(seconds=30)


def test_reserve_uses_the_types_reservation_ttl(db: Conn) -> None:
    define(db, "LNG", "{TYPE}-{SEQ:5}", reservation_ttl="2 hours")
    with db.transaction():
        reservation = reserve(db, "LNG")
        now = db.execute("SELECT now(), clock_timestamp()").fetchone()
    assert now is not None
    assert now[0] + dt.timedelta(hours=2) <= reservation["expires_at"] <= now[1] + dt.timedelta(hours=2)


def test_reservation_ttl_counts_from_the_reservation_not_from_the_transaction_start(
    db: Conn, cor: str
) -> None:
    # An application may reserve late in a transaction it opened earlier; the caller still gets the whole TTL
    # to confirm, counted from the moment the number is handed out.
    with db.transaction():
        db.execute("SELECT pg_sleep(0.2)")
        row = db.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        reservation = reserve(db, cor, ttl="1 minute")
    assert reservation["expires_at"] >= row[0] + dt.timedelta(minutes=1)


def test_reserve_writes_a_reserved_ledger_row(db: Conn, cor: str) -> None:
    reservation = reserve(db, cor, actor="u1", metadata='{"subject": "site visit"}')
    [row] = ledger_rows(db, cor)
    assert row["state"] == "reserved"
    assert row["token"] == reservation["token"]
    assert row["document_number"] == reservation["document_number"]
    assert row["sequence_value"] == reservation["sequence_value"]
    assert row["expires_at"] == reservation["expires_at"]
    assert row["actor"] == "u1"
    assert row["metadata"] == {"subject": "site visit"}


# --- confirm_number -----------------------------------------------------------------------------------------


def test_confirm_returns_the_number_and_marks_it_confirmed(db: Conn, cor: str) -> None:
    reservation = reserve(db, cor)
    assert confirm(db, reservation["token"], actor="u2", document_ref="letter-17") == "COR-00001"
    [row] = ledger_rows(db, cor)
    assert (row["state"], row["document_ref"]) == ("confirmed", "letter-17")
    assert row["confirmed_at"] is not None


def test_confirm_is_idempotent_for_the_same_token(db: Conn, cor: str) -> None:
    token = reserve(db, cor)["token"]
    assert confirm(db, token, document_ref="letter-17") == "COR-00001"
    before = footprint(db)
    assert confirm(db, token, document_ref="letter-17") == "COR-00001"
    assert confirm(db, token) == "COR-00001"
    assert footprint(db) == before
    assert [r["operation"] for r in audit_rows(db, "document_number = 'COR-00001'")] == ["RESERVE", "CONFIRM"]


def test_confirm_with_another_document_ref_after_confirmation_is_refused(db: Conn, cor: str) -> None:
    token = reserve(db, cor)["token"]
    confirm(db, token, document_ref="letter-17")
    before = footprint(db)
    expect_error("NB009", lambda: confirm(db, token, document_ref="letter-18"))
    assert footprint(db) == before
    assert ledger_rows(db, cor)[0]["document_ref"] == "letter-17"


def test_confirm_of_an_unknown_token(db: Conn, cor: str) -> None:
    reserve(db, cor)
    before = footprint(db)
    expect_error("NB004", lambda: confirm(db, uuid.uuid4()))
    assert footprint(db) == before


def test_confirm_after_cancel_is_refused(db: Conn, cor: str) -> None:
    token = reserve(db, cor)["token"]
    cancel(db, token)
    before = footprint(db)
    expect_error("NB004", lambda: confirm(db, token))
    assert footprint(db) == before
    assert states(db, cor) == {1: "cancelled"}


def test_confirm_after_expiry_is_refused_before_any_sweep(db: Conn, cor: str) -> None:
    token = reserve(db, cor, ttl="1 millisecond")["token"]
    db.execute("SELECT pg_sleep(0.01)")
    before = footprint(db)
    expect_error("NB004", lambda: confirm(db, token))
    assert footprint(db) == before
    # The refusal did not need the sweep, and the sweep still finds the reservation afterwards.
    assert states(db, cor) == {1: "reserved"}
    assert expire_reservations(db) == 1
    expect_error("NB004", lambda: confirm(db, token))


def test_confirm_just_before_expiry_succeeds(db: Conn, cor: str) -> None:
    token = reserve(db, cor, ttl="1 minute")["token"]
    assert confirm(db, token) == "COR-00001"


# --- cancel_number ------------------------------------------------------------------------------------------


def test_cancel_returns_the_number_and_records_the_reason(db: Conn, cor: str) -> None:
    token = reserve(db, cor)["token"]
    assert cancel(db, token, actor="u1", reason="letter withdrawn") == "COR-00001"
    [row] = ledger_rows(db, cor)
    assert (row["state"], row["cancel_reason"]) == ("cancelled", "letter withdrawn")
    assert row["cancelled_at"] is not None


def test_cancel_of_a_confirmed_number_is_refused(db: Conn, cor: str) -> None:
    token = reserve(db, cor)["token"]
    confirm(db, token)
    before = footprint(db)
    expect_error("NB009", lambda: cancel(db, token))
    assert footprint(db) == before
    assert states(db, cor) == {1: "confirmed"}


def test_cancel_is_idempotent_on_a_cancelled_reservation(db: Conn, cor: str) -> None:
    token = reserve(db, cor)["token"]
    cancel(db, token)
    before = footprint(db)
    assert cancel(db, token) == "COR-00001"
    assert cancel(db, token, reason="again") == "COR-00001"
    assert footprint(db) == before


def test_cancel_of_an_expired_reservation_returns_the_number(db: Conn, cor: str) -> None:
    token = reserve(db, cor)["token"]
    expire_now(db, token)
    assert expire_reservations(db) == 1
    before = footprint(db)
    assert cancel(db, token) == "COR-00001"
    assert footprint(db) == before
    assert states(db, cor) == {1: "expired"}


def test_cancel_of_an_unknown_token(db: Conn, cor: str) -> None:
    before = footprint(db)
    expect_error("NB004", lambda: cancel(db, uuid.uuid4()))
    assert footprint(db) == before


# --- expire_reservations ------------------------------------------------------------------------------------


def test_expire_reservations_marks_only_overdue_reservations(db: Conn, cor: str) -> None:
    overdue = [reserve(db, cor, ttl="1 millisecond")["token"] for _ in range(3)]
    live = reserve(db, cor, ttl="1 hour")["token"]
    confirmed = reserve(db, cor, ttl="1 hour")["token"]
    confirm(db, confirmed)
    db.execute("SELECT pg_sleep(0.01)")
    assert expire_reservations(db) == 3
    assert states(db, cor) == {1: "expired", 2: "expired", 3: "expired", 4: "reserved", 5: "confirmed"}
    expired_at = [row["expired_at"] for row in ledger_rows(db, cor)[:3]]
    assert all(value is not None for value in expired_at)
    audited = audit_rows(db, "operation = 'EXPIRE'")
    assert sorted(row["document_number"] for row in audited) == ["COR-00001", "COR-00002", "COR-00003"]
    assert all(row["document_type"] == cor for row in audited)
    # A second sweep finds nothing left to do and writes nothing.
    before = footprint(db)
    assert expire_reservations(db) == 0
    assert footprint(db) == before
    assert confirm(db, live) == "COR-00004"
    for token in overdue:
        expect_error("NB004", lambda t=token: confirm(db, t))  # type: ignore[misc]


# --- Numbers are never issued twice -------------------------------------------------------------------------


def test_cancelled_number_is_never_issued_again(db: Conn, cor: str) -> None:
    token = reserve(db, cor)["token"]
    cancel(db, token)
    assert reserve(db, cor)["document_number"] == "COR-00002"
    assert next_number(db, cor) == "COR-00003"
    assert states(db, cor) == {1: "cancelled", 2: "reserved", 3: "confirmed"}


def test_expired_number_is_never_issued_again(db: Conn, cor: str) -> None:
    reserve(db, cor, ttl="1 millisecond")
    db.execute("SELECT pg_sleep(0.01)")
    assert expire_reservations(db) == 1
    assert reserve(db, cor)["document_number"] == "COR-00002"
    assert next_number(db, cor) == "COR-00003"


def test_overdue_but_unswept_number_is_not_reused(db: Conn, cor: str) -> None:
    reserve(db, cor, ttl="1 millisecond")
    db.execute("SELECT pg_sleep(0.01)")
    assert next_number(db, cor) == "COR-00002"


# --- next_number --------------------------------------------------------------------------------------------


def test_next_number_confirms_at_once(db: Conn, cor: str) -> None:
    assert next_number(db, cor, actor="u1", document_ref="invoice-9") == "COR-00001"
    [row] = ledger_rows(db, cor)
    assert (row["state"], row["document_ref"], row["actor"]) == ("confirmed", "invoice-9", "u1")
    assert row["confirmed_at"] is not None


def test_rolled_back_next_number_gives_the_number_back(db: Conn, cor: str) -> None:
    assert next_number(db, cor) == "COR-00001"
    before = footprint(db)
    with db.transaction(force_rollback=True):
        assert next_number(db, cor) == "COR-00002"
    assert footprint(db) == before
    assert next_number(db, cor) == "COR-00002"
    assert states(db, cor) == {1: "confirmed", 2: "confirmed"}


def test_rolled_back_reservation_gives_the_number_back(db: Conn, cor: str) -> None:
    before = footprint(db)
    with db.transaction(force_rollback=True):
        assert reserve(db, cor)["document_number"] == "COR-00001"
    assert footprint(db) == before
    assert reserve(db, cor)["document_number"] == "COR-00001"


def test_rollback_to_savepoint_gives_the_number_back(db: Conn, cor: str) -> None:
    with db.transaction():
        assert next_number(db, cor) == "COR-00001"
        with db.transaction(force_rollback=True):
            assert next_number(db, cor) == "COR-00002"
        assert next_number(db, cor) == "COR-00002"
    assert sorted(states(db, cor)) == [1, 2]


def test_many_numbers_in_one_transaction(db: Conn, cor: str) -> None:
    rows = db.execute(
        "SELECT docnum.next_number(document_type => 'COR') FROM generate_series(1, 25) ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in rows] == [f"COR-{i:05d}" for i in range(1, 26)]


def test_every_number_in_the_ledger_is_unique_and_accounted_for(db: Conn) -> None:
    define(db, "COR", "{TYPE}-{YYYY}-{SEQ:5}", scope="YEARLY")
    define(db, "RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    d2025, d2026 = dt.date(2025, 12, 31), dt.date(2026, 1, 1)
    for day in (d2025, d2026, d2025):
        next_number(db, "COR", document_date=day)
        confirm(db, reserve(db, "COR", document_date=day)["token"])
        cancel(db, reserve(db, "COR", document_date=day)["token"])
        reserve(db, "COR", document_date=day, ttl="1 millisecond")
    for project in ("P1", "P2", "P1"):
        next_number(db, "RFA", scope=project)
        cancel(db, reserve(db, "RFA", scope=project)["token"])
        with db.transaction(force_rollback=True):
            next_number(db, "RFA", scope=project)
    db.execute("SELECT pg_sleep(0.01)")
    assert expire_reservations(db) == 3
    assert_ledger_accounts_for_every_value(db)


def assert_ledger_accounts_for_every_value(db: Conn) -> None:
    """Every counter's values 1..current_value each have exactly one ledger row; the texts are unique; every
    ledger row has the audit rows of its life so far."""
    gaps = db.execute(
        "SELECT c.document_type, c.scope_value, c.period, c.current_value,"
        "       array_agg(l.sequence_value ORDER BY l.sequence_value)"
        "  FROM docnum.counter c LEFT JOIN docnum.ledger l ON l.counter_id = c.counter_id"
        " GROUP BY c.counter_id"
        " HAVING array_agg(l.sequence_value ORDER BY l.sequence_value)"
        "        IS DISTINCT FROM array(SELECT generate_series(1, c.current_value))"
    ).fetchall()
    assert gaps == []
    duplicates = db.execute(
        "SELECT document_number FROM docnum.ledger GROUP BY 1 HAVING count(*) > 1"
    ).fetchall()
    assert duplicates == []
    expected_operations = {
        "confirmed": [["NEXT"], ["RESERVE", "CONFIRM"]],
        "reserved": [["RESERVE"]],
        "cancelled": [["RESERVE", "CANCEL"]],
        "expired": [["RESERVE", "EXPIRE"]],
    }
    for row in ledger_rows(db):
        operations = [
            a["operation"] for a in audit_rows(db, "document_number = %s", (row["document_number"],))
        ]
        assert operations in expected_operations[row["state"]], (
            row["document_number"],
            row["state"],
            operations,
        )


# --- A model of the life cycle ------------------------------------------------------------------------------

OPERATIONS = st.lists(
    st.sampled_from(
        ["reserve", "next", "next_rolled_back", "reserve_rolled_back", "confirm", "cancel", "expire", "sweep"]
    ),
    max_size=14,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_ledger_matches_a_model_of_the_life_cycle(db: Conn, operations: list[str]) -> None:
    # Each example gets its own type, so examples sharing the test's database do not see each other.
    code = "M" + uuid.uuid4().hex[:12].upper()
    define(db, code, "{TYPE}-{SEQ:4}")
    expire_reservations(db)  # what earlier examples left overdue must not count in this one
    model: dict[int, str] = {}
    tokens: dict[int, uuid.UUID] = {}
    overdue: set[int] = set()

    def open_reservations(operation: str) -> list[int]:
        # Cancelling an overdue reservation not yet swept is left out: the contract does not say what it does.
        return [
            value
            for value, state in model.items()
            if state == "reserved" and (operation == "confirm" or value not in overdue)
        ]

    for operation in operations:
        issued = len(model) + 1
        if operation in ("reserve", "expire"):
            reservation = reserve(db, code, ttl="1 millisecond" if operation == "expire" else "1 hour")
            assert reservation["sequence_value"] == issued
            model[issued] = "reserved"
            tokens[issued] = reservation["token"]
            if operation == "expire":
                db.execute("SELECT pg_sleep(0.002)")
                overdue.add(issued)
        elif operation == "next":
            assert next_number(db, code) == f"{code}-{issued:04d}"
            model[issued] = "confirmed"
        elif operation == "next_rolled_back":
            with db.transaction(force_rollback=True):
                assert next_number(db, code) == f"{code}-{issued:04d}"
        elif operation == "reserve_rolled_back":
            with db.transaction(force_rollback=True):
                assert reserve(db, code)["sequence_value"] == issued
        elif operation in ("confirm", "cancel") and open_reservations(operation):
            value = open_reservations(operation)[0]
            if operation == "confirm" and value in overdue:
                expect_error("NB004", lambda v=value: confirm(db, tokens[v]))  # type: ignore[misc]
            elif operation == "confirm":
                assert confirm(db, tokens[value]) == f"{code}-{value:04d}"
                model[value] = "confirmed"
            else:
                assert cancel(db, tokens[value]) == f"{code}-{value:04d}"
                model[value] = "cancelled"
        elif operation == "sweep":
            due = [value for value in open_reservations("confirm") if value in overdue]
            assert expire_reservations(db) == len(due)
            model.update({value: "expired" for value in due})
        assert states(db, code) == model
    assert sorted(model) == list(range(1, len(model) + 1))
