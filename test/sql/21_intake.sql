-- Readings that are not stored, and the bulk path for every role (issue 17,
-- items 8, 10, 11; extension/intake.c):
--   - a second reading of a meter and time with other registers is not
--     stored (the first keeps its charge) but recorded with both values
--     and raised as an alarm; an identical one stays a silent duplicate;
--   - an agent or operator COPYs through prepay.reading_intake (COPY FROM
--     into prepay.reading is refused under row security): rated as an
--     INSERT, a replay charges nothing, nothing stays in the intake;
--   - a row of a site the writer is not mapped to is refused alone: the
--     good rows are stored and rated, the writer gets a warning with a
--     count, the site's staff a record, and the writer learns nothing of
--     that site (its output is the same whether a reading exists there).
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql
INSERT INTO prepay.site (name, low_balance_threshold, pretrip_threshold) VALUES ('North', 0, 0), ('South', 0, 0);
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (2, 'flat');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 0.5), (2, 2, '2026-01-01', 0.5);
-- site 1: meters 1 and 2 on account 1; site 2: meter 3 on account 2
INSERT INTO prepay.meter (site_id, code) VALUES (1, 'N1'), (1, 'N2'), (2, 'S1');
SELECT prepay.open_account(1, 'A1', 'North shop', 1), prepay.open_account(2, 'B1', 'South shop', 2);
SELECT prepay.attach_meter(1, 1, 1, 100, '2026-03-01 00:00+00'), prepay.attach_meter(1, 1, 2, 100, '2026-03-01 00:00+00'),
       prepay.attach_meter(2, 2, 3, 100, '2026-03-01 00:00+00');
SELECT prepay.recharge(1, 1, 100, 'cash', 'N-1') > 0 AS paid, prepay.recharge(2, 2, 100, 'cash', 'S-1') > 0 AS paid;

-- ---------------------------------------------------------------------
-- item 8: conflicting duplicates are visible, identical ones silent
-- ---------------------------------------------------------------------
-- 10 kWh x 0.5 = 5.00
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 06:00+00', 110);
-- the same reading again: skipped, no warning, nothing recorded
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 06:00+00', 110.000);
SELECT count(*) AS refused FROM prepay.reading_refused;
-- another total register for the same instant: not stored, a warning
-- (PY121), a record with both values and a conflicting_reading alarm
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 06:00+00', 111);
-- a TOU register the stored reading does not have is a conflict too
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, peak) VALUES (1, 1, '2026-03-01 06:00+00', 110, 4);
-- within one COPY: the second row of a key conflicts with the first
COPY prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley) FROM STDIN (FORMAT csv);
1,2,2026-03-01 06:00+00,104,1,2,1,0
1,2,2026-03-01 06:00+00,104,1,2,0,1
1,2,2026-03-01 06:00+00,104,1,2,1,0
\.
SELECT site_id, meter_id, read_at, energy, peak, flat, valley, reason, detail, login, acting_role
  FROM prepay.reading_refused ORDER BY refused_id;
SELECT site_id, kind, meter_id, detail FROM prepay.alarm WHERE kind = 'conflicting_reading' ORDER BY meter_id;
-- the first readings keep their charges and nothing else was charged
SELECT meter_id, read_to, energy, amount FROM prepay.ledger WHERE kind = 'consumption' ORDER BY entry_id;
SELECT meter_id, read_at, energy, sharp, peak, flat, valley FROM prepay.reading WHERE read_at = '2026-03-01 06:00+00' ORDER BY meter_id;

-- ---------------------------------------------------------------------
-- the logins: an agent and an operator of site 1
-- ---------------------------------------------------------------------
CREATE ROLE regress_intake_agent LOGIN IN ROLE prepay_agent;
CREATE ROLE regress_intake_operator LOGIN IN ROLE prepay_operator;
INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES (1, 'north-1', 'regress_intake_agent');
INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_intake_operator');
GRANT USAGE ON SCHEMA regress TO regress_intake_agent;
-- a reading at site 2 that the logins must not learn of
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (2, 3, '2026-03-01 06:00+00', 120);
SELECT count(*) AS entries FROM prepay.ledger \gset before_

-- ---------------------------------------------------------------------
-- item 10: the agent COPYs through the intake; rated, replay-safe, empty
-- ---------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_intake_agent;
-- 10 kWh and 4 kWh x 0.5: 5.00 and 2.00 (meter 2 from its 104 at 06:00)
COPY prepay.reading_intake (site_id, meter_id, read_at, energy, relay_state) FROM STDIN (FORMAT csv);
1,1,2026-03-01 12:00+00,120,closed
1,2,2026-03-01 12:00+00,108,
\.
-- the same rows again: nothing charged, nothing refused, no warning
COPY prepay.reading_intake (site_id, meter_id, read_at, energy, relay_state) FROM STDIN (FORMAT csv);
1,1,2026-03-01 12:00+00,120,closed
1,2,2026-03-01 12:00+00,108,
\.
-- quarantine as for an INSERT: a NaN register and an unknown meter
COPY prepay.reading_intake (site_id, meter_id, read_at, energy) FROM STDIN (FORMAT csv);
1,2,2026-03-01 13:00+00,NaN
1,77,2026-03-01 13:00+00,5
\.
-- the intake is write-only, the record of refusals closed to the agent
SELECT regress.try('SELECT count(*) FROM prepay.reading_intake');
SELECT regress.try('SELECT count(*) FROM prepay.reading_refused');
RESET SESSION AUTHORIZATION;
SELECT meter_id, read_from, read_to, energy, amount, (SELECT ac.login FROM prepay.actor ac WHERE ac.site_id = l.site_id AND ac.actor_id = l.actor_id) AS created_by FROM prepay.ledger l
 WHERE kind = 'consumption' AND read_to = '2026-03-01 12:00+00' ORDER BY entry_id;
SELECT count(*) - :before_entries AS new_entries FROM prepay.ledger;
SELECT meter_id, read_at, energy, relay_state, quarantine_reason FROM prepay.reading
 WHERE read_at >= '2026-03-01 12:00+00' ORDER BY meter_id, read_at;
SELECT count(*) AS left_in_intake FROM prepay.reading_intake;

-- ---------------------------------------------------------------------
-- item 11: a foreign row is refused alone, and tells the writer nothing
-- ---------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_intake_agent;
-- a good row and a row of site 2 at a key that exists there ...
COPY prepay.reading_intake (site_id, meter_id, read_at, energy) FROM STDIN (FORMAT csv);
1,1,2026-03-01 18:00+00,130
2,3,2026-03-01 06:00+00,120
\.
-- ... and at a key that does not: the same output (one row refused)
COPY prepay.reading_intake (site_id, meter_id, read_at, energy) FROM STDIN (FORMAT csv);
1,1,2026-03-01 19:00+00,131
2,3,2026-03-01 07:00+00,120
\.
-- the same by INSERT into prepay.reading: the row count is the good rows',
-- also for a foreign key that exists with other registers (no PY121, no alarm there)
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 2, '2026-03-01 18:00+00', 110), (2, 3, '2026-03-01 06:00+00', 999), (9, 1, '2026-03-01 06:00+00', 1);
SELECT :ROW_COUNT AS rows_stored;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 2, '2026-03-01 19:00+00', 111), (2, 3, '2026-03-01 08:00+00', 999), (9, 1, '2026-03-01 07:00+00', 1);
SELECT :ROW_COUNT AS rows_stored;
RESET SESSION AUTHORIZATION;

-- the operator: direct INSERT and the intake alike
SET SESSION AUTHORIZATION regress_intake_operator;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 20:00+00', 132), (2, 3, '2026-03-01 20:00+00', 130);
COPY prepay.reading_intake (site_id, meter_id, read_at, energy) FROM STDIN (FORMAT csv);
2,3,2026-03-01 21:00+00,140
1,2,2026-03-01 21:00+00,112
1,1,2026-03-01 21:00+00,133
\.
-- the replay again: silent
COPY prepay.reading_intake (site_id, meter_id, read_at, energy) FROM STDIN (FORMAT csv);
1,2,2026-03-01 21:00+00,112
1,1,2026-03-01 21:00+00,133
\.
-- a conflict at its own site is its business: warned and recorded
COPY prepay.reading_intake (site_id, meter_id, read_at, energy) FROM STDIN (FORMAT csv);
1,1,2026-03-01 21:00+00,134
\.
-- the operator sees its site's records (the conflicts), not site 2's
SELECT site_id, meter_id, reason, login FROM prepay.reading_refused ORDER BY refused_id;
RESET SESSION AUTHORIZATION;

-- in a transaction: each statement drains its own rows, and a statement
-- that fails (in a savepoint) leaves nothing behind either
SET SESSION AUTHORIZATION regress_intake_agent;
BEGIN;
COPY prepay.reading_intake (site_id, meter_id, read_at, energy) FROM STDIN (FORMAT csv);
1,1,2026-03-01 22:00+00,134
\.
SAVEPOINT s;
COPY prepay.reading_intake (site_id, meter_id, read_at, energy) FROM STDIN (FORMAT csv);
1,2,2026-03-01 22:00+00,113
1,2,2026-03-01 23:00+00,not a number
\.
ROLLBACK TO SAVEPOINT s;
COPY prepay.reading_intake (site_id, meter_id, read_at, energy) FROM STDIN (FORMAT csv);
1,2,2026-03-01 22:00+00,113
\.
COMMIT;
RESET SESSION AUTHORIZATION;

-- a cashier may not write readings, through the intake either
CREATE ROLE regress_intake_cashier LOGIN IN ROLE prepay_cashier;
INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_intake_cashier');
SELECT regress.probe('regress_intake_cashier', $$INSERT INTO prepay.reading_intake (site_id, meter_id, read_at, energy)
                                                VALUES (1, 1, '2026-03-02 00:00+00', 140)$$, NULL, true) AS cashier_intake;

-- every good row was stored and rated; site 2 has only its own reading,
-- unchanged, and no alarm; its staff see who tried (and a superuser the
-- row of site 9, which does not exist)
SELECT site_id, meter_id, read_at, energy, quarantine_reason FROM prepay.reading
 WHERE read_at >= '2026-03-01 18:00+00' OR site_id <> 1 ORDER BY site_id, meter_id, read_at;
SELECT meter_id, read_to, energy, amount, (SELECT ac.login FROM prepay.actor ac WHERE ac.site_id = l.site_id AND ac.actor_id = l.actor_id) AS created_by FROM prepay.ledger l
 WHERE kind = 'consumption' AND read_to >= '2026-03-01 18:00+00' ORDER BY entry_id;
SELECT site_id, meter_id, read_at, energy, reason, detail, login, acting_role
  FROM prepay.reading_refused WHERE reason = 'site_not_mapped' ORDER BY refused_id;
SELECT site_id, kind, meter_id FROM prepay.alarm WHERE site_id = 2;
SELECT count(*) AS left_in_intake FROM prepay.reading_intake;
SELECT prepay.balance(1, 1) AS north, prepay.balance(2, 2) AS south;

-- a superuser is not filtered: a reading of an unknown site is stored
-- and quarantined, as before
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (9, 1, '2026-03-01 06:00+00', 1);
SELECT site_id, quarantine_reason FROM prepay.reading WHERE site_id = 9;

DELETE FROM prepay.site_access WHERE grantee LIKE 'regress_intake_%';
DELETE FROM prepay.agent_access WHERE grantee LIKE 'regress_intake_%';
REVOKE USAGE ON SCHEMA regress FROM regress_intake_agent;
DROP ROLE regress_intake_agent, regress_intake_operator, regress_intake_cashier;
SELECT * FROM prepay.check_ledger();
