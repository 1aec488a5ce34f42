-- Bad readings are stored with a reason, raise an alarm, are never charged
-- and never fail the rest of their batch.
\set site Park \set low 0 \set pretrip 0 \set tariff industrial \set price 1.0
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/site.psql
INSERT INTO prepay.meter (site_id, code, multiplier, max_per_hour) VALUES
    (1, 'M1', 1, 100), (1, 'CT1', 40, 100), (1, 'M3', 1, 100);
SELECT prepay.open_account(1, 'F1', 'Factory', 1);
SELECT prepay.attach_meter(1, 1, 1, 1000, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 1, 2, 10, '2026-03-01 00:00+00');
SELECT prepay.recharge(1, 1, 10000, 'bank', 'B-1');

-- one batch: two good readings and one of every kind of bad one
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-03-01 01:00+00', 1010),                        -- good: 10 kWh
    (1, 999, '2026-03-01 01:00+00', 5),                         -- unknown meter
    (1, 2, '2026-03-01 01:00+00', 13),                          -- 3 x 40 = 120 kWh in 1 h > 100: impossible jump
    (1, 3, now() + interval '1 day', 1),                        -- clock ahead
    (1, 3, '2026-03-01 01:00+00', NULL),                        -- no energy
    (1, 3, '2026-03-01 02:00+00', -1),                          -- negative energy
    (1, 2, '2026-03-01 02:00+00', 12);                          -- good: 2 x 40 = 80 kWh in 2 h
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-03-01 02:00+00', 1005),                        -- counter went backwards
    (1, 1, '2026-03-01 00:30+00', 1004),                        -- older than the last rated reading
    (1, 1, '2026-03-01 03:00+00', 1020);                        -- good: 10 kWh since 01:00
SELECT meter_id, CASE WHEN read_at > now() THEN 'tomorrow' ELSE read_at::text END AS read_at, energy,
       quarantine_reason, CASE WHEN read_at > now() THEN 'ahead' ELSE quarantine_detail END AS detail
  FROM prepay.reading WHERE quarantine_reason IS NOT NULL ORDER BY meter_id, read_at;
SELECT meter_id, read_from, read_to, energy, amount FROM prepay.ledger WHERE kind = 'consumption' ORDER BY entry_id;
SELECT meter_id, last_read_at, last_energy FROM prepay.meter ORDER BY meter_id;

-- one active bad_reading alarm per meter, however many bad readings
SELECT kind, meter_id, cleared_at IS NULL AS active FROM prepay.alarm ORDER BY meter_id;

-- replaying the quarantined readings changes nothing
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-03-01 02:00+00', 1005), (1, 999, '2026-03-01 01:00+00', 5);
SELECT count(*) AS readings, count(quarantine_reason) AS quarantined FROM prepay.reading;
SELECT count(*) AS alarms FROM prepay.alarm;

-- a reading without its key cannot be stored at all: refused, not quarantined
SELECT split_part(regress.try($$INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, NULL, '2026-03-01 04:00+00', 1)$$), ' | ', 1);
SELECT split_part(regress.try($$INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, NULL, 1)$$), ' | ', 1);
-- a value that is not a number is refused by its type
SELECT regress.try($$INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 04:00+00', 'lots')$$);

-- a tariff without a price quarantines the reading, not the batch; once a
-- price exists the next reading charges the whole interval (03:00-06:00:
-- 1021 -> 1023 = 3 kWh x 2.0 = 6.00)
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'unpriced');
UPDATE prepay.meter SET tariff_id = 2 WHERE meter_id = 1;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-03-01 05:00+00', 1021), (1, 2, '2026-03-01 05:00+00', 12.25);
SELECT meter_id, read_at, quarantine_reason, quarantine_detail FROM prepay.reading WHERE read_at = '2026-03-01 05:00+00';
INSERT INTO prepay.tariff_version VALUES (1, 2, '2026-01-01', 2.0);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 06:00+00', 1023);
SELECT meter_id, read_from, read_to, energy, amount FROM prepay.ledger WHERE read_to >= '2026-03-01 05:00+00' ORDER BY entry_id;

SELECT prepay.balance(1, 1);
SELECT * FROM prepay.check_ledger();
