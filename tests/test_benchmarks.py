"""The benchmark's SQL stays in step with the schema: every pgbench script runs once against a migrated
database set up as benchmarks/run.py sets it up, and so does the --unconstrained what-if."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.sql") if p.name != "unconstrained.sql")


def load_run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docnum_benchmark_run", BENCHMARKS / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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


def test_the_unconstrained_what_if_applies_and_still_allocates(bench: psycopg.Connection[Any]) -> None:
    bench.execute((BENCHMARKS / "unconstrained.sql").read_bytes())
    row = bench.execute(pgbench_to_sql(BENCHMARKS / "next_number.sql", 7)).fetchone()
    assert row is not None
    # The setup issued P7's first number; this is its second.
    assert re.fullmatch(r"P7/BENCH/\d{4}/000002", row[0])
