"""The manuals are tested where they show commands: what README.md, CONTRIBUTING.md and docs/*.md tell a
reader to type exists, with the options they show.

- shell blocks: every `docnum ...` names a command and only its options; every `make X` a Makefile target;
  every `benchmarks/X.py` or `tests/X.py` a script that accepts the options shown;
- SQL blocks: every `docnum.f(name => ...)` names a function of the installed schema and only its parameters;
- Python blocks: they compile, and every `numbering.method(...)` is a method of the client.

The managed-service block of docs/install.md and the Supabase SQL of docs/http-api.md are also run as written
(tests/ops/test_install.py).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import typer

import docnum
from docnum.cli.commands import app

ROOT = Path(__file__).resolve().parents[2]
MANUALS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(language: str) -> list[tuple[str, int, str]]:
    """(manual, line, text) of every fenced block in `language`."""
    found = []
    for path in MANUALS:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(rf"^```{language}\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
            found.append((path.name, text[: match.start()].count("\n") + 1, match[1]))
    return found


def _shell_commands(block: str) -> list[list[str]]:
    """The words of each command of a shell block: lines joined at a trailing backslash, comments and `$ `
    prompts dropped, split at pipes, `;`, `&&`, `&` and `$( )`; `VAR=value` prefixes and `export` left out."""
    commands: list[list[str]] = []
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
        lexer = shlex.shlex(line.strip().removeprefix("$ "), posix=True, punctuation_chars=True)
        lexer.commenters = "#"
        lexer.whitespace_split = True
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token and all(c in "();<>|&" for c in token):
                while current and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", current[0]):
                    current.pop(0)
                if current and current[0] != "export":
                    commands.append(current)
                current = []
            else:
                current.append(token)
    return commands


def _docnum_words() -> list[tuple[str, list[str]]]:
    out = []
    for manual, line, block in _blocks("sh"):
        for words in _shell_commands(block):
            if words[0] in ("docnum", ".venv/bin/docnum"):
                out.append((f"{manual}:{line}", words[1:]))
    return out


def _command(words: list[str]) -> tuple[Any, list[str], str]:
    """The command the words name (typer's click objects), the words left for it, and its path."""
    command: Any = typer.main.get_command(app)
    path = "docnum"
    while getattr(command, "commands", None) and words and not words[0].startswith("-"):
        name, words = words[0], words[1:]
        assert name in command.commands, f"{path} has no command {name!r}"
        command, path = command.commands[name], f"{path} {name}"
    return command, words, path


def test_the_docnum_commands_the_manuals_show_exist_with_their_options() -> None:
    shown = _docnum_words()
    assert len(shown) > 20
    top = typer.main.get_command(app)
    top_options = {opt for p in top.params for opt in (*p.opts, *p.secondary_opts)}
    for where, words in shown:
        words = [w for w in words if w not in top_options]  # docnum -q set ...
        if words[:1] == ["psql"]:  # the rest goes to psql
            continue
        command, rest, path = _command(words)
        options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
        for word in rest:
            if word.startswith("--") or re.fullmatch(r"-[a-zA-Z]", word):
                assert word.split("=")[0] in options, f"{where}: `{path}` has no option {word}"


def test_the_make_targets_and_scripts_the_manuals_show_exist() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M))
    scripts: dict[str, set[str]] = {}
    for manual, line, block in _blocks("sh"):
        for words in _shell_commands(block):
            if words[:1] == ["make"]:
                assert all(w in targets for w in words[1:] if "=" not in w), f"{manual}:{line}: {words}"
            script = next((w for w in words if re.fullmatch(r"(benchmarks|tests|scripts)/\w+\.py", w)), None)
            if script:
                assert (ROOT / script).is_file(), f"{manual}:{line}: {script}"
                scripts.setdefault(script, set()).update(w.split("=")[0] for w in words if w.startswith("--"))
    assert scripts, "the manuals show no script"
    for script, options in scripts.items():
        shown = subprocess.run(
            [sys.executable, str(ROOT / script), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert shown.returncode == 0, (script, shown.stderr[-2000:])
        for option in options:
            assert option in shown.stdout, f"{script} has no option {option}"


def test_the_sql_the_manuals_show_calls_functions_that_exist_with_those_arguments(
    db: psycopg.Connection[Any],
) -> None:
    parameters: dict[str, set[str]] = {}
    for name, args in db.execute(
        "SELECT p.proname, coalesce(p.proargnames, '{}') FROM pg_proc p"
        " WHERE p.pronamespace = 'docnum'::regnamespace AND p.proname !~ '^_'"
    ).fetchall():
        parameters.setdefault(name, set()).update(args)
    calls = 0
    for manual, line, block in _blocks("sql"):
        for match in re.finditer(r"\bdocnum\.([a-z_]+)\(((?:[^()]|\([^()]*\))*)\)", block):
            function, arguments = match[1], match[2]
            if function not in parameters:  # a table or view: docnum.ledger, docnum.sequence_status ...
                exists = db.execute("SELECT to_regclass(%s) IS NOT NULL", (f"docnum.{function}",)).fetchone()
                assert exists == (True,), f"{manual}:{line}: docnum.{function} does not exist"
                continue
            calls += 1
            for named in re.findall(r"\b([a-z_]+)\s*=>", arguments):
                assert named in parameters[function], f"{manual}:{line}: docnum.{function} has no {named}"
    assert calls > 30


def test_the_python_the_manuals_show_compiles_and_calls_the_client() -> None:
    blocks = _blocks("python")
    assert blocks
    for manual, line, block in blocks:
        compile(block, f"{manual}:{line}", "exec")
        for method in re.findall(r"\bnumbering\.([a-z_]+)\(", block):
            assert hasattr(docnum.Numbering, method), f"{manual}:{line}: Numbering has no {method}"


def test_every_query_of_the_dba_manual_runs_as_written(db: psycopg.Connection[Any]) -> None:
    db.execute("SELECT docnum.define_type(code => 'COR', format => '{TYPE}-{SEQ:5}', actor => 'dba')")
    db.execute("SELECT docnum.next_number(document_type => 'COR', actor => 'dba')")
    db.execute("SELECT docnum.reserve_number(document_type => 'COR', actor => 'dba', ttl => '1 second')")
    manual = ROOT / "docs" / "dba.md"
    blocks = [block for name, _, block in _blocks("sql") if name == manual.name]
    assert len(blocks) >= 7
    for block in blocks:
        db.execute(block)  # each block, all its statements, as a DBA pastes it into psql
    history = db.execute("SELECT operation FROM docnum.number_history('COR-00001')").fetchall()
    assert history == [("NEXT",)]
