# test/t/lib/PrepayTest.pm: helpers shared by the agent's TAP tests.
#
#   wait_for(SUB, SECONDS)   poll SUB every 50 ms until it returns true or
#                            SECONDS pass; returns its last value.  Tests
#                            use it as a deadline, never as a measurement.
package PrepayTest;

use strict;
use warnings;
use Exporter 'import';
use Time::HiRes qw(time sleep);

our @EXPORT = qw(wait_for);

sub wait_for
{
	my ($check, $seconds) = @_;
	my $deadline = time + $seconds;
	my $v;
	while (!($v = $check->()) && time < $deadline) { sleep 0.05; }
	return $v;
}

1;
