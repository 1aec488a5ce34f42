-- Security: the roles, the role matrix (every role tries every operation),
-- site and tenant isolation, the agent, SET ROLE, the append-only ledger
-- and audit trail, the audit entries, SQL injection through every text
-- argument, and the coverage of every table, view and function.
--
-- pg_regress runs as a superuser; the test acts as logins with SET SESSION
-- AUTHORIZATION.  Role names are cluster-wide: the logins are created here
-- (regress_sec_*) and dropped at the end; the prepay_* group roles belong to
-- the extension and stay.
SELECT regress.drop_logins('regress_sec');

-- a prepay role that could bypass row-level security is refused at install
DROP EXTENSION prepay CASCADE;
ALTER ROLE prepay_reader BYPASSRLS;
SELECT regress.try('CREATE EXTENSION prepay');
ALTER ROLE prepay_reader NOBYPASSRLS;
CREATE EXTENSION prepay;   -- the roles exist already (as in a second database): reused
SET timezone = 'UTC';
SET datestyle = 'ISO';

SELECT rolname, rolcanlogin, rolsuper, rolbypassrls, rolinherit, shobj_description(oid, 'pg_authid') IS NOT NULL AS commented
  FROM pg_roles WHERE rolname LIKE 'prepay\_%' ORDER BY rolname;

-- ---------------------------------------------------------------------
-- two sites; site 1 has two agents' gateways and two tenants
-- ---------------------------------------------------------------------
INSERT INTO prepay.site (name) VALUES ('North'), ('South');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (2, 'flat');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 0.50), (2, 2, '2026-01-01', 0.50);
INSERT INTO prepay.gateway (site_id, name, host, port, agent_id) VALUES
    (1, 'gw-a', '10.0.0.1', 502, 'north-1'), (1, 'gw-b', '10.0.0.2', 502, 'north-2'), (2, 'gw-s', '10.0.1.1', 502, 'south-1');
INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id, device_profile) VALUES
    (1, 'N1', 1, 1, 'ddsy1352'), (1, 'N2', 1, 2, 'ddsy1352'), (1, 'N3', 2, 1, 'ddsy1352'), (2, 'S1', 3, 1, 'ddsy1352');
SELECT prepay.open_account(1, 'A', 'Shop A', 1, p_phone => '13800000001');
SELECT prepay.open_account(1, 'B', 'Shop B', 1, p_phone => '13800000002');
SELECT prepay.open_account(2, 'C', 'Shop C', 2);
SELECT prepay.attach_meter(1, 1, 1, 100, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 2, 2, 200, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(2, 3, 4, 300, '2026-03-01 00:00+00');
SELECT prepay.recharge(1, 1, 100, 'cash', 'R-A'), prepay.recharge(1, 2, 100, 'cash', 'R-B'), prepay.recharge(2, 3, 100, 'cash', 'R-C');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-03-01 06:00+00', 110), (1, 2, '2026-03-01 06:00+00', 204), (2, 4, '2026-03-01 06:00+00', 310);
-- a command in flight on each agent's gateway of site 1
SELECT prepay.trip(1, 2, 'test'), prepay.trip(1, 3, 'test');
-- the tenants moved in before their handover readings
UPDATE prepay.account SET opened_at = '2026-02-01 00:00+00';
SELECT command_id, meter_id, gateway_id FROM prepay.agent_claim_commands('north-1')
UNION ALL SELECT command_id, meter_id, gateway_id FROM prepay.agent_claim_commands('north-2');

-- the logins and their mappings
SELECT regress.create_logins('regress_sec', 'admin', 'operator', 'cashier', 'reader');
CREATE ROLE regress_sec_tenant_a LOGIN IN ROLE prepay_tenant;
CREATE ROLE regress_sec_tenant_b LOGIN IN ROLE prepay_tenant;
CREATE ROLE regress_sec_agent LOGIN IN ROLE prepay_agent;
CREATE ROLE regress_sec_nobody LOGIN;
CREATE ROLE regress_sec_multi LOGIN IN ROLE prepay_operator, prepay_reader;
INSERT INTO prepay.site_access (site_id, grantee) VALUES
    (1, 'regress_sec_admin'), (1, 'regress_sec_operator'), (1, 'regress_sec_cashier'), (1, 'regress_sec_reader'),
    (1, 'regress_sec_multi'), (1, 'regress_sec_nobody');
INSERT INTO prepay.tenant_access (site_id, account_id, grantee) VALUES (1, 1, 'regress_sec_tenant_a'), (1, 2, 'regress_sec_tenant_b');
INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES (1, 'north-1', 'regress_sec_agent');
-- a mapping names an existing role
SELECT regress.try($$INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_sec_ghost') RETURNING 1$$);
GRANT USAGE ON SCHEMA regress TO PUBLIC;


-- ---------------------------------------------------------------------
-- the role matrix: every role tries every operation at its own site
-- (ok = allowed; denied = SQLSTATE 42501; anything else is a defect)
-- ---------------------------------------------------------------------
CREATE TABLE regress.operation (n serial, op text, statement text);
INSERT INTO regress.operation (op, statement)
SELECT 'read ' || t, format('SELECT * FROM prepay.%I', t)
  FROM unnest(ARRAY['site', 'no_cut_window', 'gateway', 'tariff', 'tariff_version', 'holiday', 'device_profile',
                    'profile_register', 'account', 'meter', 'reading', 'ledger', 'command', 'alarm', 'notification',
                    'audit', 'audit_trail', 'site_access', 'tenant_access', 'agent_access', 'reading_refused',
                    'reading_intake']) AS t;
INSERT INTO regress.operation (op, statement) VALUES
    ('read meter config', 'SELECT meter_id, gateway_id, unit_id, device_profile FROM prepay.meter'),
    ('create a site', $$INSERT INTO prepay.site (name) VALUES ('West')$$),
    ('change a threshold', 'UPDATE prepay.site SET low_balance_threshold = 40 WHERE site_id = 1'),
    ('add a gateway', $$INSERT INTO prepay.gateway (site_id, name, host) VALUES (1, 'gw-new', '10.0.0.9')$$),
    ('add a tariff version', $$INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-06-01', 0.6)$$),
    ('add a meter', $$INSERT INTO prepay.meter (site_id, code) VALUES (1, 'N9')$$),
    ('change a multiplier', 'UPDATE prepay.meter SET multiplier = 40 WHERE site_id = 1 AND meter_id = 1'),
    ('change meter state', 'UPDATE prepay.meter SET last_energy = 0 WHERE site_id = 1 AND meter_id = 1'),
    ('insert an account', $$INSERT INTO prepay.account (site_id, code, name, tariff_id) VALUES (1, 'X', 'X', 1)$$),
    ('change a phone', $$UPDATE prepay.account SET phone = '1' WHERE site_id = 1 AND account_id = 1$$),
    ('change a balance', 'UPDATE prepay.account SET balance = 1000 WHERE site_id = 1 AND account_id = 1'),
    ('set protect directly', 'UPDATE prepay.account SET protect = true WHERE site_id = 1 AND account_id = 1'),
    ('insert a reading', $$INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 07:00+00', 111)$$),
    ('copy a reading in bulk', $$INSERT INTO prepay.reading_intake (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 07:00+00', 111)$$),
    ('change a reading', 'UPDATE prepay.reading SET energy = 0 WHERE site_id = 1'),
    ('delete readings', 'DELETE FROM prepay.reading WHERE site_id = 1'),
    ('insert a ledger entry', $$INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id) VALUES (1, 1, 'adjustment', 5, 5, 1)$$),
    ('change the ledger', 'UPDATE prepay.ledger SET amount = 0 WHERE site_id = 1'),
    ('delete the ledger', 'DELETE FROM prepay.ledger WHERE site_id = 1'),
    ('truncate the ledger', 'TRUNCATE prepay.ledger'),
    ('add an actor', $$INSERT INTO prepay.actor (site_id, actor_id, login) VALUES (1, 99, 'someone')$$),
    ('change a command', $$UPDATE prepay.command SET state = 'done' WHERE site_id = 1$$),
    ('clear an alarm', 'UPDATE prepay.alarm SET cleared_at = now() WHERE site_id = 1'),
    ('map a login', $$INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_sec_tenant_a')$$),
    ('delete the audit', 'DELETE FROM prepay.audit'),
    ('open_account', $$SELECT prepay.open_account(1, 'N', 'New shop', 1)$$),
    ('attach_meter', 'SELECT prepay.attach_meter(1, 1, 3)'),
    ('replace_meter', $$SELECT prepay.replace_meter(1, 1, 120, 'N1b', 0)$$),
    ('close_account', 'SELECT prepay.close_account(1, 2)'),
    ('recharge', $$SELECT prepay.recharge(1, 1, 10, 'cash', 'R-probe')$$),
    ('refund', $$SELECT prepay.refund(1, 1, 10, 'cash', 'F-probe')$$),
    ('reverse', $$SELECT prepay.reverse(1, 1, 'probe')$$),
    ('balance of A', 'SELECT prepay.balance(1, 1)'),
    ('balance of B', 'SELECT prepay.balance(1, 2)'),
    ('trip', 'SELECT prepay.trip(1, 1)'),
    ('close', 'SELECT prepay.close(1, 1)'),
    ('protect', 'SELECT prepay.protect(1, true, p_meter_id => 1)'),
    ('rerate', $$SELECT count(*) FROM prepay.rerate(1, NULL, '2026-01-01', '2026-12-31')$$),
    ('accrue_basic_charges', $$SELECT count(*) FROM prepay.accrue_basic_charges(1, '2026-03-01')$$),
    ('rate', $$SELECT count(*) FROM prepay.rate(1, 1, '2026-03-01', '2026-03-02', 10)$$),
    ('explain_charge of A', 'SELECT count(*) FROM prepay.explain_charge(1, 4)'),
    ('check_ledger', 'SELECT count(*) FROM prepay.check_ledger()'),
    ('cut_allowed_at', 'SELECT prepay.cut_allowed_at(1, now())'),
    ('install_device_profiles', 'SELECT prepay.install_device_profiles(1)'),
    ('agent_catalog', $$SELECT count(*) FROM prepay.agent_catalog('north-1')$$),
    ('agent_claim_commands', $$SELECT count(*) FROM prepay.agent_claim_commands('north-1', true)$$),
    ('agent_command_done', $$SELECT prepay.agent_command_done(1, 1, 'tripped')$$),
    ('agent_command_failed', $$SELECT prepay.agent_command_failed(1, 1, 'no answer')$$),
    ('agent_meter_lost', $$SELECT prepay.agent_meter_lost(1, 1, 3, 'timeout')$$),
    ('agent_meter_found', 'SELECT prepay.agent_meter_found(1, 1)'),
    ('agent_gateway_lost', $$SELECT prepay.agent_gateway_lost(1, 1, 'refused')$$),
    ('agent_gateway_found', 'SELECT prepay.agent_gateway_found(1, 1)'),
    ('internal _post_entry', $$SELECT prepay._post_entry(1, 1, 'recharge', 1000, 'cash', 'forged')$$),
    ('internal _queue_command', $$SELECT prepay._queue_command(1, 1, 'close', 'forged')$$),
    ('internal _alarm_level_changed', 'SELECT prepay._alarm_level_changed(1, 1, 0::smallint, 3::smallint)');

SELECT op,
       regress.probe('regress_sec_admin', statement) AS admin,
       regress.probe('regress_sec_operator', statement) AS operator,
       regress.probe('regress_sec_cashier', statement) AS cashier,
       regress.probe('regress_sec_reader', statement) AS reader,
       regress.probe('regress_sec_tenant_a', statement) AS tenant,
       regress.probe('regress_sec_agent', statement) AS agent,
       regress.probe('regress_sec_nobody', statement) AS nobody
  FROM regress.operation ORDER BY n;

-- ---------------------------------------------------------------------
-- what each role sees: only its site's rows (site 2 never), a tenant only
-- its own account's
-- ---------------------------------------------------------------------
CREATE FUNCTION regress.sites_seen(login text, rel text) RETURNS text LANGUAGE sql AS $$
    SELECT regress.seen(login, format($q$SELECT count(*) || ' rows' || coalesce(', sites ' || string_agg(DISTINCT site_id::text, ','), '') FROM prepay.%I$q$, rel))
$$;
SELECT t AS rel,
       regress.sites_seen('regress_sec_admin', t) AS admin,
       regress.sites_seen('regress_sec_operator', t) AS operator,
       regress.sites_seen('regress_sec_cashier', t) AS cashier,
       regress.sites_seen('regress_sec_reader', t) AS reader,
       regress.sites_seen('regress_sec_tenant_a', t) AS tenant_a,
       regress.sites_seen('regress_sec_tenant_b', t) AS tenant_b
  FROM unnest(ARRAY['site', 'gateway', 'account', 'meter', 'reading', 'ledger', 'command', 'notification', 'audit']) AS t;
SELECT regress.seen('regress_sec_agent', $$SELECT string_agg(site_id || '/' || gateway_id || ' ' || agent_id, ', ' ORDER BY gateway_id) FROM prepay.gateway$$) AS agent_gateways,
       regress.seen('regress_sec_agent', $$SELECT string_agg(meter_id::text, ',' ORDER BY meter_id) FROM prepay.meter$$) AS agent_meters,
       regress.seen('regress_sec_agent', $$SELECT count(DISTINCT site_id) FROM prepay.device_profile$$) AS agent_profile_sites;

-- tenant A cannot see tenant B, nor B's readings, ledger or balance
SELECT regress.seen('regress_sec_tenant_a', 'SELECT string_agg(code, $$,$$) FROM prepay.account') AS a_accounts,
       regress.seen('regress_sec_tenant_a', 'SELECT string_agg(DISTINCT account_id::text, $$,$$) FROM prepay.ledger') AS a_ledger,
       regress.seen('regress_sec_tenant_a', 'SELECT string_agg(DISTINCT meter_id::text, $$,$$) FROM prepay.reading') AS a_readings,
       regress.seen('regress_sec_tenant_a', 'SELECT prepay.balance(1, 1)') AS a_balance,
       regress.seen('regress_sec_tenant_a', 'SELECT prepay.balance(1, 2)') AS a_asks_b,
       regress.seen('regress_sec_tenant_b', 'SELECT string_agg(code, $$,$$) FROM prepay.account') AS b_accounts;
-- ... nor the previous occupant's readings of its meter
UPDATE prepay.account SET opened_at = '2026-03-01 03:00+00' WHERE site_id = 1 AND account_id = 1;
SELECT regress.seen('regress_sec_tenant_a', 'SELECT string_agg(read_at::text, $$, $$ ORDER BY read_at) FROM prepay.reading') AS a_reading_times;
UPDATE prepay.account SET opened_at = '2026-02-01 00:00+00' WHERE site_id = 1 AND account_id = 1;

-- ---------------------------------------------------------------------
-- cross-site: site 1's staff can neither read nor write site 2
-- ---------------------------------------------------------------------
SELECT op,
       regress.seen('regress_sec_admin', statement) AS admin,
       regress.seen('regress_sec_operator', statement) AS operator,
       regress.seen('regress_sec_cashier', statement) AS cashier
  FROM (VALUES
    ('read an account of site 2', 'SELECT count(*) FROM prepay.account WHERE site_id = 2'),
    ('update site 2', 'WITH u AS (UPDATE prepay.site SET pretrip_threshold = 1 WHERE site_id = 2 RETURNING 1) SELECT count(*) FROM u'),
    ('gateway into site 2', $$INSERT INTO prepay.gateway (site_id, name, host) VALUES (2, 'x', 'h') RETURNING 1$$),
    ('move a meter to site 2', 'WITH u AS (UPDATE prepay.meter SET code = code WHERE site_id = 2 RETURNING 1) SELECT count(*) FROM u'),
    ('map oneself to site 2', $$INSERT INTO prepay.site_access (site_id, grantee) VALUES (2, 'regress_sec_admin') RETURNING 1$$),
    ('recharge at site 2', $$SELECT prepay.recharge(2, 3, 10, 'cash', 'X-1')$$),
    ('balance at site 2', 'SELECT prepay.balance(2, 3)'),
    ('trip at site 2', 'SELECT prepay.trip(2, 4)'),
    ('open an account at site 2', $$SELECT prepay.open_account(2, 'Z', 'Z', 2)$$)) AS o (op, statement);
-- the message says who and what
SELECT regress.seen('regress_sec_cashier', $$SELECT regress.try('SELECT prepay.recharge(2, 3, 10, ''cash'', ''X-1'')')$$);
SELECT regress.seen('regress_sec_tenant_a', $$SELECT regress.try('SELECT prepay.recharge(1, 1, 10, ''cash'', ''X-1'')')$$);

-- ---------------------------------------------------------------------
-- the agent: its readings are rated, the ledger and balances stay closed
-- ---------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_sec_agent;
SELECT count(*) AS catalog_rows, string_agg(DISTINCT gateway_id::text, ',') AS gateways FROM prepay.agent_catalog('north-1');
SELECT count(*) AS other_agent FROM prepay.agent_catalog('north-2');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, relay_state)
VALUES (1, 1, '2026-03-01 08:00+00', 130, 'closed'), (1, 3, '2026-03-01 08:00+00', 5, 'closed'), (1, 99, '2026-03-01 08:00+00', 5, NULL);
RESET SESSION AUTHORIZATION;
-- a reading of another site is refused alone, with a warning (21_intake)
SELECT regress.probe('regress_sec_agent', $$INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (2, 4, '2026-03-01 08:00+00', 320)$$,
                     NULL, true) AS reading_of_site_2;
SET SESSION AUTHORIZATION regress_sec_agent;
SELECT regress.try('SELECT count(*) FROM prepay.ledger');
SELECT regress.try('SELECT balance FROM prepay.account');
SELECT regress.try('UPDATE prepay.account SET balance = 1000 RETURNING 1');
SELECT regress.try($$SELECT prepay.recharge(1, 1, 10, 'cash', 'AG-1')$$);
SELECT regress.try($$SELECT count(*) FROM prepay.agent_claim_commands('north-2')$$);
SELECT regress.try($$SELECT prepay.agent_command_done(1, 2, 'tripped')$$);
SELECT regress.try($$SELECT prepay.agent_meter_lost(1, 3, 3, 'timeout')$$);
SELECT regress.try($$SELECT prepay.agent_meter_lost(1, 999, 3, 'timeout')$$);
SELECT prepay.agent_command_done(1, 1, 'tripped');
RESET SESSION AUTHORIZATION;
SELECT account_id, kind, amount, balance_after, energy, ac.login AS created_by
  FROM prepay.ledger l JOIN prepay.actor ac ON ac.site_id = l.site_id AND ac.actor_id = l.actor_id
 WHERE ac.login = 'regress_sec_agent';
SELECT meter_id, read_at, quarantine_reason FROM prepay.reading WHERE read_at = '2026-03-01 08:00+00' ORDER BY meter_id;

-- ---------------------------------------------------------------------
-- SET ROLE narrows what a login may do, not where
-- ---------------------------------------------------------------------
SELECT regress.probe('regress_sec_multi', 'SELECT prepay.trip(1, 1)') AS multi_trip,
       regress.probe('regress_sec_multi', 'SELECT prepay.trip(1, 1)', 'prepay_reader') AS as_reader_trip,
       regress.seen('regress_sec_multi', 'SELECT count(*) FROM prepay.account', 'prepay_reader') AS as_reader_accounts,
       regress.probe('regress_sec_multi', 'SELECT prepay.trip(2, 4)') AS multi_trip_site_2;

-- ---------------------------------------------------------------------
-- money is append-only: no role may change the ledger, and the trigger
-- refuses even a superuser
-- ---------------------------------------------------------------------
SELECT regress.try('UPDATE prepay.ledger SET amount = 0 RETURNING 1');
SELECT regress.try('DELETE FROM prepay.ledger RETURNING 1');
SELECT grantee, privilege_type FROM information_schema.role_table_grants
 WHERE table_schema = 'prepay' AND table_name = 'ledger' AND grantee LIKE 'prepay%' ORDER BY 1, 2;

-- ---------------------------------------------------------------------
-- the audit trail: who, when, what, before and after
-- ---------------------------------------------------------------------
SELECT max(audit_id) AS audit_mark FROM prepay.audit \gset
SET SESSION AUTHORIZATION regress_sec_cashier;
SET application_name = 'till 3';
SELECT prepay.recharge(1, 1, 25, 'cash', 'R-audit');
SELECT prepay.reverse(1, 1, 'wrong room');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_sec_operator;
SET application_name = 'back office';
UPDATE prepay.site SET low_balance_threshold = 60 WHERE site_id = 1;
UPDATE prepay.account SET pretrip_threshold = 5 WHERE site_id = 1 AND account_id = 2;
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-07-01', 0.55);
SELECT prepay.protect(1, true, p_account_id => 2);
SELECT prepay.trip(1, 1, 'audit test') AS trip_command \gset
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_sec_agent;
SET application_name = 'prepay-agent';
SELECT count(*) FROM prepay.agent_claim_commands('north-1');
SELECT prepay.agent_command_done(1, :trip_command, 'tripped');
RESET SESSION AUTHORIZATION;
RESET application_name;
SET SESSION AUTHORIZATION regress_sec_reader;
SELECT row_number() OVER (ORDER BY audit_id) AS n, site_id, login, acting_role, application_name, client_addr, action, object,
       object_key, changed, before_values - 'updated_at' AS before_values,
       after_values - 'created_at' - 'updated_at' - 'not_before' AS after_values
  FROM prepay.audit_trail WHERE audit_id > :audit_mark ORDER BY audit_id;
-- who posted: each login that posted at the site is an actor of it, the
-- agent's readings and the cashier's payments under their own logins
SELECT ac.actor_id, ac.login, l.kind, count(*) AS entries
  FROM prepay.ledger l JOIN prepay.actor ac ON ac.site_id = l.site_id AND ac.actor_id = l.actor_id
 WHERE l.site_id = 1 GROUP BY 1, 2, 3 ORDER BY 1, 3;
RESET SESSION AUTHORIZATION;
-- append-only, also for a superuser
SELECT regress.try('UPDATE prepay.audit SET action = $$x$$ RETURNING 1');
SELECT regress.try('DELETE FROM prepay.audit RETURNING 1');
SELECT regress.try('TRUNCATE prepay.audit');
-- nothing silently changed: a rating batch is not audited row by row, a
-- no-op update is not audited at all
SELECT max(audit_id) AS audit_mark FROM prepay.audit \gset
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 2, '2026-03-01 09:00+00', 206);
UPDATE prepay.meter SET building = building WHERE site_id = 1;
SELECT count(*) AS new_audit_entries FROM prepay.audit WHERE audit_id > :audit_mark;

-- ---------------------------------------------------------------------
-- SQL injection: every text argument of the public API is stored
-- verbatim and does nothing else
-- ---------------------------------------------------------------------
CREATE TABLE regress.payload (n integer, s text);
INSERT INTO regress.payload VALUES
    (1, $$x'); DROP TABLE prepay.ledger; --$$),
    (2, $$' OR '1'='1$$),
    (3, $q$$$; DELETE FROM prepay.ledger; $$ --$q$),
    (4, '%s %L %I %1$s %%'),
    (5, E'back\\slash \\'' quote'),
    (6, '"; TRUNCATE prepay.audit; SELECT "'),
    (7, E'line\nbreak\ttab'),
    (8, 'Ünïcødé 电表 🔌'),
    (9, $$north-1' OR agent_id <> '$$),
    (10, $$*/ SELECT pg_sleep(10); /*$$);
SELECT count(*) AS relations_before FROM pg_class WHERE relnamespace = 'prepay'::regnamespace \gset
SELECT max(entry_id) AS entry_mark FROM prepay.ledger \gset
CREATE TABLE regress.stored (fn text, n integer, stored text);
DO $$
DECLARE
    p regress.payload;
    acc bigint;
    entry bigint;
    mid bigint;
    cmd bigint;
    ref text;
BEGIN
    FOR p IN SELECT * FROM regress.payload ORDER BY n LOOP
        -- channels and references refuse control characters (PY017,
        -- 17_search_path): they get the payload with those made spaces
        ref := regexp_replace(p.s, '[\x01-\x1f]', ' ', 'g');
        acc := prepay.open_account(1, p.s, p.s, 1, p_phone => p.s, p_email => p.s);
        INSERT INTO regress.stored SELECT 'open_account code', p.n, code FROM prepay.account WHERE site_id = 1 AND account_id = acc;
        INSERT INTO regress.stored SELECT 'open_account name', p.n, name FROM prepay.account WHERE site_id = 1 AND account_id = acc;
        INSERT INTO regress.stored SELECT 'open_account phone', p.n, phone FROM prepay.account WHERE site_id = 1 AND account_id = acc;
        INSERT INTO regress.stored SELECT 'open_account email', p.n, email FROM prepay.account WHERE site_id = 1 AND account_id = acc;
        entry := prepay.recharge(1, acc, 50, ref, ref);
        INSERT INTO regress.stored SELECT 'recharge channel', p.n, channel FROM prepay.ledger WHERE site_id = 1 AND entry_id = entry;
        INSERT INTO regress.stored SELECT 'recharge external_ref', p.n, external_ref FROM prepay.ledger WHERE site_id = 1 AND entry_id = entry;
        PERFORM prepay.recharge(1, acc, 50, ref, ref);          -- the replay finds it by the same text
        entry := prepay.refund(1, acc, 5, ref, 'F' || ref, p.s);
        INSERT INTO regress.stored SELECT 'refund reason', p.n, reason FROM prepay.ledger WHERE site_id = 1 AND entry_id = entry;
        INSERT INTO regress.stored SELECT 'refund external_ref', p.n, substr(external_ref, 2) FROM prepay.ledger WHERE site_id = 1 AND entry_id = entry;
        entry := prepay.reverse(1, entry, p.s);
        INSERT INTO regress.stored SELECT 'reverse reason', p.n, reason FROM prepay.ledger WHERE site_id = 1 AND entry_id = entry;
        INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id) VALUES (1, 'INJ' || p.n, 2, 10 + p.n) RETURNING meter_id INTO mid;
        PERFORM prepay.attach_meter(1, acc, mid, 0, '2026-03-01 00:00+00');
        cmd := prepay.trip(1, mid, p.s);
        INSERT INTO regress.stored SELECT 'trip reason', p.n, reason FROM prepay.command WHERE site_id = 1 AND command_id = cmd;
        cmd := prepay.close(1, mid, p.s);
        INSERT INTO regress.stored SELECT 'close reason', p.n, reason FROM prepay.command WHERE site_id = 1 AND command_id = cmd;
        PERFORM prepay.agent_claim_commands('north-2');
        PERFORM prepay.agent_command_failed(1, cmd, p.s, '0 seconds', 1);
        INSERT INTO regress.stored SELECT 'agent_command_failed error', p.n, last_error FROM prepay.command WHERE site_id = 1 AND command_id = cmd;
        PERFORM prepay.agent_meter_lost(1, mid, 3, p.s);
        INSERT INTO regress.stored SELECT 'agent_meter_lost error', p.n, substr(detail, length('Meter ' || mid || ' did not answer 3 times in a row: ') + 1)
          FROM prepay.alarm WHERE site_id = 1 AND kind = 'meter_lost' AND meter_id = mid AND cleared_at IS NULL;
        PERFORM prepay.agent_meter_found(1, mid);
        PERFORM prepay.agent_gateway_lost(1, 2, p.s);
        INSERT INTO regress.stored SELECT 'agent_gateway_lost error', p.n, substr(detail, length('Gateway 2: ') + 1)
          FROM prepay.alarm WHERE site_id = 1 AND kind = 'gateway_lost' AND cleared_at IS NULL;
        PERFORM prepay.agent_gateway_found(1, 2);
        mid := prepay.replace_meter(1, mid, 1, p.s, 0, '2026-03-01 01:00+00');
        INSERT INTO regress.stored SELECT 'replace_meter new_code', p.n, code FROM prepay.meter WHERE site_id = 1 AND meter_id = mid;
        entry := prepay.close_account(1, acc, ref, p.s);
        INSERT INTO regress.stored SELECT 'close_account channel', p.n, channel FROM prepay.ledger WHERE site_id = 1 AND entry_id = entry;
        INSERT INTO regress.stored SELECT 'close_account reason', p.n, reason FROM prepay.ledger WHERE site_id = 1 AND entry_id = entry;
        INSERT INTO regress.stored SELECT 'agent_catalog agent_id', p.n, count(*)::text FROM prepay.agent_catalog(p.s);
        INSERT INTO regress.stored SELECT 'agent_claim_commands agent_id', p.n, count(*)::text FROM prepay.agent_claim_commands(p.s);
        INSERT INTO regress.stored SELECT 'site_access grantee', p.n, regress.try(format(
            'INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, %L) RETURNING 1', p.s)) LIKE '42704: role % does not exist%';
        INSERT INTO regress.stored SELECT 'tariff_check (jsonb text)', p.n,
            regress.try(format('SELECT prepay.tariff_check(%L)', jsonb_build_object('price', p.s))) LIKE 'PY015:%';
    END LOOP;
END $$;
SELECT s.fn, count(*) AS payloads,
       bool_and(CASE WHEN s.fn LIKE 'agent_catalog%' OR s.fn LIKE 'agent_claim%' THEN s.stored = '0'
                     WHEN s.fn LIKE 'site_access%' OR s.fn LIKE 'tariff_check%' THEN s.stored = 'true'
                     WHEN s.fn IN ('recharge channel', 'recharge external_ref', 'refund external_ref', 'close_account channel')
                     THEN s.stored = regexp_replace(p.s, '[\x01-\x1f]', ' ', 'g')
                     ELSE s.stored = p.s END) AS verbatim
  FROM regress.stored s JOIN regress.payload p USING (n) GROUP BY s.fn ORDER BY s.fn;
SELECT count(*) - :relations_before AS relations_added FROM pg_class WHERE relnamespace = 'prepay'::regnamespace;
-- per payload: a recharge (its replay adds nothing), a refund, its reversal,
-- the replaced meter's final consumption and the closing refund
SELECT kind, count(*) FROM prepay.ledger WHERE entry_id > :entry_mark GROUP BY kind ORDER BY kind;

-- ---------------------------------------------------------------------
-- coverage: every table with RLS forced and a site policy, every view
-- security_invoker, every SECURITY DEFINER function authorizing its
-- caller with a pinned search_path, no privilege for PUBLIC.  Each query
-- lists defects; a later file that breaks a rule shows up here.
-- ---------------------------------------------------------------------
SELECT c.relname AS table_without_forced_rls
  FROM pg_class c
 WHERE c.relnamespace = 'prepay'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND NOT (c.relrowsecurity AND c.relforcerowsecurity
            AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'site_staff'))
   AND c.relname <> 'reading_intake';
-- ... but the bulk intake, which COPY needs without row security: no role
-- may read, change or delete its rows (it is empty after every statement)
SELECT c.relname AS intake_privilege, r, p
  FROM pg_class c, unnest(ARRAY['prepay_admin', 'prepay_operator', 'prepay_cashier', 'prepay_reader',
                                'prepay_tenant', 'prepay_agent']) AS r,
       unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p
 WHERE c.oid = 'prepay.reading_intake'::regclass AND has_table_privilege(r, c.oid, p)
 ORDER BY 2, 3;
SELECT c.relname AS view_not_security_invoker
  FROM pg_class c
 WHERE c.relnamespace = 'prepay'::regnamespace AND c.relkind = 'v'
   AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false);
SELECT c.relname AS materialized_view FROM pg_class c WHERE c.relnamespace = 'prepay'::regnamespace AND c.relkind = 'm';
SELECT p.oid::regprocedure AS definer_without_authorization
  FROM pg_proc p
 WHERE p.pronamespace = 'prepay'::regnamespace AND p.prosecdef
   AND p.prorettype <> 'trigger'::regtype AND p.prosrc !~ 'prepay\._authorize'
   AND p.proname NOT IN ('_my_sites', '_my_accounts', '_my_agents', '_is_agent', '_authorize', '_authorize_account',
                         '_authorize_agent', '_authorize_agent_id');
SELECT p.oid::regprocedure AS authorizing_but_invoker
  FROM pg_proc p
 WHERE p.pronamespace = 'prepay'::regnamespace AND p.proname !~ '^_' AND p.prosrc ~ 'prepay\._authorize' AND NOT p.prosecdef;
SELECT p.oid::regprocedure AS definer_without_search_path
  FROM pg_proc p
 WHERE p.pronamespace = 'prepay'::regnamespace AND p.prosecdef
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false);
SELECT p.oid::regprocedure AS executable_by_public
  FROM pg_proc p
 WHERE p.pronamespace = 'prepay'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE');
SELECT p.oid::regprocedure AS trigger_executable_by_a_role
  FROM pg_proc p, unnest(ARRAY['prepay_admin', 'prepay_operator', 'prepay_cashier', 'prepay_reader',
                               'prepay_tenant', 'prepay_agent']) AS r
 WHERE p.pronamespace = 'prepay'::regnamespace AND p.prorettype = 'trigger'::regtype
   AND has_function_privilege(r, p.oid, 'EXECUTE');
SELECT c.relname AS relation_granted_to_public
  FROM pg_class c
 WHERE c.relnamespace = 'prepay'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
   AND (has_table_privilege('public', c.oid, 'SELECT') OR has_table_privilege('public', c.oid, 'INSERT'));
SELECT c.relname AS truncatable_by_a_role, r
  FROM pg_class c, unnest(ARRAY['prepay_admin', 'prepay_operator', 'prepay_cashier', 'prepay_reader',
                                'prepay_tenant', 'prepay_agent']) AS r
 WHERE c.relnamespace = 'prepay'::regnamespace AND c.relkind IN ('r', 'p')
   AND has_table_privilege(r, c.oid, 'TRUNCATE');
-- a partition (of prepay.reading) is reached only through its table, whose
-- rights and policies apply: no role has any right on the partition itself
SELECT c.relname AS partition_granted, r
  FROM pg_class c, unnest(ARRAY['prepay_admin', 'prepay_operator', 'prepay_cashier', 'prepay_reader',
                                'prepay_tenant', 'prepay_agent', 'public']) AS r
 WHERE c.relnamespace = 'prepay'::regnamespace AND c.relispartition AND c.relkind IN ('r', 'p')
   AND (has_table_privilege(r, c.oid, 'SELECT') OR has_table_privilege(r, c.oid, 'INSERT')
        OR has_table_privilege(r, c.oid, 'UPDATE') OR has_table_privilege(r, c.oid, 'DELETE'));
SELECT c.relname AS configuration_table_not_audited
  FROM pg_class c
 WHERE c.relnamespace = 'prepay'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND c.relname NOT IN ('reading', 'reading_intake', 'reading_refused', 'ledger', 'payment_reference', 'reversed_entry', 'charge_pricing', 'actor', 'alarm', 'notification', 'audit',
                         -- derived by jobs, read-only for every role, kept with their inputs
                         'period_charge', 'apportionment', 'bill_line', 'bill_entry', 'bill_payment', 'batch_item',
                         'energy_day_folded', 'energy_month_folded', 'energy_pending', 'consumption_posting_day', 'cut_reminder',
                         'multiplier_change', 'notify_secret', 'notification_delivery')
   AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'audit');

-- ---------------------------------------------------------------------
-- clean up the logins (the extension's rows name them, so drop those
-- first), and the ledger still explains every balance
-- ---------------------------------------------------------------------
DELETE FROM prepay.site_access WHERE grantee LIKE 'regress_sec_%';
DELETE FROM prepay.tenant_access WHERE grantee LIKE 'regress_sec_%';
DELETE FROM prepay.agent_access WHERE grantee LIKE 'regress_sec_%';
DROP ROLE regress_sec_admin, regress_sec_operator, regress_sec_cashier, regress_sec_reader,
    regress_sec_tenant_a, regress_sec_tenant_b, regress_sec_agent, regress_sec_nobody, regress_sec_multi;
REVOKE USAGE ON SCHEMA regress FROM PUBLIC;
DROP TABLE regress.operation, regress.payload, regress.stored;
DROP FUNCTION regress.sites_seen(text, text);
SELECT * FROM prepay.check_ledger();
