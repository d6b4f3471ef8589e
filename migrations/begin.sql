-- docnum migrations: what every migration transaction runs before its revisions, after session.sql
-- (migrations/env.py; `docnum sql` prints it at the top of its script).

-- Everything must happen in one transaction: revisions work as docnum_owner with SET LOCAL ROLE, which has no
-- effect outside a transaction block. A script run without psql's -1 (or BEGIN) stops here.
SET LOCAL docnum.migration = 'running';
DO $one_transaction$
BEGIN
    IF current_setting('docnum.migration', true) IS DISTINCT FROM 'running' THEN
        RAISE EXCEPTION 'docnum''s migration script must run in one transaction'
            USING ERRCODE = 'NB013',
                  HINT = 'Run it with psql -1 -v ON_ERROR_STOP=1 -f FILE.';
    END IF;
END
$one_transaction$;

-- Prepare the installer (see pg_temp.docnum_installer in session.sql), or stop with what it lacks.
SELECT count(*) AS requirements_met FROM pg_temp.docnum_installer(true);
