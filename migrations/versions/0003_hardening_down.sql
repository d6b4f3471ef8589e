-- Revision 0003, downgrade, frozen: puts back exactly what revision 0002 made. Request keys, and registrations of
-- tables that no longer exist, are lost.

SET LOCAL ROLE docnum_owner;

DROP TRIGGER counter_yy_period_check ON docnum.counter;

DROP FUNCTION docnum.reserve_number(text,text,text,jsonb,interval,date,text);
DROP FUNCTION docnum.next_number(text,text,text,text,date,text);
DROP FUNCTION docnum.gaps(text,text,text);
DROP FUNCTION docnum.find_request(text);
DROP FUNCTION docnum.check_duplicates();
DROP FUNCTION docnum._templates_meet(text[],text[]);
DROP FUNCTION docnum._template_items(text,text);
DROP FUNCTION docnum._replay(text,docnum.document_type,text,boolean);
DROP FUNCTION docnum._raise_lock_timeout(text,text,text,bigint);
DROP FUNCTION docnum._period_fits(text[],text);
DROP FUNCTION docnum._lock_limit_ms(interval);
DROP FUNCTION docnum._issue(docnum.document_type,text,date,text,uuid,timestamp with time zone,text,text,jsonb,text,text);
DROP FUNCTION docnum._is_trimmed(text);
DROP FUNCTION docnum._integrity_findings();
DROP FUNCTION docnum._has_invisible(text);
DROP FUNCTION docnum._durable_commit();
DROP FUNCTION docnum._document_table_problem(oid,name);
DROP FUNCTION docnum._counter_period_check();
DROP FUNCTION docnum._check_template(text,text,text);

CREATE OR REPLACE FUNCTION docnum._check_scope(p_type docnum.document_type, p_scope text)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum._check_scope(docnum.document_type,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._check_text(p_name text, p_value text, p_max integer)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum._check_text(text,text,integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._check_type_settings(p_time_zone text, p_max_value bigint, p_ttl interval, p_lock_timeout interval, p_metadata jsonb)
 RETURNS void
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum._check_type_settings(text,bigint,interval,interval,jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._compile_format(p_code text, p_format text, p_scope text, p_reset text, OUT render_head text, OUT render_tail text, OUT seq_width integer, OUT parse_pattern text, OUT parse_groups text[])
 RETURNS record
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum._compile_format(text,text,text,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._counter_identity_check()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum._counter_identity_check() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._issue(p_type docnum.document_type, p_scope text, p_date date, p_state text, p_token uuid, p_expires_at timestamp with time zone, p_actor text, p_document_ref text, p_metadata jsonb, p_operation text)
 RETURNS docnum.reservation
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum._issue(docnum.document_type,text,date,text,uuid,timestamp with time zone,text,text,jsonb,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._ledger_transition_check()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum._ledger_transition_check() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._lock_counter(p_type docnum.document_type, p_scope text, p_period text)
 RETURNS docnum.counter
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum._lock_counter(docnum.document_type,text,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._parse_text(p_pattern text, p_groups text[], p_reset text, p_head text, p_tail text, p_width integer, p_number text, OUT scope_value text, OUT period text, OUT sequence_value bigint, OUT document_date date)
 RETURNS record
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum._parse_text(text,text[],text,text,text,integer,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._prepare(p_code text, p_scope text, p_actor text, p_date date, OUT o_type docnum.document_type, OUT o_scope text, OUT o_date date)
 RETURNS record
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum._prepare(text,text,text,date) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._require_writable()
 RETURNS void
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum._require_writable() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._to_timestamptz(p_text text)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF p_text IS NULL OR p_text !~ '^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}' THEN
        RETURN NULL;
    END IF;
    RETURN p_text::timestamptz;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_time_zone_displacement_value THEN
    RETURN NULL;
END
$function$;
REVOKE ALL ON FUNCTION docnum._to_timestamptz(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum.alter_type(document_type text, format text DEFAULT NULL::text, time_zone text DEFAULT NULL::text, max_value bigint DEFAULT NULL::bigint, reservation_ttl interval DEFAULT NULL::interval, lock_timeout interval DEFAULT NULL::interval, allow_manual_override boolean DEFAULT NULL::boolean, metadata jsonb DEFAULT NULL::jsonb, actor text DEFAULT NULL::text, reason text DEFAULT NULL::text)
 RETURNS docnum.document_type
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.alter_type(text,text,text,bigint,interval,interval,boolean,jsonb,text,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.alter_type(text,text,text,bigint,interval,interval,boolean,jsonb,text,text) TO docnum_admin;

CREATE OR REPLACE FUNCTION docnum.check_duplicates()
 RETURNS TABLE(document_number text, occurrences bigint, found_in text[])
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.check_duplicates() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.check_duplicates() TO docnum_reader;

CREATE OR REPLACE FUNCTION docnum.define_type(code text, format text, scope text DEFAULT 'GLOBAL'::text, reset text DEFAULT NULL::text, time_zone text DEFAULT 'UTC'::text, max_value bigint DEFAULT NULL::bigint, reservation_ttl interval DEFAULT '00:05:00'::interval, lock_timeout interval DEFAULT '00:00:05'::interval, allow_manual_override boolean DEFAULT false, metadata jsonb DEFAULT '{}'::jsonb, actor text DEFAULT NULL::text)
 RETURNS docnum.document_type
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.define_type(text,text,text,text,text,bigint,interval,interval,boolean,jsonb,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.define_type(text,text,text,text,text,bigint,interval,interval,boolean,jsonb,text) TO docnum_admin;

CREATE OR REPLACE FUNCTION docnum.expire_reservations()
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.expire_reservations() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.expire_reservations() TO docnum_app;

CREATE OR REPLACE FUNCTION docnum.import_numbers(rows jsonb, actor text DEFAULT NULL::text)
 RETURNS SETOF docnum.import_result
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.import_numbers(jsonb,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.import_numbers(jsonb,text) TO docnum_admin;

CREATE OR REPLACE FUNCTION docnum.next_number(document_type text, scope text DEFAULT NULL::text, actor text DEFAULT NULL::text, document_ref text DEFAULT NULL::text, document_date date DEFAULT NULL::date)
 RETURNS text
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.next_number(text,text,text,text,date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.next_number(text,text,text,text,date) TO docnum_app;

CREATE OR REPLACE FUNCTION docnum.override_number(document_type text, document_number text, actor text DEFAULT NULL::text, reason text DEFAULT NULL::text, skip_validation boolean DEFAULT false)
 RETURNS text
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.override_number(text,text,text,text,boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.override_number(text,text,text,text,boolean) TO docnum_admin;

CREATE OR REPLACE FUNCTION docnum.register_document_table(table_name regclass, number_column name, actor text DEFAULT NULL::text)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.register_document_table(regclass,name,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.register_document_table(regclass,name,text) TO docnum_admin;

CREATE OR REPLACE FUNCTION docnum.reserve_number(document_type text, scope text DEFAULT NULL::text, actor text DEFAULT NULL::text, metadata jsonb DEFAULT NULL::jsonb, ttl interval DEFAULT NULL::interval, document_date date DEFAULT NULL::date)
 RETURNS docnum.reservation
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.reserve_number(text,text,text,jsonb,interval,date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.reserve_number(text,text,text,jsonb,interval,date) TO docnum_app;

CREATE OR REPLACE FUNCTION docnum.set_counter(document_type text, scope text DEFAULT NULL::text, period text DEFAULT NULL::text, value bigint DEFAULT NULL::bigint, actor text DEFAULT NULL::text, reason text DEFAULT NULL::text)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.set_counter(text,text,text,bigint,text,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.set_counter(text,text,text,bigint,text,text) TO docnum_admin;

CREATE OR REPLACE FUNCTION docnum.validate()
 RETURNS TABLE(check_name text, severity text, detail text)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.validate() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.validate() TO docnum_reader;

CREATE OR REPLACE FUNCTION docnum.gaps(document_type text DEFAULT NULL::text, scope text DEFAULT NULL::text, period text DEFAULT NULL::text)
 RETURNS TABLE(document_type text, scope_value text, period text, sequence_value bigint, explained boolean, source text, reason text, actor text, recorded_at timestamp with time zone)
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
BEGIN ATOMIC
 WITH issued AS (
          SELECT c_1.counter_id,
             c_1.current_value,
             l.sequence_value,
             lag(l.sequence_value, 1, (0)::bigint) OVER (PARTITION BY c_1.counter_id ORDER BY l.sequence_value) AS prev
            FROM (docnum.counter c_1
              JOIN docnum.ledger l ON (((l.counter_id = c_1.counter_id) AND (l.sequence_value <= c_1.current_value))))
           WHERE (((gaps.document_type IS NULL) OR (c_1.document_type = gaps.document_type)) AND ((gaps.scope IS NULL) OR (c_1.scope_value = gaps.scope)) AND ((gaps.period IS NULL) OR (c_1.period = gaps.period)))
         ), ranges AS (
          SELECT i.counter_id,
             (i.prev + 1) AS from_value,
             (i.sequence_value - 1) AS to_value
            FROM issued i
           WHERE (i.sequence_value > (i.prev + 1))
         UNION ALL
          SELECT c_1.counter_id,
             (COALESCE(m.top, (0)::bigint) + 1),
             c_1.current_value
            FROM (docnum.counter c_1
              LEFT JOIN ( SELECT l.counter_id,
                     max(l.sequence_value) AS top
                    FROM (docnum.ledger l
                      JOIN docnum.counter c2 ON ((c2.counter_id = l.counter_id)))
                   WHERE (l.sequence_value <= c2.current_value)
                   GROUP BY l.counter_id) m ON ((m.counter_id = c_1.counter_id)))
           WHERE ((c_1.current_value > COALESCE(m.top, (0)::bigint)) AND ((gaps.document_type IS NULL) OR (c_1.document_type = gaps.document_type)) AND ((gaps.scope IS NULL) OR (c_1.scope_value = gaps.scope)) AND ((gaps.period IS NULL) OR (c_1.period = gaps.period)))
         )
  SELECT c.document_type,
     c.scope_value,
     c.period,
     v.value,
     (s.skip_id IS NOT NULL),
     s.source,
     s.reason,
     s.actor,
     s.recorded_at
    FROM (((ranges r
      JOIN docnum.counter c ON ((c.counter_id = r.counter_id)))
      CROSS JOIN LATERAL generate_series(r.from_value, r.to_value) v(value))
      LEFT JOIN LATERAL ( SELECT k.skip_id,
             k.source,
             k.reason,
             k.actor,
             k.recorded_at
            FROM docnum.counter_skip k
           WHERE ((k.counter_id = r.counter_id) AND ((v.value >= k.from_value) AND (v.value <= k.to_value)))
           ORDER BY k.skip_id DESC
          LIMIT 1) s ON (true))
   ORDER BY c.document_type, c.scope_value, c.period, v.value;
END;
REVOKE ALL ON FUNCTION docnum.gaps(text,text,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.gaps(text,text,text) TO docnum_reader;


CREATE FUNCTION docnum._migrate_0003_document_table() RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_rows jsonb;
BEGIN
    SELECT jsonb_agg(jsonb_build_object('table_name', t.relid, 'number_column', d.number_column,
                                        'registered_at', d.registered_at))
      INTO v_rows
      FROM docnum.document_table d
      CROSS JOIN LATERAL (SELECT pg_catalog.to_regclass(pg_catalog.format('%I.%I', d.schema_name, d.table_name))::oid
                                 AS relid) t
     WHERE t.relid IS NOT NULL;
    DROP TABLE docnum.document_table;
    CREATE TABLE docnum.document_table (
        table_name    regclass PRIMARY KEY,
        number_column name NOT NULL,
        registered_at timestamptz NOT NULL DEFAULT now()
    );
    INSERT INTO docnum.document_table (table_name, number_column, registered_at)
    SELECT r.table_name::regclass, r.number_column, r.registered_at
      FROM jsonb_to_recordset(coalesce(v_rows, '[]')) AS r(table_name oid, number_column name, registered_at timestamptz);
END
$$;
SELECT docnum._migrate_0003_document_table();
DROP FUNCTION docnum._migrate_0003_document_table();
COMMENT ON TABLE docnum.document_table IS 'Application tables whose document numbers check_duplicates() inspects';
REVOKE ALL ON docnum.document_table FROM PUBLIC;
GRANT SELECT ON docnum.document_table TO docnum_reader;

DROP INDEX docnum.ledger_request_id_key;
ALTER TABLE docnum.ledger DROP COLUMN request_id;

ALTER TABLE docnum.document_type DROP CONSTRAINT document_type_max_value_check,
    ADD CONSTRAINT document_type_max_value_check CHECK (max_value > 0);

RESET ROLE;
