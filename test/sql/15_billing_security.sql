-- Who may do what with periodic billing and batch operations: operators
-- run the billing jobs, confirm and issue bills and create batches for
-- their own sites; cashiers take bill payments; tenants see their own
-- bills and lines; nobody writes charges, bills or batch results directly.
-- regress.probe (00_install) runs a statement as a login and rolls it back.
\set logins regress_bill
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql

INSERT INTO prepay.site (name, fees_may_cut) VALUES ('North', true), ('South', true);
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (2, 'flat');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 1), (2, 2, '2026-01-01', 1);
SELECT prepay.open_account(1, 'A', 'Shop A', 1, 'postpaid', p_floor_area => 10);
SELECT prepay.open_account(1, 'B', 'Shop B', 1, p_floor_area => 10);
SELECT prepay.open_account(2, 'C', 'Shop C', 2, p_floor_area => 10);
UPDATE prepay.account SET opened_at = '2026-09-01';
INSERT INTO prepay.charge_item (site_id, name, basis, price, settle, active_from) VALUES
    (1, 'rent', 'per_m2', 3, 'deduct', '2026-10-01'), (1, 'service', 'fixed', 7, 'bill', '2026-10-01'),
    (2, 'rent', 'per_m2', 3, 'deduct', '2026-10-01');
SELECT prepay.run_periodic(s, '2026-10-01') IS NOT NULL FROM generate_series(1, 2) AS s;
SELECT prepay.run_periodic(s, '2026-11-01') IS NOT NULL FROM generate_series(1, 2) AS s;
SELECT account_id, period_start, amount_due FROM prepay.bill WHERE period_start = '2026-10-01' ORDER BY account_id;

SELECT regress.create_logins('regress_bill', 'operator', 'cashier', 'tenant');
CREATE ROLE regress_bill_south LOGIN IN ROLE prepay_operator;
INSERT INTO prepay.site_access (site_id, grantee) VALUES
    (1, 'regress_bill_operator'), (1, 'regress_bill_cashier'), (2, 'regress_bill_south');
INSERT INTO prepay.tenant_access (site_id, account_id, grantee) VALUES (1, 1, 'regress_bill_tenant');

-- every login tries every operation (rolled back after each): ok, denied (42501) or another SQLSTATE
CREATE TEMP TABLE operation (name text, statement text);
INSERT INTO operation VALUES
    ('daily run', $$SELECT prepay.run_periodic(1, '2026-11-02')$$),
    ('daily run of site 2', $$SELECT prepay.run_periodic(2, '2026-11-02')$$),
    ('charge fees', $$SELECT prepay.charge_fees(1, '2026-11-02')$$),
    ('draft bills', $$SELECT count(*) FROM prepay.draft_bills(1, '2026-10-01')$$),
    ('confirm a bill', $$SELECT prepay.confirm_bill(1, (SELECT min(bill_id) FROM prepay.bill WHERE site_id = 1 AND state = 'draft'))$$),
    ('pay bills', $$SELECT prepay.pay_bills(1, 1, 1.00, 'cash', 'P1')$$),
    ('master reading', $$SELECT prepay.record_master_reading(1, 99, now(), 1)$$),
    ('configure a fee', $$INSERT INTO prepay.charge_item (site_id, name, price, active_from) VALUES (1, 'x', 1, '2026-01-01')$$),
    ('configure a group', $$INSERT INTO prepay.account_group (site_id, name) VALUES (1, 'g')$$),
    ('write a charge', $$UPDATE prepay.period_charge SET amount = 0 WHERE site_id = 1$$),
    ('mark a bill paid', $$UPDATE prepay.bill SET state = 'paid' WHERE site_id = 1$$),
    ('create a batch', $$SELECT prepay.create_batch(1, 'b1', 'set_protect', 'account', '[1]', '{"on": true}')$$),
    ('create a recharge batch', $$SELECT prepay.create_batch(1, 'b2', 'recharge', 'account', '[{"id": 2, "amount": 5}]', '{"channel": "cash"}')$$),
    ('run a recharge batch', $$SELECT count(*) FROM prepay.run_batch(1, prepay.create_batch(1, 'b3', 'recharge', 'account', '[{"id": 2, "amount": 5}]', '{"channel": "cash"}'))$$),
    ('write a batch result', $$UPDATE prepay.batch_item SET state = 'done'$$),
    ('set thresholds', $$SELECT prepay.set_thresholds(1, 2, 5, 1)$$);
SELECT o.name,
       regress.probe('regress_bill_operator', o.statement) AS operator,
       regress.probe('regress_bill_cashier', o.statement) AS cashier,
       regress.probe('regress_bill_tenant', o.statement) AS tenant,
       regress.probe('regress_bill_south', o.statement) AS south_operator
  FROM operation o ORDER BY o.name;

-- what each login sees
SELECT l AS login,
       regress.seen(l, 'SELECT count(*) FROM prepay.bill') AS bills,
       regress.seen(l, 'SELECT count(*) FROM prepay.bill_line') AS bill_lines,
       regress.seen(l, 'SELECT count(*) FROM prepay.period_charge') AS charges,
       regress.seen(l, 'SELECT count(*) FROM prepay.bill_arrears') AS arrears
  FROM unnest(ARRAY['regress_bill_operator', 'regress_bill_cashier', 'regress_bill_tenant', 'regress_bill_south']) AS l;

-- the cashier takes a real payment; it settles the postpaid bill once it is issued
SELECT prepay.issue_bill(1, (prepay.confirm_bill(1, bill_id)).bill_id) IS NOT NULL
  FROM prepay.bill WHERE account_id = 1 AND period_start = '2026-10-01';
SET SESSION AUTHORIZATION regress_bill_cashier;
SELECT prepay.pay_bills(1, 1, 37.00, 'cash', 'P2') IS NOT NULL AS paid;
RESET SESSION AUTHORIZATION;
SELECT state, paid FROM prepay.bill WHERE account_id = 1 AND period_start = '2026-10-01';

DELETE FROM prepay.site_access WHERE grantee LIKE 'regress_bill_%';
DELETE FROM prepay.tenant_access WHERE grantee LIKE 'regress_bill_%';
DROP ROLE regress_bill_operator, regress_bill_cashier, regress_bill_tenant, regress_bill_south;
SELECT * FROM prepay.check_ledger();
