# test/t/222_citus_identity_move.pl
#
# prepay on Citus (docs/SCALE-OUT.md), a coordinator and two workers:
#   - identity through an authenticator, as a pooler or a REST gateway
#     passes it (one login, SET LOCAL ROLE and request.jwt.claims per
#     transaction; test/t/210_pooled_identity.pl does it through pgbouncer
#     on one node): a tenant's claims read its balance and charges only,
#     whichever worker holds its site; claims from a login that is no
#     authenticator are ignored; an operator mapped to one site sees that
#     site only and cannot credit the other (42501);
# Skipped when Citus is not installed (citus.so in the server's lib dir).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

my $libdir = `pg_config --pkglibdir`;
chomp $libdir;
plan skip_all => "Citus is not installed ($libdir/citus.so is missing): the distributed test is skipped"
  unless -f "$libdir/citus.so";

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
	my $set = defined $claims ? "SELECT set_config('request.jwt.claims', '$claims', true) IS NULL \\gset\n" : '';
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

done_testing();
