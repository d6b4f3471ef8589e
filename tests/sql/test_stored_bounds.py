"""Nothing one call stores is unbounded: every text and JSON argument a docnum function keeps has a limit, in
SQL, and a value past it is NB006 (or another NB refusal) naming it, in a bounded message, with nothing
written. Ledger and audit rows are never deleted, so a limit is what keeps one role from filling the disk.

Also here: a request key reused with other arguments is NB012 (the digest rule), and the messages a newcomer
met through the CLI.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from support.helpers import call, define, error_of, expect_error, footprint, reserve

HUGE_TEXT = "x" * 100_000
HUGE_JSON = {"k": "x" * 100_000}
#: A refusal's message, DETAIL and HINT together stay under this many characters, whatever it was given.
MESSAGE_BOUND = 2_000


@pytest.fixture
def ready(db: psycopg.Connection[Any]) -> dict[str, Any]:
    """COR (global, override allowed), PRJ (per project), a reservation of each kind of use, a confirmed
    number, and a table to register."""
    define(db, "COR", "COR-{SEQ:5}", allow_manual_override=True)
    define(db, "PRJ", "{SCOPE}/PRJ/{SEQ:4}", scope="PROJECT")
    db.execute("CREATE TABLE public.documents (number text)")
    return {
        "confirm_token": reserve(db, "COR")["token"],
        "cancel_token": reserve(db, "COR")["token"],
        "confirmed": call(db, "next_number", document_type="COR")["next_number"],
        "replaced": call(db, "next_number", document_type="COR")["next_number"],
    }


#: For every function that stores what it is given: arguments with which it succeeds. Each text or JSON
#: argument in turn is then made huge (test_every_stored_argument_is_bounded); the test below checks this
#: table names every such argument of every such function.
BASE_CALLS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "reserve_number": lambda r: {
        "document_type": "PRJ",
        "scope": "P1",
        "actor": "a",
        "metadata": Jsonb({"project": "P1"}),
        "request_id": str(uuid.uuid4()),
    },
    "next_number": lambda r: {
        "document_type": "PRJ",
        "scope": "P1",
        "actor": "a",
        "document_ref": "doc-1",
        "request_id": str(uuid.uuid4()),
    },
    "next_numbers": lambda r: {"document_type": "PRJ", "count": 3, "scope": "P1", "actor": "a"},
    "reserve_numbers": lambda r: {
        "document_type": "PRJ",
        "count": 3,
        "scope": "P1",
        "actor": "a",
        "metadata": Jsonb({"batch": 1}),
    },
    "confirm_number": lambda r: {"token": r["confirm_token"], "actor": "a", "document_ref": "doc-2"},
    "cancel_number": lambda r: {"token": r["cancel_token"], "actor": "a", "reason": "not needed"},
    "define_type": lambda r: {
        "code": "NEW",
        "format": "NEW-{SEQ:4}",
        "scope": "GLOBAL",
        "reset": "NEVER",
        "time_zone": "UTC",
        "metadata": Jsonb({"owner": "ops"}),
        "actor": "a",
    },
    "alter_type": lambda r: {
        "document_type": "COR",
        "format": "COR-{SEQ:6}",
        "time_zone": "Europe/Paris",
        "metadata": Jsonb({"owner": "ops"}),
        "actor": "a",
        "reason": "wider",
    },
    "override_number": lambda r: {
        "document_type": "COR",
        "document_number": "COR-90000",
        "actor": "a",
        "reason": "chosen by hand",
    },
    "void_number": lambda r: {"document_number": r["confirmed"], "actor": "a", "reason": "sent in error"},
    "void_and_replace": lambda r: {"document_number": r["replaced"], "actor": "a", "reason": "reissue"},
    "set_counter": lambda r: {
        "document_type": "PRJ",
        "scope": "P9",
        "period": "",
        "value": 10,
        "actor": "a",
        "reason": "start later",
    },
    "import_numbers": lambda r: {
        "rows": Jsonb([{"document_type": "COR", "document_number": "COR-80000", "document_ref": "old-1"}]),
        "actor": "a",
    },
    "register_document_table": lambda r: {
        "table_name": "public.documents",
        "number_column": "number",
        "actor": "a",
    },
}


def _stored_arguments(conn: psycopg.Connection[Any]) -> set[tuple[str, str]]:
    """(function, argument) for every text or jsonb argument of docnum's public functions that write."""
    rows = conn.execute(
        """
        SELECT p.proname, a.name
          FROM pg_proc p
         CROSS JOIN LATERAL unnest(p.proargnames[1:p.pronargs], p.proargtypes::oid[]) AS a(name, type)
         WHERE p.pronamespace = 'docnum'::regnamespace AND p.proname !~ '^_' AND p.provolatile = 'v'
           AND a.type IN ('text'::regtype, 'jsonb'::regtype)
        """
    ).fetchall()
    return {(str(function), str(argument)) for function, argument in rows}


def test_the_table_covers_every_stored_argument(db: psycopg.Connection[Any], ready: dict[str, Any]) -> None:
    covered = {
        (function, name)
        for function, base in BASE_CALLS.items()
        for name, value in base(ready).items()
        if isinstance(value, str | Jsonb) and name not in ("token", "table_name")
    }
    assert _stored_arguments(db) - covered == set()


def _huge(value: Any) -> Any:
    return Jsonb(HUGE_JSON) if isinstance(value, Jsonb) else HUGE_TEXT


@pytest.mark.parametrize("function", sorted(BASE_CALLS))
def test_every_stored_argument_is_bounded(
    db: psycopg.Connection[Any], ready: dict[str, Any], function: str
) -> None:
    base = BASE_CALLS[function](ready)
    with db.transaction(force_rollback=True):  # the call as given works...
        db.execute(_call_sql(function, base), base)
    for name, value in base.items():
        if not isinstance(value, str | Jsonb) or name in ("token", "table_name", "number_column"):
            continue
        arguments = {**base, name: _huge(value)}
        before = footprint(db)
        error = error_of(partial(_run, db, function, arguments))
        # ...and with one argument made huge it is refused, in a few words, and changes nothing
        assert (error.sqlstate or "").startswith("NB"), f"{function}({name} => huge): {error}"
        diag = error.diag
        told = "".join(part or "" for part in (diag.message_primary, diag.message_detail, diag.message_hint))
        assert len(told) < MESSAGE_BOUND, f"{function}({name}): {len(told)} characters"
        assert footprint(db) == before


def _run(conn: psycopg.Connection[Any], function: str, arguments: dict[str, Any]) -> None:
    conn.execute(_call_sql(function, arguments), arguments)


def _call_sql(function: str, arguments: dict[str, Any]) -> str:
    named = ", ".join(f"{name} => %({name})s" for name in arguments)
    return f"SELECT * FROM docnum.{function}({named})"


def test_an_imported_row_past_its_limits_is_rejected_alone(
    db: psycopg.Connection[Any], ready: dict[str, Any]
) -> None:
    rows = [
        {"document_type": "COR", "document_number": "COR-70001", "document_ref": HUGE_TEXT},
        {"document_type": "COR", "document_number": "COR-7" + "0" * 100_000},
        {"document_type": "COR", "document_number": "COR-70002"},
    ]
    report = db.execute("SELECT status FROM docnum.import_numbers(%s) ORDER BY row_number", [Jsonb(rows)])
    assert [r[0] for r in report.fetchall()] == ["rejected", "rejected", "imported"]


def test_an_import_takes_at_most_10000_rows(db: psycopg.Connection[Any], ready: dict[str, Any]) -> None:
    rows = [{"document_type": "COR", "document_number": f"COR-{60000 + i}"} for i in range(10_001)]
    before = footprint(db)
    error = expect_error("NB006", lambda: db.execute("SELECT docnum.import_numbers(%s)", [Jsonb(rows)]))
    assert error.diag.column_name == "rows" and "10000" in (error.diag.message_detail or "")
    assert footprint(db) == before


# -- metadata ---------------------------------------------------------------------------------------------


def _metadata_of(size: int) -> dict[str, str]:
    """A JSON object whose text (as jsonb prints it) is exactly ``size`` bytes."""
    overhead = len('{"m": ""}')
    return {"m": "x" * (size - overhead)}


def test_metadata_holds_at_most_8192_bytes(db: psycopg.Connection[Any], ready: dict[str, Any]) -> None:
    at_limit, over = _metadata_of(8192), _metadata_of(8193)
    assert reserve(db, "COR", metadata=Jsonb(at_limit))["document_number"]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("reserve_number", {"document_type": "COR"}),
        ("reserve_numbers", {"document_type": "COR", "count": 2}),
        ("define_type", {"code": "META", "format": "M-{SEQ:3}"}),
        ("alter_type", {"document_type": "COR"}),
    ]
    for function, arguments in cases:
        before = footprint(db)
        values = {**arguments, "metadata": Jsonb(over)}
        error = expect_error("NB006", partial(_run, db, function, values))
        assert error.diag.column_name == "metadata", function
        assert "8192" in (error.diag.message_detail or ""), function
        assert footprint(db) == before


def test_a_batch_stores_at_most_1_mib_of_metadata(db: psycopg.Connection[Any], ready: dict[str, Any]) -> None:
    full = Jsonb(_metadata_of(8192))
    # 128 x 8192 bytes is 1 MiB exactly: allowed; one more number is not
    issued = db.execute(
        "SELECT count(*) FROM docnum.reserve_numbers('COR', 128, metadata => %s)", [full]
    ).fetchone()
    assert issued == (128,)
    before = footprint(db)
    error = expect_error(
        "NB006", lambda: db.execute("SELECT docnum.reserve_numbers('COR', 129, metadata => %s)", [full])
    )
    assert error.diag.column_name == "metadata" and "1048576" in (error.diag.message_detail or "")
    assert footprint(db) == before


@pytest.mark.parametrize("value", ["[1, 2]", '"text"', "42", "null"])
def test_metadata_is_an_object(db: psycopg.Connection[Any], ready: dict[str, Any], value: str) -> None:
    error = expect_error(
        "NB006", lambda: db.execute("SELECT docnum.reserve_number('COR', metadata => %s::jsonb)", [value])
    )
    assert error.diag.column_name == "metadata"


# -- a request key names one request ----------------------------------------------------------------------

_ACTORS = st.sampled_from([None, "alice", "bob"])
_METADATA = st.sampled_from([None, {}, {"a": 1}, {"a": 1, "b": 2}, {"a": 2}])
_TTLS = st.sampled_from([None, "10 minutes", "600 seconds", "1 hour"])
_DATES = st.sampled_from([None, "2025-03-01", "2025-03-02"])
_SCOPES = st.sampled_from(["P1", "P2"])
_REFS = st.sampled_from([None, "doc-1", "doc-2"])


@given(
    scopes=st.tuples(_SCOPES, _SCOPES),
    actors=st.tuples(_ACTORS, _ACTORS),
    metadata=st.tuples(_METADATA, _METADATA),
    ttls=st.tuples(_TTLS, _TTLS),
    dates=st.tuples(_DATES, _DATES),
)
def test_a_reserve_retry_must_repeat_every_argument(
    digest_db: psycopg.Connection[Any],
    scopes: tuple[str, str],
    actors: tuple[str | None, str | None],
    metadata: tuple[Any, Any],
    ttls: tuple[str | None, str | None],
    dates: tuple[str | None, str | None],
) -> None:
    """The first call and its retry (same request key): the retry gets the same reservation exactly when it
    asks for the same thing (an interval or object written another way is the same), else NB012."""
    key = str(uuid.uuid4())
    calls = [
        {
            "document_type": "PRJ",
            "scope": scopes[i],
            "actor": actors[i],
            "metadata": None if metadata[i] is None else Jsonb(metadata[i]),
            "ttl": ttls[i],
            "document_date": dates[i],
            "request_id": key,
        }
        for i in (0, 1)
    ]
    first = call(digest_db, "reserve_number", **calls[0])
    same = (
        scopes[0] == scopes[1]
        and actors[0] == actors[1]
        and metadata[0] == metadata[1]
        and _interval(ttls[0]) == _interval(ttls[1])
        and dates[0] == dates[1]
    )
    if same:
        assert call(digest_db, "reserve_number", **calls[1]) == first
    else:
        before = footprint(digest_db)
        error = expect_error("NB012", lambda: call(digest_db, "reserve_number", **calls[1]))
        assert "reserve_number" in (error.diag.message_detail or "")
        assert footprint(digest_db) == before


def _interval(text: str | None) -> int | None:
    return None if text is None else {"10 minutes": 600, "600 seconds": 600, "1 hour": 3600}[text]


@given(
    scopes=st.tuples(_SCOPES, _SCOPES),
    actors=st.tuples(_ACTORS, _ACTORS),
    refs=st.tuples(_REFS, _REFS),
    dates=st.tuples(_DATES, _DATES),
)
def test_a_next_number_retry_must_repeat_every_argument(
    digest_db: psycopg.Connection[Any],
    scopes: tuple[str, str],
    actors: tuple[str | None, str | None],
    refs: tuple[str | None, str | None],
    dates: tuple[str | None, str | None],
) -> None:
    key = str(uuid.uuid4())
    calls = [
        {
            "document_type": "PRJ",
            "scope": scopes[i],
            "actor": actors[i],
            "document_ref": refs[i],
            "document_date": dates[i],
            "request_id": key,
        }
        for i in (0, 1)
    ]
    first = call(digest_db, "next_number", **calls[0])
    if calls[0] == calls[1]:
        assert call(digest_db, "next_number", **calls[1]) == first
    else:
        expect_error("NB012", lambda: call(digest_db, "next_number", **calls[1]))


@pytest.fixture(scope="module")
def digest_db(server_info: Any, docnum_noproc: Any) -> Any:
    """One database for every example of the digest properties (each example uses a fresh request key)."""
    from support.helpers import create_database, drop_database

    name = f"docnum_digest_{uuid.uuid4().hex[:6]}"
    create_database(server_info, name, template=docnum_noproc.template_dbname)
    try:
        with psycopg.connect(server_info.dsn(name), autocommit=True) as conn:
            define(conn, "PRJ", "{SCOPE}/PRJ/{SEQ:6}", scope="PROJECT")
            yield conn
    finally:
        drop_database(server_info, name)


def test_a_key_used_before_its_arguments_were_kept_still_replays(db: psycopg.Connection[Any]) -> None:
    """A number issued with a request key before revision 0010 kept no digest: its retry replays as before."""
    define(db, "COR", "COR-{SEQ:5}")
    first = reserve(db, "COR", request_id="old-key", metadata=Jsonb({"a": 1}))
    db.execute("ALTER TABLE docnum.ledger DISABLE TRIGGER USER")
    db.execute("UPDATE docnum.ledger SET request_digest = NULL WHERE request_id = 'old-key'")
    db.execute("ALTER TABLE docnum.ledger ENABLE TRIGGER USER")
    assert reserve(db, "COR", request_id="old-key", metadata=Jsonb({"b": 2})) == first


# -- messages a newcomer met ----------------------------------------------------------------------------


def test_an_unknown_format_token_is_answered_with_the_tokens_there_are(db: psycopg.Connection[Any]) -> None:
    unknown = expect_error("NB006", lambda: define(db, "X", "{TYPE}-{YEAR}-{SEQ:4}"))
    assert "{YEAR}" in (unknown.diag.message_primary or "")
    assert "{YYYY}" in (unknown.diag.message_detail or "") and "width" not in (
        unknown.diag.message_detail or ""
    )
    too_wide = expect_error("NB006", lambda: define(db, "X", "X-{SEQ:40}"))
    assert "1 to 18" in (too_wide.diag.message_detail or "")


def test_confirming_a_cancelled_reservation_says_it_was_cancelled(db: psycopg.Connection[Any]) -> None:
    define(db, "COR", "COR-{SEQ:5}")
    held = reserve(db, "COR", ttl="1 hour")
    call(db, "cancel_number", token=held["token"])
    refused = expect_error("NB004", lambda: call(db, "confirm_number", token=held["token"]))
    assert "cancelled" in (refused.diag.message_primary or "")
    detail = refused.diag.message_detail or ""
    assert detail.startswith("It was cancelled at") and "expire" not in detail
