# test/t/001_dump_restore.pl
#
# pg_dump and pg_restore keep every row of prepay's tables and the positions
# of its sequences.  Restoring in session_replication_role = replica (the
# documented procedure: prepay's triggers stand down, as on a logical
# replica) neither re-rates readings nor double-charges, and the restored
# database keeps rating from where it stopped.  A restore without it loads
# the readings into their partition, where the rating trigger (prepay.reading's)
# does not fire either: the test shows that too.  test/t/230_partitions.pl
# dumps and restores an installation partitioned by month.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE source');
$node->safe_psql('source', q{
	CREATE EXTENSION prepay;
	INSERT INTO prepay.site (name) VALUES ('Plaza');
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2026-01-01', 0.75);
	INSERT INTO prepay.meter (site_id, code) VALUES (1, 'M1'), (1, 'M2');
	SELECT prepay.open_account(1, 'A1', 'Shop', 1);
	SELECT prepay.attach_meter(1, 1, 1, 100, '2026-03-01 00:00+00');
	SELECT prepay.recharge(1, 1, 50, 'cash', 'R1');
	INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
		(1, 1, '2026-03-01 01:00+00', 110), (1, 1, '2026-03-01 02:00+00', 150),
		(1, 9, '2026-03-01 02:00+00', 1);
});

my $summary = q{
	SELECT (SELECT count(*) FROM prepay.reading) || ' readings, '
	    || (SELECT count(*) FROM prepay.reading WHERE quarantine_reason IS NOT NULL) || ' quarantined, '
	    || (SELECT count(*) FROM prepay.ledger) || ' entries, balance '
	    || (SELECT balance FROM prepay.account WHERE account_id = 1) || ', '
	    || (SELECT count(*) FROM prepay.command) || ' commands, '
	    || (SELECT count(*) FROM prepay.notification) || ' notifications, '
	    || (SELECT count(*) FROM prepay.alarm) || ' alarms, '
	    || (SELECT count(*) FROM prepay.check_ledger()) || ' ledger problems'
};
my $before = $node->safe_psql('source', $summary);
is($before,
	'4 readings, 1 quarantined, 3 entries, balance 12.50, 0 commands, 1 notifications, 2 alarms, 0 ledger problems',
	'source database as expected');

my $dump = $node->basedir . '/prepay.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('source'), '-f', $dump ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE target');
{
	local $ENV{PGOPTIONS} = '-c session_replication_role=replica';
	$node->command_ok([ 'pg_restore', '-d', $node->connstr('target'), $dump ],
		'pg_restore in session_replication_role = replica');
}

is($node->safe_psql('target', $summary), $before, 'every row is restored, nothing re-rated');

# sequences continue after the restored ids, and rating resumes from the
# restored meter state: 10 kWh x 0.75 = 7.50
$node->safe_psql('target', q{
	INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 03:00+00', 160);
	SELECT prepay.recharge(1, 1, 100, 'cash', 'R2');
});
is($node->safe_psql('target',
		q{SELECT string_agg(entry_id || ':' || kind || ':' || amount, ' ' ORDER BY entry_id) FROM prepay.ledger}),
	'1:recharge:50.00 2:consumption:-7.50 3:consumption:-30.00 4:consumption:-7.50 5:recharge:100.00',
	'new entries continue the restored sequence and rate from the restored state');
is($node->safe_psql('target', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check after restore');
is($node->safe_psql('target', q{SELECT prepay.recharge(1, 1, 50, 'cash', 'R1')}), '1',
	'a payment replayed after the restore is recognised');

# a plain-SQL dump restores the same way
my $plain = $node->basedir . '/prepay.sql';
$node->command_ok([ 'pg_dump', '-d', $node->connstr('source'), '-f', $plain ], 'plain pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE plain');
{
	local $ENV{PGOPTIONS} = '-c session_replication_role=replica';
	$node->command_ok(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('plain'), '-f', $plain ],
		'plain restore in session_replication_role = replica');
}
is($node->safe_psql('plain', $summary), $before, 'plain dump restores every row');

# without the replica role the readings are still not rated again: pg_dump
# loads them into their partition (prepay.reading_default), and the rating
# trigger is prepay.reading's, not the partition's; the other tables'
# triggers do fire, which the documented procedure avoids: loading the
# ledger records its payment references again (ledger_unique_keys), so
# the dump's own rows of prepay.payment_reference are refused as
# duplicates, and that is pg_restore's only error
$node->safe_psql('postgres', 'CREATE DATABASE careless');
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'pg_restore', '-d', $node->connstr('careless'), $dump ], '>', \$out, '2>', \$err);
	my @errors = ($err =~ /^pg_restore: error: (.*)$/mg);
	ok(@errors && !grep({ !/COPY failed for table "payment_reference": .*payment_reference_pkey/ } @errors),
		'careless pg_restore: only the payment references the ledger\'s trigger recorded again are refused')
		or diag($err);
}
is($node->safe_psql('careless', 'SELECT count(*) FROM prepay.payment_reference'),
	$node->safe_psql('source', 'SELECT count(*) FROM prepay.payment_reference'), 'every payment reference is there');
is($node->safe_psql('careless',
		q{SELECT count(*) FILTER (WHERE quarantine_reason IS NOT NULL) || '/' || count(*) FROM prepay.reading}),
	'1/4', 'a restore outside replica mode loads the readings into their partition without rating them');
is($node->safe_psql('careless', 'SELECT count(*) FROM prepay.ledger'), '3', 'and charges nothing twice');

$node->stop;
done_testing();
