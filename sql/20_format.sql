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
    v_i         integer;
    v_piece     text;
    v_variable  boolean;
    v_prev_variable boolean := false;
    v_hint      constant text :=
        'Tokens: {TYPE} {SCOPE} {YYYY} {YY} {MM} {DD} {SEQ} {SEQ:n}; everything else is literal text.';
BEGIN
    IF p_format IS NULL OR p_format = '' THEN
        RAISE EXCEPTION 'a number format is required'
            USING ERRCODE = 'NB006', DETAIL = 'format was NULL or empty.', HINT = v_hint;
    END IF;
    IF p_format ~ '[[:cntrl:]]' OR length(p_format) > 200 THEN
        RAISE EXCEPTION 'invalid number format %', quote_literal(p_format)
            USING ERRCODE = 'NB006', DETAIL = 'A format is at most 200 printable characters.', HINT = v_hint;
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
        RAISE EXCEPTION 'invalid number format %: unbalanced brace', quote_literal(p_format)
            USING ERRCODE = 'NB006', DETAIL = 'Braces are reserved for tokens such as {SEQ:5}.', HINT = v_hint;
    END IF;
    v_literals := v_literals || v_rest;

    FOR v_i IN 1 .. coalesce(array_length(v_tokens, 1), 0) LOOP
        v_token := v_tokens[v_i];
        IF v_token !~ '^(TYPE|SCOPE|YYYY|YY|MM|DD|SEQ|SEQ:([1-9]|1[0-8]))$' THEN
            RAISE EXCEPTION 'invalid number format %: unknown token {%}', quote_literal(p_format), v_token
                USING ERRCODE = 'NB006', DETAIL = '{SEQ:n} takes a width from 1 to 18.', HINT = v_hint;
        END IF;
        IF v_token LIKE 'SEQ%' THEN
            IF v_seen_seq THEN
                RAISE EXCEPTION 'invalid number format %: more than one {SEQ}', quote_literal(p_format)
                    USING ERRCODE = 'NB006', DETAIL = 'A number has exactly one sequence part.', HINT = v_hint;
            END IF;
            v_seen_seq := true;
        ELSIF array_position(v_tokens, v_token) <> v_i THEN
            RAISE EXCEPTION 'invalid number format %: {%} appears twice', quote_literal(p_format), v_token
                USING ERRCODE = 'NB006', DETAIL = 'Each token may appear once.', HINT = v_hint;
        END IF;
        -- {SCOPE} and an unpadded {SEQ} have no fixed width: literal text must separate them from other tokens,
        -- or a number could not be read back unambiguously.
        v_variable := v_token IN ('SCOPE', 'SEQ');
        IF v_i > 1 AND v_literals[v_i] = '' AND (v_variable OR v_prev_variable) THEN
            RAISE EXCEPTION 'invalid number format %: {%} and {%} need literal text between them',
                    quote_literal(p_format), v_tokens[v_i - 1], v_token
                USING ERRCODE = 'NB006',
                      DETAIL = '{SCOPE} and {SEQ} without padding have no fixed width.',
                      HINT = 'Put a separator such as - or / between them, e.g. {SCOPE}-{SEQ}.';
        END IF;
        v_prev_variable := v_variable;
    END LOOP;

    IF NOT v_seen_seq THEN
        RAISE EXCEPTION 'invalid number format %: no {SEQ}', quote_literal(p_format)
            USING ERRCODE = 'NB006', DETAIL = 'A number needs exactly one {SEQ} or {SEQ:n}.', HINT = v_hint;
    END IF;
    IF 'YYYY' = ANY (v_tokens) AND 'YY' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format %: both {YYYY} and {YY}', quote_literal(p_format)
            USING ERRCODE = 'NB006', DETAIL = 'Use one year token.', HINT = v_hint;
    END IF;
    -- Different counters must never render the same text.
    IF p_scope IN ('PROJECT', 'CONTRACT') AND NOT 'SCOPE' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a % scope: no {SCOPE}', quote_literal(p_format), p_scope
            USING ERRCODE = 'NB006',
                  DETAIL = 'Each scope value has its own counter, so the scope must be part of the number.',
                  HINT = 'Add {SCOPE}, e.g. {SCOPE}/{TYPE}/{SEQ:4}.';
    END IF;
    IF p_scope NOT IN ('PROJECT', 'CONTRACT') AND 'SCOPE' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a % scope: {SCOPE} has no value', quote_literal(p_format),
                p_scope
            USING ERRCODE = 'NB006', DETAIL = 'Only PROJECT and CONTRACT types take a scope value.',
                  HINT = 'Remove {SCOPE} or use scope => ''PROJECT''.';
    END IF;
    IF p_reset IN ('YEARLY', 'MONTHLY') AND NOT ('YYYY' = ANY (v_tokens) OR 'YY' = ANY (v_tokens)) THEN
        RAISE EXCEPTION 'invalid number format % for a % reset: no year', quote_literal(p_format), p_reset
            USING ERRCODE = 'NB006',
                  DETAIL = 'The counter restarts each period, so the period must be part of the number.',
                  HINT = 'Add {YYYY} or {YY}.';
    END IF;
    IF p_reset = 'MONTHLY' AND NOT 'MM' = ANY (v_tokens) THEN
        RAISE EXCEPTION 'invalid number format % for a MONTHLY reset: no month', quote_literal(p_format)
            USING ERRCODE = 'NB006',
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
    v_i     integer;
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
