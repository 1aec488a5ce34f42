# test/t/lib/PrepayTest.pm: helpers shared by the agent's TAP tests.
#
#   wait_for(SUB, SECONDS)   poll SUB every 50 ms until it returns true or
#                            SECONDS pass; returns its last value.  Tests
#                            use it as a deadline, never as a measurement.
#   metric(URL, NAME)        the value of an unlabelled metric on the
#                            agent's /metrics at URL (http://host:port), or
#                            undef when it cannot be read
#   served_history(FILE)     the simulator's --history file as a hash
#                            "gateway unit" => [energy_centikwh, ...], in
#                            the order the reads were served
#
# Loading it also makes a test that dies or bails out leave nothing behind:
# at exit, the test's own child processes (simulator, agent, socat, shell
# loops started with IPC::Run) are killed.  The clusters stop themselves.
package PrepayTest;

use strict;
use warnings;
use Exporter 'import';
use HTTP::Tiny;
use Time::HiRes qw(time sleep);

our @EXPORT = qw(wait_for metric served_history);

my $test_pid = $$;

END
{
	local $?;    # keep the test's exit status
	system('pkill', '-KILL', '-P', $test_pid) if $$ == $test_pid;
}

sub wait_for
{
	my ($check, $seconds) = @_;
	my $deadline = time + $seconds;
	my $v;
	while (!($v = $check->()) && time < $deadline) { sleep 0.05; }
	return $v;
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

1;
