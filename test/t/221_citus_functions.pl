# test/t/221_citus_functions.pl
#
# The coordinator-side functions on Citus give what they give on one node
# (docs/SCALE-OUT.md): a month of a plaza (fees, an allowance, common area
# and line loss shared, a two-part tariff, a postpaid account) on a site
# whose shards are on one worker, beside a second site on the other worker,
# each step run on a single node and on the cluster and compared:
#   - the periodic run (run_periodic: fees, allowances, apportionment,
#     basic charges, bills drafted) and the bills (draft, confirm, issue,
#     pay);
#   - the reports: room status, energy views, finance, the account trail,
#     forecasts, cut reminders, suspicious consumption, loss jumps;
#   - explain_charge, simulate_bill, rerate after a back-dated price;
#   - a recharge batch and a thresholds batch, run by run_due_batches;
#   - fold_rollups and rebuild_rollups; check_ledger() empty.
# Ids are compared only where a single node draws them the same way (the
# ledger, alarm, command and notification ids are drawn per node on Citus):
# rows are listed in id order, without the ids.
# Skipped when Citus is not installed (citus.so in the server's lib dir).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

skip_unless_citus();

my ($coord, @workers) = start_citus_cluster(2);
my $single = PostgreSQL::Test::Cluster->new('single');
$single->init;
$single->append_conf('postgresql.conf', "timezone = 'UTC'");
$single->start;
$single->safe_psql('postgres', 'CREATE EXTENSION prepay');

# site 1, and the first site after it whose shards are on the other worker
# (the same sites created on the single node)
$_->safe_psql('postgres', q{INSERT INTO prepay.site (name, time_zone, low_balance_threshold, pretrip_threshold, fees_may_cut, loss_alarm_pct)
	VALUES ('Plaza', 'Asia/Shanghai', 50, 10, true, 5)}) for $single, $coord;
my $other;
for my $try (2 .. 20)
{
	$_->safe_psql('postgres', "INSERT INTO prepay.site (name, time_zone) VALUES ('Site $try', 'Asia/Shanghai')") for $single, $coord;
	if (shard_port($coord, $try) ne shard_port($coord, 1)) { $other = $try; last; }
}
ok(defined $other, "site 1 and site $other are on different workers");

# one step: run on the single node, then on the cluster; the same output
sub step
{
	my ($sql, $name) = @_;
	($name) = $sql =~ /^\s*(.{0,70})/s unless defined $name;
	my ($wret, $want, $werr) = $single->psql('postgres', $sql);
	my ($ret, $got, $err) = $coord->psql('postgres', $sql);
	# the same output and the same errors (none in these steps)
	my @errors = map { join("\n", $_ =~ /(ERROR:.*)$/mg) } $werr, $err;
	is("$got\n$errors[1]", "$want\n$errors[0]", "as on one node: $name") or diag($err);
	return $got;
}

# ---------------------------------------------------------------------
# the plaza (site 1): October 2026
# ---------------------------------------------------------------------
my $setup = qq{
SET timezone = 'Asia/Shanghai';
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (1, 'two-part');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 1.0);
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition)
VALUES (1, 2, '2026-01-01', '{"price": 1.0, "basic": {"by": "capacity", "price": 20}}');
SELECT prepay.open_account(1, 'S1', 'Tea house', 1, p_floor_area => 100);
SELECT prepay.open_account(1, 'S2', 'Bookshop', 1, p_floor_area => 50);
SELECT prepay.open_account(1, 'O3', 'Office', 1, 'postpaid', p_floor_area => 50);
SELECT prepay.open_account(1, 'F4', 'Workshop', 2);
UPDATE prepay.account SET opened_at = '2026-09-01' WHERE site_id = 1;
UPDATE prepay.account SET capacity_kva = 100 WHERE site_id = 1 AND code = 'F4';
UPDATE prepay.account SET low_balance_threshold = 800 WHERE site_id = 1 AND code = 'S2';
INSERT INTO prepay.meter (site_id, code, building) VALUES
    (1, 'M1', 'A'), (1, 'M2', 'A'), (1, 'M3', 'B'), (1, 'M4', 'B'), (1, 'MC', NULL), (1, 'MU', NULL);
-- (on Citus a function's arguments are values, not a query of the tables:
-- accounts S1, S2, O3, F4 are 1 to 4, meters M1 to M4 1 to 4, MC 5, MU 6,
-- drawn on the coordinator as on one node)
SELECT prepay.attach_meter(1, 1, 1, 100, '2026-10-01 00:00');
SELECT prepay.attach_meter(1, 2, 2, 100, '2026-10-01 00:00');
SELECT prepay.attach_meter(1, 3, 3, 100, '2026-10-01 00:00');
SELECT prepay.attach_meter(1, 4, 4, 100, '2026-10-01 00:00');
SELECT prepay.record_master_reading(1, 5, '2026-10-01 00:00', 1000);
SELECT prepay.record_master_reading(1, 6, '2026-10-01 00:00', 5000);
SELECT prepay.recharge(1, 1, 2000.00, 'bank', 'R-S1') IS NOT NULL;
SELECT prepay.recharge(1, 2, 900.00, 'bank', 'R-S2') IS NOT NULL;
SELECT prepay.recharge(1, 4, 3000.00, 'bank', 'R-F4') IS NOT NULL;
INSERT INTO prepay.account_group (site_id, name) VALUES (1, 'tenants'), (1, 'allowance');
INSERT INTO prepay.account_group_member (site_id, group_id, account_id, ratio)
SELECT 1, g.group_id, a.account_id, 1 FROM prepay.account_group g JOIN prepay.account a ON a.site_id = g.site_id
 WHERE g.site_id = 1 AND (g.name = 'tenants' AND a.code IN ('S1', 'S2', 'O3') OR g.name = 'allowance' AND a.code = 'S1');
INSERT INTO prepay.charge_item (site_id, name, basis, price, recurrence, due_on, settle, group_id, active_from)
SELECT 1, v.name, v.basis, v.price, 'monthly', NULL, v.settle, g.group_id, '2026-10-01'
  FROM (VALUES ('rent', 'per_m2', 10, 'deduct'), ('property fee', 'fixed', 31, 'bill')) AS v(name, basis, price, settle)
  JOIN prepay.account_group g ON g.site_id = 1 AND g.name = 'tenants';
INSERT INTO prepay.allowance_rule (site_id, name, amount, group_id, active_from)
SELECT 1, 'basic free', 20, group_id, '2026-10-01' FROM prepay.account_group WHERE site_id = 1 AND name = 'allowance';
INSERT INTO prepay.apportion_rule (site_id, name, kind, method, group_id, master_meters, downstream_meters, price, settle, active_from)
VALUES (1, 'corridor', 'common_area', 'area', 1, '{5}', '{}', 1.2, 'deduct', '2026-10-01'),
       (1, 'transformer loss', 'loss', 'consumption', 1, '{6}', '{5}', 1, 'bill', '2026-10-01');
-- site $other: one shop on a flat tariff
INSERT INTO prepay.tariff (site_id, name) VALUES ($other, 'flat');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price)
SELECT $other, tariff_id, '2026-01-01', 0.5 FROM prepay.tariff WHERE site_id = $other;
INSERT INTO prepay.meter (site_id, code, building) VALUES ($other, 'N1', 'A');
};
step($setup, 'the plaza and the other site set up');
# (a function's arguments are values on Citus: read the ids first)
my ($tariff2, $meter2) = split /\|/, $coord->safe_psql('postgres', qq{
	SELECT (SELECT tariff_id FROM prepay.tariff WHERE site_id = $other), (SELECT meter_id FROM prepay.meter WHERE site_id = $other)});
step(qq{SELECT prepay.open_account($other, 'N1', 'Noodles', $tariff2) IS NOT NULL}, 'an account on the other site');
my $acc2 = $coord->safe_psql('postgres', "SELECT account_id FROM prepay.account WHERE site_id = $other");
step(qq{SELECT prepay.attach_meter($other, $acc2, $meter2, 0, '2026-10-01 00:00+08');
	SELECT prepay.recharge($other, $acc2, 40, 'cash', 'N-R1') IS NOT NULL}, 'its meter and a recharge');

# readings: every tenant meter every 6 hours through October, more for F4;
# the other site's shop runs down to a cut; the master meters at the end
# (texts the rating trigger writes show times in the time zone of the
# session it runs in: on Citus the worker's, here UTC on every node)
step(q{
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
SELECT 1, m.meter_id, timestamptz '2026-10-01 00:00+08' + k * interval '6 hours',
       100 + k * CASE m.code WHEN 'M1' THEN 1.5 WHEN 'M2' THEN 0.5 WHEN 'M3' THEN 0.75 ELSE 4 END
  FROM prepay.meter m, generate_series(1, 124) k
 WHERE m.site_id = 1 AND m.code IN ('M1', 'M2', 'M3', 'M4')
 ORDER BY 2, 3;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 3, '2026-10-20 03:00+08', 90);
SELECT prepay.record_master_reading(1, 5, '2026-11-01 00:00+08', 1200);
SELECT prepay.record_master_reading(1, 6, '2026-11-01 00:00+08', 5800);
SELECT count(*) FROM prepay.reading WHERE site_id = 1 AND quarantine_reason IS NULL},
	'a month of readings rated, a register going backwards quarantined');
step(qq{
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
SELECT $other, $meter2, timestamptz '2026-10-01 00:00+08' + k * interval '1 hour', k * 2.5
  FROM generate_series(1, 30) k;
SELECT balance, alarm_level FROM prepay.account WHERE site_id = $other},
	'the other site\'s shop runs into arrears');

# ---------------------------------------------------------------------
# the periodic run and the bills
# ---------------------------------------------------------------------
step(q{SELECT prepay.run_periodic(1, '2026-10-01')}, 'run_periodic on October 1');
step(q{SELECT prepay.run_periodic(1, '2026-10-15')}, 'run_periodic on October 15');
step(q{SELECT prepay.run_periodic(1, '2026-11-01')}, 'run_periodic on November 1 (apportionment, basic charges, bills)');
step(q{SELECT prepay.run_periodic(1, '2026-11-01')}, 'run_periodic again: nothing more');
step(qq{SELECT prepay.run_periodic($other, '2026-11-01')}, 'run_periodic of the other site');
step(q{SELECT kind, method, master_energy, downstream_energy, shared_energy, loss_pct, total_amount, allocated, unallocated, total_weight, note
         FROM prepay.apportionment ORDER BY site_id, rule_id, period_start}, 'the apportionments');
step(q{SELECT a.code, b.period_start, b.period_end, b.mode, b.state, b.wallet_balance, b.energy, b.charges, b.amount_due
         FROM prepay.bill b JOIN prepay.account a USING (site_id, account_id) ORDER BY b.site_id, a.code, b.period_start},
	'the bills drafted');
step(q{SELECT a.code, l.line_no, l.kind, l.description, l.quantity, l.unit_price, l.amount, l.payable
         FROM prepay.bill_line l JOIN prepay.bill b USING (site_id, bill_id) JOIN prepay.account a ON a.site_id = b.site_id AND a.account_id = b.account_id
        ORDER BY l.site_id, a.code, l.line_no}, 'the bill lines');
step(q{SELECT period_start, amount_due FROM prepay.draft_bill(1, 2, '2026-10-01', '2026-11-01')}, 'a bill redrafted');
my $bill = $coord->safe_psql('postgres', q{
	SELECT b.bill_id FROM prepay.bill b JOIN prepay.account a USING (site_id, account_id) WHERE a.site_id = 1 AND a.code = 'O3' AND b.period_start = '2026-10-01'});
my $o3 = $coord->safe_psql('postgres', q{SELECT account_id FROM prepay.account WHERE site_id = 1 AND code = 'O3'});
is($single->safe_psql('postgres', q{SELECT b.bill_id FROM prepay.bill b JOIN prepay.account a USING (site_id, account_id) WHERE a.site_id = 1 AND a.code = 'O3' AND b.period_start = '2026-10-01'}),
	$bill, 'bill ids are drawn on the coordinator, as on one node');
step(qq{SELECT state FROM prepay.confirm_bill(1, $bill); SELECT state FROM prepay.issue_bill(1, $bill)}, 'the postpaid bill confirmed and issued');
step(qq{SELECT prepay.pay_bills(1, $o3, 10.00, 'bank', 'PAY-O3-1') IS NOT NULL}, 'a part payment of the bill');
step(q{SELECT * FROM prepay.bill_arrears ORDER BY site_id, account_id}, 'bill arrears');

# ---------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------
step(q{SELECT site_id, account_id, account_code, building, room, meter_code, balance, alarm_level, relay_state
         FROM prepay.room_status ORDER BY site_id, account_code, meter_code}, 'room_status');
step(q{SELECT * FROM prepay.room_status_at(1, '2026-10-15 12:00+08') ORDER BY 1, 2, 3}, 'room_status_at');
step(q{SELECT * FROM prepay.energy_account_daily WHERE day BETWEEN '2026-10-09' AND '2026-10-11' ORDER BY site_id, account_id, day, period, tier},
	'energy_account_daily');
step(q{SELECT * FROM prepay.energy_account_monthly ORDER BY site_id, account_id, month, period, tier}, 'energy_account_monthly');
step(q{SELECT * FROM prepay.energy_meter_monthly ORDER BY site_id, meter_id, month, period, tier}, 'energy_meter_monthly');
step(q{SELECT * FROM prepay.energy_from_ledger(1, '2026-10-01', '2026-11-01') ORDER BY 1, 2, 3}, 'energy_from_ledger');
step(q{SELECT kind, channel, entries, money_in, money_out, net FROM prepay.finance_monthly ORDER BY site_id, month, kind, channel},
	'finance_monthly');
step(q{SELECT kind, account_code, amount, balance_after, channel, external_ref, reason FROM prepay.order_overview
        ORDER BY site_id, entry_id}, 'order_overview');
step(qq{SELECT line, kind, amount, balance, energy, reason
          FROM prepay.account_trail(1, $o3, '2026-10-01 00:00+08', '2026-11-02 00:00+08') ORDER BY line}, 'account_trail');
step(q{SELECT site_id, account_id, balance FROM prepay.arrears ORDER BY 1, 2}, 'arrears');
step(q{SELECT account_id, balance, available, status FROM prepay.balance_forecast_at(1, '2026-11-01 00:00+08')
        ORDER BY account_id}, 'balance_forecast_at');
step(q{SELECT account_id, balance, cut_at, will_be_cut, status FROM prepay.cut_forecast(1, '30 days', '2026-11-01 00:00+08')},
	'cut_forecast');
step(q{SELECT kind, account_code, meter_code, recent, usual, detail
         FROM prepay.suspicious_consumption_at(1, '2026-10-21 00:05+08', p_days => 2) ORDER BY kind, meter_id},
	'suspicious_consumption_at');
step(q{SELECT * FROM prepay.loss_jumps(1, 1.5)}, 'loss_jumps');
step(q{SELECT (SELECT count(*) FROM prepay.balance_forecast), (SELECT count(*) FROM prepay.cuts_next_24h),
	          (SELECT count(*) FROM prepay.suspicious_consumption)}, 'the views over every site: balance_forecast, cuts_next_24h, suspicious_consumption');
step(q{SELECT kind, meter_id, account_id, detail FROM prepay.active_alarms ORDER BY site_id, kind, meter_id, account_id}, 'active_alarms');
step(q{SELECT prepay.allowance_left(1, 1), prepay.meter_register_at(1, 3, '2026-10-20 00:00+08')}, 'allowance_left and meter_register_at');
step(qq{SELECT prepay.send_cut_reminders(NULL, '2026-10-02 04:50+08');
	SELECT r.site_id, r.account_id, r.predicted_cut, n.kind, n.message
	  FROM prepay.cut_reminder r JOIN prepay.notification n USING (site_id, notification_id) ORDER BY 1, 2},
	'send_cut_reminders over every site, each reminder with its notification');

# ---------------------------------------------------------------------
# pricing tools: explain_charge, simulate_bill, rerate
# ---------------------------------------------------------------------
step(q{SELECT entry_id FROM prepay.ledger WHERE site_id = 1 AND kind = 'consumption' ORDER BY entry_id OFFSET 5 LIMIT 1 \gset
	SELECT meter_id, read_from, register_from, read_to, register_to, multiplier, energy, period, tier, piece_energy, unit_price, amount, charged
	  FROM prepay.explain_charge(1, :entry_id)}, 'explain_charge');
step(q{SELECT * FROM prepay.simulate_bill(1, 1, 2, '2026-10-01 00:00+08', '2026-11-01 00:00+08')}, 'simulate_bill');
step(q{INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-10-16 00:00+08', 1.1);
	SELECT account_id, charges, charged, repriced, adjustment FROM prepay.rerate(1, NULL, '2026-10-01 00:00+08', '2026-11-01 00:00+08')},
	'rerate after a back-dated price');
step(q{SELECT account_id, charges, charged, repriced, adjustment FROM prepay.rerate(1, NULL, '2026-10-01 00:00+08', '2026-11-01 00:00+08')},
	'rerate again: nothing more');
step(q{SELECT prepay.max_demand(1, 4, '2026-10-01 00:00+08', '2026-11-01 00:00+08'),
	          prepay.account_consumption(1, 4, '2026-10-01 00:00+08', '2026-11-01 00:00+08')}, 'max_demand and account_consumption');

# ---------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------
step(qq{SELECT prepay.create_batch(1, 'PAY-10', 'recharge', 'account',
	'[{"code": "S1", "amount": 10, "external_ref": "B-1"}, {"code": "S2", "amount": 20.50, "external_ref": "B-2"},
	  {"code": "ZZ", "amount": 5, "external_ref": "B-3"}, {"code": "S1", "amount": 10, "external_ref": "B-1"}]',
	'{"channel": "bank"}') IS NOT NULL;
	SELECT prepay.create_batch($other, 'PAY-N', 'recharge', 'account', '[{"code": "N1", "amount": 100, "external_ref": "NB-1"}]',
	'{"channel": "bank"}') IS NOT NULL;
	SELECT prepay.create_batch(1, 'THR-A', 'set_thresholds', 'account', '{"building": "A"}', '{"low_balance": 80, "pretrip": 40}') IS NOT NULL;
	SELECT site_id, client_ref, action, state, items_run, pending, done, failed, skipped FROM prepay.run_due_batches() ORDER BY 1, 2},
	'three batches on two sites run by run_due_batches');
step(q{SELECT site_id, client_ref, action, state, items, pending, done, failed, skipped, last_error FROM prepay.batch_summary ORDER BY 1, 2},
	'batch_summary');
step(q{SELECT i.site_id, b.client_ref, i.item_no, i.account_id, i.state, regexp_replace(i.message, '[0-9]+$', 'N')
         FROM prepay.batch_item i JOIN prepay.batch b USING (site_id, batch_id) ORDER BY 1, 2, 3}, 'the batch items');
step(q{SELECT * FROM prepay.run_due_batches()}, 'run_due_batches again: nothing');

# ---------------------------------------------------------------------
# the ledger, rollups, integrity
# ---------------------------------------------------------------------
step(q{SELECT l.site_id, a.code, l.kind, l.amount, l.balance_after, l.energy, l.exact_charge, l.reason
         FROM prepay.ledger l JOIN prepay.account a USING (site_id, account_id) ORDER BY l.site_id, l.entry_id},
	'the whole ledger, in entry order');
step(q{SELECT * FROM prepay.energy_month ORDER BY 1, 2, 3, 5, 6}, 'energy_month before the fold');
step(q{SELECT prepay.fold_rollups(); SELECT * FROM prepay.energy_day ORDER BY 1, 2, 3, 5, 6}, 'fold_rollups');
step(q{SELECT * FROM prepay.rebuild_rollups(1); SELECT * FROM prepay.energy_month ORDER BY 1, 2, 3, 5, 6}, 'rebuild_rollups');
step(q{SELECT * FROM prepay.check_ledger()}, 'check_ledger');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), 0, 'check_ledger() is empty on the cluster');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.ledger}), $single->safe_psql('postgres', q{SELECT count(*) FROM prepay.ledger}),
	'as many ledger entries as on one node');

done_testing();
