-- docnum: allocation. reserve_number / confirm_number / cancel_number / next_number / expire_reservations.
-- Allocations of one counter take turns: each locks the counter's queue row (docnum.counter_queue), which only
-- docnum's functions can lock and which serves its waiters in arrival order, then advances the counter;
-- everything that can be computed before the turn is.

-- Every transaction that writes numbers commits with synchronous_commit at least 'on': its commit returns only once
-- the commit record is flushed locally and, when synchronous standbys are configured, on them. 'off', 'local' and
-- 'remote_write' are raised to 'on' for this transaction; 'on' and the stronger 'remote_apply' are kept. One SQL
-- expression, which the planner inlines where it is called (it returns the setting made, or NULL).
CREATE FUNCTION docnum._durable_commit() RETURNS text
LANGUAGE sql VOLATILE
RETURN CASE WHEN pg_catalog.current_setting('synchronous_commit') IN ('on', 'remote_apply') THEN NULL
            ELSE pg_catalog.set_config('synchronous_commit', 'on', true) END;

-- Refuses to write where a number could not be made durable (hot standby, read-only transaction), and makes
-- this transaction's commit durable.
CREATE FUNCTION docnum._require_writable() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
$$;

-- Loads a type and validates the arguments every allocation shares; returns the type and the normalised
-- scope value ('' when the type takes none) and document date. Nothing is locked or written.
-- Like docnum._issue and docnum._issue_batch, it runs with the search_path its caller pinned (only docnum's
-- SECURITY DEFINER functions, all with search_path = pg_catalog, pg_temp, may call it) and sets none of its own:
-- a SET clause costs every call a save and restore of the setting, on the hot path.
CREATE FUNCTION docnum._prepare(p_code text, p_scope text, p_actor text, p_date date,
                                OUT o_type docnum.document_type, OUT o_scope text, OUT o_date date)
LANGUAGE plpgsql STABLE
AS $$
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
    IF docnum._has_scope_value(o_type.scope) AND docnum._is_scope_value(p_scope) THEN
        o_scope := p_scope;
    ELSIF p_scope IS NULL AND NOT docnum._has_scope_value(o_type.scope) THEN
        o_scope := '';
    ELSE
        o_scope := docnum._check_scope(o_type, p_scope);
    END IF;
    IF p_actor IS NOT NULL THEN
        PERFORM docnum._check_text('actor', p_actor);
    END IF;
    IF p_date IS NULL THEN
        -- The period comes from the type's time zone, never from the session's TimeZone.
        o_date := (now() AT TIME ZONE o_type.time_zone)::date;
    ELSIF p_date NOT BETWEEN date '1000-01-01' AND date '9999-12-31' THEN
        RAISE EXCEPTION 'invalid document date %', p_date
            USING ERRCODE = 'NB006', COLUMN = 'document_date',
                  DETAIL = 'A document date lies between the years 1000 and 9999.',
                  HINT = 'Give the date on the document, or leave it out for today in the type''s time zone.';
    ELSE
        o_date := p_date;
    END IF;
END
$$;

-- NB003: the counter of (type, scope, period) stayed busy for longer than the limit.
CREATE FUNCTION docnum._raise_lock_timeout(p_type text, p_scope text, p_period text, p_limit_ms bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM docnum._count_failure(p_type, 'NB003');
    RAISE EXCEPTION 'timed out waiting for the % counter', p_type
        USING ERRCODE = 'NB003',
              DETAIL = pg_catalog.format('Counter (%s, %L, %L) was held by another transaction for longer than the '
                                         'lock timeout (%s ms).', p_type, left(p_scope, 64), p_period, p_limit_ms),
              HINT = 'Retry; if it persists, find the long or idle transaction that holds this counter: the '
                     'doctor checks list such sessions.';
END
$$;

-- Finds or creates the counter of (type, scope, period) and takes its turn for this transaction, waiting at most
-- the limit of docnum._lock_limit_ms (NB003 when it runs out). Returns the counter row, locked.
-- The turn is the lock of the counter's queue row (docnum.counter_queue, FOR UPDATE): its waiters are served in
-- arrival order, and only docnum's functions can take it, so nothing another role does can hold a counter up.
-- The counter row is then locked outside any subtransaction: a lock taken in one and followed by the UPDATE
-- would leave a MultiXact on the row, whose old versions index scans can then no longer skip (after a burst,
-- every later lookup of the counter walked them until VACUUM).
-- The counter is looked up before it is created: an INSERT ... ON CONFLICT would use up an identity value on
-- every call.
CREATE FUNCTION docnum._lock_counter(p_type docnum.document_type, p_scope text, p_period text)
RETURNS docnum.counter
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
$$;

-- Issues the next free value of one counter as a ledger row, which is also its audit record (see
-- docnum._allocation_audit). The caller has validated everything. Values that already have a ledger row, or
-- whose text is taken, are skipped, never reused. What the row reads as in the audit trail (RESERVE, NEXT,
-- REPLACE) follows from the row itself (a token, a replaced number), so it is not stored. It sets no
-- search_path of its own (see docnum._prepare).
CREATE FUNCTION docnum._issue(p_type docnum.document_type, p_scope text, p_date date, p_state text,
                              p_token uuid, p_expires_at timestamptz, p_actor text, p_document_ref text,
                              p_metadata jsonb, p_request_id text DEFAULT NULL,
                              p_request_digest text DEFAULT NULL)
RETURNS docnum.reservation
LANGUAGE plpgsql
AS $$
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
                      HINT = 'An administrator can raise the type''s maximum value.';
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
            USING HINT = 'Plan to raise the type''s maximum value.';
    END IF;
    RETURN ROW(p_token, v_number, v_value, p_expires_at)::docnum.reservation;
END
$$;

-- A request key names one call of reserve_number or next_number, so that a caller whose COMMIT got no answer
-- can retry it safely. Returns what was issued for the key (NULL when nothing was, or it rolled back), after
-- checking that the retry asks for the same thing (NB012 otherwise): the same function, type and scope, and,
-- for numbers issued from revision 0010 on, the same arguments (p_digest, docnum._request_digest).
CREATE FUNCTION docnum._replay(p_request_id text, p_type docnum.document_type, p_scope text, p_reserve boolean,
                               p_digest text)
RETURNS docnum.reservation
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row   docnum.ledger;
    v_scope text;
BEGIN
    PERFORM docnum._check_text('request_id', p_request_id);
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
$$;

-- Reserves the next number of a type for ttl (default: the type's reservation_ttl). The number is written to
-- the ledger and never issued again, whether it is later confirmed, cancelled or left to expire. With a
-- request_id, a repeated call returns the reservation already made for it.
CREATE FUNCTION docnum.reserve_number(
    document_type text, scope text DEFAULT NULL, actor text DEFAULT NULL, metadata jsonb DEFAULT NULL,
    ttl interval DEFAULT NULL, document_date date DEFAULT NULL, request_id text DEFAULT NULL)
RETURNS docnum.reservation
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prepared record;
    v_ttl interval;
    v_done docnum.reservation;
    v_digest text;
BEGIN
    reserve_number.actor := docnum._actor(reserve_number.actor);
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
                  HINT = 'Give a duration such as 10 minutes, or leave it out for the type''s default.';
    END IF;
    PERFORM docnum._check_metadata('metadata', reserve_number.metadata);
    RETURN docnum._issue(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, 'reserved',
                         gen_random_uuid(), statement_timestamp() + v_ttl, reserve_number.actor, NULL,
                         reserve_number.metadata, reserve_number.request_id, v_digest);
END
$$;

-- Allocates and confirms a number inside the caller's transaction: if that transaction rolls back, the
-- number, the counter increment and the audit row roll back with it, so the sequence stays gapless. With a
-- request_id, a repeated call returns the number already issued for it.
CREATE FUNCTION docnum.next_number(
    document_type text, scope text DEFAULT NULL, actor text DEFAULT NULL, document_ref text DEFAULT NULL,
    document_date date DEFAULT NULL, request_id text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prepared record;
    v_digest text;
BEGIN
    next_number.actor := docnum._actor(next_number.actor);
    v_prepared := docnum._prepare(next_number.document_type, next_number.scope, next_number.actor,
                                  next_number.document_date);
    IF next_number.document_ref IS NOT NULL THEN
        PERFORM docnum._check_text('document_ref', next_number.document_ref);
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
$$;

-- The largest batch one call issues. A batch holds its counter for the whole statement, so the cap bounds how
-- long every other allocation of that counter waits behind it (10,000 rows take some 0.1-0.3 s).
CREATE FUNCTION docnum._batch_limit() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 10000;

-- Issues the next p_count free values of one counter as ledger rows, in order, under one lock and in one
-- set-based INSERT (a further one only for values that were taken, which are skipped like _issue skips them).
-- Each row is its own audit record, like _issue's. NB002 before anything is written when the batch would pass
-- max_value. The caller has validated everything; p_ttl NULL issues confirmed numbers, otherwise reservations.
-- It sets no search_path of its own (see docnum._prepare).
CREATE FUNCTION docnum._issue_batch(p_type docnum.document_type, p_scope text, p_date date, p_count integer,
                                    p_ttl interval, p_actor text, p_metadata jsonb)
RETURNS SETOF docnum.reservation
LANGUAGE plpgsql
AS $$
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
                      HINT = 'Issue a smaller batch, or have an administrator raise the type''s maximum value.';
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
            USING HINT = 'Plan to raise the type''s maximum value.';
    END IF;
    RETURN QUERY SELECT i.* FROM unnest(v_issued) i ORDER BY i.sequence_value;
END
$$;

-- NB006 unless 1 <= count <= docnum._batch_limit().
CREATE FUNCTION docnum._check_count(p_count integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_count IS NULL OR p_count < 1 OR p_count > docnum._batch_limit() THEN
        RAISE EXCEPTION 'invalid count %', coalesce(p_count::text, 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'count',
                  DETAIL = pg_catalog.format('A batch issues 1 to %s numbers.', docnum._batch_limit()),
                  HINT = 'Split a larger run into several batches.';
    END IF;
END
$$;

-- Allocates and confirms the next count numbers of one counter, in order, inside the caller's transaction (a
-- rollback takes them all back). Consecutive values, except that values the ledger already holds are skipped.
-- One lock, one write; each number is audited as NEXT. A batch takes no request key: see docs/sql-api.md.
CREATE FUNCTION docnum.next_numbers(
    document_type text, count integer, scope text DEFAULT NULL, actor text DEFAULT NULL,
    document_date date DEFAULT NULL)
RETURNS TABLE (document_number text, sequence_value bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prepared record;
BEGIN
    next_numbers.actor := docnum._actor(next_numbers.actor);
    v_prepared := docnum._prepare(next_numbers.document_type, next_numbers.scope, next_numbers.actor,
                                  next_numbers.document_date);
    PERFORM docnum._check_count(next_numbers.count);
    RETURN QUERY
    SELECT b.document_number, b.sequence_value
      FROM docnum._issue_batch(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date, next_numbers.count,
                               NULL, next_numbers.actor, NULL) b;
END
$$;

-- Reserves the next count numbers of one counter, in order, each with its own token, for ttl (default: the
-- type's reservation_ttl); each is confirmed, cancelled or expires on its own, and is audited as RESERVE.
CREATE FUNCTION docnum.reserve_numbers(
    document_type text, count integer, scope text DEFAULT NULL, actor text DEFAULT NULL,
    metadata jsonb DEFAULT NULL, ttl interval DEFAULT NULL, document_date date DEFAULT NULL)
RETURNS SETOF docnum.reservation
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prepared record;
    v_ttl interval;
BEGIN
    reserve_numbers.actor := docnum._actor(reserve_numbers.actor);
    v_prepared := docnum._prepare(reserve_numbers.document_type, reserve_numbers.scope, reserve_numbers.actor,
                                  reserve_numbers.document_date);
    PERFORM docnum._check_count(reserve_numbers.count);
    v_ttl := coalesce(reserve_numbers.ttl, (v_prepared.o_type).reservation_ttl);
    IF v_ttl <= interval '0' OR v_ttl > interval '7 days' THEN
        RAISE EXCEPTION 'invalid reservation ttl %', left(v_ttl::text, 60)
            USING ERRCODE = 'NB006', COLUMN = 'ttl', DETAIL = 'A reservation lasts more than 0 and at most 7 days.',
                  HINT = 'Give a duration such as 10 minutes, or leave it out for the type''s default.';
    END IF;
    PERFORM docnum._check_metadata('metadata', reserve_numbers.metadata, reserve_numbers.count);
    RETURN QUERY
    SELECT b.* FROM docnum._issue_batch(v_prepared.o_type, v_prepared.o_scope, v_prepared.o_date,
                                        reserve_numbers.count, v_ttl, reserve_numbers.actor,
                                        reserve_numbers.metadata) b;
END
$$;

-- What was issued for a request key: one row once a reserve_number or next_number call with this request_id
-- has committed, none otherwise (it never ran, or it rolled back). For a caller whose COMMIT got no answer.
CREATE FUNCTION docnum.find_request(request_id text)
RETURNS TABLE (document_type text, document_number text, state text, token uuid, expires_at timestamptz,
               issued_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF find_request.request_id IS NULL THEN
        RAISE EXCEPTION 'a request key is required'
            USING ERRCODE = 'NB006', COLUMN = 'request_id', DETAIL = 'request_id was NULL.',
                  HINT = 'Give the request key the number was issued under.';
    END IF;
    PERFORM docnum._check_text('request_id', find_request.request_id);
    RETURN QUERY
    SELECT l.document_type, l.document_number, l.state, l.token, l.expires_at, l.issued_at
      FROM docnum.ledger l WHERE l.request_id = find_request.request_id;
END
$$;

-- Confirms a reservation. Repeating it for the same token returns the same number and writes nothing.
-- Unknown, cancelled and expired tokens (including ones past expires_at not yet swept) raise NB004.
CREATE FUNCTION docnum.confirm_number(token uuid, actor text DEFAULT NULL, document_ref text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row docnum.ledger;
BEGIN
    confirm_number.actor := docnum._actor(confirm_number.actor);
    PERFORM docnum._require_writable();
    IF confirm_number.token IS NULL THEN
        RAISE EXCEPTION 'a reservation token is required'
            USING ERRCODE = 'NB006', COLUMN = 'token', DETAIL = 'token was NULL.',
                  HINT = 'Give the token the reservation returned.';
    END IF;
    PERFORM docnum._check_text('actor', confirm_number.actor);
    PERFORM docnum._check_text('document_ref', confirm_number.document_ref);

    SELECT l.* INTO v_row FROM docnum.ledger l WHERE l.token = confirm_number.token FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reservation % not found', confirm_number.token
            USING ERRCODE = 'NB004', DETAIL = 'No number was reserved with this token.',
                  HINT = 'Reserve a new number.';
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
                  HINT = 'Its history shows what happened to it.';
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
$$;

-- Cancels a reservation; the number is never issued again. Cancelling a cancelled or expired reservation
-- returns the number and writes nothing; a confirmed number cannot be cancelled (void it instead).
CREATE FUNCTION docnum.cancel_number(token uuid, actor text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row docnum.ledger;
BEGIN
    cancel_number.actor := docnum._actor(cancel_number.actor);
    PERFORM docnum._require_writable();
    IF cancel_number.token IS NULL THEN
        RAISE EXCEPTION 'a reservation token is required'
            USING ERRCODE = 'NB006', COLUMN = 'token', DETAIL = 'token was NULL.',
                  HINT = 'Give the token the reservation returned.';
    END IF;
    PERFORM docnum._check_text('actor', cancel_number.actor);
    PERFORM docnum._check_text('reason', cancel_number.reason);

    SELECT l.* INTO v_row FROM docnum.ledger l WHERE l.token = cancel_number.token FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reservation % not found', cancel_number.token
            USING ERRCODE = 'NB004', DETAIL = 'No number was reserved with this token.',
                  HINT = 'Nothing to cancel.';
    END IF;
    IF v_row.state IN ('cancelled', 'expired') THEN
        RETURN v_row.document_number;
    END IF;
    IF v_row.state <> 'reserved' THEN
        RAISE EXCEPTION 'cannot cancel % in state %', v_row.document_number, v_row.state
            USING ERRCODE = 'NB009',
                  DETAIL = 'Only a reserved number can be cancelled.',
                  HINT = CASE WHEN v_row.state = 'confirmed'
                              THEN 'A confirmed number names a document: void it instead.'
                              ELSE 'Its history shows what happened to it.' END;
    END IF;

    UPDATE docnum.ledger l
       SET state = 'cancelled', cancelled_at = now(), cancel_reason = cancel_number.reason
     WHERE l.number_id = v_row.number_id;
    PERFORM docnum._audit('CANCEL', v_row.document_type, v_row.document_number, nullif(c.scope_value, ''),
                          cancel_number.actor, jsonb_build_object('state', 'reserved'),
                          jsonb_build_object('state', 'cancelled', 'reason', cancel_number.reason), NULL)
      FROM docnum.counter c WHERE c.counter_id = v_row.counter_id;
    RETURN v_row.document_number;
END
$$;

-- Marks every reservation past its expires_at as expired and audits each; returns how many. Rows another
-- transaction is confirming or cancelling right now are left for the next sweep.
CREATE FUNCTION docnum.expire_reservations()
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
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
    )
    SELECT count(docnum._audit('EXPIRE', e.document_type, e.document_number, nullif(c.scope_value, ''), NULL,
                               jsonb_build_object('state', 'reserved', 'expires_at', e.expires_at),
                               jsonb_build_object('state', 'expired'), NULL))::integer
      INTO v_count
      FROM expired e JOIN docnum.counter c ON c.counter_id = e.counter_id;
    RETURN v_count;
END
$$;
