# test/t/140_scram_roles.pl
#
# The roles over real connections authenticated with SCRAM-SHA-256, the
# way docs/SECURITY.md tells a site to run them: pg_hba.conf trusts only
# the test's superuser; every prepay login must prove its password, and
# over TCP must use TLS, which the clients verify (sslmode=verify-full
# against the test's own certificate authority).  An agent login reads
# its catalog, writes readings that are rated and cannot read the ledger;
# a cashier recharges (audited with its application_name); a reader reads
# balances and the audit trail but cannot move money; a wrong password
# and a non-TLS TCP connection are refused.  The extension is installed in
# two databases: the second reuses the cluster-wide roles.  Last, the real
# prepay-agent polls the meter simulator as its own login over TLS and
# SCRAM, and its reading is rated.

use strict;
use warnings;
use IPC::Run qw(start run);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

my $node = PostgreSQL::Test::Cluster->new('scram');
$node->init;
my $pgdata = $node->data_dir;
my $dir = $node->basedir;

# a certificate authority and a server certificate for localhost
my $have_tls = system('openssl version >/dev/null 2>&1') == 0;
if ($have_tls)
{
	open my $ext, '>', "$dir/san.ext" or die;
	print $ext "subjectAltName = DNS:localhost\n";
	close $ext;
	system_or_bail('openssl', 'req', '-new', '-x509', '-days', '2', '-nodes', '-subj', '/CN=prepay test CA',
		'-keyout', "$dir/ca.key", '-out', "$dir/ca.crt");
	system_or_bail('openssl', 'req', '-new', '-nodes', '-subj', '/CN=localhost',
		'-keyout', "$pgdata/server.key", '-out', "$dir/server.csr");
	system_or_bail('openssl', 'x509', '-req', '-days', '2', '-set_serial', '1', '-in', "$dir/server.csr",
		'-CA', "$dir/ca.crt", '-CAkey', "$dir/ca.key", '-extfile', "$dir/san.ext", '-out', "$pgdata/server.crt");
	chmod 0600, "$pgdata/server.key";
	$node->append_conf('postgresql.conf', qq{
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
listen_addresses = '127.0.0.1'
});
}
$node->append_conf('postgresql.conf', qq{
password_encryption = 'scram-sha-256'
log_connections = on
});
$node->start;

my $superuser = $node->safe_psql('postgres', 'SELECT current_user');

# pg_hba.conf as docs/SECURITY.md recommends: the local superuser by peer
# (trust here: the test runs as any OS user), every other login by SCRAM,
# over TCP only with TLS
open my $hba, '>', "$pgdata/pg_hba.conf" or die;
print $hba "local all $superuser trust\n";
print $hba "local all all scram-sha-256\n";
print $hba "hostssl all all 127.0.0.1/32 scram-sha-256\n" if $have_tls;
print $hba "hostnossl all all 127.0.0.1/32 reject\n" if $have_tls;
close $hba;
$node->reload;

$node->safe_psql('postgres', q{
	CREATE DATABASE second;
	CREATE EXTENSION prepay;
	SET password_encryption = 'scram-sha-256';
	CREATE ROLE regress_agent1 LOGIN PASSWORD 'agent one secret' IN ROLE prepay_agent;
	CREATE ROLE regress_cashier1 LOGIN PASSWORD 'cashier secret' IN ROLE prepay_cashier;
	CREATE ROLE regress_reader1 LOGIN PASSWORD 'reader secret' IN ROLE prepay_reader;
	INSERT INTO prepay.site (name) VALUES ('Plaza');
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2026-01-01', 0.75);
	INSERT INTO prepay.gateway (site_id, name, host, port, agent_id) VALUES (1, 'gw', '127.0.0.1', 1502, 'plaza-1');
	INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id, device_profile) VALUES (1, 'M1', 1, 1, 'ddsy1352');
	SELECT prepay.open_account(1, 'A1', 'Shop', 1);
	SELECT prepay.attach_meter(1, 1, 1, 100, '2026-03-01 00:00+00');
	INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES (1, 'plaza-1', 'regress_agent1');
	INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_cashier1'), (1, 'regress_reader1');
});
$node->safe_psql('second', 'CREATE EXTENSION prepay');
is($node->safe_psql('second', q{SELECT count(*) FROM pg_roles WHERE rolname LIKE 'prepay\_%'}),
	'6', 'a second database reuses the six cluster-wide roles');
is($node->safe_psql('postgres',
		q{SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_authid
		   WHERE rolname LIKE 'regress\_%' AND rolpassword LIKE 'SCRAM-SHA-256$%'}),
	'regress_agent1,regress_cashier1,regress_reader1', 'the logins have SCRAM verifiers, no MD5');

my $socket = $node->host;
my $port = $node->port;
sub local_conn
{
	my ($user, $password, $app) = @_;
	return "host=$socket port=$port dbname=postgres user=$user password='$password'"
	  . " application_name='$app'";
}

# a wrong password is refused; the right one is accepted through SCRAM
$node->connect_fails(local_conn('regress_agent1', 'wrong', 'x'), 'a wrong password is refused',
	expected_stderr => qr/password authentication failed for user "regress_agent1"/);
$node->connect_ok(local_conn('regress_agent1', 'agent one secret', 'prepay-agent'),
	'the agent authenticates with SCRAM',
	log_like => [qr/connection authenticated: identity="regress_agent1" method=scram-sha-256/]);

# the agent: its catalog, its readings rated, nothing of the money
my $agent = local_conn('regress_agent1', 'agent one secret', 'prepay-agent');
is($node->safe_psql('postgres', q{SELECT count(DISTINCT meter_id) FROM prepay.agent_catalog('plaza-1')},
		connstr => $agent),
	'1', 'the agent reads the catalog of its gateway');
$node->safe_psql('postgres',
	q{INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-01 01:00+00', 110)},
	connstr => $agent);
is($node->safe_psql('postgres', q{SELECT l.kind || ' ' || l.amount || ' by ' || a.login FROM prepay.ledger l
	JOIN prepay.actor a ON a.site_id = l.site_id AND a.actor_id = l.actor_id}),
	'consumption -7.50 by regress_agent1', "the agent's reading is rated");
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT count(*) FROM prepay.ledger', connstr => $agent);
like($err, qr/permission denied for table ledger/, 'the agent cannot read the ledger');
($ret, $out, $err) = $node->psql('postgres', 'UPDATE prepay.account SET balance = 1000', connstr => $agent);
like($err, qr/permission denied for table account/, 'the agent cannot change a balance');

# the cashier recharges; the audit trail says who and with what program
my $cashier = local_conn('regress_cashier1', 'cashier secret', 'till 7');
is($node->safe_psql('postgres', q{SELECT prepay.recharge(1, 1, 50, 'cash', 'R-1') IS NOT NULL}, connstr => $cashier),
	't', 'the cashier recharges');
($ret, $out, $err) = $node->psql('postgres', q{SELECT prepay.trip(1, 1)}, connstr => $cashier);
like($err, qr/permission denied: regress_cashier1 needs the relay capability/, 'the cashier cannot trip');

# the reader (a BI tool) reads balances and the audit trail, moves no money
my $reader = local_conn('regress_reader1', 'reader secret', 'grafana');
is($node->safe_psql('postgres', 'SELECT balance FROM prepay.account', connstr => $reader),
	'42.50', 'the reader reads balances');
is($node->safe_psql('postgres',
		q{SELECT login || ' ' || application_name || ' ' || action FROM prepay.audit_trail WHERE object = 'ledger'},
		connstr => $reader),
	'regress_cashier1 till 7 recharge', 'the audit trail names the login and its application');
($ret, $out, $err) = $node->psql('postgres', q{SELECT prepay.recharge(1, 1, 50, 'cash', 'R-2')}, connstr => $reader);
like($err, qr/permission denied: regress_reader1 needs the money capability/, 'the reader cannot recharge');

# TLS with full verification of the server's certificate
SKIP:
{
	skip 'openssl is not installed', 6 unless $have_tls;
	my $tls = "host=localhost hostaddr=127.0.0.1 port=$port dbname=postgres user=regress_reader1"
	  . " password='reader secret' sslmode=verify-full sslrootcert=$dir/ca.crt";
	$node->connect_ok($tls, 'TCP with sslmode=verify-full and SCRAM',
		sql => 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
		expected_stdout => qr/^t$/,
		log_like => [qr/connection authenticated: identity="regress_reader1" method=scram-sha-256/]);
	$node->connect_fails("host=localhost hostaddr=127.0.0.1 port=$port dbname=postgres user=regress_reader1"
		  . " password='reader secret' sslmode=disable",
		'TCP without TLS is rejected',
		expected_stderr => qr/no encryption/);
}

# the agent itself, as its own login, over TLS verified against the CA and
# SCRAM: it loads its catalog, polls the simulator and its reading is rated
SKIP:
{
	skip 'openssl is not installed', 3 unless $have_tls;
	my $top = $ENV{TESTDIR};
	my $base = PostgreSQL::Test::Cluster::get_free_port();
	my $control = PostgreSQL::Test::Cluster::get_free_port();
	my $sim = start_simulator($dir, $control, '--tcp-gateways', 1, '--base-port', $base, '--initial-kwh', 200);
	$node->safe_psql('postgres', "UPDATE prepay.gateway SET port = $base WHERE site_id = 1 AND gateway_id = 1");
	my $conninfo = "host=localhost hostaddr=127.0.0.1 port=$port dbname=postgres user=regress_agent1"
	  . " password='agent one secret' sslmode=verify-full sslrootcert=$dir/ca.crt connect_timeout=5"
	  . " application_name=prepay-agent";
	ok(run([ "$top/agent/prepay-agent-asan", '--config', '/dev/null', '--conninfo', $conninfo,
			'--agent-id', 'plaza-1', '--spool-dir', "$dir/spool", '--metrics', 'off', '--once' ],
			'>', "$dir/agent.out", '2>', "$dir/agent.err"),
		'prepay-agent --once as regress_agent1 over TLS and SCRAM');
	is($node->safe_psql('postgres',
			q{SELECT count(*) FROM prepay.ledger l JOIN prepay.actor a ON a.site_id = l.site_id AND a.actor_id = l.actor_id
			   WHERE l.kind = 'consumption' AND a.login = 'regress_agent1' AND l.read_to > '2026-03-02'}),
		'1', "the agent's polled reading is rated");
	$sim->kill_kill;
}

$node->safe_psql('postgres', q{
	DELETE FROM prepay.agent_access;
	DELETE FROM prepay.site_access;
	DROP ROLE regress_agent1, regress_cashier1, regress_reader1;
});
is($node->safe_psql('postgres', 'SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');
$node->stop;
done_testing();
