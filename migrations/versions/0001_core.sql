-- Frozen from sql/*.sql by scripts/freeze_sql.py. Released migrations are immutable: do not edit.

-- file: 00_roles_schema.sql
-- docnum: roles and schema.
-- Roles are cluster-wide, so they are created only when missing; the schema and everything in it belong to the
-- NOLOGIN, non-superuser role docnum_owner, so no docnum function ever runs with superuser rights.
-- The whole build runs in one transaction as a role that may create roles (a superuser, normally).

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'docnum_owner') THEN
        CREATE ROLE docnum_owner NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'docnum_reader') THEN
        CREATE ROLE docnum_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'docnum_app') THEN
        CREATE ROLE docnum_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'docnum_admin') THEN
        CREATE ROLE docnum_admin NOLOGIN;
    END IF;
END
$roles$;

GRANT docnum_app TO docnum_admin;
GRANT docnum_reader TO docnum_admin;
CREATE SCHEMA docnum AUTHORIZATION docnum_owner;
COMMENT ON SCHEMA docnum IS 'docnum: gapless, auditable document numbering';
REVOKE ALL ON SCHEMA docnum FROM PUBLIC;

SET LOCAL ROLE docnum_owner;

-- file: 10_tables.sql
-- docnum: types, tables and the constraints that carry the invariants.
-- A number can exist once (per counter and as rendered text, across the whole database); every row states how it
-- was issued and what became of it; the audit log only ever grows.

CREATE TYPE docnum.reservation AS (
    token           uuid,
    document_number text,
    sequence_value  bigint,
    expires_at      timestamptz
);

CREATE TABLE docnum.document_type (
    code                  text PRIMARY KEY
                          CONSTRAINT document_type_code_check CHECK (code ~ '^[A-Z][A-Z0-9_]{0,29}$'),
    format                text NOT NULL CHECK (length(format) BETWEEN 1 AND 200),
    scope                 text NOT NULL CHECK (scope IN ('GLOBAL', 'PROJECT', 'CONTRACT', 'YEARLY', 'MONTHLY')),
    reset                 text NOT NULL CHECK (reset IN ('NEVER', 'YEARLY', 'MONTHLY')),
    time_zone             text NOT NULL,
    max_value             bigint NOT NULL CHECK (max_value > 0),
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
    -- A scope value is needed exactly for PROJECT and CONTRACT; YEARLY and MONTHLY scopes reset accordingly.
    CONSTRAINT document_type_scope_reset_check CHECK (
        (scope = 'YEARLY' AND reset = 'YEARLY') OR (scope = 'MONTHLY' AND reset = 'MONTHLY')
        OR scope IN ('GLOBAL', 'PROJECT', 'CONTRACT'))
);
COMMENT ON TABLE docnum.document_type IS 'One numbering configuration per document type';

CREATE TABLE docnum.counter (
    counter_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY
                  -- advisory locks use the two-int4 key form (class, counter_id): ids must fit in int4
                  CHECK (counter_id BETWEEN 1 AND 2147483647),
    document_type text NOT NULL REFERENCES docnum.document_type (code),
    scope_value   text NOT NULL DEFAULT '',
    period        text NOT NULL DEFAULT '' CHECK (period ~ '^([0-9]{4}(-(0[1-9]|1[0-2]))?)?$'),
    current_value bigint NOT NULL DEFAULT 0 CHECK (current_value >= 0),
    last_used_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT counter_key UNIQUE (document_type, scope_value, period)
);
COMMENT ON TABLE docnum.counter IS 'One counter per (document type, scope value, period)';

CREATE TABLE docnum.ledger (
    number_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_type      text NOT NULL REFERENCES docnum.document_type (code),
    counter_id         bigint REFERENCES docnum.counter (counter_id),
    sequence_value     bigint CHECK (sequence_value > 0),
    document_number    text NOT NULL CHECK (length(document_number) BETWEEN 1 AND 300),
    state              text NOT NULL CHECK (state IN ('reserved', 'confirmed', 'cancelled', 'expired',
                                                      'voided', 'overridden', 'imported')),
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
    replaces_number_id bigint REFERENCES docnum.ledger (number_id),
    replaced_by_number_id bigint REFERENCES docnum.ledger (number_id),
    CONSTRAINT ledger_document_number_key UNIQUE (document_number),
    CONSTRAINT ledger_counter_value_key UNIQUE (counter_id, sequence_value),
    CONSTRAINT ledger_token_key UNIQUE (token),
    CONSTRAINT ledger_counter_pair_check CHECK ((counter_id IS NULL) = (sequence_value IS NULL)),
    CONSTRAINT ledger_unparsed_check CHECK (counter_id IS NOT NULL OR state IN ('overridden', 'voided')),
    CONSTRAINT ledger_reserved_check CHECK (state <> 'reserved' OR (token IS NOT NULL AND expires_at IS NOT NULL)),
    CONSTRAINT ledger_expiry_check CHECK (expires_at IS NULL OR expires_at > issued_at),
    CONSTRAINT ledger_confirmed_check CHECK (state <> 'confirmed' OR confirmed_at IS NOT NULL),
    CONSTRAINT ledger_cancelled_check CHECK (state <> 'cancelled' OR cancelled_at IS NOT NULL),
    CONSTRAINT ledger_expired_check CHECK (state <> 'expired' OR expired_at IS NOT NULL),
    CONSTRAINT ledger_voided_check CHECK (state <> 'voided' OR voided_at IS NOT NULL)
);
COMMENT ON TABLE docnum.ledger IS 'Every number ever issued, with its state; a number is never issued twice';
-- The sweep of expired reservations reads only live reservations.
CREATE INDEX ledger_reserved_expiry_idx ON docnum.ledger (expires_at) WHERE state = 'reserved';

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
       OR NEW.issued_at <> OLD.issued_at THEN
        RAISE EXCEPTION 'the identity of an issued number cannot change'
            USING ERRCODE = 'NB009',
                  DETAIL = pg_catalog.format('Number %s keeps its type, counter, value, text and token.',
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
                  HINT = 'Check the number''s state with docnum.number_history().';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_transition_check BEFORE UPDATE ON docnum.ledger
    FOR EACH ROW EXECUTE FUNCTION docnum._ledger_transition_check();

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

-- file: 20_format.sql
-- docnum: number templates.
-- A template is compiled once, when a type is defined or changed, into the text before and after {SEQ}, the
-- {SEQ} width and an anchored pattern that reads a number back into its scope, period and sequence value.

-- Validates a template for a type and compiles it; raises NB006 (with the reason) for anything ambiguous.
-- Returns (render_head, render_tail, seq_width, parse_pattern, parse_groups).
CREATE FUNCTION docnum._compile_format(
    p_code text, p_format text, p_scope text, p_reset text,
    OUT render_head text, OUT render_tail text, OUT seq_width integer,
    OUT parse_pattern text, OUT parse_groups text[])
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rest      text := p_format;
    v_match     text[];
    v_literals  text[] := ARRAY[]::text[];   -- v_literals[i] precedes v_tokens[i]; one more literal at the end
    v_tokens    text[] := ARRAY[]::text[];
    v_token     text;
    v_seen_seq  boolean := false;
    v_i         integer;
    v_piece     text;
    v_variable  boolean;
    v_prev_variable boolean := false;
    v_hint      constant text :=
        'Tokens: {TYPE} {SCOPE} {YYYY} {YY} {MM} {DD} {SEQ} {SEQ:n}; everything else is literal text.';
BEGIN
    IF p_format IS NULL OR p_format = '' THEN
        RAISE EXCEPTION 'a number format is required'
            USING ERRCODE = 'NB006', DETAIL = 'format was NULL or empty.', HINT = v_hint;
    END IF;
    IF p_format ~ '[[:cntrl:]]' OR length(p_format) > 200 THEN
        RAISE EXCEPTION 'invalid number format %', quote_literal(p_format)
            USING ERRCODE = 'NB006', DETAIL = 'A format is at most 200 printable characters.', HINT = v_hint;
    END IF;

    -- Split into literal text and {tokens}.
    LOOP
        v_match := regexp_match(v_rest, '^([^{}]*)(\{[^{}]*\})(.*)$', 's');
        EXIT WHEN v_match IS NULL;
        v_literals := v_literals || v_match[1];
        v_tokens := v_tokens || upper(substr(v_match[2], 2, length(v_match[2]) - 2));
        v_rest := v_match[3];
    END LOOP;
    IF v_rest ~ '[{}]' THEN
        RAISE EXCEPTION 'invalid number format %: unbalanced brace', quote_literal(p_format)
            USING ERRCODE = 'NB006', DETAIL = 'Braces are reserved for tokens such as {SEQ:5}.', HINT = v_hint;
    END IF;
    v_literals := v_literals || v_rest;

    FOR v_i IN 1 .. coalesce(array_length(v_tokens, 1), 0) LOOP
        v_token := v_tokens[v_i];
        IF v_token !~ '^(TYPE|SCOPE|YYYY|YY|MM|DD|SEQ|SEQ:([1-9]|1[0-8]))$' THEN
            RAISE EXCEPTION 'invalid number format %: unknown token {%}', quote_literal(p_format), v_token
                USING ERRCODE = 'NB006', DETAIL = '{SEQ:n} takes a width from 1 to 18.', HINT = v_hint;
        END IF;
        IF v_token LIKE 'SEQ%' THEN
            IF v_seen_seq THEN
                RAISE EXCEPTION 'invalid number format %: more than one {SEQ}', quote_literal(p_format)
                    USING ERRCODE = 'NB006', DETAIL = 'A number has exactly one sequence part.', HINT = v_hint;
            END IF;
            v_seen_seq := true;
        ELSIF array_position(v_tokens, v_token) <> v_i THEN
            RAISE EXCEPTION 'invalid number format %: {%} appears twice', quote_literal(p_format), v_token
                USING ERRCODE = 'NB006', DETAIL = 'Each token may appear once.', HINT = v_hint;
        END IF;
        -- {SCOPE} and an unpadded {SEQ} have no fixed width: literal text must separate them from other tokens,
        -- or a number could not be read back unambiguously.
        v_variable := v_token IN ('SCOPE', 'SEQ');
        IF v_i > 1 AND v_literals[v_i] = '' AND (v_variable OR v_prev_variable) THEN
            RAISE EXCEPTION 'invalid number format %: {%} and {%} need literal text between them',
                    quote_literal(p_format), v_tokens[v_i - 1], v_token
                USING ERRCODE = 'NB006',
                      DETAIL = '{SCOPE} and {SEQ} without padding have no fixed width.',
                      HINT = 'Put a separator such as - or / between them, e.g. {SCOPE}-{SEQ}.';
        END IF;
        v_prev_variable := v_variable;
    END LOOP;

    IF NOT v_seen_seq THEN
        RAISE EXCEPTION 'invalid number format %: no {SEQ}', quote_literal(p_format)
            USING ERRCODE = 'NB006', DETAIL = 'A number needs exactly one {SEQ} or {SEQ:n}.', HINT = v_hint;
    END IF;
    IF 'YYYY' = ANY (v_tokens) AND 'YY' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format %: both {YYYY} and {YY}', quote_literal(p_format)
            USING ERRCODE = 'NB006', DETAIL = 'Use one year token.', HINT = v_hint;
    END IF;
    -- Different counters must never render the same text.
    IF p_scope IN ('PROJECT', 'CONTRACT') AND NOT 'SCOPE' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a % scope: no {SCOPE}', quote_literal(p_format), p_scope
            USING ERRCODE = 'NB006',
                  DETAIL = 'Each scope value has its own counter, so the scope must be part of the number.',
                  HINT = 'Add {SCOPE}, e.g. {SCOPE}/{TYPE}/{SEQ:4}.';
    END IF;
    IF p_scope NOT IN ('PROJECT', 'CONTRACT') AND 'SCOPE' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a % scope: {SCOPE} has no value', quote_literal(p_format),
                p_scope
            USING ERRCODE = 'NB006', DETAIL = 'Only PROJECT and CONTRACT types take a scope value.',
                  HINT = 'Remove {SCOPE} or use scope => ''PROJECT''.';
    END IF;
    IF p_reset IN ('YEARLY', 'MONTHLY') AND NOT ('YYYY' = ANY (v_tokens) OR 'YY' = ANY (v_tokens)) THEN
        RAISE EXCEPTION 'invalid number format % for a % reset: no year', quote_literal(p_format), p_reset
            USING ERRCODE = 'NB006',
                  DETAIL = 'The counter restarts each period, so the period must be part of the number.',
                  HINT = 'Add {YYYY} or {YY}.';
    END IF;
    IF p_reset = 'MONTHLY' AND NOT 'MM' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a MONTHLY reset: no month', quote_literal(p_format)
            USING ERRCODE = 'NB006',
                  DETAIL = 'The counter restarts each month, so the month must be part of the number.',
                  HINT = 'Add {MM}, e.g. {TYPE}-{YYYY}-{MM}-{SEQ:4}.';
    END IF;

    -- Compile.
    render_head := '';
    render_tail := '';
    parse_pattern := '^';
    parse_groups := ARRAY[]::text[];
    v_seen_seq := false;
    FOR v_i IN 1 .. array_length(v_tokens, 1) + 1 LOOP
        v_piece := v_literals[v_i];
        parse_pattern := parse_pattern || regexp_replace(v_piece, '([!-/:-@\[-`{-~])', '\\\1', 'g');
        IF v_seen_seq THEN render_tail := render_tail || v_piece; ELSE render_head := render_head || v_piece; END IF;
        EXIT WHEN v_i > array_length(v_tokens, 1);
        v_token := v_tokens[v_i];
        IF v_token LIKE 'SEQ%' THEN
            v_seen_seq := true;
            seq_width := CASE WHEN v_token = 'SEQ' THEN 0 ELSE split_part(v_token, ':', 2)::integer END;
            parse_pattern := parse_pattern
                || CASE WHEN seq_width = 0 THEN '([0-9]+)' ELSE '([0-9]{' || seq_width || ',})' END;
            parse_groups := parse_groups || 'SEQ'::text;
            CONTINUE;
        END IF;
        v_piece := CASE v_token WHEN 'TYPE' THEN p_code ELSE '{' || v_token || '}' END;
        IF v_seen_seq THEN render_tail := render_tail || v_piece; ELSE render_head := render_head || v_piece; END IF;
        IF v_token = 'TYPE' THEN
            parse_pattern := parse_pattern || p_code;
        ELSE
            parse_pattern := parse_pattern || CASE v_token WHEN 'SCOPE' THEN '(.+?)' WHEN 'YYYY' THEN '([0-9]{4})'
                                                           ELSE '([0-9]{2})' END;
            parse_groups := parse_groups || v_token;
        END IF;
    END LOOP;
    parse_pattern := parse_pattern || '$';
END
$$;

-- Fills the date and scope tokens of a compiled head or tail. Only immutable operations, so it is inlined.
-- The scope goes in last, so a scope value that happens to contain "{YYYY}" stays literal.
CREATE FUNCTION docnum._fill(p_text text, p_scope text, p_date date) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN strpos(p_text, '{') = 0 THEN p_text ELSE
    replace(replace(replace(replace(replace(p_text,
        '{YYYY}', lpad(extract(year FROM p_date)::integer::text, 4, '0')),
        '{YY}', lpad((extract(year FROM p_date)::integer % 100)::text, 2, '0')),
        '{MM}', lpad(extract(month FROM p_date)::integer::text, 2, '0')),
        '{DD}', lpad(extract(day FROM p_date)::integer::text, 2, '0')),
        '{SCOPE}', p_scope) END;

-- Renders a sequence value at its minimum width; wider values are never truncated.
CREATE FUNCTION docnum._seq_text(p_value bigint, p_width integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_width = 0 OR length(p_value::text) >= p_width THEN p_value::text
            ELSE lpad(p_value::text, p_width, '0') END;

-- The counter period a document date falls in: '' (never resets), 'YYYY' or 'YYYY-MM'.
CREATE FUNCTION docnum._period(p_reset text, p_date date) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE p_reset
    WHEN 'NEVER' THEN ''
    WHEN 'YEARLY' THEN lpad(extract(year FROM p_date)::integer::text, 4, '0')
    ELSE lpad(extract(year FROM p_date)::integer::text, 4, '0') || '-'
         || lpad(extract(month FROM p_date)::integer::text, 2, '0') END;

-- Reads a number back with its type's template: scope value, period and sequence value, or no row when the
-- text is not exactly what the template renders (a re-render must give the same text back).
CREATE FUNCTION docnum._parse(p_type docnum.document_type, p_number text,
                              OUT scope_value text, OUT period text, OUT sequence_value bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_match text[];
    v_year  integer;
    v_month integer := 1;
    v_day   integer := 1;
    v_date  date;
    v_i     integer;
BEGIN
    v_match := regexp_match(p_number, p_type.parse_pattern);
    IF v_match IS NULL THEN
        RETURN;
    END IF;
    scope_value := '';
    FOR v_i IN 1 .. array_length(p_type.parse_groups, 1) LOOP
        CASE p_type.parse_groups[v_i]
            WHEN 'SCOPE' THEN scope_value := v_match[v_i];
            WHEN 'YYYY' THEN v_year := v_match[v_i]::integer;
            WHEN 'YY' THEN v_year := 2000 + v_match[v_i]::integer;
            WHEN 'MM' THEN v_month := v_match[v_i]::integer;
            WHEN 'DD' THEN v_day := v_match[v_i]::integer;
            WHEN 'SEQ' THEN
                IF length(v_match[v_i]) > 18 THEN RETURN; END IF;
                sequence_value := v_match[v_i]::bigint;
        END CASE;
    END LOOP;
    IF sequence_value IS NULL OR sequence_value < 1 OR v_month NOT BETWEEN 1 AND 12 OR v_day NOT BETWEEN 1 AND 31
       OR v_year < 1000 THEN
        sequence_value := NULL;
        RETURN;
    END IF;
    -- Date arithmetic instead of make_date(y, m, d): an impossible day (02-30) shows as a month change.
    v_date := make_date(coalesce(v_year, 2000), v_month, 1) + (v_day - 1);
    IF extract(month FROM v_date) <> v_month THEN
        sequence_value := NULL;
        RETURN;
    END IF;
    period := docnum._period(p_type.reset, v_date);
    IF docnum._fill(p_type.render_head, scope_value, v_date)
       || docnum._seq_text(sequence_value, p_type.seq_width)
       || docnum._fill(p_type.render_tail, scope_value, v_date) IS DISTINCT FROM p_number THEN
        scope_value := NULL;
        period := NULL;
        sequence_value := NULL;
    END IF;
END
$$;

-- file: 30_allocation.sql
-- docnum: allocation. reserve_number / confirm_number / cancel_number / next_number / expire_reservations.
-- Allocation in one counter is serialised by a transaction-scoped advisory lock keyed by the counter's id (no
-- hashing, so two counters never share a key); everything that can be computed before the lock is.

-- Refuses to allocate where a number could not be made durable (hot standby, read-only transaction).
CREATE FUNCTION docnum._require_writable() RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_setting('transaction_read_only') = 'on' THEN
        RAISE EXCEPTION 'numbering unavailable: %',
                CASE WHEN pg_is_in_recovery() THEN 'this server is a read-only standby'
                     ELSE 'the transaction is read-only' END
            USING ERRCODE = 'NB008',
                  DETAIL = 'A number can only be issued where it is written durably.',
                  HINT = 'Connect to the primary and use a read-write transaction; never invent a number.';
    END IF;
END
$$;

-- Checks a free-text argument (actor, reason, reference...): NULL is fine, otherwise 1..max printable chars.
CREATE FUNCTION docnum._check_text(p_name text, p_value text, p_max integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NOT NULL AND (p_value = '' OR length(p_value) > p_max OR p_value ~ '[[:cntrl:]]') THEN
        RAISE EXCEPTION 'invalid %: %', p_name, quote_literal(left(p_value, 60))
            USING ERRCODE = 'NB006',
                  DETAIL = pg_catalog.format('%s must be 1 to %s characters without control characters.',
                                             p_name, p_max),
                  HINT = pg_catalog.format('Pass NULL to omit %s.', p_name);
    END IF;
    RETURN p_value;
END
$$;

-- Loads a type and validates the arguments every allocation shares; returns the type and the normalised
-- scope value ('' when the type takes none) and document date. Nothing is locked or written.
CREATE FUNCTION docnum._prepare(p_code text, p_scope text, p_actor text, p_date date,
                                OUT o_type docnum.document_type, OUT o_scope text, OUT o_date date)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_setting('transaction_read_only') = 'on' THEN
        PERFORM docnum._require_writable();
    END IF;
    IF p_code IS NULL OR p_code = '' THEN
        RAISE EXCEPTION 'a document type is required'
            USING ERRCODE = 'NB006', DETAIL = 'document_type was NULL or empty.',
                  HINT = 'Pass the code of a type created with docnum.define_type(), e.g. ''COR''.';
    END IF;
    SELECT t.* INTO o_type FROM docnum.document_type t WHERE t.code = p_code;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'document type % is not defined', quote_literal(left(p_code, 60))
            USING ERRCODE = 'NB001',
                  DETAIL = 'No row in docnum.document_type has this code.',
                  HINT = 'Define it with docnum.define_type(); codes are upper-case, e.g. ''COR''.';
    END IF;
    IF o_type.scope IN ('PROJECT', 'CONTRACT') THEN
        IF p_scope IS NULL OR p_scope = '' THEN
            RAISE EXCEPTION 'document type % needs a scope value', o_type.code
                USING ERRCODE = 'NB006',
                      DETAIL = pg_catalog.format('%s numbers are counted per %s.', o_type.code,
                                                 lower(o_type.scope)),
                      HINT = pg_catalog.format('Pass scope => the %s identifier, e.g. ''PRJ-7''.',
                                               lower(o_type.scope));
        END IF;
        IF length(p_scope) > 64 OR p_scope ~ '[[:cntrl:]]' OR p_scope <> btrim(p_scope) THEN
            RAISE EXCEPTION 'invalid scope value %', quote_literal(left(p_scope, 60))
                USING ERRCODE = 'NB006',
                      DETAIL = 'A scope value is 1 to 64 characters, without control characters or surrounding '
                               'spaces.',
                      HINT = 'Use a short stable identifier such as a project code.';
        END IF;
        o_scope := p_scope;
    ELSIF p_scope IS NOT NULL THEN
        RAISE EXCEPTION 'document type % takes no scope value', o_type.code
            USING ERRCODE = 'NB006',
                  DETAIL = pg_catalog.format('%s is a %s type; scope %s would be ignored.', o_type.code,
                                             o_type.scope, quote_literal(left(p_scope, 60))),
                  HINT = 'Omit scope for this type.';
    ELSE
        o_scope := '';
    END IF;
    IF p_actor IS NOT NULL THEN
        PERFORM docnum._check_text('actor', p_actor, 200);
    END IF;
    IF p_date IS NULL THEN
        -- The period comes from the type's time zone, never from the session's TimeZone.
        o_date := (now() AT TIME ZONE o_type.time_zone)::date;
    ELSIF p_date NOT BETWEEN date '1000-01-01' AND date '9999-12-31' THEN
        RAISE EXCEPTION 'invalid document date %', p_date
            USING ERRCODE = 'NB006', DETAIL = 'A document date lies between the years 1000 and 9999.',
                  HINT = 'Pass the date the document is dated, or NULL for today in the type''s time zone.';
    ELSE
        o_date := p_date;
    END IF;
END
$$;

-- Issues the next free value of one counter as a ledger row and audits it. The caller has validated
-- everything. Values that already have a ledger row, or whose text is taken, are skipped, never reused.
CREATE FUNCTION docnum._issue(p_type docnum.document_type, p_scope text, p_date date, p_state text,
                              p_token uuid, p_expires_at timestamptz, p_actor text, p_document_ref text,
                              p_metadata jsonb, p_operation text)
RETURNS docnum.reservation
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_period     text := docnum._period(p_type.reset, p_date);
    v_head       text := docnum._fill(p_type.render_head, p_scope, p_date);
    v_tail       text := docnum._fill(p_type.render_tail, p_scope, p_date);
    v_counter_id bigint;
    v_value      bigint;
    v_number     text;
    v_number_id  bigint;
    v_session_lock_timeout text;
    v_set_lock_timeout boolean := false;
BEGIN
    -- A number survives a crash once the caller has it, whatever the session's synchronous_commit.
    IF current_setting('synchronous_commit') = 'off' THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;

    -- The type's lock_timeout applies unless the session's own limit is shorter.
    IF p_type.lock_timeout IS NOT NULL THEN
        v_session_lock_timeout := current_setting('lock_timeout');
        IF v_session_lock_timeout = '0' OR p_type.lock_timeout < v_session_lock_timeout::interval THEN
            PERFORM set_config('lock_timeout',
                               (extract(epoch FROM p_type.lock_timeout) * 1000)::bigint::text, true);
            v_set_lock_timeout := true;
        END IF;
    END IF;

    BEGIN
        SELECT c.counter_id INTO v_counter_id
          FROM docnum.counter c
         WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = v_period;
        IF NOT FOUND THEN
            -- First use of this counter: two sessions may race here; the loser waits for the winner and then
            -- reads its row, so nobody sees a unique violation.
            INSERT INTO docnum.counter AS c (document_type, scope_value, period)
            VALUES (p_type.code, p_scope, v_period)
            ON CONFLICT ON CONSTRAINT counter_key DO NOTHING
            RETURNING c.counter_id INTO v_counter_id;
            IF v_counter_id IS NULL THEN
                SELECT c.counter_id INTO STRICT v_counter_id
                  FROM docnum.counter c
                 WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = v_period;
            END IF;
        END IF;
        PERFORM pg_advisory_xact_lock(1685021550, v_counter_id::integer);
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'timed out waiting for the % counter', p_type.code
            USING ERRCODE = 'NB003',
                  DETAIL = pg_catalog.format('Counter %s/%s/%s is held by another transaction for longer than '
                                             'the lock timeout (%s).', p_type.code, p_scope, v_period,
                                             coalesce(p_type.lock_timeout::text, current_setting('lock_timeout'))),
                  HINT = 'Retry; if it persists, look for a long transaction holding the counter '
                         '(pg_locks, locktype advisory).';
    END;
    IF v_set_lock_timeout THEN
        PERFORM set_config('lock_timeout', v_session_lock_timeout, true);
    END IF;

    LOOP
        UPDATE docnum.counter c
           SET current_value = c.current_value + 1, last_used_at = now()
         WHERE c.counter_id = v_counter_id
        RETURNING c.current_value INTO v_value;
        IF v_value > p_type.max_value THEN
            RAISE EXCEPTION 'sequence exhausted for %', p_type.code
                USING ERRCODE = 'NB002',
                      DETAIL = pg_catalog.format('Counter %s/%s/%s has reached max_value %s.', p_type.code,
                                                 p_scope, v_period, p_type.max_value),
                      HINT = pg_catalog.format('Raise it: SELECT docnum.alter_type(document_type => %L, '
                                               'max_value => ...).', p_type.code);
        END IF;
        v_number := v_head || docnum._seq_text(v_value, p_type.seq_width) || v_tail;
        INSERT INTO docnum.ledger AS l (document_type, counter_id, sequence_value, document_number, state, token,
                                        actor, document_ref, metadata, expires_at, confirmed_at)
        VALUES (p_type.code, v_counter_id, v_value, v_number, p_state, p_token,
                p_actor, p_document_ref, p_metadata, p_expires_at,
                CASE WHEN p_state = 'confirmed' THEN now() END)
        ON CONFLICT DO NOTHING
        RETURNING l.number_id INTO v_number_id;
        EXIT WHEN v_number_id IS NOT NULL;
    END LOOP;

    INSERT INTO docnum.audit_log (operation, document_type, document_number, scope_value, actor, new_value,
                                  metadata)
    VALUES (p_operation, p_type.code, v_number, nullif(p_scope, ''), p_actor,
            jsonb_build_object('state', p_state, 'sequence_value', v_value, 'period', v_period,
                               'document_ref', p_document_ref, 'expires_at', p_expires_at),
            p_metadata);

    IF v_value * 10 > p_type.max_value * 9 THEN
        RAISE WARNING 'docnum: % counter %/% is %%% used (% of %)', p_type.code, p_scope, v_period,
                round(v_value * 100.0 / p_type.max_value, 1), v_value, p_type.max_value
            USING HINT = pg_catalog.format('Plan to raise max_value with docnum.alter_type(%L, max_value => ...).',
                                           p_type.code);
    END IF;
    RETURN ROW(p_token, v_number, v_value, p_expires_at)::docnum.reservation;
END
$$;

-- Reserves the next number of a type for ttl (default: the type's reservation_ttl). The number is written to
-- the ledger and never issued again, whether it is later confirmed, cancelled or left to expire.
CREATE FUNCTION docnum.reserve_number(
    document_type text, scope text DEFAULT NULL, actor text DEFAULT NULL, metadata jsonb DEFAULT NULL,
    ttl interval DEFAULT NULL, document_date date DEFAULT NULL)
RETURNS docnum.reservation
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prepared record;
    v_ttl interval;
BEGIN
    v_prepared := docnum._prepare(reserve_number.document_type, reserve_number.scope, reserve_number.actor,
                                  reserve_number.document_date);
    v_ttl := coalesce(reserve_number.ttl, (v_prepared.o_type).reservation_ttl);
    IF v_ttl <= interval '0' OR v_ttl > interval '7 days' THEN
        RAISE EXCEPTION 'invalid reservation ttl %', v_ttl
            USING ERRCODE = 'NB006', DETAIL = 'A reservation lasts more than 0 and at most 7 days.',
                  HINT = 'Pass ttl => interval ''10 minutes'', or NULL for the type''s default.';
    END IF;
    IF reserve_number.metadata IS NOT NULL AND jsonb_typeof(reserve_number.metadata) <> 'object' THEN
        RAISE EXCEPTION 'invalid metadata'
            USING ERRCODE = 'NB006', DETAIL = 'metadata must be a JSON object.', HINT = 'Pass ''{}'' or NULL.';
    END IF;
    RETURN docnum._issue(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, 'reserved',
                         gen_random_uuid(), now() + v_ttl, reserve_number.actor, NULL,
                         reserve_number.metadata, 'RESERVE');
END
$$;

-- Allocates and confirms a number inside the caller's transaction: if that transaction rolls back, the
-- number, the counter increment and the audit row roll back with it, so the sequence stays gapless.
CREATE FUNCTION docnum.next_number(
    document_type text, scope text DEFAULT NULL, actor text DEFAULT NULL, document_ref text DEFAULT NULL,
    document_date date DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prepared record;
BEGIN
    v_prepared := docnum._prepare(next_number.document_type, next_number.scope, next_number.actor,
                                  next_number.document_date);
    IF next_number.document_ref IS NOT NULL THEN
        PERFORM docnum._check_text('document_ref', next_number.document_ref, 500);
    END IF;
    RETURN (docnum._issue(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, 'confirmed', NULL, NULL,
                          next_number.actor, next_number.document_ref, NULL, 'NEXT')).document_number;
END
$$;

-- Confirms a reservation. Repeating it for the same token returns the same number and writes nothing.
-- Unknown, cancelled and expired tokens (including ones past expires_at not yet swept) raise NB004.
CREATE FUNCTION docnum.confirm_number(token uuid, actor text DEFAULT NULL, document_ref text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row docnum.ledger;
BEGIN
    PERFORM docnum._require_writable();
    IF confirm_number.token IS NULL THEN
        RAISE EXCEPTION 'a reservation token is required'
            USING ERRCODE = 'NB006', DETAIL = 'token was NULL.',
                  HINT = 'Pass the token returned by docnum.reserve_number().';
    END IF;
    PERFORM docnum._check_text('actor', confirm_number.actor, 200);
    PERFORM docnum._check_text('document_ref', confirm_number.document_ref, 500);

    SELECT l.* INTO v_row FROM docnum.ledger l WHERE l.token = confirm_number.token FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reservation % not found', confirm_number.token
            USING ERRCODE = 'NB004', DETAIL = 'No number was reserved with this token.',
                  HINT = 'Reserve a new number with docnum.reserve_number().';
    END IF;
    IF v_row.state = 'confirmed' THEN
        IF confirm_number.document_ref IS DISTINCT FROM v_row.document_ref
           AND confirm_number.document_ref IS NOT NULL AND v_row.document_ref IS NOT NULL THEN
            RAISE EXCEPTION '% is already confirmed for another document', v_row.document_number
                USING ERRCODE = 'NB009',
                      DETAIL = pg_catalog.format('It was confirmed for %s, not %s.', v_row.document_ref,
                                                 confirm_number.document_ref),
                      HINT = 'One number names one document; reserve a new number for this one.';
        END IF;
        RETURN v_row.document_number;
    END IF;
    IF v_row.state IN ('cancelled', 'expired')
       OR (v_row.state = 'reserved' AND v_row.expires_at <= statement_timestamp()) THEN
        RAISE EXCEPTION 'reservation of % has %', v_row.document_number,
                CASE v_row.state WHEN 'cancelled' THEN 'been cancelled' ELSE 'expired' END
            USING ERRCODE = 'NB004',
                  DETAIL = pg_catalog.format('State %s; the reservation expired at %s.',
                                             CASE WHEN v_row.state = 'reserved' THEN 'expired' ELSE v_row.state END,
                                             v_row.expires_at),
                  HINT = 'A cancelled or expired number is never issued again; reserve a new one.';
    END IF;
    IF v_row.state <> 'reserved' THEN
        RAISE EXCEPTION 'cannot confirm % in state %', v_row.document_number, v_row.state
            USING ERRCODE = 'NB009', DETAIL = 'Only a reserved number can be confirmed.',
                  HINT = 'See docnum.number_history() for what happened to it.';
    END IF;

    UPDATE docnum.ledger l
       SET state = 'confirmed', confirmed_at = now(), document_ref = confirm_number.document_ref
     WHERE l.number_id = v_row.number_id;
    INSERT INTO docnum.audit_log (operation, document_type, document_number, scope_value, actor, old_value,
                                  new_value)
    SELECT 'CONFIRM', v_row.document_type, v_row.document_number, nullif(c.scope_value, ''),
           confirm_number.actor, jsonb_build_object('state', 'reserved'),
           jsonb_build_object('state', 'confirmed', 'document_ref', confirm_number.document_ref)
      FROM docnum.counter c WHERE c.counter_id = v_row.counter_id;
    RETURN v_row.document_number;
END
$$;

-- Cancels a reservation; the number is never issued again. Cancelling a cancelled or expired reservation
-- returns the number and writes nothing; a confirmed number cannot be cancelled (void it instead).
CREATE FUNCTION docnum.cancel_number(token uuid, actor text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row docnum.ledger;
BEGIN
    PERFORM docnum._require_writable();
    IF cancel_number.token IS NULL THEN
        RAISE EXCEPTION 'a reservation token is required'
            USING ERRCODE = 'NB006', DETAIL = 'token was NULL.',
                  HINT = 'Pass the token returned by docnum.reserve_number().';
    END IF;
    PERFORM docnum._check_text('actor', cancel_number.actor, 200);
    PERFORM docnum._check_text('reason', cancel_number.reason, 1000);

    SELECT l.* INTO v_row FROM docnum.ledger l WHERE l.token = cancel_number.token FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reservation % not found', cancel_number.token
            USING ERRCODE = 'NB004', DETAIL = 'No number was reserved with this token.',
                  HINT = 'Nothing to cancel.';
    END IF;
    IF v_row.state IN ('cancelled', 'expired') THEN
        RETURN v_row.document_number;
    END IF;
    IF v_row.state <> 'reserved' THEN
        RAISE EXCEPTION 'cannot cancel % in state %', v_row.document_number, v_row.state
            USING ERRCODE = 'NB009',
                  DETAIL = 'Only a reserved number can be cancelled.',
                  HINT = CASE WHEN v_row.state = 'confirmed'
                              THEN 'A confirmed number names a document: void it with docnum.void_number().'
                              ELSE 'See docnum.number_history() for what happened to it.' END;
    END IF;

    UPDATE docnum.ledger l
       SET state = 'cancelled', cancelled_at = now(), cancel_reason = cancel_number.reason
     WHERE l.number_id = v_row.number_id;
    INSERT INTO docnum.audit_log (operation, document_type, document_number, scope_value, actor, old_value,
                                  new_value)
    SELECT 'CANCEL', v_row.document_type, v_row.document_number, nullif(c.scope_value, ''),
           cancel_number.actor, jsonb_build_object('state', 'reserved'),
           jsonb_build_object('state', 'cancelled', 'reason', cancel_number.reason)
      FROM docnum.counter c WHERE c.counter_id = v_row.counter_id;
    RETURN v_row.document_number;
END
$$;

-- Marks every reservation past its expires_at as expired and audits each; returns how many. Rows another
-- transaction is confirming or cancelling right now are left for the next sweep.
CREATE FUNCTION docnum.expire_reservations()
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM docnum._require_writable();
    WITH due AS (
        SELECT l.number_id FROM docnum.ledger l
         WHERE l.state = 'reserved' AND l.expires_at <= statement_timestamp()
         FOR UPDATE SKIP LOCKED
    ), expired AS (
        UPDATE docnum.ledger l SET state = 'expired', expired_at = statement_timestamp()
          FROM due WHERE l.number_id = due.number_id
        RETURNING l.document_type, l.document_number, l.counter_id, l.expires_at
    ), audited AS (
        INSERT INTO docnum.audit_log (operation, document_type, document_number, scope_value, actor, old_value,
                                      new_value)
        SELECT 'EXPIRE', e.document_type, e.document_number, nullif(c.scope_value, ''), NULL,
               jsonb_build_object('state', 'reserved', 'expires_at', e.expires_at),
               jsonb_build_object('state', 'expired')
          FROM expired e JOIN docnum.counter c ON c.counter_id = e.counter_id
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM audited;
    RETURN v_count;
END
$$;

-- file: 40_types.sql
-- docnum: document type definitions. define_type creates a type after validating every setting;
-- alter_type changes one later and audits old and new values. Scope and reset never change after definition.

-- Validates the settings shared by define_type and alter_type; raises NB006 naming the first bad one.
CREATE FUNCTION docnum._check_type_settings(p_time_zone text, p_max_value bigint, p_ttl interval,
                                            p_lock_timeout interval, p_metadata jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_time_zone IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names z WHERE z.name = p_time_zone)
    THEN
        RAISE EXCEPTION 'unknown time zone %', coalesce(quote_literal(left(p_time_zone, 60)), 'NULL')
            USING ERRCODE = 'NB006', DETAIL = 'time_zone must be an IANA time zone name.',
                  HINT = 'For example ''UTC'', ''Asia/Bangkok'' or ''Europe/Paris''.';
    END IF;
    IF p_max_value IS NOT NULL AND p_max_value < 1 THEN
        RAISE EXCEPTION 'invalid max_value %', p_max_value
            USING ERRCODE = 'NB006', DETAIL = 'max_value must be at least 1.',
                  HINT = 'Omit it to use the largest value the {SEQ:n} padding can show.';
    END IF;
    IF p_ttl IS NULL OR p_ttl <= interval '0' OR p_ttl > interval '7 days' THEN
        RAISE EXCEPTION 'invalid reservation_ttl %', coalesce(p_ttl::text, 'NULL')
            USING ERRCODE = 'NB006', DETAIL = 'A reservation lasts more than 0 and at most 7 days.',
                  HINT = 'The default is 5 minutes.';
    END IF;
    IF p_lock_timeout IS NOT NULL AND (p_lock_timeout < interval '1 millisecond' OR p_lock_timeout > interval '1 hour')
    THEN
        RAISE EXCEPTION 'invalid lock_timeout %', p_lock_timeout
            USING ERRCODE = 'NB006', DETAIL = 'lock_timeout lies between 1 millisecond and 1 hour, or is NULL.',
                  HINT = 'NULL leaves only the session''s lock_timeout in force.';
    END IF;
    IF p_metadata IS NULL OR jsonb_typeof(p_metadata) <> 'object' THEN
        RAISE EXCEPTION 'invalid metadata'
            USING ERRCODE = 'NB006', DETAIL = 'metadata must be a JSON object.', HINT = 'Pass ''{}'' for none.';
    END IF;
END
$$;

-- The part of a type row worth auditing (the compiled template columns are derived and left out).
CREATE FUNCTION docnum._type_json(p_type docnum.document_type) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN to_jsonb(p_type) - ARRAY['render_head', 'render_tail', 'seq_width', 'parse_pattern', 'parse_groups',
                                'created_at', 'updated_at'];

-- Creates a document type. Re-running it with the same definition returns the existing type unchanged;
-- a different definition under an existing code raises NB010.
CREATE FUNCTION docnum.define_type(
    code text, format text, scope text DEFAULT 'GLOBAL', reset text DEFAULT NULL,
    time_zone text DEFAULT 'UTC', max_value bigint DEFAULT NULL,
    reservation_ttl interval DEFAULT interval '5 minutes', lock_timeout interval DEFAULT interval '5 seconds',
    allow_manual_override boolean DEFAULT false, metadata jsonb DEFAULT '{}'::jsonb, actor text DEFAULT NULL)
RETURNS docnum.document_type
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_scope    text := upper(define_type.scope);
    v_reset    text := upper(define_type.reset);
    v_compiled record;
    v_new      docnum.document_type;
    v_existing docnum.document_type;
BEGIN
    PERFORM docnum._require_writable();
    IF define_type.code IS NULL OR define_type.code !~ '^[A-Z][A-Z0-9_]{0,29}$' THEN
        RAISE EXCEPTION 'invalid document type code %', coalesce(quote_literal(left(define_type.code, 60)), 'NULL')
            USING ERRCODE = 'NB006',
                  DETAIL = 'A code is an upper-case identifier: a letter, then letters, digits or _ (30 at most).',
                  HINT = 'For example ''COR'' or ''RFA_2''.';
    END IF;
    IF v_scope IS NULL OR v_scope NOT IN ('GLOBAL', 'PROJECT', 'CONTRACT', 'YEARLY', 'MONTHLY') THEN
        RAISE EXCEPTION 'invalid scope %', coalesce(quote_literal(define_type.scope), 'NULL')
            USING ERRCODE = 'NB006', DETAIL = 'scope is one of GLOBAL, PROJECT, CONTRACT, YEARLY, MONTHLY.',
                  HINT = 'PROJECT and CONTRACT take a scope value at allocation; YEARLY and MONTHLY reset.';
    END IF;
    IF v_reset IS NULL THEN
        v_reset := CASE v_scope WHEN 'YEARLY' THEN 'YEARLY' WHEN 'MONTHLY' THEN 'MONTHLY' ELSE 'NEVER' END;
    ELSIF v_reset NOT IN ('NEVER', 'YEARLY', 'MONTHLY')
          OR (v_scope IN ('YEARLY', 'MONTHLY') AND v_reset <> v_scope) THEN
        RAISE EXCEPTION 'invalid reset % for scope %', quote_literal(define_type.reset), v_scope
            USING ERRCODE = 'NB006',
                  DETAIL = 'reset is NEVER, YEARLY or MONTHLY; a YEARLY or MONTHLY scope implies its own reset.',
                  HINT = 'For a per-project counter restarting each year: scope => ''PROJECT'', reset => ''YEARLY''.';
    END IF;
    PERFORM docnum._check_type_settings(define_type.time_zone, define_type.max_value, define_type.reservation_ttl,
                                        define_type.lock_timeout, define_type.metadata);
    PERFORM docnum._check_text('actor', define_type.actor, 200);
    IF define_type.allow_manual_override IS NULL THEN
        RAISE EXCEPTION 'allow_manual_override cannot be NULL'
            USING ERRCODE = 'NB006', DETAIL = 'It is true or false.', HINT = 'The default is false.';
    END IF;

    v_compiled := docnum._compile_format(define_type.code, define_type.format, v_scope, v_reset);

    v_new.code := define_type.code;
    v_new.format := define_type.format;
    v_new.scope := v_scope;
    v_new.reset := v_reset;
    v_new.time_zone := define_type.time_zone;
    v_new.max_value := coalesce(define_type.max_value,
                                CASE WHEN v_compiled.seq_width = 0 THEN 9223372036854775807
                                     ELSE (10::numeric ^ v_compiled.seq_width - 1)::bigint END);
    v_new.reservation_ttl := define_type.reservation_ttl;
    v_new.lock_timeout := define_type.lock_timeout;
    v_new.allow_manual_override := define_type.allow_manual_override;
    v_new.metadata := define_type.metadata;
    v_new.render_head := v_compiled.render_head;
    v_new.render_tail := v_compiled.render_tail;
    v_new.seq_width := v_compiled.seq_width;
    v_new.parse_pattern := v_compiled.parse_pattern;
    v_new.parse_groups := v_compiled.parse_groups;
    v_new.created_at := now();
    v_new.updated_at := now();

    SELECT t.* INTO v_existing FROM docnum.document_type t WHERE t.code = define_type.code FOR UPDATE;
    IF FOUND THEN
        IF docnum._type_json(v_existing) = docnum._type_json(v_new) THEN
            RETURN v_existing;
        END IF;
        RAISE EXCEPTION 'document type % already exists with another definition', define_type.code
            USING ERRCODE = 'NB010',
                  DETAIL = pg_catalog.format('Existing: %s', docnum._type_json(v_existing)),
                  HINT = 'Change it with docnum.alter_type(); scope and reset cannot change.';
    END IF;
    IF EXISTS (SELECT 1 FROM docnum.document_type t
                WHERE t.render_head || '{SEQ}' || t.render_tail = v_new.render_head || '{SEQ}' || v_new.render_tail
                  AND t.seq_width = v_new.seq_width) THEN
        RAISE EXCEPTION 'format % renders the same numbers as another type', quote_literal(define_type.format)
            USING ERRCODE = 'NB006', DETAIL = 'Two types would compete for the same document numbers.',
                  HINT = 'Include {TYPE} or a distinct prefix in the format.';
    END IF;

    INSERT INTO docnum.document_type SELECT v_new.*;
    INSERT INTO docnum.audit_log (operation, document_type, actor, new_value)
    VALUES ('DEFINE_TYPE', v_new.code, define_type.actor, docnum._type_json(v_new));
    RETURN v_new;
END
$$;

-- Changes a type's format, time zone, max_value, TTL, lock timeout, override flag or metadata (NULL leaves a
-- setting unchanged) and audits old and new values. Raising max_value is the remedy for NB002; it can never
-- drop below a counter's value, and a new format must read every existing number of the type back to itself.
CREATE FUNCTION docnum.alter_type(
    document_type text, format text DEFAULT NULL, time_zone text DEFAULT NULL, max_value bigint DEFAULT NULL,
    reservation_ttl interval DEFAULT NULL, lock_timeout interval DEFAULT NULL,
    allow_manual_override boolean DEFAULT NULL, metadata jsonb DEFAULT NULL, actor text DEFAULT NULL,
    reason text DEFAULT NULL)
RETURNS docnum.document_type
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old      docnum.document_type;
    v_new      docnum.document_type;
    v_compiled record;
    v_bad      record;
BEGIN
    PERFORM docnum._require_writable();
    PERFORM docnum._check_text('actor', alter_type.actor, 200);
    PERFORM docnum._check_text('reason', alter_type.reason, 1000);
    SELECT t.* INTO v_old FROM docnum.document_type t WHERE t.code = alter_type.document_type FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'document type % is not defined', coalesce(quote_literal(left(alter_type.document_type, 60)),
                                                                    'NULL')
            USING ERRCODE = 'NB001', DETAIL = 'No row in docnum.document_type has this code.',
                  HINT = 'Define it with docnum.define_type().';
    END IF;
    v_new := v_old;
    v_new.time_zone := coalesce(alter_type.time_zone, v_old.time_zone);
    v_new.max_value := coalesce(alter_type.max_value, v_old.max_value);
    v_new.reservation_ttl := coalesce(alter_type.reservation_ttl, v_old.reservation_ttl);
    v_new.lock_timeout := coalesce(alter_type.lock_timeout, v_old.lock_timeout);
    v_new.allow_manual_override := coalesce(alter_type.allow_manual_override, v_old.allow_manual_override);
    v_new.metadata := coalesce(alter_type.metadata, v_old.metadata);
    PERFORM docnum._check_type_settings(v_new.time_zone, v_new.max_value, v_new.reservation_ttl,
                                        v_new.lock_timeout, v_new.metadata);

    IF alter_type.format IS NOT NULL AND alter_type.format <> v_old.format THEN
        v_compiled := docnum._compile_format(v_old.code, alter_type.format, v_old.scope, v_old.reset);
        v_new.format := alter_type.format;
        v_new.render_head := v_compiled.render_head;
        v_new.render_tail := v_compiled.render_tail;
        v_new.seq_width := v_compiled.seq_width;
        v_new.parse_pattern := v_compiled.parse_pattern;
        v_new.parse_groups := v_compiled.parse_groups;
        -- No existing number may read as a different number of this type under the new template.
        SELECT l.document_number, l.document_type INTO v_bad
          FROM docnum.ledger l
          LEFT JOIN docnum.counter c ON c.counter_id = l.counter_id
          CROSS JOIN LATERAL docnum._parse(v_new, l.document_number) p
         WHERE l.document_number ~ v_new.parse_pattern
           AND (l.document_type <> v_old.code OR p.sequence_value IS DISTINCT FROM l.sequence_value
                OR p.scope_value IS DISTINCT FROM c.scope_value OR p.period IS DISTINCT FROM c.period)
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'format % would make % ambiguous', quote_literal(alter_type.format), v_bad.document_number
                USING ERRCODE = 'NB006',
                      DETAIL = pg_catalog.format('Existing number %s (type %s) would read as a different %s number.',
                                                 v_bad.document_number, v_bad.document_type, v_old.code),
                      HINT = 'Choose a format whose numbers cannot be confused with existing ones (e.g. a new '
                             'prefix).';
        END IF;
    END IF;

    SELECT c.scope_value, c.period, c.current_value INTO v_bad
      FROM docnum.counter c
     WHERE c.document_type = v_old.code AND c.current_value > v_new.max_value
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'max_value % is below a counter of %', v_new.max_value, v_old.code
            USING ERRCODE = 'NB006',
                  DETAIL = pg_catalog.format('Counter %s/%s is already at %s.', v_bad.scope_value, v_bad.period,
                                             v_bad.current_value),
                  HINT = 'max_value can only stay above every counter''s current value.';
    END IF;

    IF docnum._type_json(v_new) = docnum._type_json(v_old) THEN
        RETURN v_old;
    END IF;
    v_new.updated_at := now();
    UPDATE docnum.document_type t
       SET format = v_new.format, time_zone = v_new.time_zone, max_value = v_new.max_value,
           reservation_ttl = v_new.reservation_ttl, lock_timeout = v_new.lock_timeout,
           allow_manual_override = v_new.allow_manual_override, metadata = v_new.metadata,
           updated_at = v_new.updated_at, render_head = v_new.render_head, render_tail = v_new.render_tail,
           seq_width = v_new.seq_width, parse_pattern = v_new.parse_pattern, parse_groups = v_new.parse_groups
     WHERE t.code = v_old.code;
    INSERT INTO docnum.audit_log (operation, document_type, actor, old_value, new_value, metadata)
    VALUES ('ALTER_TYPE', v_old.code, alter_type.actor, docnum._type_json(v_old), docnum._type_json(v_new),
            CASE WHEN alter_type.reason IS NULL THEN NULL ELSE jsonb_build_object('reason', alter_type.reason) END);
    RETURN v_new;
END
$$;

-- file: 90_grants.sql
-- docnum: privileges. Nothing is executable or readable by PUBLIC; docnum_app allocates and reads its results,
-- docnum_reader reads everything, docnum_admin does everything. No role may write a table directly.

REVOKE ALL ON ALL TABLES IN SCHEMA docnum FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA docnum FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA docnum FROM PUBLIC;
REVOKE ALL ON TYPE docnum.reservation FROM PUBLIC;

GRANT USAGE ON SCHEMA docnum TO docnum_app, docnum_reader, docnum_admin;
GRANT USAGE ON TYPE docnum.reservation TO docnum_app, docnum_reader, docnum_admin;

GRANT SELECT ON ALL TABLES IN SCHEMA docnum TO docnum_reader;
GRANT SELECT ON docnum.document_type, docnum.counter, docnum.ledger TO docnum_app;

GRANT EXECUTE ON FUNCTION
    docnum.reserve_number(text, text, text, jsonb, interval, date),
    docnum.confirm_number(uuid, text, text),
    docnum.cancel_number(uuid, text, text),
    docnum.next_number(text, text, text, text, date),
    docnum.expire_reservations()
TO docnum_app;

GRANT EXECUTE ON FUNCTION
    docnum.define_type(text, text, text, text, text, bigint, interval, interval, boolean, jsonb, text),
    docnum.alter_type(text, text, text, bigint, interval, interval, boolean, jsonb, text, text)
TO docnum_admin;

RESET ROLE;
