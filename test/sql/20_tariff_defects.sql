-- Issue 17, items 5 and 6: a register split needs only the registers of
-- the tariff's own periods, and its fallback is visible (pricing record and
-- a split_fallback alarm); a meter without max_per_hour gets a limit derived
-- from its kind and multiplier, so a 150 kW shop behind a 200/5 CT is
-- billed; readings quarantined under a limit that was too low are re-rated
-- once by prepay.release_quarantined.  Readings come from the agent's
-- login, the limit and the release from an operator's; every scenario
-- ends with the ledger check.
\set logins regress_td
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql

INSERT INTO prepay.site (name, time_zone, low_balance_threshold, pretrip_threshold) VALUES
    ('Plaza', 'Asia/Shanghai', 0, 0), ('Elsewhere', 'Asia/Shanghai', 0, 0);
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'peak and valley by registers'), (1, 'flat'), (2, 'flat');
-- peak 08:00-20:00 at 0.617, valley 20:00-08:00 at 0.307: half the day each
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 1, '2026-01-01 00:00+08', '{
  "periods": {"peak": 0.617, "valley": 0.307}, "split": "registers",
  "schedules": [{"switches": [["00:00", "valley"], ["08:00", "peak"], ["20:00", "valley"]]}]}');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES
    (1, 2, '2026-01-01 00:00+08', 0.8), (2, 3, '2026-01-01 00:00+08', 0.8);
INSERT INTO prepay.gateway (site_id, name, host, port, agent_id) VALUES (1, 'gw', '10.0.0.1', 502, 'td-1');

SELECT regress.create_logins('regress_td', 'operator', 'agent', 'cashier', 'reader', 'admin', 'tenant');
CREATE ROLE regress_td_other LOGIN IN ROLE prepay_operator;
INSERT INTO prepay.site_access (site_id, grantee) VALUES
    (1, 'regress_td_operator'), (1, 'regress_td_cashier'), (1, 'regress_td_reader'), (2, 'regress_td_other'),
    (1, 'regress_td_admin');
INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES (1, 'td-1', 'regress_td_agent');

-- meters 1-3 on the register tariff (a limit of 1,000 kWh/h set, so that only
-- the split is tested), 4 and 5 behind 200/5 CTs (multiplier 40): 4 without
-- a limit, 5 with the old default of 100 kWh/h set explicitly
INSERT INTO prepay.meter (site_id, code, multiplier, max_per_hour, tariff_id, gateway_id, unit_id) VALUES
    (1, 'TOU-PV', 1, 1000, 1, 1, 1), (1, 'TOU-GAP', 1, 1000, 1, 1, 2), (1, 'TOU-4REG', 1, 1000, 1, 1, 3);
INSERT INTO prepay.meter (site_id, code, multiplier, gateway_id, unit_id) VALUES (1, 'CT-SHOP', 40, 1, 4);
INSERT INTO prepay.meter (site_id, code, multiplier, max_per_hour, gateway_id, unit_id) VALUES (1, 'CT-BIG', 40, 100, 1, 5);
SELECT prepay.open_account(1, 'A' || n, 'Shop ' || n, CASE WHEN n <= 3 THEN 1 ELSE 2 END) FROM generate_series(1, 5) AS n;
SELECT prepay.recharge(1, n, 5000.00, 'bank', 'R-' || n) FROM generate_series(1, 5) AS n;
INSERT INTO prepay.tenant_access (site_id, account_id, grantee) VALUES (1, 5, 'regress_td_tenant');

-- ---------------------------------------------------------------------
-- item 5: peak and valley registers only (sharp and flat NULL)
-- ---------------------------------------------------------------------
-- the meters' first readings carry their registers (read while vacant)
SET SESSION AUTHORIZATION regress_td_agent;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley) VALUES
    (1, 1, '2026-03-02 00:00+08', 10000, NULL, 6000, NULL, 4000),
    (1, 2, '2026-03-02 00:00+08', 10000, NULL, 6000, NULL, 4000),
    (1, 3, '2026-03-02 00:00+08', 10000, 100, 6000, 2000, 1900);
RESET SESSION AUTHORIZATION;
SELECT prepay.attach_meter(1, m, m) FROM generate_series(1, 3) AS m;
SELECT meter_id, last_sharp, last_peak, last_flat, last_valley FROM prepay.meter WHERE meter_id <= 3 ORDER BY meter_id;

-- a day, 3,000 kWh: peak 2,000 x 0.617 + valley 1,000 x 0.307 = 1,541.00 by the
-- registers (the clock would say 1,500 + 1,500: 1,386.00)
SET SESSION AUTHORIZATION regress_td_agent;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley) VALUES
    (1, 1, '2026-03-03 00:00+08', 13000, NULL, 8000, NULL, 5000);
RESET SESSION AUTHORIZATION;
SELECT l.amount, l.energy, j.j->>'split' AS split, j.j->>'split_fallback' AS split_fallback
  FROM prepay.ledger l LEFT JOIN prepay.charge_pricing c ON c.site_id = l.site_id AND c.pricing_id = l.pricing_id
 CROSS JOIN LATERAL (SELECT prepay._pricing_record(l.pieces, c.tariff_id, c.multiplier, c.version_from, c.period, l.read_from, l.read_to, l.energy, l.exact_charge) AS j) j
 WHERE l.meter_id = 1 AND l.kind = 'consumption';
SELECT period, tier, piece_energy, unit_price, amount, charged FROM prepay.explain_charge(1,
    (SELECT entry_id FROM prepay.ledger WHERE meter_id = 1 AND kind = 'consumption')) ORDER BY period;
SELECT prepay.balance(1, 1);
SELECT count(*) AS split_fallback_alarms FROM prepay.alarm WHERE meter_id = 1 AND kind = 'split_fallback';
SELECT * FROM prepay.check_ledger();

-- ---------------------------------------------------------------------
-- item 5: a register of the tariff's periods is missing: the charge is
-- split by the clock, and the pricing record and an alarm say why
-- ---------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_td_agent;
-- no valley register in this reading: 3,000 kWh by the clock, 1,386.00
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley) VALUES
    (1, 2, '2026-03-03 00:00+08', 13000, NULL, 8000, NULL, NULL);
-- so the next one has nothing to subtract from: 240 kWh over 24 hours by the clock,
-- 120 x 0.617 + 120 x 0.307 = 110.88
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley) VALUES
    (1, 2, '2026-03-04 00:00+08', 13240, NULL, 8200, NULL, 5040);
-- and then both again: by the registers, 100 x 0.617 + 20 x 0.307 = 67.84
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley) VALUES
    (1, 2, '2026-03-04 12:00+08', 13360, NULL, 8300, NULL, 5060);
-- four registers on a peak and valley tariff, flat and sharp advancing too:
-- peak + valley (210) do not add up to the total (300), so by the clock:
-- valley 00:00-08:00 200 x 0.307 + peak 08:00-12:00 100 x 0.617 = 123.10
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley) VALUES
    (1, 3, '2026-03-02 12:00+08', 10300, 150, 6200, 2040, 1910);
RESET SESSION AUTHORIZATION;
SELECT l.meter_id, l.read_to, l.amount, j.j->>'split' AS split, j.j->>'split_fallback' AS split_fallback
  FROM prepay.ledger l LEFT JOIN prepay.charge_pricing c ON c.site_id = l.site_id AND c.pricing_id = l.pricing_id
 CROSS JOIN LATERAL (SELECT prepay._pricing_record(l.pieces, c.tariff_id, c.multiplier, c.version_from, c.period, l.read_from, l.read_to, l.energy, l.exact_charge) AS j) j
 WHERE l.meter_id IN (2, 3) AND l.kind = 'consumption' ORDER BY l.entry_id;
-- one active alarm per meter, naming the first such reading and why
SELECT meter_id, kind, detail FROM prepay.alarm WHERE kind = 'split_fallback' AND cleared_at IS NULL ORDER BY meter_id;
SELECT meter_id, last_sharp, last_peak, last_flat, last_valley FROM prepay.meter WHERE meter_id <= 3 ORDER BY meter_id;
-- rerate and simulate_bill keep each charge's split (registers or the clock)
SELECT account_id, charges, charged, repriced, adjustment FROM prepay.rerate(1, 2, '2026-03-01', '2026-04-01');
SELECT * FROM prepay.simulate_bill(1, 1, 1, '2026-03-01', '2026-04-01');
SELECT prepay.balance(1, 2), prepay.balance(1, 3);
SELECT * FROM prepay.check_ledger();

-- ---------------------------------------------------------------------
-- item 6: a 150 kW shop behind a 200/5 CT, no limit set: billed
-- ---------------------------------------------------------------------
SELECT meter_id, multiplier, max_per_hour FROM prepay.meter WHERE meter_id = 4;
SELECT prepay.attach_meter(1, 4, 4, 1000, '2026-03-01 00:00+08');
-- 150 kWh an hour is 3.75 on the register: 150 x 0.80 = 120.00 an hour
SET SESSION AUTHORIZATION regress_td_agent;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 4, '2026-03-01 01:00+08', 1003.75), (1, 4, '2026-03-01 02:00+08', 1007.50),
    (1, 4, '2026-03-01 03:00+08', 1011.25);
-- a register leaping 200 (8,000 kWh) in an hour is beyond the derived limit of
-- 100 x 40 = 4,000 kWh/h: quarantined, and the next reading is rated against
-- the last good one (2 hours, 300 kWh, 240.00)
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 4, '2026-03-01 04:00+08', 1211.25);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 4, '2026-03-01 05:00+08', 1018.75);
RESET SESSION AUTHORIZATION;
SELECT read_at, energy, quarantine_reason, quarantine_detail FROM prepay.reading WHERE meter_id = 4 ORDER BY read_at;
SELECT read_from, read_to, energy, amount FROM prepay.ledger WHERE meter_id = 4 AND kind = 'consumption' ORDER BY entry_id;
SELECT prepay.balance(1, 4);
SELECT * FROM prepay.check_ledger();

-- ---------------------------------------------------------------------
-- item 6: readings quarantined under a limit that was too low, re-rated
-- once after it is raised
-- ---------------------------------------------------------------------
SELECT prepay.attach_meter(1, 5, 5, 500, '2026-03-02 00:00+08');
SET SESSION AUTHORIZATION regress_td_agent;
-- 150 kWh an hour against the 100 set: every reading an impossible jump;
-- one goes backwards and one has no register (quarantined for other reasons)
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 5, '2026-03-02 01:00+08', 503.75), (1, 5, '2026-03-02 02:00+08', 507.50),
    (1, 5, '2026-03-02 02:30+08', 400), (1, 5, '2026-03-02 03:00+08', 511.25),
    (1, 5, '2026-03-02 03:30+08', NULL), (1, 5, '2026-03-02 04:00+08', 515.00);
RESET SESSION AUTHORIZATION;
SELECT read_at, energy, quarantine_reason FROM prepay.reading WHERE meter_id = 5 ORDER BY read_at;
SELECT prepay.balance(1, 5), (SELECT count(*) FROM prepay.ledger WHERE meter_id = 5) AS charges;

-- who may release: operators and administrators of the site only (a probe
-- is rolled back)
SELECT login, regress.probe(login, 'SELECT count(*) FROM prepay.release_quarantined(1, 5)', NULL, true) AS outcome
  FROM unnest(ARRAY['regress_td_admin', 'regress_td_cashier', 'regress_td_reader', 'regress_td_tenant',
                    'regress_td_agent', 'regress_td_other']) AS login;
SELECT regress.try('SELECT * FROM prepay.release_quarantined(1, 999)');
SELECT regress.try('SELECT * FROM prepay.release_quarantined(1, NULL)');
SELECT read_at, quarantine_reason FROM prepay.reading WHERE meter_id = 5 ORDER BY read_at;

SET SESSION AUTHORIZATION regress_td_operator;
-- raised, but not enough (120): released, and quarantined again with the new limit
UPDATE prepay.meter SET max_per_hour = 120 WHERE site_id = 1 AND meter_id = 5;
SELECT * FROM prepay.release_quarantined(1, 5);
-- no limit: derived, 4,000 kWh/h; each hour is charged once, 120.00
UPDATE prepay.meter SET max_per_hour = NULL WHERE site_id = 1 AND meter_id = 5;
SELECT * FROM prepay.release_quarantined(1, 5);
-- again: nothing left to rate
SELECT * FROM prepay.release_quarantined(1, 5);
RESET SESSION AUTHORIZATION;
SELECT read_at, energy, quarantine_reason FROM prepay.reading WHERE meter_id = 5 ORDER BY read_at;
SELECT read_from, read_to, energy, amount, balance_after FROM prepay.ledger WHERE meter_id = 5 ORDER BY entry_id;
SELECT prepay.balance(1, 5);
SELECT meter_id, last_read_at, last_energy FROM prepay.meter WHERE meter_id = 5;
-- the readings that came after are rated against the released ones
SET SESSION AUTHORIZATION regress_td_agent;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 5, '2026-03-02 05:00+08', 518.75);
RESET SESSION AUTHORIZATION;
SELECT read_from, read_to, energy, amount FROM prepay.ledger WHERE meter_id = 5 ORDER BY entry_id DESC LIMIT 1;

-- an impossible jump at or before the last rated reading is left as it is:
-- the later reading's interval counted its consumption
SET SESSION AUTHORIZATION regress_td_operator;
SELECT read_at, outcome, detail, charged FROM prepay.release_quarantined(1, 4);
RESET SESSION AUTHORIZATION;
SELECT read_at, quarantine_reason FROM prepay.reading WHERE meter_id = 4 AND quarantine_reason IS NOT NULL;

-- every call is audited: who, the limit and state before, what it did
SELECT login, acting_role, action, object, object_key, before_values, after_values
  FROM prepay.audit WHERE action = 'release_quarantined' ORDER BY audit_id;
SELECT login, object, before_values->>'max_per_hour' AS limit_before, after_values->>'max_per_hour' AS limit_after
  FROM prepay.audit WHERE object = 'meter' AND action = 'update' AND object_key->>'meter_id' = '5'
   AND before_values->'max_per_hour' IS DISTINCT FROM after_values->'max_per_hour' ORDER BY audit_id;
SELECT * FROM prepay.check_ledger();

-- ---------------------------------------------------------------------
-- the default: the column is NULL for new meters (a derived limit);
-- replace_meter keeps it
-- ---------------------------------------------------------------------
SELECT column_default, is_nullable FROM information_schema.columns
 WHERE table_schema = 'prepay' AND table_name = 'meter' AND column_name = 'max_per_hour';
SELECT prepay.replace_meter(1, 4, 1018.75, 'CT-SHOP-2', 0, '2026-03-01 06:00+08');
SELECT meter_id, code, multiplier, max_per_hour FROM prepay.meter WHERE code LIKE 'CT-SHOP%' ORDER BY meter_id;
SELECT * FROM prepay.check_ledger();

SET client_min_messages = warning;
DROP ROLE regress_td_operator, regress_td_agent, regress_td_cashier, regress_td_reader, regress_td_other,
    regress_td_admin, regress_td_tenant;
RESET client_min_messages;
