-- test/upgrade/fill.sql: the state an operator's database holds before an
-- upgrade.  test/t/200_upgrade.pl runs it on the previous release (then
-- ALTER EXTENSION prepay UPDATE) and on a fresh install of this release,
-- and compares what test/upgrade/exercise.sql prints on both.  Every time
-- is explicit, so both databases hold the same rows.
SET timezone = 'Asia/Shanghai';
SET datestyle = 'ISO';
INSERT INTO prepay.site (name, time_zone) VALUES ('Riverside Plaza', 'Asia/Shanghai');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'shops'), (1, 'day and night');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price)
VALUES (1, 1, '2026-03-01 00:00+08', 0.583);
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 2, '2026-01-01 00:00+08', '{
  "periods": {"day": 0.9, "night": 0.3},
  "schedules": [{"switches": [["00:00", "night"], ["07:00", "day"], ["21:00", "night"]]}]}');
INSERT INTO prepay.meter (site_id, code, building, floor, room, multiplier)
VALUES (1, 'DDSY-0001', 'A', '1', '101', 1), (1, 'DTSY-0002', 'A', '1', '102', 40),
       (1, 'DDSY-0003', 'B', '2', '201', 1);
SELECT prepay.open_account(1, 'A-101', 'Noodle shop', 1, p_phone => '13800000000');
SELECT prepay.open_account(1, 'A-102', 'Bakery', 2);
SELECT prepay.open_account(1, 'B-201', 'Tailor', 1, 'postpaid');
SELECT prepay.attach_meter(1, 1, 1, p_initial_energy => 1000.00, p_at => '2026-03-01 00:00+08');
SELECT prepay.attach_meter(1, 2, 2, p_initial_energy => 20.00, p_at => '2026-03-01 00:00+08');
SELECT prepay.attach_meter(1, 3, 3, p_initial_energy => 0, p_at => '2026-03-01 00:00+08');
SELECT prepay.recharge(1, 1, 30.00, 'wechat', 'WX-20260301-0001');
SELECT prepay.recharge(1, 1, 30.00, 'wechat', 'WX-20260301-0001');
SELECT prepay.recharge(1, 2, 500.00, 'cash', 'RCPT-1');
-- a payment posted by a second login (the roles are the cluster's: made once)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'upgrade_clerk') THEN
        CREATE ROLE upgrade_clerk SUPERUSER;
    END IF;
END $$;
SET SESSION AUTHORIZATION upgrade_clerk;
SELECT prepay.recharge(1, 2, 20.00, 'cash', 'RCPT-2');
RESET SESSION AUTHORIZATION;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-03-01 08:00+08', 1020.00), (1, 1, '2026-03-01 12:00+08', 1050.00),
    (1, 2, '2026-03-01 20:00+08', 20.10), (1, 2, '2026-03-02 08:00+08', 20.40),
    (1, 3, '2026-03-01 12:00+08', 10.00),
    (1, 1, '2026-03-01 11:00+08', 1049.00),                      -- out of order: quarantined
    (1, 9, '2026-03-01 12:00+08', 5.00);                         -- unknown meter: quarantined
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
VALUES (1, 1, '2026-03-01 14:00+08', 1052.00);                   -- into arrears: a trip is queued
SELECT prepay.recharge(1, 1, 100.00, 'cash', 'RCPT-7731');       -- restores: the trip cancelled, a close queued
SELECT prepay.refund(1, 2, 10.00, 'cash', 'RF-1', 'overpaid');
SELECT prepay.fold_rollups();
