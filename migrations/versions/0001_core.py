"""core: schema docnum, its roles, tables, functions and grants

Revision ID: 0001
Revises:
Create Date: 2025-11-23

The SQL is frozen in 0001_core.sql next to this file (made by scripts/freeze_sql.py from sql/*.sql). Once
released, neither file changes again: later revisions carry their own SQL, and sql/ moves on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import context, op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL_FILE = Path(__file__).with_suffix(".sql")


def upgrade() -> None:
    sql = SQL_FILE.read_text(encoding="utf-8")
    if context.is_offline_mode():
        op.get_context().impl.static_output(sql)
        return
    # Straight to psycopg, in the migration's transaction: SQLAlchemy's text() would take the `:name`
    # sequences inside the PL/pgSQL bodies for bind parameters. With no parameters psycopg sends the whole
    # file as one simple-protocol query, so it may hold many statements.
    psycopg_conn = op.get_bind().connection.driver_connection
    assert psycopg_conn is not None
    psycopg_conn.execute(sql.encode("utf-8"))


def downgrade() -> None:
    # Roles are cluster-wide (other databases may use them), so they stay. The schema's owner drops it: an
    # installer that is not a superuser may become docnum_owner but does not hold its rights.
    op.execute("SET LOCAL ROLE docnum_owner")
    op.execute("DROP SCHEMA IF EXISTS docnum CASCADE")
    op.execute("RESET ROLE")
