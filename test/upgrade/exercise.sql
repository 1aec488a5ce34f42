-- test/upgrade/exercise.sql: what test/t/200_upgrade.pl compares between a
-- database upgraded from the previous release and a fresh install, both
-- filled by test/upgrade/fill.sql: more readings and money after the
-- upgrade, then balances, the ledger, charges explained, reports, alarms,
-- commands, a bill's overdue notice and the auditor's check.  Prints only
-- what does not depend on when it ran.
SET timezone = 'Asia/Shanghai';
SET datestyle = 'ISO';
\pset footer off
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-03-02 08:00+08', 1060.00), (1, 2, '2026-03-02 20:00+08', 20.90),
    (1, 3, '2026-03-02 12:00+08', 25.00), (1, 1, '2026-03-02 08:00+08', 1060.00);
SELECT prepay.recharge(1, 2, 50.00, 'alipay', 'AP-1');
SELECT prepay.reverse(1, (SELECT max(entry_id) FROM prepay.ledger WHERE external_ref = 'AP-1'), 'duplicate payment');
SELECT prepay.fold_rollups();
SELECT account_id, code, balance, alarm_level, prepay.balance(1, account_id) FROM prepay.account ORDER BY account_id;
SELECT entry_id, account_id, kind, amount, balance_after, energy, exact_charge, channel, external_ref, reverses_entry,
       l.read_from, l.read_to,
       prepay._pricing_record(l.pieces, c.tariff_id, c.multiplier, c.version_from, c.period, l.read_from, l.read_to, l.energy, l.exact_charge) AS pieces
  FROM prepay.ledger l LEFT JOIN prepay.charge_pricing c ON c.site_id = l.site_id AND c.pricing_id = l.pricing_id ORDER BY entry_id;
SELECT l.entry_id, a.actor_id, a.login
  FROM prepay.ledger l LEFT JOIN prepay.actor a ON a.site_id = l.site_id AND a.actor_id = l.actor_id ORDER BY l.entry_id;
SELECT e.entry_id, x.*
  FROM prepay.ledger e, LATERAL prepay.explain_charge(1, e.entry_id) x
 WHERE e.kind = 'consumption' ORDER BY e.entry_id, x.read_from, x.piece_from, x.tier;
SELECT meter_id, read_at, energy, quarantine_reason FROM prepay.reading ORDER BY meter_id, read_at;
SELECT meter_id, action, state, reason FROM prepay.command ORDER BY command_id;
SELECT account_id, meter_id, kind, detail, cleared_at IS NULL AS active FROM prepay.alarm ORDER BY alarm_id;
SELECT account_id, alarm_level, message FROM prepay.notification ORDER BY notification_id;
SELECT * FROM prepay.energy_meter_daily ORDER BY day, meter_id, period, tier;
SELECT * FROM prepay.energy_account_monthly ORDER BY month, account_id, period, tier;
SELECT * FROM prepay.energy_account_yearly ORDER BY year, account_id, period, tier;
SELECT site_id, kind, channel, operator, entries, money_in, money_out, net FROM prepay.finance_monthly ORDER BY 1, 2, 3, 4;
SELECT line, kind, entry_id, amount, balance, energy, meter_id, channel, external_ref, reason
  FROM prepay.account_trail(1, 1, '2026-03-01 00:00+08', '2026-03-03 00:00+08') ORDER BY line;
SELECT * FROM prepay.rate(1, 2, '2026-03-02 20:00+08', '2026-03-03 08:00+08', 12);
SELECT * FROM prepay.simulate_bill(1, 1, 2, '2026-03-01 00:00+08', '2026-04-01 00:00+08');
-- the bill overdue notice: an issued bill unpaid after its due date is told once
INSERT INTO prepay.notify_site (site_id, language) VALUES (1, 'zh');
SELECT bill_id AS overdue_bill FROM prepay.draft_bill(1, 3, '2026-03-01', '2026-04-01') \gset
SELECT state FROM prepay.confirm_bill(1, :overdue_bill);
SELECT state, amount_due FROM prepay.issue_bill(1, :overdue_bill);
UPDATE prepay.bill SET due_on = prepay._local_day(1, now()) - 2 WHERE bill_id = :overdue_bill;
SELECT prepay.send_overdue_notices(1) AS told;
SELECT prepay.send_overdue_notices(1) AS told_again;
SELECT kind, bill_id, regexp_replace(message, '\d{4}-\d{2}-\d{2}', 'YYYY-MM-DD') AS message
  FROM prepay.notification WHERE kind IN ('bill_issued', 'bill_overdue') ORDER BY notification_id;
SELECT * FROM prepay.check_ledger();
