"""``docnum metrics``: the Prometheus exporter (see :mod:`docnum.ops.metrics`), registered by the CLI."""

from __future__ import annotations

import threading
from typing import Annotated

import typer
from prometheus_client import exposition

from docnum.cli.ops import on_signals, parse_duration
from docnum.cli.support import CommandError, reported, target
from docnum.ops.metrics import DEFAULT_MAX_SCOPES, DocnumCollector, Validator, registry

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command(
        name="metrics",
        epilog="Example: docnum metrics --port 9187 --host 0.0.0.0 --max-scopes 20",
    )(metrics)


def metrics(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port to serve /metrics on.")] = 9187,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 for a Prometheus on another host.")
    ] = "127.0.0.1",
    max_scopes: Annotated[
        int,
        typer.Option(
            min=0,
            max=1000,
            help="numbering_sequence_current series per type: its fullest counters (numbering_counters "
            "says how many there are).",
        ),
    ] = DEFAULT_MAX_SCOPES,
    validate_interval: Annotated[
        str,
        typer.Option(
            help="Run docnum.gaps() and docnum.validate() in the background this often (e.g. 300s, 5m; "
            "0 never) for numbering_unexplained_gaps and numbering_integrity_findings.",
        ),
    ] = "300s",
    once: Annotated[
        bool, typer.Option("--once", help="Print one scrape (validation included) to stdout and exit.")
    ] = False,
) -> None:
    """Serve docnum's figures to Prometheus, read from the database at every scrape.

    The figures are the whole system's (every process that allocates), not this process's. Runs until
    SIGINT or SIGTERM. A scrape while the database is unreachable still answers, with numbering_database_up
    0. Example: docnum metrics --port 9187
    """
    interval = 0.0 if validate_interval.strip() in ("0", "0s") else parse_duration(validate_interval)
    with reported():
        dsn_value = target(ctx).dsn()
    validator = Validator(dsn_value, interval) if interval > 0 or once else None
    collector = DocnumCollector(dsn_value, max_scopes=max_scopes, validator=validator)
    found = registry(collector)
    if once:
        with reported():
            assert validator is not None
            validator.run_once()
        typer.echo(exposition.generate_latest(found).decode("utf-8"), nl=False)
        collector.close()
        return

    with reported():
        try:
            server, thread = exposition.start_http_server(port, addr=host, registry=found)
        except OSError as exc:
            raise CommandError(
                "listen",
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="Choose another --port, or stop what listens there.",
            ) from exc
    if validator is not None:
        validator.start()
    bound_port = server.server_address[1]
    typer.echo(f"serving docnum metrics on http://{host}:{bound_port}/metrics", err=True)
    stop = threading.Event()
    restore = on_signals(stop)
    try:
        stop.wait()
    finally:
        restore()
        if validator is not None:
            validator.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        collector.close()
