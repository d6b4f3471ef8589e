"""hints in neutral words, the argument at fault named in COLUMN

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

The upgrade runs the SQL file of the same name next to this one, the downgrade its _down.sql twin, which puts
back exactly what the previous revision made. Write them with scripts/function_delta.py (functions) and by
hand around its output (tables: pg_temp.docnum_alter_table). Once released, neither file nor this one changes
again: migrations/frozen.sha256 holds their checksums (CONTRIBUTING.md, "Writing a revision").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import context, op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UP_SQL = Path(__file__).with_suffix(".sql")
DOWN_SQL = UP_SQL.with_name(UP_SQL.stem + "_down.sql")


def _run(path: Path) -> None:
    sql = path.read_text(encoding="utf-8")
    if context.is_offline_mode():
        op.get_context().impl.static_output(sql)
        return
    # Straight to psycopg, so `:name` inside PL/pgSQL bodies is not taken for a bind parameter.
    psycopg_conn = op.get_bind().connection.driver_connection
    assert psycopg_conn is not None
    psycopg_conn.execute(sql.encode("utf-8"))


def upgrade() -> None:
    _run(UP_SQL)


def downgrade() -> None:
    _run(DOWN_SQL)
