# test/t/230_partitions.pl
#
# Readings by month (docs/OPERATIONS.md): the same scenario, readings of
# three months with both month boundaries, a statement spanning two
# months, a replay of it, a conflicting duplicate at a boundary and a late
# reading of a closed month, is rated alike on an installation whose
# readings all sit in the default partition (a fresh install: one
# partition, as an unpartitioned table) and on one partitioned by month
# with pg_partman: the same ledger, readings, refusals and alarms, each
# reading in its month's partition.  pg_cron's run of the job
# prepay-partitions makes partitions ahead when premake grows.  The
# retention job archives the months the site lets go (CSV, SHA-256,
# manifest), drops them and never touches the ledger; restoring an archive
# brings the same rows back.  pg_dump / pg_restore of the partitioned
# installation keeps every row, in its partition.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

my $node = start_cron_node('partitions', "timezone = 'UTC'\n");

my $archive = $node->basedir . '/archive';
mkdir $archive or die "mkdir $archive: $!";

# pg_cron lives in postgres: the monthly installation is there
$node->safe_psql('postgres', 'CREATE DATABASE flat');
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_cron;
	CREATE SCHEMA partman;
	CREATE EXTENSION pg_partman SCHEMA partman;
});

my $setup = q{
	CREATE EXTENSION prepay;
	INSERT INTO prepay.site (name) VALUES ('Plaza');
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2025-01-01', 0.75);
	INSERT INTO prepay.meter (site_id, code) VALUES (1, 'M1'), (1, 'M2'), (1, 'M3');
	SELECT prepay.open_account(1, 'A1', 'Shop', 1);
	SELECT prepay.open_account(1, 'A2', 'Kiosk', 1);
	UPDATE prepay.account SET opened_at = '2025-12-01 00:00+00';
	SELECT prepay.recharge(1, 1, 500, 'cash', 'R1');
	SELECT prepay.recharge(1, 2, 30, 'cash', 'R2');
	SELECT prepay.attach_meter(1, 1, 1, 100, '2026-01-01 00:00+00');
	SELECT prepay.attach_meter(1, 2, 2, 50, '2026-01-01 00:00+00');
};
$node->safe_psql('flat', $setup);
$node->safe_psql('postgres', $setup);

# money movements posted in three months, at both boundaries (a ledger
# entry's month is its created_at, the posting time: these are written as
# recharge() would have written them then)
my $backdated = q{
	CREATE TEMP TABLE p (account_id bigint, amount numeric, at timestamptz, ref text);
	INSERT INTO p VALUES (1, 10, '2026-01-31 23:59:59.999999+00', 'B-JAN'), (2, 20, '2026-02-01 00:00+00', 'B-FEB'),
	                     (1, 30, '2026-02-28 23:59:59+00', 'B-FEB2'), (2, 40, '2026-03-01 00:00+00', 'B-MAR');
	DO $$
	DECLARE
	    r record;
	BEGIN
	    FOR r IN SELECT * FROM p ORDER BY at LOOP
	        WITH a AS (UPDATE prepay.account SET balance = balance + r.amount WHERE site_id = 1 AND account_id = r.account_id
	                   RETURNING balance)
	        INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id, created_at, channel, external_ref)
	        SELECT 1, r.account_id, 'recharge', r.amount, a.balance, prepay._actor_id(1), r.at, 'bank', r.ref FROM a;
	    END LOOP;
	END $$;
};
$node->safe_psql('flat', $backdated);
$node->safe_psql('postgres', $backdated);

# the monthly installation: the handover readings of January move from the
# default partition into January's own; pg_partman makes the rest
my $made = $node->safe_psql('postgres', q{
	SELECT string_agg(partition_name::text, ' ' ORDER BY table_name::text DESC, from_time NULLS LAST) FROM prepay.partition_by_month(2)});
like($made, qr/^prepay\.reading_p2026_01 prepay\.reading_p2026_02 .* prepay\.reading_default prepay\.ledger_p2026_01 prepay\.ledger_p2026_02 .* prepay\.ledger_default$/,
	'partition_by_month: readings and ledger, January on, then the default partitions');
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.reading_default}), '0', 'the default partition was emptied');
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.ledger_default}), '0', 'the ledger\'s default partition was emptied');
is($node->safe_psql('postgres', q{
	SELECT string_agg(tableoid::regclass || ' ' || external_ref, ', ' ORDER BY entry_id) FROM prepay.ledger WHERE channel = 'bank'}),
	'prepay.ledger_p2026_01 B-JAN, prepay.ledger_p2026_02 B-FEB, prepay.ledger_p2026_02 B-FEB2, prepay.ledger_p2026_03 B-MAR',
	'ledger entries at both boundaries are in the month of their created_at');
is($node->safe_psql('postgres', q{
	SELECT (max(to_time) > date_trunc('month', now()) + interval '2 months')::text FROM prepay.ledger_partitions}),
	'true', 'the ledger\'s months are ready ahead of now too');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT tableoid::regclass::text, ' ') FROM prepay.reading}),
	'prepay.reading_p2026_01', 'the handover readings are in January');
is($node->safe_psql('postgres', q{
	SELECT (max(to_time) > date_trunc('month', now()) + interval '2 months')::text FROM prepay.reading_partitions}),
	'true', 'two months are ready ahead of now');

my @statements = (
	# January, the last instant of January, and February's first
	q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
		(1, 1, '2026-01-15 12:00+00', 110), (1, 2, '2026-01-15 12:00+00', 55),
		(1, 1, '2026-01-31 23:59:59.999999+00', 120), (1, 2, '2026-02-01 00:00+00', 60)},
	# one statement over two boundaries, with a reading of an unknown meter
	q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
		(1, 1, '2026-02-01 00:00+00', 125), (1, 1, '2026-02-28 23:45+00', 140),
		(1, 1, '2026-03-01 00:00+00', 141), (1, 2, '2026-03-01 00:00+00', 70),
		(1, 2, '2026-03-15 00:00+00', 110), (1, 9, '2026-02-10 00:00+00', 1)},
	# the same statement again (the agent's replay): nothing charged twice
	q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
		(1, 1, '2026-02-01 00:00+00', 125), (1, 1, '2026-02-28 23:45+00', 140),
		(1, 1, '2026-03-01 00:00+00', 141), (1, 2, '2026-03-01 00:00+00', 70),
		(1, 2, '2026-03-15 00:00+00', 110), (1, 9, '2026-02-10 00:00+00', 1)},
	# a conflicting duplicate exactly at the March boundary: refused
	q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 00:00+00', 999)},
	# a late reading of January, long closed, and a March one after it
	q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
		(1, 2, '2026-01-20 00:00+00', 57), (1, 1, '2026-03-31 23:59:59+00', 150)},
	# through the bulk intake, across the April boundary
	q{INSERT INTO prepay.reading_intake (site_id, meter_id, read_at, energy) VALUES
		(1, 1, '2026-04-01 00:00+00', 151), (1, 2, '2026-04-01 00:00+00', 111)},
);
foreach my $s (@statements)
{
	$node->safe_psql($_, $s) for ('flat', 'postgres');
}

my $outcome = q{
	SELECT 'ledger ' || kind || ' ' || account_id || ' ' || amount || ' ' || balance_after || ' '
	       || coalesce(read_from::text, '-') || ' ' || coalesce(read_to::text, '-')
	  FROM prepay.ledger
	UNION ALL
	SELECT 'reading ' || meter_id || ' ' || read_at || ' ' || energy || ' ' || coalesce(quarantine_reason::text, 'rated')
	  FROM prepay.reading
	UNION ALL
	SELECT 'refused ' || meter_id || ' ' || read_at || ' ' || reason FROM prepay.reading_refused
	UNION ALL
	SELECT 'alarm ' || kind || ' ' || coalesce(meter_id::text, '-') FROM prepay.alarm
	UNION ALL
	SELECT 'account ' || account_id || ' ' || balance || ' ' || alarm_level FROM prepay.account
	UNION ALL
	SELECT 'meter ' || meter_id || ' ' || coalesce(last_read_at::text, '-') || ' ' || coalesce(last_energy::text, '-')
	  FROM prepay.meter
	ORDER BY 1
};
my $flat = $node->safe_psql('flat', $outcome);
is($node->safe_psql('postgres', $outcome), $flat, 'partitioned by month: the same charges, readings, refusals, alarms');
like($flat, qr/ledger consumption 1 -7\.50 .* 2026-01-01 00:00:00\+00 2026-01-15 12:00:00\+00/, 'January charged');
like($flat, qr/ledger consumption 1 -0\.75 .* 2026-02-28 23:45:00\+00 2026-03-01 00:00:00\+00/,
	'the reading at the March boundary charged from the one before it');
like($flat, qr/reading 2 2026-01-20 00:00:00\+00 57\.000 out_of_order/, 'the late January reading is quarantined');
like($flat, qr/refused 1 2026-03-01 00:00:00\+00 conflicting_duplicate/, 'the conflict at the boundary is refused');
is($node->safe_psql('flat', q{SELECT count(*) FROM prepay.ledger WHERE kind = 'consumption'}), '10',
	'ten charges: the replay charged nothing');
is($node->safe_psql('flat', q{SELECT string_agg(DISTINCT tableoid::regclass::text, ' ') FROM prepay.reading}),
	'prepay.reading_default', 'the flat installation keeps every reading in its default partition');
is($node->safe_psql('postgres', q{
	SELECT string_agg(tableoid::regclass || ' ' || read_at, ', ' ORDER BY read_at)
	  FROM prepay.reading WHERE read_at IN ('2026-01-31 23:59:59.999999+00', '2026-02-01 00:00+00', '2026-03-01 00:00+00', '2026-04-01 00:00+00')
	   AND meter_id = 1}),
	'prepay.reading_p2026_01 2026-01-31 23:59:59.999999+00, prepay.reading_p2026_02 2026-02-01 00:00:00+00, '
	. 'prepay.reading_p2026_03 2026-03-01 00:00:00+00, prepay.reading_p2026_04 2026-04-01 00:00:00+00',
	'each boundary reading is in the month it opens');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');
is($node->safe_psql('flat', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check, unpartitioned');
my $ledger_rows = q{SELECT string_agg(concat_ws(' ', entry_id, kind, account_id, amount, balance_after,
                                               CASE WHEN channel = 'bank' THEN created_at::text END,
                                               channel, external_ref, reverses_entry, meter_id, read_from, read_to, energy, exact_charge),
                                     E'\n' ORDER BY entry_id) FROM prepay.ledger};
is($node->safe_psql('postgres', $ledger_rows), $node->safe_psql('flat', $ledger_rows), 'the same ledger, entry by entry');

# ---------------------------------------------------------------------
# the ledger's unique keys across months: a payment reference, a reversal
# ---------------------------------------------------------------------
foreach my $db ('flat', 'postgres')
{
	my $jan = $node->safe_psql($db, q{SELECT entry_id FROM prepay.ledger WHERE external_ref = 'B-JAN'});
	is($node->safe_psql($db, q{SELECT prepay.recharge(1, 1, 10, 'bank', 'B-JAN')}), $jan,
		"$db: a recharge replayed months later returns January's entry");
	is($node->safe_psql($db, q{SELECT count(*) || ' ' || sum(amount) FROM prepay.ledger WHERE external_ref = 'B-JAN'}), '1 10.00',
		"$db: and credits nothing");
	my ($rc, $out, $err) = $node->psql($db, q{SELECT prepay.recharge(1, 2, 10, 'bank', 'B-JAN')}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/PY004/, "$db: the reference on another account is refused");
	($rc, $out, $err) = $node->psql($db, q{
		INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id, created_at, channel, external_ref)
		VALUES (1, 1, 'recharge', 10, 0, prepay._actor_id(1), '2026-03-15 00:00+00', 'bank', 'B-JAN')}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/23505: duplicate key value violates unique constraint "payment_reference_pkey"/,
		"$db: even written directly in another month, a reference is used once");
	my $rev = $node->safe_psql($db, qq{SELECT prepay.reverse(1, $jan, 'wrong account')});
	is($node->safe_psql($db, qq{SELECT prepay.reverse(1, $jan, 'again')}), $rev, "$db: a second reversal returns the first");
	($rc, $out, $err) = $node->psql($db, qq{
		INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id, created_at, reason, reverses_entry)
		VALUES (1, 1, 'reversal', -10, 0, prepay._actor_id(1), '2026-02-15 00:00+00', 'twice', $jan)}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/23505: duplicate key value violates unique constraint "reversed_entry_pkey"/,
		"$db: an entry is reversed at most once, whatever the month");
	is($node->safe_psql($db, 'SELECT count(*) FROM prepay.check_ledger()'), '0', "$db: ledger check");
}
is($node->safe_psql('postgres', q{SELECT tableoid::regclass FROM prepay.ledger WHERE kind = 'reversal'}),
	'prepay.ledger_p' . $node->safe_psql('postgres', q{SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')}),
	'the reversal is in the month it was posted');

# UPDATE and DELETE refused on the ledger and each partition: a staff login
# has no right on either, a superuser meets the append-only triggers
$node->safe_psql('postgres', q{
	CREATE ROLE ledger_staff LOGIN IN ROLE prepay_admin;
	INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'ledger_staff');
});
foreach my $sql (q{UPDATE prepay.ledger SET amount = 0}, q{DELETE FROM prepay.ledger},
	q{UPDATE prepay.ledger_p2026_01 SET amount = 0}, q{DELETE FROM prepay.ledger_p2026_02}, q{DELETE FROM prepay.ledger_default},
	q{DELETE FROM prepay.payment_reference}, q{DELETE FROM prepay.reversed_entry})
{
	my ($rc, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', 'ledger_staff', '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/42501: permission denied/, "staff: $sql refused");
	next if $sql =~ /ledger_default/;    # empty: no row for the row trigger to refuse
	($rc, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/PY013: the prepay ledger is append-only/, "superuser: $sql refused");
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.ledger_p2026_01}), '1', 'January\'s entry is still there');
$node->safe_psql('postgres', q{DELETE FROM prepay.site_access WHERE grantee = 'ledger_staff'; DROP ROLE ledger_staff});

# ---------------------------------------------------------------------
# the maintenance job, run by pg_cron, makes months ahead
# ---------------------------------------------------------------------
my $ahead = q{SELECT count(*) FROM prepay.reading_partitions WHERE from_time > date_trunc('month', now())};
my $before = $node->safe_psql('postgres', $ahead);
$node->safe_psql('postgres', q{UPDATE partman.part_config SET premake = 6 WHERE parent_table = 'prepay.reading'});
my ($ready, $status) = run_job_until($node, 'prepay-partitions', "SELECT ($ahead) >= 6");
ok($ready, "pg_cron's run of prepay-partitions made six months ahead (there were $before)");
is($status, 'succeeded', 'the job run succeeded');
$node->safe_psql('postgres', 'DROP EXTENSION pg_cron');    # it lives in postgres only: not in the dump below

# ---------------------------------------------------------------------
# retention: archive, check, drop; restore
# ---------------------------------------------------------------------
my $rows = q{SELECT count(*) || ' ' || md5(string_agg(r::text, '|' ORDER BY site_id, meter_id, read_at))
               FROM prepay.reading r WHERE read_at >= '2026-01-01' AND read_at < '2026-02-01'};
my $january = $node->safe_psql('postgres', $rows);
my $ledger = $node->safe_psql('postgres', q{SELECT count(*) || ' ' || md5(string_agg(l::text, '|' ORDER BY entry_id)) FROM prepay.ledger l});
my $all = $node->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM prepay.archive_due_partitions('$archive')}), '0',
	'no site has a retention: nothing archived');

# keep 3 whole months past: every month that ended before that goes
my ($archived, $left) = keep_three_months($node, $archive);
is($archived, '2026-01 6, 2026-02 4, 2026-03 4, 2026-04 2', 'the retention job archived the months with readings');
is($left, '0', 'and dropped every month the site lets go');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading'), '0', 'no reading of those months is left');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || md5(string_agg(l::text, '|' ORDER BY entry_id)) FROM prepay.ledger l}),
	$ledger, 'the ledger is untouched');
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'and still explains every balance');

ok(-f "$archive/prepay.reading.2026-01.csv", 'the archive file is there');
my ($manifest) = slurp_file("$archive/prepay.reading.2026-01.manifest.json");
like($manifest, qr/"rows": 6/, 'the manifest counts the rows');
like($manifest, qr/"sha256": "[0-9a-f]{64}"/, 'and carries the checksum');
my ($checked, $said) = sha256_checks($archive, 'prepay.reading.2026-01.csv');
ok($checked, 'sha256sum -c checks the file') or diag($said);

# a reading of January after the archive: default partition, quarantined
# (the flat installation gets it too, to compare them after the restore)
$node->safe_psql($_, q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-01-20 00:00+00', 115)})
	for ('flat', 'postgres');
$flat = $node->safe_psql('flat', $outcome);
is($node->safe_psql('postgres', q{SELECT tableoid::regclass || ' ' || quarantine_reason FROM prepay.reading}),
	'prepay.reading_default out_of_order', 'a late reading of an archived month is kept in the default partition');

# a damaged archive is refused
{
	my $copy = "$archive/damaged";
	mkdir $copy;
	my $csv = slurp_file("$archive/prepay.reading.2026-02.csv");
	$csv =~ s/125\.000/126.000/;
	append_to_file("$copy/prepay.reading.2026-02.csv", $csv);
	append_to_file("$copy/prepay.reading.2026-02.manifest.json", slurp_file("$archive/prepay.reading.2026-02.manifest.json"));
	my ($rc, $out, $err) = $node->psql('postgres', qq{SELECT * FROM prepay.restore_reading_archive('$copy/prepay.reading.2026-02.manifest.json')},
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/XX001: the checksum of .* does not match its manifest/, 'a changed archive is refused');
}

is((restore_archive($node, $archive, '2026-01'))[0], 0, 'January restored');
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.reading_default}), '0',
	'the late reading moved into the restored month');
is($node->safe_psql('postgres', $rows . q{ AND NOT (meter_id = 1 AND read_at = '2026-01-20 00:00+00')}), $january,
	'restoring the archive brings the same rows back');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT tableoid::regclass::text, ' ') FROM prepay.reading}), 'prepay.reading_p2026_01',
	'in the month partition');
restore_other_months($node, $archive, $all + 1, $outcome, $flat, 'and the installation says what it said before the archive');

my $layout = q{SELECT string_agg(tableoid::regclass || ' ' || meter_id || ' ' || read_at || ' ' || coalesce(quarantine_reason::text, '-'), ', '
                                 ORDER BY read_at, meter_id) FROM prepay.reading};

# an installation that ran months in its default partition (as one
# upgraded from 0.1) is partitioned later: its readings of four months move
# to their partitions, where the other installation has them
$node->safe_psql('flat', q{
	CREATE SCHEMA partman;
	CREATE EXTENSION pg_partman SCHEMA partman;
	SELECT count(*) FROM prepay.partition_by_month();
});
is($node->safe_psql('flat', 'SELECT count(*) FROM prepay.reading_default'), '0', 'partitioned later: the default partition is emptied');
is($node->safe_psql('flat', $layout), $node->safe_psql('postgres', $layout), 'and every reading is in its month, as on the other');
is($node->safe_psql('flat', $outcome), $flat, 'nothing else changed');

# ---------------------------------------------------------------------
# pg_dump / pg_restore of the partitioned installation
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'SELECT prepay.maintain_partitions()');
my $dumped = $node->safe_psql('postgres', $layout);
my $dump = $node->basedir . '/monthly.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('postgres'), '-N', 'cron', '-f', $dump ], 'pg_dump of the partitioned installation');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
# as docs/OPERATIONS.md says: the month partitions' keys and indexes come
# with ATTACH PARTITION (prepay.reading has them), so the restore leaves out
# the dump's own copies of them
my ($toc, $err2) = ('', '');
IPC::Run::run([ 'pg_restore', '-l', $dump ], '>', \$toc, '2>', \$err2) or die "pg_restore -l: $err2";
my @kept = grep { !/ (CONSTRAINT|INDEX) prepay (reading|ledger)_p[0-9]{4}_[0-9]{2}[ _]/ } split /\n/, $toc;
ok(@kept < scalar(split /\n/, $toc), 'the list leaves the month partitions\' keys and indexes out');
my $list = $node->basedir . '/monthly.list';
append_to_file($list, join("\n", @kept) . "\n");
{
	local $ENV{PGOPTIONS} = '-c session_replication_role=replica';
	$node->command_ok([ 'pg_restore', '-L', $list, '-d', $node->connstr('restored'), $dump ],
		'pg_restore -L in session_replication_role = replica: no error');
}
is($node->safe_psql('restored', q{
	SELECT count(*) FROM prepay.reading_partitions p
	 WHERE NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = p.partition_name AND i.indisprimary)
	    OR NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = p.partition_name AND i.indpred IS NOT NULL)}),
	'0', 'every partition has its key and the quarantine index');
is($node->safe_psql('restored', $layout), $dumped, 'every reading is restored, in its partition');
my $ledger_layout = q{SELECT count(*) || ' ' || md5(string_agg(tableoid::regclass || ' ' || l::text, '|' ORDER BY entry_id)) FROM prepay.ledger l};
is($node->safe_psql('restored', $ledger_layout), $node->safe_psql('postgres', $ledger_layout),
	'every ledger entry is restored, in its partition');
is($node->safe_psql('restored', q{SELECT count(*) FROM prepay.ledger_partitions p
	 WHERE NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = p.partition_name AND i.indisprimary)}),
	'0', 'every ledger partition has its key');
is($node->safe_psql('restored', q{SELECT count(*) FROM prepay.payment_reference}),
	$node->safe_psql('postgres', q{SELECT count(*) FROM prepay.payment_reference}), 'and the payment references');
is($node->safe_psql('restored', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'the restored ledger explains every balance');
is($node->safe_psql('restored', $outcome), $node->safe_psql('postgres', $outcome), 'the same ledger, readings and balances');
is($node->safe_psql('restored', q{SELECT count(*) FROM partman.part_config WHERE parent_table = 'prepay.reading'}), '1',
	'pg_partman still keeps the months');
$node->safe_psql('restored', q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-04-02 00:00+00', 152)});
is($node->safe_psql('restored', q{SELECT tableoid::regclass || ' ' || coalesce(quarantine_reason::text, 'rated') FROM prepay.reading
                                   WHERE read_at = '2026-04-02 00:00+00'}),
	'prepay.reading_p2026_04 rated', 'and the restored installation rates on');

$node->stop;
done_testing();
