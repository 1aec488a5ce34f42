# test/t/200_upgrade.pl
#
# An operator upgrades with ALTER EXTENSION prepay UPDATE, never by dropping
# the extension that holds the money.  For each earlier release (each OLD
# of an upgrade path sql/upgrade/OLD--NEW/; its install script is built
# from the commit sql/releases.txt names by `make releases`, which
# test/run.sh installs into the private installation), this test installs
# that release, fills it with test/upgrade/fill.sql, updates to the
# current version, and checks that the result equals a fresh install of the
# current version fed the same scenario: the same schema
# (test/upgrade/schema.sql: every table, column, constraint, index,
# trigger, view, function with its body and settings, policy, grant and
# comment), the same output of test/upgrade/exercise.sql
# (more readings and money after the upgrade, balances, the ledger,
# explained charges, reports, commands, alarms) and an empty check_ledger();
# and that every ledger entry keeps the login that posted it.

use strict;
use warnings;
use File::Basename;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = $ENV{TESTDIR};
my ($current) = slurp_file("$top/prepay.control") =~ /default_version\s*=\s*'([^']+)'/;
my @releases = sort map { m{/([0-9.]+)--[0-9.]+$} ? $1 : () } glob("$top/sql/upgrade/*--*");
ok(@releases > 0, "earlier releases to upgrade from: @releases");

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->start;
my $extdir = $node->config_data('--sharedir') . '/extension';

# what a database says after the scenario: the schema, then the exercise
sub describe
{
	my ($db) = @_;
	my $schema = $node->safe_psql($db, slurp_file("$top/test/upgrade/schema.sql"));
	my ($rc, $out, $err) = $node->psql($db, slurp_file("$top/test/upgrade/exercise.sql"),
		extra_params => [ '-a', '-v', 'ON_ERROR_STOP=1' ]);
	is($rc, 0, "$db: exercise ran") or diag($err);
	is($node->safe_psql($db, 'SELECT count(*) FROM prepay.check_ledger()'), '0', "$db: check_ledger() is empty");
	return ($schema, $out);
}

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION prepay');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'prepay'"),
	$current, "a fresh install is version $current");
$node->safe_psql('fresh', slurp_file("$top/test/upgrade/fill.sql"));
my ($fresh_schema, $fresh_out) = describe('fresh');

foreach my $from (@releases)
{
	unless (ok(-f "$extdir/prepay--$from.sql", "release ${from}'s install script is installed"))
	{
		diag("release $from is built from the commit sql/releases.txt names (make releases,"
			  . " make install-releases): in a shallow clone, run git fetch --unshallow");
		next;
	}
	my $db = "from_" . ($from =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION prepay VERSION '$from'");
	$node->safe_psql($db, slurp_file("$top/test/upgrade/fill.sql"));
	my $logins = q{SELECT pg_catalog.string_agg(l.entry_id || ' ' || %s, ', ' ORDER BY l.entry_id) FROM prepay.ledger l %s};
	my $before = $node->safe_psql($db, sprintf($logins, 'l.created_by', ''));
	$node->safe_psql($db, 'ALTER EXTENSION prepay UPDATE');
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'prepay'"),
		$current, "$from updates to $current");
	is($node->safe_psql($db, sprintf($logins, 'a.login',
				'JOIN prepay.actor a ON a.site_id = l.site_id AND a.actor_id = l.actor_id')),
		$before, "$from updated: every entry keeps the login that posted it");
	like($before, qr/ upgrade_clerk\b/, "$from: the scenario has entries of a second login");
	my ($schema, $out) = describe($db);
	is($schema, $fresh_schema, "$from updated: the schema equals a fresh $current");
	is($out, $fresh_out, "$from updated: the scenario's results equal a fresh $current");
	unless ($schema eq $fresh_schema)
	{
		my %fresh = map { $_ => 1 } split /\n/, $fresh_schema;
		my %upgraded = map { $_ => 1 } split /\n/, $schema;
		diag("only after the upgrade: $_") for grep { !$fresh{$_} } sort keys %upgraded;
		diag("only in a fresh install: $_") for grep { !$upgraded{$_} } sort keys %fresh;
	}
}

done_testing();
