-- docnum: reports for DBAs and auditors. Counter status, gaps with their explanations, duplicate checks, one
-- integrity report, the history of a number and audit export. All read-only; docnum_reader may use them.

-- The whole audit trail, in audit_log's columns: every row of docnum.audit_log, and the allocations (RESERVE,
-- NEXT, REPLACE) since revision 0005, whose record is their ledger row. Such a row reads as the audit row
-- allocation used to write: its audit_id comes from audit_log's own sequence (so audit_id orders the two kinds
-- as they happened), occurred_at is issued_at, new_value the state, value, period, document_ref and expiry it
-- was issued with (what identifies an issue never changes: docnum._ledger_transition_check). Allocation rows are
-- found through the ledger's indexes by number; a time range reads the whole ledger.
CREATE VIEW docnum.audit_trail AS
SELECT a.audit_id, a.occurred_at, a.operation, a.document_type, a.document_number, a.scope_value, a.actor,
       a.session_user_name, a.client_addr, a.application_name, a.old_value, a.new_value, a.metadata
  FROM docnum.audit_log a
UNION ALL
SELECT l.audit_id, l.issued_at,
       CASE WHEN l.token IS NOT NULL THEN 'RESERVE' WHEN l.replaces_number_id IS NOT NULL THEN 'REPLACE'
            ELSE 'NEXT' END,
       l.document_type, l.document_number, nullif(c.scope_value, ''), l.actor, l.session_user_name, l.client_addr,
       l.application_name, NULL::jsonb,
       jsonb_build_object('state', CASE WHEN l.token IS NOT NULL THEN 'reserved' ELSE 'confirmed' END,
                          'sequence_value', l.sequence_value, 'period', c.period,
                          'document_ref', CASE WHEN l.token IS NULL THEN l.document_ref END,
                          'expires_at', l.expires_at),
       l.metadata
  FROM docnum.ledger l
  JOIN docnum.counter c ON c.counter_id = l.counter_id
 WHERE l.audit_id IS NOT NULL;
COMMENT ON VIEW docnum.audit_trail IS 'docnum.audit_log and the allocations recorded by their ledger rows';

-- Per counter: where it stands, how full it is and what became of its numbers (numbering:status).
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

-- The rows of docnum.sequence_status, of one type (NB001 when it does not exist) or of all (NULL), in counter
-- order: the view as a command, which can tell an unknown type from a type without counters.
CREATE FUNCTION docnum.status(document_type text DEFAULT NULL)
RETURNS SETOF docnum.sequence_status
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT docnum._type(status.document_type) WHERE status.document_type IS NOT NULL;
    SELECT s.* FROM docnum.sequence_status s
     WHERE status.document_type IS NULL OR s.document_type = status.document_type
     ORDER BY s.document_type, s.scope_value, s.period;
END;

-- Values at or below a counter that have no ledger row, as ranges: each range is wholly explained by one
-- recorded skip (the latest covering its values) or wholly unexplained (NULL source, reason, actor and
-- recorded_at). One row per hole and skip boundary, never per value, so a jump of any size costs one row.
-- A document_type that does not exist is NB001, not an empty result.
CREATE FUNCTION docnum.gaps(document_type text DEFAULT NULL, scope text DEFAULT NULL, period text DEFAULT NULL)
RETURNS TABLE (document_type text, scope_value text, period text, first_value bigint, last_value bigint,
               value_count bigint, explained boolean, source text, reason text, actor text,
               recorded_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT docnum._type(gaps.document_type) WHERE gaps.document_type IS NOT NULL;
    WITH counters AS (
        SELECT c.counter_id, c.current_value
          FROM docnum.counter c
         WHERE (gaps.document_type IS NULL OR c.document_type = gaps.document_type)
           AND (gaps.scope IS NULL OR c.scope_value = gaps.scope)
           AND (gaps.period IS NULL OR c.period = gaps.period)
    ), issued AS (
        SELECT c.counter_id, l.sequence_value,
               lag(l.sequence_value, 1, 0::bigint) OVER (PARTITION BY c.counter_id ORDER BY l.sequence_value) AS prev
          FROM counters c
          JOIN docnum.ledger l ON l.counter_id = c.counter_id AND l.sequence_value <= c.current_value
    ), holes AS (
        -- holes between consecutive issued values
        SELECT i.counter_id, i.prev + 1 AS from_value, i.sequence_value - 1 AS to_value
          FROM issued i WHERE i.sequence_value > i.prev + 1
        UNION ALL
        -- the hole above the highest issued value (or the whole counter when nothing was issued)
        SELECT c.counter_id, coalesce(m.top, 0) + 1, c.current_value
          FROM counters c
          LEFT JOIN LATERAL (SELECT max(l.sequence_value) AS top FROM docnum.ledger l
                              WHERE l.counter_id = c.counter_id AND l.sequence_value <= c.current_value) m ON true
         WHERE c.current_value > coalesce(m.top, 0)
    ), cuts AS (
        -- where a hole starts, and every skip boundary strictly inside it
        SELECT h.counter_id, h.from_value AS hole_from, h.to_value AS hole_to, h.from_value AS cut FROM holes h
        UNION
        SELECT h.counter_id, h.from_value, h.to_value, e.cut
          FROM holes h
          JOIN docnum.counter_skip k
            ON k.counter_id = h.counter_id AND k.from_value <= h.to_value AND k.to_value >= h.from_value
         CROSS JOIN LATERAL (VALUES (k.from_value), (k.to_value + 1)) AS e(cut)
         WHERE e.cut > h.from_value AND e.cut <= h.to_value
    ), pieces AS (
        -- no skip starts or ends inside a piece: one skip explains all of it or none of it
        SELECT x.counter_id, x.cut AS from_value,
               coalesce(lead(x.cut) OVER (PARTITION BY x.counter_id, x.hole_from ORDER BY x.cut) - 1,
                        x.hole_to) AS to_value
          FROM cuts x
    ), explained AS (
        SELECT p.counter_id, p.from_value, p.to_value, s.skip_id
          FROM pieces p
          LEFT JOIN LATERAL (
              SELECT k.skip_id FROM docnum.counter_skip k
               WHERE k.counter_id = p.counter_id AND k.from_value <= p.from_value AND k.to_value >= p.to_value
               ORDER BY k.skip_id DESC
               LIMIT 1) s ON true
    ), starts AS (
        -- adjacent pieces with the same explanation are one range
        SELECT e.counter_id, e.from_value, e.to_value, e.skip_id,
               CASE WHEN lag(e.to_value) OVER w = e.from_value - 1
                         AND lag(e.skip_id) OVER w IS NOT DISTINCT FROM e.skip_id THEN 0 ELSE 1 END AS starts_run
          FROM explained e
        WINDOW w AS (PARTITION BY e.counter_id ORDER BY e.from_value)
    ), runs AS (
        SELECT st.counter_id, st.from_value, st.to_value, st.skip_id,
               sum(st.starts_run) OVER (PARTITION BY st.counter_id ORDER BY st.from_value) AS run
          FROM starts st
    ), ranges AS (
        SELECT r.counter_id, r.skip_id, min(r.from_value) AS from_value, max(r.to_value) AS to_value
          FROM runs r
         GROUP BY r.counter_id, r.run, r.skip_id
    )
    SELECT c.document_type, c.scope_value, c.period, g.from_value, g.to_value, g.to_value - g.from_value + 1,
           k.skip_id IS NOT NULL, k.source, k.reason, k.actor, k.recorded_at
      FROM ranges g
      JOIN docnum.counter c ON c.counter_id = g.counter_id
      LEFT JOIN docnum.counter_skip k ON k.skip_id = g.skip_id
     ORDER BY c.document_type, c.scope_value, c.period, g.from_value;
END;

-- Numbers used more than once: in the ledger (impossible while its unique constraint stands; this proves it
-- after a restore or a bulk load that bypassed constraints) and in the registered application tables (the
-- same number twice in one table, or in two tables). What numbering:check-duplicates did.
-- SECURITY INVOKER: the caller reads the registered tables (and docnum.ledger) with their own rights, never
-- docnum_owner's. A registered table that cannot be read safely (gone, its column gone or retyped, no
-- longer a plain table, not readable by the caller) is a row with document_number NULL, found_in its name
-- and problem saying why; nothing of it is read.
CREATE FUNCTION docnum.check_duplicates()
RETURNS TABLE (document_number text, occurrences bigint, found_in text[], problem text)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
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
$$;

-- validate()'s checks of docnum's own tables (counters, ledger, audit trail, gaps), run with the owner's
-- rights. It reads nothing but docnum's tables.
CREATE FUNCTION docnum._integrity_findings()
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

    -- Every number has at least the audit record of the operation that issued it: its own ledger row (an
    -- allocation since revision 0005) or an audit row.
    RETURN QUERY
    SELECT 'missing_audit', 'error',
           pg_catalog.format('%s (%s) has no audit row', l.document_number, l.state)
      FROM docnum.ledger l
     WHERE (l.audit_id IS NULL OR l.counter_id IS NULL OR l.session_user_name IS NULL)
       AND NOT EXISTS (SELECT 1 FROM docnum.audit_log a WHERE a.document_number = l.document_number);

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
$$;

-- One integrity report; no rows means healthy (numbering:validate). Each finding is a row.
-- SECURITY INVOKER: docnum's own tables are checked with the owner's rights by _integrity_findings(); the
-- registered application tables are read by check_duplicates() with the caller's rights.
CREATE FUNCTION docnum.validate()
RETURNS TABLE (check_name text, severity text, detail text)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
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
$$;

-- The full audit trail of one number (docnum.audit_trail), oldest first, followed through void-and-replace links in both
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
    SELECT a.audit_id, a.occurred_at, a.operation, a.document_type, a.document_number, a.scope_value, a.actor,
           a.session_user_name, a.client_addr, a.application_name, a.old_value, a.new_value, a.metadata
      FROM docnum.audit_trail a
     WHERE a.document_number = number_history.document_number
        OR a.document_number IN (SELECT k.document_number FROM linked k)
     ORDER BY a.audit_id;
END;

-- Audit records (docnum.audit_trail) with occurred_at in [from_time, to_time), optionally of one type (NB001 when it does not exist), in
-- a stable column order.
CREATE FUNCTION docnum.audit_export(from_time timestamptz, to_time timestamptz, document_type text DEFAULT NULL)
RETURNS TABLE (audit_id bigint, occurred_at timestamptz, operation text, document_type text,
               document_number text, scope_value text, actor text, session_user_name text, client_addr inet,
               application_name text, old_value jsonb, new_value jsonb, metadata jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT docnum._type(audit_export.document_type) WHERE audit_export.document_type IS NOT NULL;
    SELECT a.audit_id, a.occurred_at, a.operation, a.document_type, a.document_number, a.scope_value, a.actor,
           a.session_user_name, a.client_addr, a.application_name, a.old_value, a.new_value, a.metadata
      FROM docnum.audit_trail a
     WHERE a.occurred_at >= audit_export.from_time AND a.occurred_at < audit_export.to_time
       AND (audit_export.document_type IS NULL OR a.document_type = audit_export.document_type)
     ORDER BY a.audit_id;
END;

-- The figures `docnum metrics` exports to Prometheus, read at scrape time: one row per sample, in families named
-- as exported without their numbering_ prefix (see docs and python_client/docnum/ops/metrics.py); label is the
-- value of the family's label beside document_type (scope, code, state, le), '' when it has none. Every type
-- has every per-type row from its definition on. What it reads stays small whatever the ledger holds: the
-- counts each counter keeps (docnum.counter.issued and the rest, moved by the allocation's own UPDATE), the
-- failure sequences, and the partial indexes of pending and settled reservations and of overrides and voids.
-- Per type only the max_scopes fullest counters get a sequence_current row (counters tells how many exist).
CREATE FUNCTION docnum.metrics(max_scopes integer DEFAULT 10)
RETURNS TABLE (metric text, document_type text, label text, value double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF metrics.max_scopes IS NULL OR metrics.max_scopes NOT BETWEEN 0 AND 1000 THEN
        RAISE EXCEPTION 'invalid max_scopes %', coalesce(metrics.max_scopes::text, 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'max_scopes',
                  DETAIL = 'max_scopes is the number of counters per type given a series: 0 to 1000.',
                  HINT = 'The default, 10, shows the fullest counters of each type.';
    END IF;
    RETURN QUERY
    WITH per_type AS MATERIALIZED (
        SELECT t.code, count(c.counter_id)::float8 AS counters, coalesce(sum(c.issued), 0)::float8 AS issued,
               coalesce(sum(c.reservations), 0)::float8 AS reservations,
               coalesce(sum(c.allocations), 0)::float8 AS allocations,
               coalesce(sum(c.lock_wait_seconds), 0)::float8 AS wait_seconds,
               -- the fullest live counter: one that does not reset, or of the current period or a later one
               coalesce(max(c.current_value) FILTER (
                   WHERE c.period >= docnum._period(t.reset, (now() AT TIME ZONE t.time_zone)::date)), 0)
                   * 100.0 / t.max_value AS utilization
          FROM docnum.document_type t
          LEFT JOIN docnum.counter c ON c.document_type = t.code
         GROUP BY t.code
    ), waited AS (
        -- allocations that waited, per type and bucket
        SELECT c.document_type AS code, w.k, sum(w.n)::float8 AS n
          FROM docnum.counter c
         CROSS JOIN LATERAL (VALUES (1, c.wait_le_10ms), (2, c.wait_le_50ms), (3, c.wait_le_100ms),
                                    (4, c.wait_le_500ms), (5, c.wait_le_1s), (6, c.wait_le_2s), (7, c.wait_le_5s),
                                    (8, c.wait_over_5s)) AS w(k, n)
         WHERE c.lock_wait_seconds > 0   -- a counter that never waited adds nothing
         GROUP BY c.document_type, w.k
    ), buckets AS (
        -- cumulative, as Prometheus counts them: the allocations that did not wait, and those that waited up to
        -- the bucket's bound (the last bucket, +Inf, holds every allocation)
        SELECT p.code, (docnum._lock_wait_bounds())[b.k] AS bound,
               p.allocations - sum(coalesce(w.n, 0)) OVER (PARTITION BY p.code)
               + sum(coalesce(w.n, 0)) OVER (PARTITION BY p.code ORDER BY b.k) AS n
          FROM per_type p
         CROSS JOIN generate_series(1, 8) AS b(k)
          LEFT JOIN waited w ON w.code = p.code AND w.k = b.k
    ), pending AS (
        SELECT l.document_type AS code, count(*)::float8 AS n,
               count(*) FILTER (WHERE l.expires_at <= statement_timestamp())::float8 AS overdue,
               extract(epoch FROM statement_timestamp() - min(l.issued_at))::float8 AS oldest
          FROM docnum.ledger l
         WHERE l.state = 'reserved'
         GROUP BY l.document_type
    ), settled AS (
        SELECT l.document_type AS code, l.state, count(*)::float8 AS n
          FROM docnum.ledger l
         WHERE l.token IS NOT NULL AND l.state IN ('cancelled', 'expired', 'voided')
         GROUP BY l.document_type, l.state
    ), admin_events AS (
        SELECT a.document_type AS code, a.operation, count(*)::float8 AS n
          FROM docnum.audit_log a
         WHERE a.operation IN ('MANUAL_OVERRIDE', 'VOID')
         GROUP BY a.document_type, a.operation
    ), fullest AS (
        SELECT c.document_type AS code, concat_ws('/', nullif(c.scope_value, ''), nullif(c.period, '')) AS scope,
               c.current_value,
               row_number() OVER (PARTITION BY c.document_type
                                  ORDER BY c.current_value DESC, c.last_used_at DESC NULLS LAST, c.counter_id)
                   AS rank
          FROM docnum.counter c
    )
    SELECT m.metric, p.code, '', m.value
      FROM per_type p
     CROSS JOIN LATERAL (VALUES ('sequences_total', p.issued), ('allocations_total', p.allocations),
                                ('counters', p.counters), ('sequence_utilization', p.utilization),
                                ('lock_wait_seconds_count', p.allocations),
                                ('lock_wait_seconds_sum', p.wait_seconds)) AS m(metric, value)
    UNION ALL
    SELECT 'lock_wait_seconds_bucket', b.code, coalesce(b.bound::text, '+Inf'), b.n
      FROM buckets b
    UNION ALL
    SELECT 'errors_total', p.code, f.code,
           coalesce(pg_sequence_last_value(to_regclass(docnum._failure_sequence(p.code, f.code))), 0)::float8
      FROM per_type p
     CROSS JOIN unnest(docnum._failure_codes()) AS f(code)
    UNION ALL
    SELECT e.metric, p.code, '', coalesce(a.n, 0)
      FROM per_type p
     CROSS JOIN (VALUES ('MANUAL_OVERRIDE', 'manual_overrides_total'), ('VOID', 'voids_total')) AS e(op, metric)
      LEFT JOIN admin_events a ON a.code = p.code AND a.operation = e.op
    UNION ALL
    SELECT 'reservations', p.code, s.state,
           CASE s.state
               WHEN 'pending' THEN coalesce(r.n, 0)
               WHEN 'confirmed' THEN p.reservations - coalesce(r.n, 0)
                                     - coalesce((SELECT sum(x.n) FROM settled x WHERE x.code = p.code), 0)
               ELSE coalesce((SELECT x.n FROM settled x WHERE x.code = p.code AND x.state = s.state), 0) END
      FROM per_type p
     CROSS JOIN (VALUES ('pending'), ('confirmed'), ('cancelled'), ('expired')) AS s(state)
      LEFT JOIN pending r ON r.code = p.code
    UNION ALL
    SELECT o.metric, p.code, '', coalesce(o.value, 0)
      FROM per_type p
     CROSS JOIN LATERAL (VALUES ('overdue_reservations', (SELECT r.overdue FROM pending r WHERE r.code = p.code)),
                                ('oldest_pending_reservation_seconds',
                                 (SELECT r.oldest FROM pending r WHERE r.code = p.code))) AS o(metric, value)
    UNION ALL
    SELECT 'sequence_current', f.code, f.scope, f.current_value::float8
      FROM fullest f
     WHERE f.rank <= metrics.max_scopes;
END
$$;
