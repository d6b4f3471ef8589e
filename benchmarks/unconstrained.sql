-- Not docnum: a what-if for `run.py --unconstrained`, applied to a second scratch database. It removes every
-- constraint, trigger and secondary index that an allocation pays for and that is not a uniqueness guarantee
-- (the two unique keys on numbers stay, and so do the triggers that do not fire on INSERT): what next_number
-- would reach if its tables trusted the engine's code instead of enforcing the invariants themselves.
-- Since revision 0006 the ledger's row rules and counter reference, and since 0009 its replacement links, are a
-- trigger (ledger_verify_row) that docnum's own writes skip, so there is no ledger_row_check or foreign key left
-- to drop.
DROP TRIGGER ledger_verify_row ON docnum.ledger;
DROP TRIGGER ledger_document_type_fkey ON docnum.ledger;
DROP INDEX docnum.ledger_reserved_expiry_idx;
ALTER TABLE docnum.counter DROP CONSTRAINT counter_current_value_check;
ALTER TABLE docnum.audit_log DROP CONSTRAINT audit_log_operation_check;
DROP INDEX docnum.audit_log_number_idx, docnum.audit_log_time_idx;
