"""What the outside suite attacked: locks a stranger can take, durability settings, request keys after a lost
COMMIT answer, and bad inputs (invisible characters, impossible periods and timestamps, values at the bigint
edge, huge strings).

Interleavings are forced with pg_blocking_pids(), never with sleeps.
"""

from __future__ import annotations

import sys
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from docnum import Numbering
from support.helpers import (
    call,
    confirm,
    define,
    error_of,
    expect_error,
    footprint,
    in_thread,
    ledger_rows,
    next_number,
    reserve,
    wait_until_blocked,
)

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]
LOCK_CLASS = 1685021550


@pytest.fixture
def cor(db: Conn) -> str:
    define(db, "COR", "{TYPE}-{SEQ:5}", lock_timeout="2 seconds", allow_manual_override=True)
    return "COR"


@pytest.fixture
def stranger(db: Conn) -> Iterator[str]:
    """A role with no docnum grant at all (what any login role of the database is)."""
    name = f"stranger_{uuid.uuid4().hex[:8]}"
    db.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    yield name
    db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def as_role(conn: Conn, role: str) -> Conn:
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return conn


def counter_id(db: Conn, document_type: str, scope: str = "", period: str = "") -> int:
    row = db.execute(
        "SELECT counter_id FROM docnum.counter WHERE document_type = %s AND scope_value = %s AND period = %s",
        (document_type, scope, period),
    ).fetchone()
    assert row is not None
    return int(row[0])


def identity_last_value(db: Conn) -> int | None:
    row = db.execute(
        "SELECT last_value FROM pg_sequences WHERE schemaname = 'docnum' AND sequencename = %s",
        ("counter_counter_id_seq",),
    ).fetchone()
    assert row is not None
    return None if row[0] is None else int(row[0])


# --- 2. No role without docnum's grants can delay or block an allocation ----------------------------------


def test_a_stranger_holding_every_advisory_key_cannot_block_allocation(
    db: Conn, connect: Connect, cor: str, stranger: str
) -> None:
    next_number(db, cor)
    define(db, "RFI", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT", lock_timeout="2 seconds")
    attacker = as_role(connect(autocommit=True), stranger)
    # Every key docnum's counters can have, present and future ones (ids are small integers), in both forms.
    attacker.execute(
        "SELECT pg_advisory_lock(%s, k), pg_advisory_lock(k::bigint) FROM generate_series(1, 50) k",
        (LOCK_CLASS,),
    )
    app = connect(autocommit=True)
    app.execute("SET statement_timeout = '20s'")
    # An existing counter, a new one, an override and a set_counter: each gets through, not NB003.
    assert next_number(app, cor) == "COR-00002"
    assert next_number(app, "RFI", scope="P-1") == "P-1/RFI/0001"
    assert call(app, "override_number", document_type=cor, document_number="COR-00004", reason="x")
    assert call(app, "set_counter", document_type=cor, value=10, reason="x")
    assert next_number(app, cor) == "COR-00011"
    attacker.execute("SELECT pg_advisory_unlock_all()")


def test_allocations_queue_behind_each_other_while_a_stranger_holds_the_key(
    db: Conn, connect: Connect, cor: str, stranger: str
) -> None:
    """An advisory key is nothing to docnum any more: allocations still take turns, the waiter waiting for the
    holder (not for the stranger)."""
    next_number(db, cor)
    attacker = as_role(connect(autocommit=True), stranger)
    attacker.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, counter_id(db, cor)))
    holder = connect()
    waiter = connect(autocommit=True)
    assert next_number(holder, cor) == "COR-00002"
    waiting = in_thread(lambda: next_number(waiter, cor))
    deadline = time.monotonic() + 10
    while holder.info.backend_pid not in wait_until_blocked(db, waiter.info.backend_pid):
        assert time.monotonic() < deadline, "the waiter never waited for the holder"
    holder.commit()
    assert waiting.result(timeout=10) == "COR-00003"
    assert [row["sequence_value"] for row in ledger_rows(db, cor)] == [1, 2, 3]


@pytest.mark.parametrize("role", ["docnum_reader", "docnum_app", "docnum_admin"])
def test_no_docnum_role_can_take_or_block_a_counters_turn(
    db: Conn, connect: Connect, cor: str, role: str
) -> None:
    """A counter's turn is the lock of its docnum.counter_queue row, which needs UPDATE on the table: no role
    has it. The strongest table lock a role may take there (ACCESS SHARE, with SELECT) blocks no
    allocation."""
    next_number(db, cor)
    other = as_role(connect(), role)
    for statement in (
        "SELECT * FROM docnum.counter_queue FOR UPDATE",
        "SELECT * FROM docnum.counter_queue FOR NO KEY UPDATE",
        "SELECT * FROM docnum.counter_queue FOR SHARE",
        "SELECT * FROM docnum.counter_queue FOR KEY SHARE",
        "LOCK TABLE docnum.counter_queue IN ROW SHARE MODE",
        "LOCK TABLE docnum.counter IN ROW SHARE MODE",
    ):
        assert error_of(lambda s=statement: other.execute(s)).sqlstate == "42501", statement  # type: ignore[misc]
        other.rollback()
        as_role(other, role)
    if role != "docnum_app":  # docnum_app may not read the queue at all
        other.execute("LOCK TABLE docnum.counter_queue, docnum.counter IN ACCESS SHARE MODE")
    app = connect(autocommit=True)
    app.execute("SET statement_timeout = '5s'")
    assert next_number(app, cor) == "COR-00002"
    assert reserve(app, cor)["document_number"] == "COR-00003"
    other.rollback()


def test_a_stranger_cannot_take_the_lock_that_excludes(
    db: Conn, connect: Connect, cor: str, stranger: str
) -> None:
    next_number(db, cor)
    attacker = connect()
    for statement in (
        "SELECT * FROM docnum.counter FOR NO KEY UPDATE",
        "SELECT * FROM docnum.counter FOR KEY SHARE",
        "SELECT * FROM docnum.counter_queue FOR UPDATE",
        "SELECT * FROM docnum.counter_queue FOR KEY SHARE",
        "LOCK TABLE docnum.counter IN ACCESS SHARE MODE",
        "LOCK TABLE docnum.counter_queue IN ACCESS SHARE MODE",
        "LOCK TABLE docnum.ledger IN ACCESS SHARE MODE",
        "SELECT docnum.next_number('COR')",
    ):
        as_role(attacker, stranger)
        assert error_of(lambda s=statement: attacker.execute(s)).sqlstate == "42501", statement  # type: ignore[misc]
        attacker.rollback()


def test_contended_allocations_use_no_counter_identity_values(db: Conn, connect: Connect, cor: str) -> None:
    next_number(db, cor)
    before = identity_last_value(db)
    holder = connect()
    for expected in range(2, 7, 2):
        assert next_number(holder, cor) == f"COR-{expected:05d}"
        waiter = connect(autocommit=True)
        waiting = in_thread(lambda w=waiter: next_number(w, cor))  # type: ignore[misc]
        wait_until_blocked(db, waiter.info.backend_pid)
        holder.commit()
        assert waiting.result(timeout=10) == f"COR-{expected + 1:05d}"
    assert identity_last_value(db) == before


# --- 3. Durability -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "commits_with"),
    [("off", "on"), ("local", "on"), ("remote_write", "on"), ("on", "on"), ("remote_apply", "remote_apply")],
)
def test_every_writing_call_commits_at_least_with_synchronous_commit_on(
    connect: Connect, cor: str, level: str, commits_with: str
) -> None:
    conn = connect()
    writes: list[Callable[[], object]] = [
        lambda: next_number(conn, cor),
        lambda: confirm(conn, reserve(conn, cor)["token"]),
        lambda: call(conn, "cancel_number", token=reserve(conn, cor)["token"]),
        lambda: call(conn, "expire_reservations"),
        lambda: call(conn, "void_number", document_number=next_number(conn, cor), reason="x"),
        lambda: call(conn, "set_counter", document_type=cor, value=100, reason="x"),
        lambda: call(conn, "alter_type", document_type=cor, reservation_ttl="1 hour", reason="x"),
    ]
    for write in writes:
        conn.execute("SELECT set_config('synchronous_commit', %s, true)", (level,))
        write()
        assert conn.execute("SHOW synchronous_commit").fetchone() == (commits_with,)
        conn.commit()


def test_nb003_states_the_limit_in_milliseconds(db: Conn, connect: Connect, cor: str) -> None:
    next_number(db, cor)
    holder = connect()
    next_number(holder, cor)
    waiter = connect(autocommit=True)
    waiter.execute("SET lock_timeout = '1.5s'")
    assert "(1500 ms)" in (expect_error("NB003", lambda: next_number(waiter, cor)).diag.message_detail or "")
    waiter.execute("SET lock_timeout = 0")
    call(db, "alter_type", document_type=cor, lock_timeout="250 milliseconds", reason="x")
    assert "(250 ms)" in (expect_error("NB003", lambda: next_number(waiter, cor)).diag.message_detail or "")
    holder.rollback()


# --- 4. Request keys ----------------------------------------------------------------------------------------


def test_a_request_key_is_served_once(db: Conn, cor: str) -> None:
    first = next_number(db, cor, request_id="order-17")
    assert next_number(db, cor, request_id="order-17") == first
    held = reserve(db, cor, request_id="order-18")
    assert reserve(db, cor, request_id="order-18") == held
    assert next_number(db, cor) == "COR-00003"
    assert [row["request_id"] for row in ledger_rows(db, cor)] == ["order-17", "order-18", None]
    found = call(db, "find_request", request_id="order-18")
    assert (found["document_number"], found["state"], found["token"]) == (
        held["document_number"],
        "reserved",
        held["token"],
    )
    assert db.execute("SELECT count(*) FROM docnum.find_request('nope')").fetchone() == (0,)


def test_a_request_key_cannot_name_another_request(db: Conn, cor: str) -> None:
    define(db, "INV", "{TYPE}-{SEQ:5}")
    next_number(db, cor, request_id="k1")
    before = footprint(db)
    expect_error("NB012", lambda: next_number(db, "INV", request_id="k1"))
    expect_error("NB012", lambda: reserve(db, cor, request_id="k1"))
    expect_error("NB006", lambda: next_number(db, cor, request_id="bad\u200bkey"))
    expect_error("NB006", lambda: next_number(db, cor, request_id="k" * 201))
    assert footprint(db) == before


def test_a_retry_after_a_connection_lost_after_commit_gets_the_same_number(
    db: Conn, connect: Connect, cor: str
) -> None:
    lost = connect(autocommit=True)
    number = next_number(lost, cor, request_id="lost-after-commit")
    db.execute("SELECT pg_terminate_backend(%s)", (lost.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        lost.execute("SELECT 1")
    assert call(db, "find_request", request_id="lost-after-commit")["document_number"] == number
    retry = connect(autocommit=True)
    assert next_number(retry, cor, request_id="lost-after-commit") == number
    assert len(ledger_rows(db, cor)) == 1


def test_a_retry_after_a_connection_lost_before_commit_gets_a_number(
    db: Conn, connect: Connect, cor: str
) -> None:
    next_number(db, cor)
    holder = connect()
    next_number(holder, cor)
    lost = connect(autocommit=True)
    waiting = in_thread(lambda: next_number(lost, cor, request_id="lost-before-commit"))
    wait_until_blocked(db, lost.info.backend_pid)
    db.execute("SELECT pg_terminate_backend(%s)", (lost.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        waiting.result(timeout=10)
    holder.rollback()
    assert db.execute("SELECT count(*) FROM docnum.find_request('lost-before-commit')").fetchone() == (0,)
    assert next_number(db, cor, request_id="lost-before-commit") == "COR-00002"


def test_concurrent_retries_of_one_request_get_one_number(db: Conn, connect: Connect, cor: str) -> None:
    first = connect()
    second = connect(autocommit=True)
    number = next_number(first, cor, request_id="twice")
    waiting = in_thread(lambda: next_number(second, cor, request_id="twice"))
    wait_until_blocked(db, second.info.backend_pid)
    first.commit()
    # The second call cannot return a second number; it fails as a serialisation failure, and its retry ...
    with pytest.raises(psycopg.errors.SerializationFailure):
        waiting.result(timeout=10)
    assert next_number(second, cor, request_id="twice") == number
    # ... which the client does by itself when it owns the transaction.
    assert Numbering(second).next_number(cor, request_id="twice") == number
    assert [row["document_number"] for row in ledger_rows(db, cor)] == [number]


# --- 6. Bad inputs ------------------------------------------------------------------------------------------

INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}
VISIBLE_CATEGORIES = {
    "Lu",
    "Ll",
    "Lt",
    "Lm",
    "Lo",
    "Mn",
    "Mc",
    "Me",
    "Nd",
    "Nl",
    "No",
    "Pc",
    "Pd",
    "Ps",
    "Pe",
}
VISIBLE_CATEGORIES |= {"Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs"}


def test_the_invisible_character_rule_matches_unicode(db: Conn) -> None:
    """Every code point: refused exactly when Unicode (as Python knows it) calls it Cc, Cf, Zl or Zp."""
    refused = {
        int(cp)
        for (cp,) in db.execute(
            "SELECT cp FROM generate_series(1, 1114111) cp"
            " WHERE cp NOT BETWEEN 55296 AND 57343 AND docnum._has_invisible(chr(cp))"
        )
    }
    wrongly_accepted, wrongly_refused = [], []
    for cp in range(1, sys.maxunicode + 1):
        category = unicodedata.category(chr(cp))
        if category in INVISIBLE_CATEGORIES and cp not in refused:
            wrongly_accepted.append(f"U+{cp:04X} {category}")
        if category in VISIBLE_CATEGORIES and cp in refused:
            wrongly_refused.append(f"U+{cp:04X} {category}")
    assert wrongly_accepted == []
    assert wrongly_refused == []


INVISIBLE_SAMPLES = ["\u200b", "\u00ad", "\u202e", "\ufeff", "\u2028", "\x1b", "\n", "\U000e0041"]


def test_invisible_characters_are_refused_wherever_text_is_an_identifier(db: Conn, cor: str) -> None:
    define(db, "RFI", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT", allow_manual_override=True)
    next_number(db, "RFI", scope="P-1")
    before = footprint(db)
    for char in INVISIBLE_SAMPLES:
        for action in (
            lambda c=char: next_number(db, "RFI", scope=f"P-1{c}"),
            lambda c=char: next_number(db, "RFI", scope=f"P{c}-1"),
            lambda c=char: next_number(db, cor, actor=f"ann{c}"),
            lambda c=char: next_number(db, cor, document_ref=f"DOC{c}1"),
            lambda c=char: call(db, "set_counter", document_type="RFI", scope=f"P{c}", value=3, reason="x"),
            lambda c=char: call(
                db, "override_number", document_type="RFI", document_number=f"P{c}/RFI/0009", reason="x"
            ),
            lambda c=char: call(db, "void_number", document_number="P-1/RFI/0001", reason=f"typo{c}"),
        ):
            expect_error("NB006", action)
    for space in ("\u00a0", "\u3000", "\u2009", " "):
        expect_error("NB006", lambda s=space: next_number(db, "RFI", scope=f"{s}P-1"))  # type: ignore[misc]
        expect_error("NB006", lambda s=space: next_number(db, "RFI", scope=f"P-1{s}"))  # type: ignore[misc]
    for char in INVISIBLE_SAMPLES:
        expect_error("NB006", lambda c=char: define(db, "NEW", f"NEW-{c}{{SEQ}}"))  # type: ignore[misc]
    assert footprint(db) == before
    assert next_number(db, "RFI", scope="P\u00a01") == "P\u00a01/RFI/0001"  # inside, a space is fine


def test_import_rejects_bad_rows_one_by_one(db: Conn, cor: str) -> None:
    rows = [
        {"document_type": cor, "document_number": "COR-00001", "created_at": "2019-05-01 infinity"},
        {"document_type": cor, "document_number": "COR-00002", "created_at": "2019-05-01 epoch"},
        {"document_type": cor, "document_number": "COR-00003", "created_at": "2019-05-01 10:00 Mars/Olympus"},
        {"document_type": cor, "document_number": "COR-00004", "created_at": "infinity"},
        {"document_type": cor, "document_number": "COR-00005", "created_at": "2019-05-01 now"},
        {"document_type": cor, "document_number": "COR-00006", "document_ref": "a\x1b[31mred"},
        {"document_type": cor, "document_number": "COR-00007", "document_ref": "two\nlines"},
        {"document_type": cor, "document_number": "COR-00008", "document_ref": "zero\u200bwidth"},
        {"document_type": cor, "document_number": "COR-00009", "created_at": "0999-12-31"},
        {"document_type": cor, "document_number": "COR-0001\u200b0"},
        {"document_type": cor, "document_number": "COR-00011", "created_at": "2019-05-01T10:00:00+07:00"},
        {"document_type": cor, "document_number": "COR-00012", "created_at": "2019-05-01 10:00:00 UTC"},
        {"document_type": cor, "document_number": "COR-00013", "created_at": "2019-05-01"},
    ]
    with db.cursor() as cur:
        cur.execute(
            "SELECT row_number, status FROM docnum.import_numbers(%s::jsonb, 'ann')",
            (psycopg.types.json.Jsonb(rows),),
        )
        result = dict(cur.fetchall())
    assert result == {n: "rejected" for n in range(1, 11)} | {11: "imported", 12: "imported", 13: "imported"}
    issued = db.execute("SELECT document_number, issued_at::text FROM docnum.ledger ORDER BY 1").fetchall()
    assert [number for number, _ in issued] == ["COR-00011", "COR-00012", "COR-00013"]
    db.execute("SET TimeZone = 'UTC'")
    assert db.execute(
        "SELECT issued_at FROM docnum.ledger WHERE document_number = 'COR-00011'"
    ).fetchone() == (db.execute("SELECT timestamptz '2019-05-01 03:00:00+00'").fetchone() or (None,))


def test_impossible_periods_are_refused(db: Conn) -> None:
    define(db, "ANN", "{TYPE}-{YYYY}-{SEQ:4}", reset="YEARLY")
    define(db, "MON", "{TYPE}-{YYYY}{MM}-{SEQ:4}", reset="MONTHLY")
    before = footprint(db)
    for document_type, period in [
        ("ANN", "0000"),
        ("ANN", "0999"),
        ("MON", "0000-01"),
        ("MON", "2025-13"),
        ("ANN", "2025-01"),
        ("MON", "2025"),
        ("ANN", " 2025"),
    ]:
        expect_error(
            "NB006",
            lambda t=document_type, p=period: call(  # type: ignore[misc]
                db, "set_counter", document_type=t, period=p, value=1, reason="x"
            ),
        )
    assert footprint(db) == before
    # The counter's own trigger refuses such a period, whoever writes it.
    error = error_of(
        lambda: db.execute(
            "INSERT INTO docnum.counter (document_type, scope_value, period) VALUES ('ANN', '', '0000')"
        )
    )
    assert error.sqlstate == "23514"


def test_the_last_value_of_a_bigint_counter_is_nb002_not_an_overflow(db: Conn) -> None:
    expect_error("NB006", lambda: define(db, "BIG", "{TYPE}-{SEQ}", max_value=2**63 - 1))
    kind = define(db, "BIG", "{TYPE}-{SEQ}")
    assert kind["max_value"] == 2**63 - 2
    call(db, "set_counter", document_type="BIG", value=2**63 - 3, reason="edge")
    assert next_number(db, "BIG") == f"BIG-{2**63 - 2}"
    before = footprint(db)
    expect_error("NB002", lambda: next_number(db, "BIG"))
    expect_error("NB002", lambda: reserve(db, "BIG"))
    expect_error(
        "NB006", lambda: call(db, "alter_type", document_type="BIG", max_value=2**63 - 1, reason="x")
    )
    assert footprint(db) == before


HUGE = "x" * 1_000_000


def test_error_messages_stay_small_whatever_the_input(db: Conn, cor: str) -> None:
    define(db, "RFI", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT", allow_manual_override=True)
    before = footprint(db)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("next_number", {"document_type": HUGE}),
        ("next_number", {"document_type": "RFI", "scope": HUGE}),
        ("next_number", {"document_type": cor, "actor": HUGE}),
        ("next_number", {"document_type": cor, "document_ref": HUGE}),
        ("next_number", {"document_type": cor, "request_id": HUGE}),
        ("reserve_number", {"document_type": "RFI", "scope": HUGE}),
        ("define_type", {"code": HUGE, "format": "{SEQ}"}),
        ("define_type", {"code": "NEW", "format": HUGE}),
        ("define_type", {"code": "NEW", "format": "{SEQ}", "time_zone": HUGE}),
        ("define_type", {"code": "NEW", "format": "{SEQ}", "scope": HUGE}),
        ("alter_type", {"document_type": cor, "format": HUGE, "reason": "x"}),
        ("override_number", {"document_type": cor, "document_number": HUGE, "reason": "x"}),
        ("override_number", {"document_type": cor, "document_number": "COR-" + "9" * 5000, "reason": "x"}),
        ("void_number", {"document_number": HUGE, "reason": "x"}),
        ("void_number", {"document_number": "COR-00001", "reason": HUGE}),
        ("set_counter", {"document_type": "RFI", "scope": HUGE, "value": 1, "reason": "x"}),
        ("set_counter", {"document_type": cor, "period": HUGE, "value": 1, "reason": "x"}),
        ("find_request", {"request_id": HUGE}),
    ]
    for function, arguments in calls:
        error = error_of(lambda f=function, a=arguments: call(db, f, **a))  # type: ignore[misc]
        assert error.sqlstate is not None and error.sqlstate.startswith("NB"), (function, error.sqlstate)
        diag = error.diag
        size = sum(len(part or "") for part in (diag.message_primary, diag.message_detail, diag.message_hint))
        assert size < 2000, (function, list(arguments), size)
    assert footprint(db) == before


def test_an_allocation_waiting_for_an_import_keeps_its_lock_limit(db: Conn, connect: Connect) -> None:
    define(db, "LCK", "{TYPE}-{SEQ:4}", lock_timeout="200 milliseconds")
    next_number(db, "LCK")
    importer = connect()
    rows = psycopg.types.json.Jsonb([{"document_type": "LCK", "document_number": "LCK-0005"}])
    importer.execute("SELECT * FROM docnum.import_numbers(%s)", (rows,))
    waiter = connect(autocommit=True)
    waiter.execute("SET statement_timeout = '10s'")
    expect_error("NB003", lambda: next_number(waiter, "LCK"))
    importer.commit()
    assert next_number(waiter, "LCK") == "LCK-0006"
