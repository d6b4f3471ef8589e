-- docnum.next_numbers: a batch of 100 consecutive numbers in one call, on :keys scope values (run.py runs it
-- on the hot counter at 8 clients and reports numbers per second, TPS x 100).
\set k random(1, :keys)
SELECT count(*) FROM docnum.next_numbers(document_type => 'BENCH', count => 100, scope => 'P' || :k);
