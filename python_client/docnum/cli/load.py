"""``docnum load-test``: ``numbering:load-test`` of the NestJS service, for people or as one JSON document.

``docnum.cli`` registers it at its end (``register(app)``). The run and the checks are
:mod:`docnum.ops.load_test`'s; this module reads the server's connection budget, shows a progress bar on
stderr
and prints the figures, the latency histogram and the verification.
"""

from __future__ import annotations

from contextlib import nullcontext
from enum import Enum
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from docnum.cli.support import (
    EXIT_FINDING,
    CommandError,
    connection,
    err,
    is_quiet,
    leave_behind,
    out,
    print_json,
    reported,
    require_type,
    target,
)
from docnum.client import Numbering
from docnum.ops import load_test

__all__ = ["register"]

#: Width of the longest bar of the latency histogram, in characters.
BAR_WIDTH = 40


class LoadMode(str, Enum):
    reserve = "reserve"
    next = "next"


def register(app: typer.Typer) -> None:
    """Add ``load-test`` to the ``docnum`` application."""
    app.command("load-test", epilog="Example: docnum load-test --type COR --requests 1000 --concurrency 100")(
        load_test_command
    )


def load_test_command(
    ctx: typer.Context,
    document_type: Annotated[
        str, typer.Option("--type", metavar="TYPE", help="Document type code, e.g. COR.")
    ],
    requests: Annotated[
        int, typer.Option("--requests", min=1, max=1_000_000, help="Requests to make in all.")
    ] = 1000,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            min=1,
            max=10_000,
            help="Requests in flight at once: threads, and connections in the pool (capped to what the"
            " server accepts).",
        ),
    ] = 100,
    mode: Annotated[
        LoadMode,
        typer.Option(
            "--mode",
            case_sensitive=False,
            help="reserve: reserve_number then confirm_number per request; next: one next_number.",
        ),
    ] = LoadMode.reserve,
    scope: Annotated[
        str | None,
        typer.Option("--scope", help="Scope value, e.g. a project code (PROJECT and CONTRACT types)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document with every figure.")
    ] = False,
) -> None:
    """Issue numbers of TYPE from concurrent connections, measure them, and verify the result in the database.

    Each request is reserve + confirm (or one next_number with --mode next), its latency measured as a whole.
    Prints throughput (requests/s, numbers/s), p50/p95/p99/max latency, errors by code and a latency
    histogram, then checks in the database that every number received is exactly one ledger row in the
    expected state, that the run's values of each counter are contiguous (values other sessions took
    meanwhile are counted, and must be in the ledger), and that the counters touched have no unexplained gap.

    The numbers are real and permanent: run it on a test type or a test database.

    Exit status: 1 on a duplicate, a number missing from the ledger or in the wrong state, a hole in the run
    or an unexplained gap, or when every request failed; failed requests alone (lock timeouts, say) are
    reported and exit 0. An unknown type (NB001) or a missing --scope (NB006) is an error (exit 1).
    """
    with reported():
        with connection(ctx) as conn:
            require_type(Numbering(conn), document_type)
            if not load_test.can_verify(conn):
                raise CommandError(
                    "privilege",
                    f"role {conn.info.user} may not run the load test's checks, so it issues no numbers",
                    detail="The checks read docnum.ledger and docnum.counter and call docnum.gaps().",
                    hint="Use a role in docnum_reader as well as docnum_app (or docnum_admin).",
                )
            budget = load_test.connection_budget(conn)
        plan = load_test.LoadPlan(document_type, requests, concurrency, mode.value, scope)
        leave_behind(
            ctx,
            lambda: (
                f"load-test: numbers already issued to {load_test.ACTOR} stay in the ledger;"
                " reservations not yet confirmed expire after the type's TTL"
            ),
        )
        show_progress = not as_json and not is_quiet(ctx) and err.is_terminal
        progress = (
            Progress(
                TextColumn("load-test {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
            if show_progress
            else None
        )
        with progress if progress is not None else nullcontext():
            task = progress.add_task(document_type, total=requests) if progress is not None else None

            def advance() -> None:
                if progress is not None and task is not None:
                    progress.advance(task)

            report = load_test.run(target(ctx).dsn(), plan, budget=budget, on_request=advance)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if not report.passed:
        raise typer.Exit(EXIT_FINDING)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _print_report(report: load_test.LoadReport) -> None:
    plan = report.plan
    kind = "reserve + confirm" if plan.mode == "reserve" else "next_number"
    scope = f" scope {plan.scope}," if plan.scope else ""
    out.print(
        f"[bold]docnum load-test[/bold]: {escape(plan.document_type)},{escape(scope)} {kind}, {plan.requests}"
        f" requests, concurrency {report.concurrency} (pool of {report.concurrency} connections),"
        f" PostgreSQL {report.server_version}",
        soft_wrap=True,
    )
    if report.capped and report.budget is not None:
        out.print(
            f"[yellow]note[/yellow]: concurrency capped from {plan.concurrency} to {report.concurrency},"
            f" what the server accepts now ({report.budget.describe()})",
            soft_wrap=True,
        )
    total = report.succeeded + report.failed
    out.print(
        f"throughput: {total} requests in {report.elapsed_seconds:.2f} s:"
        f" {report.requests_per_second:.0f} requests/s, {report.numbers_per_second:.0f} numbers/s;"
        f" {report.succeeded} succeeded ({report.success_rate:.1f} %), {report.failed} failed",
        soft_wrap=True,
    )
    latency = report.latency_ms()
    out.print(
        f"latency ms (per request, {kind}, successful requests): p50 {_ms(latency['p50'])}"
        f"  p95 {_ms(latency['p95'])}  p99 {_ms(latency['p99'])}  max {_ms(latency['max'])}",
        soft_wrap=True,
    )
    if report.errors:
        table = Table(title="errors by code", title_justify="left", box=box.SIMPLE_HEAD)
        table.add_column("code")
        table.add_column("requests", justify="right")
        table.add_column("first message")
        for error in report.errors:
            table.add_row(error.code, str(error.count), escape(error.message))
        out.print(table)
    else:
        out.print("errors: none")
    _print_histogram(report)
    _print_verification(report)


def _print_histogram(report: load_test.LoadReport) -> None:
    buckets = report.histogram()
    used = [i for i, (_, count) in enumerate(buckets) if count]
    out.print("latency histogram (ms):")
    if not used:
        out.print("  (no successful request)")
        return
    largest = max(count for _, count in buckets)
    total = sum(count for _, count in buckets)
    previous: float = 0
    for i, (bound, count) in enumerate(buckets):
        if used[0] <= i <= used[-1]:
            label = f"{previous:g}-{bound:g}" if bound is not None else f"> {previous:g}"
            bar = "█" * round(BAR_WIDTH * count / largest) if count else ""
            if count and not bar:
                bar = "▏"
            out.print(
                f"  {label:>11} │{bar:<{BAR_WIDTH}} {count:>6} {100 * count / total:5.1f} %", highlight=False
            )
        if bound is not None:
            previous = bound


def _print_verification(report: load_test.LoadReport) -> None:
    out.print("verification from the database:")
    for check in report.checks:
        mark = "[green]PASS[/green]" if check.passed else "[red]FAIL[/red]"
        out.print(f"  {mark} {check.check:<11} {escape(check.detail)}", soft_wrap=True)
    if report.succeeded == 0:
        out.print("[red]FAIL[/red]: every request failed", soft_wrap=True)
    out.print("result: [green]PASS[/green]" if report.passed else "result: [red]FAIL[/red]", soft_wrap=True)
