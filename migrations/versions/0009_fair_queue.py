"""the fair queue: a counter's turn is the lock of a row only docnum can take

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

The upgrade runs the frozen 0009_fair_queue.sql next to this file, the downgrade the frozen
0009_fair_queue_down.sql, which puts back exactly what revision 0008 made. Neither file changes again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import context, op

revision: str = "0009"
down_revision: str | None = "0008"
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
    _run("0009_fair_queue.sql")


def downgrade() -> None:
    _run("0009_fair_queue_down.sql")
