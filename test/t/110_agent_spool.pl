# test/t/110_agent_spool.pl
#
# (g) The spool survives an agent restart while the database is down:
# readings taken while the database is stopped are spooled, the agent is
# stopped and started again (database still down).  The second agent
# starts from the catalog the first one cached in the spool directory, so
# it polls and spools too.  When the database returns, the second agent
# replays the spool, and the catalog it then loads from the database
# (unchanged) keeps the bus it started from the cache: no restart.  Every
# served reading is in prepay.reading exactly once, in order.  A cache
# written for another agent id is ignored.  Also: the command-line surface
# (--help, --version, --check-config with file, environment and flags),
# and --once.

use strict;
use warnings;
use IPC::Run qw(start run);
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

my $top = $ENV{TESTDIR};
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $bin = "$top/agent/prepay-agent-asan";


# the command line
my ($out, $err);
run([ $bin, '--help' ], '>', \$out, '2>', \$err);
like($out, qr/--check-config/, '--help lists the options');
run([ $bin, '--version' ], '>', \$out, '2>', \$err);
like($out, qr/^prepay-agent \d/, '--version');
open my $fh, '>', "$tmp/agent.conf" or die;
print $fh "# test\nconninfo = dbname=x\nagent_id = from-file\nlog_level = debug\n";
close $fh;
{
	local $ENV{PREPAY_AGENT_ID} = 'from-env';
	ok(run([ $bin, '--config', "$tmp/agent.conf", '--spool-dir', '/var/tmp/s', '--check-config' ],
			'>', \$out, '2>', \$err), '--check-config exits 0');
}
like($out, qr/^agent_id = from-env$/m, 'environment overrides the file');
like($out, qr/^spool_dir = \/var\/tmp\/s$/m, 'flags override the file');
like($out, qr/^log_level = debug$/m, 'the file is read');
ok(!run([ $bin, '--config', '/dev/null', '--check-config' ], '>', \$out, '2>', \$err),
	'--check-config exits 1 without conninfo');
like($err, qr/conninfo is required/, 'and says why');
open $fh, '>', "$tmp/bad.conf" or die;
print $fh "colour = blue\n";
close $fh;
ok(!run([ $bin, '--config', "$tmp/bad.conf", '--check-config' ], '>', \$out, '2>', \$err), 'unknown key refused');
like($err, qr/unknown key "colour"/, 'and named');

my $node = start_prepay_node('spool');

my $control = PostgreSQL::Test::Cluster::get_free_port();
my $base = PostgreSQL::Test::Cluster::get_free_port();
my $sim = start_simulator($tmp, $control, '--tcp-gateways', 1, '--base-port', $base,
	'--meters-per-gateway', 2, '--profile', 'adf400l', '--speedup', 100,
	'--history', "$tmp/history");

$node->safe_psql('postgres', qq{
	INSERT INTO prepay.site (name) VALUES ('Campus');
	INSERT INTO prepay.gateway (site_id, name, host, port, agent_id, poll_interval)
	VALUES (1, 'adf', '127.0.0.1', $base, 'spool', '1 second');
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2020-01-01', 0.5);
	INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id, device_profile, tariff_id, max_per_hour)
	VALUES (1, 'U1', 1, 1, 'adf400l', 1, 100000), (1, 'U2', 1, 2, 'adf400l', 1, 100000);
});

my @agent_cmd = ($bin, '--config', '/dev/null', '--conninfo', $node->connstr('postgres') . ' connect_timeout=2',
	'--agent-id', 'spool', '--spool-dir', "$tmp/spool", '--metrics', 'off');

# --once: one sweep, delivered, exit 0
ok(run([ @agent_cmd, '--once' ], '>', \$out, '2>', "$tmp/once.err"), '--once exits 0');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading'), '2', '--once: one reading per meter');

sub start_named_agent
{
	my ($name) = @_;
	return start(\@agent_cmd, '>', "$tmp/$name.out", '2>', "$tmp/$name.err");
}

my $agent = start_named_agent('first');
ok(wait_for(sub { $node->safe_psql('postgres', 'SELECT count(*) >= 6 FROM prepay.reading') eq 't' }, 10),
	'readings flow');
$node->stop('fast');
sleep 2.5;
stop_agent($agent, $tmp, 'first');
ok(-s "$tmp/spool/spool.log", 'readings taken while the database was down are spooled');
like(slurp_file("$tmp/first.err"), qr/database connection lost/, 'the agent saw the database go');

ok(-s "$tmp/spool/catalog.cache", 'the first agent cached its catalog');

# a second agent starts while the database is still down: it finds the
# spool and polls from the cached catalog; its readings are spooled too
my $spooled = -s "$tmp/spool/spool.log";
$agent = start_named_agent('second');
ok(wait_for(sub { -s "$tmp/spool/spool.log" > $spooled }, 10), 'the second agent polls from the cached catalog');
my $log = slurp_file("$tmp/second.err");
like($log, qr/spool: \d+ bytes of readings from an earlier run/, 'the spool is found after a restart');
like($log, qr/database is unreachable at start: polling from the catalog cached at/, 'the cached catalog is used');
like($log, qr/catalog: 1 gateways for agent spool from the cache: 0 buses kept, 1 started/, 'its bus is started');

# the database returns: the spool is replayed, and the catalog from the
# database, unchanged, keeps the bus started from the cache
$node->start;
ok(wait_for(sub { !-s "$tmp/spool/spool.log" }, 20), 'the spool is replayed when the database returns');
ok(wait_for(sub { slurp_file("$tmp/second.err") =~
	/catalog: 1 gateways for agent spool from the database: 1 buses kept, 0 started, 0 stopped/ }, 10),
	'the unchanged catalog from the database keeps the bus: no restart');
sleep 1.5;
stop_agent($agent, $tmp, 'second');
my ($before_shutdown) = slurp_file("$tmp/second.err") =~ /^(.*?)shutting down/s;
unlike($before_shutdown, qr/stopping its bus thread/, 'no bus stopped before the shutdown');

# a cache written for another agent id is ignored
$node->stop('fast');
my @other_cmd = map { $_ eq 'spool' ? 'other' : $_ } @agent_cmd;
$agent = start(\@other_cmd, '>', "$tmp/other.out", '2>', "$tmp/other.err");
ok(wait_for(sub { slurp_file("$tmp/other.err") =~ /nothing to poll until the database answers/ }, 10),
	'another agent id: nothing to poll');
like(slurp_file("$tmp/other.err"), qr/catalog\.cache ignored: written for another agent id/, 'and why');
stop_agent($agent, $tmp, 'other');
$node->start;

my %served;
for (split /\n/, slurp_file("$tmp/history"))
{
	my ($ms, $g, $u, $ck) = split / /;
	push @{ $served{$u} }, $ck;
}
for my $u (1, 2)
{
	my $stored = $node->safe_psql('postgres',
		"SELECT string_agg((energy * 100)::bigint::text, ' ' ORDER BY read_at) FROM prepay.reading WHERE meter_id = $u");
	is($stored, join(' ', @{ $served{$u} }), "meter $u: every served reading stored exactly once, in order");
}
is($node->safe_psql('postgres', q{SELECT coalesce(string_agg(DISTINCT quarantine_reason::text, ','), 'none') FROM prepay.reading}), 'none',
	'nothing quarantined: the replay kept the time order');

$sim->signal('TERM');
$sim->finish;
$node->stop;
done_testing();
