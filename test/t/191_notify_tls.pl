# test/t/191_notify_tls.pl
#
# Notification delivery over TLS to servers whose certificates come from a
# private certificate authority (notify_channel.ca_certificate), with a
# delivering agent (ASan build) and, on the loopback, an HTTPS webhook
# receiver (test/notify_receiver.py --tls-cert) and two SMTP sinks
# (aiosmtpd), one with STARTTLS required, one with implicit TLS (smtps).
# The CA and the server certificate (for 127.0.0.1) are made here with the
# openssl command:
#   (a) the channel trusts the CA: the webhook (HTTPS) and the e-mail
#       (STARTTLS) are delivered;
#   (b) implicit TLS (smtps://): delivered;
#   (c) the channel trusts another CA (webhook), or only the system's trust
#       store (e-mail): the deliveries fail with the certificate error on
#       their rows and are retried, and nothing reaches the servers;
#   (d) the right CA again: the retried deliveries arrive, each key once;
# and the ledger check holds at the end.

use strict;
use warnings;
use IPC::Run ();
use JSON::PP;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

my $top = $ENV{TESTDIR};
my $tmp = PostgreSQL::Test::Utils::tempdir;

# ---------------------------------------------------------------------
# two certificate authorities; a server certificate for 127.0.0.1 from the
# first
# ---------------------------------------------------------------------
sub make_ca
{
	my ($name) = @_;
	system_or_bail('openssl', 'req', '-new', '-x509', '-days', '2', '-nodes', '-newkey', 'rsa:2048',
		'-subj', "/CN=prepay test $name", '-keyout', "$tmp/$name.key", '-out', "$tmp/$name.crt");
	return slurp_file("$tmp/$name.crt");
}
my $ca = make_ca('ca');
my $other_ca = make_ca('other-ca');
open my $ext, '>', "$tmp/san.ext" or die;
print $ext "subjectAltName = IP:127.0.0.1\n";
close $ext;
system_or_bail('openssl', 'req', '-new', '-nodes', '-newkey', 'rsa:2048', '-subj', '/CN=127.0.0.1',
	'-keyout', "$tmp/server.key", '-out', "$tmp/server.csr");
system_or_bail('openssl', 'x509', '-req', '-days', '2', '-set_serial', '1', '-in', "$tmp/server.csr",
	'-CA', "$tmp/ca.crt", '-CAkey', "$tmp/ca.key", '-extfile', "$tmp/san.ext", '-out', "$tmp/server.crt");

# ---------------------------------------------------------------------
# the servers and the delivering agent
# ---------------------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('notify_tls');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prepay');
$node->safe_psql('postgres', 'CREATE ROLE notify_agent LOGIN IN ROLE prepay_agent');
sub q1 { my ($sql) = @_; return $node->safe_psql('postgres', $sql); }

my $hook_port = PostgreSQL::Test::Cluster::get_free_port();
my $starttls_port = PostgreSQL::Test::Cluster::get_free_port();
my $smtps_port = PostgreSQL::Test::Cluster::get_free_port();
my $metrics = PostgreSQL::Test::Cluster::get_free_port();
my $hook_log = "$tmp/receiver.log";

my $receiver = IPC::Run::start([ '/usr/bin/python3', "$top/test/notify_receiver.py", '--port', $hook_port,
		'--secret', 'hook-secret', '--log', $hook_log, '--tls-cert', "$tmp/server.crt", '--tls-key', "$tmp/server.key" ],
	'>', "$tmp/receiver.out", '2>', "$tmp/receiver.err");
my $starttls = IPC::Run::start([ '/usr/bin/python3', '-m', 'aiosmtpd', '-n', '-l', "127.0.0.1:$starttls_port",
		'--tlscert', "$tmp/server.crt", '--tlskey', "$tmp/server.key" ],
	'>', "$tmp/starttls.out", '2>', "$tmp/starttls.err", init => sub { $ENV{PYTHONUNBUFFERED} = 1 });
my $smtps = IPC::Run::start([ '/usr/bin/python3', '-m', 'aiosmtpd', '-n', '-l', "127.0.0.1:$smtps_port",
		'--smtpscert', "$tmp/server.crt", '--smtpskey', "$tmp/server.key" ],
	'>', "$tmp/smtps.out", '2>', "$tmp/smtps.err", init => sub { $ENV{PYTHONUNBUFFERED} = 1 });
ok(wait_for(sub { -s "$tmp/receiver.out" && slurp_file("$tmp/receiver.out") =~ /listening/ }, 10), 'HTTPS receiver up');

my $ca_sql = $node->safe_psql('postgres', "SELECT quote_literal(\$pem\$$ca\$pem\$)");
my $other_ca_sql = $node->safe_psql('postgres', "SELECT quote_literal(\$pem\$$other_ca\$pem\$)");
q1(qq{
	INSERT INTO prepay.site (name) VALUES ('TLS Plaza');
	INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES (1, 'mailer', 'notify_agent');
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2020-01-01', 1.0);
	SELECT prepay.open_account(1, 'A1', 'Flat 1', 1, p_email => 'a1\@example.com');
	INSERT INTO prepay.notify_site (site_id, language) VALUES (1, 'en');
	INSERT INTO prepay.notify_channel (site_id, channel, url, ca_certificate, backoff_base, backoff_max, lease, max_attempts)
	VALUES (1, 'webhook', 'https://127.0.0.1:$hook_port/hook', $ca_sql, '1 second', '2 seconds', '10 seconds', 100);
	INSERT INTO prepay.notify_channel (site_id, channel, url, smtp_tls, mail_from, ca_certificate,
	                                   backoff_base, backoff_max, lease, max_attempts)
	VALUES (1, 'email', 'smtp://127.0.0.1:$starttls_port', 'starttls', 'billing\@example.com', $ca_sql,
	        '1 second', '2 seconds', '10 seconds', 100);
	INSERT INTO prepay.notify_secret (site_id, channel, secret) VALUES (1, 'webhook', 'hook-secret');
});
my $agent = IPC::Run::start([ "$top/agent/prepay-agent-asan", '--config', '/dev/null',
		'--conninfo', $node->connstr('postgres') . ' user=notify_agent', '--agent-id', 'mailer',
		'--spool-dir', "$tmp/spool", '--metrics', "127.0.0.1:$metrics", '--log-level', 'info',
		'--notifications', 'deliver' ],
	'>>', "$tmp/agent.out", '2>>', "$tmp/agent.err");

# a payment_received notification: one webhook and one e-mail
sub pay
{
	my ($ref) = @_;
	q1("SELECT prepay.recharge(1, 1, 1, 'cash', '$ref')");
	return q1("SELECT max(notification_id) FROM prepay.notification");
}
sub state
{
	my ($id, $channel) = @_;
	return q1("SELECT state FROM prepay.notification_delivery_status WHERE notification_id = $id AND channel = '$channel'");
}
sub requests_with_key
{
	my ($key) = @_;
	return 0 unless -e $hook_log;
	return scalar grep { $_->{key} eq $key && $_->{event} eq 'done' } map { decode_json($_) } split /\n/, slurp_file($hook_log);
}
sub mails_with_key
{
	my ($file, $key) = @_;
	return () = slurp_file($file) =~ /^Message-ID: <\Q$key\E\@prepay>/mg;
}

# ---------------------------------------------------------------------
# (a) the channel trusts the private CA: HTTPS and STARTTLS
# ---------------------------------------------------------------------
my $a = pay('TLS-A');
ok(wait_for(sub { state($a, 'webhook') eq 'delivered' && state($a, 'email') eq 'delivered' }, 20),
	'(a) webhook over HTTPS and e-mail over STARTTLS delivered with the channel\'s CA');
is(requests_with_key("prepay-1-$a-webhook"), 1, '(a) the HTTPS receiver got the webhook once');
my ($hook_a) = grep { $_->{key} eq "prepay-1-$a-webhook" && $_->{event} eq 'done' }
	map { decode_json($_) } split /\n/, slurp_file($hook_log);
is($hook_a->{sig}, 'ok', '(a) its signature verifies');
# (aiosmtpd with --tlscert refuses MAIL before STARTTLS: require_starttls)
is(mails_with_key("$tmp/starttls.out", "prepay-1-$a-email"), 1, '(a) the STARTTLS sink got the e-mail once');

# ---------------------------------------------------------------------
# (b) implicit TLS
# ---------------------------------------------------------------------
q1("UPDATE prepay.notify_channel SET url = 'smtps://127.0.0.1:$smtps_port', smtp_tls = 'implicit' WHERE channel = 'email'");
my $b = pay('TLS-B');
ok(wait_for(sub { state($b, 'email') eq 'delivered' }, 20), '(b) e-mail over implicit TLS (smtps) delivered');
is(mails_with_key("$tmp/smtps.out", "prepay-1-$b-email"), 1, '(b) the smtps sink got it once');

# ---------------------------------------------------------------------
# (c) the wrong CA, or the system's trust store: never sent unverified
# ---------------------------------------------------------------------
q1("UPDATE prepay.notify_channel SET ca_certificate = $other_ca_sql WHERE channel = 'webhook'");
q1("UPDATE prepay.notify_channel SET ca_certificate = NULL WHERE channel = 'email'");
my $c = pay('TLS-C');
ok(wait_for(sub { q1("SELECT bool_and(attempts >= 2) FROM prepay.notification_delivery WHERE notification_id = $c") eq 't' }, 20),
	'(c) both deliveries fail and are tried again');
for my $channel (qw(webhook email))
{
	my ($st, $status, $error) = split /\|/, q1("SELECT state, coalesce(last_status::text, 'none'), last_error
	                                              FROM prepay.notification_delivery_status
	                                             WHERE notification_id = $c AND channel = '$channel'");
	like($st, qr/^(pending|in_flight)$/, "(c) $channel: still to deliver ($st), not dead");
	like($error, qr/certificate/i, "(c) $channel: the certificate error is on the row ($error)");
	is($status, 'none', "(c) $channel: a transport error, no status");
}
is(requests_with_key("prepay-1-$c-webhook"), 0, '(c) the receiver never got the webhook');
is(mails_with_key("$tmp/smtps.out", "prepay-1-$c-email"), 0, '(c) the SMTP server never got the e-mail');
like(slurp_file("$tmp/agent.err") . slurp_file("$tmp/agent.out"), qr/prepay-1-$c-webhook attempt \d+ failed: .*certificate/i,
	'(c) the agent logs the certificate failure');

# ---------------------------------------------------------------------
# (d) the right CA again: the retried deliveries arrive
# ---------------------------------------------------------------------
q1("UPDATE prepay.notify_channel SET ca_certificate = $ca_sql");
ok(wait_for(sub { state($c, 'webhook') eq 'delivered' && state($c, 'email') eq 'delivered' }, 20),
	'(d) delivered on a later attempt once the channel trusts the CA');
is(requests_with_key("prepay-1-$c-webhook"), 1, '(d) the webhook once');
is(mails_with_key("$tmp/smtps.out", "prepay-1-$c-email"), 1, '(d) the e-mail once');

# ---------------------------------------------------------------------
# the end
# ---------------------------------------------------------------------
$agent->signal('TERM');
$agent->finish;
is($agent->result(0), 0, 'agent exits 0 on SIGTERM');
unlike(slurp_file("$tmp/agent.err"), qr/Sanitizer|runtime error/, 'agent: no sanitizer report');
for my $server ($receiver, $starttls, $smtps)
{
	$server->signal('TERM');
	$server->finish;
}
is(q1('SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');
$node->stop;
done_testing();
