"""Released revisions are frozen (migrations/frozen.sha256), and a new revision gets its own runner."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def _manifest() -> dict[str, tuple[str, list[str]]]:
    """file -> (sha256, why it changed after release)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    last = ""
    for line in (MIGRATIONS / "frozen.sha256").read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("    changed: "):
            entries[last][1].append(line.removeprefix("    changed: "))
            continue
        digest, last = line.split("  ", 1)
        entries[last] = (digest, [])
    return entries


def test_every_revision_file_matches_its_frozen_checksum() -> None:
    manifest = _manifest()
    on_disk = {
        path.relative_to(MIGRATIONS).as_posix(): path
        for path in (MIGRATIONS / "versions").iterdir()
        if path.suffix in {".py", ".sql"}
    }
    assert set(on_disk) == set(manifest), "frozen.sha256 lists exactly the files of migrations/versions/"
    for name, path in sorted(on_disk.items()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == manifest[name][0], (
            f"{name} changed (sha256 {digest}). A released revision is frozen: put the change in a new"
            " revision, or, if a PostgreSQL release refuses one of its steps, record the new sum and why."
        )
        assert all(len(reason) > 40 for reason in manifest[name][1]), name


def test_the_template_writes_a_revision_that_runs_its_own_sql(tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, scripts)
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    head = ScriptDirectory.from_config(config).get_current_head()
    command.revision(config, message="a new rule", rev_id="9999")
    written = scripts / "versions" / "9999_a_new_rule.py"
    assert f"down_revision: str | None = {head!r}" in written.read_text(encoding="utf-8")
    spec = importlib.util.spec_from_file_location("revision_9999", written)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (module.UP_SQL.name, module.DOWN_SQL.name) == ("9999_a_new_rule.sql", "9999_a_new_rule_down.sql")
    assert module.UP_SQL.parent == scripts / "versions"
    assert callable(module.upgrade) and callable(module.downgrade)
