-- The bare gapless counter (django-sequences): one statement, no ledger, no audit. :keys is 1 or 1000.
\set k random(1, :keys)
INSERT INTO public.bench_counter (k, v) VALUES (:k, 1)
    ON CONFLICT (k) DO UPDATE SET v = bench_counter.v + 1
    RETURNING v;
