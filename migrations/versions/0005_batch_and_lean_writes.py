"""batch allocation (next_numbers, reserve_numbers); a leaner write set (the ledger row audits an allocation)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

The upgrade runs the frozen 0005_batch_and_lean_writes.sql next to this file: four ledger columns, the view
docnum.audit_trail, and the functions. The downgrade, 0005_batch_and_lean_writes_down.sql, first copies the
allocations recorded only by ledger rows into docnum.audit_log, then puts back exactly revision 0004. Neither
file changes again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import context, op

revision: str = "0005"
down_revision: str | None = "0004"
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
    _run("0005_batch_and_lean_writes.sql")


def downgrade() -> None:
    _run("0005_batch_and_lean_writes_down.sql")
