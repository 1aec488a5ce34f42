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

-- the new base view's columns get their comments from the dictionary of
-- reports.sql
--@ copy function prepay._comment_report_columns
SELECT prepay._comment_report_columns();
