-- docnum: roles and schema.
-- Roles are cluster-wide, so they are created only when missing; the schema and everything in it belong to the
-- NOLOGIN, non-superuser role docnum_owner, so no docnum function ever runs with superuser rights.
-- The whole build runs in one transaction as a role that may create roles (a superuser, normally).

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'docnum_owner') THEN
        CREATE ROLE docnum_owner NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'docnum_reader') THEN
        CREATE ROLE docnum_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'docnum_app') THEN
        CREATE ROLE docnum_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'docnum_admin') THEN
        CREATE ROLE docnum_admin NOLOGIN;
    END IF;
END
$roles$;

DO $membership$
BEGIN
    -- docnum_admin can do everything docnum_app and docnum_reader can.
    IF NOT pg_catalog.pg_has_role('docnum_admin', 'docnum_app', 'MEMBER') THEN
        GRANT docnum_app TO docnum_admin;
    END IF;
    IF NOT pg_catalog.pg_has_role('docnum_admin', 'docnum_reader', 'MEMBER') THEN
        GRANT docnum_reader TO docnum_admin;
    END IF;
END
$membership$;
CREATE SCHEMA docnum AUTHORIZATION docnum_owner;

-- Everything else is done as the owner: an installer that is not a superuser may become docnum_owner but
-- does not hold its rights.
SET LOCAL ROLE docnum_owner;
COMMENT ON SCHEMA docnum IS 'docnum: gapless, auditable document numbering';
REVOKE ALL ON SCHEMA docnum FROM PUBLIC;
