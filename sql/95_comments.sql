-- docnum: what the catalog says about itself. Every public function has a comment (what it does, what it
-- returns, the role it is granted to, the NB codes it raises), and so does every column of the tables and views
-- the roles read, so that psql's \df+ and \d+, PostgREST's OpenAPI and anyone reading pg_description see them.
-- tests/sql/test_catalog_comments.py fails when one is missing, and checks docs/sql-api.md against them.

SET LOCAL ROLE docnum_owner;

COMMENT ON FUNCTION docnum.define_type(text,text,text,text,text,bigint,interval,interval,boolean,jsonb,text) IS
    'Defines a document type: its code, number template (format), scope kind (GLOBAL, PROJECT, CONTRACT, YEARLY, MONTHLY), reset (NEVER, YEARLY, MONTHLY), time zone, max_value, reservation TTL, lock timeout, whether manual overrides are allowed, and metadata. Returns the new docnum.document_type row; defining the same type again with the same definition returns it unchanged. Role: docnum_admin. Raises NB006 (a bad template or argument, COLUMN names it), NB010 (the code exists with another definition), NB008 (read-only server).';
COMMENT ON FUNCTION docnum.alter_type(text,text,text,bigint,interval,interval,boolean,jsonb,text,text) IS
    'Changes a document type; a NULL argument leaves its setting unchanged. A new format may change only what cannot make two counters render the same text. Returns the updated docnum.document_type row; audited as ALTER_TYPE with the old and new values. Role: docnum_admin. Raises NB001 (unknown type), NB006 (a bad template or argument), NB008.';
COMMENT ON FUNCTION docnum.reserve_number(text,text,text,jsonb,interval,date,text) IS
    'Reserves the next number of a type (and scope value, for PROJECT and CONTRACT types) for ttl (default: the type''s reservation_ttl); confirm_number keeps it, cancel_number or expiry gives its place up. document_date picks the period of a resetting type. request_id makes a retry return the same reservation. Returns docnum.reservation (token, document_number, sequence_value, expires_at). Role: docnum_app. Raises NB001, NB002 (max_value reached), NB003 (lock timeout), NB006, NB008, NB012 (request_id reused with other arguments).';
COMMENT ON FUNCTION docnum.confirm_number(uuid,text,text) IS
    'Confirms a reservation by its token, recording actor and document_ref; confirming it again with the same document_ref returns the number again. Returns the number. Role: docnum_app. Raises NB004 (unknown, cancelled or expired token), NB009 (confirmed with another document_ref), NB006, NB008.';
COMMENT ON FUNCTION docnum.cancel_number(uuid,text,text) IS
    'Cancels a reservation by its token, with an optional reason: the number is never issued again and its gap is explained. Returns the number. Role: docnum_app. Raises NB004 (unknown token), NB009 (already confirmed), NB006, NB008.';
COMMENT ON FUNCTION docnum.next_number(text,text,text,text,date,text) IS
    'Issues the next number of a type (and scope value) confirmed at once, inside the caller''s transaction: a rollback gives it back. request_id makes a retry return the same number. Returns the number. Role: docnum_app. Raises NB001, NB002, NB003, NB006, NB008, NB012.';
COMMENT ON FUNCTION docnum.next_numbers(text,integer,text,text,date) IS
    'Issues count (1 to 10000) consecutive confirmed numbers of one counter in one statement, skipping values the ledger already holds. Returns (document_number, sequence_value) rows in order. Role: docnum_app. Raises NB001, NB002 (nothing is issued when the batch would pass max_value), NB003, NB006, NB008.';
COMMENT ON FUNCTION docnum.reserve_numbers(text,integer,text,text,jsonb,interval,date) IS
    'Reserves count (1 to 10000) numbers of one counter in one statement, each with its own token; metadata is copied to each, at most 1 MiB in all. Returns docnum.reservation rows in order. Role: docnum_app. Raises NB001, NB002, NB003, NB006, NB008.';
COMMENT ON FUNCTION docnum.find_request(text) IS
    'The outcome of the call a request_id named, without issuing anything: one row (document_type, document_number, state, token, expires_at, issued_at) once that call committed, else none. Role: docnum_app. Raises NB006 (a bad request_id).';
COMMENT ON FUNCTION docnum.expire_reservations() IS
    'Marks every reservation past its expires_at as expired (the sweep; run it from cron or pg_cron). Returns how many it expired. Role: docnum_app. Raises NB008.';
COMMENT ON FUNCTION docnum.override_number(text,text,text,text,boolean) IS
    'Records a number chosen by hand (state overridden) with a required reason; it must match the type''s template unless skip_validation. A value above its counter moves the counter up, the values jumped over recorded in docnum.counter_skip. Returns the number. Role: docnum_admin. Raises NB001, NB005 (the number or its value exists), NB006, NB007 (the type does not allow overrides), NB008.';
COMMENT ON FUNCTION docnum.void_number(text,text,text) IS
    'Voids a confirmed, overridden or imported number with a required reason; it stays in the ledger and is never issued again. Returns the number. Role: docnum_admin. Raises NB006, NB008, NB009 (a reservation, or already voided), NB011 (never issued).';
COMMENT ON FUNCTION docnum.void_and_replace(text,text,text) IS
    'Voids a number and issues its replacement in the same counter (same scope and period, confirmed, same document_ref), the two linked in the ledger. Returns the new number. Role: docnum_admin. Raises NB002, NB003, NB006, NB008, NB009, NB011.';
COMMENT ON FUNCTION docnum.set_counter(text,text,text,bigint,text,text) IS
    'Sets a counter (period NULL: the current one) to value, with a required reason; forward moves record the skipped values, backward moves are allowed and audited, and values the ledger holds are still never issued again. Returns the value. Role: docnum_admin. Raises NB001, NB006, NB008.';
COMMENT ON FUNCTION docnum.import_numbers(jsonb,text) IS
    'Imports legacy numbers: rows is a JSON array (at most 10000) of {document_type, document_number, created_at?, document_ref?}. Valid rows become state imported, counters end at least at the highest imported value; numbers already present are reported, not changed. Returns one docnum.import_result per row (imported, already_present or rejected, with why). Role: docnum_admin. Raises NB003 (lock timeout), NB006 (rows not an array, or too many), NB008.';
COMMENT ON FUNCTION docnum.register_document_table(regclass,name,text) IS
    'Registers an application table and its text column of document numbers, for check_duplicates() and validate() to read with their caller''s rights. Role: docnum_admin. Raises NB006 (not an ordinary table of an application schema, row security, or a column not text or varchar), NB008.';
COMMENT ON FUNCTION docnum.status(text) IS
    'One docnum.sequence_status row per counter, of one type or (NULL) of all, ordered by type, scope value and period. Role: docnum_reader. Raises NB001.';
COMMENT ON FUNCTION docnum.gaps(text,text,text) IS
    'Counter values never issued, as ranges (first_value, last_value, value_count), each wholly explained by a recorded skip (source, reason, actor, recorded_at) or wholly unexplained. Role: docnum_reader. Raises NB001.';
COMMENT ON FUNCTION docnum.check_duplicates() IS
    'Numbers found twice in the ledger, or in two places among the registered application tables (read with the caller''s rights); a table that cannot be read safely is a finding, not an error. Role: docnum_reader. Raises nothing of its own.';
COMMENT ON FUNCTION docnum.validate() IS
    'Integrity checks as rows (check_name, severity, detail), empty when healthy: counters below the ledger, numbers not matching their template, missing audit, unswept reservations, unexplained gaps, duplicates, unreadable registered tables. Role: docnum_reader. Raises nothing of its own.';
COMMENT ON FUNCTION docnum.number_history(text) IS
    'The audit trail of one number, oldest first, following void and replacement links both ways; its allocation is its first row. Role: docnum_app, docnum_reader. Raises nothing of its own (an unknown number gives no rows).';
COMMENT ON FUNCTION docnum.audit_export(timestamp with time zone,timestamp with time zone,text) IS
    'The rows of docnum.audit_trail with occurred_at in [from_time, to_time), of one type or all, ordered by audit_id. Role: docnum_reader. Raises NB001.';
COMMENT ON FUNCTION docnum.metrics(integer) IS
    'The figures of the Prometheus exporter, one row per sample (metric, document_type, label, value), read from the counters'' own counts so its cost does not grow with the ledger; max_scopes (0 to 1000) caps the per-counter series of each type. Role: docnum_reader. Raises NB006 (max_scopes out of range).';
COMMENT ON FUNCTION docnum._document_table_problem(oid,name) IS
    'Internal, used by check_duplicates() with its caller''s rights: why a registered table cannot be read safely, or NULL. Role: docnum_reader.';
COMMENT ON FUNCTION docnum._integrity_findings() IS
    'Internal, used by validate(): the checks of docnum''s own tables, run with the owner''s rights. Role: docnum_reader.';

COMMENT ON FUNCTION docnum.doctor(boolean) IS
    'The DBA''s checks as rows (check_name, status ok, warn or fail, detail): the recorded revision, the roles and owner, PUBLIC''s privileges, SECURITY DEFINER search paths, validate() (unless run_validate is false: its cost grows with the ledger), prepared and idle-in-transaction holders of a counter, fsync, synchronous_commit and standbys. SECURITY INVOKER: a check the caller cannot see through is a warn naming the grant that would show it. Role: docnum_reader. Raises nothing of its own.';

COMMENT ON COLUMN docnum.document_type.code IS 'The type''s code, upper case, e.g. COR: the {TYPE} of its numbers.';
COMMENT ON COLUMN docnum.document_type.format IS 'The number template, e.g. {TYPE}-{YYYY}-{SEQ:5}.';
COMMENT ON COLUMN docnum.document_type.scope IS 'What a counter is kept per: GLOBAL, PROJECT or CONTRACT (per scope value), YEARLY or MONTHLY (per period).';
COMMENT ON COLUMN docnum.document_type.reset IS 'When a PROJECT or CONTRACT counter restarts: NEVER, YEARLY or MONTHLY; NULL for the other scopes.';
COMMENT ON COLUMN docnum.document_type.time_zone IS 'The IANA time zone that decides a number''s year and month.';
COMMENT ON COLUMN docnum.document_type.max_value IS 'The highest value a counter may issue (NB002 past it).';
COMMENT ON COLUMN docnum.document_type.reservation_ttl IS 'How long a reservation lasts unless the call says otherwise.';
COMMENT ON COLUMN docnum.document_type.lock_timeout IS 'The longest an allocation waits for its counter (NB003 past it); NULL: only the session''s lock_timeout applies.';
COMMENT ON COLUMN docnum.document_type.allow_manual_override IS 'Whether override_number may record numbers chosen by hand.';
COMMENT ON COLUMN docnum.document_type.metadata IS 'The caller''s JSON object, at most 8192 bytes.';
COMMENT ON COLUMN docnum.document_type.created_at IS 'When the type was defined.';
COMMENT ON COLUMN docnum.document_type.updated_at IS 'When the type was last changed.';
COMMENT ON COLUMN docnum.document_type.render_head IS 'Derived from format: the literal text before {SEQ}, with the date tokens to fill in.';
COMMENT ON COLUMN docnum.document_type.render_tail IS 'Derived from format: the literal text after {SEQ}.';
COMMENT ON COLUMN docnum.document_type.seq_width IS 'Derived from format: the zero-padded width of {SEQ}.';
COMMENT ON COLUMN docnum.document_type.parse_pattern IS 'Derived from format: the regular expression that reads a number of this type back.';
COMMENT ON COLUMN docnum.document_type.parse_groups IS 'Derived from format: what each group of parse_pattern holds (scope, year, month, sequence).';
COMMENT ON COLUMN docnum.document_type.head_pattern IS 'Generated: the pattern of the text before {SEQ}, to find types whose numbers could meet.';
COMMENT ON COLUMN docnum.document_type.tail_pattern IS 'Generated: the pattern of the text after {SEQ}, to find types whose numbers could meet.';
COMMENT ON COLUMN docnum.counter.counter_id IS 'The counter''s id, referenced by the ledger and by docnum.counter_skip.';
COMMENT ON COLUMN docnum.counter.document_type IS 'The type whose numbers it issues.';
COMMENT ON COLUMN docnum.counter.scope_value IS 'The scope value (a project or contract code); '''' for a type without one.';
COMMENT ON COLUMN docnum.counter.period IS 'The period it counts in: '''' (no reset), 2025 (yearly) or 2025-10 (monthly).';
COMMENT ON COLUMN docnum.counter.current_value IS 'The last value issued or skipped; the next allocation takes the next value the ledger does not hold.';
COMMENT ON COLUMN docnum.counter.last_used_at IS 'When it last issued a number.';
COMMENT ON COLUMN docnum.counter.created_at IS 'When its first number was asked for.';
COMMENT ON COLUMN docnum.counter.issued IS 'Numbers issued by allocation, for the metrics.';
COMMENT ON COLUMN docnum.counter.reservations IS 'Of those, the reservations.';
COMMENT ON COLUMN docnum.counter.allocations IS 'Successful allocation calls (a batch is one).';
COMMENT ON COLUMN docnum.counter.wait_le_10ms IS 'Allocations that waited for the counter up to 10 ms.';
COMMENT ON COLUMN docnum.counter.wait_le_50ms IS 'Allocations that waited more than 10 ms and up to 50 ms.';
COMMENT ON COLUMN docnum.counter.wait_le_100ms IS 'Allocations that waited more than 50 ms and up to 100 ms.';
COMMENT ON COLUMN docnum.counter.wait_le_500ms IS 'Allocations that waited more than 100 ms and up to 500 ms.';
COMMENT ON COLUMN docnum.counter.wait_le_1s IS 'Allocations that waited more than 500 ms and up to 1 s.';
COMMENT ON COLUMN docnum.counter.wait_le_2s IS 'Allocations that waited more than 1 s and up to 2 s.';
COMMENT ON COLUMN docnum.counter.wait_le_5s IS 'Allocations that waited more than 2 s and up to 5 s.';
COMMENT ON COLUMN docnum.counter.wait_over_5s IS 'Allocations that waited more than 5 s.';
COMMENT ON COLUMN docnum.counter.lock_wait_seconds IS 'The seconds those allocations waited, in all.';
COMMENT ON COLUMN docnum.counter_queue.document_type IS 'The counter''s type (the counter''s key, so the row is found without the counter).';
COMMENT ON COLUMN docnum.counter_queue.scope_value IS 'The counter''s scope value.';
COMMENT ON COLUMN docnum.counter_queue.period IS 'The counter''s period.';
COMMENT ON COLUMN docnum.counter_queue.counter_id IS 'The counter whose turn this row''s lock is.';
COMMENT ON COLUMN docnum.ledger.number_id IS 'The number''s id.';
COMMENT ON COLUMN docnum.ledger.document_type IS 'Its type.';
COMMENT ON COLUMN docnum.ledger.counter_id IS 'The counter that issued it; NULL for a number recorded without one.';
COMMENT ON COLUMN docnum.ledger.sequence_value IS 'Its value in that counter.';
COMMENT ON COLUMN docnum.ledger.document_number IS 'The number as printed; unique.';
COMMENT ON COLUMN docnum.ledger.state IS 'reserved, confirmed, cancelled, expired, voided, overridden or imported.';
COMMENT ON COLUMN docnum.ledger.token IS 'The reservation''s token; NULL for a number issued confirmed.';
COMMENT ON COLUMN docnum.ledger.actor IS 'Who issued it.';
COMMENT ON COLUMN docnum.ledger.document_ref IS 'The caller''s reference of the document that carries it.';
COMMENT ON COLUMN docnum.ledger.metadata IS 'The caller''s JSON object, at most 8192 bytes.';
COMMENT ON COLUMN docnum.ledger.issued_at IS 'When it was issued (for an import, the row''s created_at).';
COMMENT ON COLUMN docnum.ledger.expires_at IS 'When its reservation expires.';
COMMENT ON COLUMN docnum.ledger.confirmed_at IS 'When it was confirmed.';
COMMENT ON COLUMN docnum.ledger.cancelled_at IS 'When its reservation was cancelled.';
COMMENT ON COLUMN docnum.ledger.expired_at IS 'When its reservation was marked expired.';
COMMENT ON COLUMN docnum.ledger.voided_at IS 'When it was voided.';
COMMENT ON COLUMN docnum.ledger.cancel_reason IS 'Why its reservation was cancelled.';
COMMENT ON COLUMN docnum.ledger.void_reason IS 'Why it was voided.';
COMMENT ON COLUMN docnum.ledger.replaces_number_id IS 'The voided number this one replaces.';
COMMENT ON COLUMN docnum.ledger.replaced_by_number_id IS 'The number that replaces this voided one.';
COMMENT ON COLUMN docnum.ledger.request_id IS 'The caller''s key for the call that issued it.';
COMMENT ON COLUMN docnum.ledger.audit_id IS 'Its allocation''s place in docnum.audit_trail; NULL for numbers recorded otherwise (override, import).';
COMMENT ON COLUMN docnum.ledger.session_user_name IS 'The database role that issued it.';
COMMENT ON COLUMN docnum.ledger.client_addr IS 'The client address of that session.';
COMMENT ON COLUMN docnum.ledger.application_name IS 'The application_name of that session.';
COMMENT ON COLUMN docnum.ledger.request_digest IS 'A digest of the arguments of the call request_id names: a retry with other arguments is NB012.';
COMMENT ON COLUMN docnum.audit_log.audit_id IS 'The row''s place in the audit trail.';
COMMENT ON COLUMN docnum.audit_log.occurred_at IS 'When it happened.';
COMMENT ON COLUMN docnum.audit_log.operation IS 'What happened: CONFIRM, CANCEL, EXPIRE, VOID, REPLACE_LINK, MANUAL_OVERRIDE, SET_COUNTER, IMPORT, DEFINE_TYPE, ALTER_TYPE...';
COMMENT ON COLUMN docnum.audit_log.document_type IS 'The type concerned.';
COMMENT ON COLUMN docnum.audit_log.document_number IS 'The number concerned, if any.';
COMMENT ON COLUMN docnum.audit_log.scope_value IS 'Its scope value, if any.';
COMMENT ON COLUMN docnum.audit_log.actor IS 'Who did it, as the caller said (or the JWT''s sub).';
COMMENT ON COLUMN docnum.audit_log.session_user_name IS 'The database role that did it.';
COMMENT ON COLUMN docnum.audit_log.client_addr IS 'The client address of that session.';
COMMENT ON COLUMN docnum.audit_log.application_name IS 'The application_name of that session.';
COMMENT ON COLUMN docnum.audit_log.old_value IS 'What it was before, as JSON.';
COMMENT ON COLUMN docnum.audit_log.new_value IS 'What it is after, as JSON.';
COMMENT ON COLUMN docnum.audit_log.metadata IS 'The operation''s details, as JSON.';
COMMENT ON COLUMN docnum.counter_skip.skip_id IS 'The skip''s id.';
COMMENT ON COLUMN docnum.counter_skip.counter_id IS 'The counter whose values were skipped.';
COMMENT ON COLUMN docnum.counter_skip.from_value IS 'The first value skipped.';
COMMENT ON COLUMN docnum.counter_skip.to_value IS 'The last value skipped.';
COMMENT ON COLUMN docnum.counter_skip.source IS 'What skipped them: MANUAL_OVERRIDE, SET_COUNTER or IMPORT.';
COMMENT ON COLUMN docnum.counter_skip.reason IS 'Why, as given.';
COMMENT ON COLUMN docnum.counter_skip.actor IS 'Who.';
COMMENT ON COLUMN docnum.counter_skip.number_id IS 'The number whose recording skipped them (override, import), if any.';
COMMENT ON COLUMN docnum.counter_skip.recorded_at IS 'When.';
COMMENT ON COLUMN docnum.document_table.schema_name IS 'The registered table''s schema.';
COMMENT ON COLUMN docnum.document_table.table_name IS 'The registered table''s name.';
COMMENT ON COLUMN docnum.document_table.number_column IS 'Its text or varchar column of document numbers.';
COMMENT ON COLUMN docnum.document_table.registered_at IS 'When it was registered.';
COMMENT ON COLUMN docnum.audit_trail.audit_id IS 'The row''s place in the trail.';
COMMENT ON COLUMN docnum.audit_trail.occurred_at IS 'When it happened (for an allocation, its issued_at).';
COMMENT ON COLUMN docnum.audit_trail.operation IS 'What happened; RESERVE, NEXT and REPLACE are allocations, read from the ledger.';
COMMENT ON COLUMN docnum.audit_trail.document_type IS 'The type concerned.';
COMMENT ON COLUMN docnum.audit_trail.document_number IS 'The number concerned, if any.';
COMMENT ON COLUMN docnum.audit_trail.scope_value IS 'Its scope value, if any.';
COMMENT ON COLUMN docnum.audit_trail.actor IS 'Who did it.';
COMMENT ON COLUMN docnum.audit_trail.session_user_name IS 'The database role that did it.';
COMMENT ON COLUMN docnum.audit_trail.client_addr IS 'The client address of that session.';
COMMENT ON COLUMN docnum.audit_trail.application_name IS 'The application_name of that session.';
COMMENT ON COLUMN docnum.audit_trail.old_value IS 'What it was before, as JSON (NULL for an allocation).';
COMMENT ON COLUMN docnum.audit_trail.new_value IS 'What it is after, as JSON.';
COMMENT ON COLUMN docnum.audit_trail.metadata IS 'The operation''s details, as JSON.';
COMMENT ON COLUMN docnum.sequence_status.document_type IS 'The counter''s type.';
COMMENT ON COLUMN docnum.sequence_status.scope_value IS 'Its scope value.';
COMMENT ON COLUMN docnum.sequence_status.period IS 'Its period.';
COMMENT ON COLUMN docnum.sequence_status.current_value IS 'Its current value.';
COMMENT ON COLUMN docnum.sequence_status.max_value IS 'The type''s max_value.';
COMMENT ON COLUMN docnum.sequence_status.utilisation_pct IS 'current_value as a percentage of max_value.';
COMMENT ON COLUMN docnum.sequence_status.reserved IS 'Its numbers now reserved.';
COMMENT ON COLUMN docnum.sequence_status.confirmed IS 'Its numbers confirmed.';
COMMENT ON COLUMN docnum.sequence_status.cancelled IS 'Its reservations cancelled.';
COMMENT ON COLUMN docnum.sequence_status.expired IS 'Its reservations expired.';
COMMENT ON COLUMN docnum.sequence_status.voided IS 'Its numbers voided.';
COMMENT ON COLUMN docnum.sequence_status.overridden IS 'Its numbers recorded by override.';
COMMENT ON COLUMN docnum.sequence_status.imported IS 'Its numbers imported.';
COMMENT ON COLUMN docnum.sequence_status.last_used_at IS 'When it last issued a number.';
COMMENT ON COLUMN docnum.sequence_status.counter_id IS 'Its id.';

RESET ROLE;
