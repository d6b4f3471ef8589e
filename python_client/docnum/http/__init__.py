"""docnum's HTTP API (``docnum serve``): FastAPI over the SQL functions, the database's roles behind it.

Install with the ``server`` extra (FastAPI, uvicorn, PyJWT).  :func:`create_app` builds the ASGI application
from :class:`Settings`; see :mod:`docnum.http.app` for the endpoints.
"""

from __future__ import annotations

from docnum.http.app import Settings, create_app

__all__ = ["Settings", "create_app"]
