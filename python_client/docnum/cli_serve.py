"""``docnum serve``: the HTTP API (:mod:`docnum.http`) under uvicorn.

``docnum.cli`` registers it at its end (``register(app)``).  Settings come from the options, else from the
environment: ``--dsn``/``DOCNUM_DSN`` (the pool's login role: see the README's "HTTP API" for the
``docnum_authenticator`` role it should be), ``DOCNUM_JWT_SECRET`` or ``DOCNUM_JWKS_FILE``,
``DOCNUM_JWT_AUDIENCE`` and ``DOCNUM_RATE_LIMIT``.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

import typer

from docnum.cli_support import CommandError, reported, target

__all__ = ["register", "serve"]


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``docnum`` application."""
    app.command(
        "serve",
        epilog="Example: docnum serve --host 127.0.0.1 --port 8000 (with DOCNUM_DSN naming the login role"
        " docnum_authenticator, and DOCNUM_JWT_SECRET set)",
    )(serve)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with docnum's own loggers (``docnum.http``) on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["docnum"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    rate_limit: Annotated[
        int | None,
        typer.Option(
            "--rate-limit",
            min=0,
            envvar="DOCNUM_RATE_LIMIT",
            help="Number-issuing requests (reserve, next, batches) per subject per minute, in this process;"
            " 0: no limit."
            " [default: 100]",
        ),
    ] = None,
    pool_min: Annotated[int, typer.Option("--pool-min", min=0, help="Connections kept open.")] = 2,
    pool_max: Annotated[int, typer.Option("--pool-max", min=1, help="Most connections at once.")] = 20,
    pool_timeout: Annotated[
        float, typer.Option("--pool-timeout", min=0.1, help="Seconds a request waits for a connection (503).")
    ] = 5.0,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics/--no-metrics",
            help="Serve GET /metrics (no token): docnum's figures, as `docnum metrics`, and this server's.",
        ),
    ] = True,
) -> None:
    """Serve the HTTP API (reserve, confirm, cancel, administration; OpenAPI at /docs) until Ctrl-C.

    Tokens are JWTs: HS256 with $DOCNUM_JWT_SECRET, or RS256/ES256 with the keys of $DOCNUM_JWKS_FILE; their
    role claim (docnum_app, docnum_reader, docnum_admin) is the database role each request runs as.
    """
    with reported():
        try:
            import uvicorn

            from docnum.http import Settings, create_app
        except ImportError as exc:
            raise CommandError(
                "setting",
                f"the HTTP server is not installed ({exc.name})",
                hint="pip install 'docnum[server]'",
            ) from None
        if pool_max < max(pool_min, 1):
            raise CommandError("setting", "--pool-max must be at least --pool-min")
        settings = Settings.from_env(
            dsn=target(ctx).dsn(install_schema=False),
            rate_limit=rate_limit,
            pool_min=pool_min,
            pool_max=pool_max,
            pool_timeout=pool_timeout,
            metrics=metrics,
        )
        try:
            application = create_app(settings)
        except (ValueError, OSError) as exc:
            raise CommandError("setting", str(exc)) from None
    uvicorn.run(
        application,
        log_config=_log_config(),
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        proxy_headers=False,
        server_header=False,
    )
