-- Not docnum: the three rows an allocation writes (counter, ledger, audit), as one plain SQL statement on the
-- same tables, constraints and indexes. No PL/pgSQL, no validation, no advisory lock: what no implementation
-- of next_number inside this schema can beat. Run with --floor.
\set k random(1, :keys)
WITH bumped AS (
    UPDATE docnum.counter c SET current_value = c.current_value + 1, last_used_at = now()
     WHERE c.document_type = 'BENCH' AND c.scope_value = 'P' || :k AND c.period = ''
    RETURNING c.counter_id, c.current_value
), issued AS (
    INSERT INTO docnum.ledger (document_type, counter_id, sequence_value, document_number, state, confirmed_at)
    SELECT 'BENCH', b.counter_id, b.current_value,
           'P' || :k || '/BENCH/' || to_char(now(), 'YYYY') || '/' || lpad(b.current_value::text, 6, '0'),
           'confirmed', now()
      FROM bumped b
    RETURNING document_number, sequence_value
), audited AS (
    INSERT INTO docnum.audit_log (operation, document_type, document_number, scope_value, new_value)
    SELECT 'NEXT', 'BENCH', i.document_number, 'P' || :k,
           jsonb_build_object('state', 'confirmed', 'sequence_value', i.sequence_value, 'period', '')
      FROM issued i
)
SELECT document_number FROM issued;
