"""The benchmarks stay in step with the schema: every pgbench script runs once against a migrated database set
up as benchmarks/run.py sets it up, and so does the --unconstrained what-if; run.py judges the targets
from the cells it measured; benchmarks/peer.py's two sides run for a second at 2 clients and count right."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

from support.helpers import require_or_skip

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.sql") if p.name != "unconstrained.sql")
NEXT_NUMBERS = "docnum.next_numbers(text, integer, text, text, date)"


def load_run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docnum_benchmark_run", BENCHMARKS / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_peer_module() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    import peer

    return peer


def pgbench_to_sql(script: Path, key: int) -> str:
    """A pgbench script as plain SQL: meta-commands dropped, :k and :keys replaced by `key`."""
    lines = [line for line in script.read_text().splitlines() if not line.startswith("\\")]
    return re.sub(r":(k|keys)\b", str(key), "\n".join(lines))


@pytest.fixture
def bench(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    with db.transaction():
        db.execute(load_run_module().SETUP_SQL)
    return db


def test_every_workload_references_a_script() -> None:
    run = load_run_module()
    workloads = run.WORKLOADS + run.FLOOR_WORKLOADS + run.UNCONSTRAINED_WORKLOADS
    assert {w.script_file for w in workloads} == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_each_script_runs_on_the_benchmark_setup(bench: psycopg.Connection[Any], script: Path) -> None:
    for key in (1, 1000):
        assert bench.execute(pgbench_to_sql(script, key)).fetchone() is not None


def test_the_batch_script_issues_a_hundred_consecutive_numbers(
    bench: psycopg.Connection[Any], dsn: str
) -> None:
    run = load_run_module()
    assert run.missing_functions(dsn, list(run.WORKLOADS)) == {}
    row = bench.execute(pgbench_to_sql(BENCHMARKS / "next_numbers.sql", 5)).fetchone()
    assert row == (run.BATCH,)
    values = [
        v
        for (v,) in bench.execute(
            "SELECT l.sequence_value FROM docnum.ledger l JOIN docnum.counter c USING (counter_id)"
            " WHERE c.document_type = 'BENCH' AND c.scope_value = 'P5' ORDER BY 1"
        )
    ]
    # The setup issued P5's first number; the batch, the next hundred.
    assert values == list(range(1, run.BATCH + 2))


def test_the_unconstrained_what_if_applies_and_still_allocates(bench: psycopg.Connection[Any]) -> None:
    bench.execute((BENCHMARKS / "unconstrained.sql").read_bytes())
    row = bench.execute(pgbench_to_sql(BENCHMARKS / "next_number.sql", 7)).fetchone()
    assert row is not None
    # The setup issued P7's first number; this is its second.
    assert re.fullmatch(r"P7/BENCH/\d{4}/000002", row[0])


def test_the_targets_are_judged_on_every_measure_they_name() -> None:
    run = load_run_module()
    by_name = {(w.name, w.keys): w for w in run.WORKLOADS}

    def cell(name: str, keys: int, clients: int, tps: float, p50: float, p99: float, least: float) -> Any:
        return run.Cell(by_name[(name, keys)], clients, [run.Run(tps, p50, p99, least)])

    hot = run.HOT_KEYS
    cells = {
        ("bare_upsert", hot, 8): cell("bare_upsert", hot, 8, 1000, 1, 2, 1),
        ("next_number", hot, 8): cell("next_number", hot, 8, 450, 1, 2, 1),
        ("bare_upsert", hot, 64): cell("bare_upsert", hot, 64, 1000, 10, 70, 0.5),
        ("next_number", hot, 64): cell("next_number", hot, 64, 900, 10, 50, 0.7),  # p99 5x p50, share 0.7
        ("next_numbers", hot, 8): cell("next_numbers", hot, 8, 600, 13, 20, 1),  # 60,000 numbers/s
    }
    lines = run.target_lines(cells)
    assert len(lines) == len(run.TARGETS) == 6
    assert lines[0].endswith("- met") and "vs bare 0.45" in lines[0]
    assert "not measured" in lines[1]  # no 32-client cell
    assert lines[2].endswith("- MISSED")
    assert "vs bare 0.90" in lines[2] and "p99 5.0x p50" in lines[2] and "least share 0.70" in lines[2]
    assert "not measured" in lines[3] and "not measured" in lines[4]  # no 128- or 200-client cell
    assert lines[5].endswith("- met") and "60,000 numbers/s" in lines[5]
    skipped = run.target_lines(cells, missing={"next_numbers": NEXT_NUMBERS})
    assert "skipped" in skipped[5] and NEXT_NUMBERS in skipped[5]


def test_the_default_run_has_the_hot_64_client_cell_and_the_batch_cell_at_8_only() -> None:
    run = load_run_module()
    args = run.parse_args([])
    assert args.protocol == "prepared"
    cells = run.plan_cells(run.select_workloads(args), args.clients)
    assert ("next_number", run.HOT_KEYS, 64) in cells and ("bare_upsert", run.HOT_KEYS, 64) in cells
    assert [key for key in cells if key[0] == "next_numbers"] == [("next_numbers", run.HOT_KEYS, 8)]


def test_peer_docnum_side_issues_gapless_numbers(bench: psycopg.Connection[Any], dsn: str) -> None:
    peer = load_peer_module()
    result = peer.run_docnum(dsn, clients=2, seconds=1.0)
    assert result.numbers > 0 and result.failures == 0 and result.starved == 0
    assert len(result.per_client) == 2 and len(result.latencies_us) == result.numbers
    # The setup issued P1's first number; the run every later one, without a gap or a repeat.
    assert sorted(result.values) == list(range(2, len(result.values) + 2))
    row = bench.execute(
        "SELECT max(l.sequence_value) FROM docnum.ledger l JOIN docnum.counter c USING (counter_id)"
        " WHERE c.document_type = 'BENCH' AND c.scope_value = %s",
        (peer.SCOPE,),
    ).fetchone()
    assert row == (len(result.values) + 1,)
    assert peer.check_run(result, gapless=True).endswith("unique, gapless")


def test_peer_redis_lock_side_issues_unique_numbers_and_counts_its_failures(
    db: psycopg.Connection[Any], dsn: str
) -> None:
    missing = [
        what
        for what, present in (
            ("redis-py (pip install 'docnum[bench]')", importlib.util.find_spec("redis") is not None),
            ("Debian's redis-server (apt-get install)", shutil.which("redis-server") is not None),
        )
        if not present
    ]
    if missing:
        # .ci/run installs both: under CI a missing one fails.
        require_or_skip("not installed: " + ", ".join(missing))
    peer = load_peer_module()
    peer.redlock_setup(db)
    with peer.redis_server() as port:
        result = peer.run_redlock(dsn, port, clients=2, seconds=1.0)
    assert result.numbers > 0 and not result.errors
    assert result.duplicates() == 0
    # Every success bumped the sequence and wrote one audit row; a failure (the lock still taken after the
    # Redis-lock design's retries) wrote nothing.
    current = db.execute("SELECT current_value FROM redlock.document_numbering_sequences").fetchone()
    audited = db.execute("SELECT count(*) FROM redlock.document_numbering_audit_logs").fetchone()
    assert current == audited == (len(result.values),)
    assert sorted(result.values) == list(range(1, len(result.values) + 1))


def test_peer_counts_starved_clients() -> None:
    peer = load_peer_module()
    # An equal share is 54.75 and 20 % of it 10.95: the client at 19 is served, the one at 0 starved.
    assert peer.SideRun("x", 1.0, per_client=[100, 100, 19, 0], latencies_us=[]).starved == 1
    # An equal share is 65 and 20 % of it 13: the client at 10 is starved.
    assert peer.SideRun("x", 1.0, per_client=[100, 100, 10, 50], latencies_us=[]).starved == 1


def test_peer_stops_on_a_client_that_breaks(dsn: str) -> None:
    peer = load_peer_module()

    def broken(conn: psycopg.Connection[Any], state: Any) -> int:
        raise ValueError("not a failed request: a bug")

    with pytest.raises(RuntimeError, match="2 client"):
        peer.drive("broken", dsn, clients=2, seconds=0.2, allocate=broken)


def test_every_import_of_the_benchmarks_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports inside functions too (a server is started only when asked for): a module moved elsewhere in the
    repository is found here, not by the next benchmark run."""
    import ast

    monkeypatch.syspath_prepend(str(BENCHMARKS.parent / "tests"))
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for path in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                if name.split(".")[0] in ("redis",):  # an optional extra (docnum[bench])
                    continue
                assert importlib.util.find_spec(name) is not None, f"{path.name}:{node.lineno} imports {name}"
