"""docnum: gapless, auditable document numbering inside PostgreSQL.

The numbering itself lives in the database (schema ``docnum``, see docs/sql-api.md); this package is a
thin client::

    from docnum import Numbering

    numbering = Numbering(pool)
    with numbering.reservation("COR", actor="alice") as held:
        save_document(held.document_number)
        held.confirm(document_ref="DOC-1")
"""

from __future__ import annotations

from docnum.client import AsyncNumbering, AsyncReservationHandle, Numbering, ReservationHandle
from docnum.errors import (
    ConfigNotFound,
    DocnumError,
    DuplicateNumber,
    InstallNotPermitted,
    InvalidArgument,
    InvalidStateTransition,
    LockTimeout,
    ManualOverrideNotAllowed,
    NumberingUnavailable,
    NumberNotFound,
    RequestKeyReused,
    ReservationExpired,
    SequenceExhausted,
    TypeAlreadyExists,
)
from docnum.models import (
    AuditEntry,
    CounterStatus,
    DocumentType,
    Duplicate,
    Finding,
    Gap,
    ImportResult,
    RequestOutcome,
    Reservation,
)

__all__ = [
    "AsyncNumbering",
    "AsyncReservationHandle",
    "AuditEntry",
    "ConfigNotFound",
    "CounterStatus",
    "DocnumError",
    "DocumentType",
    "Duplicate",
    "DuplicateNumber",
    "Finding",
    "Gap",
    "ImportResult",
    "InstallNotPermitted",
    "InvalidArgument",
    "InvalidStateTransition",
    "LockTimeout",
    "ManualOverrideNotAllowed",
    "NumberNotFound",
    "Numbering",
    "NumberingUnavailable",
    "RequestKeyReused",
    "RequestOutcome",
    "Reservation",
    "ReservationExpired",
    "ReservationHandle",
    "SequenceExhausted",
    "TypeAlreadyExists",
]
