-- Revision 0006, frozen: released migrations are immutable, do not edit.
-- The ledger's row rules and the reference of a number to its counter are checked by one row trigger,
-- ledger_verify_row, for every writer but docnum_owner (the owner of docnum's SECURITY DEFINER functions, whose
-- rows are right by construction), instead of the CHECK ledger_row_check (a PL/pgSQL call per row) and the
-- foreign key ledger_counter_fkey (an SPI query per row) that every allocation paid for. A bad row written by
-- anyone else fails as before: 23514 ledger_row_check, 23503 ledger_counter_fkey. Counters become permanent
-- (the foreign key also kept a referenced counter from being deleted). Uniqueness stays with unique indexes.

SET LOCAL ROLE docnum_owner;

CREATE OR REPLACE FUNCTION docnum._counter_is_permanent()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    RAISE EXCEPTION 'counters in docnum.counter are permanent'
        USING ERRCODE = 'NB009',
              DETAIL = pg_catalog.format('%s on docnum.counter was refused.', TG_OP),
              HINT = 'Its numbers reference it; use docnum.set_counter() to move its value.';
END
$function$;
REVOKE ALL ON FUNCTION docnum._counter_is_permanent() FROM PUBLIC;

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
    RETURN NEW;
END
$function$;
REVOKE ALL ON FUNCTION docnum._ledger_verify_row() FROM PUBLIC;

ALTER TABLE docnum.ledger
    DROP CONSTRAINT ledger_row_check,
    DROP CONSTRAINT ledger_counter_fkey;

-- Named to fire after ledger_transition_check (BEFORE triggers fire in name order), as the constraints it
-- replaces were checked after every BEFORE trigger.
CREATE TRIGGER ledger_verify_row BEFORE INSERT OR UPDATE ON docnum.ledger
    FOR EACH ROW WHEN (current_user <> 'docnum_owner') EXECUTE FUNCTION docnum._ledger_verify_row();

CREATE TRIGGER counter_no_delete BEFORE DELETE ON docnum.counter
    FOR EACH STATEMENT EXECUTE FUNCTION docnum._counter_is_permanent();
CREATE TRIGGER counter_no_truncate BEFORE TRUNCATE ON docnum.counter
    FOR EACH STATEMENT EXECUTE FUNCTION docnum._counter_is_permanent();

RESET ROLE;
