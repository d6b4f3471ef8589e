"""Static checks of the engine: plpgsql_check over every PL/pgSQL function in schema docnum.

The extension (Debian: postgresql-15-plpgsql-check, which .ci/run installs) is created in this test's database
and checks every function with every warning class on (other, extra, performance, security, compatibility);
trigger functions are checked against each table that fires them. Any finding must be in ALLOWED, with a line
saying why it is acceptable, and every ALLOWED entry must still be found, so the list stays exact.

Without the extension the test skips, except under CI ($CI set) on PostgreSQL 15, where it must run.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from support.helpers import in_ci

Conn = psycopg.Connection[Any]

# (function, message) -> why this finding is acceptable. Line numbers are left out: they move with every edit.
ALLOWED: dict[tuple[str, str], str] = {
    ("docnum._prepare", 'composite OUT variable "o_type" is not single argument'): (
        "by design: the checked document_type row comes back whole, as o_type, beside o_scope and o_date"
    ),
    ("docnum.check_duplicates", "routine is marked as VOLATILE, should be STABLE"): (
        "dynamic SQL over the registered tables, whose volatility plpgsql_check cannot see; VOLATILE is the"
        " safe claim for a SECURITY INVOKER report that reads whatever the caller registered"
    ),
}

CHECK_ARGUMENTS = (
    "fatal_errors => false, other_warnings => true, extra_warnings => true, performance_warnings => true,"
    " security_warnings => true, compatibility_warnings => true"
)


def _require_extension(db: Conn) -> None:
    if db.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'plpgsql_check'").fetchone():
        return
    major = db.info.server_version // 10000
    message = f"plpgsql_check is not available on this PostgreSQL {major} server"
    if in_ci() and major == 15:
        pytest.fail(
            message + "; CI installs postgresql-15-plpgsql-check (.ci/run), so this check must run",
            pytrace=False,
        )
    pytest.skip(message)


def _findings(db: Conn) -> tuple[list[dict[str, Any]], int]:
    """Every finding of plpgsql_check in schema docnum, and how many (function, relation) pairs it checked."""
    with db.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            WITH functions AS (
                SELECT DISTINCT p.oid, p.oid::regprocedure::text AS signature, t.tgrelid AS relid
                  FROM pg_catalog.pg_proc p
                  JOIN pg_catalog.pg_language l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
                  LEFT JOIN pg_catalog.pg_trigger t
                    ON p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype AND t.tgfoid = p.oid
                 WHERE p.pronamespace = 'docnum'::regnamespace
            )
            SELECT f.signature, f.relid::regclass::text AS relation, c.lineno, c.statement,
                   c.sqlstate, c.message, c.detail, c.hint, c.level, c.context
              FROM functions f
              LEFT JOIN LATERAL plpgsql_check_function_tb(f.oid, coalesce(f.relid, 0), """
            + CHECK_ARGUMENTS
            + """) c ON true
             ORDER BY f.signature, f.relid, c.lineno
            """
        )
        rows = cur.fetchall()
    checked = len({(row["signature"], row["relation"]) for row in rows})
    return [row for row in rows if row["message"] is not None], checked


def _key(finding: dict[str, Any]) -> tuple[str, str]:
    """(function name without its argument types, message): the ALLOWED key of a finding."""
    return str(finding["signature"]).split("(")[0], str(finding["message"])


def _describe(finding: dict[str, Any]) -> str:
    where = f" on {finding['relation']}" if finding["relation"] else ""
    line = f" line {finding['lineno']}" if finding["lineno"] else ""
    extra = "; ".join(str(finding[key]) for key in ("detail", "hint", "context") if finding[key])
    return f"{finding['level']}: {finding['signature']}{where}{line}: {finding['message']}" + (
        f" ({extra})" if extra else ""
    )


def test_plpgsql_check_finds_nothing_unexplained(db: Conn) -> None:
    _require_extension(db)
    db.execute("CREATE EXTENSION IF NOT EXISTS plpgsql_check")
    findings, checked = _findings(db)
    assert checked >= 20, f"only {checked} PL/pgSQL functions found in schema docnum"

    unexplained = [_describe(finding) for finding in findings if _key(finding) not in ALLOWED]
    found = {_key(finding) for finding in findings}
    stale = [f"{name}: {message}" for name, message in ALLOWED if (name, message) not in found]
    assert not unexplained, (
        "plpgsql_check findings that are neither fixed nor explained in ALLOWED:\n" + "\n".join(unexplained)
    )
    assert not stale, "ALLOWED entries plpgsql_check no longer reports (remove them):\n" + "\n".join(stale)
