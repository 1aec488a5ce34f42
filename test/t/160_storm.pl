# test/t/160_storm.pl (issue 8)
#
# A concurrency storm: pgbench, 8 clients, a fixed number of transactions
# each, mixing
#   - reading batches of 3 readings on 6 overlapping meters (the register
#     and the time both grow with one sequence, so values only grow; a
#     batch that commits after a later one is quarantined out_of_order);
#   - recharges and refunds with unique references, each written to a side
#     table storm.payment in the same statement;
#   - reversals of random storm recharges (recorded in storm.reversal);
#   - manual trips and closes;
#   - the daily billing run prepay.run_periodic(1, '2026-01-15') (a fee of
#     25.00 deducted once per account for January);
#   - the fold of the energy rollups (prepay.fold_rollups), racing the
#     rating batches that append deltas.
# Afterwards no client failed, the ledger check is empty, the energy
# rollups equal what the ledger explains, and every
# account's balance equals an independent recomputation from the inputs:
#   payments (storm.payment) - reversed recharges (storm.reversal) - the fee
#   - (last accepted register - first register) x multiplier x price
#   + the meter's sub-cent carry (0 <= carry < 0.01, docs/ARCHITECTURE.md).
# Then the replay: every reading, payment, reversal and the billing run a
# second time (same keys and references) changes no balance, no ledger
# row, no reading.

use strict;
use warnings;
use IPC::Run qw(run);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $tmp = PostgreSQL::Test::Utils::tempdir;
my ($clients, $transactions) = (8, 200);
my $price = '0.537';

my $node = PostgreSQL::Test::Cluster->new('storm');
$node->init;
$node->append_conf('postgresql.conf', "max_connections = 40\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prepay');

# 6 meters (multipliers 1, 1, 10, 1, 40, 1), one account each, handover
# register 0 on 1 January; every account starts with 100000.00
$node->safe_psql('postgres', qq{
	INSERT INTO prepay.site (name, time_zone, fees_may_cut) VALUES ('Storm plaza', 'UTC', true);
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2020-01-01', $price);
	INSERT INTO prepay.meter (site_id, code, multiplier, max_per_hour)
	SELECT 1, 'S' || i, (ARRAY[1, 1, 10, 1, 40, 1])[i], 1000000 FROM generate_series(1, 6) i ORDER BY i;
	SELECT prepay.open_account(1, 'A' || meter_id, 'Tenant ' || meter_id, 1) FROM prepay.meter ORDER BY meter_id;
	UPDATE prepay.account SET opened_at = '2025-12-01 00:00+00';
	SELECT prepay.attach_meter(1, meter_id, meter_id, p_initial_energy => 0, p_at => '2026-01-01 00:00+00')
	  FROM prepay.meter ORDER BY meter_id;
	INSERT INTO prepay.charge_item (site_id, name, price, settle, active_from)
	VALUES (1, 'service fee', 25.00, 'deduct', '2026-01-01');

	CREATE SCHEMA storm;
	CREATE SEQUENCE storm.tick;
	CREATE SEQUENCE storm.ref;
	CREATE TABLE storm.payment (ref text PRIMARY KEY, account_id bigint NOT NULL, amount numeric(14,2) NOT NULL,
	                            kind text NOT NULL CHECK (kind IN ('recharge', 'refund')));
	CREATE TABLE storm.reversal (ref text PRIMARY KEY REFERENCES storm.payment);
	WITH p AS (INSERT INTO storm.payment SELECT 'INIT' || account_id, account_id, 100000, 'recharge'
	             FROM prepay.account RETURNING *)
	SELECT prepay.recharge(1, account_id, amount, 'storm', ref) FROM p ORDER BY account_id;
});

my %scripts = (
	'reading@5' => q{
\set m1 random(1, 6)
\set m2 random(1, 6)
\set m3 random(1, 6)
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
SELECT 1, m, '2026-01-01 00:00+00'::timestamptz + v * interval '1 minute', v * 0.1
  FROM (SELECT m, nextval('storm.tick') AS v FROM unnest(ARRAY[:m1, :m2, :m3]::bigint[]) m) s;
},
	'recharge@2' => q{
\set a random(1, 6)
\set cents random(1, 50000)
WITH p AS (INSERT INTO storm.payment VALUES ('R' || nextval('storm.ref'), :a, :cents / 100.0, 'recharge') RETURNING *)
SELECT prepay.recharge(1, account_id, amount, 'storm', ref) FROM p;
},
	'refund@1' => q{
\set a random(1, 6)
\set cents random(1, 2000)
WITH p AS (INSERT INTO storm.payment VALUES ('F' || nextval('storm.ref'), :a, :cents / 100.0, 'refund') RETURNING *)
SELECT prepay.refund(1, account_id, amount, 'storm', ref, 'storm') FROM p;
},
	'reverse@1' => q{
WITH c AS (SELECT p.ref FROM storm.payment p
            WHERE p.kind = 'recharge' AND p.ref LIKE 'R%' AND NOT EXISTS (SELECT FROM storm.reversal r WHERE r.ref = p.ref)
            ORDER BY random() LIMIT 1),
     r AS (INSERT INTO storm.reversal SELECT ref FROM c ON CONFLICT DO NOTHING RETURNING ref)
SELECT prepay.reverse(1, l.entry_id, 'storm') FROM r JOIN prepay.ledger l ON l.channel = 'storm' AND l.external_ref = r.ref;
},
	'relay@1' => q{
\set m random(1, 6)
SELECT prepay.trip(1, :m, 'storm');
SELECT prepay.close(1, :m, 'storm');
},
	'periodic@1' => q{
SELECT prepay.run_periodic(1, '2026-01-15');
},
	'fold@1' => q{
SELECT prepay.fold_rollups(1);
},
);
my @files;
for my $s (sort keys %scripts)
{
	my ($name, $weight) = split /@/, $s;
	open my $fh, '>', "$tmp/$name.sql" or die;
	print $fh $scripts{$s};
	close $fh;
	push @files, '-f', "$tmp/$name.sql\@$weight";
}

my ($out, $err);
my $ok = run([ 'pgbench', '-n', '-c', $clients, '-j', 2, '-t', $transactions, @files,
		'-h', $node->host, '-p', $node->port, 'postgres' ], '>', \$out, '2>', \$err);
note($out);
ok($ok, 'pgbench exits 0') or diag($err);
my $total = $clients * $transactions;
like($out, qr{number of transactions actually processed: $total/$total}, "all $total transactions processed");
unlike($out . $err, qr/aborted|failed transactions: [1-9]/, 'no client aborted, no transaction failed');

my $q = sub { $node->safe_psql('postgres', shift) };
note('storm: ' . $q->(q{
	SELECT (SELECT count(*) FROM prepay.reading) || ' readings (' ||
	       (SELECT count(*) FROM prepay.reading WHERE quarantine_reason IS NOT NULL) || ' quarantined), ' ||
	       (SELECT count(*) FROM storm.payment) || ' payments, ' ||
	       (SELECT count(*) FROM storm.reversal) || ' reversals, ' ||
	       (SELECT count(*) FROM prepay.command) || ' commands, ' ||
	       (SELECT count(*) FROM prepay.ledger) || ' ledger entries'}));
is($q->(q{SELECT coalesce(string_agg(DISTINCT quarantine_reason::text, ','), 'none') FROM prepay.reading
           WHERE quarantine_reason IS DISTINCT FROM 'out_of_order'}), 'none',
	'the only quarantine reason is out_of_order (a batch that committed after a later one)');
ok($q->(q{SELECT count(*) FROM storm.reversal}) > 0 && $q->(q{SELECT count(*) FROM storm.payment WHERE kind = 'refund'}) > 0,
	'the mix ran reversals and refunds');
is($q->('SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');

# the independent recomputation, from the inputs only
my $expected = qq{
	WITH pay AS (SELECT account_id, sum(CASE kind WHEN 'recharge' THEN amount ELSE -amount END) AS paid
	               FROM storm.payment GROUP BY account_id),
	     rev AS (SELECT p.account_id, sum(p.amount) AS reversed
	               FROM storm.reversal r JOIN storm.payment p USING (ref) GROUP BY p.account_id),
	     reg AS (SELECT meter_id, (SELECT energy FROM prepay.reading r
	                                WHERE r.meter_id = m.meter_id AND quarantine_reason IS NULL
	                                ORDER BY read_at DESC LIMIT 1) AS last,
	                    (SELECT energy FROM prepay.reading r
	                      WHERE r.meter_id = m.meter_id ORDER BY read_at LIMIT 1) AS first, multiplier
	               FROM prepay.meter m)
	SELECT a.account_id, a.balance,
	       pay.paid - coalesce(rev.reversed, 0) - 25.00 - (reg.last - reg.first) * reg.multiplier * $price AS expected,
	       m.charge_carry
	  FROM prepay.account a JOIN pay USING (account_id) LEFT JOIN rev USING (account_id)
	  JOIN prepay.meter m ON m.account_id = a.account_id JOIN reg ON reg.meter_id = m.meter_id
};
note($q->("SELECT string_agg(account_id || ': ' || balance || ' = ' || expected || ' + ' || charge_carry, E'\\n')
             FROM ($expected) e"));
is($q->("SELECT count(*) FROM ($expected) e WHERE balance <> expected + charge_carry"), '0',
	'every balance = payments - reversals - fee - (last - first register) x multiplier x price + carry');
is($q->("SELECT count(*) FROM ($expected) e WHERE balance - expected < 0 OR balance - expected >= 0.01"), '0',
	'and the rounding difference is under a cent per meter');
is($q->(q{SELECT count(*) FROM prepay.period_charge}), '6', 'the billing run charged the fee once per account');

# the replay: everything a second time
my $snapshot = q{
	SELECT (SELECT count(*) || ' ' || md5(string_agg(l::text, '|' ORDER BY site_id, entry_id)) FROM prepay.ledger l) || ' ' ||
	       (SELECT md5(string_agg(account_id || ':' || balance, ' ' ORDER BY account_id)) FROM prepay.account) || ' ' ||
	       (SELECT count(*) FROM prepay.reading) || ' ' ||
	       (SELECT count(*) FROM prepay.period_charge)};
my $before = $q->($snapshot);
$q->(q{
	INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
	SELECT site_id, meter_id, read_at, energy FROM prepay.reading ORDER BY read_at DESC;
	SELECT count(CASE kind WHEN 'recharge' THEN prepay.recharge(1, account_id, amount, 'storm', ref)
	                       ELSE prepay.refund(1, account_id, amount, 'storm', ref, 'storm') END)
	  FROM storm.payment;
	SELECT count(prepay.reverse(1, l.entry_id, 'storm'))
	  FROM storm.reversal r JOIN prepay.ledger l ON l.channel = 'storm' AND l.external_ref = r.ref;
	SELECT prepay.run_periodic(1, '2026-01-15');
});
is($q->($snapshot), $before, 'the replay changes no ledger row, no balance, no reading, no periodic charge');
is($q->('SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check after the replay');
is($q->(q{
	SELECT count(*) FROM ((TABLE prepay.energy_day EXCEPT SELECT * FROM prepay.energy_from_ledger(1, '-infinity', 'infinity'))
	                      UNION ALL (SELECT * FROM prepay.energy_from_ledger(1, '-infinity', 'infinity') EXCEPT TABLE prepay.energy_day)) d
}), '0', 'the energy rollups, folded while batches ran, equal the ledger');
ok($q->('SELECT count(*) FROM prepay.energy_day_folded') > 0, 'the storm folded rollup deltas');

$node->stop;
done_testing();
