#!/usr/bin/env python3
"""Write the function part of a new Alembic revision: what turns the functions of one schema into another's.

    python scripts/function_delta.py --revision 0002 --up up.sql --down down.sql

Builds two scratch databases on the server named by DOCNUM_DSN (or the embedded one): one migrated to
`--revision`, one from sql/*.sql. It compares the functions of schema docnum in both and writes, for the
upgrade, the DROPs of functions whose signature or result changed or that are gone, then the full text of
every new or changed function (pg_get_functiondef, so the catalog ends up identical) with its privileges;
the downgrade is the same in the other direction. Table, index and trigger changes are not its business: the
revision's author writes them around this output, and tests/ops/test_migrations.py proves the result. The
output is frozen into the revision; this script is not run by the migrations themselves.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python_client"))

from docnum.ops import embedded, schema

FUNCTIONS = """
SELECT p.oid, p.oid::regprocedure::text AS signature, pg_get_function_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result, pg_get_functiondef(p.oid) AS definition, p.prolang,
       l.lanname AS language,
       coalesce((SELECT array_agg(format('GRANT %s ON FUNCTION %s TO %I;', a.privilege_type,
                                         p.oid::regprocedure, r.rolname) ORDER BY r.rolname)
                   FROM aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
                  WHERE a.grantee <> p.proowner), '{}') AS grants
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'docnum'::regnamespace
"""

# Which docnum functions a function's body depends on (new-style SQL bodies record them in pg_depend).
DEPENDS = """
SELECT d.objid::regprocedure::text, d.refobjid::regprocedure::text
  FROM pg_depend d
 WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_proc'::regclass
   AND d.objid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'docnum'::regnamespace)
   AND d.refobjid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'docnum'::regnamespace)
"""


def read(conninfo: str) -> tuple[dict[str, dict[str, Any]], set[tuple[str, str]]]:
    with (
        psycopg.connect(conninfo, autocommit=True) as conn,
        conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
    ):
        functions = {row["signature"]: row for row in cur.execute(FUNCTIONS)}
        depends = {(a, b) for a, b in conn.execute(DEPENDS).fetchall()}
    return functions, depends


def ordered(names: set[str], depends: set[tuple[str, str]], reverse: bool = False) -> list[str]:
    """`names` with every function after the functions it depends on (before them when `reverse`)."""
    result: list[str] = []
    pending = sorted(names)
    while pending:
        ready = [n for n in pending if not any(a == n and b in pending and b != n for a, b in depends)]
        if not ready:
            raise SystemExit(f"circular dependencies among {pending}")
        result += ready
        pending = [n for n in pending if n not in ready]
    return list(reversed(result)) if reverse else result


def delta(
    source: tuple[dict[str, dict[str, Any]], set[tuple[str, str]]],
    target: tuple[dict[str, dict[str, Any]], set[tuple[str, str]]],
) -> str:
    old, old_depends = source
    new, new_depends = target
    dropped = {
        s
        for s in old
        if s not in new or (old[s]["arguments"], old[s]["result"]) != (new[s]["arguments"], new[s]["result"])
    }
    created = {s for s in new if s not in old or s in dropped or old[s]["definition"] != new[s]["definition"]}
    regranted = {s for s in new if s not in created and old[s]["grants"] != new[s]["grants"]}
    out = []
    for signature in ordered(dropped, old_depends, reverse=True):
        out.append(f"DROP FUNCTION docnum.{signature.removeprefix('docnum.')};\n")
    if dropped:
        out.append("\n")
    plpgsql = {s for s in created if new[s]["language"] != "sql"}
    for signature in sorted(plpgsql) + ordered(created - plpgsql, new_depends):
        row = new[signature]
        out.append(row["definition"].rstrip() + ";\n")
        out.append(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC;\n")
        out.extend(grant + "\n" for grant in row["grants"])
        out.append("\n")
    for signature in sorted(regranted):
        out.append(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC;\n")
        for grant in old[signature]["grants"]:
            out.append(grant.replace("GRANT ", "REVOKE ", 1).replace(" TO ", " FROM ", 1) + "\n")
        out.extend(grant + "\n" for grant in new[signature]["grants"])
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--revision", required=True, help="the revision the new one follows")
    parser.add_argument("--up", type=Path, required=True)
    parser.add_argument("--down", type=Path, required=True)
    args = parser.parse_args()

    dsn = embedded.resolve_dsn()
    if dsn:
        names = {label: f"docnum_delta_{label}_{uuid.uuid4().hex[:8]}" for label in ("old", "new")}
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        with psycopg.connect(dsn, autocommit=True) as admin:
            for name in names.values():
                admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        try:
            conninfos = {k: psycopg.conninfo.make_conninfo(**{**info, "dbname": v}) for k, v in names.items()}
            schema.migrate(conninfos["old"], args.revision)
            with psycopg.connect(conninfos["new"], autocommit=True) as conn:
                schema.apply_sql_dir(conn)
            old, new = read(conninfos["old"]), read(conninfos["new"])
            args.up.write_text(delta(old, new), encoding="utf-8")
            args.down.write_text(delta(new, old), encoding="utf-8")
        finally:
            with psycopg.connect(dsn, autocommit=True) as admin:
                for name in names.values():
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
