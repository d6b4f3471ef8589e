-- Revision 0012, downgrade: docnum.doctor() dropped.

SET LOCAL ROLE docnum_owner;

DROP FUNCTION docnum.doctor(boolean);

RESET ROLE;
