"""Privileges: nothing for PUBLIC, everything owned by a NOLOGIN non-superuser, pinned SECURITY DEFINER
functions, and each docnum role able to do exactly what the contract grants it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from helpers import call, cancel, confirm, define, error_of, footprint, next_number, reserve, sqlstate_of

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]

TABLES = ["document_type", "counter", "ledger", "audit_log"]
PUBLIC_FUNCTIONS = {
    "define_type",
    "alter_type",
    "reserve_number",
    "confirm_number",
    "cancel_number",
    "next_number",
    "expire_reservations",
}


@pytest.fixture
def cor(db: Conn) -> str:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    return "COR"


def as_role(connect: Connect, role: str) -> Conn:
    conn = connect(autocommit=True)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return conn


# --- Catalog ------------------------------------------------------------------------------------------------
# Read-only checks of the catalog; one database serves them all, each is reported as its own subtest.


def check_no_function_in_the_schema_is_executable_by_public(db: Conn) -> None:
    rows = db.execute(
        "SELECT p.oid::regprocedure::text, has_function_privilege('public', p.oid, 'EXECUTE')"
        "  FROM pg_proc p WHERE p.pronamespace = 'docnum'::regnamespace"
    ).fetchall()
    assert {name.split("(")[0].removeprefix("docnum.") for name, _ in rows} >= PUBLIC_FUNCTIONS
    assert [name for name, executable in rows if executable] == []


def check_no_acl_entry_grants_anything_to_public(db: Conn) -> None:
    # aclexplode lists grantee 0 for PUBLIC; a NULL ACL means the default, which includes PUBLIC EXECUTE.
    rows = db.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " WHERE p.pronamespace = 'docnum'::regnamespace"
        "   AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))"
        " UNION ALL "
        "SELECT c.oid::regclass::text FROM pg_class c"
        " WHERE c.relnamespace = 'docnum'::regnamespace"
        "   AND EXISTS (SELECT 1 FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a"
        "               WHERE a.grantee = 0)"
    ).fetchall()
    assert rows == []


def check_public_cannot_use_the_schema_or_read_the_tables(db: Conn) -> None:
    assert db.execute("SELECT has_schema_privilege('public', 'docnum', 'USAGE')").fetchone() == (False,)
    for table in TABLES:
        row = db.execute(
            "SELECT has_table_privilege('public', %s, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')",
            (f"docnum.{table}",),
        ).fetchone()
        assert row == (False,), table


def check_everything_is_owned_by_docnum_owner_a_nologin_non_superuser(db: Conn) -> None:
    owner = db.execute(
        "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles"
        " WHERE rolname = 'docnum_owner'"
    ).fetchone()
    assert owner == (False, False, False, False, False)
    wrong = db.execute(
        "SELECT 'schema', nspname FROM pg_namespace"
        " WHERE nspname = 'docnum' AND nspowner <> 'docnum_owner'::regrole"
        " UNION ALL SELECT 'relation', oid::regclass::text FROM pg_class"
        " WHERE relnamespace = 'docnum'::regnamespace AND relowner <> 'docnum_owner'::regrole"
        " UNION ALL SELECT 'function', oid::regprocedure::text FROM pg_proc"
        " WHERE pronamespace = 'docnum'::regnamespace AND proowner <> 'docnum_owner'::regrole"
        " UNION ALL SELECT 'type', oid::regtype::text FROM pg_type"
        " WHERE typnamespace = 'docnum'::regnamespace AND typowner <> 'docnum_owner'::regrole"
    ).fetchall()
    assert wrong == []
    tables = db.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'docnum'::regnamespace AND relkind = 'r'"
    ).fetchall()
    assert {name for (name,) in tables} >= set(TABLES)


def check_public_functions_are_security_definer_with_a_pinned_search_path(db: Conn) -> None:
    rows = db.execute(
        "SELECT proname, prosecdef, coalesce(proconfig, '{}') FROM pg_proc"
        " WHERE pronamespace = 'docnum'::regnamespace"
    ).fetchall()
    by_name = {name: (definer, config) for name, definer, config in rows}
    assert set(by_name) >= PUBLIC_FUNCTIONS
    # Every function without a leading underscore is public API (administration and reports included).
    for name, (definer, config) in by_name.items():
        if name.startswith("_"):
            continue
        assert definer, f"{name} is not SECURITY DEFINER"
        assert "search_path=pg_catalog, pg_temp" in config, f"{name}: {config}"
    # Whatever else runs with the owner's rights pins its search_path too.
    unpinned = [
        name
        for name, (definer, config) in by_name.items()
        if definer and not any(c.startswith("search_path=") for c in config)
    ]
    assert unpinned == []


def check_no_docnum_role_may_write_any_table(db: Conn) -> None:
    rows = db.execute(
        "SELECT r.rolname, c.oid::regclass::text FROM pg_class c"
        " CROSS JOIN (VALUES ('docnum_app'), ('docnum_reader'), ('docnum_admin')) AS r (rolname)"
        " WHERE c.relnamespace = 'docnum'::regnamespace AND c.relkind IN ('r', 'p')"
        "   AND has_table_privilege(r.rolname, c.oid,"
        "                           'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')"
    ).fetchall()
    assert rows == []


def check_reader_may_read_every_table_and_view(db: Conn) -> None:
    rows = db.execute(
        "SELECT c.oid::regclass::text FROM pg_class c"
        " WHERE c.relnamespace = 'docnum'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')"
        "   AND NOT has_table_privilege('docnum_reader', c.oid, 'SELECT')"
    ).fetchall()
    assert rows == []


CATALOG_CHECKS = [
    check_no_function_in_the_schema_is_executable_by_public,
    check_no_acl_entry_grants_anything_to_public,
    check_public_cannot_use_the_schema_or_read_the_tables,
    check_everything_is_owned_by_docnum_owner_a_nologin_non_superuser,
    check_public_functions_are_security_definer_with_a_pinned_search_path,
    check_no_docnum_role_may_write_any_table,
    check_reader_may_read_every_table_and_view,
]


def test_catalog_privileges_and_ownership(db: Conn, subtests: pytest.Subtests) -> None:
    for check in CATALOG_CHECKS:
        with subtests.test(msg=check.__name__.removeprefix("check_")):
            check(db)


def test_the_callers_search_path_cannot_hijack_the_engine(db: Conn, cor: str) -> None:
    # A caller who puts a schema of their own before pg_catalog must not change what the engine computes.
    db.execute(
        "CREATE FUNCTION public.lpad(text, integer, text) RETURNS text"
        " LANGUAGE sql AS $$ SELECT 'HIJACKED' $$"
    )
    db.execute(
        "CREATE FUNCTION public.now() RETURNS timestamptz"
        " LANGUAGE sql AS $$ SELECT '2001-01-01'::timestamptz $$"
    )
    db.execute("SET search_path = public, pg_catalog")
    assert next_number(db, cor) == "COR-00001"
    assert reserve(db, cor)["expires_at"].year > 2001


# --- docnum_app ---------------------------------------------------------------------------------------------


def test_app_can_allocate(db: Conn, connect: Connect, cor: str) -> None:
    app = as_role(connect, "docnum_app")
    reservation = reserve(app, cor, actor="u1")
    assert confirm(app, reservation["token"]) == "COR-00001"
    assert cancel(app, reserve(app, cor)["token"]) == "COR-00002"
    assert next_number(app, cor) == "COR-00003"
    assert call(app, "expire_reservations")["expire_reservations"] == 0
    for table in ("document_type", "counter", "ledger"):
        app.execute(sql.SQL("SELECT * FROM docnum.{}").format(sql.Identifier(table))).fetchall()


WRITES = {
    "INSERT": "INSERT INTO docnum.{table} DEFAULT VALUES",
    "UPDATE": "UPDATE docnum.{table} SET {column} = {column}",
    "DELETE": "DELETE FROM docnum.{table}",
    "TRUNCATE": "TRUNCATE docnum.{table}",
}
SOME_COLUMN = {
    "document_type": "metadata",
    "counter": "last_used_at",
    "ledger": "actor",
    "audit_log": "actor",
}


@pytest.mark.parametrize("role", ["docnum_app", "docnum_reader", "docnum_admin"])
def test_no_role_writes_a_table_directly(
    db: Conn, connect: Connect, cor: str, role: str, subtests: pytest.Subtests
) -> None:
    next_number(db, cor)
    before = footprint(db)
    conn = as_role(connect, role)
    for table in TABLES:
        for operation, template in WRITES.items():
            statement = template.format(table=table, column=SOME_COLUMN[table])
            with subtests.test(msg=f"{operation} {table}"):
                assert sqlstate_of(lambda s=statement: conn.execute(s)) == "42501"  # type: ignore[misc]
    assert footprint(db) == before


def test_app_cannot_administer_types_or_read_the_audit_log(connect: Connect, cor: str) -> None:
    app = as_role(connect, "docnum_app")
    assert sqlstate_of(lambda: define(app, "NEW", "{TYPE}-{SEQ:4}")) == "42501"
    assert sqlstate_of(lambda: call(app, "alter_type", document_type=cor, max_value=5)) == "42501"
    assert sqlstate_of(lambda: app.execute("SELECT * FROM docnum.audit_log")) == "42501"


# --- docnum_reader ------------------------------------------------------------------------------------------


def test_reader_reads_everything_but_cannot_allocate(db: Conn, connect: Connect, cor: str) -> None:
    next_number(db, cor)
    reader = as_role(connect, "docnum_reader")
    assert reader.execute("SELECT count(*) FROM docnum.audit_log").fetchone() == (2,)
    for table in ("document_type", "counter", "ledger"):
        reader.execute(sql.SQL("SELECT * FROM docnum.{}").format(sql.Identifier(table))).fetchall()
    before = footprint(db)
    assert sqlstate_of(lambda: reserve(reader, cor)) == "42501"
    assert sqlstate_of(lambda: next_number(reader, cor)) == "42501"
    assert sqlstate_of(lambda: define(reader, "NEW", "{TYPE}-{SEQ:4}")) == "42501"
    assert footprint(db) == before


# --- docnum_admin -------------------------------------------------------------------------------------------


def test_admin_defines_alters_allocates_and_reads(connect: Connect) -> None:
    admin = as_role(connect, "docnum_admin")
    define(admin, "ADM", "{TYPE}-{SEQ:3}", actor="admin")
    call(admin, "alter_type", document_type="ADM", max_value=500, actor="admin")
    assert next_number(admin, "ADM") == "ADM-001"
    assert admin.execute("SELECT count(*) FROM docnum.audit_log").fetchone() == (3,)


# --- Roles without docnum grants ----------------------------------------------------------------------------


@pytest.fixture
def outsider(db: Conn) -> Iterator[str]:
    """A role with no docnum grants at all (roles are cluster-wide: it is dropped afterwards)."""
    name = f"docnum_test_outsider_{uuid.uuid4().hex[:8]}"
    db.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_a_role_without_grants_cannot_allocate(db: Conn, outsider: str, cor: str, connect: Connect) -> None:
    # `outsider` comes before `connect`: its connections are closed before the role is dropped.
    token = reserve(db, cor)["token"]
    before = footprint(db)
    conn = as_role(connect, outsider)
    for action in (
        lambda: reserve(conn, cor),
        lambda: next_number(conn, cor),
        lambda: confirm(conn, token),
        lambda: cancel(conn, token),
        lambda: call(conn, "expire_reservations"),
        lambda: conn.execute("SELECT * FROM docnum.ledger"),
    ):
        assert error_of(action).sqlstate == "42501"
    assert footprint(db) == before
