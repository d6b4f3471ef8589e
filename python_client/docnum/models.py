"""Typed results of the docnum client: one frozen dataclass per row shape the SQL contract returns.

Field names are the column names, so a row read with psycopg's ``dict_row`` builds the dataclass directly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = ["AuditEntry", "DocumentType", "Reservation"]


@dataclass(frozen=True)
class Reservation:
    """A number held by ``docnum.reserve_number`` until it is confirmed, cancelled or expires."""

    token: uuid.UUID
    document_number: str
    sequence_value: int
    expires_at: datetime


@dataclass(frozen=True)
class DocumentType:
    """One row of ``docnum.document_type``: how numbers of a type are formatted, scoped and reset."""

    code: str
    format: str
    scope: str
    reset: str
    time_zone: str
    max_value: int
    reservation_ttl: timedelta
    lock_timeout: timedelta | None
    allow_manual_override: bool
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    render_head: str
    render_tail: str
    seq_width: int


@dataclass(frozen=True)
class AuditEntry:
    """One row of the append-only ``docnum.audit_log``; ``client_addr`` is the address as text."""

    audit_id: int
    occurred_at: datetime
    operation: str
    document_type: str | None
    document_number: str | None
    scope_value: str | None
    actor: str | None
    session_user_name: str
    client_addr: str | None
    application_name: str | None
    old_value: Any
    new_value: Any
    metadata: Any
