-- sql/upgrade/0.1--0.2/20_energy_views.sql: the six energy report views read one base view, prepay.energy_rollup.

-- ---------------------------------------------------------------------
-- the energy report views over one base view
-- ---------------------------------------------------------------------
-- One base view, energy_rollup, joins the rollups to their meters and
-- accounts at both grains; the six report views pick a grain and group.
-- The joins are LEFT JOINs on primary keys, so a view that does not read a
-- meter's or an account's columns does not join it (PostgreSQL removes the
-- join), and a filter on grain leaves the other grain's rollup unread.
--@ copy view prepay.energy_rollup

--@ copy view prepay.energy_meter_daily

--@ copy view prepay.energy_meter_monthly

--@ copy view prepay.energy_meter_yearly

--@ copy view prepay.energy_account_daily

--@ copy view prepay.energy_account_monthly

--@ copy view prepay.energy_account_yearly

-- the base view's columns take the comments the report views' columns of
-- the same name have (the dictionary in reports.sql gave both), its two
-- own columns theirs; the report views keep their column comments
COMMENT ON COLUMN prepay.energy_rollup.grain IS 'day: a row of energy_day; month: a row of energy_month.';
COMMENT ON COLUMN prepay.energy_rollup.starts IS 'The local day (grain day), or the first day of the local month (grain month).';
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT DISTINCT ON (a.attname) a.attname, pg_catalog.col_description(a.attrelid, a.attnum) AS comment
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid IN ('prepay.energy_meter_daily'::pg_catalog.regclass, 'prepay.energy_account_daily'::pg_catalog.regclass)
           AND a.attnum > 0
           AND a.attname IN (SELECT b.attname FROM pg_catalog.pg_attribute b
                              WHERE b.attrelid = 'prepay.energy_rollup'::pg_catalog.regclass AND b.attnum > 0)
         ORDER BY a.attname, a.attrelid
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON COLUMN prepay.energy_rollup.%I IS %L', c.attname, c.comment);
    END LOOP;
END $$;

