-- sql/upgrade/0.1--0.2/20_energy_views.sql: the six energy report views read one base view, prepay.energy_rollup.

-- ---------------------------------------------------------------------
-- the energy report views over one base view
-- ---------------------------------------------------------------------
-- One base view, energy_rollup, joins the rollups to their meters and
-- accounts at both grains; the six report views pick a grain and group.
-- The joins are LEFT JOINs on primary keys, so a view that does not read a
-- meter's or an account's columns does not join it (PostgreSQL removes the
-- join), and a filter on grain leaves the other grain's rollup unread.
CREATE VIEW prepay.energy_rollup WITH (security_invoker = true) AS
SELECT r.site_id, r.grain, r.starts, r.meter_id, m.code AS meter_code, m.building, m.floor, m.room,
       r.account_id, a.code AS account_code, a.name AS account_name, r.period, r.tier,
       r.energy, r.cost, r.charged, r.charges
  FROM (SELECT d.site_id, 'day'::text AS grain, d.day AS starts, d.meter_id, d.account_id, d.period, d.tier,
               d.energy, d.cost, d.charged, d.charges
          FROM prepay.energy_day d
        UNION ALL
        SELECT mo.site_id, 'month'::text, mo.month, mo.meter_id, mo.account_id, mo.period, mo.tier,
               mo.energy, mo.cost, mo.charged, mo.charges
          FROM prepay.energy_month mo) AS r
  LEFT JOIN prepay.meter m ON m.site_id = r.site_id AND m.meter_id = r.meter_id
  LEFT JOIN prepay.account a ON a.site_id = r.site_id AND a.account_id = r.account_id;
COMMENT ON VIEW prepay.energy_rollup IS 'Base of the energy report views: the rollups energy_day (grain ''day'') and energy_month (grain ''month'', starts = the first of the local month) with their meters'' and accounts'' codes and places.';

CREATE OR REPLACE VIEW prepay.energy_meter_daily WITH (security_invoker = true) AS
SELECT r.site_id, r.starts AS day, r.meter_id, r.meter_code, r.building, r.floor, r.room,
       r.account_id, r.account_code, r.period, r.tier, r.energy, r.cost, r.charged, r.charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'day';
COMMENT ON VIEW prepay.energy_meter_daily IS 'Energy and cost per meter, account, local day, time-of-use period and tier (rollup energy_day).';

CREATE OR REPLACE VIEW prepay.energy_meter_monthly WITH (security_invoker = true) AS
SELECT r.site_id, r.starts AS month, r.meter_id, r.meter_code, r.building, r.floor, r.room,
       r.account_id, r.account_code, r.period, r.tier, r.energy, r.cost, r.charged, r.charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'month';
COMMENT ON VIEW prepay.energy_meter_monthly IS 'Energy and cost per meter, account, local month, time-of-use period and tier (rollup energy_month).';

CREATE OR REPLACE VIEW prepay.energy_meter_yearly WITH (security_invoker = true) AS
SELECT r.site_id, pg_catalog.date_part('year', r.starts)::integer AS year, r.meter_id, r.meter_code,
       r.building, r.floor, r.room, r.account_id, r.account_code, r.period, r.tier,
       sum(r.energy) AS energy, sum(r.cost) AS cost, sum(r.charged) AS charged, sum(r.charges) AS charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'month'
 GROUP BY r.site_id, 2, r.meter_id, r.meter_code, r.building, r.floor, r.room, r.account_id, r.account_code,
          r.period, r.tier;
COMMENT ON VIEW prepay.energy_meter_yearly IS 'Energy and cost per meter, account, local calendar year, time-of-use period and tier (from energy_month).';

CREATE OR REPLACE VIEW prepay.energy_account_daily WITH (security_invoker = true) AS
SELECT r.site_id, r.starts AS day, r.account_id, r.account_code, r.account_name, r.period, r.tier,
       sum(r.energy) AS energy, sum(r.cost) AS cost, sum(r.charged) AS charged, sum(r.charges) AS charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'day'
 GROUP BY r.site_id, r.starts, r.account_id, r.account_code, r.account_name, r.period, r.tier;
COMMENT ON VIEW prepay.energy_account_daily IS 'Energy and cost per account (all its meters), local day, time-of-use period and tier.';

CREATE OR REPLACE VIEW prepay.energy_account_monthly WITH (security_invoker = true) AS
SELECT r.site_id, r.starts AS month, r.account_id, r.account_code, r.account_name, r.period, r.tier,
       sum(r.energy) AS energy, sum(r.cost) AS cost, sum(r.charged) AS charged, sum(r.charges) AS charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'month'
 GROUP BY r.site_id, r.starts, r.account_id, r.account_code, r.account_name, r.period, r.tier;
COMMENT ON VIEW prepay.energy_account_monthly IS 'Energy and cost per account (all its meters), local month, time-of-use period and tier: the monthly energy-and-cost report.';

CREATE OR REPLACE VIEW prepay.energy_account_yearly WITH (security_invoker = true) AS
SELECT r.site_id, pg_catalog.date_part('year', r.starts)::integer AS year, r.account_id, r.account_code,
       r.account_name, r.period, r.tier,
       sum(r.energy) AS energy, sum(r.cost) AS cost, sum(r.charged) AS charged, sum(r.charges) AS charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'month'
 GROUP BY r.site_id, 2, r.account_id, r.account_code, r.account_name, r.period, r.tier;
COMMENT ON VIEW prepay.energy_account_yearly IS 'Energy and cost per account, local calendar year, time-of-use period and tier.';

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
REVOKE ALL ON TABLE prepay.energy_rollup FROM PUBLIC;
GRANT SELECT ON TABLE prepay.energy_rollup TO prepay_admin, prepay_operator, prepay_reader, prepay_tenant;

