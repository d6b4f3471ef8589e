-- Ceiling: one sequence increment (not gapless, not transactional).
SELECT nextval('public.bench_seq');
