"""The SQL functions called the way PostgREST (and Supabase's ``rpc``) calls them: one transaction per request
with ``SET LOCAL ROLE <role claim>`` and ``request.jwt.claims`` set, functions called with named arguments.

No HTTP server here: PostgREST is the HTTP layer; these tests check what the database does for it, and the
grants docs/http-api.md's "Supabase and PostgREST" section tells users to give.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.helpers import sqlstate_of


@pytest.fixture
def types(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    db.execute("SELECT docnum.define_type(code => 'COR', format => 'COR-{SEQ:4}')")
    return db


@contextmanager
def postgrest_request(
    db: psycopg.Connection[Any], claims: dict[str, Any] | str
) -> Iterator[psycopg.Connection[Any]]:
    """What PostgREST does around one request: a transaction, the role claim as SET LOCAL ROLE, the claims
    as request.jwt.claims (both transaction-local)."""
    text = claims if isinstance(claims, str) else json.dumps(claims)
    role = json.loads(text).get("role") if isinstance(claims, dict) else "docnum_app"
    with db.transaction():
        db.execute(
            "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)", (role, text)
        )
        yield db


def ledger_actor(db: psycopg.Connection[Any], number: str) -> str | None:
    row = db.execute("SELECT actor FROM docnum.ledger WHERE document_number = %s", (number,)).fetchone()
    assert row is not None
    actor: str | None = row[0]
    return actor


def test_actor_defaults_to_the_sub_claim(types: psycopg.Connection[Any]) -> None:
    claims = {"sub": "user-42", "role": "docnum_app"}
    with postgrest_request(types, claims) as conn:
        reserved = conn.execute(
            "SELECT token, document_number FROM docnum.reserve_number(document_type => 'COR')"
        )
        token, number = reserved.fetchone() or (None, None)
    with postgrest_request(types, {"sub": "user-43", "role": "docnum_app"}) as conn:
        conn.execute("SELECT docnum.confirm_number(token => %s)", (token,))
    with postgrest_request(types, claims) as conn:
        issued = conn.execute("SELECT docnum.next_number(document_type => 'COR')").fetchone()
    assert ledger_actor(types, number) == "user-42"
    assert issued is not None and ledger_actor(types, issued[0]) == "user-42"
    confirmer = types.execute(
        "SELECT actor FROM docnum.audit_trail WHERE document_number = %s AND operation = 'CONFIRM'", (number,)
    ).fetchone()
    assert confirmer == ("user-43",)


def test_administration_records_the_sub_claim_too(types: psycopg.Connection[Any]) -> None:
    with postgrest_request(types, {"sub": "admin-7", "role": "docnum_admin"}) as conn:
        conn.execute(
            "SELECT docnum.set_counter(document_type => 'COR', value => 5, reason => 'paper register')"
        )
        conn.execute("SELECT docnum.alter_type(document_type => 'COR', max_value => 99999, reason => 'grow')")
    actors = types.execute(
        "SELECT operation, actor FROM docnum.audit_log WHERE operation IN ('SET_COUNTER', 'ALTER_TYPE')"
        " ORDER BY audit_id"
    ).fetchall()
    assert actors == [("SET_COUNTER", "admin-7"), ("ALTER_TYPE", "admin-7")]


def test_a_sub_that_is_no_valid_actor_is_refused_like_one(types: psycopg.Connection[Any]) -> None:
    def attempt() -> None:
        with postgrest_request(types, {"sub": "x" * 201, "role": "docnum_app"}) as conn:
            conn.execute("SELECT docnum.next_number(document_type => 'COR')")

    assert sqlstate_of(attempt) == "NB006"
    assert types.execute("SELECT count(*) FROM docnum.ledger").fetchone() == (0,)


def test_an_explicit_actor_wins_over_the_claim(types: psycopg.Connection[Any]) -> None:
    with postgrest_request(types, {"sub": "user-42", "role": "docnum_app"}) as conn:
        row = conn.execute(
            "SELECT docnum.next_number(document_type => 'COR', actor => 'batch-job')"
        ).fetchone()
    assert row is not None and ledger_actor(types, row[0]) == "batch-job"


@pytest.mark.parametrize("claims", ["not json", "[1, 2]", "{}"])
def test_claims_without_a_usable_sub_never_block_an_allocation(
    types: psycopg.Connection[Any], claims: str
) -> None:
    with postgrest_request(types, claims) as conn:
        row = conn.execute("SELECT docnum.next_number(document_type => 'COR')").fetchone()
    assert row is not None and ledger_actor(types, row[0]) is None


def test_the_grants_postgrest_relies_on(types: psycopg.Connection[Any]) -> None:
    """docnum_app allocates and reads its results, docnum_reader reads, a role granted nothing: nothing."""
    types.execute("DROP ROLE IF EXISTS web_anon")
    types.execute("CREATE ROLE web_anon NOLOGIN")
    try:
        with postgrest_request(types, {"sub": "u", "role": "docnum_reader"}) as conn:
            assert conn.execute("SELECT count(*) FROM docnum.status()").fetchone() is not None
        for role, call in [
            ("docnum_reader", "SELECT docnum.next_number(document_type => 'COR')"),
            ("docnum_app", "SELECT docnum.set_counter(document_type => 'COR', value => 9, reason => 'r')"),
            ("docnum_app", "SELECT * FROM docnum.audit_export(now() - interval '1 day', now())"),
            ("web_anon", "SELECT docnum.next_number(document_type => 'COR')"),
        ]:

            def attempt(role: str = role, call: str = call) -> None:
                with postgrest_request(types, {"sub": "u", "role": role}) as conn:
                    conn.execute(call)

            assert sqlstate_of(attempt) == "42501", (role, call)
        row = types.execute("SELECT count(*) FROM docnum.ledger").fetchone()
        assert row == (0,)
    finally:
        types.execute("DROP ROLE web_anon")


SUBS = st.one_of(
    st.none(),
    st.just("absent"),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.booleans(),
    st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=220),
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sub=SUBS,
    raw=st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=40),
)
@example(sub="\ud800", raw="")  # a lone surrogate: JSON may escape it, jsonb refuses it, so it names nobody
def test_any_claims_record_their_sub_or_nobody_and_never_break_an_allocation(
    types: psycopg.Connection[Any], sub: Any, raw: str
) -> None:
    """The rule for every claims value: a JSON object's scalar `sub` is the actor (a text that is no valid
    actor is refused as NB006, with nothing written); anything else names nobody."""
    if sub == "absent":
        claims, expected = json.dumps({"role": "docnum_app"}), None
    elif sub is None and raw:
        claims, expected = raw, None  # whatever text, JSON or not, without a usable sub
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("sub") is not None:
            return  # a raw text that happens to carry a sub: the other branches cover it
    else:
        claims = json.dumps({"sub": sub, "role": "docnum_app"})
        expected = None if sub is None else json.dumps(sub) if isinstance(sub, bool) else str(sub)
        if isinstance(sub, str) and any("\ud800" <= c <= "\udfff" for c in sub):
            expected = None  # PostgreSQL's jsonb cannot hold a lone surrogate: the claims are no JSON object
    before = types.execute("SELECT count(*) FROM docnum.ledger").fetchone()

    def allocate() -> str:
        with postgrest_request(types, claims) as conn:
            row = conn.execute("SELECT docnum.next_number(document_type => 'COR')").fetchone()
        assert row is not None
        return str(row[0])

    try:
        number = allocate()
    except psycopg.Error as error:
        assert error.sqlstate == "NB006" and error.diag.column_name == "actor", error
        assert isinstance(sub, str), "only a text sub can be refused"
        assert types.execute("SELECT count(*) FROM docnum.ledger").fetchone() == before
        return
    assert ledger_actor(types, number) == expected
