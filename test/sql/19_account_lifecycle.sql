-- Issue 17, items 3, 4, 7 and 12: the balance forecast with one degenerate
-- account among healthy ones (no forecast for it, no error for the
-- others); closing a funded account (outside the alarm ladder: no arrears
-- notice, no trip, no NOTIFY); the ladder at a balance of exactly zero;
-- settle_basic_charges counting its postings; schedule_jobs refusing
-- without pg_cron (pg_cron needs shared_preload_libraries, so scheduling
-- itself is tested by test/t/130_pg_cron.pl).  Every scenario runs as the
-- role that would run it (operator, cashier, agent, reader logins).
\set logins regress_life
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql
SELECT regress.create_logins('regress_life', 'operator', 'cashier', 'agent', 'reader');
GRANT USAGE ON SCHEMA regress TO PUBLIC;

-- ---------------------------------------------------------------------
-- item 4: sites 1 and 2.  Site 1: H1 is healthy; D was opened just now,
-- its meter attached back-dated with a back-filled reading 1 ms after the
-- opening (so its rate would be 1000 kWh per millisecond).  Site 2: H2
-- has 0.10 left at 10 kWh an hour: its cut is due now.
-- ---------------------------------------------------------------------
INSERT INTO prepay.site (name) VALUES ('Forecast North'), ('Forecast South');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (2, 'flat');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 1.0), (2, 2, '2026-01-01', 1.0);
INSERT INTO prepay.gateway (site_id, name, host, port, agent_id) VALUES (1, 'gw-n', '10.0.0.1', 502, 'life'), (2, 'gw-s', '10.0.0.2', 502, 'life');
INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id) VALUES (1, 'H1', 1, 1), (1, 'D', 1, 2), (2, 'H2', 2, 1);
INSERT INTO prepay.site_access (site_id, grantee) SELECT s, r FROM generate_series(1, 2) AS s,
    unnest(ARRAY['regress_life_operator', 'regress_life_cashier', 'regress_life_reader']) AS r;
INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES (1, 'life', 'regress_life_agent'), (2, 'life', 'regress_life_agent');
SET SESSION AUTHORIZATION regress_life_operator;
SELECT prepay.open_account(1, 'H1', 'Healthy north', 1);
SELECT prepay.open_account(2, 'H2', 'Healthy south, nearly out', 2);
RESET SESSION AUTHORIZATION;
UPDATE prepay.account SET opened_at = now() - interval '3 days' WHERE code = 'H1';
UPDATE prepay.account SET opened_at = now() - interval '2 hours' WHERE code = 'H2';
SET SESSION AUTHORIZATION regress_life_operator;
SELECT prepay.attach_meter(1, 1, 1, 0, now() - interval '2 days');
SELECT prepay.attach_meter(2, 2, 3, 0, now() - interval '2 hours');
SELECT prepay.open_account(1, 'D', 'Degenerate', 1);
SELECT prepay.attach_meter(1, 3, 2, 0, (SELECT opened_at - interval '1 day' FROM prepay.account WHERE code = 'D'));
SET SESSION AUTHORIZATION regress_life_cashier;
SELECT prepay.recharge(1, 1, 200, 'cash', 'F-H1') > 0, prepay.recharge(2, 2, 20.10, 'cash', 'F-H2') > 0,
       prepay.recharge(1, 3, 2000, 'cash', 'F-D') > 0;
RESET SESSION AUTHORIZATION;
SELECT opened_at + interval '1 millisecond' AS d_backfilled FROM prepay.account WHERE code = 'D' \gset
SET SESSION AUTHORIZATION regress_life_agent;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
VALUES (1, 1, now() - interval '1 day', 24), (1, 1, now() - interval '1 hour', 47),
       (2, 3, now() - interval '1 hour', 10), (2, 3, now() - interval '1 minute', 20),
       (1, 2, :'d_backfilled', 1000);
RESET SESSION AUTHORIZATION;
SELECT code, balance FROM prepay.account ORDER BY account_id;
-- the reader's view of every site: D has no forecast, the others do
SET SESSION AUTHORIZATION regress_life_reader;
SELECT site_id, account_code, status, run_out_at IS NOT NULL AS has_run_out, method, cut_at IS NOT NULL AS has_cut,
       recent_energy_per_day IS NOT NULL AS has_rate, CASE WHEN status = 'no forecast' THEN reason END AS reason
  FROM prepay.balance_forecast WHERE account_code <> 'H1' ORDER BY site_id, account_code;
SELECT status, run_out_at > now() + interval '2 days' AS later FROM prepay.balance_forecast WHERE account_code = 'H1';
SELECT site_id, account_code, will_be_cut, status FROM prepay.cuts_next_24h ORDER BY site_id, account_code;
SELECT account_code, status, run_out_at IS NULL AS no_run_out
  FROM prepay.cut_forecast(1, '100 years') ORDER BY account_code;
RESET SESSION AUTHORIZATION;
-- the reminders of every site (pg_cron's job, as a superuser): H2 only, once
SELECT prepay.send_cut_reminders();
SELECT prepay.send_cut_reminders();
SELECT n.site_id, a.code, n.kind FROM prepay.notification n JOIN prepay.account a USING (site_id, account_id)
 WHERE n.kind = 'cut_reminder' ORDER BY n.notification_id;
-- money for more than 100 years at the recent rate: no forecast either, never an error
UPDATE prepay.site SET forecast_window = '1 day' WHERE site_id = 1;
SET SESSION AUTHORIZATION regress_life_cashier;
SELECT prepay.recharge(1, 1, 999999999000.00, 'bank', 'F-H1-HUGE') > 0;
SET SESSION AUTHORIZATION regress_life_reader;
SELECT account_code, status, run_out_at, reason FROM prepay.balance_forecast WHERE account_code = 'H1';
RESET SESSION AUTHORIZATION;
SELECT * FROM prepay.check_ledger();

-- ---------------------------------------------------------------------
-- item 3: closing, and the ladder at zero.  Site 3 (thresholds low 50,
-- pre-trip 10): F is funded with two meters, W holds only an allowance
-- (it expires at the close, taking the balance to 0.00 before any
-- refund), Z0..Z3 are at and around the arrears boundary.
-- ---------------------------------------------------------------------
INSERT INTO prepay.site (name, low_balance_threshold, pretrip_threshold) VALUES ('Lifecycle', 50, 10);   -- site 3
INSERT INTO prepay.tariff (site_id, name) VALUES (3, 'flat');                                              -- tariff 3
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (3, 3, '2026-01-01', 1.0);
INSERT INTO prepay.gateway (site_id, name, host, port, agent_id) VALUES (3, 'gw-l', '10.0.0.3', 502, 'life');
INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id)
SELECT 3, 'L' || i, 3, i FROM generate_series(1, 7) AS i;                                                 -- meters 4-10
INSERT INTO prepay.site_access (site_id, grantee) VALUES (3, 'regress_life_operator'), (3, 'regress_life_cashier');
INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES (3, 'life', 'regress_life_agent');
SET SESSION AUTHORIZATION regress_life_operator;
SELECT prepay.open_account(3, 'F', 'Funded', 3, p_phone => '13900000001');              -- account 4
SELECT prepay.open_account(3, 'W', 'Allowance only', 3);                                 -- account 5
SELECT prepay.open_account(3, 'Z0', 'Zero, no credit', 3);                               -- account 6
SELECT prepay.open_account(3, 'Z1', 'A cent, no credit', 3);                             -- account 7
SELECT prepay.open_account(3, 'Z2', 'Credit 20, at -20.00', 3, p_credit_limit => 20);    -- account 8
SELECT prepay.open_account(3, 'Z3', 'Credit 20, at -19.99', 3, p_credit_limit => 20);    -- account 9
RESET SESSION AUTHORIZATION;
UPDATE prepay.account SET opened_at = '2026-03-01 00:00+00' WHERE site_id = 3;
SET SESSION AUTHORIZATION regress_life_operator;
SELECT prepay.attach_meter(3, a, m, 0, '2026-03-01 00:00+00')
  FROM (VALUES (4, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9), (9, 10)) AS v(a, m);
INSERT INTO prepay.account_group (site_id, name) VALUES (3, 'subsidised');
INSERT INTO prepay.account_group_member (site_id, group_id, account_id) VALUES (3, 1, 5);
INSERT INTO prepay.allowance_rule (site_id, name, amount, group_id, active_from) VALUES (3, 'free', 30, 1, '2026-12-01');
SELECT prepay.grant_allowances(3, '2026-12-01');
SET SESSION AUTHORIZATION regress_life_cashier;
SELECT prepay.recharge(3, a, amt, 'cash', 'L-' || a) > 0
  FROM (VALUES (4, 100.00), (6, 10.00), (7, 10.01), (8, 10.00), (9, 10.00)) AS v(a, amt);
SET SESSION AUTHORIZATION regress_life_agent;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (3, 4, '2026-03-02 00:00+00', 12), (3, 5, '2026-03-02 00:00+00', 8),    -- F: 20.00, 80.00 left
    (3, 7, '2026-03-02 00:00+00', 10),                                        -- Z0: 0.00
    (3, 8, '2026-03-02 00:00+00', 10),                                        -- Z1: 0.01
    (3, 9, '2026-03-02 00:00+00', 30),                                        -- Z2: -20.00
    (3, 10, '2026-03-02 00:00+00', 29.99);                                    -- Z3: -19.99
RESET SESSION AUTHORIZATION;

-- the boundary: 0.00 with no credit limit is arrears (level 3, the trip),
-- told as "no credit left"; a cent more is pre-trip; with a credit limit
-- of 20, -20.00 is arrears and -19.99 is not
SELECT prepay.alarm_level(0.00, 50, 10, 0) AS at_zero, prepay.alarm_level(0.01, 50, 10, 0) AS a_cent_above,
       prepay.alarm_level(-20.00, 50, 10, 20) AS at_minus_limit, prepay.alarm_level(-19.99, 50, 10, 20) AS a_cent_above_it;
SELECT code, balance, credit_limit, alarm_level FROM prepay.account WHERE site_id = 3 ORDER BY account_id;
SELECT a.code, n.alarm_level, n.message FROM prepay.notification n JOIN prepay.account a USING (site_id, account_id)
 WHERE n.site_id = 3 ORDER BY n.notification_id;
SELECT a.code, c.meter_id, c.action, c.state, c.reason FROM prepay.command c JOIN prepay.account a USING (site_id, account_id)
 WHERE c.site_id = 3 ORDER BY c.command_id;

-- closing: F (funded, refunded 80.00), W (its allowance expires: 0.00) and
-- Z0 (0.00, in arrears with a queued trip) notify nobody, queue nothing and
-- send no NOTIFY (this session listens: a notification would be printed
-- here); Z2 owes money and is refused
CREATE TEMP TABLE mark AS SELECT (SELECT max(notification_id) FROM prepay.notification) AS notification_id,
                                 (SELECT max(command_id) FROM prepay.command) AS command_id;
LISTEN prepay_command;
LISTEN prepay_notification;
SET SESSION AUTHORIZATION regress_life_operator;
SELECT prepay.close_account(3, 4) IS NOT NULL AS refunded;
SELECT prepay.close_account(3, 5) IS NOT NULL AS refunded;
SELECT prepay.close_account(3, 6) IS NOT NULL AS refunded;
SELECT regress.try($$SELECT prepay.close_account(3, 8)$$);
RESET SESSION AUTHORIZATION;
UNLISTEN *;
SELECT a.code, l.kind, l.amount, l.balance_after FROM prepay.ledger l JOIN prepay.account a USING (site_id, account_id)
 WHERE l.site_id = 3 AND a.code IN ('F', 'W', 'Z0') ORDER BY l.entry_id;
SELECT count(*) AS notifications_since FROM prepay.notification WHERE notification_id > (SELECT notification_id FROM mark);
SELECT count(*) AS commands_since FROM prepay.command WHERE command_id > (SELECT command_id FROM mark);
SELECT a.code, c.action, c.state, c.last_error FROM prepay.command c JOIN prepay.account a USING (site_id, account_id)
 WHERE c.site_id = 3 ORDER BY c.command_id;
SELECT code, balance, alarm_level, closed_at IS NOT NULL AS closed,
       (SELECT count(*) FROM prepay.alarm l WHERE l.site_id = a.site_id AND l.account_id = a.account_id AND l.cleared_at IS NULL) AS active_alarms
  FROM prepay.account a WHERE site_id = 3 ORDER BY account_id;
SELECT * FROM prepay.check_ledger();

-- ---------------------------------------------------------------------
-- item 7: settle_basic_charges returns the entries it posted.  Site 4:
-- two accounts on a two-part tariff, 31 kVA x 10 = 310.00 a month.
-- October is fully accrued: settling it records two zero settlements and
-- posts nothing (0).  November is accrued to the 10th only: settling it
-- posts two catch-ups of 310.00 - 103.33 = 206.67 (2); again, nothing (0).
-- ---------------------------------------------------------------------
INSERT INTO prepay.site (name) VALUES ('Two-part');                                       -- site 4
INSERT INTO prepay.tariff (site_id, name) VALUES (4, 'two-part');                         -- tariff 4
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition)
VALUES (4, 4, '2026-01-01', '{"price": 1.0, "basic": {"by": "capacity", "price": 10}}');
INSERT INTO prepay.site_access (site_id, grantee) VALUES (4, 'regress_life_operator');
SET SESSION AUTHORIZATION regress_life_operator;
SELECT prepay.open_account(4, 'P1', 'Workshop', 4), prepay.open_account(4, 'P2', 'Bakery', 4, p_mode => 'postpaid');
RESET SESSION AUTHORIZATION;
UPDATE prepay.account SET opened_at = '2026-09-01 00:00+00', capacity_kva = 31 WHERE site_id = 4;
SET SESSION AUTHORIZATION regress_life_operator;
SELECT account_id, monthly, posted FROM prepay.accrue_basic_charges(4, '2026-10-31') ORDER BY account_id;
SELECT prepay.settle_basic_charges(4, '2026-10-01') AS october_posted;
SELECT account_id, monthly, posted FROM prepay.accrue_basic_charges(4, '2026-11-10') ORDER BY account_id;
SELECT prepay.settle_basic_charges(4, '2026-11-01') AS november_posted;
SELECT prepay.settle_basic_charges(4, '2026-11-01') AS november_again;
SELECT account_id, period_start, amount, entry_id IS NOT NULL AS posted, inputs->>'target' AS target,
       inputs->>'accrued' AS accrued
  FROM prepay.period_charge WHERE site_id = 4 AND source = 'basic_settlement' ORDER BY period_start, account_id;
RESET SESSION AUTHORIZATION;
SELECT account_id, kind, amount, balance_after FROM prepay.ledger WHERE site_id = 4 ORDER BY entry_id;
SELECT * FROM prepay.check_ledger();

-- ---------------------------------------------------------------------
-- item 12 without pg_cron (not loadable here: it needs
-- shared_preload_libraries): the jobs are listed, scheduling and removing
-- are refused with 55000 and a hint naming the settings; a non-superuser
-- is refused first (42501)
-- ---------------------------------------------------------------------
SELECT jobname, schedule, command FROM prepay.periodic_jobs() ORDER BY jobname;
SELECT jobname, jobid, schedule, state FROM prepay.scheduled_jobs();
SELECT replace(regress.try($$SELECT count(*) FROM prepay.schedule_jobs()$$), current_database(), '<db>');
SELECT replace(regress.try($$SELECT prepay.unschedule_jobs()$$), current_database(), '<db>');
SET SESSION AUTHORIZATION regress_life_operator;
SELECT regress.try($$SELECT count(*) FROM prepay.schedule_jobs()$$);
SELECT regress.try($$SELECT prepay.unschedule_jobs()$$);
SELECT jobname, state FROM prepay.scheduled_jobs();
RESET SESSION AUTHORIZATION;

-- clean up the logins
DELETE FROM prepay.site_access WHERE grantee LIKE 'regress_life_%';
DELETE FROM prepay.agent_access WHERE grantee LIKE 'regress_life_%';
REVOKE USAGE ON SCHEMA regress FROM PUBLIC;
DROP ROLE regress_life_operator, regress_life_cashier, regress_life_agent, regress_life_reader;
