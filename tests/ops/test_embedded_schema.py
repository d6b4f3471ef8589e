"""The embedded database always runs the installed package's schema: commands install it or upgrade it."""

from __future__ import annotations

import uuid

import pytest
from alembic.script import ScriptDirectory

from docnum.cli.support import prepare_embedded_schema
from docnum.ops import schema
from docnum.ops.schema import head_revision
from support.helpers import ServerInfo


def test_head_revision_is_alembics_single_head() -> None:
    heads = ScriptDirectory.from_config(schema.alembic_config("postgresql:///unused")).get_heads()
    assert heads == [head_revision()]


def test_an_older_schema_is_upgraded_and_a_current_one_left_alone(
    server_info: ServerInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"docnum_embedded_{uuid.uuid4().hex[:8]}"
    with server_info.scratch_database(name) as dsn:
        schema.migrate(dsn, "0006")
        prepare_embedded_schema(dsn, quiet=False)
        assert "upgrading (from revision 0006) schema docnum" in capsys.readouterr().err
        with server_info.connect(name) as conn:
            assert conn.execute("SELECT version_num FROM public.alembic_version").fetchone() == (
                head_revision(),
            )
            assert conn.execute(
                "SELECT to_regprocedure('docnum.metrics(integer)') IS NOT NULL"
            ).fetchone() == (True,)
        prepare_embedded_schema(dsn, quiet=False)
        assert capsys.readouterr().err == ""


def test_a_missing_schema_is_installed(server_info: ServerInfo, capsys: pytest.CaptureFixture[str]) -> None:
    name = f"docnum_embedded_{uuid.uuid4().hex[:8]}"
    with server_info.scratch_database(name) as dsn:
        prepare_embedded_schema(dsn, quiet=True)
        assert capsys.readouterr().err == ""
        with server_info.connect(name) as conn:
            assert conn.execute("SELECT version_num FROM public.alembic_version").fetchone() == (
                head_revision(),
            )
