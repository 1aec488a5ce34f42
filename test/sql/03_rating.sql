-- Rating: consumption x multiplier x flat price, split at price changes,
-- carry-forward rounding to cents, duplicates ignored, batches of any shape.
-- Every amount below is computed by hand in the comments.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql
INSERT INTO prepay.site (name, low_balance_threshold, pretrip_threshold) VALUES ('Plaza', 0, 0);
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'shops'), (1, 'cold store');
INSERT INTO prepay.tariff_version VALUES
    (1, 1, '2026-01-01', 0.6), (1, 1, '2026-03-01 12:00+00', 0.8), (1, 2, '2026-01-01', 1.2);
INSERT INTO prepay.meter (site_id, code, multiplier) VALUES (1, 'M1', 1), (1, 'M2', 40), (1, 'M3', 1), (1, 'M4', 1);
INSERT INTO prepay.meter (site_id, code, tariff_id) VALUES (1, 'M5', 2);
SELECT prepay.open_account(1, 'A1', 'Supermarket', 1);
SELECT prepay.open_account(1, 'A2', 'Bank branch', 1, p_mode => 'postpaid');
SELECT prepay.attach_meter(1, 1, 1, 100.000, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 1, 2, 50.000, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 2, 4, 0, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 1, 5, 0, '2026-03-01 00:00+00');
SELECT prepay.recharge(1, 1, 1000.00, 'bank', 'B-1');

-- M1: 10.010 kWh x 0.6 = 6.006: posts 6.00, carries 0.006
-- M2: 0.250 x 40 = 10 kWh x 0.6 = 6.00
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-03-01 06:00+00', 110.010),
    (1, 2, '2026-03-01 06:00+00', 50.250);
-- M1 06:00-18:00, 12 kWh spread uniformly, price 0.6 until 12:00 then 0.8:
-- 6 x 0.6 + 6 x 0.8 = 8.400, + carry 0.006 = 8.406: posts 8.40, carries 0.006
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 18:00+00', 122.010);
-- three tiny readings in one statement, given out of time order:
-- 0.011 x 0.8 = 0.0088 each; carry 0.006 -> 0.0148 posts 0.01 (0.0048)
-- -> 0.0136 posts 0.01 (0.0036) -> 0.0124 posts 0.01 (0.0024)
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-03-01 21:00+00', 122.043),
    (1, 1, '2026-03-01 19:00+00', 122.021),
    (1, 1, '2026-03-01 20:00+00', 122.032);
-- zero consumption: no ledger entry
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 22:00+00', 122.043);
-- M5 has its own tariff: 2.5 x 1.2 = 3.00
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 5, '2026-03-01 06:00+00', 2.5);

SELECT entry_id, meter_id, read_from, read_to, energy, exact_charge, amount, balance_after
  FROM prepay.ledger WHERE kind = 'consumption' ORDER BY entry_id;
SELECT meter_id, last_read_at, last_energy, charge_carry FROM prepay.meter ORDER BY meter_id;
-- 1000 - 6.00 - 6.00 - 8.40 - 0.03 - 3.00 = 976.57
SELECT prepay.balance(1, 1);
-- posted + carry = exact, per meter
SELECT l.meter_id, sum(l.exact_charge) AS exact, -sum(l.amount) AS posted, m.charge_carry,
       sum(l.exact_charge) = -sum(l.amount) + m.charge_carry AS adds_up
  FROM prepay.ledger l JOIN prepay.meter m USING (site_id, meter_id)
 GROUP BY l.meter_id, m.charge_carry ORDER BY 1;

-- duplicates are skipped by INSERT and by COPY, and never charged twice
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 06:00+00', 110.010);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 06:00+00', 999.999);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
VALUES (1, 2, '2026-03-01 09:00+00', 50.500), (1, 2, '2026-03-01 09:00+00', 50.500)
    ON CONFLICT DO NOTHING;
COPY prepay.reading (site_id, meter_id, read_at, energy) FROM stdin;
1	2	2026-03-01 06:00:00+00	50.250
1	2	2026-03-01 12:00:00+00	50.750
1	2	2026-03-01 12:00:00+00	50.750
\.
-- M2 06:00-09:00: 0.25 x 40 = 10 kWh x 0.6 = 6.00; 09:00-12:00: 10 kWh x 0.6 = 6.00
SELECT meter_id, read_to, energy, amount FROM prepay.ledger
 WHERE kind = 'consumption' AND meter_id = 2 ORDER BY entry_id;
SELECT count(*) AS m2_readings FROM prepay.reading WHERE meter_id = 2;

-- a vacant meter: readings are rated (state advances), nothing is charged
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 3, '2026-03-01 00:00+00', 5), (1, 3, '2026-03-01 06:00+00', 7);
SELECT meter_id, last_read_at, last_energy FROM prepay.meter WHERE meter_id = 3;
SELECT count(*) AS vacant_charges FROM prepay.ledger WHERE meter_id = 3;

-- postpaid: charged (4 x 0.6 = 2.40), runs below zero, no alarm ladder, no trip
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 4, '2026-03-01 06:00+00', 4);
SELECT account_id, balance, alarm_level FROM prepay.account WHERE account_id = 2;
SELECT count(*) AS commands FROM prepay.command;

-- a reading may report the relay state; the meter remembers the latest
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, relay_state, power) VALUES
    (1, 5, '2026-03-01 07:00+00', 2.5, 'closed', 0.000);
SELECT meter_id, relay_state, relay_state_at FROM prepay.meter WHERE meter_id = 5;

-- one batch across several meters and accounts
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
SELECT 1, m, '2026-03-02 00:00+00'::timestamptz, e
  FROM (VALUES (1, 130.043), (2, 51.000), (4, 10), (5, 4.5)) v(m, e);
-- M1 22:00-24:00: 8 x 0.8 = 6.40 (+ carry 0.0024); M2 12:00-24:00: 0.25 x 40 = 10 x 0.8 = 8.00;
-- M4 06:00-24:00: 6 kWh over 18 h, 2 before 12:00 x 0.6 + 4 after x 0.8 = 4.40; M5: 2 x 1.2 = 2.40
-- A1: 976.57 - 6.00 - 6.00 (M2 earlier) - 6.40 - 8.00 - 2.40 = 947.77; A2: -2.40 - 4.40 = -6.80
SELECT meter_id, read_from, read_to, energy, exact_charge, amount FROM prepay.ledger
 WHERE read_to = '2026-03-02 00:00+00' ORDER BY meter_id;
SELECT account_id, balance FROM prepay.account ORDER BY 1;

-- the receipt is stamped in seconds after read_at, from the transaction's
-- start (now()); a value the writer gave is kept; a time beyond the integer
-- range is held at its bound
BEGIN;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
VALUES (1, 3, now() - interval '2 hours 30.9 seconds', 7), (1, 3, '-infinity', 7);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, received_after_seconds)
VALUES (1, 3, now() - interval '1 hour', 7, 42);
SELECT read_at = '-infinity' AS far_past, received_after_seconds,
       read_at + received_after_seconds * interval '1 second' <= now() AS received_by_now
  FROM prepay.reading WHERE meter_id = 3 AND (read_at > '2026-04-01' OR read_at = '-infinity')
 ORDER BY read_at;
ROLLBACK;
SELECT * FROM prepay.check_ledger();
