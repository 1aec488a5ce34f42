# test/t/190_notify.pl
#
# Notification delivery end to end (issue 18): PostgreSQL, the meter
# simulator, a polling agent and delivering agents (ASan builds, the
# delivery role on, logged in as a prepay_agent role), a webhook receiver
# and SMS endpoint (test/notify_receiver.py) and an SMTP sink (aiosmtpd),
# all on the loopback:
#   (a) a balance falling through the ladder: one signed webhook per level,
#       each idempotency key accepted once; the e-mails at the SMTP sink; the
#       SMS provider called with the phone and the text;
#   (b) the receiver down for 30 s, then back: everything delivered, no key
#       twice;
#   (c) the delivering agent killed (SIGKILL) in the middle of a delivery and
#       restarted: nothing lost (sent again with the same key);
#   (d) a receiver answering 400 forever: dead-lettered at once, with an
#       alarm and the dead counter on /metrics;
#   (e) two delivering agents: no message sent twice, not even on the wire;
#   (f) an SMTP server refusing the address (550): dead-lettered at once;
# and the ledger check holds at the end.

use strict;
use warnings;
use HTTP::Tiny;
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
my $http = HTTP::Tiny->new(timeout => 5);

my $node = start_prepay_node('notify');
$node->safe_psql('postgres', q{
	CREATE ROLE notify_agent LOGIN IN ROLE prepay_agent;
});

my $hook_port = PostgreSQL::Test::Cluster::get_free_port();
my $smtp_port = PostgreSQL::Test::Cluster::get_free_port();
my $metrics1 = PostgreSQL::Test::Cluster::get_free_port();
my $metrics2 = PostgreSQL::Test::Cluster::get_free_port();
my $metrics_poll = PostgreSQL::Test::Cluster::get_free_port();
my $control = PostgreSQL::Test::Cluster::get_free_port();
my $base = PostgreSQL::Test::Cluster::get_free_port();
my $refuse_port = PostgreSQL::Test::Cluster::get_free_port();
my $hook_log = "$tmp/receiver.log";

# ---------------------------------------------------------------------
# the receiver, the SMTP sink, the agents
# ---------------------------------------------------------------------
my $receiver;
sub start_receiver
{
	my @extra = @_;
	$receiver = IPC::Run::start([ '/usr/bin/python3', "$top/test/notify_receiver.py", '--port', $hook_port,
			'--secret', 'hook-secret', '--log', $hook_log, @extra ],
		'>', "$tmp/receiver.out", '2>>', "$tmp/receiver.err");
	ok(wait_for(sub { -s "$tmp/receiver.out" && slurp_file("$tmp/receiver.out") =~ /listening/ }, 10),
		"receiver up @extra");
}
sub stop_receiver
{
	$receiver->signal('TERM');
	$receiver->finish;
	unlink "$tmp/receiver.out";
}

my $smtp = IPC::Run::start([ '/usr/bin/python3', '-m', 'aiosmtpd', '-n', '-l', "127.0.0.1:$smtp_port" ],
	'>', "$tmp/smtp.out", '2>', "$tmp/smtp.err", init => sub { $ENV{PYTHONUNBUFFERED} = 1 });

my %agents;
sub start_delivering_agent
{
	my ($name, $agent_id, $metrics_port) = @_;
	my $connstr = $node->connstr('postgres') . ' user=notify_agent';
	$agents{$name} = IPC::Run::start([ "$top/agent/prepay-agent-asan", '--config', '/dev/null',
			'--conninfo', $connstr, '--agent-id', $agent_id, '--spool-dir', "$tmp/spool-$name",
			'--metrics', "127.0.0.1:$metrics_port", '--log-level', 'info', '--notifications', 'deliver' ],
		'>>', "$tmp/$name.out", '2>>', "$tmp/$name.err");
}

# every request the receiver finished: [{path, key, sig, dup, status, ...}]
sub received
{
	return [] unless -e $hook_log;
	return [ grep { $_->{event} eq 'done' } map { decode_json($_) } split /\n/, slurp_file($hook_log) ];
}
sub accepted_keys
{
	my ($path) = @_;
	my %n;
	$n{ $_->{key} }++ for grep { $_->{path} eq $path && $_->{status} == 200 && !$_->{dup} } @{ received() };
	return \%n;
}
sub q1 { my ($sql) = @_; return $node->safe_psql('postgres', $sql); }
# run $sql; the notifications it writes are those above the id returned
sub mark_and_run
{
	my ($sql) = @_;
	my $mark = q1('SELECT max(notification_id) FROM prepay.notification');
	q1($sql);
	return $mark;
}
sub pending
{
	return q1(q{SELECT count(*) FROM prepay.notification_delivery WHERE delivered_at IS NULL AND dead_at IS NULL});
}

# ---------------------------------------------------------------------
# the site: price 10.00/kWh, a meter costs 1.00 per second; thresholds
# low 8, pre-trip 4; A1 starts with 12: level 1, 2 and 3 within ~12 s
# ---------------------------------------------------------------------
my $sim = start_simulator($tmp, $control, '--tcp-gateways', 1, '--base-port', $base,
	'--meters-per-gateway', 2, '--speedup', 360, '--initial-kwh', '100.00');
q1(qq{
	INSERT INTO prepay.site (name, low_balance_threshold, pretrip_threshold) VALUES ('Notify Plaza', 8, 4);
	INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES (1, 'mailer', 'notify_agent'), (1, 'mailer-2', 'notify_agent');
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2020-01-01', 10.0);
	INSERT INTO prepay.gateway (site_id, name, host, port, agent_id, poll_interval)
	VALUES (1, 'g0', '127.0.0.1', $base, 'poll', '1 second');
	INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id, device_profile, max_per_hour)
	SELECT 1, 'M' || u, 1, u, 'ddsy1352', 100000 FROM generate_series(1, 2) u ORDER BY u;
	SELECT prepay.open_account(1, 'A1', 'Flat 1', 1, p_phone => '+8613900000001', p_email => 'a1\@example.com');
	SELECT prepay.open_account(1, 'A2', 'Flat 2', 1, p_phone => '+8613900000002');
	SELECT prepay.attach_meter(1, 1, 1);
	SELECT prepay.attach_meter(1, 2, 2);
	INSERT INTO prepay.notify_site (site_id, language) VALUES (1, 'en');
	INSERT INTO prepay.account_language (site_id, account_id, language) VALUES (1, 1, 'zh');
	INSERT INTO prepay.notify_channel (site_id, channel, url, backoff_base, backoff_max, lease, max_attempts)
	VALUES (1, 'webhook', 'http://127.0.0.1:$hook_port/hook', '1 second', '4 seconds', '10 seconds', 100);
	UPDATE prepay.notify_channel SET max_per_minute = 1000;
	INSERT INTO prepay.notify_channel (site_id, channel, url, smtp_tls, mail_from, backoff_base, backoff_max, lease)
	VALUES (1, 'email', 'smtp://127.0.0.1:$smtp_port', 'none', 'billing\@example.com', '1 second', '4 seconds', '10 seconds');
	INSERT INTO prepay.notify_channel (site_id, channel, url, method, headers, body, backoff_base, backoff_max, lease, max_attempts)
	VALUES (1, 'sms', 'http://127.0.0.1:$hook_port/sms?to={phone_url}', 'POST',
	        '{"Authorization: Bearer {secret}","Content-Type: application/x-www-form-urlencoded"}',
	        'to={phone_url}&text={text_url}', '1 second', '4 seconds', '10 seconds', 100);
	INSERT INTO prepay.notify_secret (site_id, channel, secret) VALUES (1, 'webhook', 'hook-secret'), (1, 'sms', 'sms-token');
	SELECT prepay.recharge(1, 1, 12, 'cash', 'R1');
	SELECT prepay.recharge(1, 2, 100000, 'cash', 'R2');
});

start_receiver();
start_delivering_agent('d1', 'mailer', $metrics1);
my $poller = start_agent($tmp, conninfo => $node->connstr('postgres'), agent_id => 'poll', metrics_port => $metrics_poll);

# ---------------------------------------------------------------------
# (a) the ladder
# ---------------------------------------------------------------------
ok(wait_for(sub { q1(q{SELECT alarm_level FROM prepay.account WHERE account_id = 1}) eq '3' }, 30),
	'(a) A1 falls into arrears');
ok(wait_for(sub { pending() eq '0' }, 15), '(a) every delivery delivered');
my $ladder = q1(q{SELECT string_agg(notification_id || ':' || alarm_level, ' ' ORDER BY notification_id)
                    FROM prepay.notification WHERE account_id = 1 AND kind = 'alarm_level'});
is(join(' ', map { (split /:/)[1] } split / /, $ladder), '1 2 3', '(a) one notification per level');
my $keys = accepted_keys('/hook');
for my $n (map { (split /:/)[0] } split / /, $ladder)
{
	is($keys->{"prepay-1-$n-webhook"}, 1, "(a) notification $n: one signed webhook accepted");
}
my @hooks = grep { $_->{path} eq '/hook' } @{ received() };
is(scalar(grep { $_->{sig} ne 'ok' } @hooks), 0, '(a) every webhook signature verifies');
is(scalar(grep { $_->{dup} } @hooks), 0, '(a) no key twice');
my ($level3) = grep { $_->{key} eq 'prepay-1-' . (split /:/, (split / /, $ladder)[2])[0] . '-webhook' } @hooks;
my $doc = JSON::PP->new->decode($level3->{body});
is_deeply([ @$doc{qw(site account level currency kind)}, $doc->{meters} ],
	[ 'Notify Plaza', 'A1', 3, 'CNY', 'alarm_level', ['M1'] ], '(a) the JSON document');
like($doc->{message}, qr/\x{6b20}\x{8d39}/, '(a) A1 is written to in Chinese');
my @sms = grep { $_->{path} eq '/sms' } @{ received() };
my ($sms1) = grep { $_->{query} eq 'to=%2B8613900000001' } @sms;
ok($sms1, '(a) the SMS provider was called with the phone');
is($sms1->{auth}, 'Bearer sms-token', '(a) with the secret in its header');
like($sms1->{body}, qr/^to=%2B8613900000001&text=%E8%B4%A6%E6%88%B7A1/, '(a) and the text, form-encoded');
ok(wait_for(sub { slurp_file("$tmp/smtp.out") =~ /prepay-1-\d+-email\@prepay/ }, 5), '(a) an e-mail arrived at the SMTP sink');
my $mails = () = slurp_file("$tmp/smtp.out") =~ /^Message-ID: <prepay-1-\d+-email\@prepay>/mg;
is($mails, q1(q{SELECT count(*) FROM prepay.notification_delivery WHERE channel = 'email'}), '(a) one e-mail per e-mail delivery');
like(slurp_file("$tmp/smtp.out"), qr/^To: a1\@example.com/m, '(a) to the tenant');
is(q1(q{SELECT count(*) FROM prepay.notification WHERE delivered_at IS NULL}), '0', '(a) every notification delivered');
like($http->get("http://127.0.0.1:$metrics1/metrics")->{content},
	qr/^prepay_agent_notifications_sent_total\{channel="webhook"\} [1-9]/m, '(a) sent counted');
like($http->get("http://127.0.0.1:$metrics1/metrics")->{content},
	qr/^prepay_agent_notification_latency_seconds_count\{channel="webhook"\} [1-9]/m, '(a) latency observed');

# ---------------------------------------------------------------------
# (b) the receiver down for 30 s
# ---------------------------------------------------------------------
stop_receiver();
my $mark = mark_and_run(q{SELECT prepay.recharge(1, 2, 1, 'cash', 'B' || i) FROM generate_series(1, 5) i});
sleep 30;
ok(pending() > 0, '(b) nothing delivered while the receiver is down');
like($http->get("http://127.0.0.1:$metrics1/metrics")->{content},
	qr/^prepay_agent_notifications_retried_total\{channel="webhook"\} [1-9]/m, '(b) retries counted');
start_receiver();
ok(wait_for(sub { pending() eq '0' }, 20), '(b) everything delivered once the receiver is back');
$keys = accepted_keys('/hook');
my @ids = split /\n/, q1("SELECT notification_id FROM prepay.notification WHERE notification_id > $mark ORDER BY 1");
is(scalar(@ids), 5, '(b) five notifications');
is(scalar(grep { ($keys->{"prepay-1-$_-webhook"} // 0) == 1 } @ids), 5, '(b) each webhook key accepted once');
is(scalar(grep { $_->{dup} } @{ received() }), 0, '(b) none twice');

# ---------------------------------------------------------------------
# (c) the agent killed mid-delivery
# ---------------------------------------------------------------------
stop_receiver();
start_receiver('--delay', 3);
my $before = () = grep { $_->{event} eq 'begin' } map { decode_json($_) } split /\n/, slurp_file($hook_log);
$mark = mark_and_run(q{SELECT prepay.recharge(1, 2, 1, 'cash', 'C1')});
ok(wait_for(sub { (() = slurp_file($hook_log) =~ /"event": "begin"/g) > $before }, 10), '(c) a delivery is in flight');
$agents{d1}->signal('KILL');
$agents{d1}->finish;
is(q1("SELECT count(*) FROM prepay.notification_delivery WHERE notification_id > $mark AND delivered_at IS NULL"), '2',
	'(c) the agent died before reporting');
start_delivering_agent('d1', 'mailer', $metrics1);
ok(wait_for(sub { pending() eq '0' }, 30), '(c) the restarted agent delivers after the lease ran out');
$keys = accepted_keys('/hook');
my ($c_id) = q1("SELECT max(notification_id) FROM prepay.notification");
is($keys->{"prepay-1-$c_id-webhook"}, 1, '(c) accepted once (a second send was a duplicate of the same key)');

# ---------------------------------------------------------------------
# (d) a receiver answering 400 forever
# ---------------------------------------------------------------------
stop_receiver();
start_receiver('--status', 400);
$mark = mark_and_run(q{SELECT prepay.recharge(1, 2, 1, 'cash', 'D1')});
ok(wait_for(sub { q1("SELECT count(*) FROM prepay.notification_delivery_status WHERE notification_id > $mark AND state = 'dead'") eq '2' }, 10),
	'(d) dead-lettered');
is(q1("SELECT attempts || ' ' || last_status FROM prepay.notification_delivery WHERE notification_id > $mark AND channel = 'webhook'"),
	'1 400', '(d) after one attempt: 400 is permanent');
is(q1(q{SELECT count(*) FROM prepay.alarm WHERE kind = 'notification_dead' AND account_id = 2 AND cleared_at IS NULL}), '1',
	'(d) an alarm for the operator');
ok(wait_for(sub { $http->get("http://127.0.0.1:$metrics1/metrics")->{content} =~
	/^prepay_agent_notifications_dead_total\{channel="webhook"\} 1$/m }, 3), '(d) dead letter counted');

# ---------------------------------------------------------------------
# (e) two delivering agents
# ---------------------------------------------------------------------
stop_receiver();
unlink $hook_log;
start_receiver();
start_delivering_agent('d2', 'mailer-2', $metrics2);
sleep 1;
$mark = mark_and_run(q{SELECT prepay.recharge(1, 2, 1, 'cash', 'E' || i) FROM generate_series(1, 40) i});
ok(wait_for(sub { pending() eq '0' }, 30), '(e) 40 notifications delivered by two agents');
my @e = grep { $_->{path} eq '/hook' } @{ received() };
my %seen;
$seen{ $_->{key} }++ for @e;
is(scalar(keys %seen), 40, '(e) 40 webhook keys');
is(scalar(@e), 40, '(e) 40 requests: no message sent twice');
my $by = q1("SELECT string_agg(DISTINCT leased_by, ',' ORDER BY leased_by) FROM prepay.notification_delivery WHERE notification_id > $mark");
note("deliveries by agent: $by");

# ---------------------------------------------------------------------
# (f) an SMTP server refusing the recipient
# ---------------------------------------------------------------------
my $refuser = IPC::Run::start([ '/usr/bin/python3', '-c', q{
import sys, time
from aiosmtpd.controller import Controller
class Refuse:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return '550 5.1.1 no such mailbox'
Controller(Refuse(), hostname='127.0.0.1', port=int(sys.argv[1])).start()
print('listening', flush=True)
time.sleep(3600)
}, $refuse_port ], '>', "$tmp/refuse.out", '2>', "$tmp/refuse.err");
ok(wait_for(sub { -s "$tmp/refuse.out" }, 10), '(f) refusing SMTP server up');
q1(qq{UPDATE prepay.notify_channel SET url = 'smtp://127.0.0.1:$refuse_port' WHERE channel = 'email'});
$mark = mark_and_run(q{SELECT prepay.recharge(1, 1, 1, 'cash', 'F1')});
ok(wait_for(sub { q1("SELECT count(*) > 0 AND bool_and(state = 'dead') FROM prepay.notification_delivery_status WHERE notification_id > $mark AND channel = 'email'") eq 't' }, 10),
	'(f) the refused e-mails are dead-lettered');
is(q1("SELECT string_agg(DISTINCT attempts || ' ' || last_status, ',') FROM prepay.notification_delivery WHERE notification_id > $mark AND channel = 'email'"),
	'1 550', '(f) after one attempt each: a 5xx reply is permanent');
$refuser->signal('KILL');
$refuser->finish;

# ---------------------------------------------------------------------
# the end
# ---------------------------------------------------------------------
for my $name (sort keys %agents)
{
	$agents{$name}->signal('TERM');
	$agents{$name}->finish;
	is($agents{$name}->result(0), 0, "agent $name exits 0 on SIGTERM");
	unlike(slurp_file("$tmp/$name.err"), qr/Sanitizer|runtime error/, "agent $name: no sanitizer report");
}
$poller->signal('TERM');
$poller->finish;
stop_receiver();
$smtp->signal('TERM');
$smtp->finish;
$sim->signal('TERM');
$sim->finish;
is(q1('SELECT count(*) FROM prepay.check_ledger()'), '0', 'ledger check');
$node->stop;
done_testing();
