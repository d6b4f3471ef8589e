-- Revision 0002, frozen: released migrations are immutable, do not edit.
-- Cheaper allocations with the same rules. A counter's identity is checked once, by a trigger, when it is
-- created, and can no longer change; its CHECK keeps only the rule on the value allocations change. _issue finds,
-- locks and advances an idle counter in one UPDATE, waits for a busy or missing one through _lock_counter
-- instead of a copy of it, and renders the date tokens of a number with one to_char() call.

SET LOCAL ROLE docnum_owner;

ALTER TABLE docnum.counter DROP CONSTRAINT counter_row_check;
DROP FUNCTION docnum._counter_row_is_valid(docnum.counter);
ALTER TABLE docnum.counter ADD CONSTRAINT counter_current_value_check CHECK (current_value >= 0);

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
                      HINT = 'Its numbers were rendered from them; use docnum.set_counter() to move its value.';
        END IF;
        RETURN NEW;
    END IF;
    -- Advisory locks use the two-int4 key form (class, counter_id), so ids must fit in int4; a period is '' (no
    -- reset), YYYY or YYYY-MM.
    IF NEW.counter_id NOT BETWEEN 1 AND 2147483647 OR NEW.period !~ '^([0-9]{4}(-(0[1-9]|1[0-2]))?)?$' THEN
        RAISE EXCEPTION 'new row for relation "counter" violates check constraint "%"', TG_NAME
            USING ERRCODE = 'check_violation', SCHEMA = 'docnum', TABLE = 'counter', CONSTRAINT = TG_NAME,
                  DETAIL = pg_catalog.format('counter_id %s must lie in 1..2147483647 and period %L be empty, '
                                             'YYYY or YYYY-MM.', NEW.counter_id, NEW.period);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER counter_identity_check BEFORE INSERT OR UPDATE OF counter_id, document_type, scope_value, period
    ON docnum.counter FOR EACH ROW EXECUTE FUNCTION docnum._counter_identity_check();

REVOKE ALL ON FUNCTION docnum._counter_identity_check() FROM PUBLIC;

-- The to_char() pattern that renders the date tokens of a compiled head or tail in one call: literal text in
-- double quotes (its backslashes and double quotes escaped), {YYYY} {YY} {MM} {DD} as to_char's own fields, and
-- {SCOPE} kept as literal text for the caller to replace afterwards. Allocation renders with it; docnum._fill()
-- renders the same text token by token (a test holds the two to each other).
CREATE FUNCTION docnum._to_char_pattern(p_render text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN '"' || replace(replace(replace(replace(replace(replace(p_render, '\', '\\'), '"', '\"'),
                                              '{YYYY}', '"YYYY"'), '{YY}', '"YY"'), '{MM}', '"MM"'),
                      '{DD}', '"DD"') || '"';

REVOKE ALL ON FUNCTION docnum._to_char_pattern(text) FROM PUBLIC;

-- Through the migration helper (migrations/session.sql): current minor releases refuse this ALTER while the
-- SQL-standard bodies of docnum._parse and docnum._type_json use the table's row type.
CALL pg_temp.docnum_alter_table('docnum.document_type', $alter$
    ADD COLUMN head_pattern text NOT NULL GENERATED ALWAYS AS (docnum._to_char_pattern(render_head)) STORED,
    ADD COLUMN tail_pattern text NOT NULL GENERATED ALWAYS AS (docnum._to_char_pattern(render_tail)) STORED
$alter$);

-- The part of a type row worth auditing (the compiled template columns are derived and left out).
CREATE OR REPLACE FUNCTION docnum._type_json(p_type docnum.document_type) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN to_jsonb(p_type) - ARRAY['render_head', 'render_tail', 'seq_width', 'parse_pattern', 'parse_groups',
                                'head_pattern', 'tail_pattern', 'created_at', 'updated_at'];

-- Creates a document type. Re-running it with the same definition returns the existing type unchanged;
-- a different definition under an existing code raises NB010.
CREATE OR REPLACE FUNCTION docnum.define_type(
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

    INSERT INTO docnum.document_type (code, format, scope, reset, time_zone, max_value, reservation_ttl,
                                      lock_timeout, allow_manual_override, metadata, created_at, updated_at,
                                      render_head, render_tail, seq_width, parse_pattern, parse_groups)
    VALUES (v_new.code, v_new.format, v_new.scope, v_new.reset, v_new.time_zone, v_new.max_value,
            v_new.reservation_ttl, v_new.lock_timeout, v_new.allow_manual_override, v_new.metadata,
            v_new.created_at, v_new.updated_at, v_new.render_head, v_new.render_tail, v_new.seq_width,
            v_new.parse_pattern, v_new.parse_groups)
    RETURNING * INTO v_new;
    INSERT INTO docnum.audit_log (operation, document_type, actor, new_value)
    VALUES ('DEFINE_TYPE', v_new.code, define_type.actor, docnum._type_json(v_new));
    RETURN v_new;
END
$$;

-- Finds or creates the counter of (type, scope, period) and takes its transaction-scoped lock, honouring the
-- type's lock_timeout unless the session's own limit is shorter (NB003 when it runs out). Two sessions creating
-- the same counter race safely: the loser waits for the winner and then reads its row. Returns the locked
-- counter row, read again under the lock.
CREATE OR REPLACE FUNCTION docnum._lock_counter(p_type docnum.document_type, p_scope text, p_period text)
RETURNS docnum.counter
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_counter docnum.counter;
    v_session_lock_timeout text := current_setting('lock_timeout');
    v_limit text := v_session_lock_timeout;
BEGIN
    IF p_type.lock_timeout IS NOT NULL
       AND (v_session_lock_timeout = '0' OR p_type.lock_timeout < v_session_lock_timeout::interval) THEN
        v_limit := p_type.lock_timeout::text;
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
                                             'the lock timeout (%s).', p_type.code, p_scope, p_period, v_limit),
                  HINT = 'Retry; if it persists, look for a long transaction holding the counter '
                         '(pg_locks, locktype advisory).';
    END;
    PERFORM set_config('lock_timeout', v_session_lock_timeout, true);
    -- Re-read under the lock: the value may have moved while we waited.
    SELECT c.* INTO STRICT v_counter FROM docnum.counter c WHERE c.counter_id = v_counter.counter_id;
    RETURN v_counter;
END
$$;

-- Issues the next free value of one counter as a ledger row and audits it. The caller has validated
-- everything. Values that already have a ledger row, or whose text is taken, are skipped, never reused.
CREATE OR REPLACE FUNCTION docnum._issue(p_type docnum.document_type, p_scope text, p_date date, p_state text,
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
    v_value      bigint;
    v_number     text;
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
    -- One to_char() call fills the date tokens, then the scope goes in: the same text as docnum._fill(), from
    -- a far smaller expression (PL/pgSQL compiles each expression once per transaction, so its size counts).
    IF strpos(v_head, '{') > 0 THEN
        v_head := replace(to_char(p_date::timestamp, p_type.head_pattern), '{SCOPE}', p_scope);
    END IF;
    IF strpos(v_tail, '{') > 0 THEN
        v_tail := replace(to_char(p_date::timestamp, p_type.tail_pattern), '{SCOPE}', p_scope);
    END IF;

    -- Fast path: the counter exists and no other transaction holds it. One statement finds it, takes its lock
    -- and advances it. The CASE makes sure the try-lock runs only on the row that matches the key, whatever
    -- order the plan evaluates the conditions in: no other counter's lock is ever taken.
    UPDATE docnum.counter c
       SET current_value = c.current_value + 1, last_used_at = now()
     WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = v_period
       AND CASE WHEN c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = v_period
                THEN pg_try_advisory_xact_lock(1685021550, c.counter_id::integer) END
    RETURNING c.counter_id, c.current_value INTO v_counter_id, v_value;
    IF v_counter_id IS NULL THEN
        -- The counter is missing or busy: create it, or wait for it.
        v_counter_id := (docnum._lock_counter(p_type, p_scope, v_period)).counter_id;
    END IF;

    -- Under the lock. A value whose row or text already exists inserts nothing and is skipped, never reused.
    LOOP
        IF v_value IS NULL THEN
            UPDATE docnum.counter c
               SET current_value = c.current_value + 1, last_used_at = now()
             WHERE c.counter_id = v_counter_id
            RETURNING c.current_value INTO v_value;
        END IF;
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
        v_value := NULL;
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

RESET ROLE;
