#!/usr/bin/env python3
"""One hot counter under many clients: docnum beside the bare upsert, the cliff, and what a burst leaves.

    python benchmarks/cliff.py                                   # 0006 and head, 8 64 128 200 clients
    python benchmarks/cliff.py --engines 0006 0008 head --clients 64 128 --runs 3 --seconds 8
    python benchmarks/cliff.py --engines head probe=head+whatif.sql          # a what-if beside head
    python benchmarks/cliff.py --burst                           # 8 clients, a 64-client burst, 8 again
    python benchmarks/cliff.py --sustain 10 --clients 64         # ten minutes, TPS per minute
    python benchmarks/cliff.py --check --engines head --major 15 # CI's guard: exit 1 on a cliff or a decay

The server is run.py's: $DOCNUM_DSN, else (or with --major) a throwaway one, the embedded wheel's
PostgreSQL 18 or Debian's 15, with fsync on and max_connections 300. Each engine gets a database of its own,
set up as run.py sets up its own, at an Alembic revision; `name=REV+file.sql` also runs file.sql there (a
what-if). The bare upsert (one statement, no ledger) runs in the first engine's database. Within a run, every
engine and the bare upsert get one pgbench run (benchmarks/next_number.sql, one counter, -M prepared) in turn,
each after a CHECKPOINT, the order reversed every other run; cells are medians.

Beside each docnum cell it prints what explains it: the wait events of the database's active backends,
sampled every 20 ms during the run (their shares), the counter table's HOT updates and dead tuples after the
run, and, from revision 0007 on, the share of allocations that waited over 100 ms for their counter (the
buckets of docnum.counter above 100 ms): up to revision 0008 that was the fair queue's bound, past which a
waiter left the queue for the counter's row lock.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from docnum.ops import embedded  # noqa: E402
from run import (  # noqa: E402
    Run,
    Workload,
    checkpoint,
    pgbench_env_and_target,
    prepare,
    run_pgbench,
    scratch_database,
    server_dsn,
)

NEXT = Workload("next_number", "next_number", 1)
BARE = Workload("bare_upsert", "bare upsert", 1)
SERVER_SETTINGS = {"max_connections": "300", "fsync": "on", "full_page_writes": "on"}
#: CI's guard: one counter at 128 clients against the bare upsert, and 8 clients after a burst against before.
GUARD_CLIENTS, GUARD_MIN_RATIO, GUARD_MIN_AFTER_BURST = 128, 0.45, 0.80


@dataclass(frozen=True)
class Engine:
    name: str
    revision: str
    extra: Path | None = None

    @classmethod
    def parse(cls, text: str) -> Engine:
        name, _, spec = text.partition("=")
        spec = spec or name
        revision, _, extra = spec.partition("+")
        return cls(name, revision, Path(extra) if extra else None)


@dataclass
class Sample:
    run: Run
    waits: Counter[str]
    updates: int = 0
    hot_updates: int = 0
    dead_after: int = 0
    past_bound: int | None = None  # allocations that waited > 100 ms (from 0007's buckets)
    allocations: int | None = None


@dataclass
class Cell:
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(s.run, attribute) for s in self.samples)


# ------------------------------------------------------------------------------------------------- server


def setup_engine(server: str, engine: Engine, stack: ExitStack) -> str:
    dsn = stack.enter_context(scratch_database(server))
    prepare(dsn, None, engine.revision)
    if engine.extra is not None:
        with psycopg.connect(dsn) as conn:
            conn.execute(engine.extra.read_bytes())
    return dsn


# ------------------------------------------------------------------------------------------------- measuring


class WaitSampler:
    """Samples the wait events of the database's active backends every 20 ms, in a thread."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.waits: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                for (event,) in conn.execute(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity"
                    " WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()"
                    "   AND backend_type = 'client backend'"
                ):
                    self.waits[event] += 1
                time.sleep(0.02)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def counter_stats(dsn: str) -> tuple[int, int, int, int | None, int | None]:
    """(updates, HOT updates, dead tuples) of docnum.counter, and, from 0007, (waits past 100 ms,
    allocations) summed over counters."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.info.server_version >= 150000:
            conn.execute("SELECT pg_stat_force_next_flush()")
        upd, hot, dead = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd, n_dead_tup FROM pg_stat_user_tables"
            " WHERE relid = 'docnum.counter'::regclass"
        ).fetchone() or (0, 0, 0)
        has_buckets = conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'docnum.counter'::regclass"
            " AND attname = 'wait_le_500ms'"
        ).fetchone()
        past = allocations = None
        if has_buckets and has_buckets[0]:
            row = conn.execute(
                "SELECT sum(wait_le_500ms + wait_le_1s + wait_le_2s + wait_le_5s + wait_over_5s),"
                " sum(allocations) FROM docnum.counter"
            ).fetchone()
            past, allocations = (int(row[0]), int(row[1])) if row else (None, None)
    return int(upd), int(hot), int(dead), past, allocations


def measure(dsn: str, workload: Workload, clients: int, seconds: int, log_dir: Path) -> Sample:
    checkpoint(dsn)
    before = counter_stats(dsn)
    with WaitSampler(dsn) as sampler:
        result = run_pgbench(embedded.pg_bindir(), dsn, workload, clients, seconds, "prepared", log_dir)
    time.sleep(0.6)  # statistics reach the views within their flush interval
    after = counter_stats(dsn)
    sample = Sample(result, sampler.waits, after[0] - before[0], after[1] - before[1], after[2])
    if before[3] is not None and after[3] is not None:
        sample.past_bound = after[3] - before[3]
        sample.allocations = (after[4] or 0) - (before[4] or 0)
    return sample


def top_waits(waits: Counter[str], n: int = 4) -> str:
    total = sum(waits.values()) or 1
    return ", ".join(f"{event} {count / total:.0%}" for event, count in waits.most_common(n))


# ------------------------------------------------------------------------------------------------- modes


def sweep(args: argparse.Namespace, engines: dict[Engine, str], log_dir: Path) -> dict[str, dict[int, Cell]]:
    """Every engine and the bare upsert at every client count, runs alternated; prints the table."""
    cells: dict[str, dict[int, Cell]] = {name: {} for name in ["bare", *(e.name for e in engines)]}
    first = next(iter(engines.values()))
    for run in range(1, args.runs + 1):
        for clients in args.clients:
            order = [("bare", first, BARE), *((e.name, dsn, NEXT) for e, dsn in engines.items())]
            if run % 2 == 0:
                order.reverse()
            for name, dsn, workload in order:
                sample = measure(dsn, workload, clients, args.seconds, log_dir)
                cells[name].setdefault(clients, Cell()).samples.append(sample)
                print(f"run {run} {name} c={clients}: {sample.run.tps:,.0f} tps", file=sys.stderr)
    print(
        f"{'engine':<10} {'clients':>7} {'tps':>8} {'vs bare':>7} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>7}"
        f" {'least':>6} {'HOT':>5} {'dead':>6} {'>100ms':>7}  waits"
    )
    for clients in args.clients:
        bare_tps = cells["bare"][clients].median("tps")
        for name in cells:
            cell = cells[name][clients]
            tps, p50, p99 = cell.median("tps"), cell.median("p50_ms"), cell.median("p99_ms")
            last = cell.samples[-1]
            hot = f"{last.hot_updates / last.updates:.0%}" if last.updates else "-"
            past = (
                f"{last.past_bound / last.allocations:.0%}"
                if last.past_bound is not None and last.allocations
                else "-"
            )
            waits: Counter[str] = Counter()
            for sample in cell.samples:
                waits.update(sample.waits)
            print(
                f"{name:<10} {clients:>7} {tps:>8,.0f} {tps / bare_tps:>7.2f} {p50:>8.1f} {p99:>8.1f}"
                f" {p99 / p50 if p50 else 0:>7.1f} {cell.median('least_share'):>6.2f} {hot:>5}"
                f" {last.dead_after:>6} {past:>7}  {top_waits(waits)}"
            )
    return cells


def burst(args: argparse.Namespace, engines: dict[Engine, str], log_dir: Path) -> dict[str, float]:
    """8 clients, then a burst of 64, then 8 again, with no VACUUM between: what the burst leaves behind."""
    ratios = {}
    print(
        f"{'engine':<10} {'before':>8} {'burst':>8} {'after':>8} {'after/before':>12} {'dead':>7}"
        "  waits in burst; after"
    )
    for engine, dsn in engines.items():
        before = measure(dsn, NEXT, 8, args.seconds, log_dir)
        during = measure(dsn, NEXT, 64, args.burst_seconds, log_dir)
        after = measure(dsn, NEXT, 8, args.seconds, log_dir)
        ratios[engine.name] = after.run.tps / before.run.tps
        print(
            f"{engine.name:<10} {before.run.tps:>8,.0f} {during.run.tps:>8,.0f} {after.run.tps:>8,.0f}"
            f" {ratios[engine.name]:>12.2f} {during.dead_after:>7}  {top_waits(during.waits)};"
            f" {top_waits(after.waits)}"
        )
    return ratios


PROGRESS_RE = re.compile(r"progress: ([\d.]+) s, ([\d.]+) tps")


def sustain(args: argparse.Namespace, engines: dict[Engine, str]) -> None:
    """`--sustain` minutes at the first --clients count: TPS per minute, the last minute over the first."""
    clients = args.clients[0]
    for engine, dsn in engines.items():
        checkpoint(dsn)
        env, target = pgbench_env_and_target(dsn)
        result = subprocess.run(
            [
                str(embedded.pg_bindir() / "pgbench"),
                "--no-vacuum",
                "--protocol=prepared",
                f"--client={clients}",
                "--jobs=2",
                f"--time={args.sustain * 60}",
                "--progress=60",
                f"--file={NEXT.script_file}",
                "--define=keys=1",
                target,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        minutes = [float(m.group(2)) for m in PROGRESS_RE.finditer(result.stderr)]
        print(f"{engine.name}: {clients} clients, tps per minute: {', '.join(f'{t:,.0f}' for t in minutes)}")
        if len(minutes) >= 2:
            print(f"{engine.name}: last minute / first minute = {minutes[-1] / minutes[0]:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", nargs="+", default=["0006", "head"], metavar="NAME[=REV[+FILE]]")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 64, 128, 200])
    parser.add_argument("--runs", type=int, help="runs per cell (default 3; 1 with --check)")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument(
        "--major", type=int, choices=[15, 16, 17, 18], help="a throwaway server of this major (see run.py)"
    )
    parser.add_argument("--burst", action="store_true", help="8 clients, a 64-client burst, 8 clients again")
    parser.add_argument("--burst-seconds", type=int, default=6)
    parser.add_argument("--sustain", type=int, metavar="MINUTES", help="one long run per engine")
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"CI's guard on head: {GUARD_CLIENTS} clients >= {GUARD_MIN_RATIO}x the bare upsert, 8 clients "
        f"after a burst >= {GUARD_MIN_AFTER_BURST}x before; exit 1 otherwise",
    )
    args = parser.parse_args(argv)
    if args.check:
        args.clients = [GUARD_CLIENTS]
    if args.runs is None:
        args.runs = 1 if args.check else 3
    engines_wanted = [Engine.parse(text) for text in args.engines]
    failures = []
    with ExitStack() as stack:
        server, where = stack.enter_context(server_dsn(args.major))
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="docnum-cliff-")))
        engines = {engine: setup_engine(server, engine, stack) for engine in engines_wanted}
        print(f"{where}; one counter; pgbench -M prepared; {args.runs} run(s) x {args.seconds} s, medians")
        if args.sustain:
            sustain(args, engines)
            return 0
        if args.burst or args.check:  # first, while every database is fresh
            for name, ratio in burst(args, engines, log_dir).items():
                if args.check and ratio < GUARD_MIN_AFTER_BURST:
                    failures.append(f"{name}: 8 clients after a 64-client burst ran at {ratio:.2f}x before")
        if args.check or not args.burst:
            cells = sweep(args, engines, log_dir)
            if args.check:
                for engine in engines:
                    bare = cells["bare"][GUARD_CLIENTS].median("tps")
                    ratio = cells[engine.name][GUARD_CLIENTS].median("tps") / bare
                    if ratio < GUARD_MIN_RATIO:
                        failures.append(
                            f"{engine.name}: {GUARD_CLIENTS} clients ran at {ratio:.2f}x the bare upsert"
                        )
    if args.check:
        verdict = "FAILED: " + "; ".join(failures) if failures else "ok"
        print(
            f"guard: {GUARD_CLIENTS} clients >= {GUARD_MIN_RATIO}x the bare upsert, 8 clients after a burst"
            f" >= {GUARD_MIN_AFTER_BURST}x before: {verdict}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
