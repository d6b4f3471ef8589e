-- docnum: number templates.
-- A template is compiled once, when a type is defined or changed, into the text before and after {SEQ}, the
-- {SEQ} width and an anchored pattern that reads a number back into its scope, period and sequence value.

-- Validates a template for a type and compiles it; raises NB006 (with the reason) for anything ambiguous.
-- Returns (render_head, render_tail, seq_width, parse_pattern, parse_groups).
CREATE FUNCTION docnum._compile_format(
    p_code text, p_format text, p_scope text, p_reset text,
    OUT render_head text, OUT render_tail text, OUT seq_width integer,
    OUT parse_pattern text, OUT parse_groups text[])
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rest      text := p_format;
    v_match     text[];
    v_literals  text[] := ARRAY[]::text[];   -- v_literals[i] precedes v_tokens[i]; one more literal at the end
    v_tokens    text[] := ARRAY[]::text[];
    v_token     text;
    v_seen_seq  boolean := false;
    v_piece     text;
    v_variable  boolean;
    v_prev_variable boolean := false;
    v_hint      constant text :=
        'Tokens: {TYPE} {SCOPE} {YYYY} {YY} {MM} {DD} {SEQ} {SEQ:n}; everything else is literal text.';
BEGIN
    IF p_format IS NULL OR p_format = '' THEN
        RAISE EXCEPTION 'a number format is required'
            USING ERRCODE = 'NB006', COLUMN = 'format', DETAIL = 'format was NULL or empty.', HINT = v_hint;
    END IF;
    IF docnum._has_invisible(p_format) OR length(p_format) > docnum._text_limit('format') THEN
        RAISE EXCEPTION 'invalid number format %', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'A format is at most 200 characters, without control or invisible format characters.',
                  HINT = v_hint;
    END IF;

    -- Split into literal text and {tokens}.
    LOOP
        v_match := regexp_match(v_rest, '^([^{}]*)(\{[^{}]*\})(.*)$', 's');
        EXIT WHEN v_match IS NULL;
        v_literals := v_literals || v_match[1];
        v_tokens := v_tokens || upper(substr(v_match[2], 2, length(v_match[2]) - 2));
        v_rest := v_match[3];
    END LOOP;
    IF v_rest ~ '[{}]' THEN
        RAISE EXCEPTION 'invalid number format %: unbalanced brace', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'Braces are reserved for tokens such as {SEQ:5}.', HINT = v_hint;
    END IF;
    v_literals := v_literals || v_rest;

    FOR v_i IN 1 .. coalesce(array_length(v_tokens, 1), 0) LOOP
        v_token := v_tokens[v_i];
        IF v_token !~ '^(TYPE|SCOPE|YYYY|YY|MM|DD|SEQ|SEQ:([1-9]|1[0-8]))$' THEN
            RAISE EXCEPTION 'invalid number format %: unknown token {%}', quote_literal(left(p_format, 60)),
                    left(v_token, 20)
                USING ERRCODE = 'NB006', COLUMN = 'format',
                      DETAIL = CASE WHEN v_token LIKE 'SEQ%'
                                    THEN '{SEQ} takes a width from 1 to 18: {SEQ:1} ... {SEQ:18}.'
                                    ELSE 'The tokens are {TYPE}, {SCOPE}, {YYYY}, {YY}, {MM}, {DD} and {SEQ} or '
                                         '{SEQ:n}.' END,
                      HINT = v_hint;
        END IF;
        IF v_token LIKE 'SEQ%' THEN
            IF v_seen_seq THEN
                RAISE EXCEPTION 'invalid number format %: more than one {SEQ}', quote_literal(left(p_format, 60))
                    USING ERRCODE = 'NB006', COLUMN = 'format',
                          DETAIL = 'A number has exactly one sequence part.', HINT = v_hint;
            END IF;
            v_seen_seq := true;
        ELSIF array_position(v_tokens, v_token) <> v_i THEN
            RAISE EXCEPTION 'invalid number format %: {%} appears twice', quote_literal(left(p_format, 60)),
                    left(v_token, 20)
                USING ERRCODE = 'NB006', COLUMN = 'format', DETAIL = 'Each token may appear once.', HINT = v_hint;
        END IF;
        -- {SCOPE} and an unpadded {SEQ} have no fixed width: literal text must separate them from other tokens,
        -- or a number could not be read back unambiguously.
        v_variable := v_token IN ('SCOPE', 'SEQ');
        IF v_i > 1 AND v_literals[v_i] = '' AND (v_variable OR v_prev_variable) THEN
            RAISE EXCEPTION 'invalid number format %: {%} and {%} need literal text between them',
                    quote_literal(left(p_format, 60)), v_tokens[v_i - 1], v_token
                USING ERRCODE = 'NB006', COLUMN = 'format',
                      DETAIL = '{SCOPE} and {SEQ} without padding have no fixed width.',
                      HINT = 'Put a separator such as - or / between them, e.g. {SCOPE}-{SEQ}.';
        END IF;
        v_prev_variable := v_variable;
    END LOOP;

    IF NOT v_seen_seq THEN
        RAISE EXCEPTION 'invalid number format %: no {SEQ}', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'A number needs exactly one {SEQ} or {SEQ:n}.', HINT = v_hint;
    END IF;
    IF 'YYYY' = ANY (v_tokens) AND 'YY' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format %: both {YYYY} and {YY}', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', COLUMN = 'format', DETAIL = 'Use one year token.', HINT = v_hint;
    END IF;
    -- Different counters must never render the same text.
    IF docnum._has_scope_value(p_scope) AND NOT 'SCOPE' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a % scope: no {SCOPE}', quote_literal(left(p_format, 60)),
                p_scope
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'Each scope value has its own counter, so the scope must be part of the number.',
                  HINT = 'Add {SCOPE}, e.g. {SCOPE}/{TYPE}/{SEQ:4}.';
    END IF;
    IF NOT docnum._has_scope_value(p_scope) AND 'SCOPE' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a % scope: {SCOPE} has no value',
                quote_literal(left(p_format, 60)), p_scope
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'Only PROJECT and CONTRACT types take a scope value.',
                  HINT = 'Remove {SCOPE}, or choose the PROJECT or CONTRACT scope.';
    END IF;
    IF p_reset IN ('YEARLY', 'MONTHLY') AND NOT ('YYYY' = ANY (v_tokens) OR 'YY' = ANY (v_tokens)) THEN
        RAISE EXCEPTION 'invalid number format % for a % reset: no year', quote_literal(left(p_format, 60)), p_reset
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'The counter restarts each period, so the period must be part of the number.',
                  HINT = 'Add {YYYY} or {YY}.';
    END IF;
    IF p_reset = 'MONTHLY' AND NOT 'MM' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a MONTHLY reset: no month', quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'The counter restarts each month, so the month must be part of the number.',
                  HINT = 'Add {MM}, e.g. {TYPE}-{YYYY}-{MM}-{SEQ:4}.';
    END IF;

    -- Compile.
    render_head := '';
    render_tail := '';
    parse_pattern := '^';
    parse_groups := ARRAY[]::text[];
    v_seen_seq := false;
    FOR v_i IN 1 .. array_length(v_tokens, 1) + 1 LOOP
        v_piece := v_literals[v_i];
        parse_pattern := parse_pattern || regexp_replace(v_piece, '([!-/:-@\[-`{-~])', '\\\1', 'g');
        IF v_seen_seq THEN render_tail := render_tail || v_piece; ELSE render_head := render_head || v_piece; END IF;
        EXIT WHEN v_i > array_length(v_tokens, 1);
        v_token := v_tokens[v_i];
        IF v_token LIKE 'SEQ%' THEN
            v_seen_seq := true;
            seq_width := CASE WHEN v_token = 'SEQ' THEN 0 ELSE split_part(v_token, ':', 2)::integer END;
            parse_pattern := parse_pattern
                || CASE WHEN seq_width = 0 THEN '([0-9]+)' ELSE '([0-9]{' || seq_width || ',})' END;
            parse_groups := parse_groups || 'SEQ'::text;
            CONTINUE;
        END IF;
        v_piece := CASE v_token WHEN 'TYPE' THEN p_code ELSE '{' || v_token || '}' END;
        IF v_seen_seq THEN render_tail := render_tail || v_piece; ELSE render_head := render_head || v_piece; END IF;
        IF v_token = 'TYPE' THEN
            parse_pattern := parse_pattern || p_code;
        ELSE
            parse_pattern := parse_pattern || CASE v_token WHEN 'SCOPE' THEN '(.+?)' WHEN 'YYYY' THEN '([0-9]{4})'
                                                           ELSE '([0-9]{2})' END;
            parse_groups := parse_groups || v_token;
        END IF;
    END LOOP;
    parse_pattern := parse_pattern || '$';
END
$$;

-- Fills the date and scope tokens of a compiled head or tail. Only immutable operations, so it is inlined.
-- The scope goes in last, so a scope value that happens to contain "{YYYY}" stays literal.
CREATE FUNCTION docnum._fill(p_text text, p_scope text, p_date date) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN strpos(p_text, '{') = 0 THEN p_text ELSE
    replace(replace(replace(replace(replace(p_text,
        '{YYYY}', lpad(extract(year FROM p_date)::integer::text, 4, '0')),
        '{YY}', lpad((extract(year FROM p_date)::integer % 100)::text, 2, '0')),
        '{MM}', lpad(extract(month FROM p_date)::integer::text, 2, '0')),
        '{DD}', lpad(extract(day FROM p_date)::integer::text, 2, '0')),
        '{SCOPE}', p_scope) END;

-- Renders a sequence value at its minimum width; wider values are never truncated.
CREATE FUNCTION docnum._seq_text(p_value bigint, p_width integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_width = 0 OR length(p_value::text) >= p_width THEN p_value::text
            ELSE lpad(p_value::text, p_width, '0') END;

-- The counter period a document date falls in: '' (never resets), 'YYYY' or 'YYYY-MM'.
CREATE FUNCTION docnum._period(p_reset text, p_date date) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE p_reset
    WHEN 'NEVER' THEN ''
    WHEN 'YEARLY' THEN lpad(extract(year FROM p_date)::integer::text, 4, '0')
    ELSE lpad(extract(year FROM p_date)::integer::text, 4, '0') || '-'
         || lpad(extract(month FROM p_date)::integer::text, 2, '0') END;

-- Reads a number back with its type's template: scope value, period, sequence value and a document date that
-- renders the same date tokens. sequence_value is NULL when the text is not exactly what the template renders
-- (a re-render must give the same text back).
CREATE FUNCTION docnum._parse_text(p_pattern text, p_groups text[], p_reset text, p_head text, p_tail text,
                                   p_width integer, p_number text,
                                   OUT scope_value text, OUT period text, OUT sequence_value bigint,
                                   OUT document_date date)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_match text[];
    v_year  integer;
    v_month integer := 1;
    v_day   integer := 1;
    v_date  date;
BEGIN
    v_match := regexp_match(p_number, p_pattern);
    IF v_match IS NULL THEN
        RETURN;
    END IF;
    scope_value := '';
    FOR v_i IN 1 .. array_length(p_groups, 1) LOOP
        CASE p_groups[v_i]
            WHEN 'SCOPE' THEN scope_value := v_match[v_i];
            WHEN 'YYYY' THEN v_year := v_match[v_i]::integer;
            WHEN 'YY' THEN v_year := 2000 + v_match[v_i]::integer;
            WHEN 'MM' THEN v_month := v_match[v_i]::integer;
            WHEN 'DD' THEN v_day := v_match[v_i]::integer;
            WHEN 'SEQ' THEN
                IF length(v_match[v_i]) > 18 THEN RETURN; END IF;
                sequence_value := v_match[v_i]::bigint;
        END CASE;
    END LOOP;
    IF sequence_value IS NULL OR sequence_value < 1 OR v_month NOT BETWEEN 1 AND 12 OR v_day NOT BETWEEN 1 AND 31
       OR v_year < 1000 THEN
        sequence_value := NULL;
        RETURN;
    END IF;
    -- Date arithmetic instead of make_date(y, m, d): an impossible day (02-30) shows as a month change.
    v_date := make_date(coalesce(v_year, 2000), v_month, 1) + (v_day - 1);
    IF extract(month FROM v_date) <> v_month THEN
        sequence_value := NULL;
        RETURN;
    END IF;
    period := docnum._period(p_reset, v_date);
    document_date := v_date;
    IF docnum._fill(p_head, scope_value, v_date) || docnum._seq_text(sequence_value, p_width)
       || docnum._fill(p_tail, scope_value, v_date) IS DISTINCT FROM p_number THEN
        scope_value := NULL;
        period := NULL;
        sequence_value := NULL;
        document_date := NULL;
    END IF;
END
$$;

-- _parse_text with a type's compiled template.
CREATE FUNCTION docnum._parse(p_type docnum.document_type, p_number text,
                              OUT scope_value text, OUT period text, OUT sequence_value bigint,
                              OUT document_date date)
LANGUAGE sql IMMUTABLE
RETURN docnum._parse_text(p_type.parse_pattern, p_type.parse_groups, p_type.reset, p_type.render_head,
                          p_type.render_tail, p_type.seq_width, p_number);

-- --- Injectivity: two counters never render the same text ----------------------------------------------------
-- A number must name one (type, scope value, period, sequence value), because the rendered text is unique across
-- all types (ledger_document_number_key): if two counters could render the same text, the later allocation would
-- find it taken and skip a value. The rule, enforced by define_type and alter_type through _check_template:
--
-- 1. Within a template. {TYPE}, {YYYY}, {YY}, {MM}, {DD} and literal text have a fixed width; {SEQ}/{SEQ:n}
--    (a value can outgrow its padding) and {SCOPE} (free text) do not. Without {SCOPE}, the width of {SEQ} is the
--    length of the number minus the fixed width, so a number reads back in exactly one way. With {SCOPE}, a
--    literal character that is not a digit must lie between {SCOPE} and {SEQ} (a letter of the {TYPE} code
--    counts). Proof, {SCOPE} first: the text is A scope M seq B with A, M, B of fixed width; let c be the last
--    non-digit of M, so that everything between c and seq renders digits. Reading from the end, B is cut off;
--    the run of digits before it stops exactly at c, so it is (the end of M) + seq and fixes where seq starts;
--    then M has a fixed width and the scope is what remains between A and M. {SEQ} first: the mirror image.
--    A scope value has no control characters and no surrounding spaces (checked at allocation).
-- 2. Across templates. The texts a template can render are contained in a linear pattern of items
--    (_template_items): a literal character, a digit, any digits (a loop), any character, any characters. Two
--    such patterns share a text exactly when the end of both can be reached together (_templates_meet, a search
--    over pairs of positions). A new template may share no text with any current or former template of another
--    type. With the same type's current and former templates it may share text only when the two differ in
--    nothing but the padding of {SEQ} (same text around {SEQ}): a shared text then reads back as the same scope,
--    period and value under both.
-- 3. {YY}. Two digits hold one century: the year of a {YY} number reads back as 20YY. A counter that restarts
--    each period is a counter per year, so a type with {YY} and a YEARLY or MONTHLY reset refuses (NB006) a
--    counter for a year outside 2000..2099 (trigger counter_yy_period_check, which runs only when a counter is
--    created: the allocation hot path is unchanged). A never-resetting type has one counter whose values alone
--    tell its numbers apart: any year may be rendered, and the date read back is the one in 2000..2099 with the
--    same {YY}, {MM} and {DD}.

-- The linear pattern a template's numbers match, one item per character position: 'c' || a literal character,
-- 'd' a digit, 'D' any number of digits, 'a' any character, 'A' any number of characters. {SEQ:n} is n digits
-- then any digits, {SCOPE} one character then any. Lenient: an unknown token is read as {SCOPE} (any text).
CREATE FUNCTION docnum._template_items(p_code text, p_format text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rest  text := p_format;
    v_match text[];
    v_items text[] := ARRAY[]::text[];
    v_token text;
BEGIN
    LOOP
        v_match := regexp_match(v_rest, '^([^{}]*)(\{[^{}]*\})(.*)$', 's');
        IF v_match IS NULL THEN
            v_match := ARRAY[v_rest, NULL, ''];
        END IF;
        v_items := v_items || ARRAY(SELECT 'c' || ch FROM string_to_table(v_match[1], NULL) WITH ORDINALITY
                                                          AS s(ch, n) ORDER BY n);
        EXIT WHEN v_match[2] IS NULL;
        v_token := upper(substr(v_match[2], 2, length(v_match[2]) - 2));
        v_items := v_items || CASE
            WHEN v_token = 'TYPE' THEN ARRAY(SELECT 'c' || ch FROM string_to_table(p_code, NULL) WITH ORDINALITY
                                                             AS s(ch, n) ORDER BY n)
            WHEN v_token = 'YYYY' THEN ARRAY['d', 'd', 'd', 'd']
            WHEN v_token IN ('YY', 'MM', 'DD') THEN ARRAY['d', 'd']
            WHEN v_token ~ '^SEQ(:[0-9]{1,2})?$' THEN
                array_fill('d'::text, ARRAY[greatest(coalesce(nullif(substr(v_token, 5), '')::integer, 1), 1)])
                || 'D'::text
            ELSE ARRAY['a', 'A'] END;
        v_rest := v_match[3];
    END LOOP;
    RETURN v_items;
END
$$;

-- A text both item patterns match, or NULL when there is none: a breadth-first search over pairs of positions
-- (at most (a + 1) * (b + 1) of them), so the witness is a shortest one. It illustrates an overlap of the
-- patterns; it need not be a number either type would issue (a loop of digits also matches '000').
CREATE FUNCTION docnum._templates_meet(p_a text[], p_b text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_na    constant integer := cardinality(p_a);
    v_nb    constant integer := cardinality(p_b);
    v_seen  text[] := ARRAY['']::text[];     -- state (i, j) has key (i - 1) * (b + 1) + j: the text that reached it
    v_queue integer[] := ARRAY[1];
    v_head  integer := 1;
    v_tail  integer := 1;
    v_key   integer;
    v_i     integer;
    v_j     integer;
    v_x     text;
    v_y     text;
    v_ni    integer;
    v_nj    integer;
    v_char  text;
BEGIN
    WHILE v_head <= v_tail LOOP
        v_key := v_queue[v_head];
        v_head := v_head + 1;
        v_i := (v_key - 1) / (v_nb + 1) + 1;
        v_j := (v_key - 1) % (v_nb + 1) + 1;
        IF v_i > v_na AND v_j > v_nb THEN
            RETURN v_seen[v_key];
        END IF;
        v_x := p_a[v_i];   -- NULL past the end
        v_y := p_b[v_j];
        FOR v_move IN 1 .. 3 LOOP
            v_ni := NULL;
            IF v_move = 1 AND v_x IN ('D', 'A') THEN          -- leave a loop of a
                v_ni := v_i + 1; v_nj := v_j; v_char := '';
            ELSIF v_move = 2 AND v_y IN ('D', 'A') THEN       -- leave a loop of b
                v_ni := v_i; v_nj := v_j + 1; v_char := '';
            ELSIF v_move = 3 AND v_x IS NOT NULL AND v_y IS NOT NULL THEN
                -- one character both items accept
                v_char := CASE
                    WHEN v_x IN ('a', 'A') AND v_y IN ('a', 'A') THEN 'x'
                    WHEN left(v_x, 1) = 'c' THEN
                        CASE WHEN v_y IN ('a', 'A') OR v_y = v_x OR (v_y IN ('d', 'D') AND v_x ~ '^c[0-9]$')
                             THEN substr(v_x, 2) END
                    WHEN left(v_y, 1) = 'c' THEN
                        CASE WHEN v_x IN ('a', 'A') OR (v_x IN ('d', 'D') AND v_y ~ '^c[0-9]$')
                             THEN substr(v_y, 2) END
                    ELSE '1' END;                             -- a digit meets a digit or any character
                IF v_char IS NOT NULL THEN
                    v_ni := v_i + CASE WHEN v_x IN ('D', 'A') THEN 0 ELSE 1 END;
                    v_nj := v_j + CASE WHEN v_y IN ('D', 'A') THEN 0 ELSE 1 END;
                    IF v_ni = v_i AND v_nj = v_j THEN
                        v_ni := NULL;                         -- two loops: nothing new
                    END IF;
                END IF;
            END IF;
            IF v_ni IS NOT NULL THEN
                v_key := (v_ni - 1) * (v_nb + 1) + v_nj;
                IF v_seen[v_key] IS NULL THEN
                    v_seen[v_key] := v_seen[(v_i - 1) * (v_nb + 1) + v_j] || v_char;
                    v_tail := v_tail + 1;
                    v_queue[v_tail] := v_key;
                END IF;
            END IF;
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

-- Refuses (NB006) a template that is not readable on its own (rule 1 above) or that could render a text another
-- type renders or rendered, or one the same type rendered for a different number (rule 2). p_skeleton is the
-- compiled render_head || '{SEQ}' || render_tail of the new template. Takes a lock on docnum.document_type that
-- only docnum's owner can take, so two definitions cannot both pass this check against each other.
CREATE FUNCTION docnum._check_template(p_code text, p_format text, p_skeleton text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_items    text[] := docnum._template_items(p_code, p_format);
    v_scope_at integer := array_position(v_items, 'A');
    v_seq_at   integer := array_position(v_items, 'D');
    v_other    record;
    v_witness  text;
BEGIN
    IF v_scope_at IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM generate_series(least(v_scope_at, v_seq_at) + 1, greatest(v_scope_at, v_seq_at) - 1) k
         WHERE v_items[k] ~ '^c[^0-9]$') THEN
        RAISE EXCEPTION 'invalid number format %: no separator between {SCOPE} and {SEQ}',
                quote_literal(left(p_format, 60))
            USING ERRCODE = 'NB006', COLUMN = 'format',
                  DETAIL = 'A scope value is free text and {SEQ} grows past its padding: only a literal character '
                           'that is not a digit, somewhere between the two, tells where one ends.',
                  HINT = 'Put a separator such as - or / between them, e.g. {SCOPE}-{SEQ:4} or {SCOPE}/{YYYY}/{SEQ}.';
    END IF;

    LOCK TABLE docnum.document_type IN SHARE ROW EXCLUSIVE MODE;
    FOR v_other IN
        WITH formats AS (
            SELECT t.code, t.format, true AS is_current FROM docnum.document_type t
            UNION ALL
            SELECT a.document_type, a.new_value ->> 'format', false FROM docnum.audit_log a
             WHERE a.operation IN ('DEFINE_TYPE', 'ALTER_TYPE') AND a.new_value ? 'format'
        )
        SELECT t.code, f.format, bool_or(f.is_current) AS is_current, t.scope, t.reset
          FROM formats f JOIN docnum.document_type t ON t.code = f.code
         GROUP BY t.code, f.format, t.scope, t.reset
         ORDER BY t.code, f.format
    LOOP
        v_witness := docnum._templates_meet(v_items, docnum._template_items(v_other.code, v_other.format));
        CONTINUE WHEN v_witness IS NULL;
        IF v_other.code <> p_code THEN
            RAISE EXCEPTION 'format % can render numbers of type %', quote_literal(left(p_format, 60)), v_other.code
                USING ERRCODE = 'NB006', COLUMN = 'format',
                      DETAIL = pg_catalog.format('Type %s, with its %s format %L, can render the same text, e.g. %L: '
                                                 'two counters would compete for one number.', v_other.code,
                                                 CASE WHEN v_other.is_current THEN 'current' ELSE 'former' END,
                                                 left(v_other.format, 60), left(v_witness, 60)),
                      HINT = 'Give the format a literal text no other type''s numbers can contain, e.g. {TYPE} '
                             'followed by a separator: {TYPE}-{SEQ:4}.';
        END IF;
        IF (SELECT c.render_head || '{SEQ}' || c.render_tail
              FROM docnum._compile_format(v_other.code, v_other.format, v_other.scope, v_other.reset) c)
           IS DISTINCT FROM p_skeleton THEN
            RAISE EXCEPTION 'format % can render numbers of an earlier format of %',
                    quote_literal(left(p_format, 60)), p_code
                USING ERRCODE = 'NB006', COLUMN = 'format',
                      DETAIL = pg_catalog.format('The %s format %L can render the same text, e.g. %L, for another '
                                                 'scope, period or value.',
                                                 CASE WHEN v_other.is_current THEN 'current' ELSE 'former' END,
                                                 left(v_other.format, 60), left(v_witness, 60)),
                      HINT = 'Change only the padding of {SEQ}, or choose a format no earlier number of the type can '
                             'match (e.g. another separator).';
        END IF;
    END LOOP;
END
$$;

-- Whether a counter of a type with these compiled parse groups may hold this period: a {YY} template reads years
-- back as 2000..2099, so a resetting counter of another year would share its numbers with one of 20YY.
CREATE FUNCTION docnum._period_fits(p_groups text[], p_period text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_period = '' OR p_period LIKE '20%' OR NOT 'YY' = ANY (p_groups);

-- Runs when a counter is created (never for the allocations' UPDATE): refuses a period its type's {YY} cannot
-- show (NB006).
CREATE FUNCTION docnum._counter_period_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (NEW.period = '' OR NEW.period LIKE '20%')
       AND NOT docnum._period_fits((SELECT t.parse_groups FROM docnum.document_type t
                                     WHERE t.code = NEW.document_type), NEW.period) THEN
        RAISE EXCEPTION 'document type % cannot number a document of %', NEW.document_type, left(NEW.period, 4)
            USING ERRCODE = 'NB006',
                  DETAIL = pg_catalog.format('Its format shows the year as {YY}, which reads back as 2000..2099, and '
                                             'its counter restarts each period: period %L would share numbers with '
                                             '%L.', NEW.period, '20' || substr(NEW.period, 3)),
                  HINT = 'Date the document between 2000 and 2099, or have an administrator change the '
                         'type''s format to {YYYY}.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER counter_yy_period_check BEFORE INSERT ON docnum.counter
    FOR EACH ROW EXECUTE FUNCTION docnum._counter_period_check();
