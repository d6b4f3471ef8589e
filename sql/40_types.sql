-- docnum: document type definitions. define_type creates a type after validating every setting;
-- alter_type changes one later and audits old and new values. Scope and reset never change after definition.

-- Validates the settings shared by define_type and alter_type; raises NB006 naming the first bad one.
CREATE FUNCTION docnum._check_type_settings(p_time_zone text, p_max_value bigint, p_ttl interval,
                                            p_lock_timeout interval, p_metadata jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_time_zone IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names z WHERE z.name = p_time_zone)
    THEN
        RAISE EXCEPTION 'unknown time zone %', coalesce(quote_literal(left(p_time_zone, 60)), 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'time_zone', DETAIL = 'time_zone must be an IANA time zone name.',
                  HINT = 'For example UTC, Asia/Bangkok or Europe/Paris.';
    END IF;
    IF p_max_value IS NOT NULL AND p_max_value NOT BETWEEN 1 AND 9223372036854775806 THEN
        RAISE EXCEPTION 'invalid max_value %', p_max_value
            USING ERRCODE = 'NB006', COLUMN = 'max_value',
                  DETAIL = 'max_value lies between 1 and 9223372036854775806 (2^63 - 2).',
                  HINT = 'Leave it out to use the largest value the {SEQ:n} padding can show.';
    END IF;
    IF p_ttl IS NULL OR p_ttl <= interval '0' OR p_ttl > interval '7 days' THEN
        RAISE EXCEPTION 'invalid reservation_ttl %', coalesce(p_ttl::text, 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'reservation_ttl',
                  DETAIL = 'A reservation lasts more than 0 and at most 7 days.',
                  HINT = 'The default is 5 minutes.';
    END IF;
    IF p_lock_timeout IS NOT NULL AND (p_lock_timeout < interval '1 millisecond' OR p_lock_timeout > interval '1 hour')
    THEN
        RAISE EXCEPTION 'invalid lock_timeout %', p_lock_timeout
            USING ERRCODE = 'NB006', COLUMN = 'lock_timeout',
                  DETAIL = 'lock_timeout lies between 1 millisecond and 1 hour, or is NULL.',
                  HINT = 'Leave it out to keep only the session''s own lock timeout.';
    END IF;
    IF p_metadata IS NULL THEN
        RAISE EXCEPTION 'invalid metadata: NULL'
            USING ERRCODE = 'NB006', COLUMN = 'metadata',
                  DETAIL = 'A type''s metadata is a JSON object.', HINT = 'Give an empty object, {}, for none.';
    END IF;
    PERFORM docnum._check_metadata('metadata', p_metadata);
END
$$;

-- The part of a type row worth auditing (the compiled template columns are derived and left out).
CREATE FUNCTION docnum._type_json(p_type docnum.document_type) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN to_jsonb(p_type) - ARRAY['render_head', 'render_tail', 'seq_width', 'parse_pattern', 'parse_groups',
                                'head_pattern', 'tail_pattern', 'created_at', 'updated_at'];

-- Creates a document type. Re-running it with the same definition returns the existing type unchanged;
-- a different definition under an existing code raises NB010.
CREATE FUNCTION docnum.define_type(
    code text, format text, scope text DEFAULT 'GLOBAL', reset text DEFAULT NULL,
    time_zone text DEFAULT 'UTC', max_value bigint DEFAULT NULL,
    reservation_ttl interval DEFAULT interval '5 minutes', lock_timeout interval DEFAULT interval '5 seconds',
    allow_manual_override boolean DEFAULT false, metadata jsonb DEFAULT '{}'::jsonb, actor text DEFAULT NULL)
RETURNS docnum.document_type
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_scope    text := upper(define_type.scope);
    v_reset    text := upper(define_type.reset);
    v_compiled record;
    v_new      docnum.document_type;
    v_existing docnum.document_type;
BEGIN
    define_type.actor := docnum._actor(define_type.actor);
    PERFORM docnum._require_writable();
    IF define_type.code IS NULL OR define_type.code !~ '^[A-Z][A-Z0-9_]{0,29}$' THEN
        RAISE EXCEPTION 'invalid document type code %', coalesce(quote_literal(left(define_type.code, 60)), 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'code',
                  DETAIL = 'A code is an upper-case identifier: a letter, then letters, digits or _ (30 at most).',
                  HINT = 'For example COR or RFA_2.';
    END IF;
    IF v_scope IS NULL OR v_scope NOT IN ('GLOBAL', 'PROJECT', 'CONTRACT', 'YEARLY', 'MONTHLY') THEN
        RAISE EXCEPTION 'invalid scope %', coalesce(quote_literal(left(define_type.scope, 60)), 'NULL')
            USING ERRCODE = 'NB006', COLUMN = 'scope',
                  DETAIL = 'scope is one of GLOBAL, PROJECT, CONTRACT, YEARLY, MONTHLY.',
                  HINT = 'PROJECT and CONTRACT take a scope value at allocation; YEARLY and MONTHLY reset.';
    END IF;
    IF v_reset IS NULL THEN
        v_reset := CASE v_scope WHEN 'YEARLY' THEN 'YEARLY' WHEN 'MONTHLY' THEN 'MONTHLY' ELSE 'NEVER' END;
    ELSIF v_reset NOT IN ('NEVER', 'YEARLY', 'MONTHLY')
          OR (v_scope IN ('YEARLY', 'MONTHLY') AND v_reset <> v_scope) THEN
        RAISE EXCEPTION 'invalid reset % for scope %', quote_literal(left(define_type.reset, 60)),
                left(v_scope, 60)
            USING ERRCODE = 'NB006', COLUMN = 'reset',
                  DETAIL = 'reset is NEVER, YEARLY or MONTHLY; a YEARLY or MONTHLY scope implies its own reset.',
                  HINT = 'For a per-project counter restarting each year, choose the PROJECT scope and the YEARLY '
                         'reset.';
    END IF;
    PERFORM docnum._check_type_settings(define_type.time_zone, define_type.max_value, define_type.reservation_ttl,
                                        define_type.lock_timeout, define_type.metadata);
    PERFORM docnum._check_text('actor', define_type.actor);
    IF define_type.allow_manual_override IS NULL THEN
        RAISE EXCEPTION 'allow_manual_override cannot be NULL'
            USING ERRCODE = 'NB006', COLUMN = 'allow_manual_override',
                  DETAIL = 'It is true or false.', HINT = 'The default is false.';
    END IF;

    v_compiled := docnum._compile_format(define_type.code, define_type.format, v_scope, v_reset);

    v_new.code := define_type.code;
    v_new.format := define_type.format;
    v_new.scope := v_scope;
    v_new.reset := v_reset;
    v_new.time_zone := define_type.time_zone;
    v_new.max_value := coalesce(define_type.max_value,
                                CASE WHEN v_compiled.seq_width = 0 THEN 9223372036854775806
                                     ELSE (10::numeric ^ v_compiled.seq_width - 1)::bigint END);
    v_new.reservation_ttl := define_type.reservation_ttl;
    v_new.lock_timeout := define_type.lock_timeout;
    v_new.allow_manual_override := define_type.allow_manual_override;
    v_new.metadata := define_type.metadata;
    v_new.render_head := v_compiled.render_head;
    v_new.render_tail := v_compiled.render_tail;
    v_new.seq_width := v_compiled.seq_width;
    v_new.parse_pattern := v_compiled.parse_pattern;
    v_new.parse_groups := v_compiled.parse_groups;
    v_new.created_at := now();
    v_new.updated_at := now();

    SELECT t.* INTO v_existing FROM docnum.document_type t WHERE t.code = define_type.code FOR UPDATE;
    IF FOUND THEN
        IF docnum._type_json(v_existing) = docnum._type_json(v_new) THEN
            RETURN v_existing;
        END IF;
        RAISE EXCEPTION 'document type % already exists with another definition', define_type.code
            USING ERRCODE = 'NB010',
                  DETAIL = pg_catalog.format('Existing: %s', left(docnum._type_json(v_existing)::text, 1000)),
                  HINT = 'Alter the type instead; its scope and reset cannot change.';
    END IF;
    -- Two counters never render the same text: not within this template, nor beside any other type's (current or
    -- former) template. See the rule in 20_format.sql.
    PERFORM docnum._check_template(v_new.code, v_new.format, v_new.render_head || '{SEQ}' || v_new.render_tail);

    INSERT INTO docnum.document_type (code, format, scope, reset, time_zone, max_value, reservation_ttl,
                                      lock_timeout, allow_manual_override, metadata, created_at, updated_at,
                                      render_head, render_tail, seq_width, parse_pattern, parse_groups)
    VALUES (v_new.code, v_new.format, v_new.scope, v_new.reset, v_new.time_zone, v_new.max_value,
            v_new.reservation_ttl, v_new.lock_timeout, v_new.allow_manual_override, v_new.metadata,
            v_new.created_at, v_new.updated_at, v_new.render_head, v_new.render_tail, v_new.seq_width,
            v_new.parse_pattern, v_new.parse_groups)
    RETURNING * INTO v_new;
    PERFORM docnum._create_failure_sequences(v_new.code);
    PERFORM docnum._audit('DEFINE_TYPE', v_new.code, NULL, NULL, define_type.actor, NULL, docnum._type_json(v_new),
                          NULL);
    RETURN v_new;
END
$$;

-- Changes a type's format, time zone, max_value, TTL, lock timeout, override flag or metadata (NULL leaves a
-- setting unchanged; lock_timeout => '0' removes the type's own limit) and audits old and new values.
-- Raising max_value is the remedy for NB002; it can never drop below a counter's value, and a new format must
-- read every existing number of the type back to itself.
CREATE FUNCTION docnum.alter_type(
    document_type text, format text DEFAULT NULL, time_zone text DEFAULT NULL, max_value bigint DEFAULT NULL,
    reservation_ttl interval DEFAULT NULL, lock_timeout interval DEFAULT NULL,
    allow_manual_override boolean DEFAULT NULL, metadata jsonb DEFAULT NULL, actor text DEFAULT NULL,
    reason text DEFAULT NULL)
RETURNS docnum.document_type
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old      docnum.document_type;
    v_new      docnum.document_type;
    v_compiled record;
    v_bad      record;
BEGIN
    alter_type.actor := docnum._actor(alter_type.actor);
    PERFORM docnum._require_writable();
    PERFORM docnum._check_text('actor', alter_type.actor);
    PERFORM docnum._check_text('reason', alter_type.reason);
    v_old := docnum._type(alter_type.document_type);
    SELECT t.* INTO STRICT v_old FROM docnum.document_type t WHERE t.code = v_old.code FOR UPDATE;
    v_new := v_old;
    v_new.time_zone := coalesce(alter_type.time_zone, v_old.time_zone);
    v_new.max_value := coalesce(alter_type.max_value, v_old.max_value);
    v_new.reservation_ttl := coalesce(alter_type.reservation_ttl, v_old.reservation_ttl);
    -- lock_timeout => interval '0' removes the type's own limit (only the session's lock_timeout remains).
    v_new.lock_timeout := CASE WHEN alter_type.lock_timeout = interval '0' THEN NULL
                               ELSE coalesce(alter_type.lock_timeout, v_old.lock_timeout) END;
    v_new.allow_manual_override := coalesce(alter_type.allow_manual_override, v_old.allow_manual_override);
    v_new.metadata := coalesce(alter_type.metadata, v_old.metadata);
    PERFORM docnum._check_type_settings(v_new.time_zone, v_new.max_value, v_new.reservation_ttl,
                                        v_new.lock_timeout, v_new.metadata);

    IF alter_type.format IS NOT NULL AND alter_type.format <> v_old.format THEN
        v_compiled := docnum._compile_format(v_old.code, alter_type.format, v_old.scope, v_old.reset);
        v_new.format := alter_type.format;
        v_new.render_head := v_compiled.render_head;
        v_new.render_tail := v_compiled.render_tail;
        v_new.seq_width := v_compiled.seq_width;
        v_new.parse_pattern := v_compiled.parse_pattern;
        v_new.parse_groups := v_compiled.parse_groups;
        PERFORM docnum._check_template(v_old.code, v_new.format, v_new.render_head || '{SEQ}' || v_new.render_tail);
        -- A {YY} format cannot take over a resetting counter of a year outside 2000..2099.
        SELECT c.period INTO v_bad
          FROM docnum.counter c
         WHERE c.document_type = v_old.code AND NOT docnum._period_fits(v_new.parse_groups, c.period)
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'format % cannot show period % of %', quote_literal(left(alter_type.format, 60)),
                    v_bad.period, v_old.code
                USING ERRCODE = 'NB006', COLUMN = 'format',
                      DETAIL = '{YY} reads back as a year of 2000..2099, and the type has a counter of another '
                               'year.',
                      HINT = 'Keep {YYYY} in the format.';
        END IF;
        -- No existing number may read as a different number of this type under the new template.
        SELECT l.document_number, l.document_type INTO v_bad
          FROM docnum.ledger l
          LEFT JOIN docnum.counter c ON c.counter_id = l.counter_id
          CROSS JOIN LATERAL docnum._parse(v_new, l.document_number) p
         WHERE l.document_number ~ v_new.parse_pattern
           AND (l.document_type <> v_old.code OR p.sequence_value IS DISTINCT FROM l.sequence_value
                OR p.scope_value IS DISTINCT FROM c.scope_value OR p.period IS DISTINCT FROM c.period)
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'format % would make % ambiguous', quote_literal(left(alter_type.format, 60)),
                    quote_literal(left(v_bad.document_number, 60))
                USING ERRCODE = 'NB006', COLUMN = 'format',
                      DETAIL = pg_catalog.format('Existing number %s (type %s) would read as a different %s number.',
                                                 left(v_bad.document_number, 60), v_bad.document_type,
                                                 v_old.code),
                      HINT = 'Choose a format whose numbers cannot be confused with existing ones (e.g. a new '
                             'prefix).';
        END IF;
    END IF;

    SELECT c.scope_value, c.period, c.current_value INTO v_bad
      FROM docnum.counter c
     WHERE c.document_type = v_old.code AND c.current_value > v_new.max_value
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'max_value % is below a counter of %', v_new.max_value, v_old.code
            USING ERRCODE = 'NB006', COLUMN = 'max_value',
                  DETAIL = pg_catalog.format('Counter %s/%s is already at %s.', v_bad.scope_value, v_bad.period,
                                             v_bad.current_value),
                  HINT = 'Keep the maximum value at or above every counter''s current value.';
    END IF;

    IF docnum._type_json(v_new) = docnum._type_json(v_old) THEN
        RETURN v_old;
    END IF;
    v_new.updated_at := now();
    UPDATE docnum.document_type t
       SET format = v_new.format, time_zone = v_new.time_zone, max_value = v_new.max_value,
           reservation_ttl = v_new.reservation_ttl, lock_timeout = v_new.lock_timeout,
           allow_manual_override = v_new.allow_manual_override, metadata = v_new.metadata,
           updated_at = v_new.updated_at, render_head = v_new.render_head, render_tail = v_new.render_tail,
           seq_width = v_new.seq_width, parse_pattern = v_new.parse_pattern, parse_groups = v_new.parse_groups
     WHERE t.code = v_old.code;
    PERFORM docnum._audit('ALTER_TYPE', v_old.code, NULL, NULL, alter_type.actor, docnum._type_json(v_old),
                          docnum._type_json(v_new),
                          CASE WHEN alter_type.reason IS NULL THEN NULL
                               ELSE jsonb_build_object('reason', alter_type.reason) END);
    RETURN v_new;
END
$$;
