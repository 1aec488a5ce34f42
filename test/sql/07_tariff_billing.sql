-- The tariff engine in the rating trigger: TOU x tiers across a DST change
-- and a cycle start, the meter's own TOU registers, explain_charge,
-- simulate_bill, rerate after a back-dated price, water and heat, and the
-- daily basic charge of two-part tariffs.  Amounts are computed by hand in
-- the comments; the ledger check ends the file.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql
-- Berlin leaves summer time on Sunday 2026-10-25 at 03:00 CEST -> 02:00 CET.
INSERT INTO prepay.site (name, time_zone, low_balance_threshold, pretrip_threshold) VALUES ('Works', 'Europe/Berlin', 0, 0);
INSERT INTO prepay.tariff (site_id, name, unit) VALUES
    (1, 'tou ladder', 'kWh'), (1, 'flat', 'kWh'), (1, 'by registers', 'kWh'),
    (1, 'two-part capacity', 'kWh'), (1, 'two-part demand', 'kWh'), (1, 'water', 'm3');
-- peak 07:00-21:00 at 0.90, offpeak at 0.30; from 50 kWh a month on, 0.10 more
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 1, '2026-01-01 00:00+01', '{
  "periods": {"peak": 0.9, "offpeak": 0.3},
  "schedules": [{"switches": [["00:00", "offpeak"], ["07:00", "peak"], ["21:00", "offpeak"]]}],
  "tiers": {"cycle": "monthly", "blocks": [{"upto": 50, "add": 0}, {"add": 0.1}]}}');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 2, '2026-01-01 00:00+01', 0.5);
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 3, '2026-01-01 00:00+01', '{
  "periods": {"sharp": 1.2, "peak": 0.9, "flat": 0.6, "valley": 0.3}, "split": "registers",
  "schedules": [{"switches": [["00:00", "valley"], ["08:00", "peak"], ["11:00", "sharp"], ["13:00", "peak"],
                              ["18:00", "flat"], ["23:00", "valley"]]}]}');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 4, '2026-01-01 00:00+01', '{
  "periods": {"peak": 0.8, "offpeak": 0.4},
  "schedules": [{"switches": [["00:00", "offpeak"], ["08:00", "peak"], ["22:00", "offpeak"]]}],
  "basic": {"by": "capacity", "price": 30}}');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 5, '2026-01-01 00:00+01', '{
  "price": 0.6, "basic": {"by": "demand", "price": 40}}');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 6, '2026-01-01 00:00+01', '{
  "tiers": {"cycle": "yearly", "blocks": [{"upto": 10, "price": 3.45}, {"price": 4.83}]}}');
INSERT INTO prepay.meter (site_id, code, kind) VALUES
    (1, 'M1', 'electricity'), (1, 'M2', 'electricity'), (1, 'M3', 'electricity'),
    (1, 'M4', 'electricity'), (1, 'M5', 'electricity'), (1, 'W6', 'water'), (1, 'H7', 'heat');
SELECT prepay.open_account(1, 'A1', 'Bakery', 1);
SELECT prepay.open_account(1, 'A2', 'Florist', 2);
SELECT prepay.open_account(1, 'A3', 'Print shop', 3);
SELECT prepay.open_account(1, 'A4', 'Foundry', 4);
SELECT prepay.open_account(1, 'A5', 'Cold store', 5);
SELECT prepay.open_account(1, 'A6', 'Laundry', 6);
UPDATE prepay.account SET capacity_kva = 100 WHERE account_id = 4;
UPDATE prepay.account SET opened_at = '2026-09-01';          -- basic charges accrue only once open
UPDATE prepay.meter SET tariff_id = 2 WHERE meter_id = 7;   -- heat, priced per kWh on the flat tariff
SELECT prepay.recharge(1, a, 5000.00, 'bank', 'R-' || a) FROM generate_series(1, 6) AS a;

-- ---------------------------------------------------------------------
-- M1: TOU x tiers, across the end of summer time and a cycle start
-- ---------------------------------------------------------------------
SELECT prepay.attach_meter(1, 1, 1, 0, '2026-10-24 20:00+02');
-- 20:00 CEST to 08:00 CET is 13 real hours (02:00-03:00 happens twice),
-- 13 kWh: peak 20-21 1, offpeak 21-24 3, offpeak 00-07 8, peak 07-08 1:
-- 2 x 0.9 + 11 x 0.3 = 5.10, all in tier 1
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-10-25 08:00+01', 13);
-- next 24 hours, 48 kWh (2 an hour), 13 already used this month:
-- peak 08-21 26 kWh tier 1 (39 used) 23.40; offpeak 21-24 6 tier 1 (45) 1.80;
-- offpeak 00-07 14: 5 tier 1 (50) 1.50 + 9 tier 2 at 0.40 3.60;
-- peak 07-08 2 tier 2 at 1.00 2.00.  Total 32.30.
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-10-26 08:00+01', 61);
-- no consumption, then 2 kWh over 23:00-01:00 across the cycle start:
-- 1 offpeak in October's tier 2 (0.40) + 1 offpeak in November's tier 1 (0.30) = 0.70
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-10-31 23:00+01', 61);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-11-01 01:00+01', 63);
SELECT entry_id, amount, energy, exact_charge FROM prepay.ledger WHERE meter_id = 1 ORDER BY entry_id;
SELECT cycle_start, cycle_used FROM prepay.meter WHERE meter_id = 1;
-- the second charge, explained
SELECT read_from, register_from, read_to, register_to, multiplier, energy
  FROM prepay.explain_charge(1, (SELECT min(entry_id) + 1 FROM prepay.ledger WHERE meter_id = 1)) LIMIT 1;
SELECT piece_from, piece_to, period, tier, piece_energy, unit_price, amount, charged
  FROM prepay.explain_charge(1, (SELECT min(entry_id) + 1 FROM prepay.ledger WHERE meter_id = 1));
SELECT regress.try('SELECT * FROM prepay.explain_charge(1, 1)');
SELECT regress.try('SELECT * FROM prepay.explain_charge(1, 999)');

-- ---------------------------------------------------------------------
-- M3: the meter's own TOU registers
-- ---------------------------------------------------------------------
SELECT prepay.attach_meter(1, 3, 3, 100, '2026-10-01 00:00+00');
-- the attach reading had no registers: uniform, 02:00-03:00 local valley 1 x 0.3 = 0.30
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley)
VALUES (1, 3, '2026-10-01 01:00+00', 101, 10, 20, 30, 41);
-- registers moved 2 + 5 + 3 + 0 = 10 = the total: sharp 2 x 1.2 + peak 5 x 0.9
-- + flat 3 x 0.6 = 8.70, although the clock says valley
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley)
VALUES (1, 3, '2026-10-01 02:00+00', 111, 12, 25, 33, 41);
-- registers that do not add up to the total (0.5 vs 1): uniform, valley 1 x 0.3 = 0.30
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley)
VALUES (1, 3, '2026-10-01 03:00+00', 112, 12, 25, 33, 41.5);
SELECT l.amount, j.j->>'split' AS split, p.period, p.energy, p.amount AS exact
  FROM prepay.ledger l LEFT JOIN prepay.charge_pricing c ON c.site_id = l.site_id AND c.pricing_id = l.pricing_id
 CROSS JOIN LATERAL (SELECT prepay._pricing_record(l.pieces, c.tariff_id, c.multiplier, c.version_from, c.period, l.read_from, l.read_to, l.energy, l.exact_charge) AS j) j, prepay._pieces(j.j) p
 WHERE l.meter_id = 3 ORDER BY l.entry_id, p.period;

-- ---------------------------------------------------------------------
-- M2 on a flat 0.50: simulate another tariff, then re-rate after a
-- back-dated price
-- ---------------------------------------------------------------------
SELECT prepay.attach_meter(1, 2, 2, 0, '2026-10-01 00:00+00');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 2, '2026-10-02 00:00+00', 24);  -- 12.00
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 2, '2026-10-03 00:00+00', 72);  -- 24.00
-- under the TOU ladder (local 02:00 to 02:00): day 1, 24 kWh: peak 14 tier 1
-- 12.60, offpeak 10 tier 1 3.00; day 2, 48 kWh from 24 used: offpeak 02-07 10
-- tier 1 3.00, peak 07-21 28: 16 tier 1 14.40 + 12 tier 2 12.00, offpeak
-- 21-02 10 tier 2 4.00.  Total 49.00.
SELECT * FROM prepay.simulate_bill(1, 2, 1, '2026-10-01', '2026-11-01');
SELECT sum(amount) FROM prepay.simulate_bill(1, 2, 1, '2026-10-01', '2026-11-01');
SELECT regress.try($$SELECT * FROM prepay.simulate_bill(1, 99, 1, '2026-10-01', '2026-11-01')$$);
-- a price of 0.60 from 2026-10-02 12:00 is entered late
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 2, '2026-10-02 12:00+00', 0.6);
-- day 2 should have been 24 x 0.5 + 24 x 0.6 = 26.40, not 24.00: adjust -2.40
SELECT account_id, charges, charged, repriced, adjustment FROM prepay.rerate(1, 2, '2026-10-01', '2026-11-01');
-- running it again changes nothing
SELECT account_id, charges, charged, repriced, adjustment, entry_id FROM prepay.rerate(1, 2, '2026-10-01', '2026-11-01');
SELECT kind, amount, exact_charge, reason FROM prepay.ledger WHERE account_id = 2 AND kind = 'adjustment';
SELECT prepay.balance(1, 2);

-- ---------------------------------------------------------------------
-- water (m3, yearly tiers) and heat (kWh)
-- ---------------------------------------------------------------------
SELECT prepay.attach_meter(1, 6, 6, 0, '2026-10-01 00:00+00');
-- 12 m3: 10 x 3.45 + 2 x 4.83 = 44.16
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 6, '2026-10-02 00:00+00', 12);
SELECT prepay.attach_meter(1, 2, 7, 0, '2026-10-01 00:00+00');
-- 3 kWh of heat x 0.50 = 1.50
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 7, '2026-10-01 12:00+00', 3);
SELECT meter_id, amount FROM prepay.ledger WHERE meter_id IN (6, 7) ORDER BY entry_id;

-- ---------------------------------------------------------------------
-- two-part tariffs: the basic charge accrues daily
-- ---------------------------------------------------------------------
-- A5: 5 kWh in the first quarter hour is 20 kW; then 3 kWh over 45 minutes
-- (4 kW).  20 kW x 40.00 = 800.00 a month: day 1 floor(800 / 31) = 25.80
SELECT prepay.attach_meter(1, 5, 5, 0, '2026-10-01 00:00+00');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 5, '2026-10-01 00:15+00', 5);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 5, '2026-10-01 01:00+00', 8);
SELECT prepay.max_demand(1, 5, '2026-09-30 22:00+00', '2026-10-01 22:00+00');
-- A4: 100 kVA x 30.00 = 3000.00 a month; October has 31 days:
-- day 1 floor(3000 / 31) = 96.77, day 2 193.54 in all (96.77 more),
-- again day 2: nothing; day 31 catches up to 3000.00.
-- A5: 20 kW x 40.00 = 800.00 a month: day 1 floor(800 / 31) = 25.80; day 2
-- 51.61 (25.81 more); day 31 800.00
SELECT * FROM prepay.accrue_basic_charges(1, '2026-10-01');
SELECT * FROM prepay.accrue_basic_charges(1, '2026-10-02') WHERE account_id = 4;
SELECT * FROM prepay.accrue_basic_charges(1, '2026-10-02') WHERE account_id = 4;
SELECT * FROM prepay.accrue_basic_charges(1, '2026-10-31') WHERE account_id = 4;
SELECT account_id, sum(amount) FROM prepay.ledger WHERE kind = 'basic_charge' GROUP BY 1 ORDER BY 1;
SELECT regress.try($$SELECT * FROM prepay.accrue_basic_charges(99, '2026-10-01')$$);
-- re-rating a range without charges reports nothing and posts nothing
SELECT * FROM prepay.rerate(1, NULL, '2025-01-01', '2025-02-01');

-- every balance is what its ledger explains
SELECT * FROM prepay.check_ledger();
SELECT account_id, balance FROM prepay.account ORDER BY account_id;
