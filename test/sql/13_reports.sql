-- Reports: the rollups against the raw computation, the room status board,
-- energy by day/month/year with the time-of-use and tier breakdown and
-- year over year, finance by channel and operator, the order overview,
-- the trail, lost contact, alarms, arrears, the balance forecast, who is
-- cut next and the reminder before it, suspicious consumption, exports.
-- Every figure is computed by hand in the comments.  Functions that take an
-- instant (the _at variants) are called with fixed instants; the views are
-- the same at now().  Postings happen "now", so their times are not shown.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql
INSERT INTO prepay.site (name, time_zone, low_balance_threshold, pretrip_threshold)
VALUES ('Plaza', 'Asia/Shanghai', 20, 5);
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (1, 'tou');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2025-01-01 00:00+08', 1.0);
-- peak 08:00-22:00 at 1.00, valley at 0.50; from 20 kWh a month on, 0.50 more
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 2, '2025-01-01 00:00+08', '{
  "periods": {"peak": 1.0, "valley": 0.5},
  "schedules": [{"switches": [["00:00", "valley"], ["08:00", "peak"], ["22:00", "valley"]]}],
  "tiers": {"cycle": "monthly", "blocks": [{"upto": 20, "add": 0}, {"add": 0.5}]}}');
INSERT INTO prepay.gateway (site_id, name, host) VALUES (1, 'GW-A', '10.0.0.1'), (1, 'GW-B', '10.0.0.2');
INSERT INTO prepay.meter (site_id, code, building, floor, room, gateway_id, unit_id) VALUES
    (1, 'M1', 'A', '1', '101', 1, 1), (1, 'M2', 'A', '1', '102', 1, 2), (1, 'M3', 'A', '2', '201', 2, 1),
    (1, 'M4', 'A', '2', '202', 2, 2), (1, 'M5', 'B', '1', '101', 2, 3), (1, 'M6', 'B', '1', '102', 2, 4);
SELECT prepay.open_account(1, 'A1', 'Noodles', 2);
SELECT prepay.open_account(1, 'A2', 'Tea', 1);
SELECT prepay.open_account(1, 'A3', 'Bakery', 1);
SELECT prepay.open_account(1, 'A4', 'Clinic', 1);
SELECT prepay.open_account(1, 'A5', 'Laundry', 1);
UPDATE prepay.account SET opened_at = '2025-01-01 00:00+08';
SELECT prepay.protect(1, true, p_account_id => 4);
-- no cuts at night
INSERT INTO prepay.no_cut_window (site_id, daily_from, daily_to, description) VALUES (1, '22:00', '07:00', 'night');
CREATE ROLE regress_cashier SUPERUSER;

-- A3 (M4, flat 1.00): March 2025: 30 kWh over ten days, one piece across nine midnights,
-- split 3 kWh a day; nothing until March 2026: 45 kWh over eight days (5.625 a day),
-- then 1 kWh over two days (0.5 a day)
SELECT prepay.recharge(1, 3, 200, 'bank', 'B-1');
SELECT prepay.attach_meter(1, 3, 4, 0, '2025-03-01 00:00+08');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 4, '2025-03-11 00:00+08', 30);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 4, '2026-03-01 00:00+08', 30);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 4, '2026-03-09 00:00+08', 75);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 4, '2026-03-11 00:00+08', 76);
SELECT prepay.refund(1, 3, 20, 'bank', 'RF-1', 'deposit returned');
SELECT prepay._lock_account(1, 3) IS NOT NULL AS locked,
       prepay._post_entry(1, 3, 'fee', -15, 'fees', 'F-1', 'property fee March') > 0 AS fee_posted;

-- A1 (M1, time of use x tiers), paid at the cashier's desk; a mistyped payment is reversed
SET SESSION AUTHORIZATION regress_cashier;
SELECT prepay.recharge(1, 1, 100, 'cash', 'C-1');
SELECT prepay.recharge(1, 1, 30, 'cash', 'C-2');
SELECT prepay.reverse(1, currval('prepay.ledger_entry_id_seq'), 'typed twice');
RESET SESSION AUTHORIZATION;
SELECT prepay.attach_meter(1, 1, 1, 0, '2026-03-01 00:00+08');
-- 00:00-12:00, 12 kWh: valley 8 x 0.50 + peak 4 x 1.00 = 8.00
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 12:00+08', 12);
-- 12:00-12:00, 24 kWh, 12 used: peak 12-20 8 x 1.00 in tier 1; tier 2 from 20:00:
-- peak 20-22 2 x 1.50, valley 22-24 2 x 1.00 | valley 00-08 8 x 1.00, peak 08-12 4 x 1.50 = 27.00
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-02 12:00+08', 36);
-- the register goes backwards: quarantined, reverse energy
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-05 00:00+08', 10);

-- A2 (M2, flat): 50 paid by WeChat, 60 kWh used: -10, arrears, trip queued
SELECT prepay.recharge(1, 2, 50, 'wechat', 'WX-1');
SELECT prepay.attach_meter(1, 2, 2, 0, '2026-03-01 00:00+08');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 2, '2026-03-03 12:00+08', 60);
-- and then nothing more, while the meter keeps reporting
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 2, '2026-03-10 23:00+08', 60);

-- A4 (M5, protected) and A5 (M6): 30 paid, 24 kWh in the day before 2026-03-11: 6 left each
SELECT prepay.recharge(1, a, 30, 'card', 'K-' || a) FROM generate_series(4, 5) a;
SELECT prepay.attach_meter(1, 4, 5, 0, '2026-03-10 00:00+08');
SELECT prepay.attach_meter(1, 5, 6, 0, '2026-03-10 00:00+08');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 5, '2026-03-11 00:00+08', 24), (1, 6, '2026-03-11 00:00+08', 24);

-- ---------------------------------------------------------------------
-- rollups
-- ---------------------------------------------------------------------
SELECT meter_id, day, account_id, period, tier, energy, cost, charged, charges
  FROM prepay.energy_day WHERE meter_id = 1 ORDER BY day, period, tier;
-- the 2025 piece of M4 is split 3 kWh a day over ten local days
SELECT day, energy, cost, charged, charges FROM prepay.energy_day
 WHERE meter_id = 4 AND day < '2026-01-01' ORDER BY day;
SELECT meter_id, month, account_id, period, tier, energy, cost, charged, charges
  FROM prepay.energy_month ORDER BY meter_id, month, period, tier;
-- the rollups equal the computation from the ledger, row by row
(SELECT * FROM prepay.energy_from_ledger(1, '2025-01-01', '2027-01-01') EXCEPT SELECT * FROM prepay.energy_day)
UNION ALL
(SELECT * FROM prepay.energy_day EXCEPT SELECT * FROM prepay.energy_from_ledger(1, '2025-01-01', '2027-01-01'));
-- and every total adds up to the ledger: energy, exact charges, posted cents, entries
SELECT (SELECT sum(energy) FROM prepay.ledger WHERE kind = 'consumption') AS ledger_energy,
       (SELECT sum(energy) FROM prepay.energy_month) AS rollup_energy,
       (SELECT sum(exact_charge) FROM prepay.ledger WHERE kind = 'consumption') AS ledger_exact,
       (SELECT sum(cost) FROM prepay.energy_month) AS rollup_cost,
       (SELECT -sum(amount) FROM prepay.ledger WHERE kind = 'consumption') AS ledger_charged,
       (SELECT sum(charged) FROM prepay.energy_day) AS rollup_charged,
       (SELECT count(*) FROM prepay.ledger WHERE kind = 'consumption') AS ledger_entries,
       (SELECT sum(charges) FROM prepay.energy_day) AS rollup_entries,
       (SELECT sum(entries) FROM prepay.consumption_posting_day) AS posted_entries;
-- energy from the raw readings: register advance x multiplier, per meter
SELECT r.meter_id, max(r.energy) FILTER (WHERE r.quarantine_reason IS NULL)
                   - min(r.energy) FILTER (WHERE r.quarantine_reason IS NULL) AS from_readings,
       (SELECT sum(e.energy) FROM prepay.energy_month e WHERE e.meter_id = r.meter_id) AS from_rollups
  FROM prepay.reading r WHERE r.meter_id <> 3 GROUP BY r.meter_id ORDER BY 1;
-- every batch appended its deltas; the views add them to the folded store.
-- Folding moves them into the store and changes nothing the views show;
-- a second fold finds nothing
SELECT count(*) AS deltas_pending FROM prepay.energy_pending;
CREATE TEMP TABLE before_fold_day AS SELECT * FROM prepay.energy_day;
CREATE TEMP TABLE before_fold_month AS SELECT * FROM prepay.energy_month;
SELECT prepay.fold_rollups(1) AS folded;
SELECT (SELECT count(*) FROM prepay.energy_pending) AS deltas_left,
       (SELECT count(*) FROM prepay.energy_day_folded) AS folded_days,
       (SELECT count(*) FROM prepay.energy_month_folded) AS folded_months;
SELECT count(*) AS differ FROM ((TABLE before_fold_day EXCEPT TABLE prepay.energy_day)
                                UNION ALL (TABLE prepay.energy_day EXCEPT TABLE before_fold_day)
                                UNION ALL (TABLE before_fold_month EXCEPT TABLE prepay.energy_month)
                                UNION ALL (TABLE prepay.energy_month EXCEPT TABLE before_fold_month)) d;
SELECT prepay.fold_rollups() AS folded_again;
SELECT regress.try('SELECT prepay.fold_rollups(9)');
-- rebuilding gives the same rows
CREATE TEMP TABLE before_rebuild AS SELECT * FROM prepay.energy_month;
SELECT * FROM prepay.rebuild_rollups(1);
SELECT count(*) AS differ FROM ((TABLE before_rebuild EXCEPT TABLE prepay.energy_month)
                                UNION ALL (TABLE prepay.energy_month EXCEPT TABLE before_rebuild)) d;
SELECT regress.try('SELECT prepay.rebuild_rollups(9)');

-- ---------------------------------------------------------------------
-- room status board
-- ---------------------------------------------------------------------
UPDATE prepay.gateway SET lost_since = '2026-03-02 10:00+08' WHERE gateway_id = 2;
UPDATE prepay.meter SET lost_since = '2026-03-02 09:00+08' WHERE meter_id = 2;
-- at 13:00 on 2 March: M1 used valley 8 (tier 2, 8.00) and peak 4 (tier 2, 6.00) today;
-- its charge of the 2nd started on the 1st, so no cents are counted today
SELECT building, floor, room, meter_code, account_code, balance, alarm_level, alarm_colour, relay_state,
       protected, online, lost_since, today, today_energy, today_cost, today_charged, last_read_at
  FROM prepay.room_status_at(1, '2026-03-02 13:00+08') ORDER BY building, floor, room;
SELECT count(*) AS rooms FROM prepay.room_status WHERE site_id = 1;

-- ---------------------------------------------------------------------
-- energy reports
-- ---------------------------------------------------------------------
SELECT day, meter_code, building, room, account_code, period, tier, energy, cost, charged, charges
  FROM prepay.energy_meter_daily WHERE day BETWEEN '2026-03-01' AND '2026-03-02' ORDER BY 1, 2, 6, 7;
SELECT month, account_code, account_name, period, tier, energy, cost, charged, charges
  FROM prepay.energy_account_monthly ORDER BY 1, 2, 4, 5;
SELECT year, meter_code, account_code, period, tier, energy, cost, charged, charges
  FROM prepay.energy_meter_yearly ORDER BY 1, 2, 4, 5;
SELECT day, account_code, sum(energy) AS energy, sum(cost) AS cost
  FROM prepay.energy_account_daily WHERE account_code = 'A3' AND day >= '2026-03-07' GROUP BY 1, 2 ORDER BY 1;
SELECT year, account_code, sum(energy) AS energy FROM prepay.energy_account_yearly GROUP BY 1, 2 ORDER BY 1, 2;
-- A3: March 2026 46 kWh against 30 in March 2025: +53.3 %
SELECT month, account_code, energy, cost, energy_year_before, cost_year_before, energy_change_pct
  FROM prepay.energy_yoy_account ORDER BY 1, 2;
SELECT month, accounts, energy, cost, accounts_year_before, energy_year_before, energy_change_pct
  FROM prepay.energy_yoy_site ORDER BY 1;

-- ---------------------------------------------------------------------
-- finance and the order overview (posted today; the day is not shown)
-- ---------------------------------------------------------------------
CREATE FUNCTION pg_temp.who(operator text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN operator = 'regress_cashier' THEN operator WHEN operator IS NOT NULL THEN 'installer' END
$$;
SELECT kind, channel, pg_temp.who(operator) AS operator, entries, money_in, money_out, net
  FROM prepay.finance_daily ORDER BY kind, channel, operator;
SELECT kind, sum(entries) AS entries, sum(net) AS net FROM prepay.finance_monthly GROUP BY kind ORDER BY kind;
SELECT channel, sum(money_in) AS money_in, sum(money_out) AS money_out FROM prepay.finance_yearly
 WHERE kind <> 'consumption' GROUP BY channel ORDER BY channel;
SELECT pg_temp.who(operator) AS operator, sum(money_in) AS money_in FROM prepay.finance_daily
 GROUP BY 1 ORDER BY 1;
SELECT entry_id, kind, account_code, amount, balance_after, channel, external_ref, pg_temp.who(operator) AS operator,
       reason, reverses_entry, reversed_kind, reversed_by
  FROM prepay.order_overview ORDER BY entry_id;
-- the ledger nets to the balances
SELECT (SELECT sum(net) FROM prepay.finance_daily) AS finance_net, (SELECT sum(balance) FROM prepay.account) AS balances;

-- ---------------------------------------------------------------------
-- trail of A1: opening, every movement with its running balance, closing
-- ---------------------------------------------------------------------
SELECT line, kind, entry_id, amount, balance, energy, meter_id, read_from, read_to, channel, external_ref,
       pg_temp.who(operator) AS operator, reason
  FROM prepay.account_trail(1, 1, '2000-01-01', '2100-01-01');
-- from the reversal on: the opening balance is 130
SELECT line, kind, entry_id, amount, balance, energy, reason
  FROM prepay.account_trail(1, 1, (SELECT created_at FROM prepay.ledger WHERE kind = 'reversal'), '2100-01-01', true);
SELECT regress.try($$SELECT count(*) FROM prepay.account_trail(1, 99, '2000-01-01', '2100-01-01')$$);
SELECT regress.try($$SELECT count(*) FROM prepay.account_trail(1, 1, '2100-01-01', '2000-01-01')$$);

-- ---------------------------------------------------------------------
-- lost contact, alarms, arrears
-- ---------------------------------------------------------------------
SELECT meter_code, building, room, gateway_name, account_code, cause, lost_since, last_read_at
  FROM prepay.lost_meters ORDER BY meter_id;
SELECT gateway_name, transport, address, lost_since, meters, last_read_at FROM prepay.lost_gateways;
SELECT kind, account_code, meter_code, room, detail FROM prepay.active_alarms ORDER BY alarm_id;
SELECT kind, active, count(*) FROM prepay.alarm_history GROUP BY 1, 2 ORDER BY 1, 2;
SELECT account_code, mode, balance, owed, credit_limit, alarm_level, protect, arrears_since IS NOT NULL AS has_since,
       last_payment, meters_tripped
  FROM prepay.arrears ORDER BY account_id;

-- ---------------------------------------------------------------------
-- forecast, cuts and reminders, seen from 2026-03-11 00:05 (+08)
-- ---------------------------------------------------------------------
-- A5 uses 1 kWh an hour at 1.00 and has 6.00 left: arrears at 06:00, after the
-- no-cut window (22:00-07:00) the cut is at 07:00.  A4 the same, but on keep-power.
-- A3: 5.625 a day, then 0.5 a day since the 9th (the window counts from the 4th:
-- 29.125 kWh in 7 days); A1 and A2 have no consumption in the window.
-- A2 is in arrears: its trip was queued when the reading came, i.e. now (not shown)
SELECT account_code, balance, available, protect, meters, meters_to_cut, recent_energy_per_day,
       recent_cost_per_day, run_out_at, method, CASE WHEN status <> 'trip queued' THEN cut_at END AS cut_at,
       status, CASE WHEN status <> 'trip queued' THEN reason END AS reason
  FROM prepay.balance_forecast_at(1, '2026-03-11 00:05+08') ORDER BY account_id;
SELECT account_code, cut_at = (SELECT not_before FROM prepay.command WHERE account_id = 2 AND state = 'queued') AS cut_at_queued_trip
  FROM prepay.balance_forecast_at(1, '2026-03-11 00:05+08') WHERE status = 'trip queued';
SELECT account_code, balance, run_out_at, cut_at, will_be_cut, meters_to_cut, status, why
  FROM prepay.cut_forecast(1, '24 hours', '2026-03-11 00:05+08');
-- the reminder comes once, within 30 minutes of the cut
SELECT prepay.send_cut_reminders(1, '2026-03-11 06:20+08') AS at_0620;
SELECT prepay.send_cut_reminders(1, '2026-03-11 06:40+08') AS at_0640;
SELECT prepay.send_cut_reminders(NULL, '2026-03-11 06:50+08') AS at_0650;
SELECT account_id, funded_by_entry, predicted_cut FROM prepay.cut_reminder;
SELECT n.account_id, n.kind, n.alarm_level, n.balance, n.message
  FROM prepay.notification n JOIN prepay.cut_reminder r USING (site_id, notification_id);
-- a later lead time (60 minutes) reminds earlier; a new payment starts a new prediction
UPDATE prepay.site SET cut_reminder_lead = '1 hour';
SELECT prepay.recharge(1, 5, 1, 'card', 'K-5b');
SELECT prepay.send_cut_reminders(1, '2026-03-11 06:10+08') AS after_payment;
SELECT account_id, funded_by_entry, predicted_cut FROM prepay.cut_reminder ORDER BY reminder_id;

-- ---------------------------------------------------------------------
-- suspicious consumption
-- ---------------------------------------------------------------------
-- the last 2 days against the 8 before: M2 used nothing while reporting, M4 fell from
-- 5.625 to 0.5 a day; M1's register went backwards
SELECT kind, account_code, meter_code, room, since, recent, usual, detail
  FROM prepay.suspicious_consumption_at(1, '2026-03-11 00:05+08', p_days => 2) ORDER BY kind, meter_id;
-- a lowered multiplier is logged with who did it
UPDATE prepay.meter SET multiplier = 2 WHERE meter_id = 3;
UPDATE prepay.meter SET multiplier = 2 WHERE meter_id = 3;
SELECT meter_id, old_multiplier, new_multiplier, pg_temp.who(changed_by) FROM prepay.multiplier_change;
SELECT kind, meter_code, recent, usual, pg_temp.who(substring(detail from 'by (.*)$')) AS by
  FROM prepay.suspicious_consumption WHERE site_id = 1;
-- line-loss jumps come from periodic billing's prepay.loss_period: three
-- months of a loss rule at 2.000 %, 3.500 % and 9.250 %: only the last
-- rise (5.750 points) reaches the 5-point default
INSERT INTO prepay.account_group (site_id, name) VALUES (1, 'everyone');
INSERT INTO prepay.apportion_rule (site_id, name, kind, method, group_id, master_meters, price, active_from)
VALUES (1, 'supply loss', 'loss', 'consumption', 1, '{1}', 1, '2026-01-01');
INSERT INTO prepay.apportionment (site_id, rule_id, period_start, period_end, kind, method, master_energy,
                                  downstream_energy, shared_energy, loss_pct, price, total_amount, allocated,
                                  unallocated, total_weight)
VALUES (1, 1, '2026-01-01', '2026-02-01', 'loss', 'consumption', 1000, 980, 20, 2.000, 1, 0, 0, 0, 0),
       (1, 1, '2026-02-01', '2026-03-01', 'loss', 'consumption', 1000, 965, 35, 3.500, 1, 0, 0, 0, 0),
       (1, 1, '2026-03-01', '2026-04-01', 'loss', 'consumption', 1000, 907.5, 92.5, 9.250, 1, 0, 0, 0, 0);
SELECT * FROM prepay.loss_jumps(1);
SELECT * FROM prepay.loss_jumps(1, 1.5);
SELECT kind, recent, usual FROM prepay.suspicious_consumption_at(1, '2026-04-02 00:05+08') WHERE kind = 'loss_jump';

-- ---------------------------------------------------------------------
-- exports: CSV for Excel (docs/REPORTS.md); GBK for Excel on Chinese Windows
-- ---------------------------------------------------------------------
COPY (SELECT account_code, account_name, period, tier, energy, cost FROM prepay.energy_account_monthly
       WHERE month = '2026-03-01' AND account_code = 'A1' ORDER BY period, tier)
  TO STDOUT WITH (FORMAT csv, HEADER);
SELECT encode(convert_to('电费', 'GBK'), 'hex') AS gbk_bytes;

-- every view column carries a comment
SELECT c.relname, a.attname AS uncommented_view_column
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'prepay' AND c.relkind = 'v' AND a.attnum > 0 AND col_description(c.oid, a.attnum) IS NULL;
-- a batch after the fold: its delta adds to the folded row of the same day
-- (M1 2026-03-02 12:00-18:00, 4 kWh, peak in tier 2 at 1.50 = 6.00)
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-02 18:00+08', 40);
SELECT day, period, tier, energy, cost, charged, charges FROM prepay.energy_pending ORDER BY day, period, tier;
SELECT day, period, tier, energy, cost, charged, charges FROM prepay.energy_day
 WHERE meter_id = 1 AND day = '2026-03-02' ORDER BY period, tier;
(SELECT * FROM prepay.energy_from_ledger(1, '2025-01-01', '2027-01-01') EXCEPT SELECT * FROM prepay.energy_day)
UNION ALL
(SELECT * FROM prepay.energy_day EXCEPT SELECT * FROM prepay.energy_from_ledger(1, '2025-01-01', '2027-01-01'));
-- the board is written twice (the view, and room_status_at for any time):
-- both give the same rows, whatever the data (no row on one side only)
SELECT count(*) AS board_rows_differing FROM (
    (SELECT * FROM prepay.room_status WHERE site_id = 1 EXCEPT SELECT * FROM prepay.room_status_at(1, pg_catalog.now()))
    UNION ALL
    (SELECT * FROM prepay.room_status_at(1, pg_catalog.now()) EXCEPT SELECT * FROM prepay.room_status WHERE site_id = 1)) d;
SELECT count(*) > 0 AS board_has_rows FROM prepay.room_status WHERE site_id = 1;
DROP ROLE regress_cashier;
SELECT * FROM prepay.check_ledger();
