"""Typed results of the docnum client: one frozen dataclass per row shape the SQL contract returns.

Field names are the column names, so a row read with psycopg's ``dict_row`` builds the dataclass directly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

__all__ = [
    "AuditEntry",
    "CounterStatus",
    "DocumentType",
    "Duplicate",
    "Finding",
    "Gap",
    "ImportResult",
    "RequestOutcome",
    "Reservation",
]


@dataclass(frozen=True)
class Reservation:
    """A number held by ``docnum.reserve_number`` until it is confirmed, cancelled or expires."""

    token: uuid.UUID
    document_number: str
    sequence_value: int
    expires_at: datetime


@dataclass(frozen=True)
class RequestOutcome:
    """What a ``request_id`` was served with (``docnum.find_request``): the number and its state now."""

    document_type: str
    document_number: str
    state: str
    token: uuid.UUID | None
    expires_at: datetime | None
    issued_at: datetime


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


@dataclass(frozen=True)
class ImportResult:
    """What ``docnum.import_numbers`` did with one input row (``row_number`` counts from 1 in the batch).

    ``status`` is ``imported``, ``already_present`` (imported by an earlier run; nothing changed) or
    ``rejected`` (``detail`` says why; nothing was written for it).
    """

    row_number: int
    document_type: str | None
    document_number: str | None
    status: str
    detail: str | None


@dataclass(frozen=True)
class CounterStatus:
    """One row of the view ``docnum.sequence_status``: a counter, how full it is and its numbers by state."""

    document_type: str
    scope_value: str
    period: str
    current_value: int
    max_value: int
    utilisation_pct: Decimal
    reserved: int
    confirmed: int
    cancelled: int
    expired: int
    voided: int
    overridden: int
    imported: int
    last_used_at: datetime | None
    counter_id: int


@dataclass(frozen=True)
class Gap:
    """A range of counter values at or below the counter with no ledger row (``docnum.gaps``).

    ``first_value``..``last_value`` (``value_count`` values) are wholly explained by one recorded skip or
    wholly unexplained. ``explained`` when a skip covers them; ``source`` (MANUAL_OVERRIDE, SET_COUNTER,
    IMPORT), ``reason``, ``actor`` and ``recorded_at`` come from the latest such skip, else they are None.
    """

    document_type: str
    scope_value: str
    period: str
    first_value: int
    last_value: int
    value_count: int
    explained: bool
    source: str | None
    reason: str | None
    actor: str | None
    recorded_at: datetime | None


@dataclass(frozen=True)
class Duplicate:
    """A number used more than once (``docnum.check_duplicates``); ``found_in`` names one source per use.

    A registered table that could not be checked (dropped, its column dropped, renamed or retyped, no longer a
    plain table, or not readable by the caller) comes as ``problem`` saying why, ``found_in`` its name and
    ``document_number`` and ``occurrences`` None.
    """

    document_number: str | None
    occurrences: int | None
    found_in: tuple[str, ...]
    problem: str | None = None


@dataclass(frozen=True)
class Finding:
    """One finding of ``docnum.validate``; ``severity`` is ``error`` or ``warning``."""

    check_name: str
    severity: str
    detail: str
