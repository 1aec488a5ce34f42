-- The tenant and payment-service API (sql/api.sql) and the identity model
-- behind a REST gateway, without a pooler (test/t/210_pooled_identity.pl
-- runs the same through pgbouncer): an authenticator login switches to
-- the request's role with SET LOCAL ROLE and passes the tenant's claims in
-- request.jwt.claims, as PostgREST does.  The switched-to role gets its
-- own mappings, not the authenticator's; claims are trusted only from a
-- login registered in prepay.api_authenticator, for its sites and for the
-- role they name; the audit names the login, the role and the claims.
--
-- pg_regress runs as a superuser; a request is BEGIN; SET LOCAL ROLE;
-- set_config('request.jwt.claims', ..., true); the call; COMMIT, after
-- SET SESSION AUTHORIZATION to the authenticator.
\set logins regress_api
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql
GRANT USAGE ON SCHEMA regress TO PUBLIC;

-- two sites: North (accounts 1 and 2), South (account 3)
INSERT INTO prepay.site (name) VALUES ('North'), ('South');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (2, 'flat');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 0.50), (2, 2, '2026-01-01', 0.50);
INSERT INTO prepay.meter (site_id, code, room) VALUES (1, 'N1', '101'), (1, 'N2', '102'), (2, 'S1', '201');
SELECT prepay.open_account(1, 'A', 'Shop A', 1), prepay.open_account(1, 'B', 'Shop B', 1), prepay.open_account(2, 'C', 'Shop C', 2);
UPDATE prepay.account SET opened_at = '2026-02-01 00:00+00';
SELECT prepay.attach_meter(1, 1, 1, 100, '2026-03-01 00:00+00'), prepay.attach_meter(1, 2, 2, 200, '2026-03-01 00:00+00'),
       prepay.attach_meter(2, 3, 3, 300, '2026-03-01 00:00+00');
SELECT prepay.recharge(1, 1, 100, 'cash', 'R-A'), prepay.recharge(1, 2, 100, 'cash', 'R-B'), prepay.recharge(2, 3, 100, 'cash', 'R-C');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-03-01 06:00+00', 110), (1, 2, '2026-03-01 06:00+00', 204), (2, 3, '2026-03-01 06:00+00', 310);
-- March's bill of account 1, issued
SELECT prepay.issue_bill(1, (prepay.confirm_bill(1, (prepay.draft_bill(1, 1, '2026-03-01', '2026-03-31')).bill_id)).bill_id) IS NOT NULL AS issued;

-- the gateway's authenticator (NOINHERIT, as PostgREST recommends) is a
-- member of every role it switches to: a tenant role whose account the
-- claims name, an operator role of North, cashier roles of North and South
CREATE ROLE regress_api_auth LOGIN NOINHERIT;
CREATE ROLE regress_api_tenant NOLOGIN IN ROLE prepay_tenant;
CREATE ROLE regress_api_ops1 NOLOGIN IN ROLE prepay_operator;
CREATE ROLE regress_api_pay1 NOLOGIN IN ROLE prepay_cashier;
CREATE ROLE regress_api_pay2 NOLOGIN IN ROLE prepay_cashier;
GRANT regress_api_tenant, regress_api_ops1, regress_api_pay1, regress_api_pay2 TO regress_api_auth;
INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_api_ops1'), (1, 'regress_api_pay1'), (2, 'regress_api_pay2');
-- trusted for North's claims only
INSERT INTO prepay.api_authenticator (site_id, grantee) VALUES (1, 'regress_api_auth');
-- a direct tenant login of account 2; a login that may become the tenant
-- role but is no authenticator; a person in two site roles
CREATE ROLE regress_api_shop_b LOGIN IN ROLE prepay_tenant;
INSERT INTO prepay.tenant_access (site_id, account_id, grantee) VALUES (1, 2, 'regress_api_shop_b');
CREATE ROLE regress_api_mallory LOGIN IN ROLE regress_api_tenant;
CREATE ROLE regress_api_alice LOGIN IN ROLE regress_api_ops1, regress_api_pay2;
CREATE ROLE regress_api_admin LOGIN IN ROLE prepay_admin;
INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_api_admin');
-- registering an authenticator: a role that exists, by an administrator of the site
SELECT regress.try($$INSERT INTO prepay.api_authenticator (site_id, grantee) VALUES (1, 'regress_api_ghost') RETURNING 1$$);
SELECT regress.probe('regress_api_admin', $$INSERT INTO prepay.api_authenticator (site_id, grantee) VALUES (1, 'regress_api_mallory')$$) AS admin_site_1,
       regress.probe('regress_api_admin', $$INSERT INTO prepay.api_authenticator (site_id, grantee) VALUES (2, 'regress_api_mallory')$$) AS admin_site_2,
       regress.probe('regress_api_alice', $$INSERT INTO prepay.api_authenticator (site_id, grantee) VALUES (1, 'regress_api_mallory')$$) AS operator,
       regress.seen('regress_api_admin', 'SELECT string_agg(grantee, $$,$$) FROM prepay.api_authenticator') AS admin_reads;

-- ---------------------------------------------------------------------
-- the switched-to role acts with its own mappings, not the authenticator's
-- ---------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_api_auth;
-- the authenticator itself (NOINHERIT) can do nothing
SELECT regress.try('SELECT count(*) FROM prepay.account');
-- the operator of North sees North only
BEGIN;
SET LOCAL ROLE regress_api_ops1;
SELECT session_user, current_user, prepay._caller_name() AS caller,
       (SELECT string_agg(site_id::text, ',') FROM prepay.site) AS sites,
       (SELECT string_agg(account_id::text, ',' ORDER BY account_id) FROM prepay.account) AS accounts;
SELECT regress.try('SELECT prepay.trip(2, 3)');
COMMIT;
-- the cashier of South credits South, not North
BEGIN;
SET LOCAL ROLE regress_api_pay2;
SELECT (SELECT string_agg(site_id::text, ',') FROM prepay.site) AS sites;
SELECT regress.try($$SELECT prepay.recharge(1, 1, 10, 'cash', 'LEAK-1')$$);
SELECT regress.try($$SELECT * FROM prepay.credit_payment(1, 1, 10, 'payco', 'LEAK-2')$$);
SELECT site_id, account_id, kind, amount, balance, currency, replayed
  FROM prepay.credit_payment(2, 3, 20, 'payco', 'TX-1');
COMMIT;
-- switching to a prepay_* group role directly gives an authenticator nothing
BEGIN;
SET LOCAL ROLE prepay_cashier;
SELECT count(*) AS sites_as_prepay_cashier FROM prepay.site;
SELECT regress.try($$SELECT prepay.recharge(2, 3, 10, 'cash', 'LEAK-3')$$);
COMMIT;
RESET SESSION AUTHORIZATION;

-- ---------------------------------------------------------------------
-- claims from the authenticator name the tenant's account
-- ---------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_api_auth;
BEGIN;
SET LOCAL ROLE regress_api_tenant;
SELECT set_config('request.jwt.claims', '{"role": "regress_api_tenant", "site_id": 1, "account_id": 1}', true) IS NOT NULL AS claims_set;
SELECT site_id, account_id, account_code, mode, currency, balance, credit_limit, available, alarm_level, closed FROM prepay.my_balance();
SELECT account_id, balance FROM prepay.account;                     -- row-level security: its own row only
SELECT prepay.balance(1, 1) AS own_balance;
SELECT regress.try('SELECT prepay.balance(1, 2)');
SELECT regress.try('SELECT * FROM prepay.my_balance(2)');
SELECT site_id, account_id, meter_id, meter_code, kind, room, relay_state, last_read_at, last_energy, lost FROM prepay.my_meters();
SELECT account_id, kind, amount, balance_after, meter_id, read_from, read_to, energy, explanation FROM prepay.my_charges();
SELECT account_id, kind, amount, balance_after, channel, reference FROM prepay.my_payments();
SELECT account_id, period_start, period_end, state, energy, charges, amount_due, paid, outstanding, lines FROM prepay.my_bills();
SELECT account_id, status, message FROM prepay.my_forecast();
SELECT regress.try('SELECT * FROM prepay.my_charges(NULL, 0)');
-- a tenant moves no money
SELECT regress.try($$SELECT * FROM prepay.credit_payment(1, 1, 10, 'payco', 'T-1')$$);
COMMIT;
-- claims for a site the authenticator is not registered for, or for
-- another role than the request's, are not trusted
BEGIN;
SET LOCAL ROLE regress_api_tenant;
SELECT set_config('request.jwt.claims', '{"role": "regress_api_tenant", "site_id": 2, "account_id": 3}', true) IS NOT NULL AS claims_set;
SELECT regress.try('SELECT * FROM prepay.my_balance()');
SELECT count(*) AS accounts_seen FROM prepay.account;
SELECT set_config('request.jwt.claims', '{"role": "regress_api_ops1", "site_id": 1, "account_id": 1}', true) IS NOT NULL AS claims_set;
SELECT regress.try('SELECT * FROM prepay.my_balance()');
-- claims an authenticator passes must be well formed (PY203)
SELECT set_config('request.jwt.claims', 'not json', true) IS NOT NULL AS claims_set;
SELECT regress.try('SELECT * FROM prepay.my_balance()');
SELECT set_config('request.jwt.claims', '{"site_id": 1, "account_id": "1 OR true"}', true) IS NOT NULL AS claims_set;
SELECT regress.try('SELECT * FROM prepay.my_balance()');
-- claims without an account (a staff request) add nothing
SELECT set_config('request.jwt.claims', '{"role": "regress_api_tenant"}', true) IS NOT NULL AS claims_set;
SELECT regress.try('SELECT * FROM prepay.my_balance()');
COMMIT;
-- claims are local to the request's transaction
BEGIN;
SET LOCAL ROLE regress_api_tenant;
SELECT regress.try('SELECT * FROM prepay.my_balance()');
COMMIT;
RESET SESSION AUTHORIZATION;

-- ---------------------------------------------------------------------
-- forged claims: a login that is no authenticator gets nothing from them
-- ---------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_api_shop_b;
SELECT set_config('request.jwt.claims', '{"role": "regress_api_shop_b", "site_id": 1, "account_id": 1}', false) IS NOT NULL AS forged;
SELECT account_id, balance FROM prepay.my_balance();                -- its own account only
SELECT account_id FROM prepay.account;
SELECT regress.try('SELECT prepay.balance(1, 1)');
SELECT regress.try('SELECT * FROM prepay.my_balance(1)');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_api_mallory;
BEGIN;
SET LOCAL ROLE regress_api_tenant;
SELECT set_config('request.jwt.claims', '{"role": "regress_api_tenant", "site_id": 1, "account_id": 1}', true) IS NOT NULL AS forged;
SELECT regress.try('SELECT * FROM prepay.my_balance()');
SELECT count(*) AS accounts_seen FROM prepay.account;
COMMIT;
RESET SESSION AUTHORIZATION;

-- ---------------------------------------------------------------------
-- direct logins: without SET ROLE the login's mappings and those of its
-- groups (as before); SET ROLE to a prepay_* group role keeps the login's
-- mappings (14_security); SET ROLE to a mapped role: that role's only
-- ---------------------------------------------------------------------
SELECT regress.seen('regress_api_alice', 'SELECT string_agg(site_id::text, $$,$$ ORDER BY site_id) FROM prepay.site') AS alice,
       regress.seen('regress_api_alice', 'SELECT string_agg(site_id::text, $$,$$ ORDER BY site_id) FROM prepay.site', 'regress_api_pay2') AS as_pay2,
       regress.probe('regress_api_alice', $$SELECT prepay.recharge(1, 1, 10, 'cash', 'AL-1')$$, 'regress_api_pay2') AS pay2_credits_north,
       regress.seen('regress_api_shop_b', 'SELECT string_agg(account_id::text, $$,$$) FROM prepay.account', 'prepay_tenant') AS shop_b_as_prepay_tenant;

-- ---------------------------------------------------------------------
-- the payment service: one credit per provider transaction id, the new
-- balance in the same answer; refunds likewise
-- ---------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_api_auth;
BEGIN;
SET LOCAL ROLE regress_api_pay1;
SELECT set_config('request.jwt.claims', '{"role": "regress_api_pay1", "sub": "payco-callbacks"}', true) IS NOT NULL AS claims_set;
SELECT site_id, account_id, kind, amount, balance, currency, replayed FROM prepay.credit_payment(1, 2, 30, 'payco', 'TX-2');
SELECT site_id, account_id, kind, amount, balance, currency, replayed FROM prepay.credit_payment(1, 2, 30, 'payco', 'TX-2');
SELECT regress.try($$SELECT * FROM prepay.credit_payment(1, 2, 31, 'payco', 'TX-2')$$);
SELECT regress.try($$SELECT * FROM prepay.credit_payment(1, 1, 30, 'payco', 'TX-2')$$);
SELECT regress.try($$SELECT * FROM prepay.credit_payment(1, 2, 0.001, 'payco', 'TX-3')$$);
SELECT regress.try($$SELECT * FROM prepay.credit_payment(1, 2, 10, 'payco', ' ')$$);
SELECT regress.try($$SELECT * FROM prepay.credit_payment(1, 99, 10, 'payco', 'TX-4')$$);
SELECT site_id, account_id, kind, amount, balance, replayed FROM prepay.refund_payment(1, 2, 12.50, 'payco', 'RF-1', 'customer asked');
SELECT site_id, account_id, kind, amount, balance, replayed FROM prepay.refund_payment(1, 2, 12.50, 'payco', 'RF-1', 'customer asked');
SELECT regress.try($$SELECT * FROM prepay.refund_payment(1, 2, 1000, 'payco', 'RF-2')$$);
SELECT regress.try($$SELECT * FROM prepay.refund_payment(2, 3, 5, 'payco', 'RF-3')$$);
COMMIT;
RESET SESSION AUTHORIZATION;
SELECT account_id, kind, amount, balance_after, channel, external_ref, (SELECT ac.login FROM prepay.actor ac WHERE ac.site_id = l.site_id AND ac.actor_id = l.actor_id) AS created_by FROM prepay.ledger l
 WHERE channel = 'payco' ORDER BY entry_id;

-- the tenant sees the payment and the refund
SET SESSION AUTHORIZATION regress_api_shop_b;
SELECT account_id, kind, amount, balance_after, channel, reference FROM prepay.my_payments(2, 2);
RESET SESSION AUTHORIZATION;

-- the audit trail names the login, the effective role and the claims
SELECT login, acting_role, action, object_key - 'entry_id' AS key, after_values ->> 'amount' AS amount, claims
  FROM prepay.audit_trail WHERE object = 'ledger' AND after_values ->> 'channel' = 'payco' ORDER BY audit_id;

-- what is left: the API functions' rights, and the ledger
SELECT p.proname, p.prosecdef, has_function_privilege('prepay_tenant', p.oid, 'EXECUTE') AS tenant,
       has_function_privilege('prepay_cashier', p.oid, 'EXECUTE') AS cashier,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public
  FROM pg_proc p WHERE p.pronamespace = 'prepay'::regnamespace AND p.proname ~ '^(my_|credit_payment|refund_payment)'
 ORDER BY 1;
SELECT * FROM prepay.check_ledger();

DELETE FROM prepay.api_authenticator;
DELETE FROM prepay.tenant_access;
DELETE FROM prepay.site_access;
DROP ROLE regress_api_auth, regress_api_shop_b, regress_api_mallory, regress_api_alice, regress_api_admin,
    regress_api_tenant, regress_api_ops1, regress_api_pay1, regress_api_pay2;
