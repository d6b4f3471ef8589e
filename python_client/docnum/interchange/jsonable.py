"""docnum's results as JSON, shared by the CLI's ``--json`` output, the exports and the HTTP service."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

__all__ = ["json_item", "json_text", "json_value"]


def json_value(value: object) -> object:
    """``json.dumps`` default: times in ISO 8601, intervals in seconds, decimals as numbers, UUIDs as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def json_text(value: object) -> str:
    """``value`` as indented JSON (the layout of every ``--json`` output)."""
    return json.dumps(value, default=json_value, ensure_ascii=False, indent=2)


def json_item(value: object) -> str:
    """One element of a JSON array printed piece by piece, laid out as :func:`json_text` lays out a list."""
    return "\n".join("  " + line for line in json_text(value).splitlines())
