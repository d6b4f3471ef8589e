-- docnum: types, tables and the constraints that carry the invariants.
-- A number can exist once (per counter and as rendered text, across the whole database); every row states how it
-- was issued and what became of it; the audit log only ever grows.

CREATE TYPE docnum.reservation AS (
    token           uuid,
    document_number text,
    sequence_value  bigint,
    expires_at      timestamptz
);

-- The to_char() pattern that renders the date tokens of a compiled head or tail in one call: literal text in
-- double quotes (its backslashes and double quotes escaped), {YYYY} {YY} {MM} {DD} as to_char's own fields, and
-- {SCOPE} kept as literal text for the caller to replace afterwards. Allocation renders with it; docnum._fill()
-- renders the same text token by token (a test holds the two to each other).
CREATE FUNCTION docnum._to_char_pattern(p_render text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN '"' || replace(replace(replace(replace(replace(replace(p_render, '\', '\\'), '"', '\"'),
                                              '{YYYY}', '"YYYY"'), '{YY}', '"YY"'), '{MM}', '"MM"'),
                      '{DD}', '"DD"') || '"';

CREATE TABLE docnum.document_type (
    code                  text PRIMARY KEY
                          CONSTRAINT document_type_code_check CHECK (code ~ '^[A-Z][A-Z0-9_]{0,29}$'),
    format                text NOT NULL CHECK (length(format) BETWEEN 1 AND 200),
    scope                 text NOT NULL CHECK (scope IN ('GLOBAL', 'PROJECT', 'CONTRACT', 'YEARLY', 'MONTHLY')),
    reset                 text NOT NULL CHECK (reset IN ('NEVER', 'YEARLY', 'MONTHLY')),
    time_zone             text NOT NULL,
    -- At most 2^63 - 2, so that the value after the last one still fits in a bigint and is refused as NB002.
    max_value             bigint NOT NULL CHECK (max_value BETWEEN 1 AND 9223372036854775806),
    reservation_ttl       interval NOT NULL
                          CHECK (reservation_ttl > interval '0' AND reservation_ttl <= interval '7 days'),
    lock_timeout          interval CHECK (lock_timeout > interval '0' AND lock_timeout <= interval '1 hour'),
    allow_manual_override boolean NOT NULL DEFAULT false,
    metadata              jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- Derived from format by docnum._compile_format(); never set by hand.
    render_head           text NOT NULL,   -- text before {SEQ}, {TYPE} already substituted
    render_tail           text NOT NULL,   -- text after {SEQ}, {TYPE} already substituted
    seq_width             integer NOT NULL CHECK (seq_width BETWEEN 0 AND 18),
    parse_pattern         text NOT NULL,   -- anchored regular expression that reads a number back
    parse_groups          text[] NOT NULL, -- the token captured by each group of parse_pattern
    -- Head and tail as to_char() patterns: an allocation renders its date tokens with one call.
    head_pattern          text NOT NULL GENERATED ALWAYS AS (docnum._to_char_pattern(render_head)) STORED,
    tail_pattern          text NOT NULL GENERATED ALWAYS AS (docnum._to_char_pattern(render_tail)) STORED,
    -- A scope value is needed exactly for PROJECT and CONTRACT; YEARLY and MONTHLY scopes reset accordingly.
    CONSTRAINT document_type_scope_reset_check CHECK (
        (scope = 'YEARLY' AND reset = 'YEARLY') OR (scope = 'MONTHLY' AND reset = 'MONTHLY')
        OR scope IN ('GLOBAL', 'PROJECT', 'CONTRACT'))
);
COMMENT ON TABLE docnum.document_type IS 'One numbering configuration per document type';

-- Every allocation updates a counter row and inserts a ledger row (its own audit record). The ledger's row rules
-- live in one IMMUTABLE function, docnum._ledger_row_is_valid(). Since revision 0006 they, and the reference
-- of a number to its counter, are checked by one row trigger, docnum._ledger_verify_row(), for every writer but
-- docnum_owner: the owner of docnum's SECURITY DEFINER functions, whose rows are right by construction (a test
-- holds every function's writes to the rules). A write by anyone else that breaks a rule fails as the CHECK
-- ledger_row_check and the foreign key ledger_counter_fkey used to fail. Uniqueness stays with unique indexes.
-- A counter's identity is checked once, by a trigger, when the counter is created, and can never change
-- afterwards; a counter is never removed (counter_no_delete), so no number loses its counter. The only CHECK
-- an allocation pays for is on the counter value it changes.

CREATE TABLE docnum.counter (
    counter_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_type text NOT NULL REFERENCES docnum.document_type (code),
    scope_value   text NOT NULL DEFAULT '',
    period        text NOT NULL DEFAULT '',
    current_value bigint NOT NULL DEFAULT 0 CONSTRAINT counter_current_value_check CHECK (current_value >= 0),
    last_used_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- What the metrics read (docnum.metrics), kept by the UPDATE every allocation already makes, so they cost
    -- no row of their own and roll back with the allocation they count. issued: numbers issued by allocation
    -- (reservations among them: reservations); allocations: successful allocation calls (a batch is one);
    -- wait_*: how many of them waited for the counter, by bucket of docnum._lock_wait_bucket(), an allocation
    -- that found its counter free counting in none (a wait of 0); lock_wait_seconds: what those waited.
    -- Plain columns, not an array: a counter row holding an array slowed the hot counter at 32 clients to a third
    -- in some runs (measured; a rewritten table did not show it), and the columns cost nothing measurable.
    issued        bigint NOT NULL DEFAULT 0,
    reservations  bigint NOT NULL DEFAULT 0,
    allocations   bigint NOT NULL DEFAULT 0,
    wait_le_10ms  bigint NOT NULL DEFAULT 0,
    wait_le_50ms  bigint NOT NULL DEFAULT 0,
    wait_le_100ms bigint NOT NULL DEFAULT 0,
    wait_le_500ms bigint NOT NULL DEFAULT 0,
    wait_le_1s    bigint NOT NULL DEFAULT 0,
    wait_le_2s    bigint NOT NULL DEFAULT 0,
    wait_le_5s    bigint NOT NULL DEFAULT 0,
    wait_over_5s  bigint NOT NULL DEFAULT 0,
    lock_wait_seconds double precision NOT NULL DEFAULT 0,
    CONSTRAINT counter_key UNIQUE (document_type, scope_value, period),
    -- What the ledger's numbers reference: their counter together with its type.
    CONSTRAINT counter_type_key UNIQUE (counter_id, document_type)
)
-- Half of every page stays free for the next versions of its rows, so an allocation's UPDATE stays HOT (no new
-- index entries, old versions pruned in place) even when pruning falls behind a busy counter.
WITH (fillfactor = 50);
COMMENT ON TABLE docnum.counter IS 'One counter per (document type, scope value, period)';

-- A counter's identity (id, type, scope value, period) is valid when the counter is created and never changes:
-- its numbers were rendered from it. A trigger rather than a CHECK, because an UPDATE OF trigger does not fire
-- for the allocations' UPDATE, which sets current_value only. Raises what a CHECK would on a bad new row.
CREATE FUNCTION docnum._counter_identity_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.counter_id <> OLD.counter_id OR NEW.document_type <> OLD.document_type
           OR NEW.scope_value <> OLD.scope_value OR NEW.period <> OLD.period THEN
            RAISE EXCEPTION 'the identity of a counter cannot change'
                USING ERRCODE = 'NB009',
                      DETAIL = pg_catalog.format('Counter %s keeps its type %s, scope value %L and period %L.',
                                                 OLD.counter_id, OLD.document_type, OLD.scope_value, OLD.period),
                      HINT = 'Its numbers were rendered from them; to move its value, set the counter instead.';
        END IF;
        RETURN NEW;
    END IF;
    -- Counter ids stay within int4 (they always have); a period is '' (no reset), YYYY or YYYY-MM, with a year
    -- from 1000 to 9999 like every document date.
    IF NEW.counter_id NOT BETWEEN 1 AND 2147483647 OR NEW.period !~ '^([1-9][0-9]{3}(-(0[1-9]|1[0-2]))?)?$' THEN
        RAISE EXCEPTION 'new row for relation "counter" violates check constraint "%"', TG_NAME
            USING ERRCODE = 'check_violation', SCHEMA = 'docnum', TABLE = 'counter', CONSTRAINT = TG_NAME,
                  DETAIL = pg_catalog.format('counter_id %s must lie in 1..2147483647 and period %L be empty, '
                                             'YYYY or YYYY-MM.', NEW.counter_id, left(NEW.period, 20));
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER counter_identity_check BEFORE INSERT OR UPDATE OF counter_id, document_type, scope_value, period
    ON docnum.counter FOR EACH ROW EXECUTE FUNCTION docnum._counter_identity_check();

-- The queue in front of each counter: one row per counter, made with it and never changed. Allocations take
-- turns on a counter by locking its queue row (FOR UPDATE): the lock manager queues the waiters for a row that
-- does not change in arrival order, so every waiter is served in turn, without a bound and without a stampede
-- (the counter row itself gets a new version from every allocation, which sends its waiters after the newest one
-- all at once). Only a role that may UPDATE this table can lock its rows, that is docnum's own functions: no
-- other role of the database can take a counter's turn or hold up its queue. It repeats the counter's key, so
-- an allocation finds its counter's turn, and takes it, in one index probe.
CREATE TABLE docnum.counter_queue (
    document_type text NOT NULL,
    scope_value   text NOT NULL,
    period        text NOT NULL,
    counter_id    bigint NOT NULL CONSTRAINT counter_queue_counter_key UNIQUE,
    CONSTRAINT counter_queue_pkey PRIMARY KEY (document_type, scope_value, period)
);
COMMENT ON TABLE docnum.counter_queue IS
    'The turn of each counter: allocations lock its row (FOR UPDATE) and are served in arrival order';

-- Every new counter gets its queue row in the same transaction.
CREATE FUNCTION docnum._counter_queue_row() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO docnum.counter_queue (document_type, scope_value, period, counter_id)
    VALUES (NEW.document_type, NEW.scope_value, NEW.period, NEW.counter_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER counter_queue_row AFTER INSERT ON docnum.counter
    FOR EACH ROW EXECUTE FUNCTION docnum._counter_queue_row();

CREATE TABLE docnum.ledger (
    number_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_type      text NOT NULL,
    counter_id         bigint,
    sequence_value     bigint,
    document_number    text NOT NULL,
    state              text NOT NULL,
    token              uuid,
    actor              text,
    document_ref       text,
    metadata           jsonb,
    issued_at          timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz,
    confirmed_at       timestamptz,
    cancelled_at       timestamptz,
    expired_at         timestamptz,
    voided_at          timestamptz,
    cancel_reason      text,
    void_reason        text,
    -- A replacement and the number it replaces name each other (void_and_replace); both links are checked by
    -- docnum._ledger_verify_row below, as the foreign keys ledger_replaces_number_id_fkey and
    -- ledger_replaced_by_number_id_fkey did (a number is never deleted, so a link found stays good).
    replaces_number_id bigint,
    replaced_by_number_id bigint,
    request_id         text,   -- the caller's key for the call that issued it (reserve_number, next_number)
    -- An allocation (RESERVE, NEXT, REPLACE) is audited by its ledger row, not by an audit_log row: audit_id is
    -- its place in the audit trail, drawn from audit_log's own identity sequence, with who issued it from where
    -- (the audit_log columns the row lacks). NULL for numbers recorded otherwise (override, import) and for
    -- numbers issued before revision 0005, whose audit rows are in docnum.audit_log.
    audit_id           bigint,
    session_user_name  text,
    client_addr        inet,
    application_name   text,
    -- What the call a request_id names asked for (docnum._request_digest of its arguments): a retry with the same
    -- key must ask for the same thing, or it is refused (NB012). NULL without a request_id, and for numbers
    -- issued with one before revision 0010.
    request_digest     text,
    CONSTRAINT ledger_document_number_key UNIQUE (document_number),
    CONSTRAINT ledger_counter_value_key UNIQUE (counter_id, sequence_value)
    -- A number issued by a counter is of that counter's type (and the counter's own key makes the type exist):
    -- docnum._ledger_verify_row() below checks it as the foreign key ledger_counter_fkey did. Numbers without a
    -- counter reference their type through the ledger_document_type_fkey trigger below. A plain key on
    -- document_type would make every allocation share-lock its type's row, which concurrent allocations of a
    -- type then share through a MultiXact each.
);
COMMENT ON TABLE docnum.ledger IS 'Every number ever issued, with its state; a number is never issued twice';
-- Only reservations carry a token.
CREATE UNIQUE INDEX ledger_token_key ON docnum.ledger (token) WHERE token IS NOT NULL;
-- A request key is served once: a retry finds the number issued for it.
CREATE UNIQUE INDEX ledger_request_id_key ON docnum.ledger (request_id) WHERE request_id IS NOT NULL;
-- The sweep of expired reservations reads only live reservations.
CREATE INDEX ledger_reserved_expiry_idx ON docnum.ledger (expires_at) WHERE state = 'reserved';
-- Reservations that ended without a confirmation, and voided ones, per type: what docnum.metrics() counts by
-- state without reading the ledger. Allocation never writes an entry (its rows are reserved or confirmed).
CREATE INDEX ledger_settled_reservation_idx ON docnum.ledger (document_type, state)
    WHERE token IS NOT NULL AND state IN ('cancelled', 'expired', 'voided');

-- The rules of a ledger row: what identifies a number is well formed, and each state has what it implies.
CREATE FUNCTION docnum._ledger_row_is_valid(p_row docnum.ledger) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_row.sequence_value <= 0
       OR length(p_row.document_number) NOT BETWEEN 1 AND 300
       -- a counter value comes with its counter
       OR (p_row.counter_id IS NULL) <> (p_row.sequence_value IS NULL)
       OR p_row.expires_at <= p_row.issued_at THEN
        RETURN false;
    END IF;
    -- Only overridden and voided numbers may lack a counter (text that does not parse); the most frequent
    -- states first.
    IF p_row.state = 'confirmed' THEN
        RETURN p_row.confirmed_at IS NOT NULL AND p_row.counter_id IS NOT NULL;
    ELSIF p_row.state = 'reserved' THEN
        RETURN p_row.token IS NOT NULL AND p_row.expires_at IS NOT NULL AND p_row.counter_id IS NOT NULL;
    END IF;
    RETURN CASE p_row.state
        WHEN 'cancelled' THEN p_row.cancelled_at IS NOT NULL AND p_row.counter_id IS NOT NULL
        WHEN 'expired' THEN p_row.expired_at IS NOT NULL AND p_row.counter_id IS NOT NULL
        WHEN 'voided' THEN p_row.voided_at IS NOT NULL
        WHEN 'overridden' THEN true
        WHEN 'imported' THEN p_row.counter_id IS NOT NULL
        ELSE false END;
END
$$;

-- The ledger's rules for a row written by anyone but docnum's own functions: the row rules, as the CHECK
-- ledger_row_check; its counter, of its type, as the foreign key ledger_counter_fkey (MATCH SIMPLE: a
-- number without a counter has none to check); the numbers it replaces or is replaced by, as the foreign keys
-- ledger_replaces_number_id_fkey and ledger_replaced_by_number_id_fkey. Raises what those raised. A NULL in a NOT NULL column is left to
-- its NOT NULL constraint, which PostgreSQL checked before any CHECK. Counters are permanent and their identity
-- never changes, so the counter found stays the number's counter without a lock.
CREATE FUNCTION docnum._ledger_verify_row() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.document_type IS NULL OR NEW.document_number IS NULL OR NEW.state IS NULL OR NEW.issued_at IS NULL THEN
        RETURN NEW;
    END IF;
    IF docnum._ledger_row_is_valid(NEW) IS FALSE THEN
        RAISE EXCEPTION 'new row for relation "ledger" violates check constraint "ledger_row_check"'
            USING ERRCODE = 'check_violation', SCHEMA = 'docnum', TABLE = 'ledger',
                  CONSTRAINT = 'ledger_row_check', DETAIL = pg_catalog.format('Failing row contains %s.', NEW);
    END IF;
    IF NEW.counter_id IS NOT NULL AND NOT EXISTS (
           SELECT FROM docnum.counter c
            WHERE c.counter_id = NEW.counter_id AND c.document_type = NEW.document_type) THEN
        RAISE EXCEPTION 'insert or update on table "ledger" violates foreign key constraint "ledger_counter_fkey"'
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'docnum', TABLE = 'ledger',
                  CONSTRAINT = 'ledger_counter_fkey',
                  DETAIL = pg_catalog.format('Key (counter_id, document_type)=(%s, %s) is not present in table '
                                             '"counter".', NEW.counter_id, NEW.document_type);
    END IF;
    IF NEW.replaces_number_id IS NOT NULL AND NOT EXISTS (
           SELECT FROM docnum.ledger l WHERE l.number_id = NEW.replaces_number_id) THEN
        RAISE EXCEPTION 'insert or update on table "ledger" violates foreign key constraint '
                        '"ledger_replaces_number_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'docnum', TABLE = 'ledger',
                  CONSTRAINT = 'ledger_replaces_number_id_fkey',
                  DETAIL = pg_catalog.format('Key (replaces_number_id)=(%s) is not present in table "ledger".',
                                             NEW.replaces_number_id);
    END IF;
    IF NEW.replaced_by_number_id IS NOT NULL AND NOT EXISTS (
           SELECT FROM docnum.ledger l WHERE l.number_id = NEW.replaced_by_number_id) THEN
        RAISE EXCEPTION 'insert or update on table "ledger" violates foreign key constraint '
                        '"ledger_replaced_by_number_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'docnum', TABLE = 'ledger',
                  CONSTRAINT = 'ledger_replaced_by_number_id_fkey',
                  DETAIL = pg_catalog.format('Key (replaced_by_number_id)=(%s) is not present in table "ledger".',
                                             NEW.replaced_by_number_id);
    END IF;
    RETURN NEW;
END
$$;

-- Named to fire after ledger_transition_check (BEFORE triggers fire in name order), as the constraints it
-- replaces were checked after every BEFORE trigger: an UPDATE that changes what identifies a number still fails
-- with NB009 first.
CREATE TRIGGER ledger_verify_row BEFORE INSERT OR UPDATE ON docnum.ledger
    FOR EACH ROW WHEN (current_user <> 'docnum_owner') EXECUTE FUNCTION docnum._ledger_verify_row();

CREATE TABLE docnum.audit_log (
    audit_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at       timestamptz NOT NULL DEFAULT now(),
    operation         text NOT NULL CHECK (operation ~ '^[A-Z_]+$'),
    document_type     text,
    document_number   text,
    scope_value       text,
    actor             text,
    session_user_name text NOT NULL DEFAULT session_user,
    client_addr       inet DEFAULT inet_client_addr(),
    application_name  text DEFAULT current_setting('application_name'),
    old_value         jsonb,
    new_value         jsonb,
    metadata          jsonb
);
COMMENT ON TABLE docnum.audit_log IS 'Append-only record of every docnum operation';
CREATE INDEX audit_log_number_idx ON docnum.audit_log (document_number);
CREATE INDEX audit_log_time_idx ON docnum.audit_log (occurred_at);
-- The administrative events docnum.metrics() counts per type, without reading the whole log.
CREATE INDEX audit_log_metric_idx ON docnum.audit_log (document_type, operation)
    WHERE operation IN ('MANUAL_OVERRIDE', 'VOID');

-- The audit log only grows: UPDATE, DELETE and TRUNCATE fail for every role, the owner included.
CREATE FUNCTION docnum._audit_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'docnum.audit_log is append-only'
        USING ERRCODE = 'NB009',
              DETAIL = pg_catalog.format('%s on docnum.audit_log was refused.', TG_OP),
              HINT = 'Audit rows are never changed or removed; record a correcting operation instead.';
END
$$;

CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON docnum.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION docnum._audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON docnum.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION docnum._audit_log_is_append_only();

-- Ledger rows move only forward through their life cycle, and what identifies a number never changes.
CREATE FUNCTION docnum._ledger_transition_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.number_id <> OLD.number_id OR NEW.document_type <> OLD.document_type
       OR NEW.counter_id IS DISTINCT FROM OLD.counter_id OR NEW.sequence_value IS DISTINCT FROM OLD.sequence_value
       OR NEW.document_number <> OLD.document_number OR NEW.token IS DISTINCT FROM OLD.token
       OR NEW.issued_at <> OLD.issued_at OR NEW.request_id IS DISTINCT FROM OLD.request_id
       OR NEW.request_digest IS DISTINCT FROM OLD.request_digest
       -- the allocation's audit record
       OR NEW.audit_id IS DISTINCT FROM OLD.audit_id OR NEW.actor IS DISTINCT FROM OLD.actor
       OR NEW.session_user_name IS DISTINCT FROM OLD.session_user_name
       OR NEW.client_addr IS DISTINCT FROM OLD.client_addr
       OR NEW.application_name IS DISTINCT FROM OLD.application_name
       OR NEW.metadata IS DISTINCT FROM OLD.metadata
       -- a replacement stays one (its allocation reads as REPLACE)
       OR NEW.replaces_number_id IS DISTINCT FROM coalesce(OLD.replaces_number_id, NEW.replaces_number_id) THEN
        RAISE EXCEPTION 'the identity of an issued number cannot change'
            USING ERRCODE = 'NB009',
                  DETAIL = pg_catalog.format('Number %s keeps its type, counter, value, text, token and the '
                                             'record of its issue.',
                                             OLD.document_number),
                  HINT = 'Void the number and issue a replacement instead.';
    END IF;
    IF NEW.state <> OLD.state AND NOT (
           (OLD.state = 'reserved' AND NEW.state IN ('confirmed', 'cancelled', 'expired'))
        OR (OLD.state IN ('confirmed', 'overridden', 'imported') AND NEW.state = 'voided')) THEN
        RAISE EXCEPTION 'invalid state transition for %: % -> %', OLD.document_number, OLD.state, NEW.state
            USING ERRCODE = 'NB009',
                  DETAIL = 'reserved -> confirmed|cancelled|expired and confirmed|overridden|imported -> voided '
                           'are the only transitions.',
                  HINT = 'Check the number''s state in its history.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_transition_check BEFORE UPDATE ON docnum.ledger
    FOR EACH ROW EXECUTE FUNCTION docnum._ledger_transition_check();

-- The foreign key of the numbers without a counter (docnum._ledger_verify_row checks the others): their type exists,
-- and stays while they reference it. Raises what a foreign key would.
CREATE FUNCTION docnum._ledger_type_exists() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM FROM docnum.document_type t WHERE t.code = NEW.document_type FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insert or update on table "ledger" violates foreign key constraint "%"', TG_NAME
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'docnum', TABLE = 'ledger', CONSTRAINT = TG_NAME,
                  DETAIL = pg_catalog.format('Key (document_type)=(%s) is not present in table "document_type".',
                                             NEW.document_type);
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER ledger_document_type_fkey AFTER INSERT OR UPDATE OF document_type, counter_id
    ON docnum.ledger FOR EACH ROW WHEN (NEW.counter_id IS NULL) EXECUTE FUNCTION docnum._ledger_type_exists();

CREATE FUNCTION docnum._document_type_is_unreferenced() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.code = OLD.code THEN
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT FROM docnum.ledger l WHERE l.document_type = OLD.code AND l.counter_id IS NULL) THEN
        RAISE EXCEPTION '% on table "document_type" violates foreign key constraint "ledger_document_type_fkey" '
                        'on table "ledger"', CASE TG_OP WHEN 'DELETE' THEN 'delete' ELSE 'update' END
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'docnum', TABLE = 'ledger',
                  CONSTRAINT = 'ledger_document_type_fkey',
                  DETAIL = pg_catalog.format('Key (document_type)=(%s) is still referenced from table "ledger".',
                                             OLD.code);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER document_type_referenced_by_ledger BEFORE DELETE OR UPDATE OF code ON docnum.document_type
    FOR EACH ROW EXECUTE FUNCTION docnum._document_type_is_unreferenced();

-- No DELETE or TRUNCATE on the ledger either: an issued number is accounted for forever.
CREATE FUNCTION docnum._ledger_is_permanent() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'numbers in docnum.ledger are permanent'
        USING ERRCODE = 'NB009',
              DETAIL = pg_catalog.format('%s on docnum.ledger was refused.', TG_OP),
              HINT = 'Cancel, expire or void a number instead of removing it.';
END
$$;

CREATE TRIGGER ledger_no_delete BEFORE DELETE ON docnum.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION docnum._ledger_is_permanent();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON docnum.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION docnum._ledger_is_permanent();

-- Nor on the counters: every number references its counter (docnum._ledger_verify_row), and a counter's value
-- is the last number it issued.
CREATE FUNCTION docnum._counter_is_permanent() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'counters in docnum.counter are permanent'
        USING ERRCODE = 'NB009',
              DETAIL = pg_catalog.format('%s on docnum.counter was refused.', TG_OP),
              HINT = 'Its numbers reference it; to move its value, set the counter instead.';
END
$$;

CREATE TRIGGER counter_no_delete BEFORE DELETE ON docnum.counter
    FOR EACH STATEMENT EXECUTE FUNCTION docnum._counter_is_permanent();
CREATE TRIGGER counter_no_truncate BEFORE TRUNCATE ON docnum.counter
    FOR EACH STATEMENT EXECUTE FUNCTION docnum._counter_is_permanent();
