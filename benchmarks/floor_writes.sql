-- Not docnum: the two rows an allocation writes (the counter's new value and the ledger row, which is also the
-- allocation's audit record), as one plain SQL statement on the same tables, constraints and indexes. No
-- PL/pgSQL, no validation, no queue: what no implementation of next_number inside this schema can beat. pgbench
-- connects as a superuser, so the ledger's row trigger (which docnum's own functions skip) runs here: this
-- floor pays a little more than next_number does. Run with --floor.
\set k random(1, :keys)
WITH bumped AS (
    UPDATE docnum.counter c SET current_value = c.current_value + 1, last_used_at = now()
     WHERE c.document_type = 'BENCH' AND c.scope_value = 'P' || :k AND c.period = ''
    RETURNING c.counter_id, c.current_value
)
INSERT INTO docnum.ledger (document_type, counter_id, sequence_value, document_number, state, confirmed_at)
SELECT 'BENCH', b.counter_id, b.current_value,
       'P' || :k || '/BENCH/' || to_char(now(), 'YYYY') || '/' || lpad(b.current_value::text, 6, '0'),
       'confirmed', now()
  FROM bumped b
RETURNING document_number;
