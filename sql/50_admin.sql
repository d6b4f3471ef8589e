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

-- The application's own tables that store document numbers, checked by docnum.check_duplicates(). Stored by
-- name, not by oid: a table dropped and created again under the same name is checked again; one dropped for
-- good (or whose column went) is reported by check_duplicates() and validate() until it is registered anew.
CREATE TABLE docnum.document_table (
    schema_name   name NOT NULL,
    table_name    name NOT NULL,
    number_column name NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT document_table_pkey PRIMARY KEY (schema_name, table_name)
);
COMMENT ON TABLE docnum.document_table IS 'Application tables whose document numbers check_duplicates() inspects';

-- Checks the arguments every administrative operation shares (a writable transaction, actor, reason) and, when
-- p_type_required, returns the type of p_code (docnum._type: NB006 without a code, NB001 for an unknown one).
CREATE FUNCTION docnum._admin_type(p_code text, p_actor text, p_reason text, p_reason_required boolean,
                                   p_type_required boolean DEFAULT true)
RETURNS docnum.document_type
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM docnum._require_writable();
    PERFORM docnum._check_text('actor', p_actor);
    PERFORM docnum._check_text('reason', p_reason);
    IF p_reason_required AND p_reason IS NULL THEN
        RAISE EXCEPTION 'a reason is required'
            USING ERRCODE = 'NB006', COLUMN = 'reason',
                  DETAIL = 'Administrative changes to numbering are audited with their reason.',
                  HINT = 'Say why, in a few words.';
    END IF;
    IF p_type_required THEN
        RETURN docnum._type(p_code);
    END IF;
    RETURN NULL;
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
                  HINT = 'An administrator can allow manual numbers for the type.';
    END IF;

    v_parsed := docnum._parse(v_type, override_number.document_number);
    IF v_parsed.sequence_value IS NULL AND NOT override_number.skip_validation THEN
        RAISE EXCEPTION 'number % does not match the format of %', quote_literal(left(override_number.document_number, 60)),
                v_type.code
            USING ERRCODE = 'NB006', COLUMN = 'document_number',
                  DETAIL = pg_catalog.format('The format is %s.', v_type.format),
                  HINT = 'Correct the number, or skip validation to record it without a counter.';
    END IF;
    IF v_parsed.sequence_value IS NOT NULL THEN
        PERFORM docnum._check_scope(v_type, nullif(v_parsed.scope_value, ''), 'document_number');
        IF v_parsed.sequence_value > v_type.max_value THEN
            RAISE EXCEPTION 'number % is above max_value % of %', override_number.document_number,
                    v_type.max_value, v_type.code
                USING ERRCODE = 'NB006', COLUMN = 'document_number',
                      DETAIL = 'Its sequence value would exhaust the counter.',
                      HINT = 'Have an administrator raise the type''s maximum value first.';
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
                  HINT = 'Its history shows how it was issued; a number is never issued twice.';
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
                  HINT = 'Its history shows how it was issued; a number is never issued twice.';
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
                  HINT = CASE WHEN v_row.state = 'reserved' THEN 'Cancel the reservation instead.'
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
$$;

-- Voids a number (see _void); returns it.
CREATE FUNCTION docnum.void_number(document_number text, actor text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    void_number.actor := docnum._actor(void_number.actor);
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
    void_and_replace.actor := docnum._actor(void_and_replace.actor);
    v_old := docnum._void(void_and_replace.document_number, void_and_replace.actor, void_and_replace.reason,
                          'VOID');
    IF v_old.counter_id IS NULL THEN
        RAISE EXCEPTION 'number % has no counter to replace it from', void_and_replace.document_number
            USING ERRCODE = 'NB006', COLUMN = 'document_number',
                  DETAIL = 'It was recorded with skip_validation and does not match its format.',
                  HINT = 'Void it, then issue a new number.';
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
$$;

-- Sets a counter to a value (numbering:set of the NestJS service). Moving forward records the jumped-over values as
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
    set_counter.actor := docnum._actor(set_counter.actor);
    v_type := docnum._admin_type(set_counter.document_type, set_counter.actor, set_counter.reason, true);
    v_scope := docnum._check_scope(v_type, set_counter.scope);
    IF set_counter.value IS NULL OR set_counter.value < 0 OR set_counter.value > v_type.max_value THEN
        RAISE EXCEPTION 'invalid counter value %', coalesce(set_counter.value::text, 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'value',
                  DETAIL = pg_catalog.format('A counter value lies between 0 and max_value %s.', v_type.max_value),
                  HINT = 'The next number issued is the value plus one, or the first value after it never issued.';
    END IF;
    v_period := coalesce(set_counter.period,
                         docnum._period(v_type.reset, (now() AT TIME ZONE v_type.time_zone)::date));
    IF (v_type.reset = 'NEVER' AND v_period <> '')
       OR (v_type.reset = 'YEARLY' AND v_period !~ '^[1-9][0-9]{3}$')
       OR (v_type.reset = 'MONTHLY' AND v_period !~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])$') THEN
        RAISE EXCEPTION 'invalid period % for a % reset', quote_literal(left(v_period, 20)), v_type.reset
            USING ERRCODE = 'NB006', COLUMN = 'period',
                  DETAIL = 'Periods are '''' (NEVER), ''2025'' (YEARLY) or ''2025-10'' (MONTHLY), years 1000 to 9999.',
                  HINT = 'Leave the period out for the current one.';
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
$$;

-- Why docnum must not read a relation as an application's number table, or NULL when it may. Only a plain or
-- partitioned table of a permanent schema, without row security, whose column is text or varchar: anything
-- else (a view, a policy, a domain, a type with its own operators) is code that would run in the reader.
CREATE FUNCTION docnum._document_table_problem(p_table oid, p_column name)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
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
$$;

-- Registers an application table that stores document numbers, for docnum.check_duplicates(), which reads it
-- with the rights of whoever calls it (docnum_owner never reads it). Only plain tables qualify (see above).
CREATE FUNCTION docnum.register_document_table(table_name regclass, number_column name,
                                               actor text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
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
                  HINT = 'Name both the table, as schema.table, and the column that holds its numbers.';
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
$$;
