#!/usr/bin/env python3
"""How long a Prometheus scrape of `docnum metrics` takes with 1,000,000 numbers in 10,000 counters.

    python benchmarks/metrics_scrape.py [--numbers 1000000] [--counters 10000] [--scrapes 40]

Builds two scratch databases on the server named by DOCNUM_DSN (or a throwaway embedded one): the large one
(the numbers spread evenly over the counters of --types PROJECT types, 1 % of them reservations of which some
are cancelled and some expired, a few overrides and voids) and a small one (one counter, ten numbers) as the
baseline. It serves both with the exporter's own code (DocnumCollector behind prometheus-client's HTTP
server) and scrapes them alternately over HTTP, then prints p50 / p95 / max scrape time of each side by side
with its target (under 100 ms), the number of series and bytes per scrape, the time of docnum.metrics()
alone, and what the background validation (gaps and validate, not run per scrape) takes at this size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import psycopg
from prometheus_client import exposition

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from docnum.ops import schema  # noqa: E402
from docnum.ops.metrics import DocnumCollector, Validator, registry  # noqa: E402
from run import scratch_database, server_dsn  # noqa: E402

TARGET_MS = 100.0


def populate(dsn: str, numbers: int, counters: int, types: int) -> None:
    per_type = counters // types
    per_counter = numbers // counters
    with psycopg.connect(dsn, autocommit=True) as conn:
        for index in range(1, types + 1):
            code = f"T{index}"
            conn.execute(
                "SELECT docnum.define_type(code => %s, format => %s, scope => 'PROJECT', "
                "allow_manual_override => true)",
                (code, "{TYPE}/{SCOPE}/{SEQ}"),
            )
            # 99 % of each counter's numbers confirmed, then 1 % reserved
            confirmed = per_counter - max(per_counter // 100, 1)
            conn.execute(
                "SELECT count(*) FROM generate_series(1, %s) s,"
                " LATERAL docnum.next_numbers(%s, %s, 'S' || s)",
                (per_type, code, confirmed),
            )
            conn.execute(
                "SELECT count(*) FROM generate_series(1, %s) s,"
                " LATERAL docnum.reserve_numbers(%s, %s, 'S' || s, ttl => interval '1 hour')",
                (per_type, code, per_counter - confirmed),
            )
            print(f"  {code}: {per_type} counters x {per_counter} numbers", file=sys.stderr)
        # settle some reservations: a quarter cancelled, a quarter expired; a few overrides and voids
        conn.execute(
            "SELECT count(docnum.cancel_number(token)) FROM docnum.ledger"
            " WHERE state = 'reserved' AND number_id % 4 = 0"
        )
        conn.execute(
            "UPDATE docnum.ledger SET expires_at = issued_at + interval '1 microsecond'"
            " WHERE state = 'reserved' AND number_id % 4 = 1"
        )
        conn.execute("SELECT docnum.expire_reservations()")
        for index in range(1, types + 1):
            conn.execute(
                "SELECT docnum.override_number(%s, %s, actor => 'bench', reason => 'migration')",
                (f"T{index}", f"T{index}/S1/{numbers + 1}"),
            )
            conn.execute(
                "SELECT docnum.void_number(%s, actor => 'bench', reason => 'duplicate document')",
                (f"T{index}/S1/1",),
            )
        conn.execute("VACUUM ANALYZE")


def scrape_ms(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
    return (time.perf_counter() - started) * 1000, len(body)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):7.1f} ms  p95 {p95:7.1f} ms  max {ordered[-1]:7.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--numbers", type=int, default=1_000_000)
    parser.add_argument("--counters", type=int, default=10_000)
    parser.add_argument("--types", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=40, help="scrapes of each exporter (default 40)")
    parser.add_argument("--max-scopes", type=int, default=10)
    args = parser.parse_args(argv)
    if args.counters % args.types or args.numbers % args.counters:
        parser.error("--counters must divide by --types and --numbers by --counters")

    with ExitStack() as stack:
        server, where = stack.enter_context(server_dsn())
        large = stack.enter_context(scratch_database(server))
        small = stack.enter_context(scratch_database(server))
        for dsn in (large, small):
            schema.migrate(dsn)
        started = time.monotonic()
        print(f"populating {args.numbers:,} numbers in {args.counters:,} counters...", file=sys.stderr)
        populate(large, args.numbers, args.counters, args.types)
        populate(small, 10, 1, 1)
        built = time.monotonic() - started
        with psycopg.connect(large) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM docnum.ledger), (SELECT count(*) FROM docnum.counter),"
                " current_setting('server_version')"
            ).fetchone()
            assert row is not None
            ledger_rows, counter_rows, version = row

        urls = {}
        collectors = []
        for name, dsn in (("large", large), ("small", small)):
            collector = DocnumCollector(dsn, max_scopes=args.max_scopes)
            collectors.append(collector)
            httpd, _ = exposition.start_http_server(0, addr="127.0.0.1", registry=registry(collector))
            stack.callback(httpd.shutdown)
            urls[name] = f"http://127.0.0.1:{httpd.server_address[1]}/metrics"
        times: dict[str, list[float]] = {"large": [], "small": []}
        sizes: dict[str, int] = {}
        for name in urls:  # one scrape each to open the connections
            scrape_ms(urls[name])
        for _ in range(args.scrapes):
            for name, url in urls.items():
                elapsed, size = scrape_ms(url)
                times[name].append(elapsed)
                sizes[name] = size
        series = {}
        for name, url in urls.items():
            with urllib.request.urlopen(url, timeout=30) as response:
                text = response.read().decode()
            series[name] = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        sql_times = []
        with psycopg.connect(large, autocommit=True) as conn:
            for _ in range(args.scrapes):
                begun = time.perf_counter()
                conn.execute("SELECT * FROM docnum.metrics(%s)", (args.max_scopes,)).fetchall()
                sql_times.append((time.perf_counter() - begun) * 1000)
        validation = Validator(large, interval=0).run_once()
        for collector in collectors:
            collector.close()

    large_p95 = sorted(times["large"])[min(len(times["large"]) - 1, round(0.95 * (len(times["large"]) - 1)))]
    verdict = "met" if large_p95 < TARGET_MS else "MISSED"
    print()
    print(
        f"docnum metrics scrape: {where}, PostgreSQL {version}; large database: {ledger_rows:,} ledger rows, "
        f"{counter_rows:,} counters in {args.types} types (built in {built:.0f} s); --max-scopes "
        f"{args.max_scopes}; {args.scrapes} HTTP scrapes of each database, alternated"
    )
    print(f"  large  {summary(times['large'])}  {series['large']:>6} series  {sizes['large']:>8,} bytes")
    print(f"  small  {summary(times['small'])}  {series['small']:>6} series  {sizes['small']:>8,} bytes")
    print(
        f"  large / small p50: {statistics.median(times['large']) / statistics.median(times['small']):.1f}x"
    )
    print(f"  docnum.metrics() alone on the large database: {summary(sql_times)}")
    print(
        f"  background validation (not per scrape) on the large database: {validation.duration:.1f} s "
        f"(gaps found: {sum(validation.gaps.values()):.0f})"
    )
    print(f"target: a scrape under {TARGET_MS:.0f} ms at this size: p95 {large_p95:.1f} ms - {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
