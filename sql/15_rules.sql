-- docnum: the rules every command shares, each in one function. What counts as a visible text and a scope value,
-- how a type code is looked up (NB001), how long an operation waits for a counter and how it sets that limit,
-- how an audit row is written outside the hot path, and how the metrics count waits and failures.
-- The hot path (docnum._prepare, docnum._issue) calls the rules written in SQL, which the planner inlines, and
-- calls a PL/pgSQL rule only to explain a refusal: a PL/pgSQL call costs some 10-15 k instructions.

-- True when a text holds a character that is not shown as itself: control characters (Unicode category Cc), format
-- characters (Cf: soft hyphen, zero-width space and joiners, bidirectional marks, word joiner, byte order mark,
-- tags...) and the line and paragraph separators (Zl, Zp). Such a character would make two different values
-- print alike, so every text docnum stores or prints as an identifier refuses them. The one list of them.
CREATE FUNCTION docnum._has_invisible(p_text text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_text ~ ('[\x01-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e'
                 '\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd'
                 '\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001'
                 '\U000e0020-\U000e007f]');

-- True when a text neither starts nor ends with a space of any kind (Unicode category Zs: the space, no-break
-- space, en and em spaces, ideographic space...): a scope value with one would print like another without it.
CREATE FUNCTION docnum._is_trimmed(p_text text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_text = btrim(p_text, E' \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a'
                              '\u202f\u205f\u3000');

-- The one home of the length limits of free text, by argument name: what one call may store in a row that is
-- never deleted (docs/sql-api.md, "Limits"). An argument not listed gets the strictest, 200.
CREATE FUNCTION docnum._text_limit(p_name text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE p_name WHEN 'document_ref' THEN 500 WHEN 'document_number' THEN 300 WHEN 'reason' THEN 1000
                   ELSE 200 END;  -- actor, request_id, format, and any other

-- The scope kinds whose counters are kept per scope value (a project or contract code): the one list.
CREATE FUNCTION docnum._has_scope_value(p_kind text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_kind IN ('PROJECT', 'CONTRACT');

-- Checks a free-text argument (actor, reason, reference...): NULL is fine, otherwise 1 to its limit
-- (docnum._text_limit) of visible characters. p_name is the argument's name, reported as the error's COLUMN.
CREATE FUNCTION docnum._check_text(p_name text, p_value text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_max integer := docnum._text_limit(p_name);
BEGIN
    IF p_value IS NOT NULL AND (p_value = '' OR length(p_value) > p_max OR docnum._has_invisible(p_value)) THEN
        RAISE EXCEPTION 'invalid %: %', p_name, quote_literal(left(p_value, 60))
            USING ERRCODE = 'NB006', COLUMN = p_name,
                  DETAIL = pg_catalog.format('%s must be 1 to %s characters without control or invisible '
                                             'format characters.', p_name, p_max),
                  HINT = 'Give a non-empty text of visible characters within the limit.';
    END IF;
    RETURN p_value;
END
$$;

-- The metadata rule: NULL, or a JSON object of at most 8192 bytes as text; a batch that copies it into each of
-- its p_copies rows may store at most 1 MiB of it in all. Ledger rows are never deleted, so this is what bounds
-- the room one call can take for good. Raises NB006 naming p_column, else returns the metadata.
CREATE FUNCTION docnum._check_metadata(p_column text, p_metadata jsonb, p_copies integer DEFAULT 1) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_max_bytes   constant integer := 8192;
    c_batch_bytes constant integer := 1048576;
    v_bytes       integer;
BEGIN
    IF p_metadata IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_metadata) <> 'object' THEN
        RAISE EXCEPTION 'invalid %: not a JSON object', p_column
            USING ERRCODE = 'NB006', COLUMN = p_column,
                  DETAIL = pg_catalog.format('%s must be a JSON object, not a JSON %s.', p_column,
                                             jsonb_typeof(p_metadata)),
                  HINT = 'Give an object such as {"project": "P-1"}, or leave it out.';
    END IF;
    v_bytes := octet_length(p_metadata::text);
    IF v_bytes > c_max_bytes THEN
        RAISE EXCEPTION 'invalid %: % bytes', p_column, v_bytes
            USING ERRCODE = 'NB006', COLUMN = p_column,
                  DETAIL = pg_catalog.format('%s holds at most %s bytes as JSON text; this one holds %s.', p_column,
                                             c_max_bytes, v_bytes),
                  HINT = 'Keep references in it, not documents: store the document elsewhere and its id here.';
    END IF;
    IF v_bytes::bigint * p_copies > c_batch_bytes THEN
        RAISE EXCEPTION 'invalid %: % bytes in each of % numbers', p_column, v_bytes, p_copies
            USING ERRCODE = 'NB006', COLUMN = p_column,
                  DETAIL = pg_catalog.format('A batch stores its %s with every number: at most %s bytes in all, '
                                             'here %s x %s.', p_column, c_batch_bytes, p_copies, v_bytes),
                  HINT = 'Issue a smaller batch, or keep less in the metadata.';
    END IF;
    RETURN p_metadata;
END
$$;

-- What a call with a request key asked for, as one text: the md5 of its arguments as a JSON array (the function's
-- name first, then its arguments as given, defaults left NULL), so that a retry on another day or with its
-- object keys in another order is the same request, and one that changes any argument is another.
CREATE FUNCTION docnum._request_digest(p_arguments jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN md5(p_arguments::text);

-- The scope-value rule: 1 to 64 characters, none of them invisible, no space of any kind at either end. NULL for
-- NULL. Inlined where it is used; docnum._check_scope() explains a refusal.
CREATE FUNCTION docnum._is_scope_value(p_scope text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_scope <> '' AND length(p_scope) <= 64 AND NOT docnum._has_invisible(p_scope)
       AND docnum._is_trimmed(p_scope);

-- Returns the scope value a type counts under ('' for a type without one) or raises NB006 saying why the given
-- one is refused: a PROJECT or CONTRACT type needs a value that passes docnum._is_scope_value(), any other type
-- takes none (NULL). p_column names the argument the value came from (scope, document_number...).
CREATE FUNCTION docnum._check_scope(p_type docnum.document_type, p_scope text, p_column text DEFAULT 'scope')
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT docnum._has_scope_value(p_type.scope) THEN
        IF p_scope IS NOT NULL THEN
            RAISE EXCEPTION 'document type % takes no scope value', p_type.code
                USING ERRCODE = 'NB006', COLUMN = p_column,
                      DETAIL = pg_catalog.format('%s is a %s type; scope %s would be ignored.', p_type.code,
                                                 p_type.scope, quote_literal(left(p_scope, 60))),
                      HINT = 'Leave the scope value out for this type.';
        END IF;
        RETURN '';
    END IF;
    IF p_scope IS NULL OR p_scope = '' THEN
        RAISE EXCEPTION 'document type % needs a scope value', p_type.code
            USING ERRCODE = 'NB006', COLUMN = p_column,
                  DETAIL = pg_catalog.format('%s numbers are counted per %s.', p_type.code, lower(p_type.scope)),
                  HINT = pg_catalog.format('Give the %s identifier as the scope value, e.g. PRJ-7.',
                                           lower(p_type.scope));
    END IF;
    IF NOT docnum._is_scope_value(p_scope) THEN
        RAISE EXCEPTION 'invalid scope value %', quote_literal(left(p_scope, 60))
            USING ERRCODE = 'NB006', COLUMN = p_column,
                  DETAIL = 'A scope value is 1 to 64 characters, without control or invisible format characters or '
                           'surrounding spaces.',
                  HINT = 'Use a short stable identifier such as a project code.';
    END IF;
    RETURN p_scope;
END
$$;

-- The type of a code, or NB006 (no code) / NB001 (no such type), the error every command raises for a type code
-- that does not exist. Reads without locking. The hot path reads the row itself and calls this only on a miss.
CREATE FUNCTION docnum._type(p_code text) RETURNS docnum.document_type
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type docnum.document_type;
BEGIN
    IF p_code IS NULL OR p_code = '' THEN
        RAISE EXCEPTION 'a document type is required'
            USING ERRCODE = 'NB006', COLUMN = 'document_type', DETAIL = 'document_type was NULL or empty.',
                  HINT = 'Give the code of a defined document type, e.g. COR.';
    END IF;
    SELECT t.* INTO v_type FROM docnum.document_type t WHERE t.code = p_code;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'document type % is not defined', quote_literal(left(p_code, 60))
            USING ERRCODE = 'NB001', COLUMN = 'document_type',
                  DETAIL = 'No row in docnum.document_type has this code.',
                  HINT = 'Define the type first; codes are upper-case, e.g. COR.';
    END IF;
    RETURN v_type;
END
$$;

-- The limit an operation on a type's counters waits under, in milliseconds (0: none): the type's lock_timeout
-- unless the session's own lock_timeout is shorter. One unit, whichever setting it came from.
CREATE FUNCTION docnum._lock_limit_ms(p_type_limit interval) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_session bigint := ceil(extract(epoch FROM current_setting('lock_timeout')::interval) * 1000)::bigint;
    v_type    bigint := ceil(extract(epoch FROM p_type_limit) * 1000)::bigint;
BEGIN
    IF v_type IS NULL OR (v_session > 0 AND v_session < v_type) THEN
        RETURN v_session;
    END IF;
    RETURN v_type;
END
$$;

-- Sets lock_timeout for the rest of this transaction to a value from docnum._lock_limit_ms() (ms) or to the
-- session's own setting, to put it back; returns the value set. The only place docnum changes lock_timeout.
CREATE FUNCTION docnum._set_lock_timeout(p_value text) RETURNS text
LANGUAGE sql VOLATILE
RETURN pg_catalog.set_config('lock_timeout', p_value, true);

-- Writes one audit row and returns its id; every audit row outside the hot path is written here (docnum._issue
-- writes its own, inline). Who, from where and when come from the table's defaults.
CREATE FUNCTION docnum._audit(p_operation text, p_document_type text, p_document_number text, p_scope_value text,
                              p_actor text, p_old_value jsonb, p_new_value jsonb, p_metadata jsonb)
RETURNS bigint
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    INSERT INTO docnum.audit_log (operation, document_type, document_number, scope_value, actor, old_value,
                                  new_value, metadata)
    VALUES (p_operation, p_document_type, p_document_number, p_scope_value, p_actor, p_old_value, p_new_value,
            p_metadata)
    RETURNING audit_log.audit_id;
END;

-- The upper bounds, in seconds, of the lock-wait buckets (numbering_lock_wait_seconds's buckets). A wait
-- counts in the first bucket whose bound it does not exceed; one past the last holds the waits over 5 s.
CREATE FUNCTION docnum._lock_wait_bounds() RETURNS double precision[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN '{0.01,0.05,0.1,0.5,1,2,5}'::double precision[];

-- The bucket (1..8) of docnum._lock_wait_bounds() a wait of p_seconds counts in. One expression, so that it
-- is inlined where an allocation uses it: that is inside the counter's critical section.
CREATE FUNCTION docnum._lock_wait_bucket(p_seconds double precision) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN width_bucket(p_seconds, docnum._lock_wait_bounds()) + 1
       - (p_seconds = ANY (docnum._lock_wait_bounds()))::integer;

-- The error codes of failures the metrics count per type: NB002 (a counter ran out) and NB003 (a counter stayed
-- busy past the lock timeout). A failure rolls back everything its transaction wrote, so each is counted by a
-- sequence of its own per type, which no rollback takes back: docnum._failure_sequence(), made with the type.
CREATE FUNCTION docnum._failure_codes() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN '{NB002,NB003}'::text[];

-- The qualified name of the sequence that counts a type's failures with one error code.
CREATE FUNCTION docnum._failure_sequence(p_type text, p_code text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 'docnum.' || quote_ident(p_type || ':' || p_code);

-- Creates a type's failure sequences (those it lacks).
CREATE FUNCTION docnum._create_failure_sequences(p_type text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_code text;
BEGIN
    FOREACH v_code IN ARRAY docnum._failure_codes() LOOP
        EXECUTE pg_catalog.format('CREATE SEQUENCE IF NOT EXISTS %s', docnum._failure_sequence(p_type, v_code));
    END LOOP;
END
$$;

-- Counts one failure of a type with an error code, just before it is raised.
CREATE FUNCTION docnum._count_failure(p_type text, p_code text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sequence regclass := to_regclass(docnum._failure_sequence(p_type, p_code));
BEGIN
    IF v_sequence IS NOT NULL THEN
        PERFORM nextval(v_sequence);
    END IF;
END
$$;

-- The actor of a call that names none: the `sub` claim of the request's JWT when the caller is PostgREST,
-- Supabase or docnum serve, which put the verified claims in request.jwt.claims for the transaction; NULL when
-- there is none, or the setting is not a JSON object. Any session may set that setting, so the claim is a label
-- the caller gives, as the actor argument is; each public function that takes an actor calls this only when
-- it got none and the setting is there, and then checks the result like any actor.
CREATE FUNCTION docnum._claimed_actor() RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_claims text := nullif(current_setting('request.jwt.claims', true), '');
BEGIN
    IF v_claims IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        RETURN CASE WHEN jsonb_typeof(v_claims::jsonb) = 'object' THEN v_claims::jsonb ->> 'sub' END;
    EXCEPTION WHEN invalid_text_representation THEN
        RETURN NULL;
    END;
END
$$;

-- Who a call records: the actor it names, or, when it names none inside a request that set JWT claims
-- (PostgREST, Supabase, docnum serve), the claims' sub. Every public function with an actor argument starts
-- with it.
CREATE FUNCTION docnum._actor(p_actor text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN p_actor IS NULL AND current_setting('request.jwt.claims', true) <> ''
            THEN docnum._claimed_actor() ELSE p_actor END;
