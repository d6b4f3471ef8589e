"""metrics from the database: per-counter counts, failure sequences, docnum.metrics()

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

The upgrade runs the frozen 0007_metrics.sql next to this file: each counter keeps the counts the metrics read
(numbers issued, reservations, allocation calls, lock waits by bucket), moved by the allocation's own UPDATE;
a sequence per type and error code counts the failures that roll back (NB002, NB003); two partial indexes and
docnum.metrics() give `docnum metrics` its figures at scrape time. The downgrade, 0007_metrics_down.sql, puts
back exactly revision 0006. Neither file changes again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import context, op

revision: str = "0007"
down_revision: str | None = "0006"
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
    _run("0007_metrics.sql")


def downgrade() -> None:
    _run("0007_metrics_down.sql")
