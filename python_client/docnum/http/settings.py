"""What ``docnum serve`` runs with: its settings (from ``DOCNUM_*`` variables and options), its fixed limits,
and the state one application keeps."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from docnum.http.auth import Verifier
from docnum.http.db import Database
from docnum.http.ratelimit import RateLimiter

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "EXPORT_CHUNK",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_ROWS",
    "PREFIX",
    "AppState",
    "Settings",
]

PREFIX = "/document-numbering"
#: Rows one import request may carry: one request is one transaction holding every counter it touches.
MAX_IMPORT_ROWS = 10_000
#: Bytes one import request may carry (a CSV row of a legacy number is well under 200 bytes).
MAX_IMPORT_BYTES = 16 * 1024 * 1024
#: Audit rows sent per chunk of a streamed export (and fetched per round trip).
EXPORT_CHUNK = 500
DEFAULT_RATE_LIMIT = 100


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the server needs; :meth:`from_env` reads the ``DOCNUM_*`` variables."""

    dsn: str
    jwt_secret: str | None = None
    jwks_file: Path | None = None
    jwt_audience: str | None = None
    #: Number-issuing requests (reserve, next, batches) per subject per minute; 0 turns the limit off.
    rate_limit: int = DEFAULT_RATE_LIMIT
    pool_min: int = 2
    pool_max: int = 20
    #: Seconds a request waits for a free connection before it gets 503.
    pool_timeout: float = 5.0
    #: Serve GET /metrics (docnum.http.metrics).
    metrics: bool = True
    #: Audit exports streaming at once, each holding a pooled connection (0: a quarter of pool_max).
    export_slots: int = 0
    #: Seconds a client of an export may take to accept the next chunk before the export is stopped.
    export_send_timeout: float = 30.0
    #: Seconds an export may stream in all.
    export_max_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.export_slots <= 0:
            object.__setattr__(self, "export_slots", max(1, self.pool_max // 4))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "dsn": env.get("DOCNUM_DSN", ""),
            "jwt_secret": env.get("DOCNUM_JWT_SECRET") or None,
            "jwks_file": Path(env["DOCNUM_JWKS_FILE"]) if env.get("DOCNUM_JWKS_FILE") else None,
            "jwt_audience": env.get("DOCNUM_JWT_AUDIENCE") or None,
        }
        if env.get("DOCNUM_RATE_LIMIT"):
            values["rate_limit"] = int(env["DOCNUM_RATE_LIMIT"])
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


@dataclasses.dataclass
class AppState:
    """What the application keeps between requests (``app.state.docnum``)."""

    settings: Settings
    verifier: Verifier
    limiter: RateLimiter
    database: Database
    exports: int = 0  # audit exports streaming now
