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

-- Reads a timestamp written by another system: an ISO 8601 date, optionally with a time and a UTC offset (Z, +07,
-- +07:00 or UTC), in the years 1000 to 9999. NULL for anything else, including the special values PostgreSQL
-- would accept ('infinity', 'epoch', 'now'...) and time zones it does not know.
CREATE FUNCTION docnum._to_timestamptz(p_text text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
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
    v_limit_ms bigint;
BEGIN
    import_numbers.actor := docnum._actor(import_numbers.actor);
    PERFORM docnum._require_writable();
    PERFORM docnum._check_text('actor', import_numbers.actor);
    IF import_numbers.rows IS NULL OR jsonb_typeof(import_numbers.rows) <> 'array' THEN
        RAISE EXCEPTION 'rows must be a JSON array'
            USING ERRCODE = 'NB006', COLUMN = 'rows', DETAIL = 'import_numbers takes an array of objects.',
                  HINT = 'Give an array of objects, e.g. [{"document_type": "COR", '
                         '"document_number": "COR-2019-00042"}].';
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
$$;
