"""the actor of a call that names none: the sub claim of request.jwt.claims

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

The upgrade runs the frozen 0008_claimed_actor.sql next to this file: a public function called without an
actor records the `sub` claim of request.jwt.claims (set per transaction by PostgREST, Supabase and docnum
serve) through docnum._claimed_actor(). The downgrade, 0008_claimed_actor_down.sql, puts back exactly revision
0007. Neither file changes again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import context, op

revision: str = "0008"
down_revision: str | None = "0007"
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
    _run("0008_claimed_actor.sql")


def downgrade() -> None:
    _run("0008_claimed_actor_down.sql")
