# test/t/111_agent_spool_bound.pl
#
# The spool's bound, end to end, with the test build
# agent/prepay-agent-small-spool (the ASan agent with a 64 KiB bound; the
# bound is not a setting, see agent/spool.h).  80 meters on 2 gateways are
# polled every second; the database is taken away, and the spool
#   - passes 80 % of its bound: a warning is logged, before any thinning,
#     and /metrics shows prepay_agent_spool_warning 1;
#   - reaches its bound, twice: it is thinned (per meter the first, the
#     last and every other reading in between are kept), which is logged
#     and counted in prepay_agent_spool_dropped_total; it never grows past
#     the bound and refuses nothing.
# The database comes back; the spool drains and the warning ends.  Then,
# against the simulator's own read history: each meter's stored readings
# are its served readings in order, minus exactly the thinned ones (their
# number is the counter), no duplicate, the last served register stored;
# the energy charged per meter equals its last register minus its first
# (thinning lost granularity, no energy); nothing quarantined; the ledger
# check holds.  Deadlines only; no timing is asserted.

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
my ($gateways, $meters_per_gateway) = (2, 40);


my $node = start_prepay_node('bound');

# ports: get_free_port hands out ascending ports, so the base port is taken
# last and base + 1 is not given to the control or metrics server
my $control = PostgreSQL::Test::Cluster::get_free_port();
my $metrics_port = PostgreSQL::Test::Cluster::get_free_port();
my $base = PostgreSQL::Test::Cluster::get_free_port();
my $metrics_url = "http://127.0.0.1:$metrics_port";

# 1 kW per meter at 3600x: 1 kWh (100 register units) per second, so two
# reads of a meter never carry the same register value
my $sim = start_simulator($tmp, $control, '--tcp-gateways', $gateways, '--base-port', $base,
	'--meters-per-gateway', $meters_per_gateway, '--speedup', 3600, '--initial-kwh', '100.00',
	'--history', "$tmp/history");

create_polled_site($node, 'Plaza', 'bound', $base, $gateways, $meters_per_gateway);
my $meters = $gateways * $meters_per_gateway;

my $agent = start_agent($tmp, conninfo => $node->connstr('postgres') . ' connect_timeout=2', agent_id => 'bound',
	metrics_port => $metrics_port, binary => 'prepay-agent-small-spool');

ok(wait_for(sub { $node->safe_psql('postgres',
	"SELECT count(*) = $meters FROM (SELECT meter_id FROM prepay.reading GROUP BY meter_id HAVING count(*) >= 2) m")
	eq 't' }, 30), 'every meter delivers readings');
my $max = metric($metrics_url, 'prepay_agent_spool_max_bytes');
is($max, 65536, 'the test build has a 64 KiB spool bound');

# the database goes away: the spool fills
$node->stop('fast');
ok(wait_for(sub { (metric($metrics_url, 'prepay_agent_spool_warning') // 0) == 1 }, 60),
	'past 80 %: /metrics shows the warning');
ok(wait_for(sub { (metric($metrics_url, 'prepay_agent_spool_thinnings_total') // 0) >= 2 }, 90),
	'the bound is reached twice: the spool is thinned twice');
ok(metric($metrics_url, 'prepay_agent_spool_dropped_total') > 0, 'thinned readings are counted');
ok(metric($metrics_url, 'prepay_agent_spool_bytes') <= $max, 'the spool stays within its bound');
ok(-s "$tmp/spool/spool.log" <= $max, 'so does the file');
is(metric($metrics_url, 'prepay_agent_readings_dropped_total'), 0, 'nothing refused');
my $log = slurp_file("$tmp/agent.err");
like($log, qr/level=warning spool: \d+ of 65536 bytes used \(over 80%\)/, 'the 80 % warning is logged');
like($log, qr/level=warning spool: full \(bound 65536 bytes\): thinned \d+ intermediate readings of $meters meters/,
	'the thinning is logged');
ok(index($log, 'over 80%') < index($log, 'spool: full'), 'the warning comes before the first thinning');

# the database returns: the spool drains, the warning ends, delivery resumes
$node->start;
ok(wait_for(sub {
	(metric($metrics_url, 'prepay_agent_db_connected') // 0) == 1
	  && (metric($metrics_url, 'prepay_agent_spool_bytes') // -1) == 0
	  && (metric($metrics_url, 'prepay_agent_spool_warning') // -1) == 0 }, 60),
	'the database returns: the spool drains and the warning ends');
my $spooled = metric($metrics_url, 'prepay_agent_readings_spooled_total');
my $delivered = metric($metrics_url, 'prepay_agent_readings_delivered_total');
ok(wait_for(sub { metric($metrics_url, 'prepay_agent_readings_delivered_total') >= $delivered + $meters }, 30),
	'new readings are delivered');
is(metric($metrics_url, 'prepay_agent_readings_spooled_total'), $spooled, 'without the spool');
my $thinned = metric($metrics_url, 'prepay_agent_spool_dropped_total');
my $refused = metric($metrics_url, 'prepay_agent_readings_dropped_total');

stop_agent($agent, $tmp);
$sim->signal('TERM');
$sim->finish;

# what arrived, against what the simulator served
my $served = served_history("$tmp/history");
my %stored = %{ stored_readings($node) };
my ($missing, $bad) = (0, 0);
for my $g (0 .. $gateways - 1)
{
	for my $u (1 .. $meters_per_gateway)
	{
		my @h = @{ $served->{"$g $u"} // [] };
		my @s = split / /, $stored{"G${g}U$u"} // '';
		# @s must be @h with some values left out, in the same order
		my $i = 0;
		for my $v (@h) { $i++ if $i < @s && $s[$i] == $v; }
		my $ok = @h > 0 && $i == @s && $s[-1] == $h[-1];
		$ok &&= $s[$_] > $s[ $_ - 1 ] for 1 .. $#s;
		unless ($ok)
		{
			$bad++;
			diag("G${g}U$u served: @h");
			diag("G${g}U$u stored: @s");
		}
		$missing += @h - @s;
	}
}
is($bad, 0, 'every meter: stored readings are served ones, in order, no duplicate, the last register stored');
is($missing, $thinned + $refused, "the readings missing are exactly the $thinned thinned");
ok($thinned > 0, 'and some were thinned');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (
	  SELECT r.meter_id, max(r.energy) - min(r.energy) AS metered,
	         (SELECT coalesce(sum(l.energy), 0) FROM prepay.ledger l
	           WHERE l.kind = 'consumption' AND l.site_id = 1 AND l.meter_id = r.meter_id) AS charged
	    FROM prepay.reading r GROUP BY r.meter_id) x
	 WHERE metered <> charged}), '0', 'every meter: energy charged = last register - first: no energy lost');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading WHERE quarantine_reason IS NOT NULL'), '0',
	'nothing quarantined');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');
ok(!-s "$tmp/spool/spool.log", 'the spool is empty');

$node->stop;
done_testing();
