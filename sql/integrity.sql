-- sql/integrity.sql
--	  Rules that hold for every table of the schema, added after all of
--	  them exist (the install script's second-last part; security.sql
--	  comes last).
--
--	  NaN is a value of type numeric and passes CHECK (x >= 0): a NaN
--	  written directly into a price, a threshold, an area or a balance
--	  would be stored and break rating later.  The functions refuse it
--	  with their own SQLSTATEs; these constraints make the tables refuse
--	  it too (23514, the constraint named <table>_<column>_not_nan).
--	  prepay.reading is the exception: a NaN register is telemetry, stored
--	  and quarantined as invalid_value, never refused; so are the bulk
--	  intake that feeds it and the record of the readings it refused.  Infinity needs no
--	  rule: every numeric column here has a precision, which refuses it.

DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT cl.oid::regclass AS rel, cl.relname, a.attname
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_class cl ON cl.oid = a.attrelid
         WHERE cl.relnamespace = 'prepay'::pg_catalog.regnamespace AND cl.relkind IN ('r', 'p') AND NOT cl.relispartition
           AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'pg_catalog.numeric'::pg_catalog.regtype
           AND cl.relname NOT IN ('reading', 'reading_intake', 'reading_refused')
         ORDER BY cl.relname, a.attnum
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%I OPERATOR(pg_catalog.<>) ''NaN''::pg_catalog.numeric)',
                                  c.rel, c.relname || '_' || c.attname || '_not_nan', c.attname);
        EXECUTE pg_catalog.format('COMMENT ON CONSTRAINT %I ON %s IS %L', c.relname || '_' || c.attname || '_not_nan', c.rel,
                                  pg_catalog.format('%s is a number: NaN is refused (sql/integrity.sql).', c.attname));
    END LOOP;
END $$;
