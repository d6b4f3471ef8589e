"""The conventions of the ``docnum`` command line, each through a real subprocess against a real database.

``python -m docnum --dsn <this test's database> ...``: exit codes, --json, --quiet, NB001 for unknown types,
the database's hints with the argument at fault in the CLI's words, errors that name the setting to fix, a
closed pipe, Ctrl-C, history in a pipe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer

from docnum import Numbering
from docnum.cli.commands import app
from docnum.cli.hints import parameter_label
from support.helpers import wait_until_blocked

DOCNUM = [sys.executable, "-m", "docnum"]


def _env(**changes: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "DOCNUM_DSN"}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def docnum(dsn: str | None, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    command = [*DOCNUM, *(["--dsn", dsn] if dsn else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=_env(**env))


def parallel(
    *calls: Callable[[], subprocess.CompletedProcess[str]],
) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda call: call(), calls))


@pytest.fixture
def numbering(db: psycopg.Connection[Any]) -> Numbering:
    """RFA (per project, override allowed) and COR (one global counter)."""
    client = Numbering(db)
    client.define_type("RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT", allow_manual_override=True)
    client.define_type("COR", "{TYPE}-{SEQ:4}")
    return client


def test_help_shows_exit_codes_examples_and_completion() -> None:
    shown, command_help, completion = parallel(
        lambda: docnum(None, "--help"),
        lambda: docnum(None, "gaps", "--help"),
        lambda: docnum(None, "--show-completion", "bash"),
    )
    assert shown.returncode == 0
    text = " ".join(shown.stdout.replace("│", " ").split())
    assert "Exit status: 0 ok; 1 a finding" in text and "2 usage error; 130 interrupted (Ctrl-C)" in text
    assert "--install-completion" in text and "--quiet" in text
    assert "Example: docnum gaps " in command_help.stdout
    assert completion.returncode == 0 and "_DOCNUM_COMPLETE" in completion.stdout
    assert docnum(None, "next").returncode == 2  # usage: TYPE missing

    # Every command, and every command of a group (docnum server ...), shows an example of itself.
    pending = [(name, command) for name, command in typer.main.get_command(app).commands.items()]  # type: ignore[attr-defined]
    while pending:
        name, command = pending.pop()
        subcommands = getattr(command, "commands", None)
        if subcommands:
            pending += [(f"{name} {sub}", c) for sub, c in subcommands.items()]
            continue
        shown_help = f"{command.help or ''} {command.epilog or ''}"
        assert (
            f"Example: docnum {name.split()[0]}" in " ".join(shown_help.split())
            or "Example: psql" in shown_help
        ), name


def test_json_on_every_command_that_prints_data(
    db: psycopg.Connection[Any], dsn: str, numbering: Numbering, tmp_path: Path
) -> None:
    def data(*args: str, status: int = 0) -> Any:
        result = docnum(dsn, *args, "--json")
        assert result.returncode == status, result.stderr
        return json.loads(result.stdout)

    def wave(*calls: tuple[str, ...]) -> list[Any]:
        """Commands that do not depend on each other, run at once."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda args: data(*args), calls))

    defined, first, dropped, overridden, expired = wave(
        ("define-type", "INV", "{TYPE}-{SEQ:3}"),
        ("next", "COR"),
        ("reserve", "RFA", "--scope", "P1"),
        ("override", "RFA", "P1/RFA/0009", "--reason", "paper"),
        ("expire",),
    )
    assert defined["format"] == "{TYPE}-{SEQ:3}" and "render_head" not in defined
    assert first == {"document_number": "COR-0001", "document_type": "COR", "state": "confirmed"}
    assert overridden["state"] == "overridden" and expired == {"expired": 0}
    altered, held, cancelled, voided = wave(
        ("alter-type", "INV", "--max-value", "500"),
        ("reserve", "COR", "--ttl", "1 hour"),
        ("cancel", dropped["token"]),
        ("void", "COR-0001", "--reason", "twice"),
    )
    assert altered["max_value"] == 500 and cancelled["state"] == "cancelled"
    assert voided == {"document_number": "COR-0001", "state": "voided"}
    assert held["document_number"] == "COR-0002" and datetime.fromisoformat(held["expires_at"])
    assert data("confirm", held["token"])["document_number"] == "COR-0002"
    assert data("replace", "COR-0002", "--reason", "typo")["replaces"] == "COR-0002"
    assert data("set", "COR", "10", "--reason", "paper")["current_value"] == 10
    counters, found, duplicates, findings, trail = wave(
        ("status",), ("gaps", "COR"), ("check-duplicates",), ("validate",), ("history", "COR-0002")
    )
    assert [c["document_type"] for c in counters] == ["COR", "RFA"]
    assert [(g["first_value"], g["last_value"]) for g in found] == [(4, 10)]
    assert duplicates == [] and findings == []
    assert [e["operation"] for e in trail][-2:] == ["REPLACE", "REPLACE_LINK"]

    source = tmp_path / "legacy.csv"
    source.write_text("document_type,document_number\nCOR,COR-0100\nCOR,bad\n", encoding="utf-8")
    imported = data("import", str(source), status=1)
    assert (imported["imported"], imported["rejected"]) == (1, 1)
    assert [(r["line"], r["document_number"]) for r in imported["rejected_rows"]] == [(3, "bad")]


def test_quiet_prints_results_and_errors_only(dsn: str, numbering: Numbering) -> None:
    number, counter, found, healthy, failed = parallel(
        lambda: docnum(dsn, "-q", "next", "RFA", "--scope", "P1"),
        lambda: docnum(dsn, "--quiet", "set", "COR", "5", "--reason", "paper"),
        lambda: docnum(dsn, "-q", "gaps", "NOPE"),
        lambda: docnum(dsn, "-q", "validate"),
        lambda: docnum(dsn, "-q", "void", "COR-0999", "--reason", "x"),
    )
    assert (number.returncode, number.stdout, number.stderr) == (0, "P1/RFA/0001\n", "")
    assert (counter.returncode, counter.stdout, counter.stderr) == (0, "", "")
    assert found.returncode == 1 and found.stderr.startswith("error NB001: ")
    assert (healthy.returncode, healthy.stdout) == (0, "")
    assert failed.returncode == 1 and failed.stderr.startswith("error NB011: ")
    gaps = docnum(dsn, "-q", "gaps", "COR")
    assert gaps.returncode == 0 and "1..5" in gaps.stdout and "never issued" not in gaps.stdout


def test_unknown_type_is_nb001_in_every_command(dsn: str, numbering: Numbering, tmp_path: Path) -> None:
    today = datetime.now(timezone.utc).date()
    window = ["--start", (today - timedelta(days=1)).isoformat(), "--end", today.isoformat()]
    results = parallel(
        lambda: docnum(dsn, "next", "NOPE"),
        lambda: docnum(dsn, "reserve", "NOPE"),
        lambda: docnum(dsn, "override", "NOPE", "NOPE-1", "--reason", "x"),
        lambda: docnum(dsn, "set", "NOPE", "3", "--reason", "x"),
        lambda: docnum(dsn, "alter-type", "NOPE", "--max-value", "9"),
        lambda: docnum(dsn, "status", "NOPE"),
        lambda: docnum(dsn, "gaps", "NOPE"),
        lambda: docnum(dsn, "audit-export", *window, "--type", "NOPE", "-o", str(tmp_path / "x.csv")),
    )
    for result in results:
        lines = result.stderr.splitlines()
        assert result.returncode == 1, result.args
        assert lines[0] == "error NB001: document type 'NOPE' is not defined", result.args
        assert lines[1].startswith("  detail: ")
        assert lines[2] == "  hint: Define the type first; codes are upper-case, e.g. COR."
        # the argument at fault, as this command names it
        assert lines[3] == ("  option: --type" if "audit-export" in result.args else "  argument: TYPE")
        assert result.stdout == "" and "Traceback" not in result.stderr
    assert not (tmp_path / "x.csv").exists()


def test_the_cli_shows_the_database_hint_as_written_and_the_argument_in_its_own_words(
    dsn: str, db: psycopg.Connection[Any], numbering: Numbering
) -> None:
    """The hint is the database's, word for word (it is written in neutral words for every interface); the
    argument at fault (the error's COLUMN) is named as the command names it."""
    numbering.next_number("COR")
    held = numbering.reserve("COR")
    numbering.confirm(held.token)
    no_scope, refused, confirmed, long_ttl, bad_scope = parallel(
        lambda: docnum(dsn, "next", "RFA"),
        lambda: docnum(dsn, "override", "COR", "COR-0100", "--reason", "manual"),
        lambda: docnum(dsn, "cancel", str(held.token)),
        lambda: docnum(dsn, "reserve", "COR", "--ttl", "30 days"),
        lambda: docnum(dsn, "define-type", "NEW", "{TYPE}-{SEQ}", "--scope", "TEAM"),
    )
    with pytest.raises(psycopg.Error) as sql_error:
        db.execute("SELECT docnum.next_number('RFA')")
    assert no_scope.stderr.splitlines() == [
        "error NB006: document type RFA needs a scope value",
        f"  detail: {sql_error.value.diag.message_detail}",
        f"  hint: {sql_error.value.diag.message_hint}",
        "  option: --scope",
    ]
    assert sql_error.value.diag.message_hint == "Give the project identifier as the scope value, e.g. PRJ-7."
    assert "  hint: An administrator can allow manual numbers for the type." in refused.stderr
    assert "  hint: A confirmed number names a document: void it instead." in confirmed.stderr
    assert long_ttl.stderr.startswith("error NB006: ") and long_ttl.stderr.endswith("  option: --ttl\n")
    assert (
        bad_scope.stderr.startswith("error NB006: invalid scope ") and "  option: --scope" in bad_scope.stderr
    )
    for result in (no_scope, refused, confirmed, long_ttl, bad_scope):
        assert result.returncode == 1 and "=>" not in result.stderr and "docnum." not in result.stderr


def test_an_argument_only_sql_passes_keeps_its_sql_name() -> None:
    assert parameter_label("max_scopes") == "max_scopes"
    assert parameter_label("allow_manual_override") == "--allow-override"
    assert parameter_label(None) is None


def test_import_numbers_rejected_rows_by_their_line_across_multiline_cells(
    dsn: str, numbering: Numbering, tmp_path: Path
) -> None:
    source = tmp_path / "legacy.csv"
    source.write_text(
        "document_type,document_number,notes\n"  # line 1; notes is not imported
        'COR,COR-0001,"a note\nover three\nlines"\n'  # lines 2-4
        "COR,COR 2,\n"  # line 5: rejected
        "\n"  # line 6: blank
        'RFA,P1/RFA/0001,"two\nlines"\n'  # lines 7-8
        'RFA,P1-RFA-0002,"and\nagain"\n',  # lines 9-10: rejected
        encoding="utf-8",
    )
    result = docnum(dsn, "import", str(source), "--batch-size", "2")
    assert result.returncode == 1, result.stderr  # rejected rows are a finding
    assert "imported 2, already present 0, rejected 2 (4 rows in 2 batches" in result.stdout
    table = [line.split() for line in result.stdout.splitlines()]
    assert [(row[0], row[2]) for row in table if row[1:2] in (["COR"], ["RFA"])] == [
        ("5", "COR"),
        ("9", "P1-RFA-0002"),
    ]


def test_connection_and_file_errors_name_what_to_fix(dsn: str, numbering: Numbering, tmp_path: Path) -> None:
    nowhere = "postgresql:///docnum?host=/nonexistent-socket-dir"
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    today = datetime.now(timezone.utc).date().isoformat()
    by_option, by_env, embedded, file_error = parallel(
        lambda: docnum(nowhere, "status"),
        lambda: docnum(None, "status", DOCNUM_DSN=nowhere),
        lambda: docnum(None, "status", DOCNUM_DATA_DIR=str(blocker / "pgdata")),
        lambda: docnum(
            dsn, "audit-export", "--start", today, "--end", today, "-o", str(tmp_path / "no/dir.csv")
        ),
    )
    assert by_option.returncode == 1 and by_option.stderr.startswith("error connection: ")
    assert "  hint: Check --dsn" in by_option.stderr
    assert by_env.returncode == 1 and "  hint: Check DOCNUM_DSN" in by_env.stderr
    assert embedded.returncode == 1 and embedded.stderr.startswith("error setting: ")
    assert "DOCNUM_DATA_DIR" in embedded.stderr
    assert file_error.returncode == 1
    assert file_error.stderr.startswith(f"error file: cannot write {tmp_path / 'no/dir.csv'}: No such file")
    assert ".part" not in file_error.stderr and "Traceback" not in file_error.stderr


def test_a_closed_pipe_ends_quietly(db: psycopg.Connection[Any], dsn: str, numbering: Numbering) -> None:
    # 3,000 numbers two apart: 3,000 gap ranges and 3,000 audit rows, far more than a pipe buffer holds.
    numbering.import_numbers(
        [{"document_type": "COR", "document_number": f"COR-{2 * i:04}"} for i in range(1, 3001)]
    )
    today = datetime.now(timezone.utc).date().isoformat()
    for args in (["gaps", "COR"], ["audit-export", "--start", today, "--end", today, "-o", "-"]):
        process = subprocess.Popen(
            [*DOCNUM, "--dsn", dsn, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
        )
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline()
        process.stdout.close()  # what `| head -1` does
        assert process.wait(timeout=60) == 141, args
        assert process.stderr.read() == b"", args
        process.stderr.close()


def test_ctrl_c_says_what_was_left_behind(
    db: psycopg.Connection[Any],
    dsn: str,
    numbering: Numbering,
    connect: Callable[..., psycopg.Connection[Any]],
    tmp_path: Path,
) -> None:
    source = tmp_path / "legacy.csv"
    source.write_text(
        "document_type,document_number\nRFA,P1/RFA/0001\nRFA,P1/RFA/0002\nCOR,COR-0001\nCOR,COR-0002\n",
        encoding="utf-8",
    )
    # Only Ctrl-C may end batch 2's wait, never its lock timeout, however slow the machine is today.
    db.execute("SELECT docnum.alter_type(document_type => 'COR', lock_timeout => '1 hour', reason => 'test')")
    holder = connect()  # not autocommit: the transaction stays open, holding the COR counter
    holder.execute("SELECT docnum.next_number(document_type => 'COR')")
    process = subprocess.Popen(
        [*DOCNUM, "--dsn", dsn, "import", str(source), "--batch-size", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        # Ctrl-C as at a terminal: a suite started in the background (`make test &`) ignores SIGINT, and an
        # ignored signal stays ignored in every process started from it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        pid = None
        while pid is None:
            row = db.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE application_name = 'docnum-cli' AND datname = current_database()"
            ).fetchone()
            pid = row[0] if row else None
            assert process.poll() is None, process.communicate()
        wait_until_blocked(db, pid)  # batch 2 waits for the COR counter: batch 1 is committed
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        holder.rollback()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "docnum: interrupted" in stderr and "Traceback" not in stderr
    assert "import stopped in batch 2: batch 1 committed (2 rows), batch 2 rolled back" in stderr
    assert stdout == ""
    states = db.execute(
        "SELECT document_number FROM docnum.ledger WHERE state = 'imported' ORDER BY 1"
    ).fetchall()
    assert [n for (n,) in states] == ["P1/RFA/0001", "P1/RFA/0002"]


def test_history_shows_every_reason_and_stays_whole_in_a_pipe(dsn: str, numbering: Numbering) -> None:
    first = numbering.next_number("COR", actor="alice")
    reason = "the customer asked for a new number because the first letter went to the wrong address " * 2
    replacement = numbering.void_and_replace(first, actor="bob", reason=reason.strip())
    result = docnum(dsn, "history", first)
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(f[1], f[2], f[3]) for f in lines] == [
        ("NEXT", first, "alice"),
        ("VOID", first, "bob"),
        ("REPLACE", replacement, "bob"),
        ("REPLACE_LINK", first, "bob"),
    ]
    assert lines[1][4] == reason.strip() and lines[0][4] == "-"
    assert all(datetime.fromisoformat(f[0]).tzinfo is not None for f in lines)


def test_the_client_and_the_demo_load_no_cli_libraries() -> None:
    probe = (
        "import sys, docnum.cli.demo; "
        "print('typer' in sys.modules); "
        "import docnum; print(any(m in sys.modules for m in ('alembic', 'sqlalchemy')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
