"""Revisions run on the newest minor release of every major, not only on the server at hand.

Current minor releases (15.20 and later) refuse an ALTER TABLE that gives a new column a default or generated
value, or changes a column's type, while a function with an SQL-standard body (`RETURN` / `BEGIN ATOMIC`)
uses the table's row type. Older minors accept it, so a revision written against one of them can break
everywhere else. Two things keep that from coming back:

- `rule_guard`: an event trigger that refuses what current minors refuse, on any server. The whole chain of
  revisions (up, down, up) runs under it, and it is shown to catch the released revision 0002 as it was.
- `pg_temp.docnum_alter_table` (migrations/session.sql): the helper revisions alter tables through. A
  property test over generated tables, functions, grants, comments and ALTERs shows that it passes the
  guard (and the real rule, on a current minor) and gives back every function exactly as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from docnum.ops import schema
from support.helpers import ServerInfo

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

Conn = psycopg.Connection[Any]

#: What current minor releases refuse, as an event trigger any server runs. Conservative: any SQL-standard
#: function that depends on the row type counts as using it.
RULE_GUARD = r"""
CREATE SCHEMA rule_guard;
CREATE TABLE rule_guard.shape (relid oid PRIMARY KEY, columns jsonb NOT NULL);

CREATE FUNCTION rule_guard.row_type_users(p_table oid) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT string_agg(DISTINCT p.oid::regprocedure::text, ', ')
    FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
    WHERE p.prosqlbody IS NOT NULL
      AND d.refclassid = 'pg_type'::regclass
      AND d.refobjid = (SELECT c.reltype FROM pg_catalog.pg_class c WHERE c.oid = p_table)
$$;

CREATE FUNCTION rule_guard.refuse(p_table oid, p_what text) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_users text := rule_guard.row_type_users(p_table);
BEGIN
    IF v_users IS NOT NULL THEN
        RAISE EXCEPTION 'current minor releases refuse this: % of table % while % uses its row type',
            p_what, p_table::regclass, v_users
            USING ERRCODE = '0A000', HINT = 'CALL pg_temp.docnum_alter_table(table, alter) instead';
    END IF;
END
$$;

-- After CREATE/ALTER TABLE: a new column with a default or a generated value, or a changed column type.
CREATE FUNCTION rule_guard.after_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    v_table oid;
    v_new jsonb;
    v_old jsonb;
BEGIN
    FOR v_table IN
        SELECT DISTINCT c.objid FROM pg_event_trigger_ddl_commands() c WHERE c.object_type = 'table'
    LOOP
        SELECT jsonb_object_agg(a.attnum, jsonb_build_array(a.atttypid, a.atthasdef OR a.attgenerated <> ''))
        INTO v_new
        FROM pg_attribute a
        WHERE a.attrelid = v_table AND a.attnum > 0 AND NOT a.attisdropped;
        SELECT s.columns INTO v_old FROM rule_guard.shape s WHERE s.relid = v_table;
        IF EXISTS (
            SELECT FROM jsonb_each(coalesce(v_new, '{}')) n LEFT JOIN jsonb_each(v_old) o ON o.key = n.key
            WHERE v_old IS NOT NULL
              AND ((o.key IS NULL AND (n.value->>1)::boolean)
                   OR (o.key IS NOT NULL AND n.value->0 <> o.value->0))
        ) THEN
            PERFORM rule_guard.refuse(v_table, 'a new column with a default, or a new column type');
        END IF;
        INSERT INTO rule_guard.shape VALUES (v_table, coalesce(v_new, '{}'))
        ON CONFLICT (relid) DO UPDATE SET columns = excluded.columns;
    END LOOP;
END
$$;

-- Any rewrite of a table (a volatile default, SET LOGGED, a type change...).
CREATE FUNCTION rule_guard.on_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
    PERFORM rule_guard.refuse(pg_event_trigger_table_rewrite_oid(), 'a rewrite');
END
$$;

CREATE EVENT TRIGGER rule_guard_ddl ON ddl_command_end WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION rule_guard.after_ddl();
CREATE EVENT TRIGGER rule_guard_rewrite ON table_rewrite EXECUTE FUNCTION rule_guard.on_rewrite();
"""


def _session_sql() -> str:
    return (schema.migrations_dir() / "session.sql").read_text(encoding="utf-8")


@pytest.fixture
def guarded(server_info: ServerInfo) -> Iterator[str]:
    """An empty database whose every CREATE/ALTER TABLE the rule guard watches; yields its conninfo."""
    name = f"docnum_minor_{uuid.uuid4().hex[:8]}"
    with server_info.scratch_database(name) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(RULE_GUARD.encode())
        yield dsn


def test_the_chain_runs_under_the_current_minors_rule(guarded: str) -> None:
    """Every revision, up to head, down to base and up again, with the rule enforced on this server."""
    schema.migrate(guarded)
    schema.downgrade(guarded, "base")
    schema.migrate(guarded)
    with psycopg.connect(guarded, autocommit=True) as conn:
        conn.execute("SELECT docnum.define_type(code => 'COR', format => '{TYPE}-{SEQ:3}')")
        assert conn.execute("SELECT docnum.next_number('COR')").fetchone() == ("COR-001",)


def test_the_guard_refuses_revision_0002_as_it_was_released(guarded: str) -> None:
    """The guard can fail: 0002's plain ALTER TABLE (before it went through the helper) is refused."""
    schema.migrate(guarded, "0001")
    with psycopg.connect(guarded) as conn, pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
        conn.execute(
            "ALTER TABLE docnum.document_type ADD COLUMN head_pattern text NOT NULL"
            " GENERATED ALWAYS AS (render_head) STORED"
        )
    assert "docnum._parse(docnum.document_type,text)" in str(refused.value)


def test_the_helper_keeps_what_it_drops(guarded: str) -> None:
    """Through pg_temp.docnum_alter_table the same ALTER passes, and the functions come back as they were."""
    schema.migrate(guarded, "0001")
    with psycopg.connect(guarded) as conn:
        before = _functions(conn, "docnum")
        conn.execute(_session_sql().encode())
        conn.execute("SET LOCAL ROLE docnum_owner")
        conn.execute(
            "CALL pg_temp.docnum_alter_table('docnum.document_type',"
            " 'ADD COLUMN extra text NOT NULL GENERATED ALWAYS AS (render_head) STORED')"
        )
        assert _functions(conn, "docnum") == before
        conn.rollback()


# -- the helper, over generated tables and functions ----------------------------------------------------

#: Bodies a generated SQL-standard function may have; `{t}` is the table, `{prev}` an earlier function.
BODIES = {
    "row parameter": ("(p {t})", "integer", "RETURN p.a"),
    "row constructor": ("()", "integer", "RETURN (ROW(1, 'x')::{t}).a"),
    "returns rows": ("()", "SETOF {t}", "BEGIN ATOMIC SELECT * FROM {t}; END"),
    "reads a column": ("()", "bigint", "RETURN (SELECT count(a) FROM {t})"),
    "calls another": ("()", "integer", "RETURN {prev}() + 1"),
    "plain": ("(p integer)", "integer", "RETURN p * 2"),
}
ALTERS = [
    "ADD COLUMN extra integer NOT NULL DEFAULT 7",
    "ADD COLUMN extra text GENERATED ALWAYS AS (b || '!') STORED",
    "ADD COLUMN extra timestamptz DEFAULT clock_timestamp()",
    "ALTER COLUMN b TYPE varchar(40)",
    "ADD COLUMN extra integer, ADD CONSTRAINT extra_positive CHECK (extra > 0)",
]
GRANTEES = ["PUBLIC", "docnum_app", "docnum_reader"]

function_specs = st.lists(
    st.tuples(
        st.sampled_from(sorted(BODIES)),
        st.lists(st.sampled_from(GRANTEES), unique=True, max_size=3),
        st.one_of(st.none(), st.text(alphabet="abc 'é", min_size=1, max_size=12)),
    ),
    min_size=1,
    max_size=5,
)


def _functions(conn: Conn, namespace: str) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proowner::regrole::text,"
        " p.proacl::text[], obj_description(p.oid, 'pg_proc')"
        " FROM pg_proc p WHERE p.pronamespace = %s::regnamespace",
        (namespace,),
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def _build(conn: Conn, specs: Any, alter: str, *, alter_first: bool) -> dict[str, tuple[Any, ...]] | str:
    """Table gen.t and the functions of `specs` over it, altered by `alter`: either first (before any function
    exists, so nothing can be in the way) or last, through the helper. The functions as they end up, or the
    SQLSTATE the build failed with; nothing is kept."""
    conn.execute("CREATE SCHEMA gen")
    conn.execute("CREATE TABLE gen.t (a integer, b text)")
    if alter_first:
        conn.execute(sql.SQL("ALTER TABLE gen.t {}").format(sql.SQL(alter)))
    callable_: list[str] = []  # functions of no argument returning one integer
    try:
        for index, (wanted, grantees, comment) in enumerate(specs):
            kind = "plain" if wanted == "calls another" and not callable_ else wanted
            arguments, returns, body = BODIES[kind]
            name = f"gen.f{index}"
            conn.execute(
                f"CREATE FUNCTION {name}{arguments.format(t='gen.t')} RETURNS {returns.format(t='gen.t')}"
                f" LANGUAGE sql {body.format(t='gen.t', prev=callable_[-1] if callable_ else '')}"
            )
            if arguments == "()" and returns in ("integer", "bigint"):
                callable_.append(name)
            if grantees != ["PUBLIC"]:
                conn.execute(f"REVOKE ALL ON FUNCTION {name} FROM PUBLIC")
                for grantee in grantees:
                    conn.execute(f"GRANT EXECUTE ON FUNCTION {name} TO {grantee}")
            if comment is not None:
                conn.execute(
                    sql.SQL("COMMENT ON FUNCTION {} IS {}").format(sql.SQL(name), sql.Literal(comment))
                )
        if not alter_first:
            conn.execute(_session_sql().encode())
            conn.execute(sql.SQL("CALL pg_temp.docnum_alter_table('gen.t', {})").format(sql.Literal(alter)))
        return _functions(conn, "gen")
    except psycopg.Error as error:
        return str(error.sqlstate)
    finally:
        conn.rollback()


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=function_specs, alter=st.sampled_from(ALTERS))
def test_property_the_helper_alters_as_if_the_functions_came_after(
    guarded: str, specs: Any, alter: str
) -> None:
    """For any table, SQL-body functions over it (chained, granted, commented) and ALTER, the helper (run
    where the rule is enforced) leaves exactly what altering first and creating the functions afterwards
    leaves: each function with its definition, owner, grants and comment, or the same failure (a row
    constructor of the table's type meets a new column). A body whose `SELECT *` was expanded when it was made
    cannot take a new column: there the helper stops with a clear error and changes nothing, where a bare
    ALTER on an older minor would have left a function that fails when called."""
    with psycopg.connect(guarded) as conn:
        through_helper = _build(conn, specs, alter, alter_first=False)
        altered_first = _build(conn, specs, alter, alter_first=True)
        assert conn.execute("SELECT to_regnamespace('gen')").fetchone() == (None,)
    if "TYPE" in alter and isinstance(through_helper, dict) and isinstance(altered_first, dict):
        # A kept body carries the types its expressions had (`'x'::text`, then a cast to the column's new
        # type) where a new one casts straight to it: the same meaning, worded apart. All else is equal.
        through_helper = {name: row[1:] for name, row in through_helper.items()}
        altered_first = {name: row[1:] for name, row in altered_first.items()}
    if through_helper != altered_first:
        # A kept body whose columns were fixed when it was made (`SELECT *`) no longer fits: a clear error.
        assert through_helper == "42P13", (through_helper, altered_first)
        assert any(kind == "returns rows" for kind, _, _ in specs) and "ADD COLUMN" in alter
