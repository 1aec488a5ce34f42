# test/t/050_simulator.pl
#
# The meter simulator (test/sim/prepay-sim, AddressSanitizer build) against
# a small libmodbus client (test/sim/probe/sim_probe.c): register maps,
# relay trip and close with read-back, energy that stands still while
# tripped, Modbus exceptions, the RTU line, every fault mode, the control
# server, the read history, and a clean stop on SIGTERM with no sanitizer
# report.  No timing is asserted.

use strict;
use warnings;
use IPC::Run qw(start);
use HTTP::Tiny;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = $ENV{TESTDIR};
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $sim = "$top/test/sim/prepay-sim-asan";
my $probe = "$tmp/sim_probe";
my $http = HTTP::Tiny->new(timeout => 5);

my $cflags = `pkg-config --cflags --libs libmodbus`;
chomp $cflags;
system("cc -std=gnu11 -Wall -Wextra -Werror -O1 -o $probe $top/test/sim/probe/sim_probe.c $cflags") == 0
  or BAIL_OUT('cannot build sim_probe');

# probe(ARGS...): its output and exit status
sub probe
{
	my $out = `$probe @_ 2>&1`;
	my $status = $? >> 8;
	note($out);
	return ($out, $status);
}

# Start a simulator; returns (IPC::Run handle, control URL).
sub start_sim
{
	my ($name, @args) = @_;
	my $control = PostgreSQL::Test::Cluster::get_free_port();
	my $h = start([ $sim, @args, '--control', "127.0.0.1:$control" ],
		'>', "$tmp/$name.out", '2>', "$tmp/$name.err");
	my $url = "http://127.0.0.1:$control";
	for (1 .. 100)
	{
		last if ($http->get("$url/healthz")->{content} // "") eq "ok\n";
		select(undef, undef, undef, 0.1);
	}
	is($http->get("$url/healthz")->{content}, "ok\n", "$name: /healthz answers ok");
	return ($h, $url);
}

# Stop a simulator with SIGTERM: exit 0 and nothing from the sanitizers.
sub stop_sim
{
	my ($name, $h) = @_;
	$h->signal('TERM');
	$h->finish;
	is($h->result(0), 0, "$name: exits 0 on SIGTERM");
	my $err = slurp_file("$tmp/$name.err");
	unlike($err, qr/Sanitizer|runtime error/, "$name: no sanitizer report");
}

sub post { return $http->post("$_[0]/$_[1]")->{content}; }

# a TCP gateway and an RTU line, ddsy1352
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $pty = "$tmp/pty";
my $socat = start([ 'socat', "pty,raw,echo=0,link=${pty}A", "pty,raw,echo=0,link=${pty}B" ]);
for (1 .. 100) { last if -e "${pty}A" && -e "${pty}B"; select(undef, undef, undef, 0.05); }

my ($h, $url) = start_sim('ddsy', '--tcp-gateways', 1, '--base-port', $port,
	'--meters-per-gateway', 4, '--rtu', "${pty}A", '--speedup', 1000000,
	'--initial-kwh', '1234.56', '--history', "$tmp/history");

my ($out, $status) = probe('check', '127.0.0.1', $port, 4);
is($status, 0, 'ddsy1352 over TCP: map, relay, exceptions');
($out, $status) = probe('check-rtu', "${pty}B", 4);
is($status, 0, 'ddsy1352 over RTU: map, relay, exceptions, every unit id');

my $meters = $http->get("$url/meters")->{content};
like($meters, qr/^0 1 \d+ closed 1 1 \d+$/m, 'TCP meter 1 counted one trip and one close');
like($meters, qr/^1 1 \d+ closed 1 1 \d+$/m, 'RTU meter 1 counted one trip and one close');
like($meters, qr/^1 4 \d+ closed 0 0 1$/m, 'RTU meter 4 counted its energy read');
is(scalar(() = $meters =~ /\n/g), 8, 'one line per meter');

# faults, changed at run time
my %expect = (exception => 'error exception04', corrupt => 'error corrupt',
	silent => 'error timeout', dead => 'error timeout', 'slow&ms=50' => 'ok',
	none => 'ok');
for my $mode ('exception', 'corrupt', 'silent', 'dead', 'slow&ms=50', 'none')
{
	is(post($url, "fault?gateway=0&mode=$mode"), "ok\n", "fault $mode set");
	($out) = probe('read', '127.0.0.1', $port, 2);
	like($out, qr/^\Q$expect{$mode}\E/, "fault $mode: $expect{$mode}");
}
like(post($url, 'fault?gateway=0&mode=bogus'), qr/mode must be/, 'unknown fault refused');

# hostile mode: seed 3 draws the same six kinds every time; then normal again
is(post($url, 'fault?gateway=0&mode=hostile&seed=3&frames=6'), "ok\n", 'fault hostile set');
probe('read', '127.0.0.1', $port, 2) for 1 .. 6;
is($http->get("$url/hostile")->{content}, qq({"gateways": [
  {"gateway": 0, "seed": 3, "budget": 6, "frames": 6, "done": true, "served": {"valid": 1, "corrupt": 1, "wrong_unit": 0, "exception": 2, "partial": 1, "endless": 0, "oversized": 1, "none": 0}}
]}
), 'hostile: six frames served, counted per kind, deterministic');
($out) = probe('read', '127.0.0.1', $port, 2);
like($out, qr/^ok/, 'hostile: after its budget the gateway answers normally');
like(post($url, 'fault?gateway=0&mode=hostile&seed=x'), qr/mode must be/, 'bad hostile seed refused');
is(post($url, 'fault?gateway=0&mode=none'), "ok\n", 'fault none again');

# forced relay and load through the control server
is(post($url, 'relay?gateway=0&unit=3&state=tripped'), "ok\n", 'relay forced tripped');
like($http->get("$url/meters?gateway=0")->{content}, qr/^0 3 \d+ tripped 0 0 0$/m,
	'forced trip shows, not counted as a command');
is(post($url, 'load?gateway=0&unit=2&w=2500'), "ok\n", 'load changed');
like(post($url, 'load?gateway=0&unit=9&w=1'), qr/need gateway/, 'unknown unit refused');

my @history = split /\n/, slurp_file("$tmp/history");
ok(@history >= 10, 'history has one line per energy read');
is(scalar(grep { !/^\d{13} [01] [1-4] \d+ [01]$/ } @history), 0, 'history lines are well formed');
stop_sim('ddsy', $h);

# adf400l, starting energy exact
$port = PostgreSQL::Test::Cluster::get_free_port();
($h, $url) = start_sim('adf', '--tcp-gateways', 1, '--base-port', $port,
	'--meters-per-gateway', 2, '--profile', 'adf400l', '--speedup', 1000000);
($out, $status) = probe('check-adf', '127.0.0.1', $port);
is($status, 0, 'adf400l: energy, TOU, forced-control word');
stop_sim('adf', $h);

$port = PostgreSQL::Test::Cluster::get_free_port();
($h, $url) = start_sim('still', '--tcp-gateways', 1, '--base-port', $port,
	'--meters-per-gateway', 1, '--load-w', 0, '--initial-kwh', '1234.5');
like($http->get("$url/meters")->{content}, qr/^0 1 123450 closed/m, '--initial-kwh is exact');
stop_sim('still', $h);

$socat->kill_kill;
done_testing();
