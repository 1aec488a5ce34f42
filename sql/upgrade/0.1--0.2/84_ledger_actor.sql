-- sql/upgrade/0.1--0.2/84_ledger_actor.sql: who posted a ledger entry is a 2-byte prepay.actor id of the site, not a text on every row (part 81 made the table and converted the entries); the rights of prepay.actor, the function that adds a login, the writers that pass it and the readers that name the login through it; check_ledger() reports an entry without its actor row (and, since part 70, an entry id used twice in a site).

REVOKE ALL ON TABLE prepay.actor FROM PUBLIC;
GRANT SELECT ON TABLE prepay.actor TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant;
ALTER TABLE prepay.actor ENABLE ROW LEVEL SECURITY;
ALTER TABLE prepay.actor FORCE ROW LEVEL SECURITY;
CREATE POLICY site_staff ON prepay.actor TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader
    USING (site_id = ANY ((SELECT prepay._my_sites())::integer[]))
    WITH CHECK (site_id = ANY ((SELECT prepay._my_sites())::integer[]));
COMMENT ON POLICY site_staff ON prepay.actor IS 'Administrators, operators, cashiers and readers see and change only the rows of the sites they are mapped to (prepay.site_access); their grants decide which changes.';
--@ copy policy actor_tenant ON prepay.actor
SELECT pg_catalog.pg_extension_config_dump('prepay.actor', '');

-- PL/pgSQL, statement by statement, each filtered on the site, as
-- _charge_pricing_id (its rights: 99_rights.sql)
--@ copy function prepay._actor_id

-- the writers
--@ copy function prepay._post_entry
--@ copy function prepay.pay_bills

-- the readers (the views over the ledger: part 81)
--@ copy function prepay.rebuild_rollups
--@ copy function prepay.account_trail
-- the operator columns' comments, from the dictionary of part 20's function
-- (which comments only the columns that have none)
COMMENT ON COLUMN prepay.finance_daily.operator IS NULL;
COMMENT ON COLUMN prepay.finance_monthly.operator IS NULL;
COMMENT ON COLUMN prepay.finance_yearly.operator IS NULL;
COMMENT ON COLUMN prepay.order_overview.operator IS NULL;
SELECT prepay._comment_report_columns();
--@ copy function prepay.check_ledger
