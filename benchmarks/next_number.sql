-- docnum.next_number on a PROJECT type: :keys scope values, one counter each.
\set k random(1, :keys)
SELECT docnum.next_number(document_type => 'BENCH', scope => 'P' || :k);
