-- Revision 0014, downgrade: the functions of 0013.

SET LOCAL ROLE docnum_owner;

CREATE OR REPLACE FUNCTION docnum._admin_type(p_code text, p_actor text, p_reason text, p_reason_required boolean, p_type_required boolean DEFAULT true)
 RETURNS docnum.document_type
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM docnum._require_writable();
    PERFORM docnum._check_text('actor', p_actor);
    PERFORM docnum._check_text('reason', p_reason);
    IF p_reason_required AND p_reason IS NULL THEN
        RAISE EXCEPTION 'a reason is required'
            USING ERRCODE = 'NB006', COLUMN = 'reason',
                  DETAIL = 'Administrative changes to numbering are audited with their reason.',
                  HINT = 'Pass reason => ''...''.';
    END IF;
    IF p_type_required THEN
        RETURN docnum._type(p_code);
    END IF;
    RETURN NULL;
END
$function$;
REVOKE ALL ON FUNCTION docnum._admin_type(text,text,text,boolean,boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._check_metadata(p_column text, p_metadata jsonb, p_copies integer DEFAULT 1)
 RETURNS jsonb
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    c_max_bytes   constant integer := 8192;
    c_batch_bytes constant integer := 1048576;
    v_bytes       integer;
BEGIN
    IF p_metadata IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_metadata) <> 'object' THEN
        RAISE EXCEPTION 'invalid %: not a JSON object', p_column
            USING ERRCODE = 'NB006', COLUMN = p_column,
                  DETAIL = pg_catalog.format('%s must be a JSON object, not a JSON %s.', p_column,
                                             jsonb_typeof(p_metadata)),
                  HINT = 'Pass an object such as ''{"project": "P-1"}'', or NULL for none.';
    END IF;
    v_bytes := octet_length(p_metadata::text);
    IF v_bytes > c_max_bytes THEN
        RAISE EXCEPTION 'invalid %: % bytes', p_column, v_bytes
            USING ERRCODE = 'NB006', COLUMN = p_column,
                  DETAIL = pg_catalog.format('%s holds at most %s bytes as JSON text; this one holds %s.', p_column,
                                             c_max_bytes, v_bytes),
                  HINT = 'Keep references in it, not documents: store the document elsewhere and its id here.';
    END IF;
    IF v_bytes::bigint * p_copies > c_batch_bytes THEN
        RAISE EXCEPTION 'invalid %: % bytes in each of % numbers', p_column, v_bytes, p_copies
            USING ERRCODE = 'NB006', COLUMN = p_column,
                  DETAIL = pg_catalog.format('A batch stores its %s with every number: at most %s bytes in all, '
                                             'here %s x %s.', p_column, c_batch_bytes, p_copies, v_bytes),
                  HINT = 'Issue a smaller batch, or keep less in the metadata.';
    END IF;
    RETURN p_metadata;
END
$function$;
REVOKE ALL ON FUNCTION docnum._check_metadata(text,jsonb,integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._check_scope(p_type docnum.document_type, p_scope text, p_column text DEFAULT 'scope'::text)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF NOT docnum._has_scope_value(p_type.scope) THEN
        IF p_scope IS NOT NULL THEN
            RAISE EXCEPTION 'document type % takes no scope value', p_type.code
                USING ERRCODE = 'NB006', COLUMN = p_column,
                      DETAIL = pg_catalog.format('%s is a %s type; scope %s would be ignored.', p_type.code,
                                                 p_type.scope, quote_literal(left(p_scope, 60))),
                      HINT = 'Omit scope for this type.';
        END IF;
        RETURN '';
    END IF;
    IF p_scope IS NULL OR p_scope = '' THEN
        RAISE EXCEPTION 'document type % needs a scope value', p_type.code
            USING ERRCODE = 'NB006', COLUMN = p_column,
                  DETAIL = pg_catalog.format('%s numbers are counted per %s.', p_type.code, lower(p_type.scope)),
                  HINT = pg_catalog.format('Pass scope => the %s identifier, e.g. ''PRJ-7''.', lower(p_type.scope));
    END IF;
    IF NOT docnum._is_scope_value(p_scope) THEN
        RAISE EXCEPTION 'invalid scope value %', quote_literal(left(p_scope, 60))
            USING ERRCODE = 'NB006', COLUMN = p_column,
                  DETAIL = 'A scope value is 1 to 64 characters, without control or invisible format characters or '
                           'surrounding spaces.',
                  HINT = 'Use a short stable identifier such as a project code.';
    END IF;
    RETURN p_scope;
END
$function$;
REVOKE ALL ON FUNCTION docnum._check_scope(docnum.document_type,text,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._check_text(p_name text, p_value text)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    p_max integer := docnum._text_limit(p_name);
BEGIN
    IF p_value IS NOT NULL AND (p_value = '' OR length(p_value) > p_max OR docnum._has_invisible(p_value)) THEN
        RAISE EXCEPTION 'invalid %: %', p_name, quote_literal(left(p_value, 60))
            USING ERRCODE = 'NB006', COLUMN = p_name,
                  DETAIL = pg_catalog.format('%s must be 1 to %s characters without control or invisible '
                                             'format characters.', p_name, p_max),
                  HINT = pg_catalog.format('Pass NULL to omit %s.', p_name);
    END IF;
    RETURN p_value;
END
$function$;
REVOKE ALL ON FUNCTION docnum._check_text(text,text) FROM PUBLIC;

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
            USING ERRCODE = 'NB006', COLUMN = 'time_zone', DETAIL = 'time_zone must be an IANA time zone name.',
                  HINT = 'For example ''UTC'', ''Asia/Bangkok'' or ''Europe/Paris''.';
    END IF;
    IF p_max_value IS NOT NULL AND p_max_value NOT BETWEEN 1 AND 9223372036854775806 THEN
        RAISE EXCEPTION 'invalid max_value %', p_max_value
            USING ERRCODE = 'NB006', COLUMN = 'max_value',
                  DETAIL = 'max_value lies between 1 and 9223372036854775806 (2^63 - 2).',
                  HINT = 'Omit it to use the largest value the {SEQ:n} padding can show.';
    END IF;
    IF p_ttl IS NULL OR p_ttl <= interval '0' OR p_ttl > interval '7 days' THEN
        RAISE EXCEPTION 'invalid reservation_ttl %', coalesce(p_ttl::text, 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'reservation_ttl',
                  DETAIL = 'A reservation lasts more than 0 and at most 7 days.',
                  HINT = 'The default is 5 minutes.';
    END IF;
    IF p_lock_timeout IS NOT NULL AND (p_lock_timeout < interval '1 millisecond' OR p_lock_timeout > interval '1 hour')
    THEN
        RAISE EXCEPTION 'invalid lock_timeout %', p_lock_timeout
            USING ERRCODE = 'NB006', COLUMN = 'lock_timeout',
                  DETAIL = 'lock_timeout lies between 1 millisecond and 1 hour, or is NULL.',
                  HINT = 'NULL leaves only the session''s lock_timeout in force.';
    END IF;
    IF p_metadata IS NULL THEN
        RAISE EXCEPTION 'invalid metadata: NULL'
            USING ERRCODE = 'NB006', COLUMN = 'metadata',
                  DETAIL = 'A type''s metadata is a JSON object.', HINT = 'Pass ''{}'' for none.';
    END IF;
    PERFORM docnum._check_metadata('metadata', p_metadata);
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
    v_piece     text;
    v_variable  boolean;
    v_prev_variable boolean := false;
    v_hint      constant text :=
        'Tokens: {TYPE} {SCOPE} {YYYY} {YY} {MM} {DD} {SEQ} {SEQ:n}; everything else is literal text.';
BEGIN
    IF p_format IS NULL OR p_format = '' THEN
        RAISE EXCEPTION 'a number format is required'
            USING ERRCODE = 'NB006', COLUMN = 'format', DETAIL = 'format was NULL or empty.', HINT = v_hint;
    END IF;
    IF docnum._has_invisible(p_format) OR length(p_format) > docnum._text_limit('format') THEN
        RAISE EXCEPTION 'invalid number format %', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'A format is at most 200 characters, without control or invisible format characters.',
                  HINT = v_hint;
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
        RAISE EXCEPTION 'invalid number format %: unbalanced brace', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'Braces are reserved for tokens such as {SEQ:5}.', HINT = v_hint;
    END IF;
    v_literals := v_literals || v_rest;

    FOR v_i IN 1 .. coalesce(array_length(v_tokens, 1), 0) LOOP
        v_token := v_tokens[v_i];
        IF v_token !~ '^(TYPE|SCOPE|YYYY|YY|MM|DD|SEQ|SEQ:([1-9]|1[0-8]))$' THEN
            RAISE EXCEPTION 'invalid number format %: unknown token {%}', quote_literal(left(p_format, 60)),
                    left(v_token, 20)
                USING ERRCODE = 'NB006', COLUMN = 'format',
                      DETAIL = CASE WHEN v_token LIKE 'SEQ%'
                                    THEN '{SEQ} takes a width from 1 to 18: {SEQ:1} ... {SEQ:18}.'
                                    ELSE 'The tokens are {TYPE}, {SCOPE}, {YYYY}, {YY}, {MM}, {DD} and {SEQ} or '
                                         '{SEQ:n}.' END,
                      HINT = v_hint;
        END IF;
        IF v_token LIKE 'SEQ%' THEN
            IF v_seen_seq THEN
                RAISE EXCEPTION 'invalid number format %: more than one {SEQ}', quote_literal(left(p_format, 60))
                    USING ERRCODE = 'NB006', COLUMN = 'format',
                          DETAIL = 'A number has exactly one sequence part.', HINT = v_hint;
            END IF;
            v_seen_seq := true;
        ELSIF array_position(v_tokens, v_token) <> v_i THEN
            RAISE EXCEPTION 'invalid number format %: {%} appears twice', quote_literal(left(p_format, 60)),
                    left(v_token, 20)
                USING ERRCODE = 'NB006', COLUMN = 'format', DETAIL = 'Each token may appear once.', HINT = v_hint;
        END IF;
        -- {SCOPE} and an unpadded {SEQ} have no fixed width: literal text must separate them from other tokens,
        -- or a number could not be read back unambiguously.
        v_variable := v_token IN ('SCOPE', 'SEQ');
        IF v_i > 1 AND v_literals[v_i] = '' AND (v_variable OR v_prev_variable) THEN
            RAISE EXCEPTION 'invalid number format %: {%} and {%} need literal text between them',
                    quote_literal(left(p_format, 60)), v_tokens[v_i - 1], v_token
                USING ERRCODE = 'NB006', COLUMN = 'format',
                      DETAIL = '{SCOPE} and {SEQ} without padding have no fixed width.',
                      HINT = 'Put a separator such as - or / between them, e.g. {SCOPE}-{SEQ}.';
        END IF;
        v_prev_variable := v_variable;
    END LOOP;

    IF NOT v_seen_seq THEN
        RAISE EXCEPTION 'invalid number format %: no {SEQ}', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'A number needs exactly one {SEQ} or {SEQ:n}.', HINT = v_hint;
    END IF;
    IF 'YYYY' = ANY (v_tokens) AND 'YY' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format %: both {YYYY} and {YY}', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', COLUMN = 'format', DETAIL = 'Use one year token.', HINT = v_hint;
    END IF;
    -- Different counters must never render the same text.
    IF docnum._has_scope_value(p_scope) AND NOT 'SCOPE' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a % scope: no {SCOPE}', quote_literal(left(p_format, 60)),
                p_scope
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'Each scope value has its own counter, so the scope must be part of the number.',
                  HINT = 'Add {SCOPE}, e.g. {SCOPE}/{TYPE}/{SEQ:4}.';
    END IF;
    IF NOT docnum._has_scope_value(p_scope) AND 'SCOPE' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a % scope: {SCOPE} has no value',
                quote_literal(left(p_format, 60)), p_scope
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'Only PROJECT and CONTRACT types take a scope value.',
                  HINT = 'Remove {SCOPE} or use scope => ''PROJECT''.';
    END IF;
    IF p_reset IN ('YEARLY', 'MONTHLY') AND NOT ('YYYY' = ANY (v_tokens) OR 'YY' = ANY (v_tokens)) THEN
        RAISE EXCEPTION 'invalid number format % for a % reset: no year', quote_literal(left(p_format, 60)), p_reset
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'The counter restarts each period, so the period must be part of the number.',
                  HINT = 'Add {YYYY} or {YY}.';
    END IF;
    IF p_reset = 'MONTHLY' AND NOT 'MM' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a MONTHLY reset: no month', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', COLUMN = 'format',
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
$function$;
REVOKE ALL ON FUNCTION docnum._counter_identity_check() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._counter_is_permanent()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    RAISE EXCEPTION 'counters in docnum.counter are permanent'
        USING ERRCODE = 'NB009',
              DETAIL = pg_catalog.format('%s on docnum.counter was refused.', TG_OP),
              HINT = 'Its numbers reference it; use docnum.set_counter() to move its value.';
END
$function$;
REVOKE ALL ON FUNCTION docnum._counter_is_permanent() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._counter_period_check()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF NOT (NEW.period = '' OR NEW.period LIKE '20%')
       AND NOT docnum._period_fits((SELECT t.parse_groups FROM docnum.document_type t
                                     WHERE t.code = NEW.document_type), NEW.period) THEN
        RAISE EXCEPTION 'document type % cannot number a document of %', NEW.document_type, left(NEW.period, 4)
            USING ERRCODE = 'NB006',
                  DETAIL = pg_catalog.format('Its format shows the year as {YY}, which reads back as 2000..2099, and '
                                             'its counter restarts each period: period %L would share numbers with '
                                             '%L.', NEW.period, '20' || substr(NEW.period, 3)),
                  HINT = 'Date the document between 2000 and 2099, or change the format to {YYYY} with '
                         'docnum.alter_type().';
    END IF;
    RETURN NEW;
END
$function$;
REVOKE ALL ON FUNCTION docnum._counter_period_check() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._issue(p_type docnum.document_type, p_scope text, p_date date, p_state text, p_token uuid, p_expires_at timestamp with time zone, p_actor text, p_document_ref text, p_metadata jsonb, p_request_id text DEFAULT NULL::text, p_request_digest text DEFAULT NULL::text)
 RETURNS docnum.reservation
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_period     text := '';
    v_head       text := p_type.render_head;
    v_tail       text := p_type.render_tail;
    v_counter_id bigint;
    v_value      bigint;
    v_number     text;
    v_waited     timestamptz;
    v_wait       double precision;   -- seconds this allocation waited for its counter; NULL once counted
    v_bucket     integer;            -- its bucket: docnum.counter.wait_le_10ms ... wait_over_5s
BEGIN
    PERFORM docnum._durable_commit();
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

    -- Fast path: the counter exists and its turn is free. One probe finds the turn and takes it (SKIP LOCKED:
    -- a taken turn is not waited for here), the UPDATE advances the counter and counts the allocation for the
    -- metrics; it waited for nothing. (Two UPDATEs, so that a confirmed number does not compute a reservation
    -- count it leaves as it is.)
    SELECT q.counter_id INTO v_counter_id
      FROM docnum.counter_queue q
     WHERE q.document_type = p_type.code AND q.scope_value = p_scope AND q.period = v_period
       FOR UPDATE SKIP LOCKED;
    IF v_counter_id IS NULL THEN
        NULL;  -- missing or busy: below
    ELSIF p_token IS NULL THEN
        UPDATE docnum.counter c
           SET current_value = c.current_value + 1, last_used_at = now(), issued = c.issued + 1,
               allocations = c.allocations + 1
         WHERE c.counter_id = v_counter_id
        RETURNING c.current_value INTO v_value;
    ELSE
        UPDATE docnum.counter c
           SET current_value = c.current_value + 1, last_used_at = now(), issued = c.issued + 1,
               reservations = c.reservations + 1, allocations = c.allocations + 1
         WHERE c.counter_id = v_counter_id
        RETURNING c.current_value INTO v_value;
    END IF;
    IF v_value IS NULL THEN
        -- The counter is missing or its turn taken: create it, or wait for the turn (and time the wait).
        v_waited := clock_timestamp();
        v_counter_id := (docnum._lock_counter(p_type, p_scope, v_period)).counter_id;
        v_wait := date_part('epoch', clock_timestamp() - v_waited);
        v_bucket := docnum._lock_wait_bucket(v_wait);
    END IF;

    -- Under the lock. A value whose row or text already exists inserts nothing and is skipped, never reused.
    LOOP
        IF v_value IS NULL AND v_wait IS NULL THEN
            UPDATE docnum.counter c
               SET current_value = c.current_value + 1, last_used_at = now()
             WHERE c.counter_id = v_counter_id
            RETURNING c.current_value INTO v_value;
        ELSIF v_value IS NULL THEN
            -- The first value after a wait: counts the allocation and its wait.
            UPDATE docnum.counter c
               SET current_value = c.current_value + 1, last_used_at = now(), issued = c.issued + 1,
                   reservations = c.reservations + (p_token IS NOT NULL)::integer,
                   allocations = c.allocations + 1,
                   wait_le_10ms = c.wait_le_10ms + (v_bucket = 1)::integer,
                   wait_le_50ms = c.wait_le_50ms + (v_bucket = 2)::integer,
                   wait_le_100ms = c.wait_le_100ms + (v_bucket = 3)::integer,
                   wait_le_500ms = c.wait_le_500ms + (v_bucket = 4)::integer,
                   wait_le_1s = c.wait_le_1s + (v_bucket = 5)::integer,
                   wait_le_2s = c.wait_le_2s + (v_bucket = 6)::integer,
                   wait_le_5s = c.wait_le_5s + (v_bucket = 7)::integer,
                   wait_over_5s = c.wait_over_5s + (v_bucket = 8)::integer,
                   lock_wait_seconds = c.lock_wait_seconds + v_wait
             WHERE c.counter_id = v_counter_id
            RETURNING c.current_value INTO v_value;
            v_wait := NULL;
        END IF;
        IF v_value > p_type.max_value THEN
            PERFORM docnum._count_failure(p_type.code, 'NB002');
            RAISE EXCEPTION 'sequence exhausted for %', p_type.code
                USING ERRCODE = 'NB002',
                      DETAIL = pg_catalog.format('Counter %s/%s/%s has reached max_value %s.', p_type.code,
                                                 p_scope, v_period, p_type.max_value),
                      HINT = pg_catalog.format('Raise it: SELECT docnum.alter_type(document_type => %L, '
                                               'max_value => ...).', p_type.code);
        END IF;
        INSERT INTO docnum.ledger AS l (document_type, counter_id, sequence_value, document_number, state, token,
                                        actor, document_ref, metadata, expires_at, confirmed_at, request_id,
                                        audit_id, session_user_name, client_addr, application_name,
                                        request_digest)
        VALUES (p_type.code, v_counter_id, v_value,
                v_head || docnum._seq_text(v_value, p_type.seq_width) || v_tail, p_state, p_token,
                p_actor, p_document_ref, p_metadata, p_expires_at,
                CASE WHEN p_state = 'confirmed' THEN now() END, p_request_id,
                nextval('docnum.audit_log_audit_id_seq'::regclass), session_user, inet_client_addr(),
                current_setting('application_name'), p_request_digest)
        ON CONFLICT DO NOTHING
        RETURNING l.document_number INTO v_number;
        EXIT WHEN v_number IS NOT NULL;
        -- The row or text of this value exists (skip it), or another transaction has just committed a number for
        -- the same request key (this one must not issue a second number for it).
        IF p_request_id IS NOT NULL
           AND EXISTS (SELECT FROM docnum.ledger l WHERE l.request_id = p_request_id) THEN
            RAISE EXCEPTION 'request % was served by a concurrent transaction', left(p_request_id, 64)
                USING ERRCODE = 'serialization_failure',
                      DETAIL = 'Another transaction issued a number for the same request key while this one ran.',
                      HINT = 'Retry the transaction: the retry returns the number already issued for the key.';
        END IF;
        v_value := NULL;
    END LOOP;

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
REVOKE ALL ON FUNCTION docnum._issue(docnum.document_type,text,date,text,uuid,timestamp with time zone,text,text,jsonb,text,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._issue_batch(p_type docnum.document_type, p_scope text, p_date date, p_count integer, p_ttl interval, p_actor text, p_metadata jsonb)
 RETURNS SETOF docnum.reservation
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_period     text := '';
    v_head       text := p_type.render_head;
    v_tail       text := p_type.render_tail;
    v_state      text := CASE WHEN p_ttl IS NULL THEN 'confirmed' ELSE 'reserved' END;
    v_expires_at timestamptz := statement_timestamp() + p_ttl;
    v_counter_id bigint;
    v_last       bigint;   -- the highest value this batch has used so far
    v_need       integer := p_count;
    v_done       integer;
    v_issued     docnum.reservation[] := '{}'::docnum.reservation[];
    v_waited     timestamptz;
    v_wait       double precision;   -- seconds this batch waited for its counter (NULL: it did not wait)
    v_bucket     integer;            -- its bucket: docnum.counter.wait_le_10ms ... wait_over_5s
BEGIN
    PERFORM docnum._durable_commit();
    IF p_type.reset <> 'NEVER' THEN
        v_period := docnum._period(p_type.reset, p_date);
    END IF;
    IF strpos(v_head, '{') > 0 THEN
        v_head := replace(to_char(p_date::timestamp, p_type.head_pattern), '{SCOPE}', p_scope);
    END IF;
    IF strpos(v_tail, '{') > 0 THEN
        v_tail := replace(to_char(p_date::timestamp, p_type.tail_pattern), '{SCOPE}', p_scope);
    END IF;

    -- Fast path as in _issue: the turn of an existing counter is free, and the counter has room for the batch:
    -- it is advanced at once. A batch always issues p_count numbers, so the fast path counts them at once, as
    -- _issue does. Without room, the slow path below (which finds the turn already held) explains it.
    SELECT q.counter_id INTO v_counter_id
      FROM docnum.counter_queue q
     WHERE q.document_type = p_type.code AND q.scope_value = p_scope AND q.period = v_period
       FOR UPDATE SKIP LOCKED;
    IF v_counter_id IS NOT NULL THEN
        UPDATE docnum.counter c
           SET current_value = c.current_value + p_count, last_used_at = now(), issued = c.issued + p_count,
               reservations = c.reservations + CASE WHEN p_ttl IS NULL THEN 0 ELSE p_count END,
               allocations = c.allocations + 1
         WHERE c.counter_id = v_counter_id AND c.current_value <= p_type.max_value - p_count
        RETURNING c.current_value - p_count INTO v_last;
    END IF;
    IF v_last IS NULL THEN
        -- Missing, busy or near its end: create it or wait for it (timed), then look at what is left.
        v_waited := clock_timestamp();
        SELECT c.counter_id, c.current_value INTO v_counter_id, v_last
          FROM docnum._lock_counter(p_type, p_scope, v_period) c;
        v_wait := date_part('epoch', clock_timestamp() - v_waited);
        v_bucket := docnum._lock_wait_bucket(v_wait);
    END IF;

    LOOP
        IF v_need > p_type.max_value - v_last THEN
            PERFORM docnum._count_failure(p_type.code, 'NB002');
            RAISE EXCEPTION 'sequence exhausted for %', p_type.code
                USING ERRCODE = 'NB002',
                      DETAIL = pg_catalog.format('Counter %s/%s/%s is at %s; %s more number(s) would pass max_value '
                                                 '%s. Nothing was issued.', p_type.code, p_scope, v_period, v_last,
                                                 v_need, p_type.max_value),
                      HINT = pg_catalog.format('Issue a smaller batch, or raise max_value: SELECT '
                                               'docnum.alter_type(document_type => %L, max_value => ...).',
                                               p_type.code);
        END IF;
        -- Values whose row or text already exists insert nothing: they are skipped and the rest is issued after.
        WITH issued AS (
            INSERT INTO docnum.ledger AS l (document_type, counter_id, sequence_value, document_number, state,
                                            token, actor, metadata, expires_at, confirmed_at, audit_id,
                                            session_user_name, client_addr, application_name)
            SELECT p_type.code, v_counter_id, g.v, v_head || docnum._seq_text(g.v, p_type.seq_width) || v_tail,
                   v_state, CASE WHEN p_ttl IS NOT NULL THEN gen_random_uuid() END, p_actor, p_metadata,
                   v_expires_at, CASE WHEN p_ttl IS NULL THEN now() END,
                   nextval('docnum.audit_log_audit_id_seq'::regclass), session_user, inet_client_addr(),
                   current_setting('application_name')
              FROM generate_series(v_last + 1, v_last + v_need) AS g(v)
             ORDER BY g.v
            ON CONFLICT DO NOTHING
            RETURNING l.token, l.document_number, l.sequence_value, l.expires_at
        )
        SELECT v_issued || coalesce(array_agg(ROW(i.token, i.document_number, i.sequence_value,
                                                  i.expires_at)::docnum.reservation), '{}'), count(*)::integer
          INTO v_issued, v_done
          FROM issued i;
        v_last := v_last + v_need;
        v_need := v_need - v_done;
        EXIT WHEN v_need = 0;
    END LOOP;
    IF v_wait IS NULL THEN
        -- The fast path advanced and counted it already; values skipped since move it further.
        UPDATE docnum.counter c SET current_value = v_last, last_used_at = now()
         WHERE c.counter_id = v_counter_id AND c.current_value <> v_last;
    ELSE
        UPDATE docnum.counter c
           SET current_value = v_last, last_used_at = now(), issued = c.issued + p_count,
               reservations = c.reservations + CASE WHEN p_ttl IS NULL THEN 0 ELSE p_count END,
               allocations = c.allocations + 1,
               wait_le_10ms = c.wait_le_10ms + (v_bucket = 1)::integer,
               wait_le_50ms = c.wait_le_50ms + (v_bucket = 2)::integer,
               wait_le_100ms = c.wait_le_100ms + (v_bucket = 3)::integer,
               wait_le_500ms = c.wait_le_500ms + (v_bucket = 4)::integer,
               wait_le_1s = c.wait_le_1s + (v_bucket = 5)::integer,
               wait_le_2s = c.wait_le_2s + (v_bucket = 6)::integer,
               wait_le_5s = c.wait_le_5s + (v_bucket = 7)::integer,
               wait_over_5s = c.wait_over_5s + (v_bucket = 8)::integer,
               lock_wait_seconds = c.lock_wait_seconds + v_wait
         WHERE c.counter_id = v_counter_id;
    END IF;

    IF v_last > p_type.max_value * 0.9 THEN
        RAISE WARNING 'docnum: % counter % is % used (% of %)', p_type.code,
                pg_catalog.format('(scope %L, period %L)', p_scope, v_period),
                round(v_last * 100.0 / p_type.max_value, 1) || '%', v_last, p_type.max_value
            USING HINT = pg_catalog.format('Plan to raise max_value with docnum.alter_type(%L, max_value => ...).',
                                           p_type.code);
    END IF;
    RETURN QUERY SELECT i.* FROM unnest(v_issued) i ORDER BY i.sequence_value;
END
$function$;
REVOKE ALL ON FUNCTION docnum._issue_batch(docnum.document_type,text,date,integer,interval,text,jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._ledger_transition_check()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
                  HINT = 'Check the number''s state with docnum.number_history().';
    END IF;
    RETURN NEW;
END
$function$;
REVOKE ALL ON FUNCTION docnum._ledger_transition_check() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._prepare(p_code text, p_scope text, p_actor text, p_date date, OUT o_type docnum.document_type, OUT o_scope text, OUT o_date date)
 RETURNS record
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
    IF current_setting('transaction_read_only') = 'on' THEN
        PERFORM docnum._require_writable();
    END IF;
    -- A plain read; on a miss docnum._type() raises what is wrong (NB006 or NB001).
    SELECT t.* INTO o_type FROM docnum.document_type t WHERE t.code = p_code;
    IF NOT FOUND THEN
        o_type := docnum._type(p_code);
    END IF;
    -- The scope rule (docnum._is_scope_value, inlined); docnum._check_scope() explains a refusal.
    IF docnum._has_scope_value(o_type.scope) AND docnum._is_scope_value(p_scope) THEN
        o_scope := p_scope;
    ELSIF p_scope IS NULL AND NOT docnum._has_scope_value(o_type.scope) THEN
        o_scope := '';
    ELSE
        o_scope := docnum._check_scope(o_type, p_scope);
    END IF;
    IF p_actor IS NOT NULL THEN
        PERFORM docnum._check_text('actor', p_actor);
    END IF;
    IF p_date IS NULL THEN
        -- The period comes from the type's time zone, never from the session's TimeZone.
        o_date := (now() AT TIME ZONE o_type.time_zone)::date;
    ELSIF p_date NOT BETWEEN date '1000-01-01' AND date '9999-12-31' THEN
        RAISE EXCEPTION 'invalid document date %', p_date
            USING ERRCODE = 'NB006', COLUMN = 'document_date',
                  DETAIL = 'A document date lies between the years 1000 and 9999.',
                  HINT = 'Pass the date the document is dated, or NULL for today in the type''s time zone.';
    ELSE
        o_date := p_date;
    END IF;
END
$function$;
REVOKE ALL ON FUNCTION docnum._prepare(text,text,text,date) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._raise_lock_timeout(p_type text, p_scope text, p_period text, p_limit_ms bigint)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM docnum._count_failure(p_type, 'NB003');
    RAISE EXCEPTION 'timed out waiting for the % counter', p_type
        USING ERRCODE = 'NB003',
              DETAIL = pg_catalog.format('Counter (%s, %L, %L) was held by another transaction for longer than the '
                                         'lock timeout (%s ms).', p_type, left(p_scope, 64), p_period, p_limit_ms),
              HINT = 'Retry; if it persists, look for a long transaction that allocated from this counter '
                     '(pg_stat_activity, state ''idle in transaction'').';
END
$function$;
REVOKE ALL ON FUNCTION docnum._raise_lock_timeout(text,text,text,bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._type(p_code text)
 RETURNS docnum.document_type
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_type docnum.document_type;
BEGIN
    IF p_code IS NULL OR p_code = '' THEN
        RAISE EXCEPTION 'a document type is required'
            USING ERRCODE = 'NB006', COLUMN = 'document_type', DETAIL = 'document_type was NULL or empty.',
                  HINT = 'Pass the code of a type created with docnum.define_type(), e.g. ''COR''.';
    END IF;
    SELECT t.* INTO v_type FROM docnum.document_type t WHERE t.code = p_code;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'document type % is not defined', quote_literal(left(p_code, 60))
            USING ERRCODE = 'NB001', COLUMN = 'document_type',
                  DETAIL = 'No row in docnum.document_type has this code.',
                  HINT = 'Define it with docnum.define_type(); codes are upper-case, e.g. ''COR''.';
    END IF;
    RETURN v_type;
END
$function$;
REVOKE ALL ON FUNCTION docnum._type(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._void(p_number text, p_actor text, p_reason text, p_operation text)
 RETURNS docnum.ledger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_row docnum.ledger;
BEGIN
    PERFORM docnum._admin_type(NULL, p_actor, p_reason, true, false);
    IF p_number IS NULL OR p_number = '' THEN
        RAISE EXCEPTION 'a document number is required'
            USING ERRCODE = 'NB006', COLUMN = 'document_number',
                  DETAIL = 'document_number was NULL or empty.', HINT = 'Pass the number to void.';
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
    PERFORM docnum._audit(p_operation, v_row.document_type, v_row.document_number,
                          (SELECT nullif(c.scope_value, '') FROM docnum.counter c
                            WHERE c.counter_id = v_row.counter_id),
                          p_actor, jsonb_build_object('state', v_row.state), jsonb_build_object('state', 'voided'),
                          jsonb_build_object('reason', p_reason));
    RETURN v_row;
END
$function$;
REVOKE ALL ON FUNCTION docnum._void(text,text,text,text) FROM PUBLIC;

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
    alter_type.actor := docnum._actor(alter_type.actor);
    PERFORM docnum._require_writable();
    PERFORM docnum._check_text('actor', alter_type.actor);
    PERFORM docnum._check_text('reason', alter_type.reason);
    v_old := docnum._type(alter_type.document_type);
    SELECT t.* INTO STRICT v_old FROM docnum.document_type t WHERE t.code = v_old.code FOR UPDATE;
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
        PERFORM docnum._check_template(v_old.code, v_new.format, v_new.render_head || '{SEQ}' || v_new.render_tail);
        -- A {YY} format cannot take over a resetting counter of a year outside 2000..2099.
        SELECT c.period INTO v_bad
          FROM docnum.counter c
         WHERE c.document_type = v_old.code AND NOT docnum._period_fits(v_new.parse_groups, c.period)
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'format % cannot show period % of %', quote_literal(left(alter_type.format, 60)),
                    v_bad.period, v_old.code
                USING ERRCODE = 'NB006', COLUMN = 'format',
                      DETAIL = '{YY} reads back as a year of 2000..2099, and the type has a counter of another '
                               'year.',
                      HINT = 'Keep {YYYY} in the format.';
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
            RAISE EXCEPTION 'format % would make % ambiguous', quote_literal(left(alter_type.format, 60)),
                    quote_literal(left(v_bad.document_number, 60))
                USING ERRCODE = 'NB006', COLUMN = 'format',
                      DETAIL = pg_catalog.format('Existing number %s (type %s) would read as a different %s number.',
                                                 left(v_bad.document_number, 60), v_bad.document_type,
                                                 v_old.code),
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
            USING ERRCODE = 'NB006', COLUMN = 'max_value',
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
    PERFORM docnum._audit('ALTER_TYPE', v_old.code, NULL, NULL, alter_type.actor, docnum._type_json(v_old),
                          docnum._type_json(v_new),
                          CASE WHEN alter_type.reason IS NULL THEN NULL
                               ELSE jsonb_build_object('reason', alter_type.reason) END);
    RETURN v_new;
END
$function$;
REVOKE ALL ON FUNCTION docnum.alter_type(text,text,text,bigint,interval,interval,boolean,jsonb,text,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.alter_type(text,text,text,bigint,interval,interval,boolean,jsonb,text,text) TO docnum_admin;

CREATE OR REPLACE FUNCTION docnum.cancel_number(token uuid, actor text DEFAULT NULL::text, reason text DEFAULT NULL::text)
 RETURNS text
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_row docnum.ledger;
BEGIN
    cancel_number.actor := docnum._actor(cancel_number.actor);
    PERFORM docnum._require_writable();
    IF cancel_number.token IS NULL THEN
        RAISE EXCEPTION 'a reservation token is required'
            USING ERRCODE = 'NB006', COLUMN = 'token', DETAIL = 'token was NULL.',
                  HINT = 'Pass the token returned by docnum.reserve_number().';
    END IF;
    PERFORM docnum._check_text('actor', cancel_number.actor);
    PERFORM docnum._check_text('reason', cancel_number.reason);

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
    PERFORM docnum._audit('CANCEL', v_row.document_type, v_row.document_number, nullif(c.scope_value, ''),
                          cancel_number.actor, jsonb_build_object('state', 'reserved'),
                          jsonb_build_object('state', 'cancelled', 'reason', cancel_number.reason), NULL)
      FROM docnum.counter c WHERE c.counter_id = v_row.counter_id;
    RETURN v_row.document_number;
END
$function$;
REVOKE ALL ON FUNCTION docnum.cancel_number(uuid,text,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.cancel_number(uuid,text,text) TO docnum_app;

CREATE OR REPLACE FUNCTION docnum.confirm_number(token uuid, actor text DEFAULT NULL::text, document_ref text DEFAULT NULL::text)
 RETURNS text
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_row docnum.ledger;
BEGIN
    confirm_number.actor := docnum._actor(confirm_number.actor);
    PERFORM docnum._require_writable();
    IF confirm_number.token IS NULL THEN
        RAISE EXCEPTION 'a reservation token is required'
            USING ERRCODE = 'NB006', COLUMN = 'token', DETAIL = 'token was NULL.',
                  HINT = 'Pass the token returned by docnum.reserve_number().';
    END IF;
    PERFORM docnum._check_text('actor', confirm_number.actor);
    PERFORM docnum._check_text('document_ref', confirm_number.document_ref);

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
                  DETAIL = CASE WHEN v_row.state = 'cancelled'
                                THEN pg_catalog.format('It was cancelled at %s.', v_row.cancelled_at)
                                ELSE pg_catalog.format('It expired at %s.', v_row.expires_at) END,
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
    PERFORM docnum._audit('CONFIRM', v_row.document_type, v_row.document_number, nullif(c.scope_value, ''),
                          confirm_number.actor, jsonb_build_object('state', 'reserved'),
                          jsonb_build_object('state', 'confirmed', 'document_ref', confirm_number.document_ref), NULL)
      FROM docnum.counter c WHERE c.counter_id = v_row.counter_id;
    RETURN v_row.document_number;
END
$function$;
REVOKE ALL ON FUNCTION docnum.confirm_number(uuid,text,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.confirm_number(uuid,text,text) TO docnum_app;

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
    define_type.actor := docnum._actor(define_type.actor);
    PERFORM docnum._require_writable();
    IF define_type.code IS NULL OR define_type.code !~ '^[A-Z][A-Z0-9_]{0,29}$' THEN
        RAISE EXCEPTION 'invalid document type code %', coalesce(quote_literal(left(define_type.code, 60)), 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'code',
                  DETAIL = 'A code is an upper-case identifier: a letter, then letters, digits or _ (30 at most).',
                  HINT = 'For example ''COR'' or ''RFA_2''.';
    END IF;
    IF v_scope IS NULL OR v_scope NOT IN ('GLOBAL', 'PROJECT', 'CONTRACT', 'YEARLY', 'MONTHLY') THEN
        RAISE EXCEPTION 'invalid scope %', coalesce(quote_literal(left(define_type.scope, 60)), 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'scope',
                  DETAIL = 'scope is one of GLOBAL, PROJECT, CONTRACT, YEARLY, MONTHLY.',
                  HINT = 'PROJECT and CONTRACT take a scope value at allocation; YEARLY and MONTHLY reset.';
    END IF;
    IF v_reset IS NULL THEN
        v_reset := CASE v_scope WHEN 'YEARLY' THEN 'YEARLY' WHEN 'MONTHLY' THEN 'MONTHLY' ELSE 'NEVER' END;
    ELSIF v_reset NOT IN ('NEVER', 'YEARLY', 'MONTHLY')
          OR (v_scope IN ('YEARLY', 'MONTHLY') AND v_reset <> v_scope) THEN
        RAISE EXCEPTION 'invalid reset % for scope %', quote_literal(left(define_type.reset, 60)),
                left(v_scope, 60)
            USING ERRCODE = 'NB006', COLUMN = 'reset',
                  DETAIL = 'reset is NEVER, YEARLY or MONTHLY; a YEARLY or MONTHLY scope implies its own reset.',
                  HINT = 'For a per-project counter restarting each year: scope => ''PROJECT'', reset => ''YEARLY''.';
    END IF;
    PERFORM docnum._check_type_settings(define_type.time_zone, define_type.max_value, define_type.reservation_ttl,
                                        define_type.lock_timeout, define_type.metadata);
    PERFORM docnum._check_text('actor', define_type.actor);
    IF define_type.allow_manual_override IS NULL THEN
        RAISE EXCEPTION 'allow_manual_override cannot be NULL'
            USING ERRCODE = 'NB006', COLUMN = 'allow_manual_override',
                  DETAIL = 'It is true or false.', HINT = 'The default is false.';
    END IF;

    v_compiled := docnum._compile_format(define_type.code, define_type.format, v_scope, v_reset);

    v_new.code := define_type.code;
    v_new.format := define_type.format;
    v_new.scope := v_scope;
    v_new.reset := v_reset;
    v_new.time_zone := define_type.time_zone;
    v_new.max_value := coalesce(define_type.max_value,
                                CASE WHEN v_compiled.seq_width = 0 THEN 9223372036854775806
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
                  DETAIL = pg_catalog.format('Existing: %s', left(docnum._type_json(v_existing)::text, 1000)),
                  HINT = 'Change it with docnum.alter_type(); scope and reset cannot change.';
    END IF;
    -- Two counters never render the same text: not within this template, nor beside any other type's (current or
    -- former) template. See the rule in 20_format.sql.
    PERFORM docnum._check_template(v_new.code, v_new.format, v_new.render_head || '{SEQ}' || v_new.render_tail);

    INSERT INTO docnum.document_type (code, format, scope, reset, time_zone, max_value, reservation_ttl,
                                      lock_timeout, allow_manual_override, metadata, created_at, updated_at,
                                      render_head, render_tail, seq_width, parse_pattern, parse_groups)
    VALUES (v_new.code, v_new.format, v_new.scope, v_new.reset, v_new.time_zone, v_new.max_value,
            v_new.reservation_ttl, v_new.lock_timeout, v_new.allow_manual_override, v_new.metadata,
            v_new.created_at, v_new.updated_at, v_new.render_head, v_new.render_tail, v_new.seq_width,
            v_new.parse_pattern, v_new.parse_groups)
    RETURNING * INTO v_new;
    PERFORM docnum._create_failure_sequences(v_new.code);
    PERFORM docnum._audit('DEFINE_TYPE', v_new.code, NULL, NULL, define_type.actor, NULL, docnum._type_json(v_new),
                          NULL);
    RETURN v_new;
END
$function$;
REVOKE ALL ON FUNCTION docnum.define_type(text,text,text,text,text,bigint,interval,interval,boolean,jsonb,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.define_type(text,text,text,text,text,bigint,interval,interval,boolean,jsonb,text) TO docnum_admin;

CREATE OR REPLACE FUNCTION docnum.find_request(request_id text)
 RETURNS TABLE(document_type text, document_number text, state text, token uuid, expires_at timestamp with time zone, issued_at timestamp with time zone)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF find_request.request_id IS NULL THEN
        RAISE EXCEPTION 'a request key is required'
            USING ERRCODE = 'NB006', COLUMN = 'request_id', DETAIL = 'request_id was NULL.',
                  HINT = 'Pass the request_id given to docnum.reserve_number() or docnum.next_number().';
    END IF;
    PERFORM docnum._check_text('request_id', find_request.request_id);
    RETURN QUERY
    SELECT l.document_type, l.document_number, l.state, l.token, l.expires_at, l.issued_at
      FROM docnum.ledger l WHERE l.request_id = find_request.request_id;
END
$function$;
REVOKE ALL ON FUNCTION docnum.find_request(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.find_request(text) TO docnum_app;

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
    v_limit_ms bigint;
BEGIN
    import_numbers.actor := docnum._actor(import_numbers.actor);
    PERFORM docnum._require_writable();
    PERFORM docnum._check_text('actor', import_numbers.actor);
    IF import_numbers.rows IS NULL OR jsonb_typeof(import_numbers.rows) <> 'array' THEN
        RAISE EXCEPTION 'rows must be a JSON array'
            USING ERRCODE = 'NB006', COLUMN = 'rows', DETAIL = 'import_numbers takes an array of objects.',
                  HINT = '[{"document_type": "COR", "document_number": "COR-2019-00042"}, ...]';
    END IF;
    -- One call is one transaction holding every counter it touches, and writes rows nobody can delete: a batch
    -- has at most 10,000 of them (docnum import sends 5,000 at a time).
    IF jsonb_array_length(import_numbers.rows) > 10000 THEN
        RAISE EXCEPTION 'too many rows: %', jsonb_array_length(import_numbers.rows)
            USING ERRCODE = 'NB006', COLUMN = 'rows',
                  DETAIL = 'import_numbers takes at most 10000 rows per call.',
                  HINT = 'Split the rows into batches; importing a row again is harmless.';
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
                   WHEN f.number = '' OR length(f.number) > docnum._text_limit('document_number') OR docnum._has_invisible(f.number)
                       THEN 'invalid document number'
                   WHEN p.sequence_value IS NULL THEN 'does not match the format ' || t.format
                   WHEN docnum._has_scope_value(t.scope) AND NOT docnum._is_scope_value(p.scope_value)
                       THEN 'invalid scope value'
                   WHEN p.sequence_value > t.max_value THEN 'sequence value above max_value ' || t.max_value
                   WHEN f.created_at IS NOT NULL AND docnum._to_timestamptz(f.created_at) IS NULL
                       THEN 'invalid created_at ' || quote_literal(left(f.created_at, 40))
                   WHEN length(f.document_ref) > docnum._text_limit('document_ref') OR docnum._has_invisible(f.document_ref)
                       THEN 'invalid document_ref: 1 to 500 characters without control or invisible format '
                            'characters'
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
    v_limit_ms := docnum._lock_limit_ms(v_lock_timeout);
    PERFORM docnum._set_lock_timeout(v_limit_ms::text);
    BEGIN
        -- Only missing counters are inserted (ON CONFLICT alone would use up an identity value for each existing
        -- one). Creating a counter can wait: for another transaction that is creating the same one.
        INSERT INTO docnum.counter AS c (document_type, scope_value, period)
        SELECT DISTINCT r.document_type, r.scope_value, r.period
          FROM unnest(v_rows) r
         WHERE r.problem IS NULL
           AND NOT EXISTS (SELECT FROM docnum.counter c2
                            WHERE c2.document_type = r.document_type AND c2.scope_value = r.scope_value
                              AND c2.period = r.period)
        ON CONFLICT ON CONSTRAINT counter_key DO NOTHING;
        -- The counters' turns (see docnum._lock_counter), in id order: an allocation waits for this import in its
        -- counter's queue, under its own lock limit.
        PERFORM FROM docnum.counter_queue q
         WHERE q.counter_id IN (SELECT c2.counter_id
                                  FROM unnest(v_rows) r
                                  JOIN docnum.counter c2
                                    ON c2.document_type = r.document_type AND c2.scope_value = r.scope_value
                                   AND c2.period = r.period
                                 WHERE r.problem IS NULL)
         ORDER BY q.counter_id
           FOR UPDATE;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'timed out waiting for a counter to import into'
            USING ERRCODE = 'NB003',
                  DETAIL = pg_catalog.format('Another transaction held one of the counters of this batch for longer '
                                             'than the lock timeout (%s ms).', v_limit_ms),
                  HINT = 'Retry the import; it changes nothing until it succeeds.';
    END;
    PERFORM docnum._set_lock_timeout(v_session_lock_timeout);
    -- Then the counters themselves, outside the subtransaction above (see docnum._lock_counter: no MultiXact on
    -- a counter row), free now unless a writer that did not take their turns holds one.
    PERFORM FROM docnum.counter c
     WHERE c.counter_id IN (SELECT c2.counter_id
                              FROM unnest(v_rows) r
                              JOIN docnum.counter c2
                                ON c2.document_type = r.document_type AND c2.scope_value = r.scope_value
                               AND c2.period = r.period
                             WHERE r.problem IS NULL)
     ORDER BY c.counter_id
       FOR NO KEY UPDATE;

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
        -- One audit row per imported number. Reading this CTE below is what runs it (a plain SELECT in WITH
        -- runs only when read).
        SELECT count(docnum._audit('IMPORT', i.document_type, i.document_number, nullif(c.scope_value, ''),
                                   import_numbers.actor, NULL,
                                   jsonb_build_object('state', 'imported', 'sequence_value', i.sequence_value,
                                                      'period', c.period, 'document_ref', i.document_ref),
                                   jsonb_build_object('source', 'import'))) AS written
          FROM inserted i JOIN docnum.counter c ON c.counter_id = i.counter_id
    )
    SELECT k.row_number, k.document_type, k.document_number, k.status, k.detail
      FROM classified k
     CROSS JOIN audited
     ORDER BY k.row_number;
END
$function$;
REVOKE ALL ON FUNCTION docnum.import_numbers(jsonb,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.import_numbers(jsonb,text) TO docnum_admin;

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
    override_number.actor := docnum._actor(override_number.actor);
    v_type := docnum._admin_type(override_number.document_type, override_number.actor, override_number.reason, true);
    PERFORM docnum._check_text('document_number', override_number.document_number);
    IF override_number.document_number IS NULL THEN
        RAISE EXCEPTION 'a document number is required'
            USING ERRCODE = 'NB006', COLUMN = 'document_number',
                  DETAIL = 'document_number was NULL.', HINT = 'Pass the number to record.';
    END IF;
    IF override_number.skip_validation IS NULL THEN
        RAISE EXCEPTION 'skip_validation cannot be NULL'
            USING ERRCODE = 'NB006', COLUMN = 'skip_validation',
                  DETAIL = 'It is true or false.', HINT = 'The default is false.';
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
        RAISE EXCEPTION 'number % does not match the format of %', quote_literal(left(override_number.document_number, 60)),
                v_type.code
            USING ERRCODE = 'NB006', COLUMN = 'document_number',
                  DETAIL = pg_catalog.format('The format is %s.', v_type.format),
                  HINT = 'Correct the number, or pass skip_validation => true to record it without a counter.';
    END IF;
    IF v_parsed.sequence_value IS NOT NULL THEN
        PERFORM docnum._check_scope(v_type, nullif(v_parsed.scope_value, ''), 'document_number');
        IF v_parsed.sequence_value > v_type.max_value THEN
            RAISE EXCEPTION 'number % is above max_value % of %', override_number.document_number,
                    v_type.max_value, v_type.code
                USING ERRCODE = 'NB006', COLUMN = 'document_number',
                      DETAIL = 'Its sequence value would exhaust the counter.',
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

    PERFORM docnum._audit('MANUAL_OVERRIDE', v_type.code, override_number.document_number,
                          nullif(v_parsed.scope_value, ''), override_number.actor,
                          CASE WHEN v_counter.counter_id IS NOT NULL
                               THEN jsonb_build_object('counter_value', v_counter.current_value) END,
                          jsonb_build_object('state', 'overridden', 'sequence_value', v_parsed.sequence_value,
                                             'period', v_parsed.period,
                                             'counter_value', greatest(v_counter.current_value,
                                                                       v_parsed.sequence_value)),
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
DECLARE
    v_problem text;
    v_schema  name;
    v_table   name;
BEGIN
    register_document_table.actor := docnum._actor(register_document_table.actor);
    PERFORM docnum._admin_type(NULL, register_document_table.actor, NULL, false, false);
    IF register_document_table.table_name IS NULL OR register_document_table.number_column IS NULL THEN
        RAISE EXCEPTION 'a table and a column are required'
            USING ERRCODE = 'NB006',
                  COLUMN = CASE WHEN register_document_table.table_name IS NULL THEN 'table_name'
                                ELSE 'number_column' END,
                  DETAIL = 'table_name or number_column was NULL.',
                  HINT = 'Name both: docnum.register_document_table(''schema.table'', ''document_number'').';
    END IF;
    -- Only the catalog is read here: nothing of the table itself runs.
    v_problem := docnum._document_table_problem(register_document_table.table_name,
                                                register_document_table.number_column);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'cannot register % as a document table', register_document_table.table_name
            USING ERRCODE = 'NB006', COLUMN = 'table_name', DETAIL = v_problem || '.',
                  HINT = 'Register an ordinary (or partitioned) table of the application, without row level '
                         'security, whose number column is of type text or varchar.';
    END IF;
    SELECT n.nspname, c.relname INTO STRICT v_schema, v_table
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = register_document_table.table_name;
    INSERT INTO docnum.document_table AS d (schema_name, table_name, number_column)
    VALUES (v_schema, v_table, register_document_table.number_column)
    ON CONFLICT ON CONSTRAINT document_table_pkey DO UPDATE SET number_column = EXCLUDED.number_column;
    PERFORM docnum._audit('REGISTER_TABLE', NULL, NULL, NULL, register_document_table.actor, NULL,
                          jsonb_build_object('table', pg_catalog.format('%I.%I', v_schema, v_table),
                                             'schema_name', v_schema, 'table_name', v_table,
                                             'number_column', register_document_table.number_column),
                          NULL);
END
$function$;
REVOKE ALL ON FUNCTION docnum.register_document_table(regclass,name,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.register_document_table(regclass,name,text) TO docnum_admin;

CREATE OR REPLACE FUNCTION docnum.reserve_number(document_type text, scope text DEFAULT NULL::text, actor text DEFAULT NULL::text, metadata jsonb DEFAULT NULL::jsonb, ttl interval DEFAULT NULL::interval, document_date date DEFAULT NULL::date, request_id text DEFAULT NULL::text)
 RETURNS docnum.reservation
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_prepared record;
    v_ttl interval;
    v_done docnum.reservation;
    v_digest text;
BEGIN
    reserve_number.actor := docnum._actor(reserve_number.actor);
    v_prepared := docnum._prepare(reserve_number.document_type, reserve_number.scope, reserve_number.actor,
                                  reserve_number.document_date);
    IF reserve_number.request_id IS NOT NULL THEN
        v_digest := docnum._request_digest(jsonb_build_array(
            'reserve_number', reserve_number.document_type, reserve_number.scope, reserve_number.actor,
            reserve_number.metadata, reserve_number.ttl, reserve_number.document_date));
        v_done := docnum._replay(reserve_number.request_id, v_prepared.o_type, v_prepared.o_scope, true,
                                 v_digest);
        IF v_done.document_number IS NOT NULL THEN
            RETURN v_done;
        END IF;
    END IF;
    v_ttl := coalesce(reserve_number.ttl, (v_prepared.o_type).reservation_ttl);
    IF v_ttl <= interval '0' OR v_ttl > interval '7 days' THEN
        RAISE EXCEPTION 'invalid reservation ttl %', left(v_ttl::text, 60)
            USING ERRCODE = 'NB006', COLUMN = 'ttl', DETAIL = 'A reservation lasts more than 0 and at most 7 days.',
                  HINT = 'Pass ttl => interval ''10 minutes'', or NULL for the type''s default.';
    END IF;
    PERFORM docnum._check_metadata('metadata', reserve_number.metadata);
    RETURN docnum._issue(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, 'reserved',
                         gen_random_uuid(), statement_timestamp() + v_ttl, reserve_number.actor, NULL,
                         reserve_number.metadata, reserve_number.request_id, v_digest);
END
$function$;
REVOKE ALL ON FUNCTION docnum.reserve_number(text,text,text,jsonb,interval,date,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.reserve_number(text,text,text,jsonb,interval,date,text) TO docnum_app;

CREATE OR REPLACE FUNCTION docnum.reserve_numbers(document_type text, count integer, scope text DEFAULT NULL::text, actor text DEFAULT NULL::text, metadata jsonb DEFAULT NULL::jsonb, ttl interval DEFAULT NULL::interval, document_date date DEFAULT NULL::date)
 RETURNS SETOF docnum.reservation
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_prepared record;
    v_ttl interval;
BEGIN
    reserve_numbers.actor := docnum._actor(reserve_numbers.actor);
    v_prepared := docnum._prepare(reserve_numbers.document_type, reserve_numbers.scope, reserve_numbers.actor,
                                  reserve_numbers.document_date);
    PERFORM docnum._check_count(reserve_numbers.count);
    v_ttl := coalesce(reserve_numbers.ttl, (v_prepared.o_type).reservation_ttl);
    IF v_ttl <= interval '0' OR v_ttl > interval '7 days' THEN
        RAISE EXCEPTION 'invalid reservation ttl %', left(v_ttl::text, 60)
            USING ERRCODE = 'NB006', COLUMN = 'ttl', DETAIL = 'A reservation lasts more than 0 and at most 7 days.',
                  HINT = 'Pass ttl => interval ''10 minutes'', or NULL for the type''s default.';
    END IF;
    PERFORM docnum._check_metadata('metadata', reserve_numbers.metadata, reserve_numbers.count);
    RETURN QUERY
    SELECT b.* FROM docnum._issue_batch(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date,
                                        reserve_numbers.count, v_ttl, reserve_numbers.actor,
                                        reserve_numbers.metadata) b;
END
$function$;
REVOKE ALL ON FUNCTION docnum.reserve_numbers(text,integer,text,text,jsonb,interval,date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.reserve_numbers(text,integer,text,text,jsonb,interval,date) TO docnum_app;

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
    set_counter.actor := docnum._actor(set_counter.actor);
    v_type := docnum._admin_type(set_counter.document_type, set_counter.actor, set_counter.reason, true);
    v_scope := docnum._check_scope(v_type, set_counter.scope);
    IF set_counter.value IS NULL OR set_counter.value < 0 OR set_counter.value > v_type.max_value THEN
        RAISE EXCEPTION 'invalid counter value %', coalesce(set_counter.value::text, 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'value',
                  DETAIL = pg_catalog.format('A counter value lies between 0 and max_value %s.', v_type.max_value),
                  HINT = 'The next number issued is value + 1 (or the first value after it with no ledger row).';
    END IF;
    v_period := coalesce(set_counter.period,
                         docnum._period(v_type.reset, (now() AT TIME ZONE v_type.time_zone)::date));
    IF (v_type.reset = 'NEVER' AND v_period <> '')
       OR (v_type.reset = 'YEARLY' AND v_period !~ '^[1-9][0-9]{3}$')
       OR (v_type.reset = 'MONTHLY' AND v_period !~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])$') THEN
        RAISE EXCEPTION 'invalid period % for a % reset', quote_literal(left(v_period, 20)), v_type.reset
            USING ERRCODE = 'NB006', COLUMN = 'period',
                  DETAIL = 'Periods are '''' (NEVER), ''2025'' (YEARLY) or ''2025-10'' (MONTHLY), years 1000 to 9999.',
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
    PERFORM docnum._audit('SET_COUNTER', v_type.code, NULL, nullif(v_scope, ''), set_counter.actor,
                          jsonb_build_object('period', v_period, 'value', v_counter.current_value),
                          jsonb_build_object('period', v_period, 'value', set_counter.value),
                          jsonb_build_object('reason', set_counter.reason));
    RETURN set_counter.value;
END
$function$;
REVOKE ALL ON FUNCTION docnum.set_counter(text,text,text,bigint,text,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.set_counter(text,text,text,bigint,text,text) TO docnum_admin;

CREATE OR REPLACE FUNCTION docnum.void_and_replace(document_number text, actor text DEFAULT NULL::text, reason text DEFAULT NULL::text)
 RETURNS text
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_old    docnum.ledger;
    v_type   docnum.document_type;
    v_parsed record;
    v_new    docnum.reservation;
    v_new_id bigint;
BEGIN
    void_and_replace.actor := docnum._actor(void_and_replace.actor);
    v_old := docnum._void(void_and_replace.document_number, void_and_replace.actor, void_and_replace.reason,
                          'VOID');
    IF v_old.counter_id IS NULL THEN
        RAISE EXCEPTION 'number % has no counter to replace it from', void_and_replace.document_number
            USING ERRCODE = 'NB006', COLUMN = 'document_number',
                  DETAIL = 'It was recorded with skip_validation and does not match its format.',
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
                           jsonb_build_object('replaces', v_old.document_number, 'reason', void_and_replace.reason));
    SELECT l.number_id INTO STRICT v_new_id FROM docnum.ledger l WHERE l.document_number = v_new.document_number;
    UPDATE docnum.ledger l SET replaced_by_number_id = v_new_id WHERE l.number_id = v_old.number_id;
    UPDATE docnum.ledger l SET replaces_number_id = v_old.number_id WHERE l.number_id = v_new_id;
    PERFORM docnum._audit('REPLACE_LINK', v_type.code, v_old.document_number, nullif(v_parsed.scope_value, ''),
                          void_and_replace.actor, NULL, jsonb_build_object('replaced_by', v_new.document_number),
                          jsonb_build_object('reason', void_and_replace.reason));
    RETURN v_new.document_number;
END
$function$;
REVOKE ALL ON FUNCTION docnum.void_and_replace(text,text,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.void_and_replace(text,text,text) TO docnum_admin;


RESET ROLE;
