"""``docnum load-test``: concurrent allocations of one type over a pool of real connections, then proof.

The NestJS service's ``numbering:load-test --type COR --requests 1000 --concurrency 100``. Each request is one
``reserve_number`` followed by its ``confirm_number`` (mode ``reserve``), or one ``next_number`` (mode
``next``), each call its own transaction from a :class:`psycopg_pool.ConnectionPool` of ``concurrency``
connections driven by as many threads; its latency (both calls together in mode ``reserve``) is measured with
:func:`time.perf_counter`.  The pool is never larger than the server allows: see :func:`connection_budget`.

Then the database is asked, not the threads: every number received is exactly one ledger row in the state
the run left it in, the run's sequence values of each counter form one contiguous range (values that other
sessions took from the same counter meanwhile are counted, and must be in the ledger too), and the counters
touched have no unexplained gap (``docnum.gaps()`` with ``explained = false``).

This module runs and measures; :mod:`docnum.cli.load` prints.  Its SQL is here (the checks of a load run,
next to the queries of :mod:`docnum.queries` they build on).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from docnum import queries
from docnum.client import Numbering
from docnum.errors import DocnumError

__all__ = [
    "ACTOR",
    "HISTOGRAM_BOUNDS_MS",
    "SETUP_ERROR_CODES",
    "Check",
    "ConnectionBudget",
    "CounterRun",
    "ErrorCount",
    "LoadPlan",
    "LoadReport",
    "can_verify",
    "connection_budget",
    "error_code",
    "percentile",
    "run",
    "verify",
]

Mode = Literal["reserve", "next"]

#: The actor of every number a load test issues (in the ledger and the audit trail).
ACTOR = "docnum-load-test"

#: Upper bounds (milliseconds) of the latency histogram's buckets; the last bucket is everything above.
HISTOGRAM_BOUNDS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

#: Errors of the first request that no amount of load changes (unknown type, missing or needless scope,
#: read-only server, missing privilege or schema): the run stops there, with that error.
SETUP_ERROR_CODES = frozenset({"NB001", "NB006", "NB008", "42501", "42883", "3F000"})

# -- SQL -----------------------------------------------------------------------------------------------------

#: What the server lets this role open now: max_connections less the slots reserved for superusers (left
#: free even for a superuser, so that an administrator can still get in) and the client sessions already
#: open, and the role's and the database's own connection limits (-1: none; superusers are exempt) less
#: their sessions.
CONNECTION_BUDGET = (
    "SELECT pg_catalog.current_setting('max_connections')::integer AS max_connections,"
    " pg_catalog.current_setting('superuser_reserved_connections')::integer"
    "   + coalesce(pg_catalog.current_setting('reserved_connections', true)::integer, 0) AS reserved,"
    " (SELECT count(*) FROM pg_catalog.pg_stat_activity a WHERE a.backend_type = 'client backend')"
    "   AS in_use,"
    " (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) AS superuser,"
    " (SELECT r.rolconnlimit FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) AS role_limit,"
    " (SELECT count(*) FROM pg_catalog.pg_stat_activity a"
    "   WHERE a.backend_type = 'client backend' AND a.usename = current_user) AS role_in_use,"
    " (SELECT d.datconnlimit FROM pg_catalog.pg_database d WHERE d.datname = current_database())"
    "   AS database_limit,"
    " (SELECT count(*) FROM pg_catalog.pg_stat_activity a"
    "   WHERE a.backend_type = 'client backend' AND a.datname = current_database()) AS database_in_use"
)

#: The privileges the checks need: docnum_app reads the ledger and counters, docnum.gaps() is docnum_reader's.
CAN_VERIFY = (
    "SELECT pg_catalog.has_function_privilege('docnum.gaps(text, text, text)', 'EXECUTE')"
    " AND pg_catalog.has_table_privilege('docnum.ledger', 'SELECT')"
    " AND pg_catalog.has_table_privilege('docnum.counter', 'SELECT')"
)

#: The run's numbers that are not exactly one ledger row in an expected state (``expected`` lists the
#: states allowed, separated by spaces); no rows when all is well.
RUN_ANOMALIES = (
    "SELECT n.document_number, n.expected, count(l.number_id) AS copies,"
    " array_remove(array_agg(l.state ORDER BY l.number_id), NULL) AS states"
    " FROM (SELECT DISTINCT ON (u.document_number) u.document_number, u.expected"
    "        FROM unnest(%(document_numbers)s::text[], %(expected)s::text[]) AS u(document_number, expected)"
    "       ORDER BY u.document_number) AS n"
    " LEFT JOIN docnum.ledger AS l ON l.document_number = n.document_number"
    " GROUP BY n.document_number, n.expected"
    " HAVING count(l.number_id) <> 1"
    "     OR bool_or(l.state <> ALL (pg_catalog.string_to_array(n.expected, ' ')))"
    " ORDER BY n.document_number"
)

#: Per counter the run drew from: the range of its sequence values and how many values of that range the
#: ledger holds (the run's own and those of other sessions). Contiguous when the ledger holds all of them.
RUN_COUNTERS = (
    "WITH mine AS ("
    "  SELECT l.counter_id, l.sequence_value, l.document_number FROM docnum.ledger AS l"
    "   WHERE l.document_number = ANY(%(document_numbers)s::text[]) AND l.counter_id IS NOT NULL"
    "), runs AS ("
    "  SELECT m.counter_id, count(DISTINCT m.sequence_value) AS numbers,"
    "         min(m.sequence_value) AS first_value, max(m.sequence_value) AS last_value,"
    "         (array_agg(m.document_number ORDER BY m.sequence_value))[1] AS first_number,"
    "         (array_agg(m.document_number ORDER BY m.sequence_value DESC))[1] AS last_number"
    "    FROM mine AS m GROUP BY m.counter_id"
    ")"
    " SELECT c.document_type, c.scope_value, c.period, c.current_value, r.numbers, r.first_value,"
    "  r.last_value, r.first_number, r.last_number,"
    "  (SELECT count(DISTINCT l.sequence_value) FROM docnum.ledger AS l"
    "    WHERE l.counter_id = r.counter_id"
    "      AND l.sequence_value BETWEEN r.first_value AND r.last_value) AS values_in_ledger"
    " FROM runs AS r JOIN docnum.counter AS c ON c.counter_id = r.counter_id"
    " ORDER BY c.document_type, c.scope_value, c.period"
)

# -- the plan and the server's limits --------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPlan:
    """What to run: ``requests`` allocations of ``document_type`` (``scope``) from ``concurrency`` threads."""

    document_type: str
    requests: int
    concurrency: int
    mode: Mode = "reserve"
    scope: str | None = None


@dataclass(frozen=True)
class ConnectionBudget:
    """How many more connections the server accepts from this role in this database (see CONNECTION_BUDGET).

    ``available`` counts the connection the budget was read on as free: it is closed before the pool opens.
    """

    max_connections: int
    reserved: int
    in_use: int
    superuser: bool
    role_limit: int
    role_in_use: int
    database_limit: int
    database_in_use: int

    @property
    def available(self) -> int:
        limits = [self.max_connections - self.reserved - self.in_use + 1]
        if self.role_limit >= 0 and not self.superuser:
            limits.append(self.role_limit - self.role_in_use + 1)
        if self.database_limit >= 0 and not self.superuser:
            limits.append(self.database_limit - self.database_in_use + 1)
        return max(0, min(limits))

    def describe(self) -> str:
        text = (
            f"max_connections {self.max_connections}, {self.reserved} reserved for superusers,"
            f" {self.in_use} in use"
        )
        if self.role_limit >= 0 and not self.superuser:
            text += f"; role limit {self.role_limit} ({self.role_in_use} in use)"
        if self.database_limit >= 0 and not self.superuser:
            text += f"; database limit {self.database_limit} ({self.database_in_use} in use)"
        return text


def connection_budget(conn: psycopg.Connection[Any]) -> ConnectionBudget:
    """Read the server's connection limits and current use on ``conn``."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(CONNECTION_BUDGET).fetchone()
    assert row is not None
    counts = {key: int(value) for key, value in row.items() if key != "superuser"}
    return ConnectionBudget(superuser=bool(row["superuser"]), **counts)


def can_verify(conn: psycopg.Connection[Any]) -> bool:
    """Whether the role on ``conn`` may run the checks (read the ledger and counters, call docnum.gaps())."""
    row = conn.execute(CAN_VERIFY).fetchone()
    return bool(row and row[0])


# -- the report ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCount:
    """Failed requests with one error code (NBxxx, another SQLSTATE, or the client's exception class)."""

    code: str
    count: int
    message: str


@dataclass(frozen=True)
class CounterRun:
    """The run's numbers in one counter, as the ledger holds them."""

    document_type: str
    scope_value: str
    period: str
    current_value: int
    numbers: int
    first_value: int
    last_value: int
    first_number: str
    last_number: str
    values_in_ledger: int
    unexplained_gaps: list[dict[str, int]] = field(default_factory=list)

    @property
    def foreign_values(self) -> int:
        """Values inside the run's range that other sessions took meanwhile (they are in the ledger)."""
        return self.values_in_ledger - self.numbers

    @property
    def missing_values(self) -> int:
        """Values inside the run's range that no ledger row holds: a hole in the run."""
        return self.last_value - self.first_value + 1 - self.values_in_ledger

    def label(self) -> str:
        where = " ".join(part for part in (self.scope_value, self.period) if part)
        return f"{self.document_type} {where}".strip()


@dataclass(frozen=True)
class Check:
    """One verification from the database; the run fails when any check does not pass."""

    check: str
    passed: bool
    detail: str


@dataclass
class LoadReport:
    """Everything a run measured and found; :meth:`to_dict` is the ``--json`` document."""

    plan: LoadPlan
    concurrency: int
    budget: ConnectionBudget | None
    server_version: str
    elapsed_seconds: float
    latencies: list[float]
    succeeded: int
    failed: int
    numbers_issued: int
    errors: list[ErrorCount]
    counters: list[CounterRun]
    states: dict[str, int]
    checks: list[Check]

    @property
    def capped(self) -> bool:
        return self.concurrency < self.plan.concurrency

    @property
    def passed(self) -> bool:
        """Every check passed and at least one request succeeded (errors alone do not fail a run)."""
        return self.succeeded > 0 and all(check.passed for check in self.checks)

    @property
    def requests_per_second(self) -> float:
        return (self.succeeded + self.failed) / self.elapsed_seconds if self.elapsed_seconds else 0.0

    @property
    def numbers_per_second(self) -> float:
        return self.succeeded / self.elapsed_seconds if self.elapsed_seconds else 0.0

    @property
    def success_rate(self) -> float:
        total = self.succeeded + self.failed
        return 100.0 * self.succeeded / total if total else 0.0

    def latency_ms(self) -> dict[str, float | None]:
        ms = [seconds * 1000 for seconds in self.latencies]
        return {
            "p50": percentile(ms, 0.50),
            "p95": percentile(ms, 0.95),
            "p99": percentile(ms, 0.99),
            "max": max(ms) if ms else None,
            "min": min(ms) if ms else None,
            "mean": sum(ms) / len(ms) if ms else None,
        }

    def histogram(self) -> list[tuple[float | None, int]]:
        """(upper bound in ms, or None for the last bucket, count) for every bucket."""
        counts = [0] * (len(HISTOGRAM_BOUNDS_MS) + 1)
        for seconds in self.latencies:
            ms = seconds * 1000
            counts[next((i for i, b in enumerate(HISTOGRAM_BOUNDS_MS) if ms <= b), -1)] += 1
        bounds: list[float | None] = [*HISTOGRAM_BOUNDS_MS, None]
        return list(zip(bounds, counts, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "document_type": self.plan.document_type,
            "scope": self.plan.scope,
            "mode": self.plan.mode,
            "requests": self.plan.requests,
            "concurrency": {
                "requested": self.plan.concurrency,
                "used": self.concurrency,
                "capped": self.capped,
                "server": None
                if self.budget is None
                else {**asdict(self.budget), "available": self.budget.available},
            },
            "server_version": self.server_version,
            "elapsed_seconds": self.elapsed_seconds,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "success_rate_pct": self.success_rate,
            "numbers_issued": self.numbers_issued,
            "throughput": {
                "requests_per_second": self.requests_per_second,
                "numbers_per_second": self.numbers_per_second,
            },
            "latency_ms": self.latency_ms(),
            "histogram": [{"le_ms": bound, "count": count} for bound, count in self.histogram()],
            "errors": [asdict(error) for error in self.errors],
            "verification": {
                "passed": all(check.passed for check in self.checks),
                "checks": [asdict(check) for check in self.checks],
                "ledger_states": self.states,
                "counters": [
                    {
                        **asdict(counter),
                        "foreign_values": counter.foreign_values,
                        "missing_values": counter.missing_values,
                    }
                    for counter in self.counters
                ],
            },
            "passed": self.passed,
        }


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of ``values`` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def error_code(exc: BaseException) -> str:
    """NBxxx for docnum's errors, the SQLSTATE of other database errors, else the exception's class."""
    if isinstance(exc, DocnumError) and exc.code:
        return exc.code
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        return exc.sqlstate
    return type(exc).__name__


def _error_message(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, DocnumError) else str(exc)
    return (text or type(exc).__name__).splitlines()[0]


# -- running ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    """One request: its latency, the number it got (even if its confirm then failed), the ledger states that
    number may be in, and its error."""

    seconds: float
    number: str | None
    expected: str
    error: BaseException | None


def _request(numbering: Numbering, plan: LoadPlan) -> _Outcome:
    number: str | None = None
    expected = "confirmed"
    started = time.perf_counter()
    try:
        if plan.mode == "next":
            number = numbering.next_number(plan.document_type, scope=plan.scope, actor=ACTOR)
        else:
            reservation = numbering.reserve(plan.document_type, scope=plan.scope, actor=ACTOR)
            number = reservation.document_number
            # Reserved; whether a failed confirm still committed is unknown to the client.
            expected = "reserved expired confirmed"
            numbering.confirm(reservation.token, actor=ACTOR)
            expected = "confirmed"
    except Exception as exc:  # counted by code in the report
        return _Outcome(time.perf_counter() - started, number, expected, exc)
    return _Outcome(time.perf_counter() - started, number, expected, None)


def run(
    dsn: str,
    plan: LoadPlan,
    *,
    budget: ConnectionBudget | None = None,
    on_request: Callable[[], None] | None = None,
) -> LoadReport:
    """Run ``plan`` on ``dsn`` and verify it; ``on_request`` is called after each request (a progress bar).

    The pool holds ``min(plan.concurrency, budget.available)`` connections. The first request runs alone:
    when it fails with one of :data:`SETUP_ERROR_CODES` that error is raised and nothing else runs.
    """
    concurrency = plan.concurrency if budget is None else max(1, min(plan.concurrency, budget.available))
    pool: ConnectionPool[Any] = ConnectionPool(
        dsn,
        min_size=concurrency,
        max_size=concurrency,
        kwargs={"application_name": ACTOR},
        open=False,
        name="docnum-load-test",
    )
    with pool:
        pool.wait(timeout=60)
        numbering = Numbering(pool)
        with pool.connection() as conn:
            server_version = conn.info.parameter_status("server_version") or "?"
        started = time.perf_counter()
        first = _request(numbering, plan)
        if first.error is not None and error_code(first.error) in SETUP_ERROR_CODES:
            raise first.error
        outcomes = [first]
        if on_request is not None:
            on_request()
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="docnum-load") as executor:
            futures = [executor.submit(_request, numbering, plan) for _ in range(plan.requests - 1)]
            for future in as_completed(futures):
                outcomes.append(future.result())
                if on_request is not None:
                    on_request()
        elapsed = time.perf_counter() - started
        with pool.connection() as conn:
            return _report(conn, plan, concurrency, budget, server_version, elapsed, outcomes)


def _errors(outcomes: Iterable[_Outcome]) -> list[ErrorCount]:
    counts: Counter[str] = Counter()
    first_message: dict[str, str] = {}
    for outcome in outcomes:
        if outcome.error is not None:
            code = error_code(outcome.error)
            counts[code] += 1
            first_message.setdefault(code, _error_message(outcome.error))
    return [ErrorCount(code, n, first_message[code]) for code, n in counts.most_common()]


def _report(
    conn: psycopg.Connection[Any],
    plan: LoadPlan,
    concurrency: int,
    budget: ConnectionBudget | None,
    server_version: str,
    elapsed: float,
    outcomes: list[_Outcome],
) -> LoadReport:
    received = [o for o in outcomes if o.number is not None]
    numbers = [o.number for o in received if o.number is not None]
    counters, states, checks = verify(conn, numbers, [o.expected for o in received])
    return LoadReport(
        plan=plan,
        concurrency=concurrency,
        budget=budget,
        server_version=server_version,
        elapsed_seconds=elapsed,
        latencies=[o.seconds for o in outcomes if o.error is None],
        succeeded=sum(1 for o in outcomes if o.error is None),
        failed=sum(1 for o in outcomes if o.error is not None),
        numbers_issued=len(numbers),
        errors=_errors(outcomes),
        counters=counters,
        states=states,
        checks=checks,
    )


# -- verifying -------------------------------------------------------------------------------------------


def verify(
    conn: psycopg.Connection[Any], numbers: list[str], expected: list[str]
) -> tuple[list[CounterRun], dict[str, int], list[Check]]:
    """Compare the numbers the threads received with the ledger, and look for gaps in their counters."""
    params = {"document_numbers": numbers, "expected": expected}
    with conn.cursor(row_factory=dict_row) as cur:
        anomalies = cur.execute(RUN_ANOMALIES, params).fetchall()
        counter_rows = cur.execute(RUN_COUNTERS, params).fetchall()
        states = {r["state"]: r["numbers"] for r in cur.execute(queries.LEDGER_RUN_STATES, params)}
    conn.rollback()  # reads only; end the transaction before the next statements
    client = Numbering(conn)
    counters = []
    for row in counter_rows:
        gaps = client.gaps(row["document_type"], scope=row["scope_value"], period=row["period"])
        unexplained = [
            {"first_value": g.first_value, "last_value": g.last_value, "value_count": g.value_count}
            for g in gaps
            if not g.explained
        ]
        counters.append(CounterRun(**row, unexplained_gaps=unexplained))

    checks = [
        _unique_check(numbers, anomalies),
        _ledger_check(numbers, anomalies, states),
        _consecutive_check(counters),
        _gaps_check(counters),
    ]
    return counters, states, checks


def _examples(items: list[str], most: int = 3) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def _unique_check(numbers: list[str], anomalies: list[dict[str, Any]]) -> Check:
    twice_received = sorted(n for n, copies in Counter(numbers).items() if copies > 1)
    twice_stored = [
        f"{a['document_number']} ({a['copies']} rows: {', '.join(a['states'])})"
        for a in anomalies
        if a["copies"] > 1
    ]
    problems = []
    if twice_received:
        problems.append(f"received twice: {_examples(twice_received)}")
    if twice_stored:
        problems.append(f"DUPLICATE in the ledger: {_examples(twice_stored)}")
    distinct = len(set(numbers))
    if problems:
        return Check(
            "unique", False, f"{len(numbers)} numbers received, {distinct} distinct; " + "; ".join(problems)
        )
    return Check(
        "unique", True, f"{len(numbers)} numbers received, all distinct, each exactly one row in the ledger"
    )


def _ledger_check(numbers: list[str], anomalies: list[dict[str, Any]], states: dict[str, int]) -> Check:
    missing = [a["document_number"] for a in anomalies if a["copies"] == 0]
    wrong = [
        f"{a['document_number']} is {a['states'][0]}, expected {' or '.join(a['expected'].split())}"
        for a in anomalies
        if a["copies"] == 1
    ]
    found = ", ".join(f"{n} {state}" for state, n in states.items()) or "none"
    extra = sum(states.values()) - (len(set(numbers)) - len(missing))
    if extra:
        found += f" ({extra} row(s) more than numbers: the duplicates above)"
    problems = []
    if missing:
        problems.append(f"{len(missing)} NOT in the ledger: {_examples(missing)}")
    if wrong:
        problems.append(f"{len(wrong)} in an unexpected state: {_examples(wrong)}")
    if problems:
        return Check("states", False, f"ledger rows of the run: {found}; " + "; ".join(problems))
    suffix = "" if extra else ", as expected"
    return Check("states", True, f"ledger rows of the run: {found}{suffix}")


def _consecutive_check(counters: list[CounterRun]) -> Check:
    if not counters:
        return Check("consecutive", True, "no number was issued")
    parts = []
    for c in counters:
        text = f"{c.label()}: values {c.first_value}..{c.last_value} ({c.first_number} .. {c.last_number})"
        if c.missing_values:
            text += f", {c.missing_values} value(s) of that range NOT in the ledger"
        elif c.foreign_values:
            text += (
                f" hold the run's {c.numbers} numbers and {c.foreign_values} value(s) other sessions took"
                " meanwhile, all in the ledger"
            )
        else:
            text += f", one contiguous run of {c.numbers}"
        parts.append(text)
    return Check("consecutive", all(c.missing_values == 0 for c in counters), "; ".join(parts))


def _gaps_check(counters: list[CounterRun]) -> Check:
    found = [
        f"{c.label()} {g['first_value']}..{g['last_value']}" for c in counters for g in c.unexplained_gaps
    ]
    if found:
        return Check("gaps", False, f"{len(found)} UNEXPLAINED gap(s) in docnum.gaps(): {_examples(found)}")
    labels = ", ".join(c.label() for c in counters) or "none"
    return Check("gaps", True, f"no unexplained gap in the counters touched ({labels})")
