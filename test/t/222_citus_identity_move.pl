# test/t/222_citus_identity_move.pl
#
# prepay on Citus (docs/SCALE-OUT.md), a coordinator and two workers, then
# a third:
#   - identity through an authenticator, as a pooler or a REST gateway
#     passes it (one login, SET LOCAL ROLE and request.jwt.claims per
#     transaction; test/t/210_pooled_identity.pl does it through pgbouncer
#     on one node): a tenant's claims read its balance and charges only,
#     whichever worker holds its site; claims from a login that is no
#     authenticator are ignored; an operator mapped to one site sees that
#     site only and cannot credit the other (42501);
#   - a third worker added (citus_add_node, prepay.distribute() again), a
#     site moved onto it and another moved from the worker of the higher
#     group to the lower (prepay.move_site): readings keep rating, every
#     site's ids keep increasing in the order its rows were written (new
#     ids above the old), no (site_id, entry_id) repeats, check_ledger() is
#     empty, and the agent's command claim through the coordinator still
#     hands out a trip of a moved site.
# Skipped when Citus is not installed (citus.so in the server's lib dir).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

skip_unless_citus();

my ($coord, @workers) = start_citus_cluster(2);
my $sql = sub { $coord->safe_psql('postgres', $_[0]) };

# sites until two are on different workers; site 1 and that one get a shop each
$sql->(q{INSERT INTO prepay.site (name) VALUES ('North')});
my $other;
for my $try (2 .. 20)
{
	$sql->("INSERT INTO prepay.site (name) VALUES ('Site $try')");
	if (shard_port($coord, $try) ne shard_port($coord, 1)) { $other = $try; last; }
}
ok(defined $other, "site 1 and site $other are on different workers");
my %acc;
for my $site (1, $other)
{
	$sql->(qq{
		INSERT INTO prepay.tariff (site_id, name) VALUES ($site, 'flat');
		INSERT INTO prepay.meter (site_id, code, gateway_id) VALUES ($site, 'M$site', NULL)});
	my ($tariff, $meter) = split /\|/, $sql->(qq{
		SELECT (SELECT tariff_id FROM prepay.tariff WHERE site_id = $site), (SELECT meter_id FROM prepay.meter WHERE site_id = $site)});
	$sql->(qq{INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES ($site, $tariff, '2026-01-01', 1)});
	my $account = $sql->(qq{SELECT prepay.open_account($site, 'A$site', 'Shop $site', $tariff)});
	$sql->(qq{SELECT prepay.attach_meter($site, $account, $meter, 0, '2026-03-01 00:00+00');
		SELECT prepay.recharge($site, $account, 100, 'cash', 'R-$site') IS NOT NULL});
	$acc{$site} = [ $account, $meter ];
}
sub readings
{
	my ($site, $from, $n) = @_;
	my $meter = $acc{$site}[1];
	$sql->(qq{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
		SELECT $site, $meter, timestamptz '2026-03-01 00:00+00' + k * interval '1 hour', k * 0.5
		  FROM generate_series($from, $from + $n - 1) k});
}
readings($_, 1, 20) for 1, $other;

# ---------------------------------------------------------------------
# identity: an authenticator, per transaction SET LOCAL ROLE and claims
# ---------------------------------------------------------------------
# (on Citus the coordinator opens its connections to the workers as the
# current role: a role an authenticator becomes must be allowed to log in,
# as every role that reads tables; it needs no password where the workers'
# pg_hba.conf trusts the coordinator)
$sql->(qq{
	CREATE ROLE regress_auth LOGIN NOINHERIT;
	CREATE ROLE regress_tenant LOGIN IN ROLE prepay_tenant;
	CREATE ROLE regress_ops LOGIN IN ROLE prepay_operator;
	GRANT regress_tenant, regress_ops TO regress_auth;
	CREATE ROLE regress_mallory LOGIN IN ROLE regress_tenant;
	INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_ops');
	INSERT INTO prepay.api_authenticator (site_id, grantee) VALUES (1, 'regress_auth'), ($other, 'regress_auth');
});
sub request
{
	my ($login, $role, $claims, $query) = @_;
	my $set = defined $claims ? "SELECT set_config('request.jwt.claims', '$claims', true) IS NULL AS claims_set \\gset\n" : '';
	my ($ret, $out, $err) = $coord->psql('postgres', "BEGIN;\nSET LOCAL ROLE $role;\n$set$query;\nCOMMIT;",
		extra_params => [ '-U', $login, '-v', 'VERBOSITY=verbose' ]);
	return ($out, $err);
}
for my $site (1, $other)
{
	my ($account) = @{ $acc{$site} };
	my $claims = qq{{"role": "regress_tenant", "site_id": $site, "account_id": $account}};
	my ($out, $err) = request('regress_auth', 'regress_tenant', $claims,
		q{SELECT string_agg(site_id || ':' || account_id || ':' || balance, ',') FROM prepay.my_balance()});
	is($out, "$site:$account:" . $sql->("SELECT balance FROM prepay.account WHERE site_id = $site"),
		"tenant of site $site by claims: its own balance only (worker " . shard_port($coord, $site) . ")") or diag($err);
	($out, $err) = request('regress_auth', 'regress_tenant', $claims,
		q{SELECT count(*) || ' ' || count(*) FILTER (WHERE site_id = } . $site . q{ AND account_id = } . $account . q{) FROM prepay.my_charges(p_limit => 1000)});
	is($out, "20 20", "... and its 20 charges, nothing else") or diag($err);
}
my ($out, $err) = request('regress_mallory', 'regress_tenant', qq{{"role": "regress_tenant", "site_id": 1, "account_id": $acc{1}[0]}},
	q{SELECT count(*) FROM prepay.my_balance()});
like($err, qr/42501/, 'claims from a login that is no authenticator are ignored (42501)');
($out, $err) = request('regress_auth', 'regress_ops', undef,
	q{SELECT string_agg(DISTINCT site_id::text, ',') FROM prepay.account});
is($out, '1', 'an operator mapped to site 1 through the authenticator sees the accounts of site 1 only') or diag($err);
($out, $err) = request('regress_auth', 'regress_ops', undef, "SELECT count(*) FROM prepay.ledger WHERE site_id = $other");
is($out, '0', '... nothing of the ledger of the other site') or diag($err);
($out, $err) = request('regress_auth', 'regress_ops', undef, "SELECT prepay.recharge($other, $acc{$other}[0], 1, 'cash', 'X-1')");
like($err, qr/42501/, '... and cannot credit an account of the other site (42501)');

# ---------------------------------------------------------------------
# a third worker; site 1 moves onto it, the other site to the lower group
# ---------------------------------------------------------------------
my $w3 = citus_node('worker3');
$sql->("SELECT citus_add_node('127.0.0.1', " . $w3->port . ")");
is($sql->('SELECT count(*) FROM prepay.distribute()'), $sql->(q{SELECT count(*) FROM pg_class WHERE relnamespace = 'prepay'::regnamespace AND relkind IN ('r', 'p')}),
	'prepay.distribute() again after adding a worker');
is($w3->safe_psql('postgres', q{SELECT count(*) FROM pg_constraint WHERE conname = 'site_name_key'}), 0,
	'... the new worker has the distributed schema');
my %before = map { $_ => $sql->("SELECT max(entry_id) FROM prepay.ledger WHERE site_id = $_") } 1, $other;
my $groups = sub { $sql->(qq{SELECT string_agg(groupid::text, ',' ORDER BY groupid) FROM pg_dist_node
	WHERE nodeport IN (} . shard_port($coord, 1) . ',' . shard_port($coord, $other) . ')') };
my ($g1, $g2) = split /,/, $groups->();
my ($high) = grep { $sql->("SELECT groupid FROM pg_dist_node WHERE nodeport = " . shard_port($coord, $_)) == $g2 } 1, $other;
my ($low_port) = $sql->("SELECT nodeport FROM pg_dist_node WHERE groupid = $g1");
my $low_site = $high == 1 ? $other : 1;
like($sql->("SELECT to_node FROM prepay.move_site($low_site, '127.0.0.1', " . $w3->port . ")"), qr/:\Q@{[$w3->port]}\E$/,
	"site $low_site moved to the new worker");
like($sql->("SELECT to_node FROM prepay.move_site($high, '127.0.0.1', $low_port)"), qr/:$low_port$/,
	"site $high moved from the worker of group $g2 to that of group $g1");
is(shard_port($coord, $low_site), $w3->port, "site ${low_site}'s shards are on the new worker");
is(shard_port($coord, $high), $low_port, "site ${high}'s shards are on the lower group's worker");

readings($_, 21, 20) for 1, $other;
is($sql->(q{SELECT count(*) FROM prepay.reading WHERE quarantine_reason IS NULL AND read_at > '2026-03-01 00:00+00'}), 80,
	'readings of both moved sites keep rating');
for my $site (1, $other)
{
	is($sql->("SELECT min(entry_id) > $before{$site} FROM prepay.ledger WHERE site_id = $site AND read_to > '2026-03-01 20:00+00'"), 't',
		"site $site: every id drawn after the move is above its earlier ids");
}
is($sql->(q{SELECT count(*) FROM (SELECT site_id, entry_id, read_to,
	         lag(read_to) OVER (PARTITION BY site_id, account_id ORDER BY entry_id) AS prev
	    FROM prepay.ledger WHERE kind = 'consumption') x WHERE prev >= read_to}), 0,
	'each site\'s charges are in entry order across the moves');
is($sql->(q{SELECT count(*) - count(DISTINCT (site_id, entry_id)) FROM prepay.ledger}), 0, 'no (site_id, entry_id) repeats');
is($sql->(q{SELECT count(*) - count(DISTINCT entry_id) FROM prepay.ledger}), 0, '... nor an entry id across sites');
is($sql->('SELECT count(*) FROM prepay.check_ledger()'), 0, 'check_ledger() is empty');

# the agent's claim through the coordinator: a trip of a moved site
$sql->(qq{INSERT INTO prepay.gateway (site_id, name, host, port, agent_id) VALUES ($high, 'gw', '127.0.0.1', 1502, 'mover');
	UPDATE prepay.meter SET gateway_id = (SELECT gateway_id FROM prepay.gateway WHERE site_id = $high), unit_id = 1,
	       device_profile = 'ddsy1352' WHERE site_id = $high});
readings($high, 41, 400);
is($sql->("SELECT alarm_level FROM prepay.account WHERE site_id = $high"), 3, "site ${high}'s shop runs into arrears on its new worker");
like($sql->(q{SELECT string_agg(action || ' ' || site_id, ',') FROM prepay.agent_claim_commands('mover')}), qr/^trip $high$/,
	'the agent claims the trip through the coordinator');

done_testing();
