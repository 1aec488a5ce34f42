-- The alarm ladder, notifications, trips, automatic restore, protect and
-- no-cut windows.
\set site Apartments \set low 50 \set pretrip 10 \set tariff home \set price 1.0
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/site.psql
INSERT INTO prepay.meter (site_id, code) SELECT 1, 'M' || i FROM generate_series(1, 6) i;
SELECT prepay.open_account(1, 'R1', 'Flat 1', 1, p_phone => '13900000001', p_email => 'flat1@example.com');
SELECT prepay.open_account(1, 'R2', 'Flat 2 (clinic)', 1);
SELECT prepay.open_account(1, 'R3', 'Flat 3', 1, p_credit_limit => 20);
SELECT prepay.attach_meter(1, 1, 1, 0, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 1, 2, 0, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 2, 3, 0, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 3, 4, 0, '2026-03-01 00:00+00');

-- R1: 100 -> 60 (0) -> 45 (1, low) -> 8 (2, pre-trip) -> -2 (3, arrears: both meters tripped)
SELECT prepay.recharge(1, 1, 100, 'cash', 'C-1');
SELECT regress.use(1, '2026-03-01 01:00+00', 40);
SELECT alarm_level FROM prepay.account WHERE account_id = 1;
SELECT regress.use(1, '2026-03-01 02:00+00', 15);
SELECT regress.use(2, '2026-03-01 03:00+00', 37);
SELECT regress.use(1, '2026-03-01 04:00+00', 10);
SELECT account_id, balance, alarm_level FROM prepay.account WHERE account_id = 1;
SELECT notification_id, account_id, alarm_level, balance, phone, email, message FROM prepay.notification ORDER BY 1;
SELECT alarm_id, kind, account_id, cleared_at IS NULL AS active FROM prepay.alarm ORDER BY 1;
SELECT command_id, meter_id, account_id, action, state, reason FROM prepay.command ORDER BY 1;

-- more consumption in arrears, a manual trip: no duplicate commands pile up
SELECT regress.use(1, '2026-03-01 05:00+00', 1);
SELECT prepay.trip(1, 1);
SELECT count(*) AS queued FROM prepay.command WHERE state = 'queued';

-- the agent has sent M1's trip and confirmed M2's; a recharge out of arrears
-- cancels nothing sent, and queues a close for both
UPDATE prepay.command SET state = 'sent' WHERE meter_id = 1;
UPDATE prepay.command SET state = 'done' WHERE meter_id = 2;
UPDATE prepay.meter SET relay_state = 'tripped' WHERE meter_id = 2;
SELECT prepay.recharge(1, 1, 5.00, 'wechat', 'W-1');    -- -3 + 5 = 2: still pre-trip, out of arrears
SELECT account_id, balance, alarm_level FROM prepay.account WHERE account_id = 1;
SELECT command_id, meter_id, action, state, reason FROM prepay.command ORDER BY 1;
-- back into arrears while the closes are still queued: they are replaced by trips
SELECT regress.use(1, '2026-03-01 06:00+00', 3);
SELECT command_id, meter_id, action, state, last_error FROM prepay.command ORDER BY 1;
-- a recharge again: M2's queued trip is cancelled and its relay is known
-- closed, so it needs no close; M1's first trip is still in flight (sent),
-- so M1 gets a close
UPDATE prepay.meter SET relay_state = 'closed';
SELECT prepay.recharge(1, 1, 200.00, 'wechat', 'W-2');
SELECT command_id, meter_id, action, state FROM prepay.command WHERE state = 'queued' ORDER BY 1;

-- protect: R2 is a clinic on keep-power; in arrears it is notified, never tripped
SELECT prepay.protect(1, true, p_account_id => 2);
SELECT regress.use(3, '2026-03-01 01:00+00', 5);
SELECT account_id, balance, alarm_level FROM prepay.account WHERE account_id = 2;
SELECT message FROM prepay.notification WHERE account_id = 2;
SELECT count(*) AS r2_commands FROM prepay.command WHERE account_id = 2;
SELECT regress.try($$SELECT prepay.trip(1, 3)$$);  -- refused: protected
-- protection off while in arrears: the trip follows at once
SELECT prepay.protect(1, false, p_account_id => 2);
SELECT meter_id, action, state, reason FROM prepay.command WHERE account_id = 2;
-- protect the meter: the queued trip is cancelled
SELECT prepay.protect(1, true, p_meter_id => 3);
SELECT meter_id, action, state, last_error FROM prepay.command WHERE account_id = 2;
SELECT prepay.protect(1, false, p_meter_id => 3);
SELECT meter_id, action, state FROM prepay.command WHERE account_id = 2 ORDER BY command_id;
SELECT regress.try($$SELECT prepay.protect(1, true)$$);  -- neither meter nor account
SELECT regress.try($$SELECT prepay.protect(1, true, p_meter_id => 1, p_account_id => 1)$$);
SELECT regress.try($$SELECT prepay.protect(1, true, p_meter_id => 99)$$);

-- credit limit: R3 may go to -20 before arrears
SELECT regress.use(4, '2026-03-01 01:00+00', 15);
SELECT account_id, balance, alarm_level FROM prepay.account WHERE account_id = 3;
SELECT regress.use(4, '2026-03-01 02:00+00', 5);
SELECT account_id, balance, alarm_level FROM prepay.account WHERE account_id = 3;
-- per-account thresholds override the site's
UPDATE prepay.account SET low_balance_threshold = 500, pretrip_threshold = 300 WHERE account_id = 3;
SELECT prepay.recharge(1, 3, 420.00, 'cash', 'C-3');
SELECT account_id, balance, alarm_level FROM prepay.account WHERE account_id = 3;

-- no-cut windows: a daily window across midnight in the site's zone, and a holiday
UPDATE prepay.site SET time_zone = 'Europe/Berlin';
INSERT INTO prepay.no_cut_window (site_id, daily_from, daily_to, description) VALUES (1, '22:00', '07:00', 'night');
INSERT INTO prepay.no_cut_window (site_id, daily_from, daily_to, iso_days, description)
VALUES (1, '12:00', '14:00', '{6,7}', 'weekend lunch');
INSERT INTO prepay.no_cut_window (site_id, during, description)
VALUES (1, '[2026-12-24 00:00+01, 2026-12-27 00:00+01)', 'Christmas');
SELECT at, prepay.cut_allowed_at(1, at::timestamptz) AS cut_allowed_at
  FROM unnest(ARRAY[
    '2026-03-04 12:30+01',       -- Wednesday noon: allowed
    '2026-03-04 23:00+01',       -- night: until 07:00 next morning
    '2026-03-05 03:00+01',       -- night, after midnight
    '2026-03-07 12:30+01',       -- Saturday lunch
    '2026-03-29 01:30+01',       -- night of the spring DST change: 07:00 CEST
    '2026-12-23 23:00+01',       -- night running into Christmas, then the next night
    '2026-12-26 21:00+01'        -- Christmas, then the night
  ]) at;
-- a trip inside a window waits for its end
INSERT INTO prepay.no_cut_window (site_id, during, description)
VALUES (1, tstzrange(now() - interval '1 hour', '2099-01-01'), 'moratorium');
-- (the moratorium ends at 2099-01-01 00:00 UTC, inside the Berlin night
-- window: the trip waits until 07:00 Berlin time)
SELECT prepay.recharge(1, 3, 10.00, 'cash', 'C-4');
SELECT regress.use(4, '2026-03-01 08:00+00', 480);    -- 410 - 480 = -70: arrears
SELECT meter_id, action, state, not_before FROM prepay.command WHERE account_id = 3 AND state = 'queued';
SELECT regress.try($$INSERT INTO prepay.no_cut_window (site_id, daily_from, daily_to) VALUES (1, '10:00', '10:00')$$);

-- manual close, and commands on unknown or removed meters
SELECT prepay.close(1, 5, 'tenant moving in');
SELECT regress.try($$SELECT prepay.close(1, 99)$$);
SELECT regress.try($$SELECT prepay.trip(1, 99)$$);
SELECT regress.try($$SELECT prepay.trip(1, 5, '')$$);
SELECT meter_id, action, state, reason, account_id FROM prepay.command WHERE meter_id = 5;

SELECT * FROM prepay.check_ledger();
