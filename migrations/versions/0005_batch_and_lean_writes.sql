-- Revision 0005, frozen: released migrations are immutable, do not edit.
-- Batch allocation (docnum.next_numbers, docnum.reserve_numbers: one lock, one set-based write, at most 10,000
-- numbers a call) and a leaner write set: an allocation (RESERVE, NEXT, REPLACE) writes no audit_log row any more;
-- its ledger row is its audit record (new columns audit_id, drawn from audit_log's identity sequence, and
-- session_user_name, client_addr, application_name), and the view docnum.audit_trail shows audit_log and those
-- ledger rows as one trail (number_history, audit_export and validate read it). Numbers issued before this
-- revision keep their audit rows and have audit_id NULL.

SET LOCAL ROLE docnum_owner;

ALTER TABLE docnum.ledger
    ADD COLUMN audit_id bigint,
    ADD COLUMN session_user_name text,
    ADD COLUMN client_addr inet,
    ADD COLUMN application_name text;

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
REVOKE ALL ON docnum.audit_trail FROM PUBLIC;
GRANT SELECT ON docnum.audit_trail TO docnum_reader;

DROP FUNCTION docnum._issue(docnum.document_type,text,date,text,uuid,timestamp with time zone,text,text,jsonb,text,text);

CREATE OR REPLACE FUNCTION docnum._check_count(p_count integer)
 RETURNS void
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF p_count IS NULL OR p_count < 1 OR p_count > docnum._batch_limit() THEN
        RAISE EXCEPTION 'invalid count %', coalesce(p_count::text, 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'count',
                  DETAIL = pg_catalog.format('A batch issues 1 to %s numbers.', docnum._batch_limit()),
                  HINT = 'Split a larger run into several batches.';
    END IF;
END
$function$;
REVOKE ALL ON FUNCTION docnum._check_count(integer) FROM PUBLIC;

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
$function$;
REVOKE ALL ON FUNCTION docnum._integrity_findings() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum._integrity_findings() TO docnum_reader;

CREATE OR REPLACE FUNCTION docnum._issue(p_type docnum.document_type, p_scope text, p_date date, p_state text, p_token uuid, p_expires_at timestamp with time zone, p_actor text, p_document_ref text, p_metadata jsonb, p_request_id text DEFAULT NULL::text)
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
                THEN docnum._queue_try_lock(c.counter_id) END
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
                                        actor, document_ref, metadata, expires_at, confirmed_at, request_id,
                                        audit_id, session_user_name, client_addr, application_name)
        VALUES (p_type.code, v_counter_id, v_value,
                v_head || docnum._seq_text(v_value, p_type.seq_width) || v_tail, p_state, p_token,
                p_actor, p_document_ref, p_metadata, p_expires_at,
                CASE WHEN p_state = 'confirmed' THEN now() END, p_request_id,
                nextval('docnum.audit_log_audit_id_seq'::regclass), session_user, inet_client_addr(),
                current_setting('application_name'))
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
REVOKE ALL ON FUNCTION docnum._issue(docnum.document_type,text,date,text,uuid,timestamp with time zone,text,text,jsonb,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._issue_batch(p_type docnum.document_type, p_scope text, p_date date, p_count integer, p_ttl interval, p_actor text, p_metadata jsonb)
 RETURNS SETOF docnum.reservation
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
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

    -- Fast path as in _issue: an existing, idle counter with room for the batch is locked and advanced at once.
    UPDATE docnum.counter c
       SET current_value = c.current_value + p_count, last_used_at = now()
     WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = v_period
       AND c.current_value <= p_type.max_value - p_count
       AND CASE WHEN c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = v_period
                THEN docnum._queue_try_lock(c.counter_id) END
    RETURNING c.counter_id, c.current_value - p_count INTO v_counter_id, v_last;
    IF v_counter_id IS NULL THEN
        -- Missing, busy or near its end: create it or wait for it, then look at what is left.
        SELECT c.counter_id, c.current_value INTO v_counter_id, v_last
          FROM docnum._lock_counter(p_type, p_scope, v_period) c;
    END IF;

    LOOP
        IF v_need > p_type.max_value - v_last THEN
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
    UPDATE docnum.counter c SET current_value = v_last, last_used_at = now()
     WHERE c.counter_id = v_counter_id AND c.current_value <> v_last;

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
                                       NULL, next_number.actor, next_number.document_ref, NULL,
                                       next_number.request_id)).document_number);
    END IF;
    RETURN (docnum._issue(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, 'confirmed', NULL, NULL,
                          next_number.actor, next_number.document_ref, NULL)).document_number;
END
$function$;
REVOKE ALL ON FUNCTION docnum.next_number(text,text,text,text,date,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.next_number(text,text,text,text,date,text) TO docnum_app;

CREATE OR REPLACE FUNCTION docnum.next_numbers(document_type text, count integer, scope text DEFAULT NULL::text, actor text DEFAULT NULL::text, document_date date DEFAULT NULL::date)
 RETURNS TABLE(document_number text, sequence_value bigint)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_prepared record;
BEGIN
    v_prepared := docnum._prepare(next_numbers.document_type, next_numbers.scope, next_numbers.actor,
                                  next_numbers.document_date);
    PERFORM docnum._check_count(next_numbers.count);
    RETURN QUERY
    SELECT b.document_number, b.sequence_value
      FROM docnum._issue_batch(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, next_numbers.count,
                               NULL, next_numbers.actor, NULL) b;
END
$function$;
REVOKE ALL ON FUNCTION docnum.next_numbers(text,integer,text,text,date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.next_numbers(text,integer,text,text,date) TO docnum_app;

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
            USING ERRCODE = 'NB006', COLUMN = 'ttl', DETAIL = 'A reservation lasts more than 0 and at most 7 days.',
                  HINT = 'Pass ttl => interval ''10 minutes'', or NULL for the type''s default.';
    END IF;
    IF reserve_number.metadata IS NOT NULL AND jsonb_typeof(reserve_number.metadata) <> 'object' THEN
        RAISE EXCEPTION 'invalid metadata'
            USING ERRCODE = 'NB006', COLUMN = 'metadata',
                  DETAIL = 'metadata must be a JSON object.', HINT = 'Pass ''{}'' or NULL.';
    END IF;
    RETURN docnum._issue(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, 'reserved',
                         gen_random_uuid(), statement_timestamp() + v_ttl, reserve_number.actor, NULL,
                         reserve_number.metadata, reserve_number.request_id);
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
    v_prepared := docnum._prepare(reserve_numbers.document_type, reserve_numbers.scope, reserve_numbers.actor,
                                  reserve_numbers.document_date);
    PERFORM docnum._check_count(reserve_numbers.count);
    v_ttl := coalesce(reserve_numbers.ttl, (v_prepared.o_type).reservation_ttl);
    IF v_ttl <= interval '0' OR v_ttl > interval '7 days' THEN
        RAISE EXCEPTION 'invalid reservation ttl %', left(v_ttl::text, 60)
            USING ERRCODE = 'NB006', COLUMN = 'ttl', DETAIL = 'A reservation lasts more than 0 and at most 7 days.',
                  HINT = 'Pass ttl => interval ''10 minutes'', or NULL for the type''s default.';
    END IF;
    IF reserve_numbers.metadata IS NOT NULL AND jsonb_typeof(reserve_numbers.metadata) <> 'object' THEN
        RAISE EXCEPTION 'invalid metadata'
            USING ERRCODE = 'NB006', COLUMN = 'metadata',
                  DETAIL = 'metadata must be a JSON object.', HINT = 'Pass ''{}'' or NULL.';
    END IF;
    RETURN QUERY
    SELECT b.* FROM docnum._issue_batch(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date,
                                        reserve_numbers.count, v_ttl, reserve_numbers.actor,
                                        reserve_numbers.metadata) b;
END
$function$;
REVOKE ALL ON FUNCTION docnum.reserve_numbers(text,integer,text,text,jsonb,interval,date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.reserve_numbers(text,integer,text,text,jsonb,interval,date) TO docnum_app;

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

CREATE OR REPLACE FUNCTION docnum._batch_limit()
 RETURNS integer
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
RETURN 10000;
REVOKE ALL ON FUNCTION docnum._batch_limit() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum.audit_export(from_time timestamp with time zone, to_time timestamp with time zone, document_type text DEFAULT NULL::text)
 RETURNS TABLE(audit_id bigint, occurred_at timestamp with time zone, operation text, document_type text, document_number text, scope_value text, actor text, session_user_name text, client_addr inet, application_name text, old_value jsonb, new_value jsonb, metadata jsonb)
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
BEGIN ATOMIC
 SELECT docnum._type(document_type) AS _type
   WHERE (document_type IS NOT NULL);
 SELECT a.audit_id,
     a.occurred_at,
     a.operation,
     a.document_type,
     a.document_number,
     a.scope_value,
     a.actor,
     a.session_user_name,
     a.client_addr,
     a.application_name,
     a.old_value,
     a.new_value,
     a.metadata
    FROM docnum.audit_trail a
   WHERE ((a.occurred_at >= audit_export.from_time) AND (a.occurred_at < audit_export.to_time) AND ((audit_export.document_type IS NULL) OR (a.document_type = audit_export.document_type)))
   ORDER BY a.audit_id;
END;
REVOKE ALL ON FUNCTION docnum.audit_export(timestamp with time zone,timestamp with time zone,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.audit_export(timestamp with time zone,timestamp with time zone,text) TO docnum_reader;

CREATE OR REPLACE FUNCTION docnum.number_history(document_number text)
 RETURNS SETOF docnum.audit_log
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
BEGIN ATOMIC
 WITH RECURSIVE linked(number_id, document_number) AS (
          SELECT l.number_id,
             l.document_number
            FROM docnum.ledger l
           WHERE (l.document_number = number_history.document_number)
         UNION
          SELECT o.number_id,
             o.document_number
            FROM ((linked k
              JOIN docnum.ledger cur ON ((cur.number_id = k.number_id)))
              JOIN docnum.ledger o ON (((o.number_id = cur.replaces_number_id) OR (o.number_id = cur.replaced_by_number_id))))
         )
  SELECT a.audit_id,
     a.occurred_at,
     a.operation,
     a.document_type,
     a.document_number,
     a.scope_value,
     a.actor,
     a.session_user_name,
     a.client_addr,
     a.application_name,
     a.old_value,
     a.new_value,
     a.metadata
    FROM docnum.audit_trail a
   WHERE ((a.document_number = number_history.document_number) OR (a.document_number IN ( SELECT k.document_number
            FROM linked k)))
   ORDER BY a.audit_id;
END;
REVOKE ALL ON FUNCTION docnum.number_history(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.number_history(text) TO docnum_app;
GRANT EXECUTE ON FUNCTION docnum.number_history(text) TO docnum_reader;


RESET ROLE;
