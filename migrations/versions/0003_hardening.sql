-- Revision 0003, frozen: released migrations are immutable, do not edit.
-- Hardening. Counters are excluded by their row lock, which only docnum's functions can take, with the advisory
-- lock kept only as a bounded fair-queue hint; every writing transaction commits with synchronous_commit at least
-- 'on'; reserve_number and next_number take a request key (ledger.request_id, find_request); one rule refuses
-- invisible characters; import reads only real timestamps; max_value stops at 2^63 - 2; templates are checked to
-- render injectively across types; reports read registered tables with the caller's rights (document_table holds
-- names, not oids); gaps() returns ranges.

SET LOCAL ROLE docnum_owner;

-- max_value: at most 2^63 - 2, so that the value after the last one is still a bigint (NB002, not 22003).
-- The unpadded default was 2^63 - 1; types that have it move down by one, audited.
INSERT INTO docnum.audit_log (operation, document_type, actor, old_value, new_value, metadata)
SELECT 'ALTER_TYPE', t.code, 'migration 0003', jsonb_build_object('max_value', t.max_value),
       jsonb_build_object('max_value', 9223372036854775806),
       jsonb_build_object('reason', 'max_value is at most 2^63 - 2 from revision 0003 on')
  FROM docnum.document_type t WHERE t.max_value > 9223372036854775806;
UPDATE docnum.document_type SET max_value = 9223372036854775806 WHERE max_value > 9223372036854775806;
ALTER TABLE docnum.document_type DROP CONSTRAINT document_type_max_value_check,
    ADD CONSTRAINT document_type_max_value_check CHECK (max_value BETWEEN 1 AND 9223372036854775806);

-- Request keys.
ALTER TABLE docnum.ledger ADD COLUMN request_id text;
CREATE UNIQUE INDEX ledger_request_id_key ON docnum.ledger (request_id) WHERE request_id IS NOT NULL;

-- Registered application tables by name. A registration whose table no longer exists has no name left to keep.
-- (Through a variable: the new table's constraints take the old names, so the old table goes first.)
CREATE FUNCTION docnum._migrate_0003_document_table() RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_rows jsonb;
BEGIN
    SELECT jsonb_agg(jsonb_build_object('schema_name', n.nspname, 'table_name', c.relname,
                                        'number_column', d.number_column, 'registered_at', d.registered_at))
      INTO v_rows
      FROM docnum.document_table d
      JOIN pg_catalog.pg_class c ON c.oid = d.table_name
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;
    DROP TABLE docnum.document_table;
    CREATE TABLE docnum.document_table (
        schema_name   name NOT NULL,
        table_name    name NOT NULL,
        number_column name NOT NULL,
        registered_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT document_table_pkey PRIMARY KEY (schema_name, table_name)
    );
    INSERT INTO docnum.document_table (schema_name, table_name, number_column, registered_at)
    SELECT r.schema_name, r.table_name, r.number_column, r.registered_at
      FROM jsonb_to_recordset(coalesce(v_rows, '[]'))
           AS r(schema_name name, table_name name, number_column name, registered_at timestamptz);
END
$$;
SELECT docnum._migrate_0003_document_table();
DROP FUNCTION docnum._migrate_0003_document_table();
COMMENT ON TABLE docnum.document_table IS 'Application tables whose document numbers check_duplicates() inspects';
REVOKE ALL ON docnum.document_table FROM PUBLIC;
GRANT SELECT ON docnum.document_table TO docnum_reader;

-- Functions: what changed, in full.
DROP FUNCTION docnum.reserve_number(text,text,text,jsonb,interval,date);
DROP FUNCTION docnum.next_number(text,text,text,text,date);
DROP FUNCTION docnum.gaps(text,text,text);
DROP FUNCTION docnum.check_duplicates();
DROP FUNCTION docnum._issue(docnum.document_type,text,date,text,uuid,timestamp with time zone,text,text,jsonb,text);

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
    IF p_scope IS NULL OR p_scope = '' OR length(p_scope) > 64 OR docnum._has_invisible(p_scope)
       OR NOT docnum._is_trimmed(p_scope) THEN
        RAISE EXCEPTION 'invalid scope value %', coalesce(quote_literal(left(p_scope, 60)), 'NULL')
            USING ERRCODE = 'NB006',
                  DETAIL = 'A scope value is 1 to 64 characters, without control or invisible format characters or '
                           'surrounding spaces.',
                  HINT = pg_catalog.format('%s numbers are counted per %s.', p_type.code, lower(p_type.scope));
    END IF;
    RETURN p_scope;
END
$function$;
REVOKE ALL ON FUNCTION docnum._check_scope(docnum.document_type,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._check_template(p_code text, p_format text, p_skeleton text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_items    text[] := docnum._template_items(p_code, p_format);
    v_scope_at integer := array_position(v_items, 'A');
    v_seq_at   integer := array_position(v_items, 'D');
    v_other    record;
    v_witness  text;
BEGIN
    IF v_scope_at IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM generate_series(least(v_scope_at, v_seq_at) + 1, greatest(v_scope_at, v_seq_at) - 1) k
         WHERE v_items[k] ~ '^c[^0-9]$') THEN
        RAISE EXCEPTION 'invalid number format %: no separator between {SCOPE} and {SEQ}',
                quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006',
                  DETAIL = 'A scope value is free text and {SEQ} grows past its padding: only a literal character '
                           'that is not a digit, somewhere between the two, tells where one ends.',
                  HINT = 'Put a separator such as - or / between them, e.g. {SCOPE}-{SEQ:4} or {SCOPE}/{YYYY}/{SEQ}.';
    END IF;

    LOCK TABLE docnum.document_type IN SHARE ROW EXCLUSIVE MODE;
    FOR v_other IN
        WITH formats AS (
            SELECT t.code, t.format, true AS is_current FROM docnum.document_type t
            UNION ALL
            SELECT a.document_type, a.new_value ->> 'format', false FROM docnum.audit_log a
             WHERE a.operation IN ('DEFINE_TYPE', 'ALTER_TYPE') AND a.new_value ? 'format'
        )
        SELECT t.code, f.format, bool_or(f.is_current) AS is_current, t.scope, t.reset
          FROM formats f JOIN docnum.document_type t ON t.code = f.code
         GROUP BY t.code, f.format, t.scope, t.reset
         ORDER BY t.code, f.format
    LOOP
        v_witness := docnum._templates_meet(v_items, docnum._template_items(v_other.code, v_other.format));
        CONTINUE WHEN v_witness IS NULL;
        IF v_other.code <> p_code THEN
            RAISE EXCEPTION 'format % can render numbers of type %', quote_literal(left(p_format, 60)), v_other.code
                USING ERRCODE = 'NB006',
                      DETAIL = pg_catalog.format('Type %s, with its %s format %L, can render the same text, e.g. %L: '
                                                 'two counters would compete for one number.', v_other.code,
                                                 CASE WHEN v_other.is_current THEN 'current' ELSE 'former' END,
                                                 left(v_other.format, 60), left(v_witness, 60)),
                      HINT = 'Give the format a literal text no other type''s numbers can contain, e.g. {TYPE} '
                             'followed by a separator: {TYPE}-{SEQ:4}.';
        END IF;
        IF (SELECT c.render_head || '{SEQ}' || c.render_tail
              FROM docnum._compile_format(v_other.code, v_other.format, v_other.scope, v_other.reset) c)
           IS DISTINCT FROM p_skeleton THEN
            RAISE EXCEPTION 'format % can render numbers of an earlier format of %',
                    quote_literal(left(p_format, 60)), p_code
                USING ERRCODE = 'NB006',
                      DETAIL = pg_catalog.format('The %s format %L can render the same text, e.g. %L, for another '
                                                 'scope, period or value.',
                                                 CASE WHEN v_other.is_current THEN 'current' ELSE 'former' END,
                                                 left(v_other.format, 60), left(v_witness, 60)),
                      HINT = 'Change only the padding of {SEQ}, or choose a format no earlier number of the type can '
                             'match (e.g. another separator).';
        END IF;
    END LOOP;
END
$function$;
REVOKE ALL ON FUNCTION docnum._check_template(text,text,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._check_text(p_name text, p_value text, p_max integer)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF p_value IS NOT NULL AND (p_value = '' OR length(p_value) > p_max OR docnum._has_invisible(p_value)) THEN
        RAISE EXCEPTION 'invalid %: %', p_name, quote_literal(left(p_value, 60))
            USING ERRCODE = 'NB006',
                  DETAIL = pg_catalog.format('%s must be 1 to %s characters without control or invisible '
                                             'format characters.', p_name, p_max),
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
    IF p_max_value IS NOT NULL AND p_max_value NOT BETWEEN 1 AND 9223372036854775806 THEN
        RAISE EXCEPTION 'invalid max_value %', p_max_value
            USING ERRCODE = 'NB006', DETAIL = 'max_value lies between 1 and 9223372036854775806 (2^63 - 2).',
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
    IF docnum._has_invisible(p_format) OR length(p_format) > 200 THEN
        RAISE EXCEPTION 'invalid number format %', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', DETAIL = 'A format is at most 200 characters, without control or invisible format characters.', HINT = v_hint;
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
            USING ERRCODE = 'NB006', DETAIL = 'Braces are reserved for tokens such as {SEQ:5}.', HINT = v_hint;
    END IF;
    v_literals := v_literals || v_rest;

    FOR v_i IN 1 .. coalesce(array_length(v_tokens, 1), 0) LOOP
        v_token := v_tokens[v_i];
        IF v_token !~ '^(TYPE|SCOPE|YYYY|YY|MM|DD|SEQ|SEQ:([1-9]|1[0-8]))$' THEN
            RAISE EXCEPTION 'invalid number format %: unknown token {%}', quote_literal(left(p_format, 60)),
                    left(v_token, 20)
                USING ERRCODE = 'NB006', DETAIL = '{SEQ:n} takes a width from 1 to 18.', HINT = v_hint;
        END IF;
        IF v_token LIKE 'SEQ%' THEN
            IF v_seen_seq THEN
                RAISE EXCEPTION 'invalid number format %: more than one {SEQ}', quote_literal(left(p_format, 60))
                    USING ERRCODE = 'NB006', DETAIL = 'A number has exactly one sequence part.', HINT = v_hint;
            END IF;
            v_seen_seq := true;
        ELSIF array_position(v_tokens, v_token) <> v_i THEN
            RAISE EXCEPTION 'invalid number format %: {%} appears twice', quote_literal(left(p_format, 60)),
                    left(v_token, 20)
                USING ERRCODE = 'NB006', DETAIL = 'Each token may appear once.', HINT = v_hint;
        END IF;
        -- {SCOPE} and an unpadded {SEQ} have no fixed width: literal text must separate them from other tokens,
        -- or a number could not be read back unambiguously.
        v_variable := v_token IN ('SCOPE', 'SEQ');
        IF v_i > 1 AND v_literals[v_i] = '' AND (v_variable OR v_prev_variable) THEN
            RAISE EXCEPTION 'invalid number format %: {%} and {%} need literal text between them',
                    quote_literal(left(p_format, 60)), v_tokens[v_i - 1], v_token
                USING ERRCODE = 'NB006',
                      DETAIL = '{SCOPE} and {SEQ} without padding have no fixed width.',
                      HINT = 'Put a separator such as - or / between them, e.g. {SCOPE}-{SEQ}.';
        END IF;
        v_prev_variable := v_variable;
    END LOOP;

    IF NOT v_seen_seq THEN
        RAISE EXCEPTION 'invalid number format %: no {SEQ}', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', DETAIL = 'A number needs exactly one {SEQ} or {SEQ:n}.', HINT = v_hint;
    END IF;
    IF 'YYYY' = ANY (v_tokens) AND 'YY' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format %: both {YYYY} and {YY}', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', DETAIL = 'Use one year token.', HINT = v_hint;
    END IF;
    -- Different counters must never render the same text.
    IF p_scope IN ('PROJECT', 'CONTRACT') AND NOT 'SCOPE' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a % scope: no {SCOPE}', quote_literal(left(p_format, 60)),
                p_scope
            USING ERRCODE = 'NB006',
                  DETAIL = 'Each scope value has its own counter, so the scope must be part of the number.',
                  HINT = 'Add {SCOPE}, e.g. {SCOPE}/{TYPE}/{SEQ:4}.';
    END IF;
    IF p_scope NOT IN ('PROJECT', 'CONTRACT') AND 'SCOPE' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a % scope: {SCOPE} has no value',
                quote_literal(left(p_format, 60)), p_scope
            USING ERRCODE = 'NB006', DETAIL = 'Only PROJECT and CONTRACT types take a scope value.',
                  HINT = 'Remove {SCOPE} or use scope => ''PROJECT''.';
    END IF;
    IF p_reset IN ('YEARLY', 'MONTHLY') AND NOT ('YYYY' = ANY (v_tokens) OR 'YY' = ANY (v_tokens)) THEN
        RAISE EXCEPTION 'invalid number format % for a % reset: no year', quote_literal(left(p_format, 60)), p_reset
            USING ERRCODE = 'NB006',
                  DETAIL = 'The counter restarts each period, so the period must be part of the number.',
                  HINT = 'Add {YYYY} or {YY}.';
    END IF;
    IF p_reset = 'MONTHLY' AND NOT 'MM' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a MONTHLY reset: no month', quote_literal(left(p_format, 60))
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
    -- The fair queue's advisory keys use the two-int4 form (class, counter_id), so ids must fit in int4; a period
    -- is '' (no reset), YYYY or YYYY-MM, with a year from 1000 to 9999 like every document date.
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

CREATE OR REPLACE FUNCTION docnum._document_table_problem(p_table oid, p_column name)
 RETURNS text
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_rel  record;
    v_bad  record;
    v_type oid;
BEGIN
    SELECT c.oid, c.relkind, c.relpersistence, c.relrowsecurity, n.nspname
      INTO v_rel
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = p_table;
    IF NOT FOUND THEN
        RETURN 'the table does not exist';
    END IF;
    IF v_rel.relpersistence = 't' OR v_rel.nspname IN ('docnum', 'pg_catalog', 'information_schema', 'pg_toast')
       OR v_rel.nspname LIKE 'pg\_temp\_%' OR v_rel.nspname LIKE 'pg\_toast\_temp\_%' THEN
        RETURN pg_catalog.format('%s is a temporary table or belongs to schema %s, not to the application',
                                 p_table::regclass, v_rel.nspname);
    END IF;
    -- The table and everything a SELECT on it also reads (partitions, inheritance children).
    SELECT c.oid::regclass AS rel, c.relkind, c.relrowsecurity, c.relpersistence
      INTO v_bad
      FROM (WITH RECURSIVE tree(relid) AS (
                SELECT p_table
                UNION
                SELECT i.inhrelid FROM tree t JOIN pg_catalog.pg_inherits i ON i.inhparent = t.relid)
            SELECT t.relid FROM tree t) r
      JOIN pg_catalog.pg_class c ON c.oid = r.relid
     WHERE c.relkind NOT IN ('r', 'p') OR c.relrowsecurity OR c.relpersistence = 't'
     ORDER BY c.oid = p_table DESC
     LIMIT 1;
    IF FOUND THEN
        RETURN CASE
            WHEN v_bad.relkind NOT IN ('r', 'p') THEN
                pg_catalog.format('%s is a %s, not a table', v_bad.rel,
                                  CASE v_bad.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                                                     WHEN 'f' THEN 'foreign table' WHEN 'S' THEN 'sequence'
                                                     ELSE 'relation of kind ' || v_bad.relkind::text END)
            WHEN v_bad.relrowsecurity THEN
                pg_catalog.format('%s has row level security enabled', v_bad.rel)
            ELSE pg_catalog.format('%s is a temporary table', v_bad.rel) END;
    END IF;
    SELECT a.atttypid INTO v_type
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = p_table AND a.attname = p_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RETURN pg_catalog.format('%s has no column %s', p_table::regclass, quote_ident(p_column));
    END IF;
    IF v_type NOT IN ('pg_catalog.text'::pg_catalog.regtype, 'pg_catalog.varchar'::pg_catalog.regtype) THEN
        RETURN pg_catalog.format('column %s of %s is of type %s, not text or varchar', quote_ident(p_column),
                                 p_table::regclass, v_type::regtype);
    END IF;
    RETURN NULL;
END
$function$;
REVOKE ALL ON FUNCTION docnum._document_table_problem(oid,name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum._document_table_problem(oid,name) TO docnum_reader;

CREATE OR REPLACE FUNCTION docnum._durable_commit()
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF current_setting('synchronous_commit') NOT IN ('on', 'remote_apply') THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
END
$function$;
REVOKE ALL ON FUNCTION docnum._durable_commit() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._integrity_findings()
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

    -- gaps() returns ranges, so this costs the same whatever the size of a jump.
    RETURN QUERY
    SELECT 'unexplained_gap', 'warning',
           pg_catalog.format('counter %s/%s/%s: %s value(s) never issued and not explained: %s', g.document_type,
                             g.scope_value, g.period, sum(g.value_count),
                             array_to_string((array_agg(CASE WHEN g.value_count = 1 THEN g.first_value::text
                                                             ELSE g.first_value || '..' || g.last_value END
                                                        ORDER BY g.first_value))[1:10], ', ')
                             || CASE WHEN count(*) > 10 THEN ', ...' ELSE '' END)
      FROM docnum.gaps() g
     WHERE NOT g.explained
     GROUP BY g.document_type, g.scope_value, g.period;
END
$function$;
REVOKE ALL ON FUNCTION docnum._integrity_findings() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum._integrity_findings() TO docnum_reader;

CREATE OR REPLACE FUNCTION docnum._issue(p_type docnum.document_type, p_scope text, p_date date, p_state text, p_token uuid, p_expires_at timestamp with time zone, p_actor text, p_document_ref text, p_metadata jsonb, p_operation text, p_request_id text DEFAULT NULL::text)
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
                                        actor, document_ref, metadata, expires_at, confirmed_at, request_id)
        VALUES (p_type.code, v_counter_id, v_value,
                v_head || docnum._seq_text(v_value, p_type.seq_width) || v_tail, p_state, p_token,
                p_actor, p_document_ref, p_metadata, p_expires_at,
                CASE WHEN p_state = 'confirmed' THEN now() END, p_request_id)
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
       OR NEW.issued_at <> OLD.issued_at OR NEW.request_id IS DISTINCT FROM OLD.request_id THEN
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
    c_hint_ms     constant bigint := 100::bigint;   -- the longest wait in the fair queue, ms
    v_session     text := current_setting('lock_timeout');
    v_limit_ms    bigint := docnum._lock_limit_ms(p_type.lock_timeout);
    v_started     timestamptz := clock_timestamp();
    v_left_ms     bigint;
    v_counter_id  bigint;
    v_counter     docnum.counter;
BEGIN
    SELECT c.counter_id INTO v_counter_id
      FROM docnum.counter c
     WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = p_period;
    IF v_counter_id IS NULL THEN
        -- A new counter. Another transaction creating the same one makes this INSERT wait for its outcome.
        PERFORM set_config('lock_timeout', v_limit_ms::text, true);
        BEGIN
            INSERT INTO docnum.counter AS c (document_type, scope_value, period)
            VALUES (p_type.code, p_scope, p_period)
            ON CONFLICT ON CONSTRAINT counter_key DO NOTHING
            RETURNING c.counter_id INTO v_counter_id;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM docnum._raise_lock_timeout(p_type.code, p_scope, p_period, v_limit_ms);
        END;
        IF v_counter_id IS NULL THEN
            SELECT c.counter_id INTO STRICT v_counter_id
              FROM docnum.counter c
             WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = p_period;
        END IF;
    END IF;

    -- The fair queue (a hint, see above).
    PERFORM set_config('lock_timeout',
                       CASE WHEN v_limit_ms = 0 THEN c_hint_ms ELSE least(v_limit_ms, c_hint_ms) END::text, true);
    BEGIN
        PERFORM pg_advisory_xact_lock(1685021550, v_counter_id::integer);
    EXCEPTION WHEN lock_not_available THEN
        NULL;  -- the holder may be no allocation at all: go on to the lock that decides
    END;

    -- The lock that decides, within what is left of the limit.
    v_left_ms := CASE WHEN v_limit_ms = 0 THEN 0
                      ELSE greatest(v_limit_ms - (extract(epoch FROM clock_timestamp() - v_started) * 1000)::bigint,
                                    1) END;
    PERFORM set_config('lock_timeout', v_left_ms::text, true);
    BEGIN
        SELECT c.* INTO STRICT v_counter FROM docnum.counter c WHERE c.counter_id = v_counter_id
           FOR NO KEY UPDATE;
    EXCEPTION WHEN lock_not_available THEN
        PERFORM docnum._raise_lock_timeout(p_type.code, p_scope, p_period, v_limit_ms);
    END;
    PERFORM set_config('lock_timeout', v_session, true);
    RETURN v_counter;
END
$function$;
REVOKE ALL ON FUNCTION docnum._lock_counter(docnum.document_type,text,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._lock_limit_ms(p_type_limit interval)
 RETURNS bigint
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_session bigint := ceil(extract(epoch FROM current_setting('lock_timeout')::interval) * 1000)::bigint;
    v_type    bigint := ceil(extract(epoch FROM p_type_limit) * 1000)::bigint;
BEGIN
    IF v_type IS NULL OR (v_session > 0 AND v_session < v_type) THEN
        RETURN v_session;
    END IF;
    RETURN v_type;
END
$function$;
REVOKE ALL ON FUNCTION docnum._lock_limit_ms(interval) FROM PUBLIC;

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
        IF length(p_scope) > 64 OR docnum._has_invisible(p_scope) OR NOT docnum._is_trimmed(p_scope) THEN
            RAISE EXCEPTION 'invalid scope value %', quote_literal(left(p_scope, 60))
                USING ERRCODE = 'NB006',
                      DETAIL = 'A scope value is 1 to 64 characters, without control or invisible format '
                               'characters or surrounding spaces.',
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

CREATE OR REPLACE FUNCTION docnum._raise_lock_timeout(p_type text, p_scope text, p_period text, p_limit_ms bigint)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    RAISE EXCEPTION 'timed out waiting for the % counter', p_type
        USING ERRCODE = 'NB003',
              DETAIL = pg_catalog.format('Counter (%s, %L, %L) was held by another transaction for longer than the '
                                         'lock timeout (%s ms).', p_type, left(p_scope, 64), p_period, p_limit_ms),
              HINT = 'Retry; if it persists, look for a long transaction that allocated from this counter '
                     '(pg_stat_activity, state ''idle in transaction'').';
END
$function$;
REVOKE ALL ON FUNCTION docnum._raise_lock_timeout(text,text,text,bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._replay(p_request_id text, p_type docnum.document_type, p_scope text, p_reserve boolean)
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
    RETURN ROW(v_row.token, v_row.document_number, v_row.sequence_value, v_row.expires_at)::docnum.reservation;
END
$function$;
REVOKE ALL ON FUNCTION docnum._replay(text,docnum.document_type,text,boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._require_writable()
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM docnum._durable_commit();
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

CREATE OR REPLACE FUNCTION docnum._template_items(p_code text, p_format text)
 RETURNS text[]
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_rest  text := p_format;
    v_match text[];
    v_items text[] := ARRAY[]::text[];
    v_token text;
BEGIN
    LOOP
        v_match := regexp_match(v_rest, '^([^{}]*)(\{[^{}]*\})(.*)$', 's');
        IF v_match IS NULL THEN
            v_match := ARRAY[v_rest, NULL, ''];
        END IF;
        v_items := v_items || ARRAY(SELECT 'c' || ch FROM string_to_table(v_match[1], NULL) WITH ORDINALITY
                                                          AS s(ch, n) ORDER BY n);
        EXIT WHEN v_match[2] IS NULL;
        v_token := upper(substr(v_match[2], 2, length(v_match[2]) - 2));
        v_items := v_items || CASE
            WHEN v_token = 'TYPE' THEN ARRAY(SELECT 'c' || ch FROM string_to_table(p_code, NULL) WITH ORDINALITY
                                                             AS s(ch, n) ORDER BY n)
            WHEN v_token = 'YYYY' THEN ARRAY['d', 'd', 'd', 'd']
            WHEN v_token IN ('YY', 'MM', 'DD') THEN ARRAY['d', 'd']
            WHEN v_token ~ '^SEQ(:[0-9]{1,2})?$' THEN
                array_fill('d'::text, ARRAY[greatest(coalesce(nullif(substr(v_token, 5), '')::integer, 1), 1)])
                || 'D'::text
            ELSE ARRAY['a', 'A'] END;
        v_rest := v_match[3];
    END LOOP;
    RETURN v_items;
END
$function$;
REVOKE ALL ON FUNCTION docnum._template_items(text,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._templates_meet(p_a text[], p_b text[])
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_na    constant integer := cardinality(p_a);
    v_nb    constant integer := cardinality(p_b);
    v_seen  text[] := ARRAY['']::text[];     -- state (i, j) has key (i - 1) * (b + 1) + j: the text that reached it
    v_queue integer[] := ARRAY[1];
    v_head  integer := 1;
    v_tail  integer := 1;
    v_key   integer;
    v_i     integer;
    v_j     integer;
    v_x     text;
    v_y     text;
    v_ni    integer;
    v_nj    integer;
    v_char  text;
BEGIN
    WHILE v_head <= v_tail LOOP
        v_key := v_queue[v_head];
        v_head := v_head + 1;
        v_i := (v_key - 1) / (v_nb + 1) + 1;
        v_j := (v_key - 1) % (v_nb + 1) + 1;
        IF v_i > v_na AND v_j > v_nb THEN
            RETURN v_seen[v_key];
        END IF;
        v_x := p_a[v_i];   -- NULL past the end
        v_y := p_b[v_j];
        FOR v_move IN 1 .. 3 LOOP
            v_ni := NULL;
            IF v_move = 1 AND v_x IN ('D', 'A') THEN          -- leave a loop of a
                v_ni := v_i + 1; v_nj := v_j; v_char := '';
            ELSIF v_move = 2 AND v_y IN ('D', 'A') THEN       -- leave a loop of b
                v_ni := v_i; v_nj := v_j + 1; v_char := '';
            ELSIF v_move = 3 AND v_x IS NOT NULL AND v_y IS NOT NULL THEN
                -- one character both items accept
                v_char := CASE
                    WHEN v_x IN ('a', 'A') AND v_y IN ('a', 'A') THEN 'x'
                    WHEN left(v_x, 1) = 'c' THEN
                        CASE WHEN v_y IN ('a', 'A') OR v_y = v_x OR (v_y IN ('d', 'D') AND v_x ~ '^c[0-9]$')
                             THEN substr(v_x, 2) END
                    WHEN left(v_y, 1) = 'c' THEN
                        CASE WHEN v_x IN ('a', 'A') OR (v_x IN ('d', 'D') AND v_y ~ '^c[0-9]$')
                             THEN substr(v_y, 2) END
                    ELSE '1' END;                             -- a digit meets a digit or any character
                IF v_char IS NOT NULL THEN
                    v_ni := v_i + CASE WHEN v_x IN ('D', 'A') THEN 0 ELSE 1 END;
                    v_nj := v_j + CASE WHEN v_y IN ('D', 'A') THEN 0 ELSE 1 END;
                    IF v_ni = v_i AND v_nj = v_j THEN
                        v_ni := NULL;                         -- two loops: nothing new
                    END IF;
                END IF;
            END IF;
            IF v_ni IS NOT NULL THEN
                v_key := (v_ni - 1) * (v_nb + 1) + v_nj;
                IF v_seen[v_key] IS NULL THEN
                    v_seen[v_key] := v_seen[(v_i - 1) * (v_nb + 1) + v_j] || v_char;
                    v_tail := v_tail + 1;
                    v_queue[v_tail] := v_key;
                END IF;
            END IF;
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$function$;
REVOKE ALL ON FUNCTION docnum._templates_meet(text[],text[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._to_timestamptz(p_text text)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_value timestamptz;
BEGIN
    IF p_text IS NULL OR length(p_text) > 64
       OR p_text !~ ('^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?'
                     '\s*([Zz]|UTC|[+-][0-9]{2}(:?[0-9]{2})?)?\s*$') THEN
        RETURN NULL;
    END IF;
    v_value := p_text::timestamptz;
    IF NOT isfinite(v_value) OR extract(year FROM v_value) NOT BETWEEN 1000 AND 9999 THEN
        RETURN NULL;
    END IF;
    RETURN v_value;
EXCEPTION WHEN data_exception THEN
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
        PERFORM docnum._check_template(v_old.code, v_new.format, v_new.render_head || '{SEQ}' || v_new.render_tail);
        -- A {YY} format cannot take over a resetting counter of a year outside 2000..2099.
        SELECT c.period INTO v_bad
          FROM docnum.counter c
         WHERE c.document_type = v_old.code AND NOT docnum._period_fits(v_new.parse_groups, c.period)
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'format % cannot show period % of %', quote_literal(left(alter_type.format, 60)),
                    v_bad.period, v_old.code
                USING ERRCODE = 'NB006',
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
                USING ERRCODE = 'NB006',
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
 RETURNS TABLE(document_number text, occurrences bigint, found_in text[], problem text)
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_sql     text := 'SELECT l.document_number::text COLLATE "C" AS n, ''docnum.ledger''::text AS src'
                      || ' FROM docnum.ledger l';
    v_table   record;
    v_name    text;
    v_relid   oid;
    v_problem text;
BEGIN
    FOR v_table IN
        SELECT d.schema_name, d.table_name, d.number_column FROM docnum.document_table d
         ORDER BY d.schema_name, d.table_name
    LOOP
        v_name := pg_catalog.format('%I.%I', v_table.schema_name, v_table.table_name);
        BEGIN
            v_relid := pg_catalog.to_regclass(v_name);
            IF v_relid IS NULL THEN
                v_problem := 'the table does not exist';
            ELSIF NOT pg_catalog.has_table_privilege(v_relid, 'SELECT') THEN
                v_problem := pg_catalog.format('%s may not read it', current_user);
            ELSE
                -- Lock the name, then check what it names: it cannot become a view between the check and the
                -- read. Locking runs nothing of the relation.
                EXECUTE pg_catalog.format('LOCK TABLE %I.%I IN ACCESS SHARE MODE', v_table.schema_name,
                                          v_table.table_name);
                v_relid := pg_catalog.to_regclass(v_name);
                v_problem := docnum._document_table_problem(v_relid, v_table.number_column);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            -- e.g. the schema is gone or the caller may not use it
            v_problem := SQLERRM;
        END;
        IF v_problem IS NOT NULL THEN
            document_number := NULL;
            occurrences := NULL;
            found_in := ARRAY[v_name];
            problem := v_problem;
            RETURN NEXT;
        ELSE
            v_sql := v_sql || pg_catalog.format(
                ' UNION ALL SELECT t.%I::text COLLATE "C", %L FROM %I.%I t WHERE t.%I IS NOT NULL',
                v_table.number_column, v_name, v_table.schema_name, v_table.table_name, v_table.number_column);
        END IF;
    END LOOP;
    -- A number in the ledger and once in one application table is the normal case; count per source.
    RETURN QUERY EXECUTE
        'SELECT u.n::text, count(*), array_agg(u.src ORDER BY u.src), NULL::text FROM (' || v_sql || ') u '
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
        RAISE EXCEPTION 'invalid scope %', coalesce(quote_literal(left(define_type.scope, 60)), 'NULL')
            USING ERRCODE = 'NB006', DETAIL = 'scope is one of GLOBAL, PROJECT, CONTRACT, YEARLY, MONTHLY.',
                  HINT = 'PROJECT and CONTRACT take a scope value at allocation; YEARLY and MONTHLY reset.';
    END IF;
    IF v_reset IS NULL THEN
        v_reset := CASE v_scope WHEN 'YEARLY' THEN 'YEARLY' WHEN 'MONTHLY' THEN 'MONTHLY' ELSE 'NEVER' END;
    ELSIF v_reset NOT IN ('NEVER', 'YEARLY', 'MONTHLY')
          OR (v_scope IN ('YEARLY', 'MONTHLY') AND v_reset <> v_scope) THEN
        RAISE EXCEPTION 'invalid reset % for scope %', quote_literal(left(define_type.reset, 60)),
                left(v_scope, 60)
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
    SELECT count(*)::integer INTO v_count FROM audited;
    RETURN v_count;
END
$function$;
REVOKE ALL ON FUNCTION docnum.expire_reservations() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.expire_reservations() TO docnum_app;

CREATE OR REPLACE FUNCTION docnum.find_request(request_id text)
 RETURNS TABLE(document_type text, document_number text, state text, token uuid, expires_at timestamp with time zone, issued_at timestamp with time zone)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF find_request.request_id IS NULL THEN
        RAISE EXCEPTION 'a request key is required'
            USING ERRCODE = 'NB006', DETAIL = 'request_id was NULL.',
                  HINT = 'Pass the request_id given to docnum.reserve_number() or docnum.next_number().';
    END IF;
    PERFORM docnum._check_text('request_id', find_request.request_id, 200);
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
                   WHEN f.number = '' OR length(f.number) > 300 OR docnum._has_invisible(f.number)
                       THEN 'invalid document number'
                   WHEN p.sequence_value IS NULL THEN 'does not match the format ' || t.format
                   WHEN t.scope IN ('PROJECT', 'CONTRACT')
                        AND (length(p.scope_value) > 64 OR docnum._has_invisible(p.scope_value)
                             OR NOT docnum._is_trimmed(p.scope_value)) THEN 'invalid scope value'
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
    PERFORM set_config('lock_timeout', v_limit_ms::text, true);
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
        -- The counters' row locks (what excludes allocations, see docnum._lock_counter), taken in id order.
        PERFORM FROM docnum.counter c
         WHERE c.counter_id IN (SELECT c2.counter_id
                                  FROM unnest(v_rows) r
                                  JOIN docnum.counter c2
                                    ON c2.document_type = r.document_type AND c2.scope_value = r.scope_value
                                   AND c2.period = r.period
                                 WHERE r.problem IS NULL)
         ORDER BY c.counter_id
           FOR NO KEY UPDATE;
        -- And, where free, their places in the fair queue: an allocation then waits for this import in the queue,
        -- under its own lock limit, rather than on the row lock its fast path would otherwise meet.
        PERFORM pg_try_advisory_xact_lock(1685021550, c.counter_id::integer)
           FROM docnum.counter c
          WHERE c.counter_id IN (SELECT c2.counter_id
                                   FROM unnest(v_rows) r
                                   JOIN docnum.counter c2
                                     ON c2.document_type = r.document_type AND c2.scope_value = r.scope_value
                                    AND c2.period = r.period
                                  WHERE r.problem IS NULL);
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'timed out waiting for a counter to import into'
            USING ERRCODE = 'NB003',
                  DETAIL = pg_catalog.format('Another transaction held one of the counters of this batch for longer '
                                             'than the lock timeout (%s ms).', v_limit_ms),
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

CREATE OR REPLACE FUNCTION docnum.next_number(document_type text, scope text DEFAULT NULL::text, actor text DEFAULT NULL::text, document_ref text DEFAULT NULL::text, document_date date DEFAULT NULL::date, request_id text DEFAULT NULL::text)
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
    IF next_number.request_id IS NOT NULL THEN
        RETURN coalesce((docnum._replay(next_number.request_id, v_prepared.o_type, v_prepared.o_scope,
                                        false)).document_number,
                        (docnum._issue(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, 'confirmed', NULL,
                                       NULL, next_number.actor, next_number.document_ref, NULL, 'NEXT',
                                       next_number.request_id)).document_number);
    END IF;
    RETURN (docnum._issue(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, 'confirmed', NULL, NULL,
                          next_number.actor, next_number.document_ref, NULL, 'NEXT')).document_number;
END
$function$;
REVOKE ALL ON FUNCTION docnum.next_number(text,text,text,text,date,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.next_number(text,text,text,text,date,text) TO docnum_app;

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
        RAISE EXCEPTION 'number % does not match the format of %', quote_literal(left(override_number.document_number, 60)),
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
DECLARE
    v_problem text;
    v_schema  name;
    v_table   name;
BEGIN
    PERFORM docnum._admin_type(NULL, register_document_table.actor, NULL, false);
    IF register_document_table.table_name IS NULL OR register_document_table.number_column IS NULL THEN
        RAISE EXCEPTION 'a table and a column are required'
            USING ERRCODE = 'NB006', DETAIL = 'table_name or number_column was NULL.',
                  HINT = 'Pass table_name => ''schema.table'', number_column => ''document_number''.';
    END IF;
    -- Only the catalog is read here: nothing of the table itself runs.
    v_problem := docnum._document_table_problem(register_document_table.table_name,
                                                register_document_table.number_column);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'cannot register % as a document table', register_document_table.table_name
            USING ERRCODE = 'NB006', DETAIL = v_problem || '.',
                  HINT = 'Register an ordinary (or partitioned) table of the application, without row level '
                         'security, whose number column is of type text or varchar.';
    END IF;
    SELECT n.nspname, c.relname INTO STRICT v_schema, v_table
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = register_document_table.table_name;
    INSERT INTO docnum.document_table AS d (schema_name, table_name, number_column)
    VALUES (v_schema, v_table, register_document_table.number_column)
    ON CONFLICT ON CONSTRAINT document_table_pkey DO UPDATE SET number_column = EXCLUDED.number_column;
    INSERT INTO docnum.audit_log (operation, actor, new_value)
    VALUES ('REGISTER_TABLE', register_document_table.actor,
            jsonb_build_object('table', pg_catalog.format('%I.%I', v_schema, v_table),
                               'schema_name', v_schema, 'table_name', v_table,
                               'number_column', register_document_table.number_column));
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
BEGIN
    v_prepared := docnum._prepare(reserve_number.document_type, reserve_number.scope, reserve_number.actor,
                                  reserve_number.document_date);
    IF reserve_number.request_id IS NOT NULL THEN
        v_done := docnum._replay(reserve_number.request_id, v_prepared.o_type, v_prepared.o_scope, true);
        IF v_done.document_number IS NOT NULL THEN
            RETURN v_done;
        END IF;
    END IF;
    v_ttl := coalesce(reserve_number.ttl, (v_prepared.o_type).reservation_ttl);
    IF v_ttl <= interval '0' OR v_ttl > interval '7 days' THEN
        RAISE EXCEPTION 'invalid reservation ttl %', left(v_ttl::text, 60)
            USING ERRCODE = 'NB006', DETAIL = 'A reservation lasts more than 0 and at most 7 days.',
                  HINT = 'Pass ttl => interval ''10 minutes'', or NULL for the type''s default.';
    END IF;
    IF reserve_number.metadata IS NOT NULL AND jsonb_typeof(reserve_number.metadata) <> 'object' THEN
        RAISE EXCEPTION 'invalid metadata'
            USING ERRCODE = 'NB006', DETAIL = 'metadata must be a JSON object.', HINT = 'Pass ''{}'' or NULL.';
    END IF;
    RETURN docnum._issue(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, 'reserved',
                         gen_random_uuid(), statement_timestamp() + v_ttl, reserve_number.actor, NULL,
                         reserve_number.metadata, 'RESERVE', reserve_number.request_id);
END
$function$;
REVOKE ALL ON FUNCTION docnum.reserve_number(text,text,text,jsonb,interval,date,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.reserve_number(text,text,text,jsonb,interval,date,text) TO docnum_app;

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
       OR (v_type.reset = 'YEARLY' AND v_period !~ '^[1-9][0-9]{3}$')
       OR (v_type.reset = 'MONTHLY' AND v_period !~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])$') THEN
        RAISE EXCEPTION 'invalid period % for a % reset', quote_literal(left(v_period, 20)), v_type.reset
            USING ERRCODE = 'NB006',
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
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    RETURN QUERY SELECT f.check_name, f.severity, f.detail FROM docnum._integrity_findings() f;

    RETURN QUERY
    SELECT CASE WHEN d.problem IS NULL THEN 'duplicate_number' ELSE 'document_table_unchecked' END, 'error',
           CASE WHEN d.problem IS NULL
                THEN pg_catalog.format('%s appears %s times (%s)', d.document_number, d.occurrences,
                                       array_to_string(d.found_in, ', '))
                ELSE pg_catalog.format('%s could not be checked for duplicates: %s', d.found_in[1], d.problem)
           END
      FROM docnum.check_duplicates() d;
END
$function$;
REVOKE ALL ON FUNCTION docnum.validate() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.validate() TO docnum_reader;

CREATE OR REPLACE FUNCTION docnum._has_invisible(p_text text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
RETURN (p_text ~ '[\x01-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]'::text);
REVOKE ALL ON FUNCTION docnum._has_invisible(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._is_trimmed(p_text text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
RETURN (p_text = btrim(p_text, '                　'::text));
REVOKE ALL ON FUNCTION docnum._is_trimmed(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._period_fits(p_groups text[], p_period text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
RETURN ((p_period = ''::text) OR (p_period ~~ '20%'::text) OR (NOT ('YY'::text = ANY (p_groups))));
REVOKE ALL ON FUNCTION docnum._period_fits(text[],text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum.gaps(document_type text DEFAULT NULL::text, scope text DEFAULT NULL::text, period text DEFAULT NULL::text)
 RETURNS TABLE(document_type text, scope_value text, period text, first_value bigint, last_value bigint, value_count bigint, explained boolean, source text, reason text, actor text, recorded_at timestamp with time zone)
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
BEGIN ATOMIC
 WITH counters AS (
          SELECT c_1.counter_id,
             c_1.current_value
            FROM docnum.counter c_1
           WHERE (((gaps.document_type IS NULL) OR (c_1.document_type = gaps.document_type)) AND ((gaps.scope IS NULL) OR (c_1.scope_value = gaps.scope)) AND ((gaps.period IS NULL) OR (c_1.period = gaps.period)))
         ), issued AS (
          SELECT c_1.counter_id,
             l.sequence_value,
             lag(l.sequence_value, 1, (0)::bigint) OVER (PARTITION BY c_1.counter_id ORDER BY l.sequence_value) AS prev
            FROM (counters c_1
              JOIN docnum.ledger l ON (((l.counter_id = c_1.counter_id) AND (l.sequence_value <= c_1.current_value))))
         ), holes AS (
          SELECT i.counter_id,
             (i.prev + 1) AS from_value,
             (i.sequence_value - 1) AS to_value
            FROM issued i
           WHERE (i.sequence_value > (i.prev + 1))
         UNION ALL
          SELECT c_1.counter_id,
             (COALESCE(m.top, (0)::bigint) + 1),
             c_1.current_value
            FROM (counters c_1
              LEFT JOIN LATERAL ( SELECT max(l.sequence_value) AS top
                    FROM docnum.ledger l
                   WHERE ((l.counter_id = c_1.counter_id) AND (l.sequence_value <= c_1.current_value))) m ON (true))
           WHERE (c_1.current_value > COALESCE(m.top, (0)::bigint))
         ), cuts AS (
          SELECT h.counter_id,
             h.from_value AS hole_from,
             h.to_value AS hole_to,
             h.from_value AS cut
            FROM holes h
         UNION
          SELECT h.counter_id,
             h.from_value,
             h.to_value,
             e.cut
            FROM ((holes h
              JOIN docnum.counter_skip k_1 ON (((k_1.counter_id = h.counter_id) AND (k_1.from_value <= h.to_value) AND (k_1.to_value >= h.from_value))))
              CROSS JOIN LATERAL ( VALUES (k_1.from_value), ((k_1.to_value + 1))) e(cut))
           WHERE ((e.cut > h.from_value) AND (e.cut <= h.to_value))
         ), pieces AS (
          SELECT x.counter_id,
             x.cut AS from_value,
             COALESCE((lead(x.cut) OVER (PARTITION BY x.counter_id, x.hole_from ORDER BY x.cut) - 1), x.hole_to) AS to_value
            FROM cuts x
         ), explained AS (
          SELECT p.counter_id,
             p.from_value,
             p.to_value,
             s.skip_id
            FROM (pieces p
              LEFT JOIN LATERAL ( SELECT k_1.skip_id
                    FROM docnum.counter_skip k_1
                   WHERE ((k_1.counter_id = p.counter_id) AND (k_1.from_value <= p.from_value) AND (k_1.to_value >= p.to_value))
                   ORDER BY k_1.skip_id DESC
                  LIMIT 1) s ON (true))
         ), starts AS (
          SELECT e.counter_id,
             e.from_value,
             e.to_value,
             e.skip_id,
                 CASE
                     WHEN ((lag(e.to_value) OVER w = (e.from_value - 1)) AND (NOT (lag(e.skip_id) OVER w IS DISTINCT FROM e.skip_id))) THEN 0
                     ELSE 1
                 END AS starts_run
            FROM explained e
           WINDOW w AS (PARTITION BY e.counter_id ORDER BY e.from_value)
         ), runs AS (
          SELECT st.counter_id,
             st.from_value,
             st.to_value,
             st.skip_id,
             sum(st.starts_run) OVER (PARTITION BY st.counter_id ORDER BY st.from_value) AS run
            FROM starts st
         ), ranges AS (
          SELECT r.counter_id,
             r.skip_id,
             min(r.from_value) AS from_value,
             max(r.to_value) AS to_value
            FROM runs r
           GROUP BY r.counter_id, r.run, r.skip_id
         )
  SELECT c.document_type,
     c.scope_value,
     c.period,
     g.from_value,
     g.to_value,
     ((g.to_value - g.from_value) + 1),
     (k.skip_id IS NOT NULL),
     k.source,
     k.reason,
     k.actor,
     k.recorded_at
    FROM ((ranges g
      JOIN docnum.counter c ON ((c.counter_id = g.counter_id)))
      LEFT JOIN docnum.counter_skip k ON ((k.skip_id = g.skip_id)))
   ORDER BY c.document_type, c.scope_value, c.period, g.from_value;
END;
REVOKE ALL ON FUNCTION docnum.gaps(text,text,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.gaps(text,text,text) TO docnum_reader;


-- A {YY} type that restarts every period numbers the years 2000..2099 only (checked when a counter is created).
CREATE TRIGGER counter_yy_period_check BEFORE INSERT ON docnum.counter
    FOR EACH ROW EXECUTE FUNCTION docnum._counter_period_check();

RESET ROLE;
