"""``docnum demo``: the high-load scenario of the old Redis design, run against the database, with proof.

Hundreds of reservations of one counter race from tens of threads over a pool of as many connections,
next to one-step numbers of two other types; then most reservations are confirmed and every tenth is
cancelled.  The summary shows counts, first and last numbers, latencies, and checks that fail the command
when broken: no number twice (in Python and in the whole ledger), the run's sequence values contiguous per
counter (nothing skipped, nothing made up), and every number in the state the run left it in.

Run it on a quiet database: numbers that others take from the same counters during the run would break
the contiguity check.  The demo is re-runnable: existing types are reused and their numbers continue.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from rich import box
from rich.console import Console
from rich.table import Table

from docnum import queries
from docnum.cli.render import history_table
from docnum.client import Numbering
from docnum.models import Reservation

__all__ = ["DEMO_TYPES", "run"]

#: (code, format, define_type options) of the types the demo uses.
DEMO_TYPES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("COR", "{TYPE}-{YYYY}-{SEQ:5}", {"scope": "YEARLY", "time_zone": "Asia/Bangkok"}),
    ("RFA", "{SCOPE}/{TYPE}/{SEQ:4}", {"scope": "PROJECT"}),
    ("BOQ", "{TYPE}-{YYYY}-{MM}-{SEQ:4}", {"scope": "MONTHLY"}),
)
RFA_SCOPE = "PRJ-7"
RFA_CALLS = 50
COR_CALLS = 5
CANCEL_EVERY = 10
ACTOR = "docnum-demo"
CANCEL_REASON = f"demo: every {CANCEL_EVERY}th reservation is abandoned"


@dataclass(frozen=True)
class _Outcome:
    """One timed client call: the operation, its result or error, and the seconds it took."""

    operation: str
    seconds: float
    result: Any = None
    error: Exception | None = None


def _timed(operation: str, call: Callable[[], object]) -> _Outcome:
    started = time.perf_counter()
    try:
        result = call()
    except Exception as exc:  # counted and shown in the summary; fails the run
        return _Outcome(operation, time.perf_counter() - started, error=exc)
    return _Outcome(operation, time.perf_counter() - started, result=result)


def _percentile_ms(seconds: list[float], fraction: float) -> str:
    """Nearest-rank percentile in milliseconds, formatted."""
    if not seconds:
        return "-"
    ordered = sorted(seconds)
    return f"{ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] * 1000:.1f}"


def run(dsn: str, console: Console, *, reservations: int = 200, workers: int = 60) -> bool:
    """Run the scenario on ``dsn`` (schema installed) and print the summary; True if every check passed."""
    pool: ConnectionPool[Any] = ConnectionPool(
        dsn,
        min_size=workers,
        max_size=workers,
        kwargs={"application_name": ACTOR},
        open=False,
        name="docnum-demo",
    )
    with pool:
        pool.wait(timeout=60)
        return _scenario(pool, console, reservations=reservations, workers=workers)


def _ensure_types(numbering: Numbering) -> str:
    notes = []
    for code, template, options in DEMO_TYPES:
        if numbering.get_type(code) is None:
            numbering.define_type(code, template, actor=ACTOR, **options)
            notes.append(f"{code} defined")
        else:
            notes.append(f"{code} reused")
    return ", ".join(notes)


def _issue_tasks(numbering: Numbering, reservations: int) -> list[Callable[[], _Outcome]]:
    """The phase-1 calls, shuffled: BOQ reservations mixed with one-step RFA and COR numbers."""

    def reserve(actor: str) -> Callable[[], _Outcome]:
        return lambda: _timed("reserve BOQ", lambda: numbering.reserve("BOQ", actor=actor))

    def next_rfa(ref: str) -> Callable[[], _Outcome]:
        return lambda: _timed(
            "next RFA", lambda: numbering.next_number("RFA", scope=RFA_SCOPE, actor=ACTOR, document_ref=ref)
        )

    def next_cor() -> _Outcome:
        return _timed("next COR", lambda: numbering.next_number("COR", actor=ACTOR))

    tasks = [reserve(f"user-{i % 7}") for i in range(reservations)]
    tasks += [next_rfa(f"demo-rfa-{i}") for i in range(RFA_CALLS)]
    tasks += [next_cor] * COR_CALLS
    random.shuffle(tasks)
    return tasks


def _scenario(pool: ConnectionPool[Any], console: Console, *, reservations: int, workers: int) -> bool:
    numbering = Numbering(pool)
    with pool.connection() as conn:
        server = conn.info.parameter_status("server_version") or "?"
    console.print(
        f"[bold]docnum demo[/bold]: PostgreSQL {server}, {workers} threads, pool of {workers} connections"
    )
    console.print("types: " + _ensure_types(numbering))

    def settle(reservation: Reservation, cancel: bool) -> _Outcome:
        if cancel:
            return _timed(
                "cancel BOQ", lambda: numbering.cancel(reservation.token, actor=ACTOR, reason=CANCEL_REASON)
            )
        ref = f"demo-boq-{reservation.sequence_value}"
        return _timed(
            "confirm BOQ", lambda: numbering.confirm(reservation.token, actor=ACTOR, document_ref=ref)
        )

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docnum-demo") as executor:
        started = time.perf_counter()
        issued = list(executor.map(lambda task: task(), _issue_tasks(numbering, reservations)))
        issue_seconds = time.perf_counter() - started

        held = sorted(
            (o.result for o in issued if isinstance(o.result, Reservation)), key=lambda r: r.sequence_value
        )
        cancel_tokens = {r.token for position, r in enumerate(held, 1) if position % CANCEL_EVERY == 0}
        started = time.perf_counter()
        settled = list(executor.map(lambda r: settle(r, r.token in cancel_tokens), held))
        settle_seconds = time.perf_counter() - started

    outcomes = issued + settled
    numbers = [o.result.document_number if isinstance(o.result, Reservation) else o.result for o in issued]
    numbers = [number for number in numbers if isinstance(number, str)]

    console.print(_calls_table(outcomes))
    console.print(
        f"elapsed: issued {len(issued)} numbers in {issue_seconds:.2f} s"
        f" ({len(issued) / issue_seconds:.0f}/s),"
        f" settled {len(settled)} in {settle_seconds:.2f} s"
    )
    checks = _checks(pool, console, outcomes, numbers, cancel_tokens)
    for passed, text in checks:
        console.print(("[green]PASS[/green] " if passed else "[red]FAIL[/red] ") + text)

    cancelled = [o.result for o in settled if o.operation == "cancel BOQ" and isinstance(o.result, str)]
    if cancelled:
        trail = numbering.history(cancelled[0])
        console.print(history_table(trail, title=f"audit trail of {cancelled[0]}", compact=True))
    return all(passed for passed, _ in checks)


def _calls_table(outcomes: list[_Outcome]) -> Table:
    table = Table(title="calls", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("operation")
    for column in ("calls", "errors", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for operation in dict.fromkeys(o.operation for o in outcomes):
        mine = [o for o in outcomes if o.operation == operation]
        seconds = [o.seconds for o in mine if o.error is None]
        table.add_row(
            operation,
            str(len(mine)),
            str(len(mine) - len(seconds)),
            _percentile_ms(seconds, 0.50),
            _percentile_ms(seconds, 0.99),
        )
    everything = [o.seconds for o in outcomes if o.error is None]
    table.add_row(
        "all",
        str(len(outcomes)),
        str(len(outcomes) - len(everything)),
        _percentile_ms(everything, 0.50),
        _percentile_ms(everything, 0.99),
        style="bold",
    )
    return table


def _checks(
    pool: ConnectionPool[Any],
    console: Console,
    outcomes: list[_Outcome],
    numbers: list[str],
    cancel_tokens: set[uuid.UUID],
) -> list[tuple[bool, str]]:
    """Compare what the threads received with what the ledger holds; print the per-counter table."""
    with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        duplicates = cur.execute(queries.LEDGER_DUPLICATES).fetchall()
        ranges = cur.execute(queries.LEDGER_RUN_RANGES, {"document_numbers": numbers}).fetchall()
        states = cur.execute(queries.LEDGER_RUN_STATES, {"document_numbers": numbers}).fetchall()

    table = Table(title="numbers issued by this run, per counter", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("type", "counter", "numbers", "first", "last", "values"):
        table.add_column(column, justify="right" if column == "numbers" else "left", no_wrap=True)
    for r in ranges:
        table.add_row(
            r["document_type"],
            r["scope_value"] or r["period"] or "-",
            str(r["numbers"]),
            r["first_number"],
            r["last_number"],
            f"{r['min_value']}..{r['max_value']}",
        )
    console.print(table)

    checks: list[tuple[bool, str]] = []
    errors = [o.error for o in outcomes if o.error is not None]
    first_error = f"; first: {type(errors[0]).__name__}: {errors[0]}" if errors else ""
    checks.append((not errors, f"{len(outcomes)} calls, {len(errors)} errors{first_error}"))

    distinct = len(set(numbers))
    checks.append(
        (distinct == len(numbers), f"{len(numbers)} numbers received, {distinct} distinct (Python set)")
    )

    checks.append(
        (
            not duplicates,
            "ledger: no document_number appears twice"
            if not duplicates
            else f"ledger: {len(duplicates)} numbers appear twice, e.g. {duplicates[0]['document_number']}",
        )
    )

    in_ledger = sum(r["numbers"] for r in ranges)
    broken = [
        f"{r['document_type']} {r['scope_value'] or r['period']}"
        for r in ranges
        if not r["max_value"] - r["min_value"] + 1 == r["numbers"] == r["distinct_values"]
    ]
    checks.append(
        (
            not broken and in_ledger == len(numbers),
            f"ledger holds all {in_ledger} of them; sequence values contiguous in every counter"
            if not broken
            else f"ledger holds {in_ledger}; sequence values NOT contiguous in {', '.join(broken)}",
        )
    )

    found = {row["state"]: row["numbers"] for row in states}
    expected = {"confirmed": len(numbers) - len(cancel_tokens), "cancelled": len(cancel_tokens)}
    expected = {state: n for state, n in expected.items() if n}
    as_expected = found == expected
    checks.append(
        (
            as_expected,
            "ledger states: "
            + (", ".join(f"{n} {state}" for state, n in found.items()) or "none")
            + (
                ", as expected"
                if as_expected
                else "; expected " + ", ".join(f"{n} {s}" for s, n in expected.items())
            ),
        )
    )
    return checks
