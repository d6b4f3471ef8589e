"""Every SQL statement the docnum client and `docnum doctor` run, in one place.

The operations tools' own catalog reads (the load test's verification, the exporter's background validation,
the embedded server's status) are named constants at the top of their modules, beside the code that reads
their rows; DBA checks are SQL of their own (``docnum.doctor()``).

Functions are called with named arguments, as docs/sql-api.md asks, and every placeholder is cast to the
parameter's declared type, so plain strings (a UUID, ``'5 minutes'``) are accepted and overload resolution
never guesses.  Column lists are explicit: the client reads the columns it knows and tolerates any the
server adds.

``define_type`` is the one call built at run time: its optional parameters have non-NULL SQL defaults, so
an argument the caller leaves out must not be sent at all.  :func:`define_type` composes the call from a
fixed list of parameter names with ``psycopg.sql``; values only ever travel as bound parameters.
"""

from __future__ import annotations

from collections.abc import Collection

from psycopg import sql

# Columns of docnum.document_type read back into models.DocumentType.
_DOCUMENT_TYPE_COLUMNS = (
    "t.code, t.format, t.scope, t.reset, t.time_zone, t.max_value, t.reservation_ttl, t.lock_timeout,"
    " t.allow_manual_override, t.metadata, t.created_at, t.updated_at, t.render_head, t.render_tail,"
    " t.seq_width"
)

# -----------------------------------------------------------------------------------------------------
# Administration (docnum_admin)

#: Parameters of docnum.define_type in declaration order, with their SQL types.  ``code``, ``format`` and
#: ``actor`` are always sent (actor defaults to NULL anyway); the others only when the caller gives them.
DEFINE_TYPE_PARAMETERS: dict[str, str] = {
    "code": "text",
    "format": "text",
    "scope": "text",
    "reset": "text",
    "time_zone": "text",
    "max_value": "bigint",
    "reservation_ttl": "interval",
    "lock_timeout": "interval",
    "allow_manual_override": "boolean",
    "metadata": "jsonb",
    "actor": "text",
}
DEFINE_TYPE_ALWAYS_SENT = frozenset({"code", "format", "actor"})


def define_type(sent: Collection[str]) -> sql.Composed:
    """``SELECT ... FROM docnum.define_type(...)`` naming the parameters in ``sent`` (plus the required).

    ``sent`` may hold only names of DEFINE_TYPE_PARAMETERS; the placeholder of each is ``%(name)s``.
    """
    unknown = set(sent) - DEFINE_TYPE_PARAMETERS.keys()
    if unknown:
        raise ValueError(f"not a parameter of docnum.define_type: {', '.join(sorted(unknown))}")
    arguments = [
        sql.SQL("{name} => {value}::{type}").format(
            name=sql.Identifier(name), value=sql.Placeholder(name), type=sql.SQL(sql_type)
        )
        for name, sql_type in DEFINE_TYPE_PARAMETERS.items()
        if name in sent or name in DEFINE_TYPE_ALWAYS_SENT
    ]
    return sql.SQL("SELECT {columns} FROM docnum.define_type({arguments}) AS t").format(
        columns=sql.SQL(_DOCUMENT_TYPE_COLUMNS), arguments=sql.SQL(", ").join(arguments)
    )


ALTER_TYPE = (
    "SELECT " + _DOCUMENT_TYPE_COLUMNS + " FROM docnum.alter_type("
    "document_type => %(document_type)s::text,"
    " format => %(format)s::text,"
    " time_zone => %(time_zone)s::text,"
    " max_value => %(max_value)s::bigint,"
    " reservation_ttl => %(reservation_ttl)s::interval,"
    " lock_timeout => %(lock_timeout)s::interval,"
    " allow_manual_override => %(allow_manual_override)s::boolean,"
    " metadata => %(metadata)s::jsonb,"
    " actor => %(actor)s::text,"
    " reason => %(reason)s::text) AS t"
)

OVERRIDE_NUMBER = (
    "SELECT docnum.override_number("
    "document_type => %(document_type)s::text, document_number => %(document_number)s::text,"
    " actor => %(actor)s::text, reason => %(reason)s::text, skip_validation => %(skip_validation)s::boolean)"
    " AS document_number"
)

VOID_NUMBER = (
    "SELECT docnum.void_number("
    "document_number => %(document_number)s::text, actor => %(actor)s::text, reason => %(reason)s::text)"
    " AS document_number"
)

#: Returns the replacement number.
VOID_AND_REPLACE = (
    "SELECT docnum.void_and_replace("
    "document_number => %(document_number)s::text, actor => %(actor)s::text, reason => %(reason)s::text)"
    " AS document_number"
)

SET_COUNTER = (
    "SELECT docnum.set_counter("
    "document_type => %(document_type)s::text, scope => %(scope)s::text, period => %(period)s::text,"
    " value => %(value)s::bigint, actor => %(actor)s::text, reason => %(reason)s::text) AS value"
)

#: ``rows`` is one JSON array holding every row of the batch; one result row per input row, in input order.
IMPORT_NUMBERS = (
    "SELECT r.row_number, r.document_type, r.document_number, r.status, r.detail"
    " FROM docnum.import_numbers(rows => %(rows)s::jsonb, actor => %(actor)s::text) AS r"
    " ORDER BY r.row_number"
)

#: ``table_name`` is resolved to a regclass with the caller's search_path.
REGISTER_DOCUMENT_TABLE = (
    "SELECT docnum.register_document_table("
    "table_name => %(table_name)s::regclass, number_column => %(number_column)s::name,"
    " actor => %(actor)s::text) AS registered"
)

GET_TYPE = (
    "SELECT " + _DOCUMENT_TYPE_COLUMNS + " FROM docnum.document_type AS t WHERE t.code = %(code)s::text"
)

# -----------------------------------------------------------------------------------------------------
# Issuing numbers (docnum_app)

RESERVE_NUMBER = (
    "SELECT r.token, r.document_number, r.sequence_value, r.expires_at FROM docnum.reserve_number("
    "document_type => %(document_type)s::text, scope => %(scope)s::text, actor => %(actor)s::text,"
    " metadata => %(metadata)s::jsonb, ttl => %(ttl)s::interval,"
    " document_date => %(document_date)s::date, request_id => %(request_id)s::text) AS r"
)

CONFIRM_NUMBER = (
    "SELECT docnum.confirm_number("
    "token => %(token)s::uuid, actor => %(actor)s::text, document_ref => %(document_ref)s::text)"
    " AS document_number"
)

CANCEL_NUMBER = (
    "SELECT docnum.cancel_number("
    "token => %(token)s::uuid, actor => %(actor)s::text, reason => %(reason)s::text) AS document_number"
)

NEXT_NUMBER = (
    "SELECT docnum.next_number("
    "document_type => %(document_type)s::text, scope => %(scope)s::text, actor => %(actor)s::text,"
    " document_ref => %(document_ref)s::text, document_date => %(document_date)s::date,"
    " request_id => %(request_id)s::text) AS document_number"
)

#: The numbers of one batch, in order (at most 10,000 a call); a batch takes no request key.
NEXT_NUMBERS = (
    "SELECT b.document_number FROM docnum.next_numbers("
    "document_type => %(document_type)s::text, count => %(count)s::integer, scope => %(scope)s::text,"
    " actor => %(actor)s::text, document_date => %(document_date)s::date) AS b"
)

RESERVE_NUMBERS = (
    "SELECT b.token, b.document_number, b.sequence_value, b.expires_at FROM docnum.reserve_numbers("
    "document_type => %(document_type)s::text, count => %(count)s::integer, scope => %(scope)s::text,"
    " actor => %(actor)s::text, metadata => %(metadata)s::jsonb, ttl => %(ttl)s::interval,"
    " document_date => %(document_date)s::date) AS b"
)

FIND_REQUEST = (
    "SELECT r.document_type, r.document_number, r.state, r.token, r.expires_at, r.issued_at"
    " FROM docnum.find_request(request_id => %(request_id)s::text) AS r"
)

EXPIRE_RESERVATIONS = "SELECT docnum.expire_reservations() AS expired"

# -----------------------------------------------------------------------------------------------------
# Reports (docnum_reader; number_history also docnum_app)

# Columns of docnum.audit_log (and of docnum.audit_export, in its order) read back into models.AuditEntry;
# the client address travels as text.
_AUDIT_COLUMNS = (
    "a.audit_id, a.occurred_at, a.operation, a.document_type, a.document_number, a.scope_value, a.actor,"
    " a.session_user_name, pg_catalog.host(a.client_addr) AS client_addr, a.application_name, a.old_value,"
    " a.new_value, a.metadata"
)

#: The trail of a number and of the numbers linked to it by void-and-replace, oldest first.
NUMBER_HISTORY = (
    "SELECT " + _AUDIT_COLUMNS + " FROM docnum.number_history(document_number => %(document_number)s::text)"
    " AS a ORDER BY a.audit_id"
)

#: Audit rows with occurred_at in [from_time, to_time), by audit_id; read through a server-side cursor.
AUDIT_EXPORT = (
    "SELECT " + _AUDIT_COLUMNS + " FROM docnum.audit_export("
    "from_time => %(from_time)s::timestamptz, to_time => %(to_time)s::timestamptz,"
    " document_type => %(document_type)s::text) AS a"
)

SEQUENCE_STATUS = (
    "SELECT s.document_type, s.scope_value, s.period, s.current_value, s.max_value, s.utilisation_pct,"
    " s.reserved, s.confirmed, s.cancelled, s.expired, s.voided, s.overridden, s.imported, s.last_used_at,"
    " s.counter_id"
    " FROM docnum.status(%(document_type)s::text) AS s"
)

#: One row per range of values, by type, scope, period and first value.
GAPS = (
    "SELECT g.document_type, g.scope_value, g.period, g.first_value, g.last_value, g.value_count,"
    " g.explained, g.source, g.reason, g.actor, g.recorded_at"
    " FROM docnum.gaps(document_type => %(document_type)s::text, scope => %(scope)s::text,"
    " period => %(period)s::text) AS g"
)

CHECK_DUPLICATES = (
    "SELECT d.document_number, d.occurrences, d.found_in, d.problem FROM docnum.check_duplicates() AS d"
)

#: Empty when healthy; rows come grouped by check, in the function's order.
VALIDATE = "SELECT v.check_name, v.severity, v.detail FROM docnum.validate() AS v"

SCHEMA_EXISTS = "SELECT pg_catalog.to_regnamespace('docnum') IS NOT NULL AS present"

# -----------------------------------------------------------------------------------------------------
# Checks run by `docnum demo` on the numbers it issued (docnum_app and docnum_reader may read the ledger).

#: Document numbers that appear more than once in the whole ledger (the unique key makes this empty).
LEDGER_DUPLICATES = (
    "SELECT l.document_number, count(*) AS copies FROM docnum.ledger AS l"
    " GROUP BY l.document_number HAVING count(*) > 1 ORDER BY l.document_number"
)

#: The run's numbers per counter: gapless when ``max_value - min_value + 1 = numbers = distinct_values``.
LEDGER_RUN_RANGES = (
    "SELECT l.document_type, c.scope_value, c.period, count(*) AS numbers,"
    " count(DISTINCT l.sequence_value) AS distinct_values, min(l.sequence_value) AS min_value,"
    " max(l.sequence_value) AS max_value,"
    " (array_agg(l.document_number ORDER BY l.sequence_value))[1] AS first_number,"
    " (array_agg(l.document_number ORDER BY l.sequence_value DESC))[1] AS last_number"
    " FROM docnum.ledger AS l JOIN docnum.counter AS c ON c.counter_id = l.counter_id"
    " WHERE l.document_number = ANY(%(document_numbers)s::text[])"
    " GROUP BY l.document_type, c.scope_value, c.period ORDER BY l.document_type, c.scope_value, c.period"
)

#: How many of the run's numbers are in each state.
LEDGER_RUN_STATES = (
    "SELECT l.state, count(*) AS numbers FROM docnum.ledger AS l"
    " WHERE l.document_number = ANY(%(document_numbers)s::text[]) GROUP BY l.state ORDER BY l.state"
)

#: docnum.doctor(): the DBA's checks as rows (check_name, status, detail).
DOCTOR = "SELECT check_name, status, detail FROM docnum.doctor(run_validate => %(run_validate)s)"
#: Whether docnum.doctor() exists, and whether the connected role may run it (by oid: naming it would need
#: USAGE on the schema, which a role without docnum's grants lacks).
DOCTOR_STATE = (
    "SELECT p.oid IS NOT NULL, coalesce(pg_catalog.has_schema_privilege(p.pronamespace, 'USAGE')"
    " AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE'), false)"
    " FROM (SELECT NULL) AS one LEFT JOIN pg_catalog.pg_proc p"
    " ON p.proname = 'doctor' AND p.pronamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n"
    " WHERE n.nspname = 'docnum')"
)
