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
