-- Relay commands are never abandoned while the account's state calls for
-- them (issue 17, item 2): prepay.agent_command_failed queues a failed
-- command again after a backoff capped at 60 s, raises one
-- command_failing alarm from the 5th attempt (cleared when the command is
-- done or superseded), and fails a command only when it is superseded, no
-- longer called for, or impossible.  A retry waiting for its backoff is
-- due at once when contact returns (agent_meter_found, agent_gateway_found)
-- or the agent reconnects (agent_claim_commands with p_include_sent), a
-- trip never inside a no-cut window.  Everything is done as the logins of
-- the real roles: an agent, a cashier and an operator.
\set logins regress_retry
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql

-- one site: meter 1 on account 1, meter 2 without an account, meter 3 of a
-- model without a remote relay; all on one gateway of agent retry-1
INSERT INTO prepay.site (name) VALUES ('Retry');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 0.50);
INSERT INTO prepay.device_profile (site_id, profile, description) VALUES (1, 'norelay', 'a meter without a remote relay');
INSERT INTO prepay.gateway (site_id, name, host, port, agent_id) VALUES (1, 'gw', '10.0.0.1', 502, 'retry-1');
INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id, device_profile) VALUES
    (1, 'R1', 1, 1, 'ddsy1352'), (1, 'R2', 1, 2, 'ddsy1352'), (1, 'R3', 1, 3, 'norelay');
SELECT prepay.open_account(1, 'A', 'Shop A', 1);
UPDATE prepay.account SET opened_at = '2026-02-01 00:00+00';
SELECT prepay.attach_meter(1, 1, 1, 100, '2026-03-01 00:00+00');
SELECT prepay.recharge(1, 1, 10, 'cash', 'R-1');

SELECT regress.create_logins('regress_retry', 'agent', 'cashier', 'operator');
CREATE ROLE regress_retry_other_agent LOGIN IN ROLE prepay_agent;
INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES
    (1, 'retry-1', 'regress_retry_agent'), (1, 'retry-2', 'regress_retry_other_agent');
INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_retry_cashier'), (1, 'regress_retry_operator');
GRANT USAGE ON SCHEMA regress TO PUBLIC;

-- what a test looks at: the commands and the command_failing alarms
CREATE VIEW regress.retry_state AS
SELECT c.command_id, c.meter_id, c.action, c.state, c.attempts, c.last_error,
       CASE WHEN c.state <> 'queued' THEN NULL
            WHEN c.not_before <= now() THEN 'due'
            ELSE 'in ' || (c.not_before - c.updated_at) END AS retry
  FROM prepay.command c ORDER BY c.command_id;
CREATE VIEW regress.retry_alarms AS
SELECT meter_id, detail, cleared_at IS NULL AS active FROM prepay.alarm WHERE kind = 'command_failing' ORDER BY alarm_id;
GRANT SELECT ON regress.retry_state, regress.retry_alarms TO PUBLIC;

-- ---------------------------------------------------------------------
-- 1. an arrears trip that keeps failing is queued again, never failed
-- ---------------------------------------------------------------------
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 06:00+00', 130);
SELECT balance, alarm_level FROM prepay.account;
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT command_id, meter_id, action, attempts FROM prepay.agent_claim_commands('retry-1');
-- a backoff above 60 s is capped to 60 s; the command is not due meanwhile
SELECT prepay.agent_command_failed(1, 1, 'timeout', '10 minutes') AS first_failure;
SELECT * FROM regress.retry_state;
SELECT count(*) AS not_due FROM prepay.agent_claim_commands('retry-1');
-- a reconnecting agent takes its waiting retries at once
SELECT command_id, attempts FROM prepay.agent_claim_commands('retry-1', true);
SELECT prepay.agent_command_failed(1, 1, 'timeout', '0 seconds') AS second_failure;
SELECT attempts FROM prepay.agent_claim_commands('retry-1');
SELECT prepay.agent_command_failed(1, 1, 'timeout', '0 seconds') AS third_failure;
SELECT attempts FROM prepay.agent_claim_commands('retry-1');
SELECT prepay.agent_command_failed(1, 1, 'timeout', '0 seconds') AS fourth_failure;
SELECT count(*) AS no_alarm_yet FROM regress.retry_alarms;
SELECT attempts FROM prepay.agent_claim_commands('retry-1');
-- the 5th failed attempt raises the alarm: the old code failed the command here
SELECT prepay.agent_command_failed(1, 1, 'timeout', '0 seconds') AS fifth_failure;
SELECT * FROM regress.retry_state;
SELECT * FROM regress.retry_alarms;
SELECT prepay.agent_commands_failing('retry-1') AS failing;
-- a 6th failure keeps the one alarm, with its detail brought up to date
SELECT attempts FROM prepay.agent_claim_commands('retry-1');
SELECT prepay.agent_command_failed(1, 1, 'write 0057H: Connection timed out', '30 seconds') AS sixth_failure;
SELECT * FROM regress.retry_alarms;
SELECT count(*) AS not_due FROM prepay.agent_claim_commands('retry-1');

-- ---------------------------------------------------------------------
-- 2. contact returns: the waiting retry is due at once
-- ---------------------------------------------------------------------
SELECT prepay.agent_meter_lost(1, 1, 3, 'timeout');
SELECT prepay.agent_meter_found(1, 1);
SELECT retry FROM regress.retry_state WHERE command_id = 1;
SELECT attempts FROM prepay.agent_claim_commands('retry-1');
SELECT prepay.agent_command_failed(1, 1, 'timeout', '60 seconds') AS seventh_failure;
SELECT prepay.agent_gateway_lost(1, 1, 'connect: Connection refused');
SELECT prepay.agent_gateway_found(1, 1);
SELECT retry FROM regress.retry_state WHERE command_id = 1;
-- done at last: the alarm clears
SELECT attempts FROM prepay.agent_claim_commands('retry-1');
SELECT prepay.agent_command_done(1, 1, 'tripped');
SELECT * FROM regress.retry_state;
SELECT * FROM regress.retry_alarms;
SELECT prepay.agent_commands_failing('retry-1') AS failing;
RESET SESSION AUTHORIZATION;

-- ---------------------------------------------------------------------
-- 3. the tenant pays while the gateway is dead: the close is retried
-- until done, and a new trip supersedes it (alarm cleared)
-- ---------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_retry_cashier;
SELECT prepay.recharge(1, 1, 20, 'cash', 'R-2') > 0 AS recharged;
RESET SESSION AUTHORIZATION;
SELECT balance, alarm_level FROM prepay.account;
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT command_id, action, attempts FROM prepay.agent_claim_commands('retry-1');
SELECT prepay.agent_command_failed(1, 2, 'timeout', '0 seconds');
SELECT attempts FROM prepay.agent_claim_commands('retry-1');
SELECT prepay.agent_command_failed(1, 2, 'timeout', '0 seconds');
SELECT attempts FROM prepay.agent_claim_commands('retry-1');
SELECT prepay.agent_command_failed(1, 2, 'timeout', '0 seconds');
SELECT attempts FROM prepay.agent_claim_commands('retry-1');
SELECT prepay.agent_command_failed(1, 2, 'timeout', '0 seconds');
SELECT attempts FROM prepay.agent_claim_commands('retry-1');
SELECT prepay.agent_command_failed(1, 2, 'timeout', '60 seconds') AS fifth_failure;
SELECT * FROM regress.retry_state WHERE command_id = 2;
SELECT * FROM regress.retry_alarms WHERE active;
RESET SESSION AUTHORIZATION;
-- the account falls back into arrears: the queued close is cancelled
-- (superseded) and its alarm cleared
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 12:00+00', 180);
SELECT balance, alarm_level FROM prepay.account;
SELECT * FROM regress.retry_state WHERE command_id >= 2;
SELECT * FROM regress.retry_alarms WHERE active;

-- ---------------------------------------------------------------------
-- 4. failed only when no longer called for, or impossible
-- ---------------------------------------------------------------------
-- a trip in flight when the tenant pays: the close supersedes it
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT command_id, action FROM prepay.agent_claim_commands('retry-1');
SET SESSION AUTHORIZATION regress_retry_cashier;
SELECT prepay.recharge(1, 1, 100, 'cash', 'R-3') > 0 AS recharged;
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT prepay.agent_command_failed(1, 3, 'timeout', '0 seconds') AS superseded;
SELECT * FROM regress.retry_state WHERE command_id >= 3;
-- a manual trip in flight when the operator protects the meter
SET SESSION AUTHORIZATION regress_retry_operator;
SELECT prepay.trip(1, 2) AS manual_trip;
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT command_id, action FROM prepay.agent_claim_commands('retry-1') ORDER BY command_id;
SET SESSION AUTHORIZATION regress_retry_operator;
SELECT prepay.protect(1, true, p_meter_id => 2);
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT prepay.agent_command_failed(1, 5, 'timeout', '0 seconds') AS protected;
SELECT prepay.agent_command_done(1, 4, 'closed');
-- a trip of a meter that has no remote relay: failed at once, with the alarm
SET SESSION AUTHORIZATION regress_retry_operator;
SELECT prepay.trip(1, 3) AS impossible_trip;
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT command_id, action FROM prepay.agent_claim_commands('retry-1');
SELECT prepay.agent_command_failed(1, 6, 'profile norelay has no remote relay', '2 seconds') AS impossible;
SELECT * FROM regress.retry_state WHERE command_id >= 4;
SELECT * FROM regress.retry_alarms WHERE active;
SELECT prepay.agent_commands_failing('retry-1') AS failing;
RESET SESSION AUTHORIZATION;

-- ---------------------------------------------------------------------
-- 5. an arrears trip's retry never lands inside a no-cut window, even
-- when contact returns or the agent reconnects
-- ---------------------------------------------------------------------
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 18:00+00', 370);
SELECT balance, alarm_level FROM prepay.account;
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT command_id, action, attempts FROM prepay.agent_claim_commands('retry-1');
RESET SESSION AUTHORIZATION;
INSERT INTO prepay.no_cut_window (site_id, during, description)
VALUES (1, tstzrange(now() - interval '1 minute', now() + interval '1 hour'), 'holiday');
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT prepay.agent_command_failed(1, 7, 'timeout', '2 seconds') AS failed_in_window;
RESET SESSION AUTHORIZATION;
SELECT c.not_before = upper(w.during) AS waits_for_the_window_end
  FROM prepay.command c, prepay.no_cut_window w WHERE c.command_id = 7;
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT prepay.agent_gateway_found(1, 1);
SELECT count(*) AS not_woken_into_the_window FROM prepay.agent_claim_commands('retry-1', true);
RESET SESSION AUTHORIZATION;
SELECT c.not_before = upper(w.during) AS still_waits
  FROM prepay.command c, prepay.no_cut_window w WHERE c.command_id = 7;
DELETE FROM prepay.no_cut_window;
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT command_id, attempts FROM prepay.agent_claim_commands('retry-1', true);
SELECT prepay.agent_command_done(1, 7, 'tripped');
SELECT * FROM regress.retry_state WHERE command_id = 7;

-- ---------------------------------------------------------------------
-- 6. error paths
-- ---------------------------------------------------------------------
SELECT regress.try($$SELECT prepay.agent_command_failed(1, 7, 'timeout')$$);
SELECT regress.try($$SELECT prepay.agent_command_failed(1, 999999, 'timeout')$$);
SELECT regress.try($$SELECT prepay.agent_commands_failing('retry-2')$$);
SELECT regress.try($$SELECT prepay.agent_commands_failing('nobody')$$);
SET SESSION AUTHORIZATION regress_retry_operator;
SELECT prepay.trip(1, 1) AS manual_trip;
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT command_id FROM prepay.agent_claim_commands('retry-1');
SET SESSION AUTHORIZATION regress_retry_other_agent;
SELECT regress.try($$SELECT prepay.agent_command_failed(1, 8, 'timeout')$$);
SELECT regress.try($$SELECT prepay.agent_commands_failing('retry-1')$$);
SELECT prepay.agent_commands_failing('retry-2') AS other_agent_failing;
SET SESSION AUTHORIZATION regress_retry_cashier;
SELECT regress.try($$SELECT prepay.agent_command_failed(1, 8, 'timeout')$$);
SET SESSION AUTHORIZATION regress_retry_agent;
SELECT prepay.agent_command_done(1, 8, 'tripped');
RESET SESSION AUTHORIZATION;
SELECT * FROM regress.retry_state WHERE command_id = 8;

-- ---------------------------------------------------------------------
-- 7. a relay state read before a confirmed command is stale: a reading
-- taken before the agent tripped the relay, delivered after the trip was
-- confirmed, leaves the trip known, so the tenant's next payment closes
-- the relay again
-- ---------------------------------------------------------------------
SELECT relay_state_at AS confirmed_at, last_energy AS energy FROM prepay.meter WHERE site_id = 1 AND meter_id = 1 \gset
SELECT relay_state FROM prepay.meter WHERE site_id = 1 AND meter_id = 1;
SET SESSION AUTHORIZATION regress_retry_agent;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, relay_state)
VALUES (1, 1, :'confirmed_at'::timestamptz - interval '2 seconds', :energy + 0.1, 'closed');
RESET SESSION AUTHORIZATION;
SELECT relay_state, relay_state_at = :'confirmed_at' AS still_the_confirmed_state
  FROM prepay.meter WHERE site_id = 1 AND meter_id = 1;
-- a reading taken after it tells the relay's state as it is now
SET SESSION AUTHORIZATION regress_retry_agent;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, relay_state)
VALUES (1, 1, clock_timestamp(), :energy + 0.1, 'closed');
RESET SESSION AUTHORIZATION;
SELECT relay_state, relay_state_at > :'confirmed_at' AS learnt_from_the_reading
  FROM prepay.meter WHERE site_id = 1 AND meter_id = 1;
SELECT read_at > :'confirmed_at' AS read_after_the_trip, relay_state, quarantine_reason, quarantine_detail
  FROM prepay.reading WHERE site_id = 1 AND meter_id = 1 AND read_at > :'confirmed_at'::timestamptz - interval '1 minute'
 ORDER BY read_at;

-- the new functions pin their search_path
SELECT p.oid::regprocedure AS function, p.prosecdef AS security_definer, p.proconfig
  FROM pg_proc p
 WHERE p.pronamespace = 'prepay'::regnamespace
   AND p.proname IN ('agent_command_failed', 'agent_commands_failing', 'agent_claim_commands', 'agent_meter_found',
                     'agent_gateway_found', '_command_moot', '_command_impossible', '_command_alarm',
                     '_command_alarm_clear', '_wake_commands')
 ORDER BY 1::text;

-- clean up
DROP VIEW regress.retry_state, regress.retry_alarms;
REVOKE USAGE ON SCHEMA regress FROM PUBLIC;
DELETE FROM prepay.site_access WHERE grantee LIKE 'regress_retry_%';
DELETE FROM prepay.agent_access WHERE grantee LIKE 'regress_retry_%';
DROP ROLE regress_retry_agent, regress_retry_other_agent, regress_retry_cashier, regress_retry_operator;
SELECT * FROM prepay.check_ledger();
