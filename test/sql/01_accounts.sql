-- Sites, accounts and meters: open, attach, replace, close, and their errors.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql

INSERT INTO prepay.site (name, time_zone) VALUES ('Plaza', 'Asia/Shanghai');
SELECT regress.try($$INSERT INTO prepay.site (name, time_zone) VALUES ('Nowhere', 'Mars/Olympus')$$);
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'shops');
INSERT INTO prepay.tariff_version VALUES (1, 1, '2026-01-01', 0.5);
INSERT INTO prepay.meter (site_id, code, building, floor, room) VALUES
    (1, 'M1', 'A', '1', '101'), (1, 'M2', 'A', '1', '102'), (1, 'M3', 'A', '1', '103');

SELECT prepay.open_account(1, 'A1', 'Noodle shop', 1, p_phone => '13800000001', p_floor_area => 42.5);
SELECT prepay.open_account(1, 'A2', 'Pharmacy', 1, p_credit_limit => 100);
-- errors
SELECT regress.try($$SELECT prepay.open_account(1, 'A1', 'Duplicate', 1)$$);
SELECT regress.try($$SELECT prepay.open_account(9, 'A9', 'No site', 1)$$);
SELECT regress.try($$SELECT prepay.open_account(1, 'A9', 'No tariff', 77)$$);
SELECT regress.try($$SELECT prepay.open_account(1, '', 'Blank code', 1)$$);
SELECT regress.try($$SELECT prepay.open_account(1, 'A9', 'Negative credit', 1, p_credit_limit => -5)$$);
SELECT account_id, code, name, mode, balance, alarm_level, credit_limit, floor_area FROM prepay.account ORDER BY 1;

-- attach with a handover reading: only later consumption is charged
SELECT prepay.attach_meter(1, 1, 1, 100.00, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 2, 2);
SELECT regress.try($$SELECT prepay.attach_meter(1, 2, 1)$$);           -- M1 belongs to A1
SELECT regress.try($$SELECT prepay.attach_meter(1, 99, 3)$$);          -- unknown account
SELECT regress.try($$SELECT prepay.attach_meter(1, 1, 99)$$);          -- unknown meter
-- a handover reading that is not accepted (dated tomorrow) refuses the attach
SELECT split_part(regress.try($$SELECT prepay.attach_meter(1, 2, 3, 5, now() + interval '1 day')$$), ' | ', 1);
SELECT meter_id, code, account_id, last_read_at, last_energy FROM prepay.meter ORDER BY 1;

SELECT prepay.recharge(1, 1, 100.00, 'cash', 'R1');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 06:00+00', 110.00);
SELECT prepay.balance(1, 1);

-- replace M1: its final reading is charged (5 kWh x 0.5), the new meter
-- starts from its initial reading, the balance carries over
SELECT prepay.replace_meter(1, 1, 115.00, 'M1-new', 0.50, '2026-03-02 00:00+00');
SELECT prepay.balance(1, 1);
SELECT meter_id, code, active, removed_at, replaced_by, account_id, last_energy FROM prepay.meter ORDER BY 1;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 4, '2026-03-02 06:00+00', 2.50),         -- 2 kWh on the new meter: 1.00
    (1, 1, '2026-03-02 06:00+00', 120.00);       -- the old meter is gone: quarantined
SELECT prepay.balance(1, 1);
SELECT meter_id, read_at, energy, quarantine_reason, quarantine_detail FROM prepay.reading ORDER BY meter_id, read_at;
SELECT regress.try($$SELECT prepay.replace_meter(1, 1, 130.00, 'M1-again', 0, '2026-03-03 00:00+00')$$);   -- already removed
SELECT regress.try($$SELECT prepay.replace_meter(1, 4, 1.00, 'M1-third', 0, '2026-03-03 00:00+00')$$);     -- final reading goes backwards
SELECT regress.try($$SELECT prepay.replace_meter(1, 4, 3.00, 'M2', 0, '2026-03-03 00:00+00')$$);           -- code taken
SELECT regress.try($$SELECT prepay.attach_meter(1, 2, 1)$$);  -- a removed meter cannot be attached

-- closing: refund of the remaining balance, meters detached; arrears refuse
SELECT prepay.close_account(1, 1);
SELECT entry_id, account_id, kind, amount, balance_after, channel, external_ref FROM prepay.ledger ORDER BY entry_id;
SELECT account_id, balance, closed_at IS NOT NULL AS closed FROM prepay.account ORDER BY 1;
SELECT meter_id, account_id FROM prepay.meter ORDER BY 1;
SELECT regress.try($$SELECT prepay.close_account(1, 1)$$);  -- already closed
SELECT regress.try($$SELECT prepay.recharge(1, 1, 10, 'cash', 'R-late')$$);
SELECT regress.try($$SELECT prepay.attach_meter(1, 1, 3)$$);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 2, '2026-03-01 00:00+00', 0), (1, 2, '2026-03-01 10:00+00', 10);
SELECT prepay.balance(1, 2);
SELECT regress.try($$SELECT prepay.close_account(1, 2)$$);  -- in arrears
SELECT * FROM prepay.check_ledger();
