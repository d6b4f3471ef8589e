-- docnum migrations: what every migration transaction runs after its revisions (migrations/env.py runs it;
-- `docnum sql` prints it at the end of its script).
-- On PostgreSQL 15, begin.sql made an installer with CREATEROLE a member of docnum_owner for this transaction
-- only: the membership ends here, before COMMIT, so no committed state holds it.
DO $end$
DECLARE
    v_member text := current_setting('docnum.installer_member', true);
BEGIN
    IF coalesce(v_member, '') <> '' THEN
        EXECUTE format('REVOKE docnum_owner FROM %I', v_member);
        PERFORM set_config('docnum.installer_member', '', true);
    END IF;
END
$end$;
DROP PROCEDURE pg_temp.docnum_alter_table(regclass, text);
DROP FUNCTION pg_temp.docnum_installer(boolean);
DROP FUNCTION pg_temp.docnum_refuse(text, text, text);
