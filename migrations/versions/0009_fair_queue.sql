-- Revision 0009: the fair queue in front of each counter is the lock of a row only docnum can take.
-- Until 0008 waiters queued on an advisory lock, which any role can take, so the wait in that queue was bounded
-- (100 ms) and a waiter past the bound went on to the counter's row lock; past some 64 clients on one counter
-- the waiters stampeded the row lock and throughput fell to a quarter (benchmarks/COST.md). Now every counter
-- has a row in docnum.counter_queue, never changed, whose FOR UPDATE lock is the counter's turn: its waiters
-- are served in arrival order, with no bound but the lock timeout, and no other role can take it.
-- The slow path also locks the counter row outside a subtransaction: a lock taken in one, then the UPDATE, left
-- a MultiXact on the row's versions, which index scans cannot skip until VACUUM (the lasting slowdown after a
-- burst). docnum._durable_commit becomes an inlined SQL rule; _prepare, _issue and _issue_batch set no search_path
-- of their own (their callers pin it); the ledger's replacement links are checked by its row trigger instead of
-- two foreign keys. The three together pay for the turn's row lock (benchmarks/COST.md).

SET LOCAL ROLE docnum_owner;

CREATE TABLE docnum.counter_queue (
    document_type text NOT NULL,
    scope_value   text NOT NULL,
    period        text NOT NULL,
    counter_id    bigint NOT NULL CONSTRAINT counter_queue_counter_key UNIQUE,
    CONSTRAINT counter_queue_pkey PRIMARY KEY (document_type, scope_value, period)
);
COMMENT ON TABLE docnum.counter_queue IS
    'The turn of each counter: allocations lock its row (FOR UPDATE) and are served in arrival order';
INSERT INTO docnum.counter_queue (document_type, scope_value, period, counter_id)
SELECT c.document_type, c.scope_value, c.period, c.counter_id FROM docnum.counter c;
GRANT SELECT ON docnum.counter_queue TO docnum_reader;

-- The replacement links are checked by docnum._ledger_verify_row for every writer but docnum's functions, as the
-- counter link is since 0006: the two foreign keys fired a trigger on every allocation's ledger row.
CALL pg_temp.docnum_alter_table('docnum.ledger', $alter$
    DROP CONSTRAINT ledger_replaces_number_id_fkey,
    DROP CONSTRAINT ledger_replaced_by_number_id_fkey
$alter$);

DROP FUNCTION docnum._queue_try_lock(bigint);
DROP FUNCTION docnum._queue_lock(bigint);
DROP FUNCTION docnum._durable_commit();

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

CREATE OR REPLACE FUNCTION docnum._counter_queue_row()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    INSERT INTO docnum.counter_queue (document_type, scope_value, period, counter_id)
    VALUES (NEW.document_type, NEW.scope_value, NEW.period, NEW.counter_id);
    RETURN NULL;
END
$function$;
REVOKE ALL ON FUNCTION docnum._counter_queue_row() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._issue(p_type docnum.document_type, p_scope text, p_date date, p_state text, p_token uuid, p_expires_at timestamp with time zone, p_actor text, p_document_ref text, p_metadata jsonb, p_request_id text DEFAULT NULL::text)
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

CREATE OR REPLACE FUNCTION docnum._ledger_verify_row()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF NEW.document_type IS NULL OR NEW.document_number IS NULL OR NEW.state IS NULL OR NEW.issued_at IS NULL THEN
        RETURN NEW;
    END IF;
    IF docnum._ledger_row_is_valid(NEW) IS FALSE THEN
        RAISE EXCEPTION 'new row for relation "ledger" violates check constraint "ledger_row_check"'
            USING ERRCODE = 'check_violation', SCHEMA = 'docnum', TABLE = 'ledger',
                  CONSTRAINT = 'ledger_row_check', DETAIL = pg_catalog.format('Failing row contains %s.', NEW);
    END IF;
    IF NEW.counter_id IS NOT NULL AND NOT EXISTS (
           SELECT FROM docnum.counter c
            WHERE c.counter_id = NEW.counter_id AND c.document_type = NEW.document_type) THEN
        RAISE EXCEPTION 'insert or update on table "ledger" violates foreign key constraint "ledger_counter_fkey"'
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'docnum', TABLE = 'ledger',
                  CONSTRAINT = 'ledger_counter_fkey',
                  DETAIL = pg_catalog.format('Key (counter_id, document_type)=(%s, %s) is not present in table '
                                             '"counter".', NEW.counter_id, NEW.document_type);
    END IF;
    IF NEW.replaces_number_id IS NOT NULL AND NOT EXISTS (
           SELECT FROM docnum.ledger l WHERE l.number_id = NEW.replaces_number_id) THEN
        RAISE EXCEPTION 'insert or update on table "ledger" violates foreign key constraint '
                        '"ledger_replaces_number_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'docnum', TABLE = 'ledger',
                  CONSTRAINT = 'ledger_replaces_number_id_fkey',
                  DETAIL = pg_catalog.format('Key (replaces_number_id)=(%s) is not present in table "ledger".',
                                             NEW.replaces_number_id);
    END IF;
    IF NEW.replaced_by_number_id IS NOT NULL AND NOT EXISTS (
           SELECT FROM docnum.ledger l WHERE l.number_id = NEW.replaced_by_number_id) THEN
        RAISE EXCEPTION 'insert or update on table "ledger" violates foreign key constraint '
                        '"ledger_replaced_by_number_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'docnum', TABLE = 'ledger',
                  CONSTRAINT = 'ledger_replaced_by_number_id_fkey',
                  DETAIL = pg_catalog.format('Key (replaced_by_number_id)=(%s) is not present in table "ledger".',
                                             NEW.replaced_by_number_id);
    END IF;
    RETURN NEW;
END
$function$;
REVOKE ALL ON FUNCTION docnum._ledger_verify_row() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docnum._lock_counter(p_type docnum.document_type, p_scope text, p_period text)
 RETURNS docnum.counter
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_session     text := current_setting('lock_timeout');
    v_limit_ms    bigint := docnum._lock_limit_ms(p_type.lock_timeout);
    v_counter_id  bigint;
    v_counter     docnum.counter;
BEGIN
    SELECT c.counter_id INTO v_counter_id
      FROM docnum.counter c
     WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = p_period;
    PERFORM docnum._set_lock_timeout(v_limit_ms::text);
    IF v_counter_id IS NULL THEN
        -- A new counter (a trigger adds its queue row). Another transaction creating the same one makes this
        -- INSERT wait for its outcome.
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

    -- The counter's turn, in arrival order, within the limit.
    BEGIN
        PERFORM FROM docnum.counter_queue q WHERE q.counter_id = v_counter_id FOR UPDATE;
        IF NOT FOUND THEN
            -- A queue row cannot go missing (only the owner could delete it); should it, it is made again.
            INSERT INTO docnum.counter_queue (document_type, scope_value, period, counter_id)
            VALUES (p_type.code, p_scope, p_period, v_counter_id)
            ON CONFLICT DO NOTHING;
            PERFORM FROM docnum.counter_queue q WHERE q.counter_id = v_counter_id FOR UPDATE;
        END IF;
    EXCEPTION WHEN lock_not_available THEN
        PERFORM docnum._raise_lock_timeout(p_type.code, p_scope, p_period, v_limit_ms);
    END;
    PERFORM docnum._set_lock_timeout(v_session);
    -- The counter itself, free now unless a writer that did not take the turn holds it.
    SELECT c.* INTO STRICT v_counter FROM docnum.counter c WHERE c.counter_id = v_counter_id FOR NO KEY UPDATE;
    RETURN v_counter;
END
$function$;
REVOKE ALL ON FUNCTION docnum._lock_counter(docnum.document_type,text,text) FROM PUBLIC;

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
    IF o_type.scope IN ('PROJECT', 'CONTRACT') AND docnum._is_scope_value(p_scope) THEN
        o_scope := p_scope;
    ELSIF p_scope IS NULL AND o_type.scope NOT IN ('PROJECT', 'CONTRACT') THEN
        o_scope := '';
    ELSE
        o_scope := docnum._check_scope(o_type, p_scope);
    END IF;
    IF p_actor IS NOT NULL THEN
        PERFORM docnum._check_text('actor', p_actor, 200);
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

CREATE OR REPLACE FUNCTION docnum._durable_commit()
 RETURNS text
 LANGUAGE sql
RETURN CASE WHEN (current_setting('synchronous_commit'::text) = ANY (ARRAY['on'::text, 'remote_apply'::text])) THEN NULL::text ELSE set_config('synchronous_commit'::text, 'on'::text, true) END;
REVOKE ALL ON FUNCTION docnum._durable_commit() FROM PUBLIC;

CREATE TRIGGER counter_queue_row AFTER INSERT ON docnum.counter
    FOR EACH ROW EXECUTE FUNCTION docnum._counter_queue_row();

RESET ROLE;
