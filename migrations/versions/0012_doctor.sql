-- Revision 0012: docnum.doctor(), the DBA's checks as rows, for psql and for `docnum doctor` alike (granted to
-- docnum_reader, SECURITY INVOKER), as sql/65_doctor.sql has it.

SET LOCAL ROLE docnum_owner;

CREATE FUNCTION docnum.doctor(run_validate boolean DEFAULT true)
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_names    text;
    v_count    bigint;
    v_errors   bigint;
    v_problems text[] := ARRAY[]::text[];
    v_setting  text;
    v_turns    oid := to_regclass('docnum.counter_queue')::oid;
    v_stats    boolean := pg_has_role('pg_read_all_stats', 'USAGE');
BEGIN
    -- the revision the database records (the package knows whether it is the newest: `docnum doctor`)
    check_name := 'revision';
    IF to_regclass('public.alembic_version') IS NULL THEN
        status := 'warn'; detail := 'no public.alembic_version: installed from sql/ directly?';
    ELSIF NOT has_table_privilege('public.alembic_version', 'SELECT') THEN
        status := 'warn';
        detail := format('%s may not read public.alembic_version: GRANT SELECT ON public.alembic_version TO %I',
                         current_user, current_user);
    ELSE
        -- planned only here, where the table is known to exist and to be readable
        SELECT string_agg(v.version_num::text, ', ' ORDER BY v.version_num) INTO v_names
          FROM public.alembic_version AS v;
        status := 'ok'; detail := 'at ' || coalesce(v_names, 'nothing');
    END IF;
    RETURN NEXT;

    -- the owner: NOLOGIN, no superuser, owns the schema and everything in it
    check_name := 'roles';
    SELECT string_agg(n, ', ' ORDER BY n) INTO v_names
      FROM unnest(ARRAY['docnum_owner', 'docnum_app', 'docnum_reader', 'docnum_admin']) AS n
     WHERE NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = n);
    IF v_names IS NOT NULL THEN
        status := 'fail'; detail := format('missing role(s): %s: run `docnum migrate`', v_names);
        RETURN NEXT;
    ELSE
        IF (SELECT rolsuper FROM pg_roles WHERE rolname = 'docnum_owner') THEN
            v_problems := v_problems
                || 'docnum_owner is a superuser (docnum''s functions would run with superuser rights)'::text;
        END IF;
        IF (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'docnum_owner') THEN
            v_problems := v_problems || 'docnum_owner can log in (it must be NOLOGIN)'::text;
        END IF;
        SELECT pg_get_userbyid(nspowner)::text INTO v_names FROM pg_namespace WHERE nspname = 'docnum';
        IF v_names <> 'docnum_owner' THEN
            v_problems := v_problems || format('schema docnum is owned by %s, not docnum_owner', v_names);
        END IF;
        SELECT string_agg(o, ', ' ORDER BY o), count(*) INTO v_names, v_count FROM (
            SELECT c.relname::text AS o FROM pg_class c
             WHERE c.relnamespace = 'docnum'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S', 'p')
               AND pg_get_userbyid(c.relowner) <> 'docnum_owner'
            UNION ALL
            SELECT p.proname::text FROM pg_proc p
             WHERE p.pronamespace = 'docnum'::regnamespace AND pg_get_userbyid(p.proowner) <> 'docnum_owner'
        ) AS strangers;
        IF v_count > 0 THEN
            v_problems := v_problems || format('objects not owned by docnum_owner: %s', left(v_names, 300));
        END IF;
        status := CASE WHEN cardinality(v_problems) > 0 THEN 'fail' ELSE 'ok' END;
        detail := coalesce(array_to_string(v_problems, '; ') || CASE WHEN cardinality(v_problems) = 0 THEN NULL END,
                           'docnum_owner is NOLOGIN, not a superuser, and owns schema docnum');
        RETURN NEXT;
    END IF;

    -- nothing for PUBLIC (a NULL ACL on a function means PUBLIC may EXECUTE it)
    check_name := 'public privileges';
    SELECT string_agg(o, ', ' ORDER BY o), count(*) INTO v_names, v_count FROM (
        SELECT 'schema docnum' AS o FROM pg_namespace n
         WHERE n.nspname = 'docnum' AND EXISTS (SELECT 1 FROM aclexplode(n.nspacl) a WHERE a.grantee = 0)
        UNION ALL
        SELECT 'table ' || c.relname FROM pg_class c
         WHERE c.relnamespace = 'docnum'::regnamespace
           AND EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = 0)
        UNION ALL
        SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p
         WHERE p.pronamespace = 'docnum'::regnamespace
           AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))
    ) AS granted;
    IF v_count > 0 THEN
        status := 'fail'; detail := 'PUBLIC has privileges on ' || left(v_names, 500);
    ELSE
        status := 'ok'; detail := 'PUBLIC has no privilege on docnum''s schema, tables or functions';
    END IF;
    RETURN NEXT;

    -- every SECURITY DEFINER function pins its search_path
    check_name := 'security definer';
    SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY p.oid::regprocedure::text)
           FILTER (WHERE NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'search\_path=%')),
           count(*)
      INTO v_names, v_count
      FROM pg_proc p WHERE p.pronamespace = 'docnum'::regnamespace AND p.prosecdef;
    IF v_names IS NOT NULL THEN
        status := 'fail'; detail := 'SECURITY DEFINER without a pinned search_path: ' || v_names;
    ELSE
        status := 'ok'; detail := format('all %s SECURITY DEFINER functions pin their search_path', v_count);
    END IF;
    RETURN NEXT;

    -- the integrity checks (their cost grows with the ledger: run_validate => false leaves them out)
    IF run_validate THEN
        check_name := 'validate';
        IF NOT has_function_privilege('docnum.validate()', 'EXECUTE') THEN
            status := 'warn';
            detail := format('%s may not run docnum.validate(): GRANT docnum_reader TO %I', current_user,
                             current_user);
        ELSE
            SELECT count(*) FILTER (WHERE v.severity = 'error'), count(*),
                   (array_agg(v.check_name || ': ' || v.detail ORDER BY v.severity <> 'error'))[1]
              INTO v_errors, v_count, v_names
              FROM docnum.validate() AS v;
            IF v_count = 0 THEN
                status := 'ok'; detail := 'docnum.validate() reports nothing';
            ELSE  -- as `docnum validate`, any finding needs a look
                status := 'fail';
                detail := format('%s error(s), %s warning(s), e.g. %s (see docnum.validate())', v_errors,
                                 v_count - v_errors, left(v_names, 300));
            END IF;
        END IF;
        RETURN NEXT;
    END IF;

    -- prepared transactions: they hold their locks (a counter's turn among them) until someone ends them
    check_name := 'prepared transactions';
    SELECT count(*), string_agg(format('%L (since %s, %s)', x.gid, to_char(x.prepared, 'YYYY-MM-DD HH24:MI'),
                                       x.owner), ', ' ORDER BY x.prepared)
      INTO v_count, v_names
      FROM pg_prepared_xacts x WHERE x.database = current_database();
    IF v_count = 0 THEN
        status := 'ok'; detail := 'none in this database';
    ELSE
        SELECT count(*) INTO v_errors FROM pg_locks l
         WHERE l.pid IS NULL AND l.locktype = 'relation' AND l.relation = v_turns AND l.mode = 'RowShareLock'
           AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
        status := CASE WHEN v_errors > 0 THEN 'fail' ELSE 'warn' END;
        detail := format('%s prepared transaction(s): %s%s: COMMIT PREPARED or ROLLBACK PREPARED them', v_count,
                         left(v_names, 300),
                         CASE WHEN v_errors > 0 THEN format('; %s of them hold a counter''s turn', v_errors)
                              ELSE '' END);
    END IF;
    RETURN NEXT;

    -- sessions idle in a transaction that holds a counter's turn: every allocation from that counter waits
    check_name := 'idle transactions';
    SELECT count(DISTINCT a.pid),
           string_agg(DISTINCT format('pid %s (%s%s, idle %s s)', a.pid, a.usename,
                                      CASE WHEN a.application_name <> '' THEN ', ' || a.application_name
                                           ELSE '' END,
                                      extract(epoch FROM now() - a.state_change)::bigint), ', '),
           count(DISTINCT l.pid) FILTER (WHERE a.state IS NULL)
      INTO v_count, v_names, v_errors
      FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'relation' AND l.relation = v_turns AND l.mode = 'RowShareLock' AND l.granted
       AND a.datname = current_database() AND (a.state = 'idle in transaction' OR a.state IS NULL);
    IF v_errors > 0 AND NOT v_stats THEN
        status := 'warn';
        detail := format('%s session(s) of other roles hold a counter''s turn, and %s may not see whether they'
                         ' are idle: GRANT pg_read_all_stats TO %I', v_errors, current_user, current_user);
    ELSIF v_count = 0 THEN
        status := 'ok'; detail := 'no idle-in-transaction session holds a counter';
    ELSE
        status := 'fail';
        detail := format('%s idle-in-transaction session(s) hold a counter, every allocation from it waits: %s;'
                         ' end them with pg_terminate_backend(pid) or set idle_in_transaction_session_timeout',
                         v_count, left(v_names, 300));
    END IF;
    RETURN NEXT;

    -- durability: what an acknowledged number survives
    check_name := 'fsync';
    IF current_setting('fsync') = 'off' THEN
        status := 'fail';
        detail := 'fsync is off: an operating-system crash can lose committed numbers, which would then be issued'
                  ' again; fine for a throwaway server only';
    ELSE
        status := 'ok'; detail := 'fsync is on';
    END IF;
    RETURN NEXT;

    check_name := 'synchronous_commit'; status := 'ok';
    detail := format('synchronous_commit = %s; docnum raises it to at least ''on'' in every transaction that'
                     ' writes numbers', current_setting('synchronous_commit'));
    RETURN NEXT;

    check_name := 'standby';
    v_setting := current_setting('synchronous_standby_names');
    IF pg_is_in_recovery() THEN
        status := 'warn';
        detail := 'this server is a standby in recovery (read-only): numbers are allocated on the primary only';
    ELSE
        SELECT count(*), string_agg(coalesce(nullif(s.application_name, ''), '?') || ': ' || s.sync_state, ', '
                                    ORDER BY s.application_name)
          INTO v_count, v_names
          FROM pg_stat_replication s;
        IF v_count = 0 THEN
            status := 'ok'; detail := 'primary, no replicas attached';
        ELSIF v_setting = '' THEN
            status := 'warn';
            detail := format('%s replica(s) attached (%s) but synchronous_standby_names is empty: they are'
                             ' asynchronous, and a failover can lose numbers already handed out (and issue them'
                             ' again)', v_count, v_names);
        ELSE
            status := 'ok';
            detail := format('synchronous_standby_names = %L; replicas %s', v_setting, v_names);
        END IF;
    END IF;
    RETURN NEXT;
END;
$$;

REVOKE ALL ON FUNCTION docnum.doctor(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docnum.doctor(boolean) TO docnum_reader;

COMMENT ON FUNCTION docnum.doctor(boolean) IS
    'The DBA''s checks as rows (check_name, status ok, warn or fail, detail): the recorded revision, the roles and owner, PUBLIC''s privileges, SECURITY DEFINER search paths, validate() (unless run_validate is false: its cost grows with the ledger), prepared and idle-in-transaction holders of a counter, fsync, synchronous_commit and standbys. SECURITY INVOKER: a check the caller cannot see through is a warn naming the grant that would show it. Role: docnum_reader. Raises nothing of its own.';

RESET ROLE;
