-- Revision 0006 undone, frozen: puts back exactly revision 0005. Adding the constraints back validates every
-- ledger row, so a row that breaks them (only a superuser acting as docnum_owner could have written one) stops
-- the downgrade.

SET LOCAL ROLE docnum_owner;

DROP TRIGGER counter_no_truncate ON docnum.counter;
DROP TRIGGER counter_no_delete ON docnum.counter;
DROP TRIGGER ledger_verify_row ON docnum.ledger;

ALTER TABLE docnum.ledger
    ADD CONSTRAINT ledger_counter_fkey FOREIGN KEY (counter_id, document_type)
        REFERENCES docnum.counter (counter_id, document_type);
ALTER TABLE docnum.ledger ADD CONSTRAINT ledger_row_check CHECK (docnum._ledger_row_is_valid(ledger));

DROP FUNCTION docnum._ledger_verify_row();
DROP FUNCTION docnum._counter_is_permanent();


RESET ROLE;
