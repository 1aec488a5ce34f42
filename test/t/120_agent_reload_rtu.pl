# test/t/120_agent_reload_rtu.pl
#
# prepay-agent (AddressSanitizer build) picks up catalog changes while it
# runs, and polls an RTU line:
#   (1) NOTIFY prepay_config: a gateway and its meter inserted while the
#       agent runs (the gateway_config and meter_config triggers notify)
#       are polled, their readings arrive;
#   (2) SIGHUP: a meter inserted with the notification suppressed
#       (session_replication_role = replica skips the meter_config trigger)
#       is not polled until the agent gets SIGHUP; then its readings
#       arrive and the agent logs the reload; a second SIGHUP, with
#       nothing changed, keeps every bus (no restart);
#   (3) RTU: a gateway on one end of a socat pseudo-terminal pair (the
#       simulator on the other end), 9600 8N1, two meters: both deliver
#       readings that are rated;
# then the agent stops cleanly with no sanitizer report and the ledger
# check holds.  Deadlines only; no timing is asserted.

use strict;
use warnings;
use IPC::Run qw(start);
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

my $top = $ENV{TESTDIR};
my $tmp = PostgreSQL::Test::Utils::tempdir;
my ($socat, $sim, $agent);

# on any exit (a failed test, a die): no process left behind


my $node = start_prepay_node('reload');

# the RTU line: a pseudo-terminal pair, ttyA for the simulator, ttyB for the agent
$socat = start([ 'socat', '-d', '-d', "pty,raw,echo=0,link=$tmp/ttyA", "pty,raw,echo=0,link=$tmp/ttyB" ],
	'>', "$tmp/socat.out", '2>', "$tmp/socat.err");
ok(wait_for(sub { -e "$tmp/ttyA" && -e "$tmp/ttyB" }, 10), 'socat: both pty links exist');

# the simulator: TCP gateways 0 and 1 on base and base + 1, the RTU line is
# gateway 2; 2 ddsy1352 meters each, 1 kW, 360x: 0.1 kWh/s.  The base port
# is taken last: get_free_port hands out ascending ports, so base + 1 is not
# given to the control or metrics server
my $control = PostgreSQL::Test::Cluster::get_free_port();
my $metrics_port = PostgreSQL::Test::Cluster::get_free_port();
my $base = PostgreSQL::Test::Cluster::get_free_port();
$sim = start_simulator($tmp, $control, '--tcp-gateways', 2, '--base-port', $base,
	'--meters-per-gateway', 2, '--rtu', "$tmp/ttyA", '--baud', 9600, '--parity', 'N',
	'--data-bits', 8, '--stop-bits', 1, '--speedup', 360, '--initial-kwh', '100.00');

# the site: price 10.00/kWh, so a meter costs 1.00 per second; one TCP
# gateway with one meter to start with
$node->safe_psql('postgres', qq{
	INSERT INTO prepay.site (name, low_balance_threshold, pretrip_threshold) VALUES ('Plaza', 2, 1);
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2020-01-01', 10.0);
	INSERT INTO prepay.gateway (site_id, name, host, port, agent_id, poll_interval)
	VALUES (1, 'g0', '127.0.0.1', $base, 'reload', '1 second');
});

# add_meter(CODE, GATEWAY NAME, UNIT, [SQL prefix]): the meter, then its
# account (funded); the prefix runs in the session before the meter's INSERT
sub add_meter
{
	my ($code, $gw, $unit, $prefix) = @_;
	$prefix //= '';
	$node->safe_psql('postgres', qq{
		$prefix
		INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id, device_profile, max_per_hour)
		SELECT 1, '$code', gateway_id, $unit, 'ddsy1352', 100000 FROM prepay.gateway WHERE name = '$gw';
		RESET session_replication_role;
		SELECT prepay.attach_meter(1, prepay.open_account(1, 'A$code', 'Tenant $code', 1),
		                           (SELECT meter_id FROM prepay.meter WHERE code = '$code'));
		SELECT prepay.recharge(1, account_id, 1000, 'cash', 'R$code') FROM prepay.account WHERE code = 'A$code';
	});
}

# readings(CODE): how many readings the meter has in prepay.reading
sub readings
{
	my ($code) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM prepay.reading JOIN prepay.meter USING (site_id, meter_id) WHERE code = '$code'");
}

# rated(CODE): whether the meter's account has consumption entries
sub rated
{
	my ($code) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) > 0 FROM prepay.ledger JOIN prepay.account USING (site_id, account_id)
		 WHERE kind = 'consumption' AND code = 'A$code'}) eq 't';
}

add_meter('M01', 'g0', 1);

$agent = start_agent($tmp, conninfo => $node->connstr('postgres'), agent_id => 'reload',
	metrics_port => $metrics_port);
my $agent_pid = $agent->{KIDS}[0]{PID};
ok($agent_pid, "agent started (pid $agent_pid)");

ok(wait_for(sub { readings('M01') >= 2 }, 10), 'the first meter delivers readings');

# (1) a second gateway and its meter: the triggers send NOTIFY prepay_config
$node->safe_psql('postgres', qq{
	INSERT INTO prepay.gateway (site_id, name, host, port, agent_id, poll_interval)
	VALUES (1, 'g1', '127.0.0.1', $base + 1, 'reload', '1 second');
});
add_meter('M11', 'g1', 1);
ok(wait_for(sub { readings('M11') >= 2 }, 10), '(1) NOTIFY prepay_config: the new gateway\'s meter delivers readings');

# (2) a meter on g0 inserted without the notification: not polled until SIGHUP
add_meter('M02', 'g0', 2, 'SET session_replication_role = replica;');
my $m01 = readings('M01');
ok(wait_for(sub { readings('M01') >= $m01 + 2 }, 10), '(2) g0 polled twice since the silent insert');
is(readings('M02'), '0', '(2) no notification, no reload: the silent meter is not polled yet');
ok(kill('HUP', $agent_pid), '(2) SIGHUP sent');
ok(wait_for(sub { readings('M02') >= 2 }, 10), '(2) after SIGHUP the meter delivers readings');
like(slurp_file("$tmp/agent.err"), qr/SIGHUP: reloading the catalog/, '(2) the agent logs the reload');

# (2b) a reload that changes nothing restarts no bus
sub reloads { my @l = slurp_file("$tmp/agent.err") =~ /(catalog: .* from the database: .*)/g; return @l; }
my $reloads = () = reloads();
ok(kill('HUP', $agent_pid), '(2b) SIGHUP again, nothing changed');
ok(wait_for(sub { (() = reloads()) > $reloads }, 10), '(2b) the catalog is reloaded');
like((reloads())[-1], qr/2 buses kept, 0 started, 0 stopped/, '(2b) both buses kept: no restart');

# (3) the RTU line, 9600 8N1, units 1 and 2
$node->safe_psql('postgres', qq{
	INSERT INTO prepay.gateway (site_id, name, transport, serial_device, baud, parity, data_bits, stop_bits,
	                            agent_id, poll_interval)
	VALUES (1, 'rtu', 'rtu', '$tmp/ttyB', 9600, 'N', 8, 1, 'reload', '1 second');
});
add_meter('M21', 'rtu', 1);
add_meter('M22', 'rtu', 2);
ok(wait_for(sub { readings('M21') >= 2 && readings('M22') >= 2 }, 10), '(3) RTU: both meters deliver readings');
ok(wait_for(sub { rated('M21') && rated('M22') }, 5), '(3) RTU: both meters\' readings are rated');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM prepay.reading JOIN prepay.meter USING (site_id, meter_id)
	 WHERE code IN ('M21', 'M22') AND quarantine_reason IS NOT NULL}), '0', '(3) RTU: no reading quarantined');
ok((!grep { !rated($_) } qw(M01 M11 M02)), 'the TCP meters are rated too');

# stop: the agent first, then the simulator and socat
my $log = stop_agent($agent, $tmp);
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');

$sim->signal('TERM');
$sim->finish;
is($sim->result(0), 0, 'simulator exits 0 on SIGTERM');
unlike(slurp_file("$tmp/sim.err"), qr/Sanitizer|runtime error/, 'simulator: no sanitizer report');
$socat->signal('TERM');
$socat->finish;
$node->stop;
done_testing();
