# test/t/150_crash.pl (issue 8)
#
# The database crashes three times, each time a different way, while the
# agent streams readings from the simulator and a loop of psql recharges
# with distinct references runs: (1) kill -9 of the postmaster and every
# server process, then a restart; (2) kill -9 of one backend (the agent's),
# after which the postmaster kills the others and recovers by itself;
# (3) an immediate shutdown.  No checkpoint in any; crash recovery from the
# WAL each time.  Afterwards:
#   - every recharge whose psql reported success is in the ledger exactly
#     once; retrying every attempted recharge with its reference credits
#     nothing twice (those lost in a crash are credited once, by the retry);
#   - each account's recharges add up to what the loop attempted;
#   - the agent resumed by itself and drained its spool, and every reading
#     the simulator served is in prepay.reading exactly once, in order;
#   - no half-applied state: the ledger check is empty, each meter's state
#     is its last accepted reading, every accepted reading that consumed
#     energy has exactly one consumption entry (and no entry lacks its
#     reading), and per meter the entries plus the carry are exactly
#     (last - first register) x price, and the energy rollups equal what
#     the ledger explains.
# The cluster runs with fsync on (the TAP default is off) and restarts by
# itself after a backend crash (restart_after_crash, off in TAP clusters).

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
my $crashes = 3;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', "fsync = on\nrestart_after_crash = on\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prepay');

# the simulator: 2 gateways x 3 meters, 1 kW at 360x (0.1 kWh/s each)
my $control = PostgreSQL::Test::Cluster::get_free_port();
my $metrics_port = PostgreSQL::Test::Cluster::get_free_port();
my $base = PostgreSQL::Test::Cluster::get_free_port();
my $sim = start_simulator($tmp, $control, '--tcp-gateways', 2, '--base-port', $base,
	'--meters-per-gateway', 3, '--speedup', 360, '--initial-kwh', '100.00',
	'--history', "$tmp/history");

# price 0.5/kWh; every account starts with 1000.00 (no alarm, no trip)
create_polled_site($node, 'Crash plaza', 'crash', $base, 2, 3, 0.5);
sub meter_id { my ($g, $u) = @_; return 3 * $g + $u; }

my $metrics_url = "http://127.0.0.1:$metrics_port";
my $agent = start_agent($tmp, conninfo => $node->connstr('postgres') . ' connect_timeout=2', agent_id => 'crash',
	metrics_port => $metrics_port);

# the recharge loop: recharge i credits 1.00 to account i % 6 + 1 with
# reference C<i>; "try i" before, "ok i" or "fail i" after psql returns
my $connstr = $node->connstr('postgres') . ' connect_timeout=2';
open my $fh, '>', "$tmp/recharge.sh" or die;
print $fh <<"EOS";
#!/usr/bin/env bash
i=0
while [ ! -e '$tmp/stop' ]; do
	i=\$((i + 1))
	echo "try \$i"
	if psql -X -q -tA -v ON_ERROR_STOP=1 -d "$connstr" \\
		-c "SELECT prepay.recharge(1, \$((i % 6 + 1)), 1.00, 'cash', 'C\$i')" >/dev/null 2>>'$tmp/recharge.err'; then
		echo "ok \$i"
	else
		echo "fail \$i"
		sleep 0.05
	fi
done
EOS
close $fh;
chmod 0755, "$tmp/recharge.sh";
my $loop = start([ "$tmp/recharge.sh" ], '>', "$tmp/recharge.log");

sub count_lines
{
	my ($what) = @_;
	return scalar(() = (-e "$tmp/recharge.log" ? slurp_file("$tmp/recharge.log") : '') =~ /^$what \d+$/mg);
}
sub readings { return $node->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading'); }

# crash(round): round 1 kill -9 of every server process, 2 kill -9 of the
# agent's backend (the postmaster resets and recovers by itself), 3 an
# immediate shutdown; each time recharges fail and the agent spools
sub crash
{
	my ($round) = @_;
	if ($round == 1)
	{
		my $postmaster = $node->{_pid};
		my @children = split ' ', `pgrep -P $postmaster`;
		$node->kill9;
		kill 'KILL', @children;
		ok(wait_for(sub { !grep { kill 0, $_ } $postmaster, @children }, 30), 'kill -9: every server process is gone');
		sleep 1.5;
		$node->start;
	}
	elsif ($round == 2)
	{
		my $backend = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
			  . " AND query NOT LIKE '%recharge%' ORDER BY backend_start LIMIT 1");
		ok(kill('KILL', $backend), "kill -9 of backend $backend");
		sleep 1.5;
		ok($node->poll_query_until('postgres', 'SELECT true'), 'the postmaster recovered by itself');
		like(slurp_file($node->logfile), qr/terminated by signal 9/, 'the server log shows the killed backend');
	}
	else
	{
		$node->stop('immediate');
		sleep 1.5;
		$node->start;
	}
}

ok(wait_for(sub { readings() >= 12 }, 30), 'readings flow');
for my $round (1 .. $crashes)
{
	my ($ok0, $r0) = (count_lines('ok'), readings());
	ok(wait_for(sub { count_lines('ok') >= $ok0 + 20 && readings() >= $r0 + 12 }, 60),
		"crash $round: recharges succeed and readings arrive before it");
	crash($round);
}
my $r0 = readings();
ok(wait_for(sub { count_lines('ok') >= 20 && readings() >= $r0 + 12 }, 60),
	'after the last crash: recharges succeed, readings arrive');
open $fh, '>', "$tmp/stop" or die;
close $fh;
$loop->finish;

# the agent resumed by itself and drained its spool
ok(wait_for(sub { (metric($metrics_url, 'prepay_agent_db_connected') // '') eq '1'
		&& !-s "$tmp/spool/spool.log" }, 60), 'the agent reconnected by itself and drained its spool');
like(slurp_file("$tmp/agent.err"), qr/database connection lost/, 'the agent saw the crashes');
note('agent: ' . join(', ', map { "$_ " . (metric($metrics_url, "prepay_agent_$_") // '?') }
	qw(readings_spooled_total readings_replayed_total readings_dropped_total)));

# recharges: every success is there once; every attempt is retried
my $log = slurp_file("$tmp/recharge.log");
my @tried = $log =~ /^try (\d+)$/mg;
my @okd = $log =~ /^ok (\d+)$/mg;
my @failed = $log =~ /^fail (\d+)$/mg;
note(sprintf('%d crashes: %d recharges attempted, %d reported success, %d failed',
	$crashes, scalar @tried, scalar @okd, scalar @failed));
ok(@failed > 0, 'some recharges failed during the crashes');
my $ok_list = join(',', map { "'C$_'" } @okd);
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM unnest(ARRAY[$ok_list]) r
	 WHERE (SELECT count(*) FROM prepay.ledger WHERE external_ref = r) <> 1}), '0',
	'every recharge that reported success is in the ledger exactly once');
my $lost = $node->safe_psql('postgres', qq{
	SELECT count(*) FROM unnest(ARRAY[@{[ join(',', map { "'C$_'" } @tried) ]}]) r
	 WHERE NOT EXISTS (SELECT FROM prepay.ledger WHERE external_ref = r)});
note("$lost attempted recharges did not commit (each failed in psql)");
my $credited = q{SELECT sum(amount) FROM prepay.ledger WHERE kind = 'recharge'};
my $before = $node->safe_psql('postgres', $credited);
$node->safe_psql('postgres', join('', map { "SELECT prepay.recharge(1, " . ($_ % 6 + 1) . ", 1.00, 'cash', 'C$_');\n" } @tried));
is($node->safe_psql('postgres', "SELECT ($credited) - $before"), sprintf('%.2f', $lost),
	'retrying every attempt credits only those that had not committed');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT external_ref FROM prepay.ledger WHERE kind = 'recharge'
	                       GROUP BY channel, external_ref HAVING count(*) > 1) d}), '0',
	'no reference credited twice');
my %per_account;
$per_account{ $_ % 6 + 1 } += 1 for @tried;
is($node->safe_psql('postgres', q{
	SELECT string_agg(account_id || ':' || (sum - 1000)::int, ' ' ORDER BY account_id)
	  FROM (SELECT account_id, sum(amount) FROM prepay.ledger WHERE kind = 'recharge' GROUP BY account_id) s}),
	join(' ', map { "$_:" . ($per_account{$_} // 0) } 1 .. 6),
	'each account holds exactly the recharges attempted for it');

# readings: stop the agent (database up) and compare with the served history
$agent->signal('TERM');
$agent->finish;
is($agent->result(0), 0, 'agent exits 0 on SIGTERM');
unlike(slurp_file("$tmp/agent.err"), qr/Sanitizer|runtime error/, 'no sanitizer report');
ok(!-s "$tmp/spool/spool.log", 'the spool is empty');
my %served;
for (split /\n/, slurp_file("$tmp/history"))
{
	my ($ms, $g, $u, $ck) = split / /;
	push @{ $served{ meter_id($g, $u) } }, $ck;
}
for my $m (1 .. 6)
{
	my $stored = $node->safe_psql('postgres',
		"SELECT string_agg((energy * 100)::bigint::text, ' ' ORDER BY read_at) FROM prepay.reading WHERE meter_id = $m");
	is($stored, join(' ', @{ $served{$m} }), "meter $m: every served reading stored exactly once, in order");
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading WHERE quarantine_reason IS NOT NULL'), '0',
	'nothing quarantined');

# no half-applied state
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM ((TABLE prepay.energy_day EXCEPT SELECT * FROM prepay.energy_from_ledger(1, '-infinity', 'infinity'))
	                      UNION ALL (SELECT * FROM prepay.energy_from_ledger(1, '-infinity', 'infinity') EXCEPT TABLE prepay.energy_day)) d
}), '0', 'the energy rollups equal the ledger (no batch half rolled up)');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM prepay.account a
	 WHERE balance <> (SELECT sum(amount) FROM prepay.ledger l WHERE l.site_id = a.site_id AND l.account_id = a.account_id)}),
	'0', 'every balance equals its ledger sum');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM prepay.meter m
	 WHERE (last_read_at, last_energy) IS DISTINCT FROM
	       (SELECT (read_at, energy) FROM prepay.reading r
	         WHERE r.site_id = m.site_id AND r.meter_id = m.meter_id ORDER BY read_at DESC LIMIT 1)}),
	'0', 'each meter\'s state is its last reading');
my $pairs = q{
	WITH r AS (SELECT meter_id, read_at, energy,
	                  lag(read_at) OVER w AS prev_at, lag(energy) OVER w AS prev_energy
	             FROM prepay.reading WHERE quarantine_reason IS NULL
	           WINDOW w AS (PARTITION BY site_id, meter_id ORDER BY read_at)),
	     charged AS (SELECT * FROM r WHERE energy > prev_energy),
	     c AS (SELECT meter_id, read_from, read_to, energy FROM prepay.ledger WHERE kind = 'consumption')
};
is($node->safe_psql('postgres', $pairs . q{
	SELECT count(*) FROM charged
	 WHERE (SELECT count(*) FROM c WHERE c.meter_id = charged.meter_id AND c.read_from = charged.prev_at
	           AND c.read_to = charged.read_at AND c.energy = charged.energy - charged.prev_energy) <> 1}),
	'0', 'every accepted reading that consumed energy has exactly one consumption entry');
is($node->safe_psql('postgres', $pairs . q{
	SELECT count(*) FROM c
	 WHERE NOT EXISTS (SELECT FROM charged WHERE charged.meter_id = c.meter_id AND charged.read_at = c.read_to)}),
	'0', 'no consumption entry without its reading');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM prepay.meter m
	  JOIN LATERAL (SELECT min(energy) AS first, max(energy) AS last FROM prepay.reading r
	                 WHERE r.site_id = m.site_id AND r.meter_id = m.meter_id) e ON true
	 WHERE (SELECT coalesce(sum(-amount), 0) FROM prepay.ledger l
	         WHERE l.kind = 'consumption' AND l.meter_id = m.meter_id) + m.charge_carry
	       <> (e.last - e.first) * m.multiplier * 0.5}),
	'0', 'per meter: consumption entries plus carry = (last - first register) x price');
my $entries = $node->safe_psql('postgres', q{SELECT count(*) FROM prepay.ledger WHERE kind = 'consumption'});
note("$entries consumption entries, " . readings() . ' readings');

$sim->signal('TERM');
$sim->finish;
$node->stop;
done_testing();
