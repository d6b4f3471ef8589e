-- Revision 0005, downgrade, frozen: puts back the functions and tables of revision 0004. The allocations recorded
-- only by their ledger rows are first written to docnum.audit_log as the rows revision 0004 would have written
-- (same audit_id, time, operation and values), so the trail loses nothing.

SET LOCAL ROLE docnum_owner;

INSERT INTO docnum.audit_log (audit_id, occurred_at, operation, document_type, document_number, scope_value, actor,
                              session_user_name, client_addr, application_name, old_value, new_value, metadata)
OVERRIDING SYSTEM VALUE
SELECT t.audit_id, t.occurred_at, t.operation, t.document_type, t.document_number, t.scope_value, t.actor,
       coalesce(t.session_user_name, session_user), t.client_addr, t.application_name, t.old_value, t.new_value,
       t.metadata
  FROM docnum.audit_trail t
  JOIN docnum.ledger l ON l.audit_id = t.audit_id AND l.document_number = t.document_number
 ORDER BY t.audit_id;

DROP FUNCTION docnum.reserve_numbers(text,integer,text,text,jsonb,interval,date);
DROP FUNCTION docnum.next_numbers(text,integer,text,text,date);
DROP FUNCTION docnum._issue_batch(docnum.document_type,text,date,integer,interval,text,jsonb);
DROP FUNCTION docnum._issue(docnum.document_type,text,date,text,uuid,timestamp with time zone,text,text,jsonb,text);
DROP FUNCTION docnum._check_count(integer);
DROP FUNCTION docnum._batch_limit();

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
                         reserve_number.metadata, 'RESERVE', reserve_number.request_id);
END
$function$;
REVOKE ALL ON FUNCTION docnum.reserve_number(text,text,text,jsonb,interval,date,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.reserve_number(text,text,text,jsonb,interval,date,text) TO docnum_app;

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
                           jsonb_build_object('replaces', v_old.document_number, 'reason', void_and_replace.reason),
                           'REPLACE');
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
    FROM docnum.audit_log a
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
    FROM docnum.audit_log a
   WHERE ((a.document_number = number_history.document_number) OR (a.document_number IN ( SELECT k.document_number
            FROM linked k)))
   ORDER BY a.audit_id;
END;
REVOKE ALL ON FUNCTION docnum.number_history(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.number_history(text) TO docnum_app;
GRANT EXECUTE ON FUNCTION docnum.number_history(text) TO docnum_reader;


DROP VIEW docnum.audit_trail;

ALTER TABLE docnum.ledger
    DROP COLUMN audit_id,
    DROP COLUMN session_user_name,
    DROP COLUMN client_addr,
    DROP COLUMN application_name;

RESET ROLE;
