# test/t/180_command_retry.pl
#
# A paying tenant is never left cut off (issue 17, item 2).  prepay-agent
# (AddressSanitizer build, logged in as an agent login) polls one simulated
# meter whose account runs into arrears:
#   (a) the trip reaches the simulated relay;
#   (b) the gateway goes dead; a cashier login recharges the account, which
#       queues a close;
#   (c) the close fails its fast attempts (2, 4, 8, 16 s): it stays queued,
#       never failed, one command_failing alarm is raised from the 5th
#       attempt, and /metrics counts the retries and the failing command;
#   (d) the gateway answers again 45 s after the recharge: the close is due
#       at once (not at its next backoff, 60 s after the recharge) and the
#       simulated relay is closed within 10 s; the alarm is cleared and the
#       gauge is back to 0;
# and the ledger check holds at the end.  On the code before the fix the
# close was failed after its 5th attempt, no alarm was raised and the relay
# stayed tripped.

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

my $tmp = PostgreSQL::Test::Utils::tempdir;
my $http = HTTP::Tiny->new(timeout => 5);

my $node = start_prepay_node('retry');

# the simulator: one TCP gateway, one ddsy1352 meter, 1 kW at 360x: 0.1 kWh/s
my $control = PostgreSQL::Test::Cluster::get_free_port();
my $metrics_port = PostgreSQL::Test::Cluster::get_free_port();
my $base = PostgreSQL::Test::Cluster::get_free_port();
my $sim_url = "http://127.0.0.1:$control";
my $sim = start_simulator($tmp, $control, '--tcp-gateways', 1, '--base-port', $base,
	'--meters-per-gateway', 1, '--speedup', 360, '--initial-kwh', '100.00');

sub relay
{
	my ($line) = $http->get("$sim_url/meters")->{content} =~ /^(0 1 .*)$/m;
	return (split / /, $line // '')[3] // '';
}

# the site: 1000.00 per kWh, so the meter costs 100.00 a second and the
# account (1000.00) runs into arrears within seconds; an agent login and a
# cashier login, each mapped to the site
create_polled_site($node, 'Retry', 'retry', $base, 1, 1, 1000);
$node->safe_psql('postgres', q{
	CREATE ROLE regress_retry_agent LOGIN IN ROLE prepay_agent;
	CREATE ROLE regress_retry_cashier LOGIN IN ROLE prepay_cashier;
	INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES (1, 'retry', 'regress_retry_agent');
	INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_retry_cashier');
});
my $cashier = $node->connstr('postgres') . ' user=regress_retry_cashier';

my $metrics_url = "http://127.0.0.1:$metrics_port";
my $agent = start_agent($tmp, conninfo => $node->connstr('postgres') . ' user=regress_retry_agent',
	agent_id => 'retry', metrics_port => $metrics_port);

# (a) arrears: the trip reaches the meter
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT count(*) FROM prepay.command WHERE action = 'trip' AND state = 'done'}) eq '1' }, 40),
	'(a) arrears: the trip command is done');
is(relay(), 'tripped', '(a) the simulated relay is tripped');

# (b) the gateway goes dead; the tenant pays
$http->post("$sim_url/fault?gateway=0&mode=dead");
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT count(*) FROM prepay.gateway WHERE lost_since IS NOT NULL}) eq '1' }, 15),
	'(b) the dead gateway is marked lost');
my $t0 = time;
is($node->safe_psql('postgres', q{SELECT prepay.recharge(1, 1, 100000, 'cash', 'R-pay') IS NOT NULL},
		connstr => $cashier),
	't', '(b) the cashier recharges the account');
is($node->safe_psql('postgres', 'SELECT balance > 0 AND alarm_level = 0 FROM prepay.account'), 't',
	'(b) the balance is positive, no ladder alarm');
my $close = $node->safe_psql('postgres',
	q{SELECT command_id FROM prepay.command WHERE action = 'close' ORDER BY command_id DESC LIMIT 1});
ok($close, "(b) the recharge queued close command $close");

# (c) the close fails its fast attempts and is not abandoned
ok(wait_for(sub { $node->safe_psql('postgres', qq{
	SELECT count(*) FROM prepay.alarm
	 WHERE kind = 'command_failing' AND cleared_at IS NULL AND detail LIKE 'Command $close:%'}) eq '1' }, 44),
	sprintf('(c) the command_failing alarm is raised (%.1f s after the recharge)', time - $t0));
my $row = $node->safe_psql('postgres', "SELECT state, attempts, last_error FROM prepay.command WHERE command_id = $close");
note("close command: $row");
like($row, qr/^(queued|sent)\|([5-9]|\d\d)\|/, '(c) after 5 failed attempts the close is still pending, not failed');
is(relay(), 'tripped', '(c) the relay is still tripped while the gateway is dead');
ok(wait_for(sub { (metric($metrics_url, 'prepay_agent_command_retries_total') // 0) >= 4 }, 10),
	'(c) /metrics counts the retries');
ok(wait_for(sub { (metric($metrics_url, 'prepay_agent_commands_failing') // 0) == 1 }, 10),
	'(c) /metrics shows one failing command');

# (d) the gateway answers again 45 s after the recharge
my $wait = $t0 + 45 - time;
sleep $wait if $wait > 0;
is($node->safe_psql('postgres', "SELECT state <> 'failed' FROM prepay.command WHERE command_id = $close"), 't',
	'(d) 45 s after the recharge the close is still pending');
$http->post("$sim_url/fault?gateway=0&mode=none");
my $t1 = time;
my $closed = wait_for(sub { relay() eq 'closed' }, 10);
ok($closed, sprintf('(d) the simulated relay is closed %.1f s after the gateway came back (deadline 10 s)',
	time - $t1));
ok(wait_for(sub { $node->safe_psql('postgres', "SELECT state FROM prepay.command WHERE command_id = $close") eq 'done' },
	5), '(d) the close command is done');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM prepay.alarm WHERE kind = 'command_failing' AND cleared_at IS NULL}), '0',
	'(d) the command_failing alarm is cleared');
is($node->safe_psql('postgres', 'SELECT relay_state FROM prepay.meter'), 'closed', '(d) meter.relay_state read back');
ok(wait_for(sub { (metric($metrics_url, 'prepay_agent_commands_failing') // -1) == 0 }, 10),
	'(d) /metrics: no failing command left');
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.command WHERE state = 'failed'}), '0',
	'no command failed');

my $log = stop_agent($agent, $tmp);
unlike($log, qr/report refused|claim failed/, 'every report and claim was accepted');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');

$sim->signal('TERM');
$sim->finish;
$node->stop;
done_testing();
