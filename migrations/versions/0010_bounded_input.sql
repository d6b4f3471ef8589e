-- Revision 0010: what one call may store is bounded, and a request key names the whole request.
-- Ledger and audit rows are never deleted, so an unbounded argument was a way to fill the disk for good:
-- metadata is now a JSON object of at most 8192 bytes (docnum._check_metadata), a batch stores at most 1 MiB of
-- it in all, and import_numbers takes at most 10,000 rows a call. A number issued with a request_id keeps the
-- digest of the call's arguments (docnum._request_digest, in the new last column ledger.request_digest), and a
-- retry with the same key but other arguments is refused (NB012) instead of answered with what the first call
-- got; numbers issued before this revision have no digest and replay as before. Two messages say what happened:
-- an unknown format token lists the tokens, and confirming a cancelled reservation says it was cancelled.

SET LOCAL ROLE docnum_owner;

CALL pg_temp.docnum_alter_table('docnum.ledger', $alter$
    ADD COLUMN request_digest text
$alter$);

DROP FUNCTION docnum._replay(text,docnum.document_type,text,boolean);
DROP FUNCTION docnum._issue(docnum.document_type,text,date,text,uuid,timestamp with time zone,text,text,jsonb,text);

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
    IF docnum._has_invisible(p_format) OR length(p_format) > 200 THEN
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
    IF p_scope IN ('PROJECT', 'CONTRACT') AND NOT 'SCOPE' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a % scope: no {SCOPE}', quote_literal(left(p_format, 60)),
                p_scope
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'Each scope value has its own counter, so the scope must be part of the number.',
                  HINT = 'Add {SCOPE}, e.g. {SCOPE}/{TYPE}/{SEQ:4}.';
    END IF;
    IF p_scope NOT IN ('PROJECT', 'CONTRACT') AND 'SCOPE' = ANY (v_tokens) THEN
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

CREATE OR REPLACE FUNCTION docnum._replay(p_request_id text, p_type docnum.document_type, p_scope text, p_reserve boolean, p_digest text)
 RETURNS docnum.reservation
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_row   docnum.ledger;
    v_scope text;
BEGIN
    PERFORM docnum._check_text('request_id', p_request_id, 200);
    SELECT l.* INTO v_row FROM docnum.ledger l WHERE l.request_id = p_request_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT c.scope_value INTO v_scope FROM docnum.counter c WHERE c.counter_id = v_row.counter_id;
    IF v_row.document_type <> p_type.code OR v_scope IS DISTINCT FROM p_scope
       OR (v_row.token IS NOT NULL) <> p_reserve THEN
        RAISE EXCEPTION 'request key % was used for another request', quote_literal(left(p_request_id, 64))
            USING ERRCODE = 'NB012',
                  DETAIL = pg_catalog.format('It was used by %s for %s, scope %L.',
                                             CASE WHEN v_row.token IS NULL THEN 'next_number' ELSE 'reserve_number' END,
                                             v_row.document_type, nullif(v_scope, '')),
                  HINT = 'A request key names one request: use a new key for a new request.';
    END IF;
    IF v_row.request_digest <> p_digest THEN
        RAISE EXCEPTION 'request key % was used with other arguments', quote_literal(left(p_request_id, 64))
            USING ERRCODE = 'NB012',
                  DETAIL = pg_catalog.format('It was used by %s for %s, which issued %s; a retry repeats every '
                                             'argument of the call (actor, document_ref, metadata, ttl, '
                                             'document_date).',
                                             CASE WHEN v_row.token IS NULL THEN 'next_number' ELSE 'reserve_number' END,
                                             v_row.document_type, v_row.document_number),
                  HINT = 'A request key names one request: use a new key for a new request.';
    END IF;
    RETURN ROW(v_row.token, v_row.document_number, v_row.sequence_value, v_row.expires_at)::docnum.reservation;
END
$function$;
REVOKE ALL ON FUNCTION docnum._replay(text,docnum.document_type,text,boolean,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum.confirm_number(token uuid, actor text DEFAULT NULL::text, document_ref text DEFAULT NULL::text)
 RETURNS text
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_row docnum.ledger;
BEGIN
    IF confirm_number.actor IS NULL AND current_setting('request.jwt.claims', true) <> '' THEN
        confirm_number.actor := docnum._claimed_actor();
    END IF;
    PERFORM docnum._require_writable();
    IF confirm_number.token IS NULL THEN
        RAISE EXCEPTION 'a reservation token is required'
            USING ERRCODE = 'NB006', COLUMN = 'token', DETAIL = 'token was NULL.',
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
    IF import_numbers.actor IS NULL AND current_setting('request.jwt.claims', true) <> '' THEN
        import_numbers.actor := docnum._claimed_actor();
    END IF;
    PERFORM docnum._require_writable();
    PERFORM docnum._check_text('actor', import_numbers.actor, 200);
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
                   WHEN f.number = '' OR length(f.number) > 300 OR docnum._has_invisible(f.number)
                       THEN 'invalid document number'
                   WHEN p.sequence_value IS NULL THEN 'does not match the format ' || t.format
                   WHEN t.scope IN ('PROJECT', 'CONTRACT') AND NOT docnum._is_scope_value(p.scope_value)
                       THEN 'invalid scope value'
                   WHEN p.sequence_value > t.max_value THEN 'sequence value above max_value ' || t.max_value
                   WHEN f.created_at IS NOT NULL AND docnum._to_timestamptz(f.created_at) IS NULL
                       THEN 'invalid created_at ' || quote_literal(left(f.created_at, 40))
                   WHEN length(f.document_ref) > 500 OR docnum._has_invisible(f.document_ref)
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

CREATE OR REPLACE FUNCTION docnum.next_number(document_type text, scope text DEFAULT NULL::text, actor text DEFAULT NULL::text, document_ref text DEFAULT NULL::text, document_date date DEFAULT NULL::date, request_id text DEFAULT NULL::text)
 RETURNS text
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_prepared record;
    v_digest text;
BEGIN
    IF next_number.actor IS NULL AND current_setting('request.jwt.claims', true) <> '' THEN
        next_number.actor := docnum._claimed_actor();
    END IF;
    v_prepared := docnum._prepare(next_number.document_type, next_number.scope, next_number.actor,
                                  next_number.document_date);
    IF next_number.document_ref IS NOT NULL THEN
        PERFORM docnum._check_text('document_ref', next_number.document_ref, 500);
    END IF;
    IF next_number.request_id IS NOT NULL THEN
        v_digest := docnum._request_digest(jsonb_build_array(
            'next_number', next_number.document_type, next_number.scope, next_number.actor,
            next_number.document_ref, next_number.document_date));
        RETURN coalesce((docnum._replay(next_number.request_id, v_prepared.o_type, v_prepared.o_scope,
                                        false, v_digest)).document_number,
                        (docnum._issue(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, 'confirmed', NULL,
                                       NULL, next_number.actor, next_number.document_ref, NULL,
                                       next_number.request_id, v_digest)).document_number);
    END IF;
    RETURN (docnum._issue(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, 'confirmed', NULL, NULL,
                          next_number.actor, next_number.document_ref, NULL)).document_number;
END
$function$;
REVOKE ALL ON FUNCTION docnum.next_number(text,text,text,text,date,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.next_number(text,text,text,text,date,text) TO docnum_app;

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
    IF register_document_table.actor IS NULL AND current_setting('request.jwt.claims', true) <> '' THEN
        register_document_table.actor := docnum._claimed_actor();
    END IF;
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
    IF reserve_number.actor IS NULL AND current_setting('request.jwt.claims', true) <> '' THEN
        reserve_number.actor := docnum._claimed_actor();
    END IF;
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
    IF reserve_numbers.actor IS NULL AND current_setting('request.jwt.claims', true) <> '' THEN
        reserve_numbers.actor := docnum._claimed_actor();
    END IF;
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

CREATE OR REPLACE FUNCTION docnum._request_digest(p_arguments jsonb)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
RETURN md5((p_arguments)::text);
REVOKE ALL ON FUNCTION docnum._request_digest(jsonb) FROM PUBLIC;


RESET ROLE;
