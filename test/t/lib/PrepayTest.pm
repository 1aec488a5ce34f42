# test/t/lib/PrepayTest.pm: helpers shared by the agent's TAP tests.
#
#   start_prepay_node(NAME) a new PostgreSQL::Test::Cluster NAME, initialised
#                            and started, with prepay created in its
#                            database postgres; returns the node
#   wait_for(SUB, SECONDS)   poll SUB every 50 ms until it returns true or
#                            SECONDS pass; returns its last value.  Tests
#                            use it as a deadline, never as a measurement.
#   metric(URL, NAME)        the value of an unlabelled metric on the
#                            agent's /metrics at URL (http://host:port), or
#                            undef when it cannot be read
#   served_history(FILE)     the simulator's --history file as a hash
#                            "gateway unit" => [energy_centikwh, ...], in
#                            the order the reads were served
#   start_simulator(DIR, CONTROL_PORT, ARGS...)
#                            start the ASan meter simulator with ARGS and its
#                            control server on 127.0.0.1:CONTROL_PORT, its
#                            output in DIR/sim.out and DIR/sim.err; passes
#                            the test "simulator up" once /healthz answers.
#                            Returns the IPC::Run handle.
#   start_agent(DIR, conninfo => C, agent_id => ID, metrics_port => P,
#               binary => NAME)
#                            start an agent build (NAME in agent/, default
#                            prepay-agent-asan) with no configuration file,
#                            its spool in DIR/spool, /metrics on
#                            127.0.0.1:P and log level info, its output in
#                            DIR/agent.out and DIR/agent.err.  Returns the
#                            IPC::Run handle.
#   stop_agent(AGENT, DIR[, NAME])
#                            stop an agent (SIGTERM) whose output went to
#                            DIR/NAME.out and DIR/NAME.err (NAME default
#                            agent, as start_agent does) and pass the tests
#                            "NAME exits 0 on SIGTERM" and "NAME: no
#                            sanitizer report"; returns its log (NAME.err)
#   stored_readings(NODE)    the readings stored in NODE's database as a hash
#                            meter code => "energy_centikwh ..." in the
#                            order read, to compare with served_history
#   create_polled_site(NODE, NAME, AGENT_ID, BASE_PORT, GATEWAYS, METERS_PER_GATEWAY[, PRICE])
#                            in NODE's database: site 1 called NAME on a
#                            flat tariff of PRICE (default 0.01) per kWh; GATEWAYS gateways
#                            on 127.0.0.1:BASE_PORT + g polled every second
#                            by AGENT_ID; on each, METERS_PER_GATEWAY
#                            ddsy1352 meters G<g>U<u> (unit u of simulator
#                            gateway g), each on its own account recharged
#                            with 1000 (no trip)
#   start_cron_node(NAME[, CONF])
#                            a new node NAME with pg_cron preloaded for its
#                            database postgres (background workers), plus
#                            the postgresql.conf lines CONF; started, with
#                            nothing created in it; returns the node
#   skip_unless_citus()      skip the whole test (plan skip_all) when Citus
#                            is not installed in the server's lib dir
#   start_citus_cluster(N)   a coordinator and N workers with Citus, prepay
#                            created and distributed; returns ($coord, @workers)
#   citus_node(NAME[, CONF]) one node of it, Citus preloaded and created; CONF:
#                            more postgresql.conf lines (a later
#                            shared_preload_libraries line replaces 'citus')
#   shard_port(COORD, SITE)  the port of the worker holding a site's shards
#
# Loading it also makes a test that dies or bails out leave nothing behind:
# at exit, the test's own child processes (simulator, agent, socat, shell
# loops started with IPC::Run) are killed.  The clusters stop themselves.
package PrepayTest;

use strict;
use warnings;
use Exporter 'import';
use HTTP::Tiny;
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils ();
use Test::More;
use Time::HiRes qw(time sleep);

our @EXPORT = qw(start_prepay_node wait_for metric served_history start_simulator start_agent stop_agent stored_readings
  create_polled_site start_cron_node skip_unless_citus citus_node start_citus_cluster shard_port run_job_until
  restore_archive keep_three_months sha256_checks
  restore_other_months);

my $top = $ENV{TESTDIR};

my $test_pid = $$;

END
{
	local $?;    # keep the test's exit status
	system('pkill', '-KILL', '-P', $test_pid) if $$ == $test_pid;
}

sub start_prepay_node
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION prepay');
	return $node;
}

# a PostgreSQL node with Citus loaded and created in database postgres
# (test/t/22x_citus*.pl), listening on loopback for the other nodes
sub citus_node
{
	my ($name, $conf) = @_;
	my $node = configured_node($name, q{
shared_preload_libraries = 'citus'
listen_addresses = '127.0.0.1'
max_prepared_transactions = 20
timezone = 'UTC'
citus.log_remote_commands = off
} . ($conf // ''));
	$node->safe_psql('postgres', 'CREATE EXTENSION citus');
	return $node;
}

# a PostgreSQL node with pg_cron loaded for database postgres, started
sub start_cron_node
{
	my ($name, $conf) = @_;
	return configured_node($name, q{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
} . ($conf // ''));
}

# a new node with these postgresql.conf lines, started
sub configured_node
{
	my ($name, $conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', $conf);
	$node->start;
	return $node;
}

sub skip_unless_citus
{
	my $libdir = `pg_config --pkglibdir`;
	chomp $libdir;
	plan skip_all => "Citus is not installed ($libdir/citus.so is missing): the distributed test is skipped"
	  unless -f "$libdir/citus.so";
}

# a coordinator and N workers, prepay created and distributed on the
# coordinator: returns ($coordinator, @workers)
sub start_citus_cluster
{
	my ($nworkers) = @_;
	my $coord = citus_node('coordinator');
	my @workers = map { citus_node("worker$_") } 1 .. $nworkers;
	$coord->safe_psql('postgres', "SELECT citus_set_coordinator_host('127.0.0.1', " . $coord->port . ")");
	$coord->safe_psql('postgres', "SELECT citus_add_node('127.0.0.1', " . $_->port . ")") for @workers;
	$coord->safe_psql('postgres', 'CREATE EXTENSION prepay; SELECT count(*) FROM prepay.distribute()');
	return ($coord, @workers);
}

# the port of the worker holding a site's shards
sub shard_port
{
	my ($coord, $site) = @_;
	return $coord->safe_psql('postgres',
		"SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = get_shard_id_for_distribution_column('prepay.site', $site)");
}

sub wait_for
{
	my ($check, $seconds) = @_;
	my $deadline = time + $seconds;
	my $v;
	while (!($v = $check->()) && time < $deadline) { sleep 0.05; }
	return $v;
}

# schedule one of prepay's jobs every minute and wait, up to 150 s, until
# the query $done returns true; unschedules the jobs again and returns
# whether it did and the status of the job's last run
sub run_job_until
{
	my ($node, $job, $done) = @_;
	$node->safe_psql('postgres', qq{SELECT count(*) FROM prepay.schedule_jobs('{"$job": "* * * * *"}')});
	my $deadline = time + 150;
	my $ok = 0;
	until (($ok = $node->safe_psql('postgres', $done) eq 't') || time > $deadline) { sleep 1; }
	my $status = $node->safe_psql('postgres', qq{
		SELECT d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		 WHERE j.jobname = '$job' ORDER BY d.runid DESC LIMIT 1});
	$node->safe_psql('postgres', 'SELECT prepay.unschedule_jobs()');
	return ($ok, $status);
}

# the end of the retention scenario of test/t/230_partitions.pl and
# 231_citus_partitions.pl, January restored already: restoring it again is
# refused, February to April come back, every reading is back ($readings
# in all) and the query $outcome says $expected again
sub restore_other_months
{
	my ($node, $dir, $readings, $outcome, $expected, $same) = @_;
	my ($rc, $out, $err) = restore_archive($node, $dir, '2026-01');
	like($err, qr/55000: 2026-01 has a partition already/, 'a month is restored once');
	is(join(' ', map { (restore_archive($node, $dir, "2026-$_"))[0] } '02', '03', '04'), '0 0 0',
		'February to April restored');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading'), $readings, 'every archived reading is back');
	is($node->safe_psql('postgres', $outcome), $expected, $same);
}

# retention of 3 whole months for every site, then the retention job's run
# into the server directory $dir: returns what it archived up to April 2026
# ("month rows, ...") and how many month partitions older than 3 months
# are left
sub keep_three_months
{
	my ($node, $dir) = @_;
	$node->safe_psql('postgres', 'UPDATE prepay.site SET reading_keep_months = 3');
	my $archived = $node->safe_psql('postgres', qq{
		SELECT string_agg(month || ' ' || rows, ', ' ORDER BY month) FROM prepay.archive_due_partitions('$dir')
		 WHERE month <= '2026-04'});
	my $left = $node->safe_psql('postgres', q{
		SELECT count(*) FROM prepay.reading_partitions
		 WHERE NOT is_default AND to_time <= date_trunc('month', now()) - interval '3 months'});
	return ($archived, $left);
}

# whether sha256sum -c accepts an archive file's checksum file (both in
# $dir), and what it said
sub sha256_checks
{
	my ($dir, $file) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ 'sha256sum', '-c', "$file.sha256" ], '>', \$out, '2>', \$err, init => sub { chdir $dir });
	return ($ok && $out =~ /\Q$file\E: OK/, "$out $err");
}

# prepay.restore_reading_archive() of a month (YYYY-MM) archived into the
# server directory $dir: returns psql's ($rc, $stdout, $stderr), the
# error with its SQLSTATE
sub restore_archive
{
	my ($node, $dir, $month) = @_;
	return $node->psql('postgres',
		qq{SELECT * FROM prepay.restore_reading_archive('$dir/prepay.reading.$month.manifest.json')},
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
}

my $http = HTTP::Tiny->new(timeout => 5);

sub metric
{
	my ($url, $name) = @_;
	my $content = $http->get("$url/metrics")->{content} // '';
	return $content =~ /^\Q$name\E (\S+)$/m ? $1 : undef;
}

sub served_history
{
	my ($file) = @_;
	my %served;
	open my $fh, '<', $file or die "cannot open $file: $!";
	while (<$fh>)
	{
		my ($ms, $g, $u, $ck) = split / /;
		push @{ $served{"$g $u"} }, $ck;
	}
	close $fh;
	return \%served;
}

sub start_simulator
{
	my ($dir, $control, @args) = @_;
	my $sim = IPC::Run::start([ "$top/test/sim/prepay-sim-asan", @args, '--control', "127.0.0.1:$control" ],
		'>', "$dir/sim.out", '2>', "$dir/sim.err");
	ok(wait_for(sub { ($http->get("http://127.0.0.1:$control/healthz")->{content} // '') eq "ok\n" }, 10),
		'simulator up');
	return $sim;
}

sub start_agent
{
	my ($dir, %opt) = @_;
	my $binary = $opt{binary} // 'prepay-agent-asan';
	return IPC::Run::start([ "$top/agent/$binary", '--config', '/dev/null', '--conninfo', $opt{conninfo},
			'--agent-id', $opt{agent_id}, '--spool-dir', "$dir/spool",
			'--metrics', "127.0.0.1:$opt{metrics_port}", '--log-level', 'info' ],
		'>', "$dir/agent.out", '2>', "$dir/agent.err");
}

sub stop_agent
{
	my ($agent, $dir, $name) = @_;
	$name //= 'agent';
	$agent->signal('TERM');
	$agent->finish;
	is($agent->result(0), 0, "$name exits 0 on SIGTERM");
	my $log = PostgreSQL::Test::Utils::slurp_file("$dir/$name.err");
	unlike($log, qr/Sanitizer|runtime error/, "$name: no sanitizer report");
	return $log;
}

sub stored_readings
{
	my ($node) = @_;
	return { map { split /\|/ } split /\n/, $node->safe_psql('postgres', q{
		SELECT code || '|' || string_agg((energy * 100)::bigint::text, ' ' ORDER BY read_at)
		  FROM prepay.reading JOIN prepay.meter USING (site_id, meter_id) GROUP BY code}) };
}

sub create_polled_site
{
	my ($node, $name, $agent_id, $base, $gateways, $meters_per_gateway, $price) = @_;
	$price //= 0.01;
	$node->safe_psql('postgres', qq{
		INSERT INTO prepay.site (name) VALUES ('$name');
		INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
		INSERT INTO prepay.tariff_version VALUES (1, 1, '2020-01-01', $price);
		INSERT INTO prepay.gateway (site_id, name, host, port, agent_id, poll_interval)
		SELECT 1, 'g' || g, '127.0.0.1', $base + g, '$agent_id', '1 second' FROM generate_series(0, $gateways - 1) g;
		INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id, device_profile, max_per_hour)
		SELECT 1, 'G' || g || 'U' || u, g + 1, u, 'ddsy1352', 100000
		  FROM generate_series(0, $gateways - 1) g, generate_series(1, $meters_per_gateway) u ORDER BY g, u;
		SELECT prepay.open_account(1, 'A' || meter_id, 'Tenant ' || meter_id, 1) FROM prepay.meter ORDER BY meter_id;
		SELECT prepay.attach_meter(1, meter_id, meter_id) FROM prepay.meter ORDER BY meter_id;
		SELECT prepay.recharge(1, account_id, 1000, 'cash', 'R' || account_id) FROM prepay.account ORDER BY account_id;
	});
}

1;
