"""What a request may carry: the validated types of texts, JSON and numbers, and every request body."""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

# -- what a request may carry ------------------------------------------------------------------------------
# Every text and number a request carries is checked here for what PostgreSQL cannot store at all (a NUL
# character, a lone surrogate, a number past its type, a JSON number JSON cannot write): such input would
# otherwise fail inside the driver or the server as an error of ours. It is a 422 naming the field, before
# anything runs. What docnum's rules allow (lengths, ranges, formats) stays the database's to say.

#: Levels of nesting a JSON value in a request (metadata) may have.
MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000), which PostgreSQL cannot store")
    if _SURROGATE.search(value):
        raise ValueError("must not contain a lone surrogate (U+D800 to U+DFFF): it is no character")
    return value


def check_json(value: Any, depth: int = 1) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"must not be nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("holds a number JSON cannot carry (Infinity, NaN, or one too large for a double)")
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key)
            check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json(item, depth + 1)
    return value


#: A text PostgreSQL can store.
Text = Annotated[str, AfterValidator(check_text)]
#: A JSON object PostgreSQL can store (jsonb), nested at most MAX_JSON_DEPTH levels.
JsonObject = Annotated[dict[str, Any], AfterValidator(check_json)]
#: The ranges of PostgreSQL's integer and bigint.
Int4 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int8 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
#: A duration in seconds or milliseconds: positive, and an interval PostgreSQL can hold.
Duration = Annotated[int, Field(gt=0, le=2**31 - 1)]

ScopeValue = Annotated[
    Text | None, Field(description="Scope value (a project or contract code) for PROJECT and CONTRACT types.")
]


class ReserveBody(BaseModel):
    document_type: Text = Field(description="The document type's code.", examples=["COR"])
    scope_value: ScopeValue = None
    metadata: JsonObject | None = Field(
        None, description="A JSON object kept with the reservation (at most 8 KiB as JSON text)."
    )
    ttl_seconds: Duration | None = Field(
        None, description="How long the reservation holds (default: the type's reservation_ttl)."
    )
    document_date: date | None = Field(None, description="The document's date (default: today).")


class TokenBody(BaseModel):
    token: Text = Field(description="The reservation token returned by reserve.")
    document_ref: Text | None = Field(None, description="confirm: your document's id, kept in the ledger.")
    reason: Text | None = Field(None, description="cancel: why, kept in the audit log.")


class NextBody(BaseModel):
    document_type: Text = Field(examples=["COR"])
    scope_value: ScopeValue = None
    document_ref: Text | None = None
    document_date: date | None = None


class BatchBody(BaseModel):
    document_type: Text
    count: Int4 = Field(description="How many numbers, 1 to 10,000.")
    scope_value: ScopeValue = None
    document_date: date | None = None


class ReserveBatchBody(BatchBody):
    metadata: JsonObject | None = Field(
        None, description="Kept with every number: at most 8 KiB, and 1 MiB for the whole batch."
    )
    ttl_seconds: Duration | None = None


class TypeSettings(BaseModel):
    format: Text | None = Field(None, description="The template, e.g. COR-{YYYY}-{SEQ:5}.")
    time_zone: Text | None = None
    max_value: Int8 | None = None
    reservation_ttl_seconds: Duration | None = None
    lock_timeout_ms: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    allow_manual_override: bool | None = None
    metadata: JsonObject | None = None


class DefineTypeBody(TypeSettings):
    code: Text = Field(examples=["COR"])
    format: Text = Field(description="The template, e.g. COR-{YYYY}-{SEQ:5}.")
    scope: Text | None = Field(None, description="GLOBAL (default), PROJECT or CONTRACT.")
    reset: Text | None = Field(None, description="NEVER (default), YEARLY, MONTHLY...")


class AlterTypeBody(TypeSettings):
    reason: Text | None = None


class ManualBody(BaseModel):
    document_type: Text
    document_number: Text = Field(description="The number a person chose.")
    reason: Text
    skip_validation: bool = False


class VoidBody(BaseModel):
    document_number: Text
    reason: Text


class SetCounterBody(BaseModel):
    document_type: Text
    scope_value: ScopeValue = None
    period: Text | None = Field(None, description="The counter's period (default: the current one).")
    value: Int8
    reason: Text


class ImportRow(BaseModel):
    document_type: Text | None = None
    document_number: Text | None = None
    created_at: Text | None = None
    document_ref: Text | None = None


class ImportBody(BaseModel):
    rows: list[ImportRow]
