-- docnum migrations: the helpers every migration transaction defines first (migrations/env.py runs this file,
-- then begin.sql; `docnum sql` prints both at the top of its script; `docnum doctor` runs this one alone, in a
-- transaction it rolls back). They live in pg_temp: for this session only, seen by nobody else.

-- pg_temp.docnum_refuse(...): NB013, the installer's missing requirement, with the statement that gives it.
CREATE OR REPLACE FUNCTION pg_temp.docnum_refuse(p_requirement text, p_detail text, p_hint text)
RETURNS void
LANGUAGE plpgsql
AS $refuse$
BEGIN
    RAISE EXCEPTION '% cannot install or upgrade docnum: %', current_user, p_requirement
        USING ERRCODE = 'NB013', DETAIL = p_detail, HINT = p_hint;
END
$refuse$;

-- pg_temp.docnum_installer(p_apply): what the connected role (the installer) needs before revisions run, and,
-- with p_apply, doing it. Every revision works as docnum_owner (SET LOCAL ROLE docnum_owner), so the installer
-- is a superuser, or, as managed services give, a role with CREATEROLE that owns the database:
--   - docnum's four roles exist (made here when missing, exactly as revision 0001 makes them), with docnum_admin
--     a member of docnum_app and docnum_reader;
--   - the installer can SET ROLE docnum_owner and never inherits its rights. From PostgreSQL 16 it keeps a
--     membership with SET only, granted to itself (PostgreSQL gives a role's creator the ADMIN option on it);
--     on 15, where a membership carries the member's INHERIT attribute, it is granted for this transaction only
--     and end.sql revokes it, so no committed state holds it;
--   - it may create schema docnum and Alembic's version table, or already owns what they need.
-- Without p_apply it changes nothing and returns one row per requirement (`docnum doctor`). With p_apply, the
-- first requirement that cannot be met stops the migration (before COMMIT, so nothing it did stays): NB013,
-- whose HINT is the statement an administrator runs.
CREATE OR REPLACE FUNCTION pg_temp.docnum_installer(p_apply boolean)
RETURNS TABLE (requirement text, ok boolean, detail text, hint text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $installer$
DECLARE
    v_me        text := current_user;
    v_major     integer := current_setting('server_version_num')::integer / 10000;
    v_super     boolean;
    v_createrole boolean;
    v_role      text;
    v_member    text;
    v_grantor   text;
    v_installed boolean := to_regnamespace('docnum') IS NOT NULL;
    v_created   text[] := '{}';
BEGIN
    SELECT r.rolsuper, r.rolcreaterole INTO v_super, v_createrole FROM pg_roles r WHERE r.rolname = v_me;

    -- Schema docnum and Alembic's version table (public.alembic_version).
    requirement := 'create schema';
    ok := v_installed OR v_super OR has_database_privilege(current_database(), 'CREATE');
    detail := CASE WHEN v_installed THEN 'schema docnum exists'
                   WHEN ok THEN format('%s may create schema docnum', v_me)
                   ELSE format('%s may not create schemas in database %s', v_me, current_database()) END;
    hint := format('As the database owner: GRANT CREATE ON DATABASE %I TO %I;', current_database(), v_me);
    RETURN NEXT;
    PERFORM pg_temp.docnum_refuse(requirement, detail, hint) WHERE p_apply AND NOT ok;
    requirement := 'version table';
    IF to_regclass('public.alembic_version') IS NULL THEN
        ok := v_super OR has_schema_privilege('public', 'CREATE');
        detail := format('%s %s create public.alembic_version', v_me, CASE WHEN ok THEN 'may' ELSE 'may not' END);
        -- (a NOINHERIT owner of the database does not get the rights of pg_database_owner, which owns public)
        hint := format('As a superuser, in database %I: GRANT CREATE ON SCHEMA public TO %I;',
                       current_database(), v_me);
    ELSE
        ok := v_super OR has_table_privilege('public.alembic_version', 'SELECT, INSERT, UPDATE, DELETE');
        detail := format('%s %s write public.alembic_version', v_me, CASE WHEN ok THEN 'may' ELSE 'may not' END);
        hint := format('As a superuser, in database %I: GRANT SELECT, INSERT, UPDATE, DELETE ON'
                       ' public.alembic_version TO %I;', current_database(), v_me);
    END IF;
    RETURN NEXT;
    PERFORM pg_temp.docnum_refuse(requirement, detail, hint) WHERE p_apply AND NOT ok;

    -- The four roles, made as revision 0001 makes them. From 16, a role's creator is also granted it with the
    -- options in createrole_self_grant: none here, so the creator holds the ADMIN option only.
    IF v_major >= 16 AND p_apply THEN
        PERFORM set_config('createrole_self_grant', '', true);
    END IF;
    FOREACH v_role IN ARRAY ARRAY['docnum_owner', 'docnum_reader', 'docnum_app', 'docnum_admin'] LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_roles r WHERE r.rolname = v_role);
        requirement := 'role ' || v_role;
        ok := v_super OR v_createrole;
        detail := format('role %s does not exist; %s %s create it', v_role, v_me,
                         CASE WHEN ok THEN 'may' ELSE 'may not' END);
        hint := format('As a superuser: ALTER ROLE %I CREATEROLE; (or make docnum''s four roles as revision'
                       ' 0001 does)', v_me);
        RETURN NEXT;
        PERFORM pg_temp.docnum_refuse(requirement, detail, hint) WHERE p_apply AND NOT ok;
        IF p_apply THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role)
                || CASE WHEN v_role = 'docnum_owner' THEN ' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT' ELSE '' END;
        END IF;
        v_created := v_created || v_role;
    END LOOP;

    -- docnum_admin holds docnum_app's and docnum_reader's rights.
    FOREACH v_role IN ARRAY ARRAY['docnum_app', 'docnum_reader'] LOOP
        requirement := format('docnum_admin in %s', v_role);
        IF v_role <> ALL (v_created) AND 'docnum_admin' <> ALL (v_created) THEN
            -- both exist (pg_has_role() would fail on a role that is only about to be made)
            CONTINUE WHEN pg_has_role('docnum_admin', v_role, 'MEMBER');
            ok := v_super OR (v_major < 16 AND v_createrole)
                  OR pg_has_role(v_me, v_role, 'MEMBER WITH ADMIN OPTION');
        ELSE
            ok := v_super OR v_role = ANY (v_created) OR (v_major < 16 AND v_createrole);
            IF NOT ok THEN  -- docnum_admin is new, v_role exists
                ok := pg_has_role(v_me, v_role, 'MEMBER WITH ADMIN OPTION');
            END IF;
        END IF;
        detail := format('docnum_admin is not a member of %s; %s %s grant it', v_role, v_me,
                         CASE WHEN ok THEN 'may' ELSE 'may not' END);
        hint := CASE
            -- the ADMIN option alone: the installer grants the role to docnum_admin now, to logins later
            WHEN v_major >= 16 THEN format('As a superuser: GRANT %I TO %I WITH ADMIN TRUE, INHERIT FALSE, SET FALSE;',
                                           v_role, v_me)
            WHEN 'docnum_admin' = ANY (v_created) THEN format('As a superuser: ALTER ROLE %I CREATEROLE;', v_me)
            ELSE format('As a superuser: GRANT %I TO docnum_admin;', v_role) END;
        RETURN NEXT;
        PERFORM pg_temp.docnum_refuse(requirement, detail, hint) WHERE p_apply AND NOT ok;
        IF p_apply THEN
            EXECUTE format('GRANT %I TO docnum_admin', v_role);
        END IF;
    END LOOP;

    -- SET ROLE docnum_owner, never its rights by inheritance.
    requirement := 'become docnum_owner';
    hint := NULL;
    IF v_super THEN
        ok := true;
        detail := format('%s is a superuser', v_me);
    ELSIF 'docnum_owner' = ANY (v_created) THEN
        ok := true;
        detail := CASE WHEN v_major >= 16
                       THEN format('%s creates docnum_owner and keeps a membership with SET only', v_me)
                       ELSE format('%s creates docnum_owner and is its member for each migration only', v_me) END;
        IF p_apply THEN
            IF v_major >= 16 THEN
                EXECUTE format('GRANT docnum_owner TO %I WITH INHERIT FALSE, SET TRUE', v_me);
            ELSE
                EXECUTE format('GRANT docnum_owner TO %I', v_me);
                PERFORM set_config('docnum.installer_member', v_me, true);
            END IF;
        END IF;
    ELSIF v_major >= 16 THEN
        -- A membership of ours that inherits (createrole_self_grant, or an older installer) loses INHERIT.
        IF p_apply AND pg_has_role(v_me, 'docnum_owner', 'USAGE') AND EXISTS (
            SELECT FROM pg_auth_members m
            WHERE m.roleid = 'docnum_owner'::regrole AND m.member = v_me::regrole AND m.grantor = v_me::regrole
              AND m.inherit_option)
        THEN
            EXECUTE format('REVOKE INHERIT OPTION FOR docnum_owner FROM %I GRANTED BY %I', v_me, v_me);
        END IF;
        -- (one we granted ourselves loses INHERIT above, when applying)
        SELECT m.grantor::regrole::text INTO v_grantor
        FROM pg_auth_members m
        WHERE m.roleid = 'docnum_owner'::regrole AND m.member = v_me::regrole AND m.inherit_option
          AND m.grantor <> v_me::regrole
        LIMIT 1;
        IF v_grantor IS NOT NULL THEN
            ok := false;
            detail := format('%s inherits docnum_owner''s rights (a membership granted by %s): it could write'
                             ' docnum''s tables directly', v_me, v_grantor);
            hint := format('As a superuser: REVOKE INHERIT OPTION FOR docnum_owner FROM %I GRANTED BY %I;',
                           v_me, v_grantor);
        ELSIF pg_has_role(v_me, 'docnum_owner', 'SET') THEN
            ok := true;
            detail := format('%s may SET ROLE docnum_owner and does not inherit its rights', v_me);
        ELSIF pg_has_role(v_me, 'docnum_owner', 'MEMBER WITH ADMIN OPTION') THEN
            ok := true;
            detail := format('%s holds the ADMIN option on docnum_owner and grants itself SET only', v_me);
            IF p_apply THEN
                EXECUTE format('GRANT docnum_owner TO %I WITH INHERIT FALSE, SET TRUE', v_me);
            END IF;
        ELSE
            ok := false;
            detail := format('%s may not SET ROLE docnum_owner, which someone else created', v_me);
            hint := format('As a superuser: GRANT docnum_owner TO %I WITH INHERIT FALSE, SET TRUE;', v_me);
        END IF;
    ELSIF pg_has_role(v_me, 'docnum_owner', 'MEMBER') THEN
        ok := NOT pg_has_role(v_me, 'docnum_owner', 'USAGE');
        detail := CASE WHEN ok THEN format('%s is a NOINHERIT member of docnum_owner', v_me)
                       ELSE format('%s is a member of docnum_owner and inherits docnum_owner''s rights: it'
                                   ' could write docnum''s tables directly', v_me) END;
        hint := format('As a superuser: REVOKE docnum_owner FROM %I; (with CREATEROLE, %I is a member during'
                       ' each migration only)', v_me, v_me);
    ELSIF v_createrole THEN
        ok := true;
        detail := format('%s has CREATEROLE and is a member of docnum_owner for each migration only', v_me);
        IF p_apply THEN
            EXECUTE format('GRANT docnum_owner TO %I', v_me);
            PERFORM set_config('docnum.installer_member', v_me, true);
        END IF;
    ELSE
        ok := false;
        detail := format('%s may not SET ROLE docnum_owner and has no CREATEROLE', v_me);
        hint := format('As a superuser: ALTER ROLE %I CREATEROLE; (%I is then a member of docnum_owner during'
                       ' each migration only)', v_me, v_me);
    END IF;
    RETURN NEXT;
    PERFORM pg_temp.docnum_refuse(requirement, detail, hint) WHERE p_apply AND NOT ok;

    -- Other members of docnum_owner can do anything to docnum's data: reported, never changed.
    IF to_regrole('docnum_owner') IS NULL THEN
        RETURN;
    END IF;
    FOR v_member IN
        SELECT m.member::regrole::text FROM pg_auth_members m
        WHERE m.roleid = 'docnum_owner'::regrole AND m.member <> v_me::regrole
        ORDER BY 1
    LOOP
        requirement := 'other member';
        ok := NULL;
        detail := format('%s is a member of docnum_owner and can become it', v_member);
        hint := format('REVOKE docnum_owner FROM %I;', v_member);
        RETURN NEXT;
    END LOOP;
END
$installer$;

-- CALL pg_temp.docnum_alter_table(p_table, p_alter): ALTER TABLE p_table p_alter, keeping the functions whose
-- SQL-standard body (RETURN ... / BEGIN ATOMIC) uses the table.
-- Current minor releases refuse an ALTER TABLE that rewrites a table or gives a new column a default (a
-- constant, a generated expression) while such a body uses the table's row type, and every release refuses a
-- column type change under a body that uses the column. So this drops those functions (and the SQL-body
-- functions that use them), runs the ALTER, and creates them again from their own definitions with their
-- owner, privileges and comment, all in the caller's transaction. Released revisions call it for every such
-- ALTER; a revision that alters a docnum table calls it (CONTRIBUTING.md).
CREATE OR REPLACE PROCEDURE pg_temp.docnum_alter_table(p_table regclass, p_alter text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $alter$
DECLARE
    v_fn record;
    v_acl record;
    v_kept jsonb := '[]';
    v_item jsonb;
BEGIN
    FOR v_fn IN
        WITH RECURSIVE users (oid, depth) AS (
            SELECT d.objid, 1
            FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
            WHERE d.classid = 'pg_proc'::regclass AND p.prosqlbody IS NOT NULL
              AND ((d.refclassid = 'pg_class'::regclass AND d.refobjid = p_table)
                   OR (d.refclassid = 'pg_type'::regclass
                       AND d.refobjid = (SELECT c.reltype FROM pg_class c WHERE c.oid = p_table)))
            UNION
            SELECT d.objid, u.depth + 1
            FROM users u
            JOIN pg_depend d ON d.refclassid = 'pg_proc'::regclass AND d.refobjid = u.oid
                            AND d.classid = 'pg_proc'::regclass
            JOIN pg_proc p ON p.oid = d.objid AND p.prosqlbody IS NOT NULL
            WHERE u.depth < 50
        )
        SELECT u.oid, max(u.depth) AS depth
        FROM users u
        GROUP BY u.oid
        ORDER BY max(u.depth) DESC, u.oid
    LOOP
        v_kept := jsonb_build_object(
            'signature', v_fn.oid::regprocedure::text,
            'definition', pg_get_functiondef(v_fn.oid),
            'owner', (SELECT p.proowner::regrole::text FROM pg_proc p WHERE p.oid = v_fn.oid),
            'acl', (SELECT to_jsonb(p.proacl::text[]) FROM pg_proc p WHERE p.oid = v_fn.oid),
            'comment', obj_description(v_fn.oid, 'pg_proc')
        ) || v_kept;  -- the deepest first here, so the list ends up shallowest first
        EXECUTE format('DROP FUNCTION %s', v_fn.oid::regprocedure);
    END LOOP;

    EXECUTE format('ALTER TABLE %s %s', p_table, p_alter);

    FOR v_item IN SELECT value FROM jsonb_array_elements(v_kept) LOOP
        BEGIN
            EXECUTE v_item->>'definition';
        EXCEPTION WHEN OTHERS THEN
            -- A body keeps its columns as they were when it was created (a `SELECT *` is expanded, a row
            -- constructor has its fields): some no longer fit the altered table.
            RAISE EXCEPTION 'function % does not fit table % after ALTER TABLE %', v_item->>'signature',
                p_table, left(p_alter, 200)
                USING ERRCODE = SQLSTATE, DETAIL = SQLERRM,
                      HINT = 'Drop the function before the ALTER and create it again after it, in the revision.';
        END;
        IF v_item->>'owner' <> current_user THEN
            EXECUTE format('ALTER FUNCTION %s OWNER TO %I', v_item->>'signature', v_item->>'owner');
        END IF;
        IF v_item->'acl' <> 'null' THEN
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_item->>'signature');
            FOR v_acl IN
                SELECT a.grantee, a.is_grantable
                FROM jsonb_array_elements_text(v_item->'acl') WITH ORDINALITY AS e(item, n),
                     LATERAL aclexplode(ARRAY[e.item::aclitem]) a
                WHERE a.privilege_type = 'EXECUTE'
                  AND a.grantee <> (SELECT p.proowner FROM pg_proc p WHERE p.oid = (v_item->>'signature')::regprocedure)
                ORDER BY e.n
            LOOP
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', v_item->>'signature',
                               CASE WHEN v_acl.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(v_acl.grantee::regrole::text) END,
                               CASE WHEN v_acl.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
            END LOOP;
        END IF;
        IF v_item->>'comment' IS NOT NULL THEN
            EXECUTE format('COMMENT ON FUNCTION %s IS %L', v_item->>'signature', v_item->>'comment');
        END IF;
    END LOOP;
END
$alter$;
