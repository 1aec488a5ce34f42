-- Periodic billing: October 2026 of a sample plaza in Shanghai, with fees
-- (per m2 deducted, fixed billed, one-off), a tenant moving in and one
-- moving out mid-month, an account with zero area, common area shared by
-- area, equally and by ratios, line loss shared by consumption (above the
-- alarm threshold), a negative loss, allowances that expire, a two-part
-- basic charge settled for the month, a postpaid bill and a prepaid
-- statement.  Every amount is computed by hand in the comments.  The
-- month is then run a second time: nothing more is charged.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql
SET timezone = 'Asia/Shanghai';
INSERT INTO prepay.site (name, time_zone, low_balance_threshold, pretrip_threshold, fees_may_cut, loss_alarm_pct)
VALUES ('Plaza', 'Asia/Shanghai', 0, 0, true, 5);
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (1, 'two-part');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 1.0);
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition)
VALUES (1, 2, '2026-01-01', '{"price": 1.0, "basic": {"by": "capacity", "price": 20}}');
SELECT prepay.open_account(1, 'S1', 'Tea house', 1, p_floor_area => 100);
SELECT prepay.open_account(1, 'S2', 'Bookshop', 1, p_floor_area => 50);
SELECT prepay.open_account(1, 'S3', 'Kiosk', 1, p_floor_area => 0);
SELECT prepay.open_account(1, 'O4', 'Office', 1, 'postpaid', p_floor_area => 50);
SELECT prepay.open_account(1, 'F5', 'Workshop', 2);
SELECT prepay.open_account(1, 'S6', 'Florist', 1, p_floor_area => 31);
UPDATE prepay.account SET opened_at = '2026-09-01';
UPDATE prepay.account SET opened_at = '2026-10-11 00:00' WHERE account_id IN (3, 5);   -- move in on the 11th
UPDATE prepay.account SET capacity_kva = 100 WHERE account_id = 5;
-- tenant meters M1..M4; master meters with no account: common area MC,
-- pump MP, lift ML, utility-side supply MU, a sub-board MS
INSERT INTO prepay.meter (site_id, code) VALUES
    (1, 'M1'), (1, 'M2'), (1, 'M3'), (1, 'M4'), (1, 'MC'), (1, 'MP'), (1, 'ML'), (1, 'MU'), (1, 'MS');
SELECT prepay.attach_meter(1, 1, 1, 1000, '2026-10-01 00:00');
SELECT prepay.attach_meter(1, 2, 2, 500, '2026-10-01 00:00');
SELECT prepay.attach_meter(1, 3, 3, 0, '2026-10-11 00:00');
SELECT prepay.attach_meter(1, 4, 4, 200, '2026-10-01 00:00');
SELECT prepay.record_master_reading(1, m, '2026-10-01 00:00', e)
  FROM (VALUES (5, 10000), (6, 0), (7, 0), (8, 50000), (9, 0)) AS v(m, e);
SELECT prepay.recharge(1, a, amount, 'bank', 'R' || a)
  FROM (VALUES (1, 2000.00), (2, 1000.00), (3, 100.00), (5, 3000.00), (6, 500.00)) AS v(a, amount);

-- groups, fees, allowances, apportionment rules
INSERT INTO prepay.account_group (site_id, name) VALUES (1, 'tenants'), (1, 'shops'), (1, 'pump users'),
                                                        (1, 'allowance'), (1, 'new'), (1, 'sub-board');
INSERT INTO prepay.account_group_member (site_id, group_id, account_id, ratio) VALUES
    (1, 1, 1, 1), (1, 1, 2, 1), (1, 1, 3, 1), (1, 1, 4, 1), (1, 1, 6, 1),
    (1, 2, 1, 1), (1, 2, 2, 1), (1, 2, 3, 1), (1, 2, 4, 1),
    (1, 3, 1, 2), (1, 3, 2, 1), (1, 3, 4, 1),
    (1, 4, 1, 1), (1, 4, 3, 1),
    (1, 5, 3, 1),
    (1, 6, 2, 1);
INSERT INTO prepay.charge_item (site_id, name, basis, price, recurrence, due_on, settle, group_id, active_from) VALUES
    (1, 'rent', 'per_m2', 10, 'monthly', NULL, 'deduct', 1, '2026-10-01'),
    (1, 'property fee', 'fixed', 31, 'monthly', NULL, 'bill', 1, '2026-10-01'),
    (1, 'signage', 'fixed', 25, 'once', '2026-10-15', 'bill', 5, '2026-10-01');
INSERT INTO prepay.allowance_rule (site_id, name, amount, group_id, active_from) VALUES (1, 'basic free', 20, 4, '2026-10-01');
INSERT INTO prepay.apportion_rule (site_id, name, kind, method, group_id, master_meters, downstream_meters, price, settle, active_from) VALUES
    (1, 'corridor', 'common_area', 'area', 2, '{5}', '{}', 1.2, 'deduct', '2026-10-01'),
    (1, 'pump', 'common_area', 'ratio', 3, '{6}', '{}', 1, 'deduct', '2026-10-01'),
    (1, 'lift', 'common_area', 'equal', 2, '{7}', '{}', 1, 'deduct', '2026-10-01'),
    (1, 'transformer loss', 'loss', 'consumption', 2, '{8}', '{5,6,7}', 1, 'bill', '2026-10-01'),
    (1, 'sub-board loss', 'loss', 'consumption', 6, '{9}', '{}', 1, 'bill', '2026-10-01');

-- refused definitions
UPDATE prepay.site SET fees_may_cut = false;
SELECT regress.try($$INSERT INTO prepay.charge_item (site_id, name, price, settle, active_from)
                     VALUES (1, 'cleaning', 5, 'deduct', '2026-10-01')$$);
UPDATE prepay.site SET fees_may_cut = true;
SELECT regress.try($$INSERT INTO prepay.charge_item (site_id, name, price, active_from) VALUES (1, 'x', 5.005, '2026-10-01')$$);

-- ---------------------------------------------------------------------
-- October 1: allowance for S1 (20.00); rent 10/m2 deducted: S1 1000.00,
-- S2 500.00, O4 500.00, S6 310.00; property fee 31.00 by bill (O4 is
-- postpaid: posted to its wallet).  S3 and F5 have not moved in yet.
-- ---------------------------------------------------------------------
SELECT prepay.run_periodic(1, '2026-10-01');
-- October 11: S3 moves in: 21 of 31 days.  Allowance 20 x 21/31 = 13.548 -> 13.54;
-- rent 0 (zero area); property fee 31 x 21/31 = 21.00 by bill.
SELECT prepay.run_periodic(1, '2026-10-11');
-- October 16: the one-off signage fee (25.00, by bill) for S3; F5's basic
-- charge for the 11th..15th: 100 kVA x 20 = 2000 a month, x 5/31 = 322.58
SELECT prepay.run_periodic(1, '2026-10-16');
SELECT source, rule_id, account_id, period_start, period_end, amount, settle, entry_id IS NOT NULL AS posted, inputs
  FROM prepay.period_charge ORDER BY account_id, source, rule_id, period_start;

-- S6 moves out on October 21 at 10:00: rent kept for the 1st..20th,
-- 310 x 20/31 = 200.00, so 110.00 back; property fee 31 x 20/31 = 20.00,
-- 11.00 off its bill; the balance 500 - 310 + 110 = 300.00 is refunded.
SELECT regress.try($$SELECT prepay.close_account(1, 6, p_moved_out_at => '2030-01-01')$$);
SELECT prepay.close_account(1, 6, p_moved_out_at => '2026-10-21 10:00');
SELECT kind, amount, balance_after, reason FROM prepay.ledger WHERE account_id = 6 ORDER BY entry_id;

-- the readings of November 1, 00:00: S1 300 kWh, S2 100, S3 5, O4 200;
-- corridor 150, pump 40, lift 31; supply 876; sub-board 90 (S2 used 100)
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-11-01 00:00', 1300), (1, 2, '2026-11-01 00:00', 600),
    (1, 3, '2026-11-01 00:00', 5), (1, 4, '2026-11-01 00:00', 400);
SELECT prepay.record_master_reading(1, m, '2026-11-01 00:00', e)
  FROM (VALUES (5, 10150), (6, 40), (7, 31), (8, 50876), (9, 90)) AS v(m, e);
SELECT regress.try($$SELECT prepay.record_master_reading(1, 1, '2026-11-01 01:00', 1400)$$);  -- a tenant's meter
SELECT regress.try($$SELECT prepay.record_master_reading(1, 5, '2026-11-01 01:00', 9000)$$);  -- backwards
SELECT regress.try($$SELECT prepay.apportion(1, 1, '2026-10-02')$$);
SELECT regress.try($$SELECT prepay.apportion(1, 99, '2026-10-01')$$);
SELECT regress.try($$SELECT prepay.apportion(1, 1, '2030-01-01')$$);            -- not over
SELECT regress.try($$SELECT prepay.settle_basic_charges(1, '2030-01-01')$$);    -- not over
SELECT regress.try($$SELECT prepay.run_periodic(99, '2026-10-01')$$);           -- unknown site
SELECT regress.try($$SELECT prepay.draft_bill(1, 1, '2026-10-01', '2026-10-01')$$);  -- empty period
SELECT regress.try($$SELECT prepay.pay_bills(1, 4, 0, 'bank', 'B0')$$);         -- nothing paid

-- ---------------------------------------------------------------------
-- November 1: October closes.
-- Allowances, after October's shares: S1 spent its 20.00 on rent
-- (expires 0); S3 had 13.54 and spent 5.00 on energy and 5.71 on the
-- lift: 2.83 expires.  November's allowances: 20.00 each.
-- F5: October 31 accrual brings the month to 2000 x 21/31 = 1354.83
-- (1032.25 more); the settlement finds 1354.83 accrued: posts nothing.
-- corridor, by area x days: S1 3100, S2 1550, S3 0, O4 1550 of 6200;
--   150 kWh x 1.20 = 180.00: 90.00, 45.00, 0.00, 45.00.
-- pump, by ratio x days: S1 62, S2 31, O4 31 of 124; 40.00: 20.00, 10.00, 10.00.
-- lift, equally by days: 31, 31, 21, 31 of 114; 31.00:
--   961/114 = 8.4298.., 651/114 = 5.7105..: cents 842, 842, 571, 842 = 3097,
--   the 3 cents left go to the largest remainders (.98 x 3): 8.43, 8.43, 5.71, 8.43.
-- loss: supply 876 - (300 + 100 + 5 + 200 + 150 + 40 + 31 = 826) = 50 kWh,
--   5.708 % > 5 %: high_loss alarm; 50.00 by consumption over 605 kWh:
--   2479.34, 826.45, 41.32, 1652.89 cents -> 2479, 826, 41, 1652 = 4998,
--   2 cents to .89 (O4) and .45 (S2): 24.79, 8.27, 0.41, 16.53.
-- sub-board: 90 < 100: negative loss, alarm, nothing charged.
-- ---------------------------------------------------------------------
SELECT prepay.run_periodic(1, '2026-11-01');
SELECT rule_id, period_start, period_end, kind, method, master_energy, downstream_energy, shared_energy, loss_pct,
       price, total_amount, allocated, unallocated, total_weight, note
  FROM prepay.apportionment ORDER BY rule_id;
SELECT * FROM prepay.loss_period ORDER BY rule_id;
SELECT kind, meter_id, detail FROM prepay.alarm WHERE kind IN ('high_loss', 'negative_loss') ORDER BY kind;
SELECT c.source, r.name, c.account_id, c.amount, c.settle, c.inputs->>'weight' AS weight
  FROM prepay.period_charge c JOIN prepay.apportion_rule r ON r.site_id = c.site_id AND r.rule_id = c.rule_id
 WHERE c.source IN ('common_area', 'loss') ORDER BY c.rule_id, c.account_id;
SELECT source, account_id, period_start, amount, inputs FROM prepay.period_charge
 WHERE source IN ('allowance', 'allowance_expiry', 'basic_settlement') ORDER BY account_id, period_start, source;
SELECT account_id, prepay.allowance_left(1, account_id) FROM prepay.account WHERE account_id IN (1, 3) ORDER BY 1;

-- S3 cannot take its November allowance out: 100 + 13.54 - 5 - 5.71 - 2.83
-- + 20 = 120.00, of which 20.00 is allowance
SELECT prepay.balance(1, 3);
SELECT regress.try($$SELECT prepay.refund(1, 3, 100.01, 'bank', 'X1')$$);
SELECT regress.try($$SELECT prepay.refund(1, 3, 100.00, 'bank', 'X1')$$) LIKE 'ok%' AS refunded;
SELECT prepay.balance(1, 3), prepay.allowance_left(1, 3);

-- ---------------------------------------------------------------------
-- bills for October (drafted by the November 1 run)
-- O4, postpaid: energy 200.00 + rent 500.00 + property fee 31.00 +
-- corridor 45.00 + pump 10.00 + lift 8.43 + loss 16.53 = 810.96, all due.
-- S1, prepaid: payable property fee 31.00 + loss 24.79 = 55.79; the rest
-- (energy 300, rent 1000, shares 90 + 20 + 8.43, allowance -20) for information.
-- S3: property fee 21.00 + signage 25.00 + loss 0.41 = 46.41 due.
-- S6 (moved out): property fee 31.00 - 11.00 = 20.00 due.
-- ---------------------------------------------------------------------
SELECT bill_id, account_id, period_start, period_end, mode, state, wallet_balance, energy, charges, amount_due FROM prepay.bill ORDER BY account_id, period_start;
SELECT b.account_id, l.line_no, l.kind, l.description, l.quantity, l.unit_price, l.amount, l.payable
  FROM prepay.bill_line l JOIN prepay.bill b USING (site_id, bill_id)
 WHERE b.account_id IN (1, 3, 4, 6) AND b.period_start = '2026-10-01' ORDER BY b.account_id, l.line_no;
-- a redraft gives the same bill; a confirmed one is not redrafted
SELECT amount_due FROM prepay.draft_bill(1, 4, '2026-10-01', '2026-11-01');
SELECT regress.try($$SELECT prepay.issue_bill(1, b.bill_id) FROM prepay.bill b WHERE account_id = 4 AND period_start = '2026-10-01'$$);
SELECT state, confirmed_by IS NOT NULL AS confirmed FROM prepay.confirm_bill(1, (SELECT bill_id FROM prepay.bill WHERE account_id = 4 AND period_start = '2026-10-01'));
SELECT state, due_on - current_date AS terms FROM prepay.issue_bill(1, (SELECT bill_id FROM prepay.bill WHERE account_id = 4 AND period_start = '2026-10-01'));
SELECT regress.try($$SELECT prepay.confirm_bill(1, b.bill_id) FROM prepay.bill b WHERE account_id = 4 AND period_start = '2026-10-01'$$);
SELECT regress.try($$SELECT prepay.confirm_bill(1, 999)$$);
SELECT state FROM prepay.issue_bill(1, (SELECT bill_id FROM prepay.confirm_bill(1, (SELECT bill_id FROM prepay.bill WHERE account_id = 1 AND period_start = '2026-10-01'))));
SELECT state FROM prepay.issue_bill(1, (SELECT bill_id FROM prepay.confirm_bill(1, (SELECT bill_id FROM prepay.bill WHERE account_id = 6 AND period_start = '2026-10-01'))));
-- the arrears list, with ageing (one bill made 45 days overdue by hand)
UPDATE prepay.bill SET due_on = current_date - 45 WHERE account_id = 1 AND period_start = '2026-10-01';
SELECT account_code, outstanding, days_overdue, ageing FROM prepay.bill_arrears ORDER BY account_id;
-- payments: O4 pays in two parts; S1 pays its fees (its wallet does not
-- move); S6 pays after moving out; overpaying is refused; a replay is harmless
SELECT regress.try($$SELECT prepay.pay_bills(1, 4, 900.00, 'bank', 'B1')$$);
SELECT prepay.pay_bills(1, 4, 500.00, 'bank', 'B1') = prepay.pay_bills(1, 4, 500.00, 'bank', 'B1') AS replayed;
SELECT prepay.pay_bills(1, 4, 310.96, 'bank', 'B2') IS NOT NULL;
SELECT prepay.balance(1, 1) AS s1_before;
SELECT prepay.pay_bills(1, 1, 55.79, 'cash', 'B3') IS NOT NULL;
SELECT prepay.balance(1, 1) AS s1_after;
SELECT prepay.pay_bills(1, 6, 20.00, 'cash', 'B4') IS NOT NULL;
SELECT account_id, state, amount_due, paid FROM prepay.bill WHERE account_id IN (1, 4, 6) AND period_start = '2026-10-01' ORDER BY account_id;
SELECT b.account_id, p.amount FROM prepay.bill_payment p JOIN prepay.bill b USING (site_id, bill_id) ORDER BY p.entry_id;
SELECT account_code, outstanding FROM prepay.bill_arrears ORDER BY account_id;

-- ---------------------------------------------------------------------
-- the whole month again: nothing more is charged
-- ---------------------------------------------------------------------
CREATE TEMP TABLE before AS SELECT count(*) AS entries, sum(amount) AS total FROM prepay.ledger;
SELECT prepay.run_periodic(1, d::date) FROM generate_series(timestamp '2026-10-01', '2026-11-01', '1 day') AS d
 WHERE extract(day FROM d) IN (1, 11, 16);
SELECT (prepay.apportion(1, r, '2026-10-01')).total_amount FROM generate_series(1, 5) AS r;
SELECT prepay.settle_basic_charges(1, '2026-10-01');
SELECT count(*) FROM prepay.draft_bills(1, '2026-10-01');
SELECT (SELECT count(*) FROM prepay.ledger) - entries AS new_entries, (SELECT sum(amount) FROM prepay.ledger) - total AS moved
  FROM before;
-- running the days in between as well only accrues F5's basic charge, which the month already holds
SELECT count(*) FROM (SELECT prepay.run_periodic(1, d::date)
                        FROM generate_series(timestamp '2026-10-01', '2026-11-01', '1 day') AS d) AS x;
SELECT (SELECT count(*) FROM prepay.ledger) - entries AS new_entries, (SELECT sum(amount) FROM prepay.ledger) - total AS moved
  FROM before;

SELECT account_id, balance, prepay.allowance_left(site_id, account_id) FROM prepay.account ORDER BY account_id;
SELECT * FROM prepay.check_ledger();
