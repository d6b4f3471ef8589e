"""per-row ledger rules for writers other than docnum's own functions; permanent counters

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

The upgrade runs the frozen 0006_row_rules_trigger.sql next to this file: the CHECK ledger_row_check and the
foreign key ledger_counter_fkey on docnum.ledger give way to one row trigger, ledger_verify_row, that applies
the same rules with the same errors to every writer but docnum_owner (whose SECURITY DEFINER functions write
the rows the rules describe), and docnum.counter becomes permanent (no DELETE or TRUNCATE), so no number can
lose its counter. The downgrade, 0006_row_rules_trigger_down.sql, puts back exactly revision 0005 (adding the
constraints back validates every row). Neither file changes again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import context, op

revision: str = "0006"
down_revision: str | None = "0005"
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
    _run("0006_row_rules_trigger.sql")


def downgrade() -> None:
    _run("0006_row_rules_trigger_down.sql")
