# test/t/231_citus_partitions.pl
#
# Readings and the ledger by month on Citus (docs/SCALE-OUT.md, "Readings
# and the ledger by month"): a coordinator (with pg_cron) and two workers,
# prepay distributed, two sites whose shards are on different workers.
# prepay.partition_by_month() moves the handover readings of January and
# ledger entries posted in January to March from the default partitions
# into partitions of their own (the ledger's rows unchanged, its
# append-only triggers refusing UPDATE and DELETE again at once, in the
# same transaction) and has Citus's create_time_partitions() make the
# other months; then the scenario of test/t/230_partitions.pl for both
# sites (both month boundaries, a statement spanning two months, its
# replay, a conflicting duplicate at a boundary, a late reading of a closed
# month, readings COPYed by an agent login through prepay.reading_intake)
# is rated as on a single node whose rows all sit in the default
# partitions: the same ledger, readings, refusals, alarms; the charges go
# to the ledger's month partition on the site's worker.  The sizes the
# coordinator reports are those of the shards on every node.  pg_cron's
# run of the job prepay-partitions on the coordinator makes months ahead
# (prepay.partition_premake).  The retention job archives the months of
# readings (CSV, SHA-256, manifest) through the coordinator and drops them
# on the workers too, and no month of the ledger; restoring the archives
# brings the same rows back, each on its site's shard, and check_ledger()
# is empty.
# Skipped when Citus is not installed (citus.so in the server's lib dir).

use strict;
use warnings;
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

skip_unless_citus();

# the coordinator runs pg_cron, the workers only Citus
my $coord = citus_node('coordinator', q{
shared_preload_libraries = 'citus, pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
});
my @workers = (citus_node('worker1'), citus_node('worker2'));
$coord->safe_psql('postgres', "SELECT citus_set_coordinator_host('127.0.0.1', " . $coord->port . ")");
$coord->safe_psql('postgres', "SELECT citus_add_node('127.0.0.1', " . $_->port . ")") for @workers;
$coord->safe_psql('postgres', 'CREATE EXTENSION prepay; SELECT count(*) FROM prepay.distribute()');
# pg_cron on the coordinator only: not propagated to the workers, which do
# not load it (docs/SCALE-OUT.md)
$coord->safe_psql('postgres', q{
	SET citus.enable_ddl_propagation = off;
	CREATE EXTENSION pg_cron;
});
my %worker_of = map { $_->port => $_ } @workers;

my $single = PostgreSQL::Test::Cluster->new('single');
$single->init;
$single->append_conf('postgresql.conf', "timezone = 'UTC'");
$single->start;
$single->safe_psql('postgres', 'CREATE EXTENSION prepay');

my $archive = $coord->basedir . '/archive';
mkdir $archive or die "mkdir $archive: $!";

# site 1, and the first site after it whose shards are on the other worker
$_->safe_psql('postgres', q{INSERT INTO prepay.site (name) VALUES ('Plaza')}) for $single, $coord;
my $other;
for my $try (2 .. 20)
{
	$_->safe_psql('postgres', "INSERT INTO prepay.site (name) VALUES ('Site $try')") for $single, $coord;
	if (shard_port($coord, $try) ne shard_port($coord, 1)) { $other = $try; last; }
}
ok(defined $other, "site 1 and site $other are on different workers");

# accounts 1 and 2 and meters 1 and 2 of site 1, account 3 and meter 3 of
# the other site (drawn on the coordinator, as on one node)
my $setup = qq{
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), ($other, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2025-01-01', 0.75), ($other, 2, '2025-01-01', 0.5);
	INSERT INTO prepay.meter (site_id, code) VALUES (1, 'M1'), (1, 'M2'), ($other, 'N1');
	SELECT prepay.open_account(1, 'A1', 'Shop', 1);
	SELECT prepay.open_account(1, 'A2', 'Kiosk', 1);
	SELECT prepay.open_account($other, 'B1', 'Noodles', 2);
	UPDATE prepay.account SET opened_at = '2025-12-01 00:00+00';
	SELECT prepay.recharge(1, 1, 500, 'cash', 'R1') IS NOT NULL;
	SELECT prepay.recharge(1, 2, 30, 'cash', 'R2') IS NOT NULL;
	SELECT prepay.recharge($other, 3, 40, 'cash', 'R3') IS NOT NULL;
	SELECT prepay.attach_meter(1, 1, 1, 100, '2026-01-01 00:00+00');
	SELECT prepay.attach_meter(1, 2, 2, 50, '2026-01-01 00:00+00');
	SELECT prepay.attach_meter($other, 3, 3, 10, '2026-01-01 00:00+00');
};
$_->safe_psql('postgres', $setup) for $single, $coord;

# money posted in January to March, at the boundaries, as recharge() and
# refund() would have written it then (a ledger entry's month is its
# created_at): site 1's account 1, and the other site's account 3, whose
# balance ends where it was
my $backdated = qq{
	DO \$\$
	DECLARE
	    r record;
	    b numeric;
	BEGIN
	    FOR r IN SELECT * FROM (VALUES
	            (1, 1, 'recharge', 10, '2026-01-31 23:59:59.999999+00'::timestamptz, 'B-JAN'),
	            ($other, 3, 'recharge', 20, '2026-02-01 00:00+00', 'B-FEB'),
	            (1, 1, 'recharge', 30, '2026-02-28 23:59:59+00', 'B-FEB2'),
	            ($other, 3, 'refund', -20, '2026-03-01 00:00+00', 'B-MAR')) v (site, acct, kind, amount, at, ref)
	         ORDER BY at
	    LOOP
	        UPDATE prepay.account SET balance = balance + r.amount WHERE site_id = r.site AND account_id = r.acct
	        RETURNING balance INTO b;
	        INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id, created_at, channel, external_ref)
	        VALUES (r.site, r.acct, r.kind::prepay.ledger_kind, r.amount, b, prepay._actor_id(r.site), r.at, 'bank', r.ref);
	    END LOOP;
	END \$\$;
};
$_->safe_psql('postgres', $backdated) for $single, $coord;
my $ledger_rows = q{SELECT count(*) || ' ' || md5(string_agg(l::text, '|' ORDER BY site_id, entry_id)) FROM prepay.ledger l};
my $ledger_unpartitioned = $coord->safe_psql('postgres', $ledger_rows);

# ---------------------------------------------------------------------
# partition_by_month on the coordinator: Citus's time partitions
# ---------------------------------------------------------------------
# the ledger's rows move with no trigger firing, on the workers too; in
# the same transaction, right after, the triggers refuse again
my ($rc, $out, $err) = $coord->psql('postgres', q{
	BEGIN;
	SELECT count(*) FROM prepay.partition_by_month(2);
	DELETE FROM prepay.ledger_p2026_01;
	COMMIT;}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/PY013: the prepay ledger is append-only.*DELETE on prepay\.ledger_p2026_01_[0-9]+ was refused/s,
	'after the move, in its transaction, the month partitions refuse DELETE on the workers');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.ledger_partitions}), '1', 'and all of it rolled back');
is($coord->safe_psql('postgres', $ledger_rows), $ledger_unpartitioned, 'the ledger untouched');

my $made = $coord->safe_psql('postgres', q{
	SELECT string_agg(partition_name::text, ' ' ORDER BY from_time NULLS LAST) FROM prepay.partition_by_month(2) WHERE table_name = 'prepay.reading'::regclass});
like($made, qr/^prepay\.reading_p2026_01 prepay\.reading_p2026_02 .* prepay\.reading_default$/,
	'partition_by_month on Citus: January on, then the default partition');
is($coord->safe_psql('postgres', q{
	SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text ~ '^prepay\.reading_p[0-9]{4}_[0-9]{2}$'
	   AND colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'prepay.site'::regclass)}),
	$coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading_partitions WHERE NOT is_default'),
	'every month partition is distributed, colocated with the sites');
is($coord->safe_psql('postgres', q{
	SELECT string_agg(partition::text, ' ' ORDER BY from_value::timestamptz) FROM time_partitions
	 WHERE parent_table = 'prepay.reading'::regclass AND from_value <> ''}),
	$coord->safe_psql('postgres', q{SELECT string_agg(partition_name::text, ' ' ORDER BY from_time) FROM prepay.reading_partitions WHERE NOT is_default}),
	"Citus's time_partitions lists the months prepay.reading_partitions lists");
is($coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.reading_default}), '0', 'the default partition was emptied');
is($coord->safe_psql('postgres', q{SELECT count(*) || ' ' || count(DISTINCT site_id) FROM prepay.reading_p2026_01}), '3 2',
	'the handover readings of both sites are in January');
is($coord->safe_psql('postgres', q{
	SELECT (max(to_time) > date_trunc('month', now()) + interval '2 months')::text FROM prepay.reading_partitions}),
	'true', 'two months are ready ahead of now');
is($coord->safe_psql('postgres', 'SHOW prepay.partition_premake'), '2', 'the premake is kept for the database');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.partition_by_month(2) WHERE table_name = 'prepay.reading'::regclass AND NOT is_default}),
	$coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.reading_partitions WHERE NOT is_default}),
	'partition_by_month again changes nothing');

# the ledger by month too
like($coord->safe_psql('postgres', q{
	SELECT string_agg(partition_name::text, ' ' ORDER BY from_time NULLS LAST) FROM prepay.ledger_partitions}),
	qr/^prepay\.ledger_p2026_01 prepay\.ledger_p2026_02 prepay\.ledger_p2026_03 .* prepay\.ledger_default$/,
	'the ledger: January on, then the default partition');
is($coord->safe_psql('postgres', q{
	SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text ~ '^prepay\.ledger_p[0-9]{4}_[0-9]{2}$'
	   AND colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'prepay.site'::regclass)}),
	$coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.ledger_partitions WHERE NOT is_default'),
	'every month of the ledger is distributed, colocated with the sites');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.ledger_default}), '0', "the ledger's default partition was emptied");
is($coord->safe_psql('postgres', q{
	SELECT string_agg(m || ' ' || site_id || ' ' || external_ref, ', ' ORDER BY m, external_ref) FROM (
	  SELECT '01' AS m, * FROM prepay.ledger_p2026_01 UNION ALL SELECT '02', * FROM prepay.ledger_p2026_02
	  UNION ALL SELECT '03', * FROM prepay.ledger_p2026_03) l WHERE channel = 'bank'}),
	"01 1 B-JAN, 02 $other B-FEB, 02 1 B-FEB2, 03 $other B-MAR", 'entries at both boundaries are in the month of their created_at');
is($coord->safe_psql('postgres', $ledger_rows), $ledger_unpartitioned, 'the ledger has the same rows, unchanged');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'check_ledger() is empty after the move');
is($coord->safe_psql('postgres', q{
	SELECT (max(to_time) > date_trunc('month', now()) + interval '2 months')::text FROM prepay.ledger_partitions}),
	'true', "the ledger's months are ready ahead of now too");
# append-only on every month partition, and no way around it for a login
$coord->safe_psql('postgres', qq{
	CREATE ROLE regress_citus_staff LOGIN IN ROLE prepay_admin;
	INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_citus_staff'), ($other, 'regress_citus_staff');
});
foreach my $sql (q{UPDATE prepay.ledger_p2026_02 SET amount = 0}, q{DELETE FROM prepay.ledger_p2026_01},
	q{SET citus.propagate_set_commands = local; SELECT prepay._citus_replication_role('replica'); DELETE FROM prepay.ledger_p2026_01})
{
	($rc, $out, $err) = $coord->psql('postgres', $sql, extra_params => [ '-U', 'regress_citus_staff', '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/(PY013: the prepay ledger is append-only|42501: permission denied)/, "a staff login: $sql refused");
	next if $sql =~ /replication_role/;
	($rc, $out, $err) = $coord->psql('postgres', $sql, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/PY013: the prepay ledger is append-only/, "a superuser: $sql refused");
}
is($coord->safe_psql('postgres', $ledger_rows), $ledger_unpartitioned, 'the ledger still has the same rows');

my @statements = (
	# January, the last instant of January, and February's first
	qq{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
		(1, 1, '2026-01-15 12:00+00', 110), (1, 2, '2026-01-15 12:00+00', 55), ($other, 3, '2026-01-15 12:00+00', 14),
		(1, 1, '2026-01-31 23:59:59.999999+00', 120), (1, 2, '2026-02-01 00:00+00', 60),
		($other, 3, '2026-01-31 23:59:59.999999+00', 18), ($other, 3, '2026-02-01 00:00+00', 19)},
	# one statement over two boundaries and two sites, with a reading of an unknown meter
	qq{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
		(1, 1, '2026-02-01 00:00+00', 125), (1, 1, '2026-02-28 23:45+00', 140),
		(1, 1, '2026-03-01 00:00+00', 141), (1, 2, '2026-03-01 00:00+00', 70),
		(1, 2, '2026-03-15 00:00+00', 110), (1, 9, '2026-02-10 00:00+00', 1),
		($other, 3, '2026-02-28 23:59:59+00', 30), ($other, 3, '2026-03-01 00:00+00', 31)},
	# the same statement again (the agent's replay): nothing charged twice
	qq{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
		(1, 1, '2026-02-01 00:00+00', 125), (1, 1, '2026-02-28 23:45+00', 140),
		(1, 1, '2026-03-01 00:00+00', 141), (1, 2, '2026-03-01 00:00+00', 70),
		(1, 2, '2026-03-15 00:00+00', 110), (1, 9, '2026-02-10 00:00+00', 1),
		($other, 3, '2026-02-28 23:59:59+00', 30), ($other, 3, '2026-03-01 00:00+00', 31)},
	# a conflicting duplicate exactly at the March boundary: refused
	q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 00:00+00', 999)},
	# late readings of January, long closed, and March ones after them
	qq{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
		(1, 2, '2026-01-20 00:00+00', 57), (1, 1, '2026-03-31 23:59:59+00', 150),
		($other, 3, '2026-01-20 00:00+00', 15), ($other, 3, '2026-03-31 23:59:59+00', 40)},
);
foreach my $s (@statements)
{
	$_->safe_psql('postgres', $s) for $single, $coord;
}
# across the April boundary, COPYed by an agent login of both sites through
# prepay.reading_intake, then again (the agent's replay)
my $agent = qq{
	CREATE ROLE regress_citus_agent LOGIN IN ROLE prepay_agent;
	INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES (1, 'plaza-1', 'regress_citus_agent'),
	                                                                    ($other, 'other-1', 'regress_citus_agent');
};
my $copy = qq{COPY prepay.reading_intake (site_id, meter_id, read_at, energy, relay_state) FROM STDIN (FORMAT csv);
1,1,2026-04-01 00:00+00,151,closed
1,2,2026-04-01 00:00+00,111,
$other,3,2026-04-01 00:00+00,41,closed
\\.
};
foreach my $node ($single, $coord)
{
	$node->safe_psql('postgres', $agent);
	$node->safe_psql('postgres', $copy . $copy, extra_params => [ '-U', 'regress_citus_agent' ]);
}
is($coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.reading WHERE read_at = '2026-04-01 00:00+00'}), '3',
	'the readings an agent COPYed through the intake are stored on Citus');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.reading_intake}), '0', 'and the intake is empty');

# ids of ledger entries and alarms are drawn per node on Citus: left out
my $outcome = q{
	SELECT 'ledger ' || site_id || ' ' || kind || ' ' || account_id || ' ' || amount || ' ' || balance_after || ' '
	       || coalesce(read_from::text, '-') || ' ' || coalesce(read_to::text, '-')
	  FROM prepay.ledger
	UNION ALL
	SELECT 'reading ' || site_id || ' ' || meter_id || ' ' || read_at || ' ' || energy || ' ' || coalesce(quarantine_reason::text, 'rated')
	  FROM prepay.reading
	UNION ALL
	SELECT 'refused ' || site_id || ' ' || meter_id || ' ' || read_at || ' ' || reason FROM prepay.reading_refused
	UNION ALL
	SELECT 'alarm ' || site_id || ' ' || kind || ' ' || coalesce(meter_id::text, '-') FROM prepay.alarm
	UNION ALL
	SELECT 'account ' || site_id || ' ' || account_id || ' ' || balance || ' ' || alarm_level FROM prepay.account
	UNION ALL
	SELECT 'meter ' || site_id || ' ' || meter_id || ' ' || coalesce(last_read_at::text, '-') || ' ' || coalesce(last_energy::text, '-')
	  FROM prepay.meter
	ORDER BY 1
};
my $flat = $single->safe_psql('postgres', $outcome);
is($coord->safe_psql('postgres', $outcome), $flat, 'partitioned by month on Citus: the same charges, readings, refusals, alarms as on one node');
like($flat, qr/ledger 1 consumption 1 -0\.75 .* 2026-02-28 23:45:00\+00 2026-03-01 00:00:00\+00/,
	'the reading at the March boundary charged from the one before it');
like($flat, qr/ledger $other consumption 3 -6\.00 30\.00 2026-01-31 23:59:59\.999999\+00 2026-02-28 23:59:59\+00/,
	'the other site: one charge across the February boundary, from the last instant of January');
like($flat, qr/reading $other 3 2026-01-20 00:00:00\+00 15\.000 out_of_order/, 'the late January readings are quarantined');
like($flat, qr/refused 1 1 2026-03-01 00:00:00\+00 conflicting_duplicate/, 'the conflict at the boundary is refused');
is($coord->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT site_id, account_id, read_to FROM prepay.ledger WHERE kind = 'consumption'
	                       GROUP BY 1, 2, 3 HAVING count(*) > 1) d}), '0', 'the replay charged nothing twice');

# each boundary reading is in the month it opens, read from the partitions
my $layout = q{
	SELECT string_agg(m || ' ' || site_id || ' ' || meter_id || ' ' || read_at, ', ' ORDER BY m, site_id, meter_id, read_at) FROM (
	  SELECT '01' AS m, * FROM prepay.reading_p2026_01 UNION ALL SELECT '02', * FROM prepay.reading_p2026_02
	  UNION ALL SELECT '03', * FROM prepay.reading_p2026_03 UNION ALL SELECT '04', * FROM prepay.reading_p2026_04
	  UNION ALL SELECT 'default', * FROM prepay.reading_default) r
	 WHERE read_at IN ('2026-01-31 23:59:59.999999+00', '2026-02-01 00:00+00', '2026-03-01 00:00+00', '2026-04-01 00:00+00')};
is($coord->safe_psql('postgres', $layout),
	"01 1 1 2026-01-31 23:59:59.999999+00, 01 $other 3 2026-01-31 23:59:59.999999+00, "
	. "02 1 1 2026-02-01 00:00:00+00, 02 1 2 2026-02-01 00:00:00+00, 02 $other 3 2026-02-01 00:00:00+00, "
	. "03 1 1 2026-03-01 00:00:00+00, 03 1 2 2026-03-01 00:00:00+00, 03 $other 3 2026-03-01 00:00:00+00, "
	. "04 1 1 2026-04-01 00:00:00+00, 04 1 2 2026-04-01 00:00:00+00, 04 $other 3 2026-04-01 00:00:00+00",
	'each boundary reading is in the month partition it opens, none in the default one');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'check_ledger() is empty');

# the rating wrote its charges into the ledger's month partition, on the
# worker holding the site
my $this_month = $coord->safe_psql('postgres', q{SELECT prepay._partition_name('prepay.ledger', now())});
is($coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.ledger_default}), '0', 'no charge in the ledger\'s default partition');
is($coord->safe_psql('postgres', "SELECT count(*) FROM prepay.$this_month WHERE kind = 'consumption'"),
	$coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.ledger WHERE kind = 'consumption'}),
	"every charge is in $this_month, the month it was written in");
foreach my $site (1, $other)
{
	my ($shard_name, $port) = split /\|/, $coord->safe_psql('postgres', qq{
		SELECT shard_name('prepay.$this_month', s.shardid), p.nodeport
		  FROM (SELECT get_shard_id_for_distribution_column('prepay.$this_month', $site) AS shardid) s
		  JOIN pg_dist_shard_placement p USING (shardid)});
	is($worker_of{$port}->safe_psql('postgres', "SELECT count(*) FROM $shard_name WHERE site_id = $site AND kind = 'consumption'"),
		$coord->safe_psql('postgres', "SELECT count(*) FROM prepay.ledger WHERE site_id = $site AND kind = 'consumption'"),
		"site $site: its charges are in that month's shard on its worker");
}

# ---------------------------------------------------------------------
# sizes on the coordinator: the shards', on every node
# ---------------------------------------------------------------------
$coord->safe_psql('postgres', 'ANALYZE');
my @nodes = ($coord, @workers);
# the bytes of the shards whose names match $re, on every node
my $on_shards = sub {
	my ($re) = @_;
	my $sum = 0;
	$sum += $_->safe_psql('postgres', qq{
		SET citus.override_table_visibility = off;
		SELECT coalesce(sum(pg_total_relation_size(oid)), 0) FROM pg_class
		 WHERE relnamespace = 'prepay'::regnamespace AND relkind = 'r' AND relname ~ '$re'}) for @nodes;
	return $sum;
};
my %sizes = (
	'prepay.reading_p2026_01' => [ q{SELECT total_bytes FROM prepay.reading_partitions WHERE partition_name = 'prepay.reading_p2026_01'::regclass},
		'^reading_p2026_01_[0-9]+$' ],
	'prepay.ledger_p2026_02' => [ q{SELECT total_bytes FROM prepay.ledger_partitions WHERE partition_name = 'prepay.ledger_p2026_02'::regclass},
		'^ledger_p2026_02_[0-9]+$' ],
	'prepay.reading' => [ q{SELECT total_bytes FROM prepay.table_growth WHERE table_name = 'prepay.reading'::regclass},
		'^reading_(p[0-9]{4}_[0-9]{2}|default)_[0-9]+$' ],
	'prepay.ledger' => [ q{SELECT total_bytes FROM prepay.table_growth WHERE table_name = 'prepay.ledger'::regclass},
		'^ledger_(p[0-9]{4}_[0-9]{2}|default)_[0-9]+$' ],
	'prepay.meter' => [ q{SELECT total_bytes FROM prepay.table_growth WHERE table_name = 'prepay.meter'::regclass},
		'^meter_[0-9]+$' ],
	'prepay.agent_access, a reference table' => [ q{SELECT total_bytes FROM prepay.table_growth WHERE table_name = 'prepay.agent_access'::regclass},
		'^agent_access_[0-9]+$' ],
);
foreach my $what (sort keys %sizes)
{
	my ($query, $re) = @{ $sizes{$what} };
	my $reported = $coord->safe_psql('postgres', $query);
	cmp_ok($reported, '>', 0, "$what: a size on the coordinator");
	is($reported, $on_shards->($re), "$what: the sum over its shards on every node");
}
is($coord->safe_psql('postgres', q{
	SELECT string_agg(table_name || ' ' || rows_estimated, ', ' ORDER BY table_name::text) FROM prepay.table_growth
	 WHERE table_name IN ('prepay.reading'::regclass, 'prepay.ledger'::regclass)}),
	$coord->safe_psql('postgres', q{
	SELECT 'prepay.ledger ' || (SELECT count(*) FROM prepay.ledger) || ', prepay.reading ' || (SELECT count(*) FROM prepay.reading)}),
	'table_growth counts the rows of the shards');
is($coord->safe_psql('postgres', q{SELECT rows_estimated FROM prepay.ledger_partitions WHERE partition_name = 'prepay.ledger_p2026_02'::regclass}),
	'2', 'ledger_partitions counts them per month');
# (the intake, empty after every statement, may have no page left)
is($coord->safe_psql('postgres', q{
	SELECT count(*) || ' ' || count(*) FILTER (WHERE total_bytes > 0 OR table_name = 'prepay.reading_intake'::regclass)
	  FROM prepay.table_growth}),
	join(' ', ($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
	                                           WHERE NOT c.relispartition AND c.relnamespace = 'prepay'::regnamespace})) x 2),
	'table_growth: every table, each with its size');
is($coord->safe_psql('postgres', q{SELECT sum(total_bytes) FROM prepay.table_growth}, extra_params => [ '-U', 'regress_citus_staff' ]),
	$coord->safe_psql('postgres', q{SELECT sum(total_bytes) FROM prepay.table_growth}), 'a staff login reads the same sizes');

# ---------------------------------------------------------------------
# the maintenance job, run by pg_cron on the coordinator, makes months ahead
# ---------------------------------------------------------------------
my $ahead = q{SELECT count(*) FROM prepay.reading_partitions WHERE from_time > date_trunc('month', now())};
my $before = $coord->safe_psql('postgres', $ahead);
is($coord->safe_psql('postgres', 'SELECT prepay.maintain_partitions()'), '0', 'maintain_partitions: nothing to make yet');
# a reading from a clock far ahead waits in the default partition; the
# job moves it into its month when it makes that month
my $far = q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
	VALUES (1, 9, date_trunc('month', now()) + interval '5 months 3 days', 1)};
$_->safe_psql('postgres', $far) for $single, $coord;
my $far_month = $coord->safe_psql('postgres', q{SELECT prepay._partition_name('prepay.reading', date_trunc('month', now()) + interval '5 months')});
$coord->safe_psql('postgres', 'ALTER DATABASE postgres SET prepay.partition_premake = 6');
my $ledger_ahead = q{SELECT count(*) FROM prepay.ledger_partitions WHERE from_time > date_trunc('month', now())};
my ($ready, $status) = run_job_until($coord, 'prepay-partitions', "SELECT ($ahead) >= 6 AND ($ledger_ahead) >= 6");
ok($ready, "pg_cron's run of prepay-partitions on the coordinator made six months ahead, readings and ledger (there were $before)");
is($status, 'succeeded', 'the job run succeeded');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.reading_default}), '0',
	'the reading from far ahead moved from the default partition into its month');
is($coord->safe_psql('postgres', "SELECT count(*) FROM prepay.$far_month WHERE meter_id = 9"), '1', "... $far_month");
is($coord->safe_psql('postgres', q{SELECT count(*) FROM time_partitions WHERE parent_table = 'prepay.reading'::regclass}),
	$coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.reading_partitions}), 'Citus sees every partition');

# ---------------------------------------------------------------------
# retention on the coordinator: archive, check, drop everywhere; restore
# ---------------------------------------------------------------------
my $rows = q{SELECT count(*) || ' ' || md5(string_agg(r::text, '|' ORDER BY site_id, meter_id, read_at))
               FROM prepay.reading r WHERE read_at >= '2026-01-01' AND read_at < '2026-02-01'};
my $january = $coord->safe_psql('postgres', $rows);
my $ledger = q{SELECT count(*) || ' ' || md5(string_agg(concat_ws(' ', site_id, account_id, kind, amount, balance_after, read_to), '|'
                                                   ORDER BY site_id, entry_id)) FROM prepay.ledger};
my $ledger_before = $coord->safe_psql('postgres', $ledger);
my $all = $coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading');
my $on_workers = sub {
	my ($like) = @_;
	join ' ', map { $_->safe_psql('postgres', "SELECT count(*) FROM pg_class WHERE relname LIKE '$like'") } @workers;
};
like($on_workers->('reading\_p2026\_01\_%'), qr/^[1-9][0-9]* [1-9][0-9]*$/, "January's shards are on both workers");

my $ledger_months = q{SELECT string_agg(partition_name::text, ' ' ORDER BY from_time NULLS LAST) FROM prepay.ledger_partitions};
my $ledger_months_before = $coord->safe_psql('postgres', $ledger_months);
my ($archived, $left) = keep_three_months($coord, $archive);
is($archived, '2026-01 10, 2026-02 6, 2026-03 6, 2026-04 3', 'the retention job archived the months with readings, through the coordinator');
is($left, '0', 'and dropped every month the sites let go');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text = 'prepay.reading_p2026_01'}), '0',
	'January is no longer a distributed table');
is($on_workers->('reading\_p2026\_01%'), '0 0', 'and its shards are gone from both workers');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.reading WHERE read_at < date_trunc('month', now())}), '0',
	'no reading of those months is left');
is($coord->safe_psql('postgres', $ledger), $ledger_before, 'the ledger is untouched');
is($coord->safe_psql('postgres', $ledger_months), $ledger_months_before, 'no month of the ledger was dropped');
like($ledger_months_before, qr/ledger_p2026_01/, '(January of the ledger among them)');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'and still explains every balance');

ok(-f "$archive/prepay.reading.2026-01.csv", 'the archive file is there');
my $manifest = slurp_file("$archive/prepay.reading.2026-01.manifest.json");
like($manifest, qr/"rows": 10/, 'the manifest counts the rows');
like($manifest, qr/"sites": \[1, $other\]/, 'and names both sites');
my ($checked, $said) = sha256_checks($archive, 'prepay.reading.2026-01.csv');
ok($checked, 'sha256sum -c checks the file') or diag($said);
unlike(slurp_file("$archive/prepay.reading.2026-01.csv"), qr/\+0[1-9]|\+1[0-9]/, 'times in the file are in UTC');

# a late reading of January after the archive: default partition, quarantined
$_->safe_psql('postgres', q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-01-20 00:00+00', 115)})
	for $single, $coord;
$flat = $single->safe_psql('postgres', $outcome);
is($coord->safe_psql('postgres', q{SELECT site_id || ' ' || quarantine_reason FROM prepay.reading_default}),
	'1 out_of_order', 'a late reading of an archived month is kept in the default partition');

is((restore_archive($coord, $archive, '2026-01'))[0], 0, 'January restored');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM prepay.reading_default}), '0', 'the late reading moved into the restored month');
is($coord->safe_psql('postgres', $rows . q{ AND NOT (meter_id = 1 AND read_at = '2026-01-20 00:00+00')}), $january,
	'restoring the archive brings the same rows back');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.reading_p2026_01'), '11', 'in the month partition');
is($coord->safe_psql('postgres', q{
	SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'prepay.reading_p2026_01'::regclass
	   AND colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'prepay.site'::regclass)}), '1',
	'the restored month is distributed, colocated with the sites');
# each site's rows of the month on the worker holding the site, in its shard
foreach my $site (1, $other)
{
	my ($shard_name, $port) = split /\|/, $coord->safe_psql('postgres', qq{
		SELECT shard_name('prepay.reading_p2026_01', s.shardid), p.nodeport
		  FROM (SELECT get_shard_id_for_distribution_column('prepay.reading_p2026_01', $site) AS shardid) s
		  JOIN pg_dist_shard_placement p USING (shardid)});
	is($port, shard_port($coord, $site), "site $site: January's shard is on the site's worker");
	is($worker_of{$port}->safe_psql('postgres', "SELECT count(*) FROM $shard_name WHERE site_id = $site"),
		$coord->safe_psql('postgres', "SELECT count(*) FROM prepay.reading WHERE site_id = $site AND read_at < '2026-02-01'"),
		"site $site: its January rows are in that shard on that worker");
}
restore_other_months($coord, $archive, $all + 1, $outcome, $flat, 'and the cluster says what the single node says');

# the restored months rate on
$_->safe_psql('postgres', qq{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
	(1, 1, '2026-04-02 00:00+00', 152), ($other, 3, '2026-04-02 00:00+00', 42)}) for $single, $coord;
is($coord->safe_psql('postgres', $outcome), $single->safe_psql('postgres', $outcome), 'readings of a restored month are rated as on one node');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'check_ledger() is empty at the end');

done_testing();
