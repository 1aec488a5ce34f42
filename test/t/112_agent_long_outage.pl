# test/t/112_agent_long_outage.pl
#
# A long database outage (issue 8): 1,000 meters on 10 gateways polled
# every second by the ASan agent; the database stays away until at least
# 10,000 readings have been spooled.  When it returns the agent reconnects
# by itself, replays the spool in order and drains it, then delivers new
# readings directly.  Against the simulator's own read history, every
# meter's stored readings are exactly the served ones, in order: no loss,
# no duplicate; nothing thinned, refused or quarantined; every spooled
# reading replayed; the ledger check holds.  Deadlines only; the replay's
# duration is printed (diag), not asserted.

use strict;
use warnings;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

my $top = $ENV{TESTDIR};
my $tmp = PostgreSQL::Test::Utils::tempdir;
my ($gateways, $meters_per_gateway, $outage_readings) = (10, 100, 10_000);
my $meters = $gateways * $meters_per_gateway;


my $node = start_prepay_node('outage');

# the base port is taken last: base + 1 .. base + 9 are then free too
my $control = PostgreSQL::Test::Cluster::get_free_port();
my $metrics_port = PostgreSQL::Test::Cluster::get_free_port();
my $base = PostgreSQL::Test::Cluster::get_free_port();
my $metrics_url = "http://127.0.0.1:$metrics_port";

# 1 kW at 3600x: every read of a meter carries a new register value
my $sim = start_simulator($tmp, $control, '--tcp-gateways', $gateways, '--base-port', $base,
	'--meters-per-gateway', $meters_per_gateway, '--speedup', 3600, '--initial-kwh', '100.00',
	'--history', "$tmp/history");

create_polled_site($node, 'Estate', 'outage', $base, $gateways, $meters_per_gateway);

my $agent = start_agent($tmp, conninfo => $node->connstr('postgres') . ' connect_timeout=2', agent_id => 'outage',
	metrics_port => $metrics_port);
ok(wait_for(sub { $node->safe_psql('postgres', 'SELECT count(DISTINCT meter_id) FROM prepay.reading') == $meters },
	30), "all $meters meters deliver readings");

# the outage: at least 10,000 readings spooled
$node->stop('fast');
ok(wait_for(sub { (metric($metrics_url, 'prepay_agent_readings_spooled_total') // 0) >= $outage_readings }, 120),
	"at least $outage_readings readings spooled while the database is down");
my $spool_size = -s "$tmp/spool/spool.log";
diag("spooled: " . metric($metrics_url, 'prepay_agent_readings_spooled_total') . " readings, $spool_size bytes");

# the database returns; the agent reconnects and replays by itself
my $t0 = time;
$node->start;
ok(wait_for(sub {
	(metric($metrics_url, 'prepay_agent_db_connected') // 0) == 1
	  && (metric($metrics_url, 'prepay_agent_spool_bytes') // -1) == 0 }, 120),
	'the agent reconnects by itself and drains the spool');
diag(sprintf('spool drained %.1f s after the database started', time - $t0));
my $spooled = metric($metrics_url, 'prepay_agent_readings_spooled_total');
is(metric($metrics_url, 'prepay_agent_readings_replayed_total'), $spooled, 'every spooled reading replayed');
my $delivered = metric($metrics_url, 'prepay_agent_readings_delivered_total');
ok(wait_for(sub { metric($metrics_url, 'prepay_agent_readings_delivered_total') >= $delivered + $meters }, 30),
	'new readings are delivered');
is(metric($metrics_url, 'prepay_agent_readings_spooled_total'), $spooled, 'directly, without the spool');
is(metric($metrics_url, 'prepay_agent_spool_dropped_total'), 0, 'nothing thinned');
is(metric($metrics_url, 'prepay_agent_readings_dropped_total'), 0, 'nothing refused');
ok(!-s "$tmp/spool/spool.log", 'the spool file is empty');

my $log = stop_agent($agent, $tmp);
unlike($log, qr/spool: .*(full|over 80%)/, 'the spool stayed far from its bound');
$sim->signal('TERM');
$sim->finish;

# every served reading stored exactly once, in order
my $served = served_history("$tmp/history");
my %stored = %{ stored_readings($node) };
my ($bad, $served_total) = (0, 0);
for my $g (0 .. $gateways - 1)
{
	for my $u (1 .. $meters_per_gateway)
	{
		my $h = join ' ', @{ $served->{"$g $u"} // [] };
		$served_total += @{ $served->{"$g $u"} // [] };
		next if $h eq ($stored{"G${g}U$u"} // '');
		$bad++;
		diag("G${g}U$u served: $h\nG${g}U$u stored: " . ($stored{"G${g}U$u"} // ''));
	}
}
is($bad, 0, "every meter: the served readings ($served_total) stored exactly once, in order");
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading'), $served_total, 'and nothing else');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading WHERE quarantine_reason IS NOT NULL'), '0',
	'nothing quarantined: the replay kept the time order');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');

$node->stop;
done_testing();
