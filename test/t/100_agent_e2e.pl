# test/t/100_agent_e2e.pl
#
# prepay-agent (AddressSanitizer build) between the meter simulator and a
# PostgreSQL node with the extension, end to end:
#   (a) readings arrive and are rated: consumption entries, balances fall;
#   (b) a wallet runs out: the extension queues a trip, the agent trips the
#       simulated relay and its energy stops growing;
#   (c) a recharge restores supply: the close reaches the meter within 2 s;
#   (e) a dead gateway does not slow the others (readings per interval);
#   (f) exception and corrupt replies are logged and counted in /metrics,
#       and the agent stays up;
#   (d) a database restart in the middle of polling loses and duplicates
#       nothing: every energy value the healthy gateways served is in
#       prepay.reading exactly once, in order;
# and the ledger check holds at the end.  Gateway 2 is the faulty one.

use strict;
use warnings;
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

my $top = $ENV{TESTDIR};
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $http = HTTP::Tiny->new(timeout => 5);


my $node = start_prepay_node('agent');

# the simulator: 3 TCP gateways x 2 ddsy1352 meters, 1 kW each, 360x: 0.1 kWh/s
# the base port is taken last: get_free_port hands out ascending ports, so
# base + 1 and base + 2 are not given to the control or metrics server
my $control = PostgreSQL::Test::Cluster::get_free_port();
my $metrics_port = PostgreSQL::Test::Cluster::get_free_port();
my $base = PostgreSQL::Test::Cluster::get_free_port();
my $sim_url = "http://127.0.0.1:$control";
my $sim = start_simulator($tmp, $control, '--tcp-gateways', 3, '--base-port', $base,
	'--meters-per-gateway', 2, '--speedup', 360, '--initial-kwh', '100.00',
	'--history', "$tmp/history");

sub sim_meter
{
	my ($g, $u) = @_;
	my ($line) = $http->get("$sim_url/meters")->{content} =~ /^($g $u .*)$/m;
	return [ split / /, $line // '' ];
}

# the site: price 10.00/kWh, so a meter costs 1.00 per second
$node->safe_psql('postgres', qq{
	INSERT INTO prepay.site (name, low_balance_threshold, pretrip_threshold) VALUES ('Plaza', 2, 1);
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2020-01-01', 10.0);
	INSERT INTO prepay.gateway (site_id, name, host, port, agent_id, poll_interval)
	SELECT 1, 'g' || g, '127.0.0.1', $base + g, 'e2e', '1 second' FROM generate_series(0, 2) g;
	INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id, device_profile, max_per_hour)
	SELECT 1, 'M' || g || u, g + 1, u, 'ddsy1352', 100000 FROM generate_series(0, 2) g, generate_series(1, 2) u
	 ORDER BY g, u;
	SELECT prepay.open_account(1, 'A' || meter_id, 'Tenant ' || meter_id, 1) FROM prepay.meter ORDER BY meter_id;
	SELECT prepay.attach_meter(1, meter_id, meter_id) FROM prepay.meter ORDER BY meter_id;
	SELECT prepay.recharge(1, account_id, CASE account_id WHEN 1 THEN 4 ELSE 1000 END, 'cash', 'R' || account_id)
	  FROM prepay.account ORDER BY account_id;
});
# meter id of simulator gateway g, unit u
sub meter_id { my ($g, $u) = @_; return 2 * $g + $u; }

my $metrics_url = "http://127.0.0.1:$metrics_port";
my $agent = start_agent($tmp, conninfo => $node->connstr('postgres'), agent_id => 'e2e',
	metrics_port => $metrics_port);

# (a) readings arrive and are rated
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT count(DISTINCT meter_id) = 6 AND count(*) >= 18 FROM prepay.reading}) eq 't' }, 15),
	'(a) every meter delivers readings');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading WHERE quarantine_reason IS NOT NULL'), '0',
	'(a) no reading quarantined');
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT count(DISTINCT account_id) = 6 FROM prepay.ledger WHERE kind = 'consumption'}) eq 't' }, 5),
	'(a) every account has consumption entries');
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.account WHERE account_id > 1 AND balance >= 1000}), '0',
	'(a) balances fall');
like($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT relay_state::text, ',') FROM prepay.reading}),
	qr/^closed$/, '(a) readings carry the relay state');

# (b) account 1 (4.00, 1.00/s) runs out: trip queued, done, relay tripped
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT count(*) FROM prepay.command WHERE meter_id = 1 AND action = 'trip' AND state = 'done'}) eq '1' }, 15),
	'(b) arrears: the trip command is done');
is(sim_meter(0, 1)->[3], 'tripped', '(b) the simulated relay is tripped');
is($node->safe_psql('postgres', 'SELECT relay_state FROM prepay.meter WHERE meter_id = 1'), 'tripped',
	'(b) meter.relay_state read back');
my $e1 = sim_meter(0, 1)->[2];
sleep 1.5;
is(sim_meter(0, 1)->[2], $e1, '(b) energy stops growing while tripped');
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT relay_state FROM prepay.reading WHERE meter_id = 1 ORDER BY read_at DESC LIMIT 1}) eq 'tripped' }, 3),
	'(b) readings report the tripped relay');

# (c) a recharge restores supply within 2 seconds
my $t0 = time;
$node->safe_psql('postgres', q{SELECT prepay.recharge(1, 1, 100, 'cash', 'R-restore')});
my $closed = wait_for(sub { sim_meter(0, 1)->[3] eq 'closed' }, 2);
my $latency = time - $t0;
ok($closed, sprintf('(c) the close reached the meter in %.3f s (deadline 2 s)', $latency));
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT state FROM prepay.command WHERE meter_id = 1 AND action = 'close' ORDER BY command_id DESC LIMIT 1}) eq 'done' }, 3),
	'(c) the close command is done');

# (e) gateway 2 goes dead: gateways 0 and 1 keep their 1 s cadence
$http->post("$sim_url/fault?gateway=2&mode=dead");
sleep 1;
my $from = $node->safe_psql('postgres', 'SELECT now()');
sleep 4;
my $counts = $node->safe_psql('postgres', qq{
	SELECT string_agg(meter_id || ':' || n, ' ' ORDER BY meter_id) FROM (
	    SELECT meter_id, count(*) FILTER (WHERE read_at >= '$from' AND read_at < '$from'::timestamptz + interval '3 s') AS n
	      FROM prepay.meter LEFT JOIN prepay.reading USING (site_id, meter_id) GROUP BY meter_id) c});
note("readings per meter in 3 s while gateway 2 is dead: $counts");
my %n = map { split /:/ } split / /, $counts;
ok((!grep { $n{$_} < 2 } 1 .. 4), '(e) healthy meters: at least 2 readings in 3 s (1 s cadence)');
ok($n{5} == 0 && $n{6} == 0, '(e) the dead gateway delivers nothing');
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT count(*) FROM prepay.gateway WHERE lost_since IS NOT NULL AND name = 'g2'}) eq '1' }, 5),
	'(e) gateway 2 is marked lost');
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.alarm WHERE kind = 'meter_lost' AND cleared_at IS NULL}),
	'2', '(e) its two meters are marked lost');

# (f) exception, then corrupt replies on gateway 2: logged, counted, agent up
$http->post("$sim_url/fault?gateway=2&mode=exception");
sleep 2;
$http->post("$sim_url/fault?gateway=2&mode=corrupt");
sleep 2;
$http->post("$sim_url/fault?gateway=2&mode=none");
my $metrics = $http->get("$metrics_url/metrics")->{content};
like($metrics, qr/^prepay_agent_read_failures_total\{site="1",gateway="g2",kind="exception"\} [1-9]/m,
	'(f) exceptions counted');
like($metrics, qr/^prepay_agent_read_failures_total\{site="1",gateway="g2",kind="corrupt"\} [1-9]/m,
	'(f) corrupt replies counted');
like($metrics, qr/^prepay_agent_read_failures_total\{site="1",gateway="g2",kind="timeout"\} [1-9]/m,
	'(f) timeouts of the dead gateway counted');
like($metrics, qr/^prepay_agent_commands_done_total 2$/m, 'commands counted');
like($metrics, qr/^prepay_agent_command_seconds_count 2$/m, 'command latency observed');
my $log = slurp_file("$tmp/agent.err");
like($log, qr/gateway=3 meter=\d+ kind=exception .*read failed/, '(f) exception logged with its context');
like($log, qr/kind=corrupt .*read failed/, '(f) corrupt reply logged');
is($http->get("$metrics_url/healthz")->{status}, 200, '(f) the agent is still up');
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT count(*) FROM prepay.alarm WHERE kind IN ('meter_lost', 'gateway_lost') AND cleared_at IS NULL}) eq '0' }, 5),
	'(e) gateway 2 answers again: lost marks cleared');

# (d) restart the database in the middle of polling
sleep 1;
$node->restart;
sleep 3;
ok(wait_for(sub { $http->get("$metrics_url/metrics")->{content} =~ /^prepay_agent_db_connected 1$/m }, 10),
	'(d) the agent reconnected');
sleep 1.5;
$log = stop_agent($agent, $tmp);
like($log, qr/database connection lost/, '(d) the agent saw the restart');

# every energy value served on gateways 0 and 1 is in the database once, in order
my %served;
for (split /\n/, slurp_file("$tmp/history"))
{
	my ($ms, $g, $u, $ck) = split / /;
	push @{ $served{ meter_id($g, $u) } }, $ck if $g < 2;
}
for my $m (1 .. 4)
{
	my $stored = $node->safe_psql('postgres',
		"SELECT string_agg((energy * 100)::bigint::text, ' ' ORDER BY read_at) FROM prepay.reading WHERE meter_id = $m");
	is($stored, join(' ', @{ $served{$m} }), "(d) meter $m: every served reading stored exactly once");
}
ok(-z "$tmp/spool/spool.log" || !-e "$tmp/spool/spool.log", '(d) the spool is empty');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');

$sim->signal('TERM');
$sim->finish;
$node->stop;
done_testing();
