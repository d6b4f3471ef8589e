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

DO $membership$
BEGIN
    -- docnum_admin can do everything docnum_app and docnum_reader can.
    IF NOT pg_catalog.pg_has_role('docnum_admin', 'docnum_app', 'MEMBER') THEN
        GRANT docnum_app TO docnum_admin;
    END IF;
    IF NOT pg_catalog.pg_has_role('docnum_admin', 'docnum_reader', 'MEMBER') THEN
        GRANT docnum_reader TO docnum_admin;
    END IF;
END
$membership$;
CREATE SCHEMA docnum AUTHORIZATION docnum_owner;

-- Everything else is done as the owner: an installer that is not a superuser may become docnum_owner but
-- does not hold its rights.
SET LOCAL ROLE docnum_owner;
COMMENT ON SCHEMA docnum IS 'docnum: gapless, auditable document numbering';
REVOKE ALL ON SCHEMA docnum FROM PUBLIC;

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

-- Every allocation updates a counter row and inserts a ledger row and an audit row. PostgreSQL re-reads and
-- re-plans a table's CHECK expressions in every statement that writes it (written out, the ledger's eleven
-- rules were a quarter of an allocation's instructions), while a PL/pgSQL function is compiled once per
-- session. So the row rules of counter and ledger each live in one IMMUTABLE function, called by one CHECK
-- constraint with the whole row: the same rules, and a write that breaks one fails with <table>_row_check.

CREATE TABLE docnum.counter (
    counter_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_type text NOT NULL REFERENCES docnum.document_type (code),
    scope_value   text NOT NULL DEFAULT '',
    period        text NOT NULL DEFAULT '',
    current_value bigint NOT NULL DEFAULT 0,
    last_used_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT counter_key UNIQUE (document_type, scope_value, period),
    -- What the ledger's numbers reference: their counter together with its type.
    CONSTRAINT counter_type_key UNIQUE (counter_id, document_type)
)
-- Half of every page stays free for the next versions of its rows, so an allocation's UPDATE stays HOT (no new
-- index entries, old versions pruned in place) even when pruning falls behind a busy counter.
WITH (fillfactor = 50);
COMMENT ON TABLE docnum.counter IS 'One counter per (document type, scope value, period)';

-- The rules of a counter row.
CREATE FUNCTION docnum._counter_row_is_valid(p_row docnum.counter) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN p_row.current_value >= 0
       -- advisory locks use the two-int4 key form (class, counter_id): ids must fit in int4
       AND p_row.counter_id BETWEEN 1 AND 2147483647
       AND p_row.period ~ '^([0-9]{4}(-(0[1-9]|1[0-2]))?)?$';
END
$$;

ALTER TABLE docnum.counter ADD CONSTRAINT counter_row_check CHECK (docnum._counter_row_is_valid(counter));

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
    replaces_number_id bigint REFERENCES docnum.ledger (number_id),
    replaced_by_number_id bigint REFERENCES docnum.ledger (number_id),
    CONSTRAINT ledger_document_number_key UNIQUE (document_number),
    CONSTRAINT ledger_counter_value_key UNIQUE (counter_id, sequence_value),
    -- A number issued by a counter is of that counter's type (and the counter's own key makes the type exist).
    -- Numbers without a counter reference their type through the ledger_document_type_fkey trigger below. A
    -- plain key on document_type would make every allocation share-lock its type's row, which concurrent
    -- allocations of a type then share through a MultiXact each.
    CONSTRAINT ledger_counter_fkey FOREIGN KEY (counter_id, document_type)
        REFERENCES docnum.counter (counter_id, document_type)
);
COMMENT ON TABLE docnum.ledger IS 'Every number ever issued, with its state; a number is never issued twice';
-- Only reservations carry a token.
CREATE UNIQUE INDEX ledger_token_key ON docnum.ledger (token) WHERE token IS NOT NULL;
-- The sweep of expired reservations reads only live reservations.
CREATE INDEX ledger_reserved_expiry_idx ON docnum.ledger (expires_at) WHERE state = 'reserved';

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

ALTER TABLE docnum.ledger ADD CONSTRAINT ledger_row_check CHECK (docnum._ledger_row_is_valid(ledger));

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

-- The foreign key of the numbers without a counter (ledger_counter_fkey checks the others): their type exists,
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

-- Reads a number back with its type's template: scope value, period, sequence value and a document date that
-- renders the same date tokens. sequence_value is NULL when the text is not exactly what the template renders
-- (a re-render must give the same text back).
CREATE FUNCTION docnum._parse_text(p_pattern text, p_groups text[], p_reset text, p_head text, p_tail text,
                                   p_width integer, p_number text,
                                   OUT scope_value text, OUT period text, OUT sequence_value bigint,
                                   OUT document_date date)
LANGUAGE plpgsql IMMUTABLE
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
    v_match := regexp_match(p_number, p_pattern);
    IF v_match IS NULL THEN
        RETURN;
    END IF;
    scope_value := '';
    FOR v_i IN 1 .. array_length(p_groups, 1) LOOP
        CASE p_groups[v_i]
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
    period := docnum._period(p_reset, v_date);
    document_date := v_date;
    IF docnum._fill(p_head, scope_value, v_date) || docnum._seq_text(sequence_value, p_width)
       || docnum._fill(p_tail, scope_value, v_date) IS DISTINCT FROM p_number THEN
        scope_value := NULL;
        period := NULL;
        sequence_value := NULL;
        document_date := NULL;
    END IF;
END
$$;

-- _parse_text with a type's compiled template.
CREATE FUNCTION docnum._parse(p_type docnum.document_type, p_number text,
                              OUT scope_value text, OUT period text, OUT sequence_value bigint,
                              OUT document_date date)
LANGUAGE sql IMMUTABLE
RETURN docnum._parse_text(p_type.parse_pattern, p_type.parse_groups, p_type.reset, p_type.render_head,
                          p_type.render_tail, p_type.seq_width, p_number);

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
    v_period     text := '';
    v_head       text := p_type.render_head;
    v_tail       text := p_type.render_tail;
    v_counter_id bigint;
    v_locked     boolean := false;
    v_value      bigint;
    v_number     text;
    v_session_lock_timeout text;
BEGIN
    -- A number survives a crash once the caller has it, whatever the session's synchronous_commit.
    IF current_setting('synchronous_commit') = 'off' THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
    -- Only what the template needs is computed (a never-resetting counter has no period, most templates have
    -- nothing to fill after {SEQ}).
    IF p_type.reset <> 'NEVER' THEN
        v_period := docnum._period(p_type.reset, p_date);
    END IF;
    IF strpos(v_head, '{') > 0 THEN
        v_head := docnum._fill(v_head, p_scope, p_date);
    END IF;
    IF strpos(v_tail, '{') > 0 THEN
        v_tail := docnum._fill(v_tail, p_scope, p_date);
    END IF;

    -- Fast path: the counter exists and no other transaction holds it.
    SELECT c.counter_id INTO v_counter_id
      FROM docnum.counter c
     WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = v_period;
    IF v_counter_id IS NOT NULL THEN
        v_locked := pg_try_advisory_xact_lock(1685021550, v_counter_id::integer);
    END IF;

    IF NOT v_locked THEN
        -- Wait for the counter (creating it on first use) under the type's lock_timeout, unless the session's
        -- own limit is shorter.
        IF p_type.lock_timeout IS NOT NULL THEN
            v_session_lock_timeout := current_setting('lock_timeout');
            IF v_session_lock_timeout = '0' OR p_type.lock_timeout < v_session_lock_timeout::interval THEN
                PERFORM set_config('lock_timeout',
                                   (extract(epoch FROM p_type.lock_timeout) * 1000)::bigint::text, true);
            ELSE
                v_session_lock_timeout := NULL;
            END IF;
        END IF;
        BEGIN
            IF v_counter_id IS NULL THEN
                -- First use of this counter: two sessions may race here; the loser waits for the winner and
                -- then reads its row, so nobody sees a unique violation.
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
                      DETAIL = pg_catalog.format('Counter %s/%s/%s is held by another transaction for longer '
                                                 'than the lock timeout (%s).', p_type.code, p_scope, v_period,
                                                 coalesce(p_type.lock_timeout::text,
                                                          current_setting('lock_timeout'))),
                      HINT = 'Retry; if it persists, look for a long transaction holding the counter '
                             '(pg_locks, locktype advisory).';
        END;
        IF v_session_lock_timeout IS NOT NULL THEN
            PERFORM set_config('lock_timeout', v_session_lock_timeout, true);
        END IF;
    END IF;

    -- Under the lock. A value whose row or text already exists inserts nothing and is skipped, never reused.
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
        INSERT INTO docnum.ledger AS l (document_type, counter_id, sequence_value, document_number, state, token,
                                        actor, document_ref, metadata, expires_at, confirmed_at)
        VALUES (p_type.code, v_counter_id, v_value,
                v_head || docnum._seq_text(v_value, p_type.seq_width) || v_tail, p_state, p_token,
                p_actor, p_document_ref, p_metadata, p_expires_at,
                CASE WHEN p_state = 'confirmed' THEN now() END)
        ON CONFLICT DO NOTHING
        RETURNING l.document_number INTO v_number;
        EXIT WHEN v_number IS NOT NULL;
    END LOOP;

    INSERT INTO docnum.audit_log (operation, document_type, document_number, scope_value, actor, new_value,
                                  metadata)
    VALUES (p_operation, p_type.code, v_number, nullif(p_scope, ''), p_actor,
            jsonb_build_object('state', p_state, 'sequence_value', v_value, 'period', v_period,
                               'document_ref', p_document_ref, 'expires_at', p_expires_at),
            p_metadata);

    IF v_value > p_type.max_value * 0.9 THEN
        RAISE WARNING 'docnum: % counter % is % used (% of %)', p_type.code,
                pg_catalog.format('(scope %L, period %L)', p_scope, v_period),
                round(v_value * 100.0 / p_type.max_value, 1) || '%', v_value, p_type.max_value
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
                         gen_random_uuid(), statement_timestamp() + v_ttl, reserve_number.actor, NULL,
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
    -- Same text around {SEQ} means overlapping numbers, whatever the widths ({SEQ:2} and {SEQ:3} meet at 100).
    IF EXISTS (SELECT 1 FROM docnum.document_type t
                WHERE t.render_head || '{SEQ}' || t.render_tail = v_new.render_head || '{SEQ}' || v_new.render_tail)
    THEN
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
-- setting unchanged; lock_timeout => '0' removes the type's own limit) and audits old and new values.
-- Raising max_value is the remedy for NB002; it can never drop below a counter's value, and a new format must
-- read every existing number of the type back to itself.
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
    -- lock_timeout => interval '0' removes the type's own limit (only the session's lock_timeout remains).
    v_new.lock_timeout := CASE WHEN alter_type.lock_timeout = interval '0' THEN NULL
                               ELSE coalesce(alter_type.lock_timeout, v_old.lock_timeout) END;
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
        IF EXISTS (SELECT 1 FROM docnum.document_type t
                    WHERE t.code <> v_old.code
                      AND t.render_head || '{SEQ}' || t.render_tail
                          = v_new.render_head || '{SEQ}' || v_new.render_tail) THEN
            RAISE EXCEPTION 'format % renders the same numbers as another type', quote_literal(alter_type.format)
                USING ERRCODE = 'NB006', DETAIL = 'Two types would compete for the same document numbers.',
                      HINT = 'Include {TYPE} or a distinct prefix in the format.';
        END IF;
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

-- file: 50_admin.sql
-- docnum: administration. Manual override, void and void-and-replace, counter adjustment, legacy import and
-- registration of the application's document tables. Each keeps numbers unique, takes the counter's lock
-- when it touches a counter, and audits what it did; explained gaps are recorded in docnum.counter_skip.

-- Values a counter jumped over on purpose (override, set_counter, import), so docnum.gaps() can explain them.
CREATE TABLE docnum.counter_skip (
    skip_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    counter_id  bigint NOT NULL REFERENCES docnum.counter (counter_id),
    from_value  bigint NOT NULL CHECK (from_value > 0),
    to_value    bigint NOT NULL,
    source      text NOT NULL CHECK (source IN ('MANUAL_OVERRIDE', 'SET_COUNTER', 'IMPORT')),
    reason      text,
    actor       text,
    number_id   bigint REFERENCES docnum.ledger (number_id),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT counter_skip_range_check CHECK (to_value >= from_value)
);
COMMENT ON TABLE docnum.counter_skip IS 'Ranges of counter values skipped on purpose, with who, why and when';
CREATE INDEX counter_skip_counter_idx ON docnum.counter_skip (counter_id, from_value);

-- The application's own tables that store document numbers, checked by docnum.check_duplicates().
CREATE TABLE docnum.document_table (
    table_name    regclass PRIMARY KEY,
    number_column name NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE docnum.document_table IS 'Application tables whose document numbers check_duplicates() inspects';

-- Finds or creates the counter of (type, scope, period) and takes its transaction-scoped lock, honouring the
-- type's lock_timeout (NB003 when it runs out). Returns the locked counter row.
CREATE FUNCTION docnum._lock_counter(p_type docnum.document_type, p_scope text, p_period text)
RETURNS docnum.counter
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_counter docnum.counter;
    v_session_lock_timeout text := current_setting('lock_timeout');
BEGIN
    IF p_type.lock_timeout IS NOT NULL
       AND (v_session_lock_timeout = '0' OR p_type.lock_timeout < v_session_lock_timeout::interval) THEN
        PERFORM set_config('lock_timeout', (extract(epoch FROM p_type.lock_timeout) * 1000)::bigint::text, true);
    END IF;
    BEGIN
        INSERT INTO docnum.counter AS c (document_type, scope_value, period)
        VALUES (p_type.code, p_scope, p_period)
        ON CONFLICT ON CONSTRAINT counter_key DO NOTHING;
        SELECT c.* INTO STRICT v_counter
          FROM docnum.counter c
         WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = p_period;
        PERFORM pg_advisory_xact_lock(1685021550, v_counter.counter_id::integer);
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'timed out waiting for the % counter', p_type.code
            USING ERRCODE = 'NB003',
                  DETAIL = pg_catalog.format('Counter (%s, %L, %L) is held by another transaction for longer than '
                                             'the lock timeout.', p_type.code, p_scope, p_period),
                  HINT = 'Retry; if it persists, look for a long transaction holding the counter '
                         '(pg_locks, locktype advisory).';
    END;
    PERFORM set_config('lock_timeout', v_session_lock_timeout, true);
    -- Re-read under the lock: the value may have moved while we waited.
    SELECT c.* INTO STRICT v_counter FROM docnum.counter c WHERE c.counter_id = v_counter.counter_id;
    RETURN v_counter;
END
$$;

-- Loads a type for an administrative operation (NB001 when unknown) after checking the common arguments.
CREATE FUNCTION docnum._admin_type(p_code text, p_actor text, p_reason text, p_reason_required boolean)
RETURNS docnum.document_type
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type docnum.document_type;
BEGIN
    PERFORM docnum._require_writable();
    PERFORM docnum._check_text('actor', p_actor, 200);
    PERFORM docnum._check_text('reason', p_reason, 1000);
    IF p_reason_required AND p_reason IS NULL THEN
        RAISE EXCEPTION 'a reason is required'
            USING ERRCODE = 'NB006', DETAIL = 'Administrative changes to numbering are audited with their reason.',
                  HINT = 'Pass reason => ''...''.';
    END IF;
    IF p_code IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT t.* INTO v_type FROM docnum.document_type t WHERE t.code = p_code;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'document type % is not defined', quote_literal(left(p_code, 60))
            USING ERRCODE = 'NB001', DETAIL = 'No row in docnum.document_type has this code.',
                  HINT = 'Define it with docnum.define_type(); codes are upper-case, e.g. ''COR''.';
    END IF;
    RETURN v_type;
END
$$;

-- Checks a scope value read from a number or given by an administrator against its type's rules.
CREATE FUNCTION docnum._check_scope(p_type docnum.document_type, p_scope text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_type.scope NOT IN ('PROJECT', 'CONTRACT') THEN
        IF coalesce(p_scope, '') <> '' THEN
            RAISE EXCEPTION 'document type % takes no scope value', p_type.code
                USING ERRCODE = 'NB006', DETAIL = pg_catalog.format('%s is a %s type.', p_type.code, p_type.scope),
                      HINT = 'Omit scope for this type.';
        END IF;
        RETURN '';
    END IF;
    IF p_scope IS NULL OR p_scope = '' OR length(p_scope) > 64 OR p_scope ~ '[[:cntrl:]]'
       OR p_scope <> btrim(p_scope) THEN
        RAISE EXCEPTION 'invalid scope value %', coalesce(quote_literal(left(p_scope, 60)), 'NULL')
            USING ERRCODE = 'NB006',
                  DETAIL = 'A scope value is 1 to 64 characters, without control characters or surrounding spaces.',
                  HINT = pg_catalog.format('%s numbers are counted per %s.', p_type.code, lower(p_type.scope));
    END IF;
    RETURN p_scope;
END
$$;

-- Records a number chosen by a person (state overridden). It must match the type's template (unless
-- skip_validation) and exist nowhere yet; a value above its counter moves the counter up to it, and the values
-- jumped over are recorded as skipped by this override, so automatic allocation never collides with it.
CREATE FUNCTION docnum.override_number(
    document_type text, document_number text, actor text DEFAULT NULL, reason text DEFAULT NULL,
    skip_validation boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type    docnum.document_type;
    v_parsed  record;
    v_counter docnum.counter;
    v_number_id bigint;
BEGIN
    IF override_number.document_type IS NULL OR override_number.document_type = '' THEN
        RAISE EXCEPTION 'a document type is required'
            USING ERRCODE = 'NB006', DETAIL = 'document_type was NULL or empty.',
                  HINT = 'Pass the code of the type the number belongs to.';
    END IF;
    v_type := docnum._admin_type(override_number.document_type, override_number.actor, override_number.reason, true);
    PERFORM docnum._check_text('document_number', override_number.document_number, 300);
    IF override_number.document_number IS NULL THEN
        RAISE EXCEPTION 'a document number is required'
            USING ERRCODE = 'NB006', DETAIL = 'document_number was NULL.', HINT = 'Pass the number to record.';
    END IF;
    IF override_number.skip_validation IS NULL THEN
        RAISE EXCEPTION 'skip_validation cannot be NULL'
            USING ERRCODE = 'NB006', DETAIL = 'It is true or false.', HINT = 'The default is false.';
    END IF;
    IF NOT v_type.allow_manual_override THEN
        RAISE EXCEPTION 'manual override is not allowed for %', v_type.code
            USING ERRCODE = 'NB007',
                  DETAIL = pg_catalog.format('Type %s has allow_manual_override = false.', v_type.code),
                  HINT = pg_catalog.format('An administrator can allow it: docnum.alter_type(%L, '
                                           'allow_manual_override => true).', v_type.code);
    END IF;

    v_parsed := docnum._parse(v_type, override_number.document_number);
    IF v_parsed.sequence_value IS NULL AND NOT override_number.skip_validation THEN
        RAISE EXCEPTION 'number % does not match the format of %', quote_literal(override_number.document_number),
                v_type.code
            USING ERRCODE = 'NB006',
                  DETAIL = pg_catalog.format('The format is %s.', v_type.format),
                  HINT = 'Correct the number, or pass skip_validation => true to record it without a counter.';
    END IF;
    IF v_parsed.sequence_value IS NOT NULL THEN
        PERFORM docnum._check_scope(v_type, v_parsed.scope_value);
        IF v_parsed.sequence_value > v_type.max_value THEN
            RAISE EXCEPTION 'number % is above max_value % of %', override_number.document_number,
                    v_type.max_value, v_type.code
                USING ERRCODE = 'NB006', DETAIL = 'Its sequence value would exhaust the counter.',
                      HINT = 'Raise max_value with docnum.alter_type() first.';
        END IF;
        v_counter := docnum._lock_counter(v_type, v_parsed.scope_value, v_parsed.period);
    END IF;

    IF EXISTS (SELECT 1 FROM docnum.ledger l WHERE l.document_number = override_number.document_number)
       OR (v_counter.counter_id IS NOT NULL AND EXISTS (
               SELECT 1 FROM docnum.ledger l
                WHERE l.counter_id = v_counter.counter_id AND l.sequence_value = v_parsed.sequence_value)) THEN
        RAISE EXCEPTION 'number % already exists', override_number.document_number
            USING ERRCODE = 'NB005',
                  DETAIL = 'Every number ever issued is in docnum.ledger, whatever its state.',
                  HINT = 'See docnum.number_history() for it; a number is never issued twice.';
    END IF;

    BEGIN
        INSERT INTO docnum.ledger AS l (document_type, counter_id, sequence_value, document_number, state, actor,
                                        metadata)
        VALUES (v_type.code, v_counter.counter_id, v_parsed.sequence_value, override_number.document_number,
                'overridden', override_number.actor,
                jsonb_build_object('reason', override_number.reason,
                                   'skip_validation', override_number.skip_validation))
        RETURNING l.number_id INTO v_number_id;
    EXCEPTION WHEN unique_violation THEN
        -- Another transaction recorded the same text at the same moment (without a counter to serialise on).
        RAISE EXCEPTION 'number % already exists', override_number.document_number
            USING ERRCODE = 'NB005', DETAIL = 'It was recorded concurrently by another transaction.',
                  HINT = 'See docnum.number_history() for it; a number is never issued twice.';
    END;

    IF v_counter.counter_id IS NOT NULL AND v_parsed.sequence_value > v_counter.current_value THEN
        IF v_parsed.sequence_value > v_counter.current_value + 1 THEN
            INSERT INTO docnum.counter_skip (counter_id, from_value, to_value, source, reason, actor, number_id)
            VALUES (v_counter.counter_id, v_counter.current_value + 1, v_parsed.sequence_value - 1,
                    'MANUAL_OVERRIDE', override_number.reason, override_number.actor, v_number_id);
        END IF;
        UPDATE docnum.counter c SET current_value = v_parsed.sequence_value, last_used_at = now()
         WHERE c.counter_id = v_counter.counter_id;
    END IF;

    INSERT INTO docnum.audit_log (operation, document_type, document_number, scope_value, actor, old_value,
                                  new_value, metadata)
    VALUES ('MANUAL_OVERRIDE', v_type.code, override_number.document_number, nullif(v_parsed.scope_value, ''),
            override_number.actor,
            CASE WHEN v_counter.counter_id IS NOT NULL
                 THEN jsonb_build_object('counter_value', v_counter.current_value) END,
            jsonb_build_object('state', 'overridden', 'sequence_value', v_parsed.sequence_value,
                               'period', v_parsed.period,
                               'counter_value', greatest(v_counter.current_value, v_parsed.sequence_value)),
            jsonb_build_object('reason', override_number.reason,
                               'skip_validation', override_number.skip_validation));
    RETURN override_number.document_number;
END
$$;

-- Voids a confirmed, overridden or imported number: it stays in the ledger as voided and is never issued
-- again. Returns the locked ledger row. Shared by void_number and void_and_replace.
CREATE FUNCTION docnum._void(p_number text, p_actor text, p_reason text, p_operation text)
RETURNS docnum.ledger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row docnum.ledger;
BEGIN
    PERFORM docnum._admin_type(NULL, p_actor, p_reason, true);
    IF p_number IS NULL OR p_number = '' THEN
        RAISE EXCEPTION 'a document number is required'
            USING ERRCODE = 'NB006', DETAIL = 'document_number was NULL or empty.', HINT = 'Pass the number to void.';
    END IF;
    SELECT l.* INTO v_row FROM docnum.ledger l WHERE l.document_number = p_number FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'number % was never issued', quote_literal(left(p_number, 60))
            USING ERRCODE = 'NB011', DETAIL = 'No row in docnum.ledger has this number.',
                  HINT = 'Numbers are unique across all types; check the spelling.';
    END IF;
    IF v_row.state NOT IN ('confirmed', 'overridden', 'imported') THEN
        RAISE EXCEPTION 'cannot void % in state %', p_number, v_row.state
            USING ERRCODE = 'NB009',
                  DETAIL = 'Only confirmed, overridden or imported numbers can be voided.',
                  HINT = CASE WHEN v_row.state = 'reserved' THEN 'Cancel a reservation with docnum.cancel_number().'
                              ELSE 'This number is already out of use.' END;
    END IF;
    UPDATE docnum.ledger l SET state = 'voided', voided_at = now(), void_reason = p_reason
     WHERE l.number_id = v_row.number_id;
    INSERT INTO docnum.audit_log (operation, document_type, document_number, scope_value, actor, old_value,
                                  new_value, metadata)
    SELECT p_operation, v_row.document_type, v_row.document_number, nullif(c.scope_value, ''), p_actor,
           jsonb_build_object('state', v_row.state), jsonb_build_object('state', 'voided'),
           jsonb_build_object('reason', p_reason)
      FROM (SELECT 1) AS one LEFT JOIN docnum.counter c ON c.counter_id = v_row.counter_id;
    RETURN v_row;
END
$$;

-- Voids a number (see _void); returns it.
CREATE FUNCTION docnum.void_number(document_number text, actor text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (docnum._void(void_number.document_number, void_number.actor, void_number.reason, 'VOID')).document_number;
END
$$;

-- Voids a number and issues its replacement in the same counter (same scope and period as the original, not
-- today's); the two rows point at each other. Returns the new number.
CREATE FUNCTION docnum.void_and_replace(document_number text, actor text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old    docnum.ledger;
    v_type   docnum.document_type;
    v_parsed record;
    v_new    docnum.reservation;
    v_new_id bigint;
BEGIN
    v_old := docnum._void(void_and_replace.document_number, void_and_replace.actor, void_and_replace.reason,
                          'VOID');
    IF v_old.counter_id IS NULL THEN
        RAISE EXCEPTION 'number % has no counter to replace it from', void_and_replace.document_number
            USING ERRCODE = 'NB006', DETAIL = 'It was recorded with skip_validation and does not match its format.',
                  HINT = 'Void it with docnum.void_number() and issue a new number with docnum.next_number().';
    END IF;
    SELECT t.* INTO STRICT v_type FROM docnum.document_type t WHERE t.code = v_old.document_type;
    -- The original's own text gives back its scope and a date inside its period.
    v_parsed := docnum._parse(v_type, v_old.document_number);
    IF v_parsed.sequence_value IS NULL THEN
        SELECT c.scope_value, c.period,
               CASE WHEN c.period = '' THEN (now() AT TIME ZONE v_type.time_zone)::date
                    ELSE to_date(c.period || CASE WHEN length(c.period) = 4 THEN '-01-01' ELSE '-01' END,
                                 'YYYY-MM-DD') END AS document_date
          INTO v_parsed
          FROM docnum.counter c WHERE c.counter_id = v_old.counter_id;
    END IF;
    v_new := docnum._issue(v_type, v_parsed.scope_value, v_parsed.document_date, 'confirmed', NULL, NULL,
                           void_and_replace.actor, v_old.document_ref,
                           jsonb_build_object('replaces', v_old.document_number, 'reason', void_and_replace.reason),
                           'REPLACE');
    SELECT l.number_id INTO STRICT v_new_id FROM docnum.ledger l WHERE l.document_number = v_new.document_number;
    UPDATE docnum.ledger l SET replaced_by_number_id = v_new_id WHERE l.number_id = v_old.number_id;
    UPDATE docnum.ledger l SET replaces_number_id = v_old.number_id WHERE l.number_id = v_new_id;
    INSERT INTO docnum.audit_log (operation, document_type, document_number, scope_value, actor, old_value,
                                  new_value, metadata)
    VALUES ('REPLACE_LINK', v_type.code, v_old.document_number, nullif(v_parsed.scope_value, ''),
            void_and_replace.actor, NULL,
            jsonb_build_object('replaced_by', v_new.document_number),
            jsonb_build_object('reason', void_and_replace.reason));
    RETURN v_new.document_number;
END
$$;

-- Sets a counter to a value (the seed's numbering:set). Moving forward records the jumped-over values as
-- skipped; moving backward is allowed and audited, and allocation still skips every value the ledger holds.
CREATE FUNCTION docnum.set_counter(
    document_type text, scope text DEFAULT NULL, period text DEFAULT NULL, value bigint DEFAULT NULL,
    actor text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type    docnum.document_type;
    v_scope   text;
    v_period  text;
    v_counter docnum.counter;
BEGIN
    IF set_counter.document_type IS NULL OR set_counter.document_type = '' THEN
        RAISE EXCEPTION 'a document type is required'
            USING ERRCODE = 'NB006', DETAIL = 'document_type was NULL or empty.', HINT = 'Pass a type code.';
    END IF;
    v_type := docnum._admin_type(set_counter.document_type, set_counter.actor, set_counter.reason, true);
    v_scope := docnum._check_scope(v_type, set_counter.scope);
    IF set_counter.value IS NULL OR set_counter.value < 0 OR set_counter.value > v_type.max_value THEN
        RAISE EXCEPTION 'invalid counter value %', coalesce(set_counter.value::text, 'NULL')
            USING ERRCODE = 'NB006',
                  DETAIL = pg_catalog.format('A counter value lies between 0 and max_value %s.', v_type.max_value),
                  HINT = 'The next number issued is value + 1 (or the first value after it with no ledger row).';
    END IF;
    v_period := coalesce(set_counter.period,
                         docnum._period(v_type.reset, (now() AT TIME ZONE v_type.time_zone)::date));
    IF (v_type.reset = 'NEVER' AND v_period <> '')
       OR (v_type.reset = 'YEARLY' AND v_period !~ '^[0-9]{4}$')
       OR (v_type.reset = 'MONTHLY' AND v_period !~ '^[0-9]{4}-(0[1-9]|1[0-2])$') THEN
        RAISE EXCEPTION 'invalid period % for a % reset', quote_literal(left(v_period, 20)), v_type.reset
            USING ERRCODE = 'NB006', DETAIL = 'Periods are '''' (NEVER), ''2025'' (YEARLY) or ''2025-10'' (MONTHLY).',
                  HINT = 'Omit period for the current one.';
    END IF;
    v_counter := docnum._lock_counter(v_type, v_scope, v_period);
    IF set_counter.value > v_counter.current_value + 1 THEN
        INSERT INTO docnum.counter_skip (counter_id, from_value, to_value, source, reason, actor)
        VALUES (v_counter.counter_id, v_counter.current_value + 1, set_counter.value, 'SET_COUNTER',
                set_counter.reason, set_counter.actor);
    ELSIF set_counter.value = v_counter.current_value + 1 THEN
        INSERT INTO docnum.counter_skip (counter_id, from_value, to_value, source, reason, actor)
        VALUES (v_counter.counter_id, set_counter.value, set_counter.value, 'SET_COUNTER', set_counter.reason,
                set_counter.actor);
    END IF;
    UPDATE docnum.counter c SET current_value = set_counter.value WHERE c.counter_id = v_counter.counter_id;
    INSERT INTO docnum.audit_log (operation, document_type, scope_value, actor, old_value, new_value, metadata)
    VALUES ('SET_COUNTER', v_type.code, nullif(v_scope, ''), set_counter.actor,
            jsonb_build_object('period', v_period, 'value', v_counter.current_value),
            jsonb_build_object('period', v_period, 'value', set_counter.value),
            jsonb_build_object('reason', set_counter.reason));
    RETURN set_counter.value;
END
$$;

-- Registers an application table that stores document numbers, for docnum.check_duplicates(). The table's
-- owner must let docnum read it: GRANT SELECT ON the_table TO docnum_owner.
CREATE FUNCTION docnum.register_document_table(table_name regclass, number_column name,
                                               actor text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM docnum._admin_type(NULL, register_document_table.actor, NULL, false);
    IF register_document_table.table_name IS NULL OR NOT EXISTS (
           SELECT 1 FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = register_document_table.table_name
              AND a.attname = register_document_table.number_column AND NOT a.attisdropped AND a.attnum > 0) THEN
        RAISE EXCEPTION 'column % not found in %', register_document_table.number_column,
                register_document_table.table_name
            USING ERRCODE = 'NB006', DETAIL = 'The table must exist and have the named column.',
                  HINT = 'Pass table_name => ''schema.table'', number_column => ''document_number''.';
    END IF;
    IF NOT has_table_privilege('docnum_owner', register_document_table.table_name, 'SELECT') THEN
        RAISE EXCEPTION 'docnum cannot read %', register_document_table.table_name
            USING ERRCODE = 'NB006', DETAIL = 'check_duplicates() reads registered tables as docnum_owner.',
                  HINT = pg_catalog.format('GRANT SELECT ON %s TO docnum_owner;', register_document_table.table_name);
    END IF;
    INSERT INTO docnum.document_table AS d (table_name, number_column)
    VALUES (register_document_table.table_name, register_document_table.number_column)
    ON CONFLICT ON CONSTRAINT document_table_pkey DO UPDATE SET number_column = EXCLUDED.number_column;
    INSERT INTO docnum.audit_log (operation, actor, new_value)
    VALUES ('REGISTER_TABLE', register_document_table.actor,
            jsonb_build_object('table', register_document_table.table_name::text,
                               'number_column', register_document_table.number_column));
END
$$;

-- file: 55_import.sql
-- docnum: legacy import. Many rows per call; each row is parsed by its type's template and reported back with
-- its status; valid rows become 'imported' and counters end at least at the highest imported value, all in
-- the caller's transaction. Re-running the same rows changes nothing and reports them as already present.

CREATE TYPE docnum.import_result AS (
    row_number      integer,
    document_type   text,
    document_number text,
    status          text,     -- imported | already_present | rejected
    detail          text
);

-- One parsed input row (internal).
CREATE TYPE docnum._import_row AS (
    row_number      integer,
    document_type   text,
    document_number text,
    created_at      timestamptz,
    document_ref    text,
    scope_value     text,
    period          text,
    sequence_value  bigint,
    problem         text
);

-- Reads a timestamp written by another system; NULL when it is not one.
CREATE FUNCTION docnum._to_timestamptz(p_text text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_text IS NULL OR p_text !~ '^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}' THEN
        RETURN NULL;
    END IF;
    RETURN p_text::timestamptz;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_time_zone_displacement_value THEN
    RETURN NULL;
END
$$;

-- Imports legacy numbers given as a JSON array of objects
-- {"document_type": "COR", "document_number": "COR-2019-00042", "created_at": "...", "document_ref": "..."}.
-- Returns one row per input row, in input order.
CREATE FUNCTION docnum.import_numbers(rows jsonb, actor text DEFAULT NULL)
RETURNS SETOF docnum.import_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows docnum._import_row[];
    v_session_lock_timeout text;
    v_lock_timeout interval;
BEGIN
    PERFORM docnum._require_writable();
    PERFORM docnum._check_text('actor', import_numbers.actor, 200);
    IF import_numbers.rows IS NULL OR jsonb_typeof(import_numbers.rows) <> 'array' THEN
        RAISE EXCEPTION 'rows must be a JSON array'
            USING ERRCODE = 'NB006', DETAIL = 'import_numbers takes an array of objects.',
                  HINT = '[{"document_type": "COR", "document_number": "COR-2019-00042"}, ...]';
    END IF;

    -- 1. Read and parse every row; find what is wrong with it on its own or within this batch.
    SELECT coalesce(array_agg(ROW(s.n, s.code, s.number, s.created_at, s.document_ref, s.scope_value, s.period,
                                  s.sequence_value,
                                  coalesce(s.problem, CASE WHEN s.first_row < s.n
                                                           THEN 'duplicate of row ' || s.first_row END)
                              )::docnum._import_row ORDER BY s.n), '{}')
      INTO v_rows
      FROM (
        SELECT f.n, f.code, f.number, docnum._to_timestamptz(f.created_at) AS created_at, f.document_ref,
               p.scope_value, p.period, p.sequence_value,
               min(f.n) OVER (PARTITION BY f.number) AS first_row,
               CASE
                   WHEN f.code IS NULL OR f.number IS NULL
                       THEN 'document_type and document_number are required'
                   WHEN t.code IS NULL THEN 'unknown document type ' || quote_literal(left(f.code, 60))
                   WHEN length(f.number) > 300 OR f.number ~ '[[:cntrl:]]' THEN 'invalid document number'
                   WHEN p.sequence_value IS NULL THEN 'does not match the format ' || t.format
                   WHEN t.scope IN ('PROJECT', 'CONTRACT')
                        AND (length(p.scope_value) > 64 OR p.scope_value ~ '[[:cntrl:]]'
                             OR p.scope_value <> btrim(p.scope_value)) THEN 'invalid scope value'
                   WHEN p.sequence_value > t.max_value THEN 'sequence value above max_value ' || t.max_value
                   WHEN f.created_at IS NOT NULL AND docnum._to_timestamptz(f.created_at) IS NULL
                       THEN 'invalid created_at ' || quote_literal(left(f.created_at, 40))
                   WHEN length(f.document_ref) > 500 THEN 'document_ref longer than 500 characters'
               END AS problem
          FROM (SELECT i.n::integer AS n,
                       CASE WHEN jsonb_typeof(i.item) = 'object' THEN i.item ->> 'document_type' END AS code,
                       CASE WHEN jsonb_typeof(i.item) = 'object' THEN i.item ->> 'document_number' END AS number,
                       CASE WHEN jsonb_typeof(i.item) = 'object' THEN nullif(i.item ->> 'created_at', '') END
                           AS created_at,
                       CASE WHEN jsonb_typeof(i.item) = 'object' THEN nullif(i.item ->> 'document_ref', '') END
                           AS document_ref
                  FROM jsonb_array_elements(import_numbers.rows) WITH ORDINALITY AS i(item, n)) f
          LEFT JOIN docnum.document_type t ON t.code = f.code
          LEFT JOIN LATERAL docnum._parse(t, f.number) p ON t.code IS NOT NULL AND f.number IS NOT NULL
      ) s;

    -- 2. Make sure every counter exists, then lock them in counter order (two imports cannot deadlock;
    --    allocation holds one counter at a time).
    -- The longest lock_timeout of the types involved applies, unless the session's own limit is shorter.
    v_session_lock_timeout := current_setting('lock_timeout');
    SELECT max(t.lock_timeout) INTO v_lock_timeout
      FROM docnum.document_type t
     WHERE t.code IN (SELECT r.document_type FROM unnest(v_rows) r WHERE r.problem IS NULL);
    IF v_lock_timeout IS NOT NULL
       AND (v_session_lock_timeout = '0' OR v_lock_timeout < v_session_lock_timeout::interval) THEN
        PERFORM set_config('lock_timeout', (extract(epoch FROM v_lock_timeout) * 1000)::bigint::text, true);
    END IF;
    BEGIN
        -- Creating a counter can wait too: for another transaction that is creating the same one.
        INSERT INTO docnum.counter AS c (document_type, scope_value, period)
        SELECT DISTINCT r.document_type, r.scope_value, r.period FROM unnest(v_rows) r WHERE r.problem IS NULL
        ON CONFLICT ON CONSTRAINT counter_key DO NOTHING;
        PERFORM pg_advisory_xact_lock(1685021550, k.counter_id::integer)
           FROM (SELECT DISTINCT c.counter_id
                   FROM unnest(v_rows) r
                   JOIN docnum.counter c
                     ON c.document_type = r.document_type AND c.scope_value = r.scope_value AND c.period = r.period
                  WHERE r.problem IS NULL
                  ORDER BY c.counter_id) k;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'timed out waiting for a counter to import into'
            USING ERRCODE = 'NB003', DETAIL = 'Another transaction holds one of the counters of this batch.',
                  HINT = 'Retry the import; it changes nothing until it succeeds.';
    END;
    PERFORM set_config('lock_timeout', v_session_lock_timeout, true);

    -- 3. Under the locks: compare with the ledger, insert, move counters, audit, report.
    RETURN QUERY
    WITH r AS (
        SELECT x.*, c.counter_id, c.current_value
          FROM unnest(v_rows) x
          LEFT JOIN docnum.counter c
            ON x.problem IS NULL AND c.document_type = x.document_type AND c.scope_value = x.scope_value
           AND c.period = x.period
    ), classified AS (
        SELECT r.*,
               CASE WHEN r.problem IS NOT NULL THEN 'rejected'
                    WHEN e.state = 'imported' AND e.document_type = r.document_type
                         AND e.counter_id = r.counter_id AND e.sequence_value = r.sequence_value
                        THEN 'already_present'
                    WHEN e.number_id IS NOT NULL OR v.number_id IS NOT NULL THEN 'rejected'
                    ELSE 'imported' END AS status,
               CASE WHEN r.problem IS NOT NULL THEN r.problem
                    WHEN e.state = 'imported' AND e.document_type = r.document_type
                         AND e.counter_id = r.counter_id AND e.sequence_value = r.sequence_value
                        THEN 'imported earlier'
                    WHEN e.number_id IS NOT NULL
                        THEN pg_catalog.format('duplicate: already in the ledger as %s %s', e.state, e.document_type)
                    WHEN v.number_id IS NOT NULL
                        THEN pg_catalog.format('duplicate: value %s of this counter is already %s',
                                               r.sequence_value, v.document_number)
               END AS detail
          FROM r
          LEFT JOIN docnum.ledger e ON e.document_number = r.document_number
          LEFT JOIN docnum.ledger v
            ON r.problem IS NULL AND v.counter_id = r.counter_id AND v.sequence_value = r.sequence_value
    ), inserted AS (
        INSERT INTO docnum.ledger AS l (document_type, counter_id, sequence_value, document_number, state, actor,
                                        document_ref, metadata, issued_at)
        SELECT k.document_type, k.counter_id, k.sequence_value, k.document_number, 'imported',
               import_numbers.actor, k.document_ref, jsonb_build_object('source', 'import', 'row', k.row_number),
               coalesce(k.created_at, now())
          FROM classified k WHERE k.status = 'imported'
        RETURNING l.document_type, l.document_number, l.counter_id, l.sequence_value, l.document_ref
    ), moved AS (
        SELECT k.counter_id, min(k.current_value) AS old_value, max(k.sequence_value) AS new_value
          FROM classified k WHERE k.status = 'imported'
         GROUP BY k.counter_id
        HAVING max(k.sequence_value) > min(k.current_value)
    ), counters AS (
        UPDATE docnum.counter c SET current_value = m.new_value, last_used_at = now()
          FROM moved m WHERE c.counter_id = m.counter_id
        RETURNING c.counter_id
    ), skipped AS (
        INSERT INTO docnum.counter_skip (counter_id, from_value, to_value, source, reason, actor)
        SELECT m.counter_id, m.old_value + 1, m.new_value, 'IMPORT', 'legacy import', import_numbers.actor
          FROM moved m
        RETURNING 1
    ), audited AS (
        INSERT INTO docnum.audit_log (operation, document_type, document_number, scope_value, actor, new_value,
                                      metadata)
        SELECT 'IMPORT', i.document_type, i.document_number, nullif(c.scope_value, ''), import_numbers.actor,
               jsonb_build_object('state', 'imported', 'sequence_value', i.sequence_value, 'period', c.period,
                                  'document_ref', i.document_ref),
               jsonb_build_object('source', 'import')
          FROM inserted i JOIN docnum.counter c ON c.counter_id = i.counter_id
        RETURNING 1
    )
    SELECT k.row_number, k.document_type, k.document_number, k.status, k.detail
      FROM classified k
     ORDER BY k.row_number;
END
$$;

-- file: 60_reports.sql
-- docnum: reports for DBAs and auditors. Counter status, gaps with their explanations, duplicate checks, one
-- integrity report, the history of a number and audit export. All read-only; docnum_reader may use them.

-- Per counter: where it stands, how full it is and what became of its numbers (the seed's numbering:status).
CREATE VIEW docnum.sequence_status AS
SELECT c.document_type,
       c.scope_value,
       c.period,
       c.current_value,
       t.max_value,
       round(c.current_value * 100.0 / t.max_value, 2) AS utilisation_pct,
       coalesce(s.reserved, 0) AS reserved,
       coalesce(s.confirmed, 0) AS confirmed,
       coalesce(s.cancelled, 0) AS cancelled,
       coalesce(s.expired, 0) AS expired,
       coalesce(s.voided, 0) AS voided,
       coalesce(s.overridden, 0) AS overridden,
       coalesce(s.imported, 0) AS imported,
       c.last_used_at,
       c.counter_id
  FROM docnum.counter c
  JOIN docnum.document_type t ON t.code = c.document_type
  LEFT JOIN LATERAL (
      SELECT count(*) FILTER (WHERE l.state = 'reserved') AS reserved,
             count(*) FILTER (WHERE l.state = 'confirmed') AS confirmed,
             count(*) FILTER (WHERE l.state = 'cancelled') AS cancelled,
             count(*) FILTER (WHERE l.state = 'expired') AS expired,
             count(*) FILTER (WHERE l.state = 'voided') AS voided,
             count(*) FILTER (WHERE l.state = 'overridden') AS overridden,
             count(*) FILTER (WHERE l.state = 'imported') AS imported
        FROM docnum.ledger l
       WHERE l.counter_id = c.counter_id) s ON true;
COMMENT ON VIEW docnum.sequence_status IS 'One row per counter: value, utilisation and numbers by state';

-- Values at or below a counter that have no ledger row, each with the recorded reason it was skipped (the
-- latest skip covering it) or NULLs when nothing explains it.
CREATE FUNCTION docnum.gaps(document_type text DEFAULT NULL, scope text DEFAULT NULL, period text DEFAULT NULL)
RETURNS TABLE (document_type text, scope_value text, period text, sequence_value bigint, explained boolean,
               source text, reason text, actor text, recorded_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH issued AS (
        SELECT c.counter_id, c.current_value, l.sequence_value,
               lag(l.sequence_value, 1, 0::bigint) OVER (PARTITION BY c.counter_id ORDER BY l.sequence_value) AS prev
          FROM docnum.counter c
          JOIN docnum.ledger l ON l.counter_id = c.counter_id AND l.sequence_value <= c.current_value
         WHERE (gaps.document_type IS NULL OR c.document_type = gaps.document_type)
           AND (gaps.scope IS NULL OR c.scope_value = gaps.scope)
           AND (gaps.period IS NULL OR c.period = gaps.period)
    ), ranges AS (
        -- holes between consecutive issued values
        SELECT i.counter_id, i.prev + 1 AS from_value, i.sequence_value - 1 AS to_value
          FROM issued i WHERE i.sequence_value > i.prev + 1
        UNION ALL
        -- the hole above the highest issued value (or the whole counter when nothing was issued)
        SELECT c.counter_id, coalesce(m.top, 0) + 1, c.current_value
          FROM docnum.counter c
          LEFT JOIN (SELECT l.counter_id, max(l.sequence_value) AS top
                       FROM docnum.ledger l JOIN docnum.counter c2 ON c2.counter_id = l.counter_id
                      WHERE l.sequence_value <= c2.current_value
                      GROUP BY l.counter_id) m ON m.counter_id = c.counter_id
         WHERE c.current_value > coalesce(m.top, 0)
           AND (gaps.document_type IS NULL OR c.document_type = gaps.document_type)
           AND (gaps.scope IS NULL OR c.scope_value = gaps.scope)
           AND (gaps.period IS NULL OR c.period = gaps.period)
    )
    SELECT c.document_type, c.scope_value, c.period, v.value, s.skip_id IS NOT NULL, s.source, s.reason, s.actor,
           s.recorded_at
      FROM ranges r
      JOIN docnum.counter c ON c.counter_id = r.counter_id
     CROSS JOIN LATERAL generate_series(r.from_value, r.to_value) AS v(value)
      LEFT JOIN LATERAL (
          SELECT k.skip_id, k.source, k.reason, k.actor, k.recorded_at
            FROM docnum.counter_skip k
           WHERE k.counter_id = r.counter_id AND v.value BETWEEN k.from_value AND k.to_value
           ORDER BY k.skip_id DESC
           LIMIT 1) s ON true
     ORDER BY c.document_type, c.scope_value, c.period, v.value;
END;

-- Numbers used more than once: in the ledger (impossible while its unique constraint stands; this proves it
-- after a restore or a bulk load that bypassed constraints) and in the registered application tables (the
-- same number twice in one table, or in two tables). The seed's numbering:check-duplicates.
CREATE FUNCTION docnum.check_duplicates()
RETURNS TABLE (document_number text, occurrences bigint, found_in text[])
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sql text := 'SELECT l.document_number AS n, ''docnum.ledger''::text AS src FROM docnum.ledger l';
    v_table record;
BEGIN
    FOR v_table IN SELECT d.table_name, d.number_column FROM docnum.document_table d ORDER BY d.table_name::text
    LOOP
        v_sql := v_sql || pg_catalog.format(' UNION ALL SELECT t.%I::text, %L FROM %s t WHERE t.%I IS NOT NULL',
                                            v_table.number_column, v_table.table_name::text, v_table.table_name,
                                            v_table.number_column);
    END LOOP;
    -- A number in the ledger and once in one application table is the normal case; count per source.
    RETURN QUERY EXECUTE
        'SELECT u.n, count(*), array_agg(u.src ORDER BY u.src) FROM (' || v_sql || ') u '
        || 'GROUP BY u.n HAVING count(*) FILTER (WHERE u.src = ''docnum.ledger'') > 1 '
        || 'OR count(*) FILTER (WHERE u.src <> ''docnum.ledger'') > 1 ORDER BY u.n';
END
$$;

-- One integrity report; no rows means healthy (the seed's numbering:validate). Each finding is a row.
CREATE FUNCTION docnum.validate()
RETURNS TABLE (check_name text, severity text, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- A counter below a value the ledger holds would try that value again (it would be skipped, but the
    -- counter no longer tells the truth).
    RETURN QUERY
    SELECT 'counter_below_ledger', 'error',
           pg_catalog.format('counter %s/%s/%s is at %s but the ledger holds value %s', c.document_type,
                             c.scope_value, c.period, c.current_value, m.top)
      FROM docnum.counter c
      JOIN (SELECT l.counter_id, max(l.sequence_value) AS top FROM docnum.ledger l GROUP BY l.counter_id) m
        ON m.counter_id = c.counter_id
     WHERE m.top > c.current_value;

    -- Every counted number must read back, with its type's template (current or any earlier one), as exactly
    -- its own counter and value.
    RETURN QUERY
    WITH formats AS MATERIALIZED (
        SELECT t.code, t.format FROM docnum.document_type t
        UNION
        SELECT a.document_type, a.new_value ->> 'format' FROM docnum.audit_log a
         WHERE a.operation IN ('DEFINE_TYPE', 'ALTER_TYPE') AND a.new_value ? 'format'
    ), templates AS MATERIALIZED (
        -- every template compiled once, not once per ledger row
        SELECT t.code, f.format, cf.render_head, cf.render_tail, cf.seq_width, cf.parse_pattern, cf.parse_groups,
               t.scope, t.reset
          FROM formats f
          JOIN docnum.document_type t ON t.code = f.code
         CROSS JOIN LATERAL docnum._compile_format(t.code, f.format, t.scope, t.reset) cf
    )
    SELECT 'number_format_mismatch', 'error',
           pg_catalog.format('%s (%s) does not read back as value %s of counter %s/%s/%s', l.document_number,
                             l.state, l.sequence_value, c.document_type, c.scope_value, c.period)
      FROM docnum.ledger l
      JOIN docnum.counter c ON c.counter_id = l.counter_id
     WHERE l.document_type <> c.document_type
        OR NOT EXISTS (
            SELECT 1
              FROM templates tp
             CROSS JOIN LATERAL docnum._parse_text(tp.parse_pattern, tp.parse_groups, tp.reset, tp.render_head,
                                                   tp.render_tail, tp.seq_width,
                                                   l.document_number) p
             WHERE tp.code = l.document_type
               AND p.sequence_value = l.sequence_value AND p.scope_value = c.scope_value AND p.period = c.period);

    -- Every number has at least the audit row of the operation that issued it.
    RETURN QUERY
    SELECT 'missing_audit', 'error',
           pg_catalog.format('%s (%s) has no audit row', l.document_number, l.state)
      FROM docnum.ledger l
     WHERE NOT EXISTS (SELECT 1 FROM docnum.audit_log a WHERE a.document_number = l.document_number);

    RETURN QUERY
    SELECT 'unswept_reservation', 'warning',
           pg_catalog.format('%s expired at %s but is still reserved', l.document_number, l.expires_at)
      FROM docnum.ledger l
     WHERE l.state = 'reserved' AND l.expires_at <= statement_timestamp();

    RETURN QUERY
    SELECT 'unexplained_gap', 'warning',
           pg_catalog.format('counter %s/%s/%s: %s value(s) never issued and not explained: %s', g.document_type,
                             g.scope_value, g.period, count(*),
                             array_to_string((array_agg(g.sequence_value ORDER BY g.sequence_value))[1:10], ', ')
                             || CASE WHEN count(*) > 10 THEN ', ...' ELSE '' END)
      FROM docnum.gaps() g
     WHERE NOT g.explained
     GROUP BY g.document_type, g.scope_value, g.period;

    RETURN QUERY
    SELECT 'duplicate_number', 'error',
           pg_catalog.format('%s appears %s times (%s)', d.document_number, d.occurrences,
                             array_to_string(d.found_in, ', '))
      FROM docnum.check_duplicates() d;
END
$$;

-- The full audit trail of one number, oldest first, followed through void-and-replace links in both
-- directions (the rows of the number it replaced and of the number that replaced it).
CREATE FUNCTION docnum.number_history(document_number text)
RETURNS SETOF docnum.audit_log
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH RECURSIVE linked(number_id, document_number) AS (
        SELECT l.number_id, l.document_number FROM docnum.ledger l
         WHERE l.document_number = number_history.document_number
        UNION
        SELECT o.number_id, o.document_number
          FROM linked k
          JOIN docnum.ledger cur ON cur.number_id = k.number_id
          JOIN docnum.ledger o ON o.number_id IN (cur.replaces_number_id, cur.replaced_by_number_id)
    )
    SELECT a.* FROM docnum.audit_log a
     WHERE a.document_number = number_history.document_number
        OR a.document_number IN (SELECT k.document_number FROM linked k)
     ORDER BY a.audit_id;
END;

-- Audit rows with occurred_at in [from_time, to_time), optionally of one type, in a stable column order.
CREATE FUNCTION docnum.audit_export(from_time timestamptz, to_time timestamptz, document_type text DEFAULT NULL)
RETURNS TABLE (audit_id bigint, occurred_at timestamptz, operation text, document_type text,
               document_number text, scope_value text, actor text, session_user_name text, client_addr inet,
               application_name text, old_value jsonb, new_value jsonb, metadata jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT a.audit_id, a.occurred_at, a.operation, a.document_type, a.document_number, a.scope_value, a.actor,
           a.session_user_name, a.client_addr, a.application_name, a.old_value, a.new_value, a.metadata
      FROM docnum.audit_log a
     WHERE a.occurred_at >= audit_export.from_time AND a.occurred_at < audit_export.to_time
       AND (audit_export.document_type IS NULL OR a.document_type = audit_export.document_type)
     ORDER BY a.audit_id;
END;

-- file: 90_grants.sql
-- docnum: privileges. Nothing is executable or readable by PUBLIC; docnum_app allocates and reads its results,
-- docnum_reader reads everything, docnum_admin does everything. No role may write a table directly.

REVOKE ALL ON ALL TABLES IN SCHEMA docnum FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA docnum FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA docnum FROM PUBLIC;
REVOKE ALL ON TYPE docnum.reservation FROM PUBLIC;
REVOKE ALL ON TYPE docnum.import_result FROM PUBLIC;

GRANT USAGE ON SCHEMA docnum TO docnum_app, docnum_reader, docnum_admin;
GRANT USAGE ON TYPE docnum.reservation TO docnum_app, docnum_reader, docnum_admin;
GRANT USAGE ON TYPE docnum.import_result TO docnum_admin;

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
    docnum.alter_type(text, text, text, bigint, interval, interval, boolean, jsonb, text, text),
    docnum.override_number(text, text, text, text, boolean),
    docnum.void_number(text, text, text),
    docnum.void_and_replace(text, text, text),
    docnum.set_counter(text, text, text, bigint, text, text),
    docnum.import_numbers(jsonb, text),
    docnum.register_document_table(regclass, name, text)
TO docnum_admin;

GRANT EXECUTE ON FUNCTION
    docnum.gaps(text, text, text),
    docnum.check_duplicates(),
    docnum.validate(),
    docnum.number_history(text),
    docnum.audit_export(timestamptz, timestamptz, text)
TO docnum_reader;
-- An application may read the trail of the numbers it issued.
GRANT EXECUTE ON FUNCTION docnum.number_history(text) TO docnum_app;

RESET ROLE;
