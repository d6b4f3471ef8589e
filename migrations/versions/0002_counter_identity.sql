-- Revision 0002, frozen: released migrations are immutable, do not edit.
-- A counter's identity is checked once, by a trigger, when it is created, and can no longer change; its CHECK
-- keeps only the rule on the value allocations change. _issue waits for a busy or missing counter through
-- _lock_counter instead of a copy of it, and finds, locks and advances an idle counter in one UPDATE.

SET LOCAL ROLE docnum_owner;

ALTER TABLE docnum.counter DROP CONSTRAINT counter_row_check;
DROP FUNCTION docnum._counter_row_is_valid(docnum.counter);
ALTER TABLE docnum.counter ADD CONSTRAINT counter_current_value_check CHECK (current_value >= 0);

-- A counter's identity (id, type, scope value, period) is valid when the counter is created and never changes:
-- its numbers were rendered from it. A trigger rather than a CHECK, because an UPDATE OF trigger does not fire
-- for the allocations' UPDATE, which sets current_value only. Raises what a CHECK would on a bad new row.
CREATE FUNCTION docnum._counter_identity_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
    -- Advisory locks use the two-int4 key form (class, counter_id), so ids must fit in int4; a period is '' (no
    -- reset), YYYY or YYYY-MM.
    IF NEW.counter_id NOT BETWEEN 1 AND 2147483647 OR NEW.period !~ '^([0-9]{4}(-(0[1-9]|1[0-2]))?)?$' THEN
        RAISE EXCEPTION 'new row for relation "counter" violates check constraint "%"', TG_NAME
            USING ERRCODE = 'check_violation', SCHEMA = 'docnum', TABLE = 'counter', CONSTRAINT = TG_NAME,
                  DETAIL = pg_catalog.format('counter_id %s must lie in 1..2147483647 and period %L be empty, '
                                             'YYYY or YYYY-MM.', NEW.counter_id, NEW.period);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER counter_identity_check BEFORE INSERT OR UPDATE OF counter_id, document_type, scope_value, period
    ON docnum.counter FOR EACH ROW EXECUTE FUNCTION docnum._counter_identity_check();

REVOKE ALL ON FUNCTION docnum._counter_identity_check() FROM PUBLIC;

-- Finds or creates the counter of (type, scope, period) and takes its transaction-scoped lock, honouring the
-- type's lock_timeout unless the session's own limit is shorter (NB003 when it runs out). Two sessions creating
-- the same counter race safely: the loser waits for the winner and then reads its row. Returns the locked
-- counter row, read again under the lock.
CREATE OR REPLACE FUNCTION docnum._lock_counter(p_type docnum.document_type, p_scope text, p_period text)
RETURNS docnum.counter
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_counter docnum.counter;
    v_session_lock_timeout text := current_setting('lock_timeout');
    v_limit text := v_session_lock_timeout;
BEGIN
    IF p_type.lock_timeout IS NOT NULL
       AND (v_session_lock_timeout = '0' OR p_type.lock_timeout < v_session_lock_timeout::interval) THEN
        v_limit := p_type.lock_timeout::text;
        PERFORM set_config('lock_timeout', (extract(epoch FROM p_type.lock_timeout) * 1000)::bigint::text, true);
    END IF;
    BEGIN
        INSERT INTO docnum.counter AS c (document_type, scope_value, period)
        VALUES (p_type.code, p_scope, p_period)
        ON CONFLICT ON CONSTRAINT counter_key DO NOTHING;
        SELECT c.* INTO STRICT v_counter
          FROM docnum.counter c
         WHERE c.document_type = p_type.code AND c.scope_value = p_scope AND c.period = p_period;
        PERFORM pg_advisory_xact_lock(1685021550, v_counter.counter_id::integer);
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'timed out waiting for the % counter', p_type.code
            USING ERRCODE = 'NB003',
                  DETAIL = pg_catalog.format('Counter (%s, %L, %L) is held by another transaction for longer than '
                                             'the lock timeout (%s).', p_type.code, p_scope, p_period, v_limit),
                  HINT = 'Retry; if it persists, look for a long transaction holding the counter '
                         '(pg_locks, locktype advisory).';
    END;
    PERFORM set_config('lock_timeout', v_session_lock_timeout, true);
    -- Re-read under the lock: the value may have moved while we waited.
    SELECT c.* INTO STRICT v_counter FROM docnum.counter c WHERE c.counter_id = v_counter.counter_id;
    RETURN v_counter;
END
$$;

-- Issues the next free value of one counter as a ledger row and audits it. The caller has validated
-- everything. Values that already have a ledger row, or whose text is taken, are skipped, never reused.
CREATE OR REPLACE FUNCTION docnum._issue(p_type docnum.document_type, p_scope text, p_date date, p_state text,
                              p_token uuid, p_expires_at timestamptz, p_actor text, p_document_ref text,
                              p_metadata jsonb, p_operation text)
RETURNS docnum.reservation
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_period     text := '';
    v_head       text := p_type.render_head;
    v_tail       text := p_type.render_tail;
    v_counter_id bigint;
    v_value      bigint;
    v_number     text;
BEGIN
    -- A number survives a crash once the caller has it, whatever the session's synchronous_commit.
    IF current_setting('synchronous_commit') = 'off' THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
    -- Only what the template needs is computed (a never-resetting counter has no period, most templates have
    -- nothing to fill after {SEQ}).
    IF p_type.reset <> 'NEVER' THEN
        v_period := docnum._period(p_type.reset, p_date);
    END IF;
    IF strpos(v_head, '{') > 0 THEN
        v_head := docnum._fill(v_head, p_scope, p_date);
    END IF;
    IF strpos(v_tail, '{') > 0 THEN
        v_tail := docnum._fill(v_tail, p_scope, p_date);
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
                                        actor, document_ref, metadata, expires_at, confirmed_at)
        VALUES (p_type.code, v_counter_id, v_value,
                v_head || docnum._seq_text(v_value, p_type.seq_width) || v_tail, p_state, p_token,
                p_actor, p_document_ref, p_metadata, p_expires_at,
                CASE WHEN p_state = 'confirmed' THEN now() END)
        ON CONFLICT DO NOTHING
        RETURNING l.document_number INTO v_number;
        EXIT WHEN v_number IS NOT NULL;
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
$$;

RESET ROLE;
