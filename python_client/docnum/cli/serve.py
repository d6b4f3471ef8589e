"""``docnum serve``: the HTTP API (:mod:`docnum.http`) under uvicorn.

``docnum.cli`` registers it at its end (``register(app)``).  Settings come from the options, else from the
environment: ``--dsn``/``DOCNUM_DSN`` (the pool's login role: see docs/http-api.md for the
``docnum_authenticator`` role it should be), ``DOCNUM_JWT_SECRET`` or ``DOCNUM_JWKS_FILE``,
``DOCNUM_JWT_AUDIENCE`` and ``DOCNUM_RATE_LIMIT``.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

import typer

from docnum.cli.support import CommandError, reported, target

__all__ = ["register", "serve", "token"]


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``docnum`` application."""
    app.command(
        "serve",
        epilog="Example: docnum serve --host 127.0.0.1 --port 8000 (with DOCNUM_DSN naming the login role"
        " docnum_authenticator, and DOCNUM_JWT_SECRET set)",
    )(serve)
    app.command("token")(token)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with docnum's own loggers (``docnum.http``) on the same handler; only printable text
    in any record, and no second, ERROR, record of a response stopped on purpose (docnum.http.logs)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {
        "printable": {"()": "docnum.http.logs.Printable"},
        "quiet_abandoned": {"()": "docnum.http.logs.QuietAbandoned"},
    }
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "printable"]
    config["loggers"]["uvicorn.error"]["filters"] = ["quiet_abandoned"]
    config["loggers"]["docnum"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    # psycopg warns "error ignored terminating <pipeline>" after every refused call (an NB error ends the
    # pipeline a request runs in): the refusal is the answer, not news. The pool's warnings stay.
    config["loggers"]["psycopg"] = {"handlers": ["default"], "level": "ERROR", "propagate": False}
    config["loggers"]["psycopg.pool"] = {"handlers": ["default"], "level": "WARNING", "propagate": False}
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
    export_slots: Annotated[
        int | None,
        typer.Option(
            "--export-slots",
            min=1,
            help="Audit exports streaming at once, each holding a connection; more get 503."
            " [default: a quarter of --pool-max]",
        ),
    ] = None,
    export_send_timeout: Annotated[
        float,
        typer.Option(
            "--export-send-timeout",
            min=0.1,
            help="Seconds an export's client may take to accept the next chunk before the export stops.",
        ),
    ] = 30.0,
    export_max_seconds: Annotated[
        float, typer.Option("--export-max-seconds", min=1, help="Seconds an export may stream in all.")
    ] = 600.0,
) -> None:
    """Serve the HTTP API (reserve, confirm, cancel, administration; OpenAPI at /docs) until Ctrl-C.

    Tokens are JWTs: HS256 with $DOCNUM_JWT_SECRET, or RS256/ES256 with the keys of $DOCNUM_JWKS_FILE; their
    role claim (docnum_app, docnum_reader, docnum_admin) is the database role each request runs as.
    """
    with reported():
        try:
            import uvicorn

            from docnum.http import Settings, create_app
            from docnum.http.limits import HEAD_LIMIT
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
            export_slots=export_slots,
            export_send_timeout=export_send_timeout,
            export_max_seconds=export_max_seconds,
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
        http=_http_protocol(),
        # the h11 parser's own bound on a request head, should httptools be missing
        h11_max_incomplete_event_size=HEAD_LIMIT,
    )


def _http_protocol() -> Any:
    """httptools with a bound on the request head (docnum.http.limits), or uvicorn's h11 without it."""
    try:
        from docnum.http.protocol import BoundedHttpToolsProtocol
    except ImportError:
        return "h11"
    return BoundedHttpToolsProtocol


def token(
    role: Annotated[str, typer.Argument(help="docnum_app, docnum_reader or docnum_admin.")],
    sub: Annotated[str, typer.Option("--sub", help="Who asks: the actor of everything done with it.")],
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Seconds until it expires.")] = 3600,
    audience: Annotated[
        str | None, typer.Option("--aud", envvar="DOCNUM_JWT_AUDIENCE", help="Its aud claim.")
    ] = None,
) -> None:
    """Print a token for `docnum serve`, signed (HS256) with DOCNUM_JWT_SECRET: for trying the API and for
    scripts; applications get theirs from their identity provider.

    Example: docnum token docnum_app --sub alice --ttl 600  (in a script: TOKEN=$(docnum token ...))
    """
    import os
    import time

    from docnum.http.auth import ROLES

    with reported():
        secret = os.environ.get("DOCNUM_JWT_SECRET", "")
        if not secret:
            raise CommandError(
                "setting",
                "DOCNUM_JWT_SECRET is not set",
                hint="Export the secret docnum serve verifies tokens with (32 bytes at least).",
            )
        if role not in ROLES:
            raise CommandError(
                "setting", f"{role!r} is not a docnum role", hint=f"Use one of {', '.join(sorted(ROLES))}."
            )
        try:
            import jwt
        except ImportError as exc:
            raise CommandError(
                "setting", "signing a token needs PyJWT", hint="pip install 'docnum[server]'"
            ) from exc
        claims: dict[str, Any] = {"sub": sub, "role": role, "exp": int(time.time()) + ttl}
        if audience:
            claims["aud"] = audience
        typer.echo(jwt.encode(claims, secret, algorithm="HS256"))
