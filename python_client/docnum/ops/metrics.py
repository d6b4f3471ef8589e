"""The Prometheus exporter behind ``docnum metrics``: docnum's figures, read from the database at scrape time.

Every figure comes from one call of ``docnum.metrics(max_scopes)``, so it is true for the whole system,
whatever process allocated, and a scrape costs the same with a million numbers as with ten (see the function's
comment in sql/60_reports.sql). Unexplained gaps need a look at the whole ledger, so they are not read per
scrape: a background thread runs ``docnum.gaps()`` and ``docnum.validate()`` every ``validate_interval``
seconds and the scrape reports its last result with the time it finished.

The metric names follow the NestJS numbering service's (``numbering_sequences_total``,
``numbering_sequence_current``, ``numbering_sequence_utilization``, ``numbering_lock_wait_seconds``,
``numbering_lock_failures_total``, ``numbering_manual_overrides_total``); docs/operations.md lists every
family.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from psycopg import sql

__all__ = ["DEFAULT_MAX_SCOPES", "DocnumCollector", "Validator", "registry"]

log = logging.getLogger("docnum.metrics")

DEFAULT_MAX_SCOPES = 10
APPLICATION_NAME = "docnum-metrics"

# docnum.metrics() family -> (exported name, help, Prometheus type, name of the label beside document_type)
_FAMILIES: dict[str, tuple[str, str, str, str | None]] = {
    "sequences_total": (
        "numbering_sequences_total",
        "Document numbers issued by allocation (reserve, next, batches, void-and-replace)",
        "counter",
        None,
    ),
    "allocations_total": (
        "numbering_allocations_total",
        "Allocation calls that succeeded (a batch is one)",
        "counter",
        None,
    ),
    "counters": (
        "numbering_counters",
        "Counters of the type (one per scope value and period)",
        "gauge",
        None,
    ),
    "sequence_utilization": (
        "numbering_sequence_utilization",
        "Percent of max_value used by the type's fullest live counter",
        "gauge",
        None,
    ),
    "sequence_current": (
        "numbering_sequence_current",
        "Current value of the type's fullest counters (at most --max-scopes per type); scope is the scope "
        "value, then /period for a resetting type",
        "gauge",
        "scope",
    ),
    "manual_overrides_total": (
        "numbering_manual_overrides_total",
        "Numbers recorded by docnum.override_number()",
        "counter",
        None,
    ),
    "voids_total": ("numbering_voids_total", "Numbers voided", "counter", None),
    "reservations": (
        "numbering_reservations",
        "Reservations by state (pending, confirmed, cancelled, expired)",
        "gauge",
        "state",
    ),
    "overdue_reservations": (
        "numbering_overdue_reservations",
        "Pending reservations already past their expiry (the sweep is behind or not running)",
        "gauge",
        None,
    ),
    "oldest_pending_reservation_seconds": (
        "numbering_oldest_pending_reservation_seconds",
        "Age of the oldest pending reservation (0 when there is none)",
        "gauge",
        None,
    ),
}
#: The check names of docnum.validate(): each gets a series, 0 when it found nothing.
VALIDATE_CHECKS = (
    "counter_below_ledger",
    "number_format_mismatch",
    "missing_audit",
    "unswept_reservation",
    "unexplained_gap",
    "duplicate_number",
    "document_table_unchecked",
)
_ERRORS_HELP = (
    "Operations that failed and rolled back, by error code: NB002 sequence exhausted, NB003 lock timeout"
)
_LOCK_FAILURES_HELP = "Waits for a counter that gave up (NB003 lock timeout)"
_WAIT_HELP = (
    "How long each successful allocation waited for its counter, measured inside the SQL function "
    "(one that found its counter free counts as 0)"
)


def _connect(dsn: str, role: str | None = None) -> psycopg.Connection[Any]:
    """An autocommit connection; with `role`, switched to it (docnum serve's login role may only switch)."""
    conn = psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME, connect_timeout=5)
    if role is not None:
        try:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        except psycopg.Error:
            conn.close()
            raise
    return conn


@dataclass
class ValidationResult:
    finished_at: float
    duration: float
    gaps: dict[str, float]  # document_type -> values in unexplained gaps
    findings: dict[str, float]  # docnum.validate() check name -> findings


@dataclass
class Validator:
    """Runs the whole-ledger checks in the background every ``interval`` seconds, on its own connection."""

    dsn: str
    interval: float
    role: str | None = None
    last: ValidationResult | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def run_once(self) -> ValidationResult:
        started = time.monotonic()
        with _connect(self.dsn, self.role) as conn:
            gaps = dict(
                conn.execute(
                    "SELECT g.document_type, sum(g.value_count)::float8 FROM docnum.gaps() g"
                    " WHERE NOT g.explained GROUP BY g.document_type"
                ).fetchall()
            )
            findings = dict(
                conn.execute(
                    "SELECT v.check_name, count(*)::float8 FROM docnum.validate() v GROUP BY v.check_name"
                ).fetchall()
            )
        self.last = ValidationResult(time.time(), time.monotonic() - started, gaps, findings)
        return self.last

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except psycopg.Error as exc:
                log.warning("validation failed: %s", (str(exc).splitlines() or [""])[0])
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="docnum-validate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


class DocnumCollector(Collector):
    """Reads ``docnum.metrics()`` on every collect(); one connection, reopened after a failure."""

    def __init__(
        self,
        dsn: str,
        *,
        max_scopes: int = DEFAULT_MAX_SCOPES,
        validator: Validator | None = None,
        role: str | None = None,
    ):
        self._dsn = dsn
        self._role = role
        self._max_scopes = max_scopes
        self._validator = validator
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    def _rows(self) -> list[tuple[str, str, str, float]]:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = _connect(self._dsn, self._role)
                return self._conn.execute(
                    "SELECT metric, document_type, label, value FROM docnum.metrics(%s)", (self._max_scopes,)
                ).fetchall()
            except psycopg.Error:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def collect(self) -> Iterator[Metric]:
        try:
            rows = self._rows()
        except psycopg.errors.UndefinedFunction:
            log.warning("scrape failed: schema docnum has no docnum.metrics(): run `docnum migrate`")
            rows = None
        except psycopg.Error as exc:
            log.warning("scrape failed: %s", (str(exc).splitlines() or [""])[0])
            rows = None
        up = GaugeMetricFamily("numbering_database_up", "1 when the scrape could read docnum's figures")
        up.add_metric([], 0.0 if rows is None else 1.0)
        yield up
        if rows is not None:
            yield from self._families(rows)
        yield from self._validation(rows)

    def _families(self, rows: list[tuple[str, str, str, float]]) -> Iterator[Metric]:
        by_metric: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
        for metric, document_type, label, value in rows:
            by_metric[metric].append((document_type, label, value))

        for key, (name, help_text, kind, extra) in _FAMILIES.items():
            labels = ["document_type"] if extra is None else ["document_type", extra]
            family: CounterMetricFamily | GaugeMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, help_text, labels=labels)
            else:
                family = GaugeMetricFamily(name, help_text, labels=labels)
            for document_type, label, value in by_metric.get(key, []):
                family.add_metric([document_type] if extra is None else [document_type, label], value)
            yield family

        errors = CounterMetricFamily("numbering_errors_total", _ERRORS_HELP, labels=["document_type", "code"])
        lock_failures = CounterMetricFamily(
            "numbering_lock_failures_total", _LOCK_FAILURES_HELP, labels=["document_type", "reason"]
        )
        for document_type, code, value in by_metric.get("errors_total", []):
            errors.add_metric([document_type, code], value)
            if code == "NB003":
                lock_failures.add_metric([document_type, "lock_timeout"], value)
        yield errors
        yield lock_failures

        wait = HistogramMetricFamily("numbering_lock_wait_seconds", _WAIT_HELP, labels=["document_type"])
        buckets: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for document_type, le, value in by_metric.get("lock_wait_seconds_bucket", []):
            buckets[document_type].append((le if le == "+Inf" else repr(float(le)), value))
        sums = {kind: value for kind, _, value in by_metric.get("lock_wait_seconds_sum", [])}
        for document_type, points in sorted(buckets.items()):
            points.sort(key=lambda point: float(point[0]))
            wait.add_metric([document_type], points, sum_value=sums.get(document_type, 0.0))
        yield wait

    def _validation(self, rows: list[tuple[str, str, str, float]] | None) -> Iterator[Metric]:
        result = self._validator.last if self._validator is not None else None
        if result is None:
            return
        types = sorted({row[1] for row in rows or [] if row[0] == "counters"} | set(result.gaps))
        gaps = GaugeMetricFamily(
            "numbering_unexplained_gaps",
            "Counter values never issued and not explained, at the last background validation",
            labels=["document_type"],
        )
        for document_type in types:
            gaps.add_metric([document_type], result.gaps.get(document_type, 0.0))
        yield gaps
        findings = GaugeMetricFamily(
            "numbering_integrity_findings",
            "docnum.validate() findings by check, at the last background validation",
            labels=["check"],
        )
        for check in sorted(set(VALIDATE_CHECKS) | set(result.findings)):
            findings.add_metric([check], result.findings.get(check, 0.0))
        yield findings
        yield GaugeMetricFamily(
            "numbering_validation_timestamp_seconds",
            "Unix time the last background validation finished",
            value=result.finished_at,
        )
        yield GaugeMetricFamily(
            "numbering_validation_duration_seconds",
            "How long the last background validation took",
            value=result.duration,
        )


def registry(collector: DocnumCollector) -> CollectorRegistry:
    """A registry holding only docnum's collector (no process or platform metrics of the exporter)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(collector)
    return found
