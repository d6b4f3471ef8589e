"""observability/: the alert rules pass promtool's checks and unit tests, the Grafana dashboard is well
formed, and both hold against a real Prometheus scraping a running `docnum metrics` over a database under
load.

The proof starts the `prometheus` binary (Debian package `prometheus`) on a free loopback port with a
throwaway TSDB, scraping every second: the exporter on this test's database, a second exporter on a database
that does not exist (numbering_database_up == 0) and a closed port (up == 0), all in job "docnum", with
observability/alerts.yml loaded. The test creates the condition of every alert, then polls Prometheus's HTTP
API (Prometheus scrapes on its own clock) until every rule's expression, as Prometheus loaded it, and every
dashboard query returns data. Prometheus and the exporters are stopped by their own pids.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from support.helpers import (
    ServerInfo,
    call,
    define,
    expect_error,
    in_thread,
    next_number,
    require_or_skip,
    reserve,
    wait_until_blocked,
)

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]
Results = list[dict[str, Any]]

OBSERVABILITY = Path(__file__).resolve().parents[2] / "observability"
ALERTS = OBSERVABILITY / "alerts.yml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
ALERT_NAMES = {
    "SequenceCritical",
    "SequenceWarning",
    "HighLockWaitTime",
    "HighErrorRate",
    "ReservationsPilingUp",
    "UnexplainedGap",
    "NumberingDatabaseDown",
    "NumberingExporterDown",
}
# The commands an annotation may send an operator to (each is a real `docnum` command).
DOCNUM_COMMANDS = re.compile(r"`docnum (status|gaps|validate|sweep|doctor|alter-type|metrics)\b")
STARTUP_TIMEOUT = 20.0
DATA_TIMEOUT = 30.0


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        require_or_skip(f"{name} is not installed (Debian package prometheus)")
    assert path is not None
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, timeout=60, check=False, cwd=OBSERVABILITY
    )


# -- promtool and the dashboard, no server needed --------------------------------------------------------


def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in result.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(OBSERVABILITY / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_example_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", str(OBSERVABILITY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows are containers), nested ones included."""
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def test_dashboard_is_importable_and_every_panel_has_a_query() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    document_type = variables["document_type"]
    assert document_type["definition"] == "label_values(numbering_sequences_total, document_type)"
    assert document_type["includeAll"] and document_type["allValue"] == ".*"

    shown = panels(board)
    titles = {panel["title"] for panel in shown}
    assert len(titles) == len(shown), "two panels share a title"
    for panel in shown:
        exprs = [target.get("expr", "").strip() for target in panel.get("targets", [])]
        assert exprs and all(exprs), f"panel {panel['title']!r} has a target without a query"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    # The panels of the NestJS service's dashboard are there, with its utilization thresholds.
    for title in (
        "Numbers generated per minute",
        "Sequence utilization",
        "Lock wait time (p50, p95, p99)",
        "Lock failures rate",
    ):
        assert title in titles
    utilization = next(p for p in shown if p["title"] == "Sequence utilization")
    steps = utilization["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [step["value"] for step in steps] == [None, 90, 95]


# -- the proof against a real Prometheus -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Background:
    """A process started in the background, ready once `ready_url` answers 200, stopped by its own pid."""

    def __init__(self, args: list[str], log: Path, ready_url: str) -> None:
        self.args, self.log, self.ready_url = args, log, ready_url
        with log.open("w") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"{self.args} exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                log = self.log.read_text()
                pytest.fail(f"{self.ready_url} did not answer within {STARTUP_TIMEOUT}s:\n{log}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start(stack: ExitStack, args: list[str], log: Path, ready_url: str) -> Background:
    """Start `args` in the background; `stack` stops it."""
    process = Background(args, log, ready_url)
    stack.callback(process.stop)
    return process


def exporter(stack: ExitStack, dsn: str, log: Path) -> tuple[Background, str]:
    """A `docnum metrics` process on `dsn`, validating every second, and its host:port."""
    port = free_port()
    args = [sys.executable, "-m", "docnum", "--dsn", dsn, "metrics"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--validate-interval", "1s"]
    return start(stack, args, log, f"http://127.0.0.1:{port}/metrics"), f"127.0.0.1:{port}"


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        response = httpx.get(self.url + path, params=params, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [data]
        return result

    def wait_for(self, queries: dict[str, str], timeout: float = DATA_TIMEOUT) -> dict[str, Results]:
        """Poll until every query returns data; return the results (the empty ones when time runs out)."""
        deadline = time.monotonic() + timeout
        results: dict[str, list[dict[str, Any]]] = {}
        while True:
            results = {name: self.query(expr) for name, expr in queries.items()}
            if all(results.values()) or time.monotonic() > deadline:
                return results
            time.sleep(0.25)


def prometheus(stack: ExitStack, targets: list[str], workdir: Path) -> tuple[Background, Prometheus]:
    """The real Prometheus, scraping `targets` (job "docnum") and evaluating alerts.yml every second."""
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [{"job_name": "docnum", "static_configs": [{"targets": targets}]}],
            }
        )
    )
    args = [
        tool("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{port}"
    return start(stack, args, workdir / "prometheus.log", url + "/-/ready"), Prometheus(url)


def document_types(results: list[dict[str, Any]]) -> set[str]:
    return {str(sample["metric"].get("document_type")) for sample in results}


def dashboard_queries() -> dict[str, str]:
    """Every dashboard query, with Grafana's variables replaced as Grafana would (all types selected)."""
    replacements = {"$document_type": ".*", "$__rate_interval": "1m", "$__range": "5m", "$__interval": "1s"}
    queries = {}
    for panel in panels(dashboard()):
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in replacements.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"panel {panel['title']!r}: a variable the test does not know: {expr}"
            queries[f"panel {panel['title']!r} {target['refId']}"] = expr
    return queries


# One type per condition (see load()), each defined before Prometheus's first scrape.
TYPES: dict[str, dict[str, Any]] = {
    "CRIT": {"max_value": 100},
    "WARN": {"max_value": 100},
    "LCK": {"lock_timeout": "200 milliseconds"},
    "SLOW": {},
    "RES": {},
    "GAP": {},
    "OVR": {"allow_manual_override": True},
}


def load(db: Conn, connect: Connect) -> None:
    """Make every alert's condition true, as a database under load would.

    CRIT at 97 % of its max_value, WARN at 92 %; LCK: an allocation times out (NB003) behind a held counter;
    SLOW: an allocation waits 1.2 s for its counter; RES: a reservation past its expiry that no sweep expires;
    GAP: a counter moved by 5 outside docnum (an unexplained gap); OVR: an override and a void.
    """
    db.execute("SELECT docnum.next_numbers(document_type => 'CRIT', count => 97)")
    db.execute("SELECT docnum.next_numbers(document_type => 'WARN', count => 92)")

    holder = connect()
    next_number(holder, "LCK")
    waiter = connect(autocommit=True)
    expect_error("NB003", lambda: next_number(waiter, "LCK"))
    holder.commit()

    next_number(holder, "SLOW")
    waiting = in_thread(lambda: next_number(waiter, "SLOW"))
    wait_until_blocked(db, waiter.info.backend_pid)
    holder.execute("SELECT pg_sleep(1.2)")  # the waiter waits at least this long: p95 > 1 s
    holder.commit()
    assert waiting.result(timeout=10) == "SLOW-0002"

    reserve(db, "RES", ttl="1 millisecond")

    next_number(db, "GAP")
    db.execute("UPDATE docnum.counter SET current_value = current_value + 5 WHERE document_type = 'GAP'")

    call(db, "override_number", document_type="OVR", document_number="OVR-0100", reason="legacy")
    call(db, "void_number", document_number=next_number(db, "OVR"), reason="typo")


def test_rules_and_dashboard_return_data_from_a_real_prometheus(
    db: Conn, dsn: str, connect: Connect, server_info: ServerInfo, tmp_path: Path
) -> None:
    tool("prometheus")
    for code, settings in TYPES.items():
        define(db, code, "{TYPE}-{SEQ:4}", **settings)

    with ExitStack() as stack:
        # All three start at once (Prometheus waits about 5 s before its first scrape anyway).
        live_exporter, live = exporter(stack, dsn, tmp_path / "exporter.log")
        missing_database = server_info.dsn("docnum_no_such_db")
        down_exporter, no_database = exporter(stack, missing_database, tmp_path / "down.log")
        closed = f"127.0.0.1:{free_port()}"
        server, prom = prometheus(stack, [live, no_database, closed], tmp_path)
        for process in (live_exporter, down_exporter, server):
            process.wait_ready()

        # A first sample of every type's counters, at zero, before the load: rate() needs it.
        scraped = 'count(numbering_sequences_total{document_type=~"CRIT|SLOW|LCK"}) == 3'
        before = prom.wait_for({"scraped": scraped})
        assert before["scraped"], "Prometheus never scraped the exporter"
        load(db, connect)

        rules = [rule for group in prom.get("/api/v1/rules")["groups"] for rule in group["rules"]]
        assert {rule["name"] for rule in rules} == ALERT_NAMES
        for rule in rules:
            assert rule["health"] == "ok", rule
            assert rule["labels"]["severity"] in ("critical", "warning"), rule["name"]
            assert rule["annotations"]["summary"], rule["name"]
            assert DOCNUM_COMMANDS.search(rule["annotations"]["description"]), rule["name"]

        queries = {f"rule {rule['name']}": rule["query"] for rule in rules}
        queries.update(dashboard_queries())
        results = prom.wait_for(queries)
        empty = sorted(name for name, result in results.items() if not result)
        assert not empty, "no data from Prometheus for: " + ", ".join(empty)

        # Each rule picked out exactly the series that meet its condition.
        assert document_types(results["rule SequenceCritical"]) == {"CRIT"}
        assert document_types(results["rule SequenceWarning"]) == {"WARN"}
        assert document_types(results["rule HighLockWaitTime"]) == {"SLOW"}
        assert document_types(results["rule HighErrorRate"]) == {"LCK"}
        assert document_types(results["rule ReservationsPilingUp"]) == {"RES"}
        assert document_types(results["rule UnexplainedGap"]) == {"GAP"}
        assert {s["metric"]["instance"] for s in results["rule NumberingDatabaseDown"]} == {no_database}
        assert {s["metric"]["instance"] for s in results["rule NumberingExporterDown"]} == {closed}

        # Prometheus evaluates the rules itself: UnexplainedGap has no `for` and fires, the others wait out
        # theirs as pending.
        deadline = time.monotonic() + DATA_TIMEOUT
        while True:
            alerts = {(a["labels"]["alertname"], a["state"]) for a in prom.get("/api/v1/alerts")["alerts"]}
            if {name for name, _ in alerts} == ALERT_NAMES or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert {name for name, _ in alerts} == ALERT_NAMES
        assert ("UnexplainedGap", "firing") in alerts
