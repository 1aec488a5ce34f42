# test/t/170_agent_hostile.pl
#
# issue 8: the agent built with AddressSanitizer and UBSan against hostile
# gateways.  The simulator's gateways 2 and 3 each answer a fixed number of
# requests (1,000, seeded) with a random mix of valid replies, corrupt
# frames, wrong unit ids, exceptions, truncated, endless, oversized and
# missing replies (docs/SIMULATOR.md, "Hostile mode"); gateways 0 and 1
# stay healthy.
#   - the whole hostile budget is served, every kind at least once;
#   - the agent stays alive and answers /metrics throughout;
#   - the healthy meters keep getting new readings throughout the hostile
#     phase, and each of them stores exactly the values it was served;
#   - no reading of the hostile gateway is garbage: every stored energy is
#     a value the simulator served that meter (its read history), its TOU
#     registers add up, its power and relay state are the meter's;
#   - after the budget the hostile gateways' meters are polled again;
#   - SIGTERM: exit 0, no ASan/UBSan/LeakSanitizer report; ledger check.

use strict;
use warnings;
use HTTP::Tiny;
use JSON::PP;
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

my $GATEWAYS = 4;
my @HOSTILE = (2, 3);		# the hostile gateways
my $METERS = 4;				# polled per healthy gateway
my $HOSTILE_METERS = 12;	# per hostile gateway: more requests per sweep
my $SEED = 20240817;		# gateway g gets seed $SEED + g
my $FRAMES = 1000;			# per hostile gateway
my %is_hostile = map { $_ => 1 } @HOSTILE;
my @KINDS = qw(valid corrupt wrong_unit exception partial endless oversized none);

my $node = start_prepay_node('hostile');

# ports as in 100_agent_e2e.pl: the base port last, so that base + 1 and
# base + 2 are not the control or metrics port
my $control = PostgreSQL::Test::Cluster::get_free_port();
my $metrics_port = PostgreSQL::Test::Cluster::get_free_port();
my $base = PostgreSQL::Test::Cluster::get_free_port();
my $sim_url = "http://127.0.0.1:$control";
my $metrics_url = "http://127.0.0.1:$metrics_port";

# 1 kW per meter, 360x: 0.1 kWh (10 centi-kWh) per second
my $sim = start_simulator($tmp, $control, '--tcp-gateways', $GATEWAYS, '--base-port', $base,
	'--meters-per-gateway', $HOSTILE_METERS, '--speedup', 360, '--initial-kwh', '100.00',
	'--history', "$tmp/history");

# price 1.00/kWh, plenty of money: no trip in this test
$node->safe_psql('postgres', qq{
	INSERT INTO prepay.site (name) VALUES ('Plaza');
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2020-01-01', 1.0);
	INSERT INTO prepay.gateway (site_id, name, host, port, agent_id, poll_interval)
	SELECT 1, 'g' || g, '127.0.0.1', $base + g, 'hostile', '1 second' FROM generate_series(0, $GATEWAYS - 1) g;
	INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id, device_profile, max_per_hour)
	SELECT 1, 'M' || g || '-' || u, g + 1, u, 'ddsy1352', 100000
	  FROM generate_series(0, $GATEWAYS - 1) g, generate_series(1, $HOSTILE_METERS) u
	 WHERE u <= $METERS OR g IN (@{[ join ',', @HOSTILE ]}) ORDER BY g, u;
	SELECT prepay.open_account(1, 'A' || meter_id, 'Tenant ' || meter_id, 1) FROM prepay.meter ORDER BY meter_id;
	SELECT prepay.attach_meter(1, meter_id, meter_id) FROM prepay.meter ORDER BY meter_id;
	SELECT prepay.recharge(1, account_id, 100000, 'cash', 'R' || account_id) FROM prepay.account ORDER BY account_id;
});
# meter id of simulator gateway g (0-based), unit u
my %meter_id = map { my ($m, $g, $u) = split /\|/; ("$g $u" => $m) } split /\n/,
	$node->safe_psql('postgres', 'SELECT meter_id, gateway_id - 1, unit_id FROM prepay.meter');
sub units { my ($g) = @_; return 1 .. ($is_hostile{$g} ? $HOSTILE_METERS : $METERS); }
my @healthy = map { my $g = $_; map { $meter_id{"$g $_"} } units($g) } grep { !$is_hostile{$_} } 0 .. $GATEWAYS - 1;
my @hostile = map { my $g = $_; map { $meter_id{"$g $_"} } units($g) } @HOSTILE;
my $hostile_list = join ',', @hostile;
my $n_meters = @healthy + @hostile;

# the sanitizers: a leak, an ASan error or any UB stops the agent
my $agent;
{
	local $ENV{ASAN_OPTIONS} = 'detect_leaks=1:abort_on_error=1';
	local $ENV{UBSAN_OPTIONS} = 'halt_on_error=1:print_stacktrace=1';
	$agent = start_agent($tmp, conninfo => $node->connstr('postgres'), agent_id => 'hostile',
		metrics_port => $metrics_port);
}

ok(wait_for(sub { $node->safe_psql('postgres',
	"SELECT count(DISTINCT meter_id) = $n_meters FROM prepay.reading") eq 't' }, 20),
	'every meter delivers readings before the hostile phase');

# latest read_at of each meter, and the number of readings, as of now
sub latest
{
	my %latest = map { split /\|/ } split /\n/, $node->safe_psql('postgres',
		q{SELECT meter_id, max(read_at) FROM prepay.reading GROUP BY meter_id});
	return \%latest;
}

# GET /hostile summed over the hostile gateways: frames, done (all), served per kind
sub hostile_state
{
	my $r = $http->get("$sim_url/hostile");
	return undef unless $r->{success};
	my $gateways = decode_json($r->{content})->{gateways};
	return undef unless @$gateways == @HOSTILE;
	my %s = (done => 1, frames => 0);
	for my $g (@$gateways)
	{
		$s{done} &&= $g->{done};
		$s{frames} += $g->{frames};
		$s{served}{$_} += $g->{served}{$_} for keys %{ $g->{served} };
	}
	return \%s;
}

# the hostile phase
for my $g (@HOSTILE)
{
	my $seed = $SEED + $g;
	my $res = $http->post("$sim_url/fault?gateway=$g&mode=hostile&seed=$seed&frames=$FRAMES");
	is($res->{content}, "ok\n", "gateway $g turns hostile: seed $seed, $FRAMES frames");
}
my $phase_start = $node->safe_psql('postgres', 'SELECT now()');
my ($windows, $stalled, $deaf, $state) = (0, 0, 0);
my $before = latest();
my $deadline = time + 240;
while (time < $deadline)
{
	sleep 5;
	$state = hostile_state();
	# liveness: /metrics answers and the healthy meters have new readings
	$deaf++ unless defined metric($metrics_url, 'prepay_agent_readings_polled_total');
	my $now = latest();
	my @stuck = grep { !defined $now->{$_} || $now->{$_} eq ($before->{$_} // '') } @healthy;
	$windows++;
	$stalled++ if @stuck;
	note("window $windows: hostile frames " . ($state ? $state->{frames} : '?')
		. (@stuck ? "; no new reading for meters @stuck" : ''));
	$before = $now;
	last if $state && $state->{done};
}
my $phase_end = $node->safe_psql('postgres', 'SELECT now()');
ok($state && $state->{done} && $state->{frames} == $FRAMES * @HOSTILE,
	sprintf('the hostile budget of %d frames is served', $FRAMES * @HOSTILE))
	or diag(explain($state));
note('hostile frames served per kind: ' . join(', ', map { "$_ " . ($state->{served}{$_} // 0) } @KINDS));
for my $kind (@KINDS)
{
	ok(($state->{served}{$kind} // 0) > 0, "hostile kind $kind served at least once");
}
is($deaf, 0, "the agent answered /metrics in each of the $windows windows of 5 s");
is($stalled, 0, "every healthy meter got a new reading in each of the $windows windows of 5 s");
my $during = $node->safe_psql('postgres', qq{
	SELECT string_agg(meter_id || ':' || n, ' ' ORDER BY meter_id) FROM (
	    SELECT meter_id, count(*) FILTER (WHERE read_at >= '$phase_start' AND read_at < '$phase_end') AS n
	      FROM prepay.meter LEFT JOIN prepay.reading USING (site_id, meter_id) GROUP BY meter_id) c});
note("readings per meter during the hostile phase ($phase_start .. $phase_end): $during");

# recovery: the hostile gateways answer normally; their meters are polled again
my $after = $node->safe_psql('postgres', 'SELECT now()');
ok(wait_for(sub { $node->safe_psql('postgres', qq{
	SELECT count(DISTINCT meter_id) FROM prepay.reading
	 WHERE read_at > '$after' AND meter_id IN ($hostile_list)}) == @hostile }, 30),
	'after the budget every meter of the hostile gateways is read again');
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT count(*) FROM prepay.alarm WHERE kind IN ('meter_lost', 'gateway_lost') AND cleared_at IS NULL}) eq '0' }, 15),
	'no meter or gateway is left marked lost');
is($http->get("$metrics_url/healthz")->{status}, 200, 'the agent is still up');
my $metrics = $http->get("$metrics_url/metrics")->{content} // '';
for my $g (@HOSTILE)
{
	for my $kind (qw(timeout exception corrupt))
	{
		like($metrics, qr/^prepay_agent_read_failures_total\{site="1",gateway="g$g",kind="$kind"\} [1-9]/m,
			"gateway $g: hostile replies counted as $kind");
	}
}
note(join "\n", grep { /read_failures_total|reads_total/ } split /\n/, $metrics);

# stop the agent: a clean exit, nothing from the sanitizers
$agent->signal('TERM');
ok(wait_for(sub { !$agent->pumpable }, 30), 'the agent stops on SIGTERM');
$agent->finish;
is($agent->result(0), 0, 'the agent exits 0');
my $log = slurp_file("$tmp/agent.err");
unlike($log, qr/Sanitizer|runtime error|ERROR: AddressSanitizer|LeakSanitizer/, 'no sanitizer report in the agent log');

# readings against what the simulator served
my $served = served_history("$tmp/history");
for my $g (0 .. $GATEWAYS - 1)
{
	for my $u (units($g))
	{
		my $m = $meter_id{"$g $u"};
		my @stored = split / /, $node->safe_psql('postgres',
			"SELECT string_agg((energy * 100)::bigint::text, ' ' ORDER BY read_at) FROM prepay.reading WHERE meter_id = $m");
		my @served = @{ $served->{"$g $u"} // [] };
		if (!$is_hostile{$g})
		{
			is("@stored", "@served", "healthy meter $m: every served reading stored exactly once, in order");
			next;
		}
		my %was = map { $_ => 1 } @served;
		my @garbage = grep { !$was{$_} } @stored;
		is("@garbage", '', sprintf('hostile meter %d: each of its %d stored readings is a value it served', $m, scalar @stored));
	}
}
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM prepay.reading
	 WHERE meter_id IN ($hostile_list)
	   AND (sharp + peak + flat + valley IS DISTINCT FROM energy OR power IS DISTINCT FROM 1.000
	        OR relay_state IS DISTINCT FROM 'closed')}), '0',
	'hostile meters: every stored reading has TOU registers adding up, power 1 kW, relay closed');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM prepay.reading WHERE meter_id IN ($hostile_list)
	   AND read_at >= '$phase_start' AND read_at < '$phase_end'}) > 0 ? 'some' : 'none', 'some',
	'hostile meters: some readings got through during the hostile phase');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading WHERE quarantine_reason IS NOT NULL'), '0',
	'no reading quarantined');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');

$sim->signal('TERM');
$sim->finish;
is($sim->result(0), 0, 'the simulator exits 0');
unlike(slurp_file("$tmp/sim.err"), qr/Sanitizer|runtime error/, 'no sanitizer report in the simulator log');
$node->stop;
done_testing();
