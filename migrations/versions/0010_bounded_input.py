"""bounded input: metadata and imports have limits, a request key names its arguments

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

The upgrade runs the frozen 0010_bounded_input.sql next to this file, the downgrade the frozen
0010_bounded_input_down.sql, which puts back exactly what revision 0009 made. Neither file changes again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import context, op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent


def _run(file_name: str) -> None:
    sql = (HERE / file_name).read_text(encoding="utf-8")
    if context.is_offline_mode():
        op.get_context().impl.static_output(sql)
        return
    # As in 0001: straight to psycopg, so `:name` inside PL/pgSQL bodies is not taken for a bind parameter.
    psycopg_conn = op.get_bind().connection.driver_connection
    assert psycopg_conn is not None
    psycopg_conn.execute(sql.encode("utf-8"))


def upgrade() -> None:
    _run("0010_bounded_input.sql")


def downgrade() -> None:
    _run("0010_bounded_input_down.sql")
