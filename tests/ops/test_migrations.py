"""The released migrations and sql/ must build the same schema, and downgrade must undo upgrade.

Schemas are compared as a normalised `pg_dump --schema-only -n docnum` (owners and grants included), made
with the embedded pg_dump 18, which can dump older servers too.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from docnum.ops import schema
from support.helpers import ServerInfo


def _dbname(label: str) -> str:
    return f"docnum_mig_{label}_{uuid.uuid4().hex[:8]}"


def dump_schema(server: ServerInfo, dbname: str, pg_bindir: Path) -> list[str]:
    """`pg_dump --schema-only -n docnum`, without what differs between two runs of the same schema.

    Dropped: comments (`--` lines, which include pg_dump's headers), blank lines, the `\\restrict` /
    `\\unrestrict` lines whose key pg_dump 17.6+/18 draws at random on every run, and the `pg_attver` column
    option that current minor releases (15.20) stamp on each column when it is made, which differs between
    two databases of the same schema.
    """
    result = subprocess.run(
        [
            str(pg_bindir / "pg_dump"),
            "--schema-only",
            "--schema=docnum",
            f"--dbname={server.conninfo_without_password(dbname)}",
        ],
        env=server.libpq_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"pg_dump of {dbname} failed:\n{result.stderr}")
    lines = []
    for line in result.stdout.splitlines():
        stripped = _without_server_stamps(line.rstrip())
        if not stripped or stripped.startswith("--"):
            continue
        if stripped.startswith(("\\restrict", "\\unrestrict")):
            continue
        lines.append(stripped)
    return lines


#: A column option the current minor releases stamp on every column they create, different in every database.
_ATTVER = re.compile(r"pg_attver=\d+")
_EMPTY_COLUMN_OPTIONS = re.compile(r"^ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET \(\s*\);$")


def _without_server_stamps(line: str) -> str:
    """`line` without the `pg_attver` column option (a statement left setting nothing becomes empty)."""
    if "pg_attver=" not in line:
        return line
    line = _ATTVER.sub("", line)
    line = re.sub(r"\(\s*,\s*", "(", re.sub(r",\s*(?=[,)])", "", line))
    return "" if _EMPTY_COLUMN_OPTIONS.match(line) else line


def assert_same_schema(
    expected: list[str], actual: list[str], expected_name: str, actual_name: str, hint: str = ""
) -> None:
    if expected != actual:
        diff = "\n".join(
            difflib.unified_diff(expected, actual, fromfile=expected_name, tofile=actual_name, lineterm="")
        )
        message = f"schema docnum differs between {expected_name} and {actual_name}:\n{diff}"
        pytest.fail(f"{message}\n{hint}" if hint else message, pytrace=False)


def _has_docnum_schema(server: ServerInfo, dbname: str) -> bool:
    with server.connect(dbname) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'docnum'").fetchone() is not None


def _alembic_revisions(server: ServerInfo, dbname: str) -> list[str]:
    with server.connect(dbname) as conn:
        rows = conn.execute("SELECT version_num FROM public.alembic_version ORDER BY 1").fetchall()
        return [row[0] for row in rows]


def test_migrations_match_sql_dir(server_info: ServerInfo, pg_bindir: Path) -> None:
    """alembic upgrade head gives exactly the schema of sql/*.sql (else: refreeze or add a migration)."""
    from_sql, from_alembic = _dbname("sql"), _dbname("alembic")
    with server_info.scratch_database(from_sql), server_info.scratch_database(from_alembic) as alembic_dsn:
        with server_info.connect(from_sql, autocommit=True) as conn:
            applied = schema.apply_sql_dir(conn)
        assert applied, "sql/ holds no .sql files"
        schema.migrate(alembic_dsn)

        assert_same_schema(
            dump_schema(server_info, from_sql, pg_bindir),
            dump_schema(server_info, from_alembic, pg_bindir),
            "sql/*.sql",
            "alembic upgrade head",
            hint="sql/ changed without a migration: add a revision whose frozen SQL brings the released "
            "schema to sql/ (released revisions never change).",
        )


def test_downgrade_then_upgrade_restores_schema(server_info: ServerInfo, pg_bindir: Path) -> None:
    name = _dbname("roundtrip")
    with server_info.scratch_database(name) as dsn:
        schema.migrate(dsn)
        before = dump_schema(server_info, name, pg_bindir)
        head = _alembic_revisions(server_info, name)

        schema.downgrade(dsn, "base")
        assert _alembic_revisions(server_info, name) == []
        schema.migrate(dsn, "head")

        assert _alembic_revisions(server_info, name) == head
        assert_same_schema(
            before, dump_schema(server_info, name, pg_bindir), "first upgrade", "downgrade+upgrade"
        )


def test_downgrade_to_the_first_release_restores_its_schema(server_info: ServerInfo, pg_bindir: Path) -> None:
    name = _dbname("steps")
    with server_info.scratch_database(name) as dsn:
        schema.migrate(dsn, "0001")
        released = dump_schema(server_info, name, pg_bindir)
        schema.migrate(dsn, "head")
        assert _alembic_revisions(server_info, name) != ["0001"]

        schema.downgrade(dsn, "0001")

        assert _alembic_revisions(server_info, name) == ["0001"]
        after = dump_schema(server_info, name, pg_bindir)
        assert_same_schema(released, after, "upgrade 0001", "head, then down to 0001")


def test_downgrade_base_removes_schema(server_info: ServerInfo) -> None:
    name = _dbname("down")
    with server_info.scratch_database(name) as dsn:
        schema.migrate(dsn)
        assert _has_docnum_schema(server_info, name)

        schema.downgrade(dsn)

        assert not _has_docnum_schema(server_info, name)
        assert _alembic_revisions(server_info, name) == []


def test_revision_0003_carries_the_data_of_0002(server_info: ServerInfo) -> None:
    """Types at the old unpadded max_value move to 2^63 - 2 (audited); registered tables keep their names."""
    name = _dbname("data3")
    with server_info.scratch_database(name) as dsn:
        schema.migrate(dsn, "0002")
        with server_info.connect(name, autocommit=True) as conn:
            conn.execute("SELECT docnum.define_type(code => 'BIG', format => '{TYPE}-{SEQ}')")
            conn.execute("SELECT docnum.next_number('BIG')")
            conn.execute("CREATE TABLE public.invoices (number text)")
            conn.execute("CREATE TABLE public.gone (number text)")
            conn.execute("GRANT SELECT ON public.invoices, public.gone TO docnum_owner")
            for table in ("public.invoices", "public.gone"):
                conn.execute("SELECT docnum.register_document_table(%s, 'number')", (table,))
            conn.execute("DROP TABLE public.gone")
        schema.migrate(dsn, "0003")
        with server_info.connect(name, autocommit=True) as conn:
            assert conn.execute("SELECT max_value FROM docnum.document_type").fetchone() == (2**63 - 2,)
            audited = conn.execute(
                "SELECT old_value, new_value FROM docnum.audit_log WHERE actor = 'migration 0003'"
            ).fetchall()
            assert audited == [({"max_value": 2**63 - 1}, {"max_value": 2**63 - 2})]
            assert conn.execute(
                "SELECT schema_name, table_name, number_column FROM docnum.document_table"
            ).fetchall() == [("public", "invoices", "number")]
            assert conn.execute("SELECT docnum.next_number('BIG')").fetchone() == ("BIG-2",)
            conn.execute("INSERT INTO public.invoices VALUES ('BIG-1'), ('BIG-1')")
            assert [row[0] for row in conn.execute("SELECT check_name FROM docnum.validate()")] == [
                "duplicate_number"
            ]
        schema.downgrade(dsn, "0002")
        with server_info.connect(name, autocommit=True) as conn:
            assert conn.execute("SELECT table_name::text FROM docnum.document_table").fetchall() == [
                ("invoices",)
            ]


def test_revision_0007_counts_the_numbers_issued_before_it(server_info: ServerInfo, pg_bindir: Path) -> None:
    """The metrics start from what the ledger already holds, and stepping down to 0006 restores its schema
    (the failure sequences of existing types included)."""
    name = _dbname("data7")
    with server_info.scratch_database(name) as dsn:
        schema.migrate(dsn, "0006")
        released = dump_schema(server_info, name, pg_bindir)
        with server_info.connect(name, autocommit=True) as conn:
            conn.execute("SELECT docnum.define_type(code => 'OLD', format => '{TYPE}-{SEQ}')")
            conn.execute("SELECT docnum.next_numbers('OLD', 3)")
            token = conn.execute("SELECT token FROM docnum.reserve_number('OLD')").fetchone()
            assert token is not None
            conn.execute("SELECT docnum.cancel_number(%s)", (token[0],))
            conn.execute("SELECT docnum.reserve_number('OLD')")
        schema.migrate(dsn, "0007")
        with server_info.connect(name, autocommit=True) as conn:
            found = {
                (metric, label): value
                for metric, _, label, value in conn.execute("SELECT * FROM docnum.metrics()").fetchall()
            }
            assert found[("sequences_total", "")] == 5
            assert found[("reservations", "pending")] == 1
            assert found[("reservations", "cancelled")] == 1
            assert found[("errors_total", "NB002")] == 0
            sequence = conn.execute("SELECT to_regclass('docnum.\"OLD:NB003\"') IS NOT NULL").fetchone()
            assert sequence == (True,)
        schema.downgrade(dsn, "0006")
        with server_info.connect(name, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM docnum.ledger").fetchone() == (5,)
        after = dump_schema(server_info, name, pg_bindir)
        assert_same_schema(released, after, "upgrade 0006", "0007, then 0006")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ALTER TABLE ONLY docnum.counter ALTER COLUMN period SET (pg_attver=65138520);", ""),
        (
            "ALTER TABLE ONLY docnum.counter ALTER COLUMN period SET (n_distinct=5, pg_attver=1);",
            "ALTER TABLE ONLY docnum.counter ALTER COLUMN period SET (n_distinct=5);",
        ),
        (
            "ALTER TABLE ONLY docnum.counter ALTER COLUMN period SET (pg_attver=1, n_distinct=5);",
            "ALTER TABLE ONLY docnum.counter ALTER COLUMN period SET (n_distinct=5);",
        ),
        ("    current_value bigint DEFAULT 0 NOT NULL,", "    current_value bigint DEFAULT 0 NOT NULL,"),
    ],
)
def test_the_schema_dump_ignores_only_the_column_stamp(line: str, expected: str) -> None:
    assert _without_server_stamps(line) == expected


def test_revision_0009_gives_every_existing_counter_its_queue_row(
    server_info: ServerInfo, pg_bindir: Path
) -> None:
    """Counters made before 0009 get their turn (a docnum.counter_queue row) and keep numbering from where
    they were; stepping down to 0008 restores its schema exactly."""
    name = _dbname("data9")
    with server_info.scratch_database(name) as dsn:
        schema.migrate(dsn, "0008")
        with server_info.connect(name, autocommit=True) as conn:
            conn.execute(
                "SELECT docnum.define_type(code => 'OLD', format => '{SCOPE}-{SEQ}', scope => 'PROJECT')"
            )
            for scope in ("A", "B", "A"):
                conn.execute("SELECT docnum.next_number('OLD', %s)", (scope,))
        released = dump_schema(server_info, name, pg_bindir)
        schema.migrate(dsn, "0009")
        with server_info.connect(name, autocommit=True) as conn:
            queued = conn.execute(
                "SELECT q.scope_value, q.counter_id = c.counter_id FROM docnum.counter_queue q"
                " JOIN docnum.counter c USING (document_type, scope_value, period) ORDER BY 1"
            ).fetchall()
            assert queued == [("A", True), ("B", True)]
            assert conn.execute("SELECT docnum.next_number('OLD', 'A')").fetchone() == ("A-3",)
            assert conn.execute("SELECT docnum.next_number('OLD', 'C')").fetchone() == ("C-1",)
            assert conn.execute("SELECT count(*) FROM docnum.counter_queue").fetchone() == (3,)
        schema.downgrade(dsn, "0008")
        with server_info.connect(name, autocommit=True) as conn:
            assert conn.execute("SELECT docnum.next_number('OLD', 'B')").fetchone() == ("B-2",)
        assert_same_schema(
            released, dump_schema(server_info, name, pg_bindir), "upgrade 0008", "0009, then 0008"
        )
