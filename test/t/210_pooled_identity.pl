# test/t/210_pooled_identity.pl
#
# Identity through a real pgbouncer in transaction pooling, the way a REST
# gateway (PostgREST) or a pooled fleet runs: every client logs in as one
# authenticator, and each request is a transaction that switches to its
# role with SET LOCAL ROLE and passes the tenant's claims with
# set_config('request.jwt.claims', ..., true).  pgbouncer (Debian package
# pgbouncer) listens on 127.0.0.1 at a free port with a pool of two server
# connections, so that the requests of several concurrent clients
# interleave on the same server connections.
#
# Asserted: two tenants of North identified by claims, an operator of
# North and a cashier of South, interleaved on shared server connections,
# each see exactly their own rows (every answer of every request is
# checked); the cashier of South cannot credit an account of North
# (42501); claims forged by a login that is not the registered
# authenticator are ignored (42501, nothing seen); the same payment
# callback delivered twice at once credits once (one answer is the
# replay); the audit names the authenticator and the effective role; the
# tenant's forecast reads "about N days left"; check_ledger() is empty.

use strict;
use warnings;
use IPC::Run qw(start run);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

my $pgbouncer = '/usr/sbin/pgbouncer';
plan skip_all => 'pgbouncer is not installed (test/install-deps.sh installs it)' unless -x $pgbouncer;

my $node = PostgreSQL::Test::Cluster->new('pooled');
$node->init;
$node->start;
my $dir = $node->basedir;

# two sites; North has tenants A (account 1) and B (account 2), South C (3)
$node->safe_psql('postgres', q{
	CREATE EXTENSION prepay;
	INSERT INTO prepay.site (name) VALUES ('North'), ('South');
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (2, 'flat');
	INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 1), (2, 2, '2026-01-01', 1);
	INSERT INTO prepay.meter (site_id, code) VALUES (1, 'N1'), (1, 'N2'), (2, 'S1');
	SELECT prepay.open_account(1, 'A', 'Shop A', 1), prepay.open_account(1, 'B', 'Shop B', 1), prepay.open_account(2, 'C', 'Shop C', 2);
	UPDATE prepay.account SET opened_at = now() - interval '10 days';
	SELECT prepay.attach_meter(1, 1, 1, 100, now() - interval '3 days'), prepay.attach_meter(1, 2, 2, 200, now() - interval '3 days'),
	       prepay.attach_meter(2, 3, 3, 300, now() - interval '3 days');
	SELECT prepay.recharge(1, 1, 100, 'cash', 'R-A'), prepay.recharge(1, 2, 200, 'cash', 'R-B'), prepay.recharge(2, 3, 300, 'cash', 'R-C');
	-- account 1 uses 10 kWh (10.00) a day
	INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
	    (1, 1, now() - interval '2 days', 100), (1, 1, now() - interval '1 day', 110), (1, 1, now() - interval '1 minute', 120);

	-- the authenticator (NOINHERIT, as PostgREST's) may become each request's role
	CREATE ROLE regress_auth LOGIN NOINHERIT;
	CREATE ROLE regress_tenant NOLOGIN IN ROLE prepay_tenant;
	CREATE ROLE regress_ops1 NOLOGIN IN ROLE prepay_operator;
	CREATE ROLE regress_pay2 NOLOGIN IN ROLE prepay_cashier;
	GRANT regress_tenant, regress_ops1, regress_pay2 TO regress_auth;
	INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_ops1'), (2, 'regress_pay2');
	INSERT INTO prepay.api_authenticator (site_id, grantee) VALUES (1, 'regress_auth'), (2, 'regress_auth');
	-- a login that may become the tenant role but is no authenticator
	CREATE ROLE regress_mallory LOGIN IN ROLE regress_tenant;
});

# pgbouncer in transaction pooling in front of the node's Unix socket
my $port = PostgreSQL::Test::Cluster::get_free_port();
my ($socket, $pgport) = ($node->host, $node->port);
open my $users, '>', "$dir/userlist.txt" or die;
print $users qq{"regress_auth" ""\n"regress_mallory" ""\n};
close $users;
open my $ini, '>', "$dir/pgbouncer.ini" or die;
print $ini qq{[databases]
prepay = host=$socket port=$pgport dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 50
server_reset_query =
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
admin_users = regress_auth
};
close $ini;
my $bouncer = start([ $pgbouncer, "$dir/pgbouncer.ini" ], '>', "$dir/pgbouncer.out", '2>', "$dir/pgbouncer.err");

my $auth = "host=127.0.0.1 port=$port dbname=prepay user=regress_auth";
sub through
{
	my ($conn, $sql) = @_;
	my ($out, $err) = ('', '');
	run([ 'psql', '-X', '-q', '-A', '-t', '-F', '|', '-v', 'VERBOSITY=verbose', '-d', $conn, '-c', $sql ],
		'>', \$out, '2>', \$err);
	chomp $out;
	return ($out, $err);
}
ok(wait_for(sub { (through($auth, 'SELECT 1'))[0] eq '1' }, 20), 'pgbouncer accepts the authenticator');
like((through("host=127.0.0.1 port=$port dbname=pgbouncer user=regress_auth", 'SHOW CONFIG'))[0],
	qr/^pool_mode\|transaction\|/m, 'pgbouncer pools by transaction (its admin console)');

# one request: a transaction with SET LOCAL ROLE and the claims
sub request
{
	my ($role, $claims, $sql) = @_;
	my $set = defined $claims ? "SELECT set_config('request.jwt.claims', '$claims', true) IS NULL;\n" : '';
	return "BEGIN;\nSET LOCAL ROLE $role;\n$set$sql\nCOMMIT;\n";
}

# ---------------------------------------------------------------------
# four kinds of request interleaved on two server connections
# ---------------------------------------------------------------------
# (tenants have no grant on prepay.site: their first column stays empty)
my $sites = q{(SELECT string_agg(site_id::text, ',' ORDER BY site_id) FROM prepay.site)};
my $seen = q{SELECT '%s', pg_backend_pid(), %s,
	(SELECT string_agg(account_id::text, ',' ORDER BY account_id) FROM prepay.account),
	(SELECT count(*) FROM prepay.ledger),
	%s;};
my %client = (
	tenant_a => [ 'regress_tenant', '{"role": "regress_tenant", "site_id": 1, "account_id": 1}',
		sprintf($seen, 'tenant_a', "''", q{(SELECT string_agg(account_id || ':' || balance, ',') FROM prepay.my_balance())}) ],
	tenant_b => [ 'regress_tenant', '{"role": "regress_tenant", "site_id": 1, "account_id": 2}',
		sprintf($seen, 'tenant_b', "''", q{(SELECT string_agg(account_id || ':' || balance, ',') FROM prepay.my_balance())}) ],
	operator_north => [ 'regress_ops1', undef, sprintf($seen, 'operator_north', $sites, q{(SELECT count(*) FROM prepay.meter)}) ],
	cashier_south => [ 'regress_pay2', undef, sprintf($seen, 'cashier_south', $sites, q{prepay.balance(2, 3)}) ],
);
# what each must see: sites (RLS on site: tenants see none), accounts, ledger rows, the last column
my %expected = (
	tenant_a => '||1|3|1:80.00',
	tenant_b => '||2|1|2:200.00',
	operator_north => '|1|1,2|4|2',
	cashier_south => '|2|3|1|300.00',
);
my $rounds = 40;
my %run;
for my $name (sort keys %client)
{
	my ($role, $claims, $sql) = @{ $client{$name} };
	my $script = "\\set ON_ERROR_STOP 1\n" . (request($role, $claims, $sql) x $rounds);
	open my $f, '>', "$dir/$name.sql" or die;
	print $f $script;
	close $f;
	$run{$name} = start([ 'psql', '-X', '-q', '-A', '-t', '-F', '|', '-d', $auth, '-f', "$dir/$name.sql" ],
		'>', "$dir/$name.out", '2>', "$dir/$name.err");
}
$_->finish for values %run;
my (%pids_of, %clients_of_pid);
for my $name (sort keys %client)
{
	open my $f, '<', "$dir/$name.out" or die;
	my @lines = grep { /\|/ } map { chomp; $_ } <$f>;
	close $f;
	is(scalar @lines, $rounds, "$name: every request answered") or diag(slurp_file("$dir/$name.err"));
	my @wrong = grep { my ($label, $pid, $rest) = /^([^|]*)\|(\d+)(.*)$/; $pids_of{$name}{$pid} = 1;
		$clients_of_pid{$pid}{$name} = 1; !($label eq $name && $rest eq $expected{$name}) } @lines;
	is_deeply(\@wrong, [], "$name: each request sees exactly its own rows");
}
my @shared = grep { keys %{ $clients_of_pid{$_} } > 1 } keys %clients_of_pid;
ok(@shared >= 1 && keys %clients_of_pid <= 2,
	'the requests of different roles and tenants ran on the same (at most two) server connections')
  or diag explain \%clients_of_pid;

# ---------------------------------------------------------------------
# what a request may not do
# ---------------------------------------------------------------------
my ($out, $err) = through($auth, request('regress_pay2', undef,
		q{SELECT * FROM prepay.credit_payment(1, 1, 10, 'payco', 'CROSS-1');}));
like($err, qr/ERROR:  42501: permission denied for site 1/, 'the cashier of South cannot credit an account of North (42501)');
($out, $err) = through($auth, request('regress_ops1', undef, q{SELECT prepay.trip(2, 3);}));
like($err, qr/ERROR:  42501: permission denied for site 2/, 'the operator of North cannot trip a meter of South (42501)');
($out, $err) = through($auth, request('regress_tenant', '{"role": "regress_tenant", "site_id": 1, "account_id": 1}',
		q{SELECT prepay.balance(1, 2);}));
like($err, qr/ERROR:  42501: permission denied for account 2 of site 1/, "a tenant cannot read another tenant's balance (42501)");

# claims forged by a login that is not the authenticator: ignored
my $mallory = "host=127.0.0.1 port=$port dbname=prepay user=regress_mallory";
($out, $err) = through($mallory, request('regress_tenant', '{"role": "regress_tenant", "site_id": 1, "account_id": 1}',
		q{SELECT count(*) FROM prepay.account;}));
is($out, "f\n0", 'claims forged by a login that is no authenticator show no row');
($out, $err) = through($mallory, request('regress_tenant', '{"role": "regress_tenant", "site_id": 1, "account_id": 1}',
		q{SELECT * FROM prepay.my_balance();}));
like($err, qr/ERROR:  42501: permission denied: regress_tenant has no account/, 'and are refused by the tenant API (42501)');

# the tenant's forecast through the gateway
($out, $err) = through($auth, request('regress_tenant', '{"role": "regress_tenant", "site_id": 1, "account_id": 1}',
		q{SELECT message FROM prepay.my_forecast();}));
like($out, qr/^f\nabout [0-9]+ days left$/, "the tenant's forecast through the gateway: " . ($out =~ s/^f\n//r));

# ---------------------------------------------------------------------
# the same payment callback delivered twice at once credits once
# ---------------------------------------------------------------------
my $callback = request('regress_pay2', '{"role": "regress_pay2", "sub": "payco"}',
	q{SELECT entry_id, amount, balance, replayed FROM prepay.credit_payment(2, 3, 40, 'payco', 'DUP-1');
	  SELECT pg_sleep(0.5) IS NULL;});
my @deliveries;
for my $n (1, 2)
{
	open my $f, '>', "$dir/callback$n.sql" or die;
	print $f "\\set ON_ERROR_STOP 1\n$callback";
	close $f;
	push @deliveries, start([ 'psql', '-X', '-q', '-A', '-t', '-F', '|', '-v', 'VERBOSITY=verbose', '-d', $auth,
			'-f', "$dir/callback$n.sql" ], '>', "$dir/callback$n.out", '2>', "$dir/callback$n.err");
}
my @answers;
for my $n (1, 2)
{
	ok($deliveries[ $n - 1 ]->finish, "delivery $n succeeds") or diag(slurp_file("$dir/callback$n.err"));
	my ($answer) = grep { /\|/ } split /\n/, slurp_file("$dir/callback$n.out");
	push @answers, $answer // '';
}
my ($entry) = $answers[0] =~ /^(\d+)\|/;
is_deeply([ sort @answers ], [ "$entry|40.00|340.00|f", "$entry|40.00|340.00|t" ],
	'both deliveries answer the same entry and the new balance; one is the replay');
is($node->safe_psql('postgres',
		q{SELECT count(*) || ' ' || sum(amount) || ' ' || (SELECT balance FROM prepay.account WHERE site_id = 2 AND account_id = 3)
		    FROM prepay.ledger WHERE channel = 'payco' AND external_ref = 'DUP-1'}),
	'1 40.00 340.00', 'the payment is credited once');
is($node->safe_psql('postgres',
		q{SELECT login || ' ' || acting_role || ' ' || action || ' ' || (claims ->> 'sub') FROM prepay.audit_trail
		   WHERE object = 'ledger' AND after_values ->> 'external_ref' = 'DUP-1'}),
	'regress_auth regress_pay2 recharge payco', 'the audit names the authenticator, the effective role and the claims');
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.ledger WHERE external_ref = 'CROSS-1'}),
	'0', 'the refused cross-site credit left nothing');

$bouncer->signal('TERM');
$bouncer->finish;
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');
$node->stop;
done_testing();
