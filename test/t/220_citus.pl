# test/t/220_citus.pl
#
# prepay distributed on Citus (docs/SCALE-OUT.md): a coordinator and two
# workers on loopback, CREATE EXTENSION prepay and prepay.distribute() on
# the coordinator, then
#   - the README tour gives the results it gives on one node (a single
#     node runs it beside; ids aside, which Citus draws per node);
#   - two sites whose shards are on different workers, rated in one
#     multi-row INSERT through the coordinator;
#   - an INSERT of one site's readings is planned as one task;
#   - 200 readings per site: no id collides, each site's entries in order;
#   - a mapped non-superuser sees its site's rows and nothing of the other;
#   - prepay.check_ledger() is empty, the rollups equal the ledger;
#   - the agent polls the simulated meters of both sites through the
#     coordinator; a trip in arrears reaches the meter, a recharge closes it.
# Skipped when Citus is not installed (citus.so in the server's lib dir).

use strict;
use warnings;
use HTTP::Tiny;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

skip_unless_citus();

my $top = $ENV{TESTDIR};
my $tmp = PostgreSQL::Test::Utils::tempdir;

my $coord = citus_node('coordinator');
my @workers = (citus_node('worker1'), citus_node('worker2'));
my $coord_port = $coord->port;
$coord->safe_psql('postgres', "SELECT citus_set_coordinator_host('127.0.0.1', $coord_port)");
$coord->safe_psql('postgres', "SELECT citus_add_node('127.0.0.1', " . $_->port . ")") for @workers;
$coord->safe_psql('postgres', 'CREATE EXTENSION prepay');

# without Citus: a clear refusal; on the coordinator: every table distributed
my $single = PostgreSQL::Test::Cluster->new('single');
$single->init;
$single->start;
$single->safe_psql('postgres', 'CREATE EXTENSION prepay');
my ($ret, $out, $err) = $single->psql('postgres', 'SELECT prepay.distribute()', extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/55000.*Citus is not installed/s, 'without Citus distribute() refuses with 55000');
like($err, qr/HINT:.*citus/is, '... and says what to install');

my $distributed = $coord->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE distribution LIKE 'by site_id, colocation %'), count(*) FILTER (WHERE distribution = 'reference'),
	        count(DISTINCT distribution) FILTER (WHERE distribution <> 'reference') FROM prepay.distribute()");
# prepay.reading is partitioned: Citus distributes it and its partition
my $tables = $coord->safe_psql('postgres',
	"SELECT count(*) FROM pg_class WHERE relnamespace = 'prepay'::regnamespace AND relkind IN ('r', 'p')");
is($distributed, ($tables - 4) . "|4|1", 'every table distributed by site_id in one colocation group, the 4 mapping tables reference tables');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.distribute()'), $tables, 'distribute() again changes nothing');

# the README tour, on the cluster and on the single node
my @tour_setup = (
	q{INSERT INTO prepay.site (name, time_zone) VALUES ('Riverside Plaza', 'Asia/Shanghai')},
	q{INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'shops')},
	q{INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-03-01 00:00+08', 0.583)},
	q{INSERT INTO prepay.meter (site_id, code, building, floor, room, multiplier)
	  VALUES (1, 'DDSY-0001', 'A', '1', '101', 1), (1, 'DTSY-0002', 'A', '1', '102', 40)},
	q{SELECT prepay.open_account(1, 'A-101', 'Noodle shop', 1, p_phone => '13800000000')},
	q{SELECT prepay.attach_meter(1, 1, 1, p_initial_energy => 1000.00, p_at => '2026-03-01 00:00+08')},
	q{SELECT prepay.recharge(1, 1, 30.00, 'wechat', 'WX-20260301-0001')},
	q{SELECT prepay.recharge(1, 1, 30.00, 'wechat', 'WX-20260301-0001')},
	q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
	    (1, 1, '2026-03-01 08:00+08', 1020.00), (1, 1, '2026-03-01 12:00+08', 1050.00)});
my @tour_checks = (
	q{SELECT prepay.balance(1, 1)},
	q{SELECT kind, amount, balance_after, energy, exact_charge FROM prepay.ledger ORDER BY entry_id},
	q{SELECT kind, detail FROM prepay.alarm WHERE cleared_at IS NULL ORDER BY alarm_id},
	q{SELECT alarm_level, message FROM prepay.notification ORDER BY notification_id},
	q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 14:00+08', 1052.00);
	  SELECT meter_id, action, state, reason FROM prepay.command ORDER BY command_id},
	q{SELECT prepay.recharge(1, 1, 100.00, 'cash', 'RCPT-7731') IS NOT NULL;
	  SELECT action, state FROM prepay.command ORDER BY command_id},
	q{SELECT * FROM prepay.check_ledger()},
	q{SELECT entry_id FROM prepay.ledger WHERE site_id = 1 AND kind = 'consumption' ORDER BY entry_id OFFSET 1 LIMIT 1 \gset
	  SELECT read_from, register_from, read_to, register_to, period, piece_energy, unit_price, amount, charged
	    FROM prepay.explain_charge(1, :entry_id)},
	q{INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'day and night');
	  INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 2, '2026-01-01 00:00+08', '{
	    "periods": {"day": 0.9, "night": 0.3},
	    "schedules": [{"switches": [["00:00", "night"], ["07:00", "day"], ["21:00", "night"]]}]}');
	  SELECT piece_from, piece_to, period, energy, unit_price, amount
	    FROM prepay.rate(1, 2, '2026-03-02 20:00+08', '2026-03-03 08:00+08', 12)},
	q{SELECT * FROM prepay.simulate_bill(1, 1, 2, '2026-03-01 00:00+08', '2026-04-01 00:00+08')},
	q{SELECT * FROM prepay.rerate(1, 1, '2026-03-01 00:00+08', '2026-04-01 00:00+08')});
for my $sql (@tour_setup)
{
	$single->safe_psql('postgres', $sql);
	$coord->safe_psql('postgres', $sql);
}
for my $sql (@tour_checks)
{
	my $want = $single->safe_psql('postgres', $sql);
	my ($name) = $sql =~ /^\s*(.{0,60})/s;
	is($coord->safe_psql('postgres', $sql), $want, "tour as on one node: $name");
}
my $tour_worker = $coord->safe_psql('postgres',
	"SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = get_shard_id_for_distribution_column('prepay.reading', 1)");
isnt($tour_worker, $coord_port, 'site 1 lives on a worker');

# a second site whose shards are on the other worker
my $other;
for my $try (1 .. 20)
{
	$coord->safe_psql('postgres', "INSERT INTO prepay.site (name, time_zone) VALUES ('Site $try', 'Asia/Shanghai')");
	my ($id, $port) = split /\|/, $coord->safe_psql('postgres',
		"SELECT s.site_id, p.nodeport FROM prepay.site s, pg_dist_shard_placement p
		  WHERE p.shardid = get_shard_id_for_distribution_column('prepay.site', s.site_id)
		  ORDER BY s.site_id DESC LIMIT 1");
	if ($port != $tour_worker) { $other = $id; last; }
}
ok(defined $other, "site $other lives on the other worker");
$coord->safe_psql('postgres', qq{
	INSERT INTO prepay.tariff (site_id, name) VALUES ($other, 'flat');
	INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price)
	  SELECT $other, tariff_id, '2026-01-01', 0.5 FROM prepay.tariff WHERE site_id = $other;
	INSERT INTO prepay.meter (site_id, code, tariff_id) SELECT $other, 'M-1', tariff_id FROM prepay.tariff WHERE site_id = $other;
});
# (a function's arguments are values: Citus pushes a call whose argument is
# a query of a distributed table down to a shard, where it cannot run)
my ($tariff2, $meter2) = split /\|/, $coord->safe_psql('postgres', qq{
	SELECT (SELECT tariff_id FROM prepay.tariff WHERE site_id = $other), (SELECT meter_id FROM prepay.meter WHERE site_id = $other)});
my $acc2 = $coord->safe_psql('postgres', "SELECT prepay.open_account($other, 'B-1', 'Tea house', $tariff2)");
$coord->safe_psql('postgres', qq{
	SELECT prepay.attach_meter($other, $acc2, $meter2, p_initial_energy => 0, p_at => '2026-03-05 00:00+08');
	SELECT prepay.recharge($other, $acc2, 500, 'cash', 'B-R1');
});

# both sites in one multi-row INSERT through the coordinator
my $before = $coord->safe_psql('postgres', "SELECT prepay.balance(1, 1) || ' ' || prepay.balance($other, $acc2)");
$coord->safe_psql('postgres', qq{
	INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
	  (1, 1, '2026-03-05 00:00+08', 1060.00), ($other, $meter2, '2026-03-05 01:00+08', 10.00)});
is($coord->safe_psql('postgres', qq{
	SELECT string_agg(site_id || ':' || amount, ' ' ORDER BY site_id) FROM prepay.ledger
	 WHERE kind = 'consumption' AND read_to IN ('2026-03-05 00:00+08', '2026-03-05 01:00+08')}),
	"1:-4.67 $other:-5.00", "one INSERT of two sites on two workers: both rated (balances were $before)");

# one site's INSERT is one task
like($coord->safe_psql('postgres', qq{
	EXPLAIN INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
	  ($other, $meter2, '2026-03-06 00:00+08', 11.00), ($other, $meter2, '2026-03-06 01:00+08', 12.00)}),
	qr/Task Count: 1\b/, 'an INSERT of one site is planned as one task');

# 200 readings per site, in statements of 20 rows of both sites
for my $batch (0 .. 9)
{
	$coord->safe_psql('postgres', qq{
		INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
		SELECT s.site_id, s.meter_id, timestamptz '2026-03-10 00:00+08' + (($batch * 20 + k) * interval '1 hour'),
		       s.base + ($batch * 20 + k) * 0.1
		  FROM (VALUES (1, 1::bigint, 1100.0), ($other, ${meter2}::bigint, 100.0)) AS s (site_id, meter_id, base),
		       generate_series(1, 20) k});
}
is($coord->safe_psql('postgres', qq{
	SELECT count(*) FILTER (WHERE quarantine_reason IS NULL) FROM prepay.reading
	 WHERE read_at > '2026-03-10 00:00+08'}), 400, '200 readings per site rated');
is($coord->safe_psql('postgres', q{
	SELECT (SELECT count(*) - count(DISTINCT entry_id) FROM prepay.ledger)
	     + (SELECT count(*) - count(DISTINCT alarm_id) FROM prepay.alarm)
	     + (SELECT count(*) - count(DISTINCT command_id) FROM prepay.command)
	     + (SELECT count(*) - count(DISTINCT notification_id) FROM prepay.notification)}), 0,
	'no ledger, alarm, command or notification id collides across sites and nodes');
is($coord->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT site_id, entry_id, read_to,
	                             lag(read_to) OVER (PARTITION BY site_id, account_id ORDER BY entry_id) AS prev
	                        FROM prepay.ledger WHERE kind = 'consumption') x
	 WHERE prev >= read_to}), 0, "each site's charges are in entry order");

is($coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), 0, 'check_ledger() is empty');
is($coord->safe_psql('postgres', q{
	SELECT count(*) FROM (
	  SELECT site_id, -sum(amount) AS charged FROM prepay.ledger WHERE kind = 'consumption' GROUP BY 1) l
	  FULL JOIN (SELECT site_id, sum(charged) AS charged FROM prepay.energy_day GROUP BY 1) r USING (site_id)
	 WHERE l.charged IS DISTINCT FROM r.charged}), 0, 'the rollups equal the ledger, per site');
$coord->safe_psql('postgres', 'SELECT prepay.fold_rollups()');
is($coord->safe_psql('postgres', q{
	SELECT count(*) FROM (
	  SELECT site_id, -sum(amount) AS charged FROM prepay.ledger WHERE kind = 'consumption' GROUP BY 1) l
	  FULL JOIN (SELECT site_id, sum(charged) AS charged FROM prepay.energy_day GROUP BY 1) r USING (site_id)
	 WHERE l.charged IS DISTINCT FROM r.charged}), 0, '... and after fold_rollups()');

# a mapped non-superuser sees its own site only, on whichever worker
$coord->safe_psql('postgres', qq{
	CREATE ROLE regress_citus_operator LOGIN IN ROLE prepay_operator;
	INSERT INTO prepay.site_access (site_id, grantee) VALUES ($other, 'regress_citus_operator');
});
my $as_op = sub { $coord->safe_psql('postgres', $_[0], extra_params => [ '-U', 'regress_citus_operator' ]) };
is($as_op->('SELECT string_agg(DISTINCT site_id::text, \',\') FROM prepay.account'), $other, 'the operator sees the accounts of its site only');
is($as_op->('SELECT string_agg(DISTINCT site_id::text, \',\') FROM prepay.ledger'), $other, '... and its ledger only');
is($as_op->('SELECT count(*) FROM prepay.reading WHERE site_id = 1'), 0, '... and nothing of the other site');
is($as_op->("SELECT prepay.balance($other, $acc2)"), $coord->safe_psql('postgres', "SELECT balance FROM prepay.account WHERE site_id = $other"),
	'... and reads its balance');

# the agent, through the coordinator, polls a simulated meter of each site
# (simulator gateway 0 for site 1, gateway 1 for the other); the other
# site's tenant runs out of money, the trip reaches the meter, a recharge
# closes it again
my $control = PostgreSQL::Test::Cluster::get_free_port();
my $metrics_port = PostgreSQL::Test::Cluster::get_free_port();
my $base = PostgreSQL::Test::Cluster::get_free_port();
my $sim_url = "http://127.0.0.1:$control";
my $http = HTTP::Tiny->new(timeout => 5);
my $sim = start_simulator($tmp, $control, '--tcp-gateways', 2, '--base-port', $base,
	'--meters-per-gateway', 1, '--speedup', 360, '--initial-kwh', '100.00');
my %polled;
for my $site (1, $other)
{
	my $g = $site == 1 ? 0 : 1;
	my $port = $base + $g;
	my $tariff = $site == 1 ? 1 : $tariff2;
	$coord->safe_psql('postgres', qq{
		INSERT INTO prepay.gateway (site_id, name, host, port, agent_id, poll_interval)
		VALUES ($site, 'sim$g', '127.0.0.1', $port, 'citus', '1 second')});
	my $gw = $coord->safe_psql('postgres', "SELECT gateway_id FROM prepay.gateway WHERE site_id = $site AND name = 'sim$g'");
	$coord->safe_psql('postgres', qq{
		INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id, device_profile, max_per_hour, tariff_id)
		VALUES ($site, 'SIM-$g', $gw, 1, 'ddsy1352', 100000, $tariff)});
	my $meter = $coord->safe_psql('postgres', "SELECT meter_id FROM prepay.meter WHERE site_id = $site AND code = 'SIM-$g'");
	my $account = $coord->safe_psql('postgres', "SELECT prepay.open_account($site, 'SIM-$g', 'Polled $g', $tariff)");
	$coord->safe_psql('postgres', "SELECT prepay.attach_meter($site, $account, $meter)");
	# 0.1 kWh/s: site 1 at 0.583 runs a long time on 1000, the other at 0.5 on 0.30 trips within seconds
	$coord->safe_psql('postgres', "SELECT prepay.recharge($site, $account, " . ($site == 1 ? 1000 : '0.30') . ", 'cash', 'SIM-R$g')");
	$polled{$site} = [ $meter, $account ];
}
my $agent = start_agent($tmp, conninfo => $coord->connstr('postgres'), agent_id => 'citus', metrics_port => $metrics_port);
my ($m1, $m2) = ($polled{1}[0], $polled{$other}[0]);
ok(wait_for(sub { $coord->safe_psql('postgres', qq{
	SELECT count(*) FILTER (WHERE site_id = 1 AND meter_id = $m1) > 2 AND count(*) FILTER (WHERE site_id = $other AND meter_id = $m2) > 2
	  FROM prepay.reading WHERE read_at > now() - interval '1 hour'}) eq 't' }, 20),
	'the agent delivers readings of both sites through the coordinator');
sub sim_relay
{
	my ($g) = @_;
	my ($line) = $http->get("$sim_url/meters")->{content} =~ /^($g 1 .*)$/m;
	return (split / /, $line // '')[3] // '';
}
ok(wait_for(sub { $coord->safe_psql('postgres', qq{
	SELECT count(*) FROM prepay.command WHERE site_id = $other AND meter_id = $m2 AND action = 'trip' AND state = 'done'}) eq '1' }, 20),
	'arrears on a worker: the trip command is done');
is(sim_relay(1), 'tripped', '... and the simulated relay is tripped');
is(sim_relay(0), 'closed', '... the other site\'s meter is not');
$coord->safe_psql('postgres', "SELECT prepay.recharge($other, $polled{$other}[1], 100, 'cash', 'SIM-R-restore')");
ok(wait_for(sub { sim_relay(1) eq 'closed' }, 5), 'a recharge closes the relay again');
ok(wait_for(sub { $coord->safe_psql('postgres', qq{
	SELECT state FROM prepay.command WHERE site_id = $other AND meter_id = $m2 AND action = 'close'
	 ORDER BY command_id DESC LIMIT 1}) eq 'done' }, 5), '... and the close command is done');
$agent->kill_kill;
$sim->kill_kill;

# a statement writing to both workers commits in two phases: no NOTIFY on a worker stops it
$coord->safe_psql('postgres', q{INSERT INTO prepay.site (name) SELECT 'Bulk ' || i FROM generate_series(1, 8) i});
is($coord->safe_psql('postgres', q{
	SELECT count(DISTINCT p.nodeport) FROM prepay.site s, pg_dist_shard_placement p
	 WHERE s.name LIKE 'Bulk %' AND p.shardid = get_shard_id_for_distribution_column('prepay.site', s.site_id)}), 2,
	'sites created on both workers in one INSERT (their device profiles announced nowhere on the workers)');

is($coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), 0, 'check_ledger() is empty at the end');

done_testing();
