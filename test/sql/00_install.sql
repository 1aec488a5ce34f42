-- The extension installs, its version matches the Makefile, every object
-- is commented and every table is keyed by site_id first.
SELECT extname, extversion FROM pg_extension WHERE extname = 'prepay';

-- every table, column, function, type, trigger, sequence and index has a
-- COMMENT (a partition's columns, indexes and row triggers are its table's)
SELECT c.relname AS uncommented_relation
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'prepay' AND c.relkind IN ('r', 'S', 'v', 'i') AND NOT (c.relkind = 'i' AND c.relispartition)
   AND c.relname NOT LIKE '%_pkey' AND c.relname NOT LIKE '%_key'
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT c.relname, a.attname AS uncommented_column
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'prepay' AND c.relkind = 'r' AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped
   AND col_description(c.oid, a.attnum) IS NULL;
SELECT p.proname AS uncommented_function
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'prepay' AND obj_description(p.oid, 'pg_proc') IS NULL;
SELECT t.typname AS uncommented_type
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = 'prepay' AND t.typtype = 'e' AND obj_description(t.oid, 'pg_type') IS NULL;
SELECT c.relname, t.tgname AS uncommented_trigger
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'prepay' AND NOT t.tgisinternal AND t.tgparentid = 0 AND obj_description(t.oid, 'pg_trigger') IS NULL;

-- every table carries site_id as the first column of its primary key; the
-- two tables without a key (the rollup deltas, append-only with no index by
-- design; the reading intake, empty after every statement) still carry site_id
SELECT c.relname AS table_without_site_key
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
 WHERE n.nspname = 'prepay' AND c.relkind = 'r'
   AND (k.conkey IS NULL OR (SELECT attname FROM pg_attribute WHERE attrelid = c.oid AND attnum = k.conkey[1]) <> 'site_id')
   AND NOT (c.relname IN ('energy_pending', 'reading_intake') AND k.conkey IS NULL
            AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'site_id' AND a.attnotnull));
-- every numeric column but a reading's (stored, refused or in the intake)
-- refuses NaN (sql/integrity.sql)
SELECT c.relname, a.attname AS numeric_column_taking_nan
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = 'prepay'::regnamespace AND c.relkind = 'r' AND NOT c.relispartition
   AND c.relname NOT IN ('reading', 'reading_intake', 'reading_refused')
   AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'numeric'::regtype
   AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                    WHERE k.conrelid = c.oid AND k.contype = 'c' AND k.conkey = ARRAY[a.attnum]
                      AND pg_get_constraintdef(k.oid) LIKE '%<> ''NaN''::numeric%');
-- every foreign key includes site_id
SELECT conrelid::regclass AS fk_without_site
  FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
 WHERE n.nspname = 'prepay' AND k.contype = 'f'
   AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = k.conrelid AND attnum = ANY (k.conkey) AND attname = 'site_id');

-- every table holding user data is dumped by pg_dump
SELECT c.relname AS not_dumped
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'prepay' AND c.relkind IN ('r', 'S')
   AND c.oid <> ALL ((SELECT extconfig FROM pg_extension WHERE extname = 'prepay')::oid[]);

-- the trigger refuses to be called the wrong way
CREATE TABLE wrong (site_id int, meter_id bigint, read_at timestamptz);
CREATE TRIGGER wrong AFTER INSERT ON wrong FOR EACH ROW EXECUTE FUNCTION prepay.reading_skip_duplicate();
INSERT INTO wrong VALUES (1, 1, now());
DROP TRIGGER wrong ON wrong;
CREATE TRIGGER wrong BEFORE INSERT ON wrong FOR EACH STATEMENT EXECUTE FUNCTION prepay.reading_rate_batch();
INSERT INTO wrong VALUES (1, 1, now());
DROP TRIGGER wrong ON wrong;
CREATE TRIGGER wrong AFTER INSERT ON wrong FOR EACH STATEMENT EXECUTE FUNCTION prepay.reading_rate_batch();
INSERT INTO wrong VALUES (1, 1, now());
DROP TABLE wrong;
SELECT prepay.reading_rate_batch();

-- regress.try(statement): run a statement and show its result, or the
-- SQLSTATE, message, detail and hint of its error, on one line.  The later
-- test files use it for every error path.
CREATE SCHEMA regress;
CREATE FUNCTION regress.try(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    result text;
    state text;
    message text;
    detail text;
    hint text;
BEGIN
    EXECUTE statement INTO result;
    RETURN 'ok: ' || coalesce(result, 'NULL');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN state || ': ' || message || coalesce(nullif(' | ' || detail, ' | '), '')
           || coalesce(nullif(' | ' || hint, ' | '), '');
END $$;
-- regress.become(login [, role]): the rest of the (sub)transaction as the
-- login, and as the role if one is named
CREATE FUNCTION regress.become(login text, as_role text DEFAULT NULL) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('session_authorization', login, true);
    IF as_role IS NOT NULL THEN
        PERFORM set_config('role', as_role, true);
    END IF;
END $$;
-- regress.probe(login, statement [, role [, verbose]]): run the statement
-- as the login (and role) and roll it back; 'ok', 'denied' (42501), or the
-- SQLSTATE of another error (with its message if asked)
CREATE FUNCTION regress.probe(login text, statement text, as_role text DEFAULT NULL, with_message boolean DEFAULT false)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text;
    message text;
BEGIN
    BEGIN
        PERFORM regress.become(login, as_role);
        EXECUTE statement;
        RAISE EXCEPTION USING ERRCODE = 'ZX000';     -- undo the probe
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
    END;
    IF state = 'ZX000' THEN
        RETURN 'ok';
    ELSIF with_message THEN
        RETURN state || ': ' || message;
    END IF;
    RETURN CASE state WHEN '42501' THEN 'denied' ELSE state END;
END $$;
-- regress.seen(login, query): what the query returns for the login
CREATE FUNCTION regress.seen(login text, query text, as_role text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    result text;
    state text;
BEGIN
    BEGIN
        PERFORM regress.become(login, as_role);
        EXECUTE query INTO result;
        RAISE EXCEPTION USING ERRCODE = 'ZX000', MESSAGE = coalesce(result, 'NULL');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, result = MESSAGE_TEXT;
        RETURN CASE state WHEN 'ZX000' THEN result ELSE state || ': ' || result END;
    END;
END $$;
-- regress.create_logins(prefix, role, ...): for each ROLE, a login
-- PREFIX_ROLE member of prepay_ROLE; the logins created
CREATE FUNCTION regress.create_logins(prefix text, VARIADIC roles text[]) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    role text;
BEGIN
    FOREACH role IN ARRAY roles LOOP
        EXECUTE format('CREATE ROLE %I LOGIN IN ROLE %I', prefix || '_' || role, 'prepay_' || role);
    END LOOP;
    RETURN prefix || '_' || array_to_string(roles, ', ' || prefix || '_');
END $$;
-- regress.drop_logins(prefix): drop the logins PREFIX_* (role names are
-- cluster-wide: a test drops those a failed earlier run left)
CREATE FUNCTION regress.drop_logins(prefix text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    login name;
BEGIN
    FOR login IN SELECT rolname FROM pg_roles WHERE starts_with(rolname, prefix || '_') ORDER BY 1 LOOP
        EXECUTE format('DROP ROLE %I', login);
    END LOOP;
END $$;
-- regress.use(meter, at, kwh): a reading of site 1's meter at AT, KWH more
-- than its last good one
CREATE FUNCTION regress.use(meter bigint, at text, kwh numeric) RETURNS void LANGUAGE sql AS $$
    INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
    SELECT 1, meter, at::timestamptz, coalesce(max(energy), 0) + kwh
      FROM prepay.reading WHERE site_id = 1 AND meter_id = meter AND quarantine_reason IS NULL;
$$;
SELECT regress.try('SELECT 1/0');
SELECT regress.try('SELECT 42');
