"""Privileges: nothing for PUBLIC, everything owned by a NOLOGIN non-superuser, pinned SECURITY DEFINER
functions, and each docnum role able to do exactly what the contract grants it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from support.helpers import (
    call,
    cancel,
    confirm,
    define,
    error_of,
    footprint,
    next_number,
    reserve,
    sqlstate_of,
)

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]

TABLES = ["document_type", "counter", "ledger", "audit_log"]
# The reports that read registered application tables do it with their caller's rights.
INVOKER_FUNCTIONS = {"check_duplicates", "validate", "doctor"}
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
    # Every function without a leading underscore is public API (administration and reports included); the
    # ones that read the application's registered tables run with their caller's rights, never the owner's.
    for name, (definer, config) in by_name.items():
        if name.startswith("_"):
            continue
        if name in INVOKER_FUNCTIONS:
            assert not definer, f"{name} must be SECURITY INVOKER: it reads the application's tables (doctor:"
            " through validate())"
        else:
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
    assert reader.execute("SELECT count(*) FROM docnum.audit_trail").fetchone() == (2,)
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
    assert admin.execute("SELECT count(*) FROM docnum.audit_trail").fetchone() == (3,)


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


# --- Registered application tables: nothing of theirs runs as docnum_owner ---------------------------------
# Whatever docnum reads that a user supplies (a view, a policy, a cast, an operator, a default, a trigger) is
# code. The reports read registered tables with their caller's rights, and only plain tables with a text or
# varchar column at that; each attack below plants code that records who ran it and tries to take the schema
# over, and shows that it never ran as docnum_owner (here: that it never ran at all).

EVIL_BODY = """
BEGIN
    INSERT INTO public.attack_log (who) VALUES (current_user::text);
    BEGIN
        EXECUTE 'ALTER TABLE docnum.audit_log DISABLE TRIGGER USER';
        EXECUTE 'GRANT UPDATE ON docnum.counter TO PUBLIC';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN {value};
END
"""


@pytest.fixture
def attack_log(db: Conn) -> str:
    """public.attack_log records every run of the attacker's code; public.evil_text() is that code."""
    db.execute("CREATE TABLE public.attack_log (who text)")
    db.execute("GRANT INSERT, SELECT ON public.attack_log TO PUBLIC")
    db.execute(
        "CREATE FUNCTION public.evil_text() RETURNS text LANGUAGE plpgsql AS $$"
        + EVIL_BODY.format(value="'COR-00001'")
        + "$$"
    )
    db.execute(
        "CREATE FUNCTION public.evil_bool() RETURNS boolean LANGUAGE plpgsql AS $$"
        + EVIL_BODY.format(value="true")
        + "$$"
    )
    db.execute("GRANT EXECUTE ON FUNCTION public.evil_text(), public.evil_bool() TO PUBLIC")
    return "public.attack_log"


def docnum_state(conn: Conn) -> Any:
    """What the attacker tries to change: the audit log's triggers and the grants on docnum's tables."""
    return conn.execute(
        "SELECT (SELECT array_agg((t.tgname, t.tgenabled)::text ORDER BY t.tgname) FROM pg_trigger t"
        "         WHERE t.tgrelid = 'docnum.audit_log'::regclass),"
        "       (SELECT array_agg((c.relname, c.relacl)::text ORDER BY c.relname) FROM pg_class c"
        "         WHERE c.relnamespace = 'docnum'::regnamespace)"
    ).fetchone()


def assert_attack_never_ran(db: Conn, state_before: Any) -> None:
    who = [w for (w,) in db.execute("SELECT who FROM public.attack_log").fetchall()]
    assert "docnum_owner" not in who
    assert who == []
    assert docnum_state(db) == state_before


def plant(db: Conn, schema: str, table: str, column: str) -> None:
    """A registration register_document_table() refuses, written as the superuser: an old registration, a
    restore, or a table that became something else since. The reports must still not read it."""
    db.execute(
        "INSERT INTO docnum.document_table (schema_name, table_name, number_column) VALUES (%s, %s, %s)",
        (schema, table, column),
    )


def register(conn: Conn, table: str, column: str) -> Any:
    return conn.execute(
        "SELECT docnum.register_document_table(table_name => %s, number_column => %s)", (table, column)
    )


def unchecked(rows: list[dict[str, Any]]) -> list[str]:
    return [r["found_in"][0] for r in rows if r["problem"] is not None]


def check_duplicates_rows(conn: Conn) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM docnum.check_duplicates()").fetchall()


def validate_findings(conn: Conn) -> list[tuple[str, str]]:
    return [(c, d) for c, _, d in conn.execute("SELECT * FROM docnum.validate()").fetchall()]


def refused_registration(conn: Conn, table: str, column: str) -> psycopg.Error:
    error = error_of(lambda: register(conn, table, column))
    assert error.sqlstate == "NB006", error
    assert error.diag.message_detail and error.diag.message_hint
    return error


def test_admin_cannot_take_the_schema_over_with_a_temporary_view(
    db: Conn, connect: Connect, cor: str, attack_log: str
) -> None:
    # The outside suite's attack: docnum_admin has nothing but the default TEMP privilege.
    next_number(db, cor)
    state = docnum_state(db)
    before = footprint(db)
    admin = as_role(connect, "docnum_admin")
    admin.execute(
        "CREATE FUNCTION pg_temp.evil() RETURNS text LANGUAGE plpgsql AS $$"
        + EVIL_BODY.format(value="'COR-00001'")
        + "$$"
    )
    admin.execute("CREATE TEMP VIEW numbers AS SELECT pg_temp.evil() AS n")
    temp_schema = admin.execute("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()").fetchone()

    error = refused_registration(admin, "pg_temp.numbers", "n")
    assert "temporary" in (error.diag.message_detail or "")
    assert footprint(db) == before

    assert temp_schema is not None
    plant(db, temp_schema[0], "numbers", "n")
    assert unchecked(check_duplicates_rows(admin)) == [f"{temp_schema[0]}.numbers"]
    reader = as_role(connect, "docnum_reader")
    assert [c for c, _ in validate_findings(reader)] == ["document_table_unchecked"]
    assert [c for c, _ in validate_findings(admin)] == ["document_table_unchecked"]
    assert_attack_never_ran(db, state)
    assert has_update_on_counter(db) is False


def has_update_on_counter(db: Conn) -> bool:
    row = db.execute("SELECT has_table_privilege('docnum_admin', 'docnum.counter', 'UPDATE')").fetchone()
    assert row is not None
    return bool(row[0])


def test_a_view_in_an_ordinary_schema_is_never_read(
    db: Conn, connect: Connect, cor: str, attack_log: str
) -> None:
    db.execute("CREATE VIEW public.invoice_numbers AS SELECT public.evil_text() AS n")
    db.execute("GRANT SELECT ON public.invoice_numbers TO PUBLIC")
    state = docnum_state(db)
    before = footprint(db)
    admin = as_role(connect, "docnum_admin")

    error = refused_registration(admin, "public.invoice_numbers", "n")
    assert "view" in (error.diag.message_detail or "")
    assert footprint(db) == before

    plant(db, "public", "invoice_numbers", "n")
    reader = as_role(connect, "docnum_reader")
    (finding,) = validate_findings(reader)
    assert finding[0] == "document_table_unchecked" and "view" in finding[1]
    assert unchecked(check_duplicates_rows(reader)) == ["public.invoice_numbers"]
    assert_attack_never_ran(db, state)


def test_a_table_swapped_for_a_view_after_registration_is_never_read(
    db: Conn, connect: Connect, cor: str, attack_log: str
) -> None:
    db.execute("CREATE TABLE public.invoices (doc_no text)")
    db.execute("GRANT SELECT ON public.invoices TO docnum_reader")
    register(as_role(connect, "docnum_admin"), "public.invoices", "doc_no")
    db.execute("DROP TABLE public.invoices")
    db.execute("CREATE VIEW public.invoices AS SELECT public.evil_text() AS doc_no")
    db.execute("GRANT SELECT ON public.invoices TO docnum_reader")
    state = docnum_state(db)

    reader = as_role(connect, "docnum_reader")
    assert [c for c, _ in validate_findings(reader)] == ["document_table_unchecked"]
    assert_attack_never_ran(db, state)


@pytest.mark.parametrize(
    "column_type",
    [
        # a domain over text, whose CHECK calls the attacker's function
        "CREATE DOMAIN public.doc_no AS text CHECK (public.evil_bool())",
        # a type of the attacker's with its own cast to text and its own equality operator
        "CREATE TYPE public.doc_no AS (v text);"
        " CREATE FUNCTION public.doc_no_text(public.doc_no) RETURNS text LANGUAGE sql"
        "   AS $$ SELECT public.evil_text() $$;"
        " CREATE CAST (public.doc_no AS text) WITH FUNCTION public.doc_no_text(public.doc_no);"
        " CREATE FUNCTION public.doc_no_eq(public.doc_no, public.doc_no) RETURNS boolean LANGUAGE sql"
        "   AS $$ SELECT public.evil_bool() $$;"
        " CREATE OPERATOR public.= (LEFTARG = public.doc_no, RIGHTARG = public.doc_no,"
        "                           FUNCTION = public.doc_no_eq)",
    ],
    ids=["domain", "user_type"],
)
def test_a_column_of_a_user_defined_type_is_never_read(
    db: Conn, connect: Connect, cor: str, attack_log: str, column_type: str
) -> None:
    db.execute(column_type)
    db.execute("CREATE TABLE public.invoices (doc_no public.doc_no)")
    db.execute("GRANT SELECT ON public.invoices TO PUBLIC")
    db.execute("TRUNCATE public.attack_log")  # the domain's CHECK may have run at CREATE; only reads count
    state = docnum_state(db)
    admin = as_role(connect, "docnum_admin")

    error = refused_registration(admin, "public.invoices", "doc_no")
    assert "not text or varchar" in (error.diag.message_detail or "")

    plant(db, "public", "invoices", "doc_no")
    assert unchecked(check_duplicates_rows(admin)) == ["public.invoices"]
    assert [c for c, _ in validate_findings(as_role(connect, "docnum_reader"))] == [
        "document_table_unchecked"
    ]
    assert_attack_never_ran(db, state)


def test_a_table_with_row_security_is_never_read(
    db: Conn, connect: Connect, cor: str, attack_log: str
) -> None:
    db.execute("CREATE TABLE public.invoices (doc_no text)")
    db.execute("INSERT INTO public.invoices VALUES ('COR-00001'), ('COR-00001')")
    db.execute("ALTER TABLE public.invoices ENABLE ROW LEVEL SECURITY")
    db.execute("CREATE POLICY everyone ON public.invoices USING (public.evil_bool())")
    db.execute("GRANT SELECT ON public.invoices TO PUBLIC")
    state = docnum_state(db)
    admin = as_role(connect, "docnum_admin")

    error = refused_registration(admin, "public.invoices", "doc_no")
    assert "row level security" in (error.diag.message_detail or "")

    plant(db, "public", "invoices", "doc_no")
    assert unchecked(check_duplicates_rows(admin)) == ["public.invoices"]
    assert [c for c, _ in validate_findings(as_role(connect, "docnum_reader"))] == [
        "document_table_unchecked"
    ]
    assert_attack_never_ran(db, state)


def test_a_table_with_a_default_and_a_trigger_is_read_without_running_them(
    db: Conn, connect: Connect, cor: str, attack_log: str
) -> None:
    number = next_number(db, cor)
    db.execute("CREATE TABLE public.invoices (id int, doc_no text)")
    db.execute("INSERT INTO public.invoices VALUES (1, %s), (2, %s)", (number, number))
    db.execute("ALTER TABLE public.invoices ALTER COLUMN doc_no SET DEFAULT public.evil_text()")
    db.execute(
        "CREATE FUNCTION public.evil_trigger() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM public.evil_text(); RETURN NEW; END $$"
    )
    db.execute(
        "CREATE TRIGGER evil BEFORE INSERT OR UPDATE OR DELETE ON public.invoices"
        " FOR EACH ROW EXECUTE FUNCTION public.evil_trigger()"
    )
    db.execute("GRANT SELECT ON public.invoices TO docnum_reader")
    state = docnum_state(db)
    admin = as_role(connect, "docnum_admin")

    register(admin, "public.invoices", "doc_no")  # a plain table: accepted

    reader = as_role(connect, "docnum_reader")
    (duplicate,) = check_duplicates_rows(reader)
    assert (duplicate["document_number"], duplicate["occurrences"]) == (number, 3)
    assert [c for c, _ in validate_findings(reader)] == ["duplicate_number"]
    assert_attack_never_ran(db, state)


@pytest.mark.parametrize("table", ["docnum.ledger", "docnum.audit_log", "pg_catalog.pg_class", "temporary"])
def test_docnum_s_own_catalog_and_temporary_tables_cannot_be_registered(
    db: Conn, connect: Connect, cor: str, table: str
) -> None:
    next_number(db, cor)
    admin = as_role(connect, "docnum_admin")
    column = {"docnum.ledger": "document_number", "docnum.audit_log": "document_number"}.get(table, "relname")
    if table == "temporary":
        admin.execute("CREATE TEMP TABLE numbers (relname text)")
        table = "pg_temp.numbers"
    before = footprint(db)

    error = refused_registration(admin, table, column)

    assert "not to the application" in (error.diag.message_detail or "")
    assert footprint(db) == before


def test_reports_read_registered_tables_with_the_caller_s_rights(
    db: Conn, connect: Connect, cor: str
) -> None:
    number = next_number(db, cor)
    db.execute("CREATE TABLE public.invoices (doc_no varchar(40))")
    db.execute("INSERT INTO public.invoices VALUES (%s), (%s)", (number, number))
    register(as_role(connect, "docnum_admin"), "public.invoices", "doc_no")
    reader = as_role(connect, "docnum_reader")

    # docnum_owner could read it no more than the reader can: a finding, not an error, not a silent pass.
    assert db.execute(
        "SELECT has_table_privilege('docnum_owner', 'public.invoices', 'SELECT')"
    ).fetchone() == (False,)
    (finding,) = validate_findings(reader)
    assert finding[0] == "document_table_unchecked" and "docnum_reader may not read it" in finding[1]

    db.execute("GRANT SELECT ON public.invoices TO docnum_reader")
    assert [c for c, _ in validate_findings(reader)] == ["duplicate_number"]
