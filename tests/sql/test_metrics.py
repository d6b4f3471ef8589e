"""docnum.metrics(): the figures of `docnum metrics`, read from the database.

The rule: every figure equals what a full count of the ledger, the audit log and the counters gives, after any
mix of operations (a property test), and the counts of failures survive the rollback of the failure they
count. Recording them takes no lock that two independent counters would share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from support.helpers import (
    call,
    cancel,
    confirm,
    define,
    expect_error,
    expire_reservations,
    in_thread,
    next_number,
    reserve,
    sqlstate_of,
    wait_until_blocked,
)

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]
Figures = dict[tuple[str, str, str], float]

BOUNDS = ("0.01", "0.05", "0.1", "0.5", "1", "2", "5", "+Inf")


def figures(conn: Conn, max_scopes: int = 10) -> Figures:
    rows = conn.execute("SELECT metric, document_type, label, value FROM docnum.metrics(%s)", (max_scopes,))
    found: Figures = {}
    for metric, document_type, label, value in rows.fetchall():
        key = (metric, document_type, label)
        assert key not in found, f"two rows for {key}"
        found[key] = value
    return found


def truth(conn: Conn, max_scopes: int = 10) -> Figures:
    """The same figures from full scans of docnum's tables (what metrics() must never need)."""
    expected: Figures = {}
    types = [row[0] for row in conn.execute("SELECT code FROM docnum.document_type").fetchall()]
    for code in types:

        def one(query: str, *params: Any, code: str = code) -> float:
            row = conn.execute(query, (code, *params)).fetchone()
            assert row is not None
            return float(row[0] or 0)

        issued = one("SELECT count(*) FROM docnum.ledger WHERE document_type = %s AND audit_id IS NOT NULL")
        expected[("sequences_total", code, "")] = issued
        expected[("counters", code, "")] = one("SELECT count(*) FROM docnum.counter WHERE document_type = %s")
        for state, condition in (
            ("pending", "state = 'reserved'"),
            ("confirmed", "state = 'confirmed' AND token IS NOT NULL"),
            ("cancelled", "state = 'cancelled'"),
            ("expired", "state = 'expired'"),
        ):
            expected[("reservations", code, state)] = one(
                f"SELECT count(*) FROM docnum.ledger WHERE document_type = %s AND {condition}"
            )
        for metric, operation in (("manual_overrides_total", "MANUAL_OVERRIDE"), ("voids_total", "VOID")):
            expected[(metric, code, "")] = one(
                "SELECT count(*) FROM docnum.audit_log WHERE document_type = %s AND operation = %s", operation
            )
        expected[("overdue_reservations", code, "")] = one(
            "SELECT count(*) FROM docnum.ledger WHERE document_type = %s AND state = 'reserved'"
            " AND expires_at <= statement_timestamp()"
        )
        expected[("sequence_utilization", code, "")] = one(
            "SELECT coalesce(max(c.current_value), 0) * 100.0 / t.max_value FROM docnum.document_type t"
            " LEFT JOIN docnum.counter c ON c.document_type = t.code WHERE t.code = %s GROUP BY t.max_value"
        )
        tops = conn.execute(
            "SELECT concat_ws('/', nullif(scope_value, ''), nullif(period, '')), current_value"
            " FROM docnum.counter WHERE document_type = %s ORDER BY current_value DESC LIMIT %s",
            (code, max_scopes),
        ).fetchall()
        for scope, value in tops:
            expected[("sequence_current", code, scope)] = float(value)
    return expected


def comparable(found: Figures) -> Figures:
    """The figures truth() computes (allocation calls, waits, failures and ages are checked elsewhere);
    sequence_current only where its rank is unambiguous is still compared in full here (distinct values)."""
    skipped = {
        "allocations_total",
        "lock_wait_seconds_count",
        "lock_wait_seconds_sum",
        "lock_wait_seconds_bucket",
        "errors_total",
        "oldest_pending_reservation_seconds",
    }
    return {key: value for key, value in found.items() if key[0] not in skipped}


# -- the property: metrics() equals a full count, after any mix of operations -----------------------------

OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "reserve",
                "next",
                "next_batch",
                "reserve_batch",
                "confirm",
                "cancel",
                "expire",
                "void",
                "void_replace",
                "override",
                "rolled_back",
                "exhaust",
            ]
        ),
        st.sampled_from(["P1", "P2", "P3"]),
        st.integers(min_value=1, max_value=4),
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture
def metric_types(db: Conn) -> None:
    define(db, "MTA", "{TYPE}/{SCOPE}/{SEQ:4}", scope="PROJECT", allow_manual_override=True)
    define(db, "MTB", "{TYPE}-{YYYY}-{SEQ:4}", reset="YEARLY")
    define(db, "TINY", "{TYPE}-{SEQ}", max_value=5)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_metrics_equal_a_full_count_after_any_operations(
    db: Conn, metric_types: None, operations: list[tuple[str, str, int]]
) -> None:
    for name, scope, count in operations:
        pending = db.execute(
            "SELECT token FROM docnum.ledger WHERE state = 'reserved' ORDER BY number_id LIMIT 1"
        ).fetchone()
        confirmed = db.execute(
            "SELECT document_number FROM docnum.ledger WHERE state = 'confirmed' AND document_type = 'MTA'"
            " ORDER BY number_id DESC LIMIT 1"
        ).fetchone()
        if name == "reserve":
            reserve(db, "MTA", scope=scope)
        elif name == "next":
            next_number(db, "MTB")
        elif name == "next_batch":
            db.execute("SELECT count(*) FROM docnum.next_numbers('MTA', %s, %s)", (count, scope))
        elif name == "reserve_batch":
            db.execute("SELECT count(*) FROM docnum.reserve_numbers('MTB', %s)", (count,))
        elif name == "confirm" and pending:
            confirm(db, pending[0])
        elif name == "cancel" and pending:
            cancel(db, pending[0])
        elif name == "expire":
            reserve(db, "MTA", scope=scope, ttl="1 microsecond")
            expire_reservations(db)
        elif name == "void" and confirmed:
            call(db, "void_number", document_number=confirmed[0], actor="t", reason="property")
        elif name == "void_replace" and confirmed:
            call(db, "void_and_replace", document_number=confirmed[0], actor="t", reason="property")
        elif name == "override":
            taken = db.execute("SELECT count(*) FROM docnum.ledger").fetchone()
            assert taken is not None
            call(
                db,
                "override_number",
                document_type="MTA",
                document_number=f"MTA/{scope}/{9000 + taken[0]}",
                actor="t",
                reason="property",
            )
        elif name == "rolled_back":
            with psycopg.connect(db.info.dsn, password=db.info.password) as other:
                next_number(other, "MTB")
                reserve(other, "MTA", scope=scope)
                other.rollback()
        elif name == "exhaust":
            before = figures(db)[("errors_total", "TINY", "NB002")]
            if db.execute(
                "SELECT coalesce(max(current_value), 0) FROM docnum.counter WHERE document_type = 'TINY'"
            ).fetchone() == (5,):
                expect_error("NB002", lambda: next_number(db, "TINY"))
                assert figures(db)[("errors_total", "TINY", "NB002")] == before + 1
            else:
                next_number(db, "TINY")
    found = figures(db)
    assert comparable(found) == truth(db)
    for code in ("MTA", "MTB", "TINY"):
        buckets = [found[("lock_wait_seconds_bucket", code, bound)] for bound in BOUNDS]
        assert buckets == sorted(buckets), "histogram buckets are cumulative"
        assert (
            buckets[-1]
            == found[("lock_wait_seconds_count", code, "")]
            == found[("allocations_total", code, "")]
        )
        assert found[("allocations_total", code, "")] <= found[("sequences_total", code, "")]


# -- failures are counted though they roll back ------------------------------------------------------------


def test_a_lock_timeout_is_counted_though_its_transaction_rolls_back(db: Conn, connect: Connect) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}", lock_timeout="200 milliseconds")
    next_number(db, "COR")
    before = figures(db)
    holder = connect()
    next_number(holder, "COR")  # holds the counter until rollback
    waiter = connect()
    failing = in_thread(lambda: next_number(waiter, "COR"))
    wait_until_blocked(db, waiter.info.backend_pid)
    with pytest.raises(psycopg.Error) as raised:
        failing.result(timeout=10)
    assert raised.value.sqlstate == "NB003"
    waiter.rollback()
    holder.rollback()

    after = figures(db)
    assert after[("errors_total", "COR", "NB003")] == before[("errors_total", "COR", "NB003")] + 1
    assert after[("errors_total", "COR", "NB002")] == 0
    # nothing else moved: the holder rolled back too
    assert comparable(after) == comparable(before)


def test_exhaustion_is_counted_per_type_and_batch(db: Conn) -> None:
    define(db, "TINY", "{TYPE}-{SEQ}", max_value=3)
    define(db, "OTHER", "{TYPE}.{SEQ}")
    db.execute("SELECT count(*) FROM docnum.next_numbers('TINY', 2)")
    expect_error("NB002", lambda: db.execute("SELECT count(*) FROM docnum.next_numbers('TINY', 2)"))
    next_number(db, "TINY")
    expect_error("NB002", lambda: next_number(db, "TINY"))
    found = figures(db)
    assert found[("errors_total", "TINY", "NB002")] == 2
    assert found[("errors_total", "OTHER", "NB002")] == 0
    assert found[("sequences_total", "TINY", "")] == 3
    assert found[("allocations_total", "TINY", "")] == 2
    assert found[("sequence_utilization", "TINY", "")] == 100


def test_a_wait_for_the_counter_is_measured_inside_the_function(db: Conn, connect: Connect) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    next_number(db, "COR")
    holder, waiter = connect(), connect(autocommit=True)
    next_number(holder, "COR")
    waiting = in_thread(lambda: next_number(waiter, "COR"))
    wait_until_blocked(db, waiter.info.backend_pid)
    time.sleep(0.15)  # the quantity measured, not an ordering: the waiter is already blocked
    holder.commit()
    waiting.result(timeout=10)

    found = figures(db)
    buckets = {bound: found[("lock_wait_seconds_bucket", "COR", bound)] for bound in BOUNDS}
    assert found[("allocations_total", "COR", "")] == 3
    assert buckets["+Inf"] == 3
    # the waiter waited at least 0.15 s: not in the buckets up to 0.1 s
    assert buckets["0.1"] <= 2
    assert found[("lock_wait_seconds_sum", "COR", "")] >= 0.15


# -- no shared row: independent counters and failures do not wait for each other -----------------------------


def test_counting_takes_no_lock_two_counters_share(db: Conn, connect: Connect) -> None:
    define(db, "PRJ", "{TYPE}/{SCOPE}/{SEQ}", scope="PROJECT", lock_timeout="100 milliseconds")
    next_number(db, "PRJ", scope="A")
    next_number(db, "PRJ", scope="B")
    first, second, third = connect(), connect(), connect()
    first.execute("SET lock_timeout = '100ms'")
    second.execute("SET lock_timeout = '100ms'")
    next_number(first, "PRJ", scope="A")  # open: holds counter A
    next_number(second, "PRJ", scope="B")  # would time out if counting shared a row with A
    # a failure of the same type, counted while both are open, waits for neither
    third.execute("SET lock_timeout = '100ms'")
    expect_error("NB003", lambda: next_number(third, "PRJ", scope="A"))
    third.rollback()
    first.commit()
    second.commit()
    found = figures(db)
    assert found[("sequences_total", "PRJ", "")] == 4
    assert found[("errors_total", "PRJ", "NB003")] == 1


# -- cardinality, arguments and grants -----------------------------------------------------------------


def test_scope_series_are_capped_to_the_fullest_counters(db: Conn) -> None:
    define(db, "PRJ", "{TYPE}/{SCOPE}/{SEQ}", scope="PROJECT")
    for index in range(1, 16):
        db.execute("SELECT count(*) FROM docnum.next_numbers('PRJ', %s, %s)", (index, f"S{index}"))
    found = figures(db, max_scopes=4)
    current = {key[2]: value for key, value in found.items() if key[0] == "sequence_current"}
    assert current == {"S15": 15, "S14": 14, "S13": 13, "S12": 12}
    assert found[("counters", "PRJ", "")] == 15
    assert not [key for key in figures(db, max_scopes=0) if key[0] == "sequence_current"]


@pytest.mark.parametrize("max_scopes", [-1, 1001, None])
def test_max_scopes_out_of_range_is_nb006(db: Conn, max_scopes: int | None) -> None:
    error = expect_error("NB006", lambda: db.execute("SELECT * FROM docnum.metrics(%s)", (max_scopes,)))
    assert error.diag.column_name == "max_scopes"


def test_every_type_has_its_series_from_its_definition(db: Conn) -> None:
    define(db, "NEW", "{TYPE}-{SEQ}")
    found = figures(db)
    for metric in ("sequences_total", "allocations_total", "counters", "sequence_utilization"):
        assert found[(metric, "NEW", "")] == 0
    assert found[("errors_total", "NEW", "NB003")] == 0
    assert found[("reservations", "NEW", "pending")] == 0
    assert found[("lock_wait_seconds_bucket", "NEW", "+Inf")] == 0


def test_reader_may_read_metrics_and_nobody_may_touch_the_failure_counts(db: Conn, connect: Connect) -> None:
    define(db, "COR", "{TYPE}-{SEQ}")
    for role in ("docnum_reader", "docnum_app", "docnum_admin"):
        db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        try:
            if role == "docnum_app":
                assert sqlstate_of(lambda: db.execute("SELECT * FROM docnum.metrics()")) == "42501"
            else:
                assert db.execute("SELECT count(*) FROM docnum.metrics()").fetchone() != (0,)
            for code in ("NB002", "NB003"):
                name = f'docnum."COR:{code}"'
                for query in (f"SELECT nextval('{name}')", f"SELECT setval('{name}', 1000)"):
                    assert sqlstate_of(lambda query=query: db.execute(query)) == "42501"
        finally:
            db.execute("RESET ROLE")
