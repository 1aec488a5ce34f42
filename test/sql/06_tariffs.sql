-- The tariff engine: definitions that are refused, and prepay.rate() for
-- every kind of tariff, cut at midnight, period switches, day types,
-- seasons, tier thresholds, cycle starts, price changes and a DST change.
-- Every amount is computed by hand in the comments.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql
-- New York changes to daylight time on Sunday 2026-03-08 at 02:00 local.
INSERT INTO prepay.site (name, time_zone) VALUES ('Harbor Mall', 'America/New_York');
INSERT INTO prepay.site (name, time_zone) VALUES ('Campus', 'Asia/Shanghai');

-- ---------------------------------------------------------------------
-- refused definitions: each names what is wrong (SQLSTATE PY015)
-- ---------------------------------------------------------------------
SELECT regress.try($$SELECT prepay.tariff_check('{"periods": {"peak": 1, "valley": 0.4},
  "schedules": [{"switches": [["00:00", "valley"], ["08:00", "peak"], ["08:00", "valley"]]}]}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"periods": {"peak": 1, "valley": 0.4},
  "schedules": [{"switches": [["06:00", "valley"], ["08:00", "peak"]]}]}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"periods": {"peak": 1, "valley": 0.4},
  "schedules": [{"switches": [["00:00", "valley"], ["08:00", "sharp"]]}]}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"periods": {"peak": 1, "valley": -0.4},
  "schedules": [{"switches": [["00:00", "valley"], ["08:00", "peak"]]}]}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"price": 0.5, "tiers": {"cycle": "monthly",
  "blocks": [{"upto": 200, "add": 0}, {"upto": 100, "add": 0.1}, {"add": 0.3}]}}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"price": 0.5, "tiers": {"cycle": "monthly",
  "blocks": [{"upto": 200, "add": 0}, {"upto": 400, "add": 0.1}]}}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"periods": {"peak": 1, "valley": 0.4},
  "schedules": [{"months": [1,2,3,4,5,6,7,8,9,10,11,12], "switches": [["00:00", "valley"]]},
                {"months": [7, 8], "days": ["weekday"], "switches": [["00:00", "peak"]]}]}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"periods": {"peak": 1, "valley": 0.4},
  "schedules": [{"days": ["weekday"], "switches": [["00:00", "valley"], ["08:00", "peak"]]}]}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"price": 0.5, "prise": 0.6}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"price": 0.1234567}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"periods": {"peak": 1, "valley": 0.4}}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"periods": {"x": 1}, "split": "registers"}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"price": 1, "basic": {"by": "floor", "price": 3}}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"periods": ["peak", "peak"],
  "schedules": [{"switches": [["00:00", "peak"]]}], "tiers": {"cycle": "monthly", "blocks": [{"price": 1}]}}')$$);
SELECT regress.try($$SELECT prepay.tariff_check('{"periods": {"": 1}}')$$);
-- the trigger refuses the same on INSERT
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'broken');
SELECT regress.try($$INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition)
  VALUES (1, 1, '2026-01-01', '{"periods": {"peak": 1}, "schedules": [{"switches": [["00:00", "offpeak"]]}]}')$$);
SELECT split_part(regress.try($$INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from) VALUES (1, 1, '2026-01-01')$$), ' | ', 1);

-- ---------------------------------------------------------------------
-- time of use: valley 22:00-08:00, peak 08:00-12:00, flat 12:00-22:00
-- ---------------------------------------------------------------------
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'tou');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 2, '2026-01-01 00:00-05', '{
  "periods": {"peak": 1.000000, "flat": 0.700000, "valley": 0.400000},
  "schedules": [{"switches": [["00:00", "valley"], ["08:00", "peak"], ["12:00", "flat"], ["22:00", "valley"]]}]}');
-- 12 kWh over 21:00-09:00 local (EST), 1 kWh an hour:
-- flat 21-22 1 x 0.7 = 0.70; valley 22-24 2 x 0.4 = 0.80 and 00-08 8 x 0.4
-- = 3.20 (cut at midnight); peak 08-09 1 x 1.0 = 1.00.  Total 5.70.
SELECT piece_from, piece_to, period, tier, energy, unit_price, amount
  FROM prepay.rate(1, 2, '2026-03-02 21:00-05', '2026-03-03 09:00-05', 12.000);
SELECT sum(amount) FROM prepay.rate(1, 2, '2026-03-02 21:00-05', '2026-03-03 09:00-05', 12.000);
-- across the DST change: 22:00 EST Saturday to 10:00 EDT Sunday is 11 real
-- hours (02:00-03:00 never happens), 11 kWh: valley 22-24 2 kWh, valley
-- 00-08 7 kWh (7 real hours), peak 08-10 2 kWh: 9 x 0.4 + 2 x 1.0 = 5.60
SELECT piece_from, piece_to, period, energy, amount
  FROM prepay.rate(1, 2, '2026-03-07 22:00-05', '2026-03-08 10:00-04', 11.000);
SELECT sum(amount) FROM prepay.rate(1, 2, '2026-03-07 22:00-05', '2026-03-08 10:00-04', 11.000);
-- uniform spread in whole Wh: 1 kWh over three hours, all valley, split at
-- midnight: 0.333 + 0.667 (cumulative flooring keeps the sum exact)
SELECT period, energy FROM prepay.rate(1, 2, '2026-03-02 23:00-05', '2026-03-03 02:00-05', 1.000);

-- ---------------------------------------------------------------------
-- day types and seasons: in July and August weekdays have a sharp period
-- 11:00-13:00; weekends are flat all day; holidays have their own
-- schedule (valley all day); the site's calendar marks them
-- ---------------------------------------------------------------------
INSERT INTO prepay.tariff (site_id, name) VALUES (2, 'seasonal');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (2, 3, '2026-01-01 00:00+08', '{
  "periods": {"sharp": 1.500000, "peak": 1.000000, "flat": 0.700000, "valley": 0.300000},
  "schedules": [
    {"months": [7, 8], "days": ["weekday"],
     "switches": [["00:00", "valley"], ["08:00", "peak"], ["11:00", "sharp"], ["13:00", "peak"], ["18:00", "flat"], ["23:00", "valley"]]},
    {"months": [1, 2, 3, 4, 5, 6, 9, 10, 11, 12], "days": ["weekday"],
     "switches": [["00:00", "valley"], ["08:00", "peak"], ["18:00", "flat"], ["23:00", "valley"]]},
    {"days": ["weekend"], "switches": [["00:00", "flat"]]},
    {"days": ["holiday"], "switches": [["00:00", "valley"]]}]}');
INSERT INTO prepay.holiday (site_id, day, kind, name) VALUES
    (2, '2026-10-01', 'holiday', 'National Day'),
    (2, '2026-10-10', 'workday', 'Saturday worked for the Golden Week');
-- Wednesday 2026-07-15 10:00-14:00, 4 kWh: peak 1 + sharp 2 + peak 1:
-- 1.0 + 3.0 + 1.0 = 5.00
SELECT period, energy, amount FROM prepay.rate(2, 3, '2026-07-15 10:00+08', '2026-07-15 14:00+08', 4.000);
-- the same hours on Wednesday 2026-09-16 (no sharp outside summer): 4 x 1.0 = 4.00
SELECT period, energy, amount FROM prepay.rate(2, 3, '2026-09-16 10:00+08', '2026-09-16 14:00+08', 4.000);
-- Saturday 2026-07-18: flat all day: 4 x 0.7 = 2.80
SELECT period, energy, amount FROM prepay.rate(2, 3, '2026-07-18 10:00+08', '2026-07-18 14:00+08', 4.000);
-- Thursday 2026-10-01 is a holiday: valley: 4 x 0.3 = 1.20
SELECT period, energy, amount FROM prepay.rate(2, 3, '2026-10-01 10:00+08', '2026-10-01 14:00+08', 4.000);
-- Saturday 2026-10-10 is worked: priced as a weekday (peak): 4 x 1.0 = 4.00
SELECT period, energy, amount FROM prepay.rate(2, 3, '2026-10-10 10:00+08', '2026-10-10 14:00+08', 4.000);
-- Friday 23:00 to Saturday 01:00: valley 1 x 0.3 then weekend flat 1 x 0.7 = 1.00
SELECT piece_from, period, energy, amount FROM prepay.rate(2, 3, '2026-09-18 23:00+08', '2026-09-19 01:00+08', 2.000);

-- ---------------------------------------------------------------------
-- tiers: monthly cycle from the 1st; up to 100 kWh 0.50, up to 200 kWh
-- 0.60, above 0.80 (graduated)
-- ---------------------------------------------------------------------
INSERT INTO prepay.tariff (site_id, name) VALUES (2, 'household');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (2, 4, '2026-01-01 00:00+08', '{
  "tiers": {"cycle": "monthly", "start_day": 1,
            "blocks": [{"upto": 100, "price": 0.5}, {"upto": 200, "price": 0.6}, {"price": 0.8}]}}');
-- 90 kWh used this cycle, 30 more: 10 x 0.5 + 20 x 0.6 = 17.00
SELECT tier, energy, unit_price, amount FROM prepay.rate(2, 4, '2026-01-20 00:00+08', '2026-01-21 00:00+08', 30.000, 90.000);
-- 190 used, 24 kWh over Jan 31 12:00 - Feb 1 12:00: 12 kWh in January
-- (10 x 0.6 + 2 x 0.8 = 7.60), then February starts a new cycle: 12 x 0.5
-- = 6.00.  Total 13.60.
SELECT piece_from, tier, energy, unit_price, amount
  FROM prepay.rate(2, 4, '2026-01-31 12:00+08', '2026-02-01 12:00+08', 24.000, 190.000);
SELECT sum(amount) FROM prepay.rate(2, 4, '2026-01-31 12:00+08', '2026-02-01 12:00+08', 24.000, 190.000);

-- tier x TOU: each tier has its own TOU prices; yearly cycle from March 1
INSERT INTO prepay.tariff (site_id, name) VALUES (2, 'ladder tou');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (2, 5, '2026-01-01 00:00+08', '{
  "periods": ["peak", "valley"],
  "schedules": [{"switches": [["00:00", "valley"], ["08:00", "peak"], ["22:00", "valley"]]}],
  "tiers": {"cycle": "yearly", "start_month": 3, "start_day": 1,
            "blocks": [{"upto": 2760, "prices": {"peak": 0.6, "valley": 0.3}},
                       {"upto": 4800, "prices": {"peak": 0.65, "valley": 0.35}},
                       {"prices": {"peak": 0.9, "valley": 0.6}}]}}');
-- 2755 used; 06:00-10:00, 8 kWh: valley 06-08 4 kWh: 4 x 0.30 = 1.20 (2759);
-- peak 08-10 4 kWh: 1 x 0.60 + 3 x 0.65 = 2.55.  Total 3.75.
SELECT period, tier, energy, unit_price, amount FROM prepay.rate(2, 5, '2026-05-06 06:00+08', '2026-05-06 10:00+08', 8.000, 2755.000);

-- "add": tiers add a surcharge to the TOU prices
INSERT INTO prepay.tariff (site_id, name) VALUES (2, 'ladder add');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (2, 6, '2026-01-01 00:00+08', '{
  "periods": {"peak": 0.6, "valley": 0.3},
  "schedules": [{"switches": [["00:00", "valley"], ["08:00", "peak"], ["22:00", "valley"]]}],
  "tiers": {"cycle": "monthly", "blocks": [{"upto": 10, "add": 0}, {"add": 0.3}]}}');
-- 8 used; 08:00-12:00 4 kWh peak: 2 x 0.6 + 2 x 0.9 = 3.00
SELECT period, tier, energy, unit_price, amount FROM prepay.rate(2, 6, '2026-05-06 08:00+08', '2026-05-06 12:00+08', 4.000, 8.000);

-- ---------------------------------------------------------------------
-- price versions: a flat price changes at 04:00 of a 10-hour interval:
-- 4 x 0.5 + 6 x 0.8 = 6.80
-- ---------------------------------------------------------------------
INSERT INTO prepay.tariff (site_id, name) VALUES (2, 'repriced');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES
    (2, 7, '2026-01-01 00:00+08', 0.5), (2, 7, '2026-04-01 04:00+08', 0.8);
SELECT piece_from, version_from, energy, unit_price, amount FROM prepay.rate(2, 7, '2026-04-01 00:00+08', '2026-04-01 10:00+08', 10.000);

-- water: per m3, tiered yearly (from January): 0-180 m3 3.45, 180-260
-- 4.83, above 5.83.  170 used, 20 m3: 10 x 3.45 + 10 x 4.83 = 82.80
INSERT INTO prepay.tariff (site_id, name, unit) VALUES (2, 'water', 'm3');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (2, 8, '2026-01-01 00:00+08', '{
  "tiers": {"cycle": "yearly", "blocks": [{"upto": 180, "price": 3.45}, {"upto": 260, "price": 4.83}, {"price": 5.83}]}}');
SELECT tier, energy, unit_price, amount FROM prepay.rate(2, 8, '2026-06-01 00:00+08', '2026-07-01 00:00+08', 20.000, 170.000);

-- errors of rate()
SELECT regress.try($$SELECT * FROM prepay.rate(2, 99, '2026-06-01', '2026-06-02', 1)$$);
SELECT regress.try($$SELECT * FROM prepay.rate(2, 8, '2026-06-02', '2026-06-01', 1)$$);
SELECT regress.try($$SELECT * FROM prepay.rate(2, 8, '2026-06-01', '2026-06-02', -1)$$);
