"""The catalog documents itself: `\\df+ docnum.*` and `\\d+` show a comment on every public function and on
every column of docnum's tables and views, and docs/sql-api.md covers the same functions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg

from docnum.codes import CODES

Conn = psycopg.Connection[Any]
ROLES = ("docnum_app", "docnum_reader", "docnum_admin")

PUBLIC_FUNCTIONS = """
SELECT p.oid::regprocedure::text, p.proname, obj_description(p.oid, 'pg_proc'), p.prosrc,
       coalesce((SELECT array_agg(DISTINCT r.rolname::text ORDER BY r.rolname::text)
                   FROM aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
                  WHERE r.rolname = ANY (%s)), '{}')
  FROM pg_proc p
 WHERE p.pronamespace = 'docnum'::regnamespace
   AND (p.proname !~ '^_' OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
                                      WHERE r.rolname = ANY (%s)))
 ORDER BY 1
"""


def test_every_public_function_says_what_it_does_returns_and_raises(db: Conn) -> None:
    rows = db.execute(PUBLIC_FUNCTIONS, (list(ROLES), list(ROLES))).fetchall()
    assert len(rows) >= 23
    known = {row.code for row in CODES}
    for signature, name, comment, body, granted in rows:
        assert comment, f"COMMENT ON FUNCTION {signature} is missing (sql/95_comments.sql)"
        assert f"Role: {', '.join(granted)}." in comment, (signature, granted)
        named = set(re.findall(r"NB\d{3}", comment))
        assert named <= known, (signature, named - known)
        if name.startswith("_"):
            continue
        assert "Raises" in comment, signature
        # a code the function raises in its own body is named in its comment
        raised = set(re.findall(r"ERRCODE\s*=\s*'(NB\d{3})'", body))
        assert raised <= named, (signature, raised - named)


def test_every_column_of_the_tables_and_views_is_documented(db: Conn) -> None:
    missing = db.execute(
        "SELECT c.relname || '.' || a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE c.relnamespace = 'docnum'::regnamespace AND c.relkind IN ('r', 'v', 'p')"
        "   AND a.attnum > 0 AND NOT a.attisdropped AND col_description(c.oid, a.attnum) IS NULL"
    ).fetchall()
    assert missing == [], "COMMENT ON COLUMN missing (sql/95_comments.sql)"
    undocumented = db.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'docnum'::regnamespace"
        " AND c.relkind IN ('r', 'v', 'p') AND obj_description(c.oid, 'pg_class') IS NULL"
    ).fetchall()
    assert undocumented == []


def test_the_sql_manual_covers_every_public_function(db: Conn) -> None:
    manual = (Path(__file__).resolve().parents[2] / "docs" / "sql-api.md").read_text(encoding="utf-8")
    names = {
        row[0]
        for row in db.execute(
            "SELECT p.proname FROM pg_proc p"
            " WHERE p.pronamespace = 'docnum'::regnamespace AND p.proname !~ '^_'"
        ).fetchall()
    }
    # every function is shown with its signature in the manual
    assert {name for name in names if f"docnum.{name}(" not in manual} == set()
