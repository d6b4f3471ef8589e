-- docnum: privileges. Nothing is executable or readable by PUBLIC; docnum_app allocates and reads its results,
-- docnum_reader reads everything, docnum_admin does everything. No role may write a table directly.

REVOKE ALL ON ALL TABLES IN SCHEMA docnum FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA docnum FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA docnum FROM PUBLIC;
REVOKE ALL ON TYPE docnum.reservation FROM PUBLIC;
REVOKE ALL ON TYPE docnum.import_result FROM PUBLIC;

GRANT USAGE ON SCHEMA docnum TO docnum_app, docnum_reader, docnum_admin;
GRANT USAGE ON TYPE docnum.reservation TO docnum_app, docnum_reader, docnum_admin;
GRANT USAGE ON TYPE docnum.import_result TO docnum_admin;

GRANT SELECT ON ALL TABLES IN SCHEMA docnum TO docnum_reader;
GRANT SELECT ON docnum.document_type, docnum.counter, docnum.ledger TO docnum_app;

GRANT EXECUTE ON FUNCTION
    docnum.reserve_number(text, text, text, jsonb, interval, date, text),
    docnum.confirm_number(uuid, text, text),
    docnum.cancel_number(uuid, text, text),
    docnum.next_number(text, text, text, text, date, text),
    docnum.next_numbers(text, integer, text, text, date),
    docnum.reserve_numbers(text, integer, text, text, jsonb, interval, date),
    docnum.find_request(text),
    docnum.expire_reservations()
TO docnum_app;

GRANT EXECUTE ON FUNCTION
    docnum.define_type(text, text, text, text, text, bigint, interval, interval, boolean, jsonb, text),
    docnum.alter_type(text, text, text, bigint, interval, interval, boolean, jsonb, text, text),
    docnum.override_number(text, text, text, text, boolean),
    docnum.void_number(text, text, text),
    docnum.void_and_replace(text, text, text),
    docnum.set_counter(text, text, text, bigint, text, text),
    docnum.import_numbers(jsonb, text),
    docnum.register_document_table(regclass, name, text)
TO docnum_admin;

GRANT EXECUTE ON FUNCTION
    docnum.status(text),
    docnum.gaps(text, text, text),
    docnum.check_duplicates(),
    docnum._document_table_problem(oid, name),
    docnum._integrity_findings(),
    docnum.validate(),
    docnum.number_history(text),
    docnum.audit_export(timestamptz, timestamptz, text),
    docnum.metrics(integer),
    docnum.doctor(boolean)
TO docnum_reader;
-- An application may read the trail of the numbers it issued.
GRANT EXECUTE ON FUNCTION docnum.number_history(text) TO docnum_app;

RESET ROLE;
