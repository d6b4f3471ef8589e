-- Revision 0007, frozen: released migrations are immutable, do not edit.
-- Metrics from the database. Each counter keeps what the metrics read, moved by the UPDATE an allocation already
-- makes (numbers issued, reservations among them, allocation calls, lock waits by bucket and their total), so
-- they cost no row of their own and roll back with what they count. A failure (NB002, NB003) rolls back
-- everything its transaction wrote, so it is counted by a sequence per type and code, which no rollback takes
-- back. Two partial indexes let docnum.metrics() count settled reservations, overrides and voids without reading
-- the ledger or the audit log. Counts of the numbers issued before this revision are taken from the ledger.

SET LOCAL ROLE docnum_owner;

ALTER TABLE docnum.counter
    ADD COLUMN issued bigint NOT NULL DEFAULT 0,
    ADD COLUMN reservations bigint NOT NULL DEFAULT 0,
    ADD COLUMN allocations bigint NOT NULL DEFAULT 0,
    ADD COLUMN wait_le_10ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN wait_le_50ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN wait_le_100ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN wait_le_500ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN wait_le_1s bigint NOT NULL DEFAULT 0,
    ADD COLUMN wait_le_2s bigint NOT NULL DEFAULT 0,
    ADD COLUMN wait_le_5s bigint NOT NULL DEFAULT 0,
    ADD COLUMN wait_over_5s bigint NOT NULL DEFAULT 0,
    ADD COLUMN lock_wait_seconds double precision NOT NULL DEFAULT 0;

-- A number was issued by allocation when its ledger row is its audit record (audit_id, since 0005), when it is a
-- reservation, or when audit_log recorded its allocation (before 0005). Earlier calls are counted one per number.
UPDATE docnum.counter c
   SET issued = x.issued, reservations = x.reservations, allocations = x.issued
  FROM (SELECT l.counter_id, count(*) AS issued, count(*) FILTER (WHERE l.token IS NOT NULL) AS reservations
          FROM docnum.ledger l
         WHERE l.counter_id IS NOT NULL
           AND (l.audit_id IS NOT NULL OR l.token IS NOT NULL
                OR EXISTS (SELECT 1 FROM docnum.audit_log a
                            WHERE a.document_number = l.document_number
                              AND a.operation IN ('RESERVE', 'NEXT', 'REPLACE')))
         GROUP BY l.counter_id) x
 WHERE c.counter_id = x.counter_id;

CREATE INDEX ledger_settled_reservation_idx ON docnum.ledger (document_type, state)
    WHERE token IS NOT NULL AND state IN ('cancelled', 'expired', 'voided');
CREATE INDEX audit_log_metric_idx ON docnum.audit_log (document_type, operation)
    WHERE operation IN ('MANUAL_OVERRIDE', 'VOID');

CREATE OR REPLACE FUNCTION docnum._count_failure(p_type text, p_code text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_sequence regclass := to_regclass(docnum._failure_sequence(p_type, p_code));
BEGIN
    IF v_sequence IS NOT NULL THEN
        PERFORM nextval(v_sequence);
    END IF;
END
$function$;
REVOKE ALL ON FUNCTION docnum._count_failure(text,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._create_failure_sequences(p_type text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_code text;
BEGIN
    FOREACH v_code IN ARRAY docnum._failure_codes() LOOP
        EXECUTE pg_catalog.format('CREATE SEQUENCE IF NOT EXISTS %s', docnum._failure_sequence(p_type, v_code));
    END LOOP;
END
$function$;
REVOKE ALL ON FUNCTION docnum._create_failure_sequences(text) FROM PUBLIC;

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

    -- Fast path: the counter exists and no other transaction holds it. One statement finds it, takes its lock
    -- and advances it. The CASE makes sure the try-lock runs only on the row that matches the key, whatever
    -- order the plan evaluates the conditions in: no other counter's lock is ever taken.
    -- The same UPDATE counts the allocation for the metrics; it waited for nothing.
    UPDATE docnum.counter c
       SET current_value = c.current_value + 1, last_used_at = now(), issued = c.issued + 1,
           reservations = c.reservations + (p_token IS NOT NULL)::integer, allocations = c.allocations + 1
     WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = v_period
       AND CASE WHEN c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = v_period
                THEN docnum._queue_try_lock(c.counter_id) END
    RETURNING c.counter_id, c.current_value INTO v_counter_id, v_value;
    IF v_counter_id IS NULL THEN
        -- The counter is missing or busy: create it, or wait for it (and time the wait).
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

    -- Fast path as in _issue: an existing, idle counter with room for the batch is locked and advanced at once.
    -- A batch always issues p_count numbers, so the fast path counts them at once, as _issue does.
    UPDATE docnum.counter c
       SET current_value = c.current_value + p_count, last_used_at = now(), issued = c.issued + p_count,
           reservations = c.reservations + CASE WHEN p_ttl IS NULL THEN 0 ELSE p_count END,
           allocations = c.allocations + 1
     WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = v_period
       AND c.current_value <= p_type.max_value - p_count
       AND CASE WHEN c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = v_period
                THEN docnum._queue_try_lock(c.counter_id) END
    RETURNING c.counter_id, c.current_value - p_count INTO v_counter_id, v_last;
    IF v_counter_id IS NULL THEN
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
    PERFORM docnum._check_text('actor', define_type.actor, 200);
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

CREATE OR REPLACE FUNCTION docnum.metrics(max_scopes integer DEFAULT 10)
 RETURNS TABLE(metric text, document_type text, label text, value double precision)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION docnum.metrics(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.metrics(integer) TO docnum_reader;

CREATE OR REPLACE FUNCTION docnum._failure_codes()
 RETURNS text[]
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
RETURN '{NB002,NB003}'::text[];
REVOKE ALL ON FUNCTION docnum._failure_codes() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._failure_sequence(p_type text, p_code text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
RETURN ('docnum.'::text || quote_ident(((p_type || ':'::text) || p_code)));
REVOKE ALL ON FUNCTION docnum._failure_sequence(text,text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._lock_wait_bounds()
 RETURNS double precision[]
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
RETURN '{0.01,0.05,0.1,0.5,1,2,5}'::double precision[];
REVOKE ALL ON FUNCTION docnum._lock_wait_bounds() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._lock_wait_bucket(p_seconds double precision)
 RETURNS integer
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
RETURN ((width_bucket(p_seconds, docnum._lock_wait_bounds()) + 1) - ((p_seconds = ANY (docnum._lock_wait_bounds())))::integer);
REVOKE ALL ON FUNCTION docnum._lock_wait_bucket(double precision) FROM PUBLIC;


-- The failure sequences of the types defined before this revision.
SELECT docnum._create_failure_sequences(t.code) FROM docnum.document_type t;

RESET ROLE;
