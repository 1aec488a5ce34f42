-- Notification delivery (sql/notify.sql): channels and secrets, texts per
-- language, deliveries written with each notification, the agent's claim
-- with a lease, success, backoff, permanent failure, dead letters with an
-- alarm, the rate limit, the events, and who may see the secrets.
\set logins regress_notify \set site 'Notify site' \set low 50 \set pretrip 10 \set tariff home \set price 1.0
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/site.psql
INSERT INTO prepay.meter (site_id, code) SELECT 1, 'N' || i FROM generate_series(1, 3) i;
SELECT prepay.open_account(1, 'A1', 'Flat 1', 1, p_phone => '+8613900000001', p_email => 'a1@example.com');
SELECT prepay.open_account(1, 'A2', 'Flat 2', 1, p_phone => '+8613900000002');
SELECT prepay.attach_meter(1, 1, 1, 0, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 2, 2, 0, '2026-03-01 00:00+00');

SELECT regress.create_logins('regress_notify', 'agent', 'admin', 'operator', 'reader', 'tenant');
CREATE ROLE regress_notify_agent2 LOGIN IN ROLE prepay_agent;
INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES
    (1, 'mailer', 'regress_notify_agent'), (1, 'mailer-2', 'regress_notify_agent2');
INSERT INTO prepay.site_access (site_id, grantee) VALUES
    (1, 'regress_notify_admin'), (1, 'regress_notify_operator'), (1, 'regress_notify_reader');
INSERT INTO prepay.tenant_access (site_id, account_id, grantee) VALUES (1, 1, 'regress_notify_tenant');

-- without notify_site and channels nothing changes: English text, no delivery
SELECT prepay.recharge(1, 1, 100, 'cash', 'C-1');
SELECT regress.use(1, '2026-03-01 01:00+00', 55);
SELECT kind, alarm_level, message FROM prepay.notification ORDER BY notification_id;
SELECT count(*) AS deliveries FROM prepay.notification_delivery;

-- channel rules: http only to the loopback, smtp without TLS only to it,
-- a sender for e-mail
SELECT regress.try($$INSERT INTO prepay.notify_channel (site_id, channel, url) VALUES (1, 'webhook', 'http://example.com/hook') RETURNING 1$$);
SELECT regress.try($$INSERT INTO prepay.notify_channel (site_id, channel, url, smtp_tls, mail_from) VALUES (1, 'email', 'smtp://mail.example.com:25', 'none', 'x@example.com') RETURNING 1$$);
SELECT regress.try($$INSERT INTO prepay.notify_channel (site_id, channel, url) VALUES (1, 'email', 'smtps://mail.example.com') RETURNING 1$$);
-- a channel's own CA is the PEM text, not a file name
SELECT regress.try($$INSERT INTO prepay.notify_channel (site_id, channel, url, ca_certificate) VALUES (1, 'webhook', 'https://127.0.0.1/hook', '/etc/ssl/private-ca.pem') RETURNING 1$$);

-- the site's channels, configured by its administrator; A1 reads Chinese
SET SESSION AUTHORIZATION regress_notify_admin;
INSERT INTO prepay.notify_site (site_id, language) VALUES (1, 'en');
INSERT INTO prepay.account_language (site_id, account_id, language) VALUES (1, 1, 'zh');
INSERT INTO prepay.notify_channel (site_id, channel, url, backoff_base, backoff_max, max_attempts)
VALUES (1, 'webhook', 'http://127.0.0.1:8080/hook', '10 seconds', '1 minute', 4);
INSERT INTO prepay.notify_channel (site_id, channel, url, smtp_tls, smtp_user, mail_from)
VALUES (1, 'email', 'smtp://127.0.0.1:2525', 'none', 'prepay', 'billing@example.com');
INSERT INTO prepay.notify_channel (site_id, channel, url, method, headers, body)
VALUES (1, 'sms', 'http://127.0.0.1:8081/sms?to={phone_url}', 'POST',
        '{"Authorization: Bearer {secret}","Content-Type: application/json"}',
        '{"to": {phone_json}, "text": {text_json}, "ref": "{key}"}');
INSERT INTO prepay.notify_secret (site_id, channel, secret) VALUES
    (1, 'webhook', 'hook-secret'), (1, 'email', 'smtp-password'), (1, 'sms', 'sms-token');
SELECT channel, secret FROM prepay.notify_secret ORDER BY channel;
RESET SESSION AUTHORIZATION;

-- the secrets: only the administrator reads them (and the agent through
-- its claim); nobody else, not even through the internal request function
SELECT regress.probe('regress_notify_operator', 'SELECT * FROM prepay.notify_secret') AS operator_reads_secret,
       regress.probe('regress_notify_reader', 'SELECT * FROM prepay.notify_secret') AS reader_reads_secret,
       regress.probe('regress_notify_tenant', 'SELECT * FROM prepay.notify_secret') AS tenant_reads_secret,
       regress.probe('regress_notify_agent', 'SELECT * FROM prepay.notify_secret') AS agent_reads_secret,
       regress.probe('regress_notify_reader', 'SELECT * FROM prepay._delivery_request(1, 1, ''webhook'')') AS reader_request,
       regress.probe('regress_notify_reader', $$SELECT * FROM prepay.agent_claim_deliveries('mailer')$$) AS reader_claims,
       regress.probe('regress_notify_operator', $$UPDATE prepay.notify_channel SET url = 'https://evil.example/' WHERE site_id = 1$$) AS operator_redirects,
       regress.probe('regress_notify_agent', $$SELECT * FROM prepay.agent_claim_deliveries('mailer-2')$$) AS agent_claims_as_other;
SELECT regress.probe('regress_notify_reader', 'SELECT count(*) FROM prepay.notify_channel') AS reader_reads_channels;
SELECT count(*) AS secrets_in_audit FROM prepay.audit_trail WHERE after_values::text LIKE '%secret%token%';

-- A1 falls through the ladder: each level in Chinese, A2's in English;
-- each notification is queued on every channel it has an address for
SELECT regress.use(1, '2026-03-01 02:00+00', 40);    -- 5: pre-trip
SELECT regress.use(1, '2026-03-01 03:00+00', 10);    -- -5: arrears
SELECT prepay.recharge(1, 2, 30, 'cash', 'C-2');
SELECT notification_id, account_id, kind, alarm_level, message FROM prepay.notification ORDER BY notification_id;
SELECT notification_id, channel, account_id, attempts, delivered_at IS NULL AS pending
  FROM prepay.notification_delivery ORDER BY notification_id, channel;

-- the agent claims: every due delivery once, with a lease
SET SESSION AUTHORIZATION regress_notify_agent;
CREATE TEMP TABLE claim1 AS SELECT * FROM prepay.agent_claim_deliveries('mailer');
RESET SESSION AUTHORIZATION;
SELECT notification_id, channel, attempt, idempotency_key, url, method, headers, secret, username, mail_from, mail_to, timeout_s
  FROM claim1 ORDER BY notification_id, channel;
SELECT DISTINCT ca_certificate IS NULL AS system_trust_store FROM claim1;
-- the webhook's JSON document
SELECT b->>'notification_id' AS id, b->>'idempotency_key' AS key, b->>'site' AS site, b->>'account' AS account,
       b->'meters' AS meters, b->>'kind' AS kind, b->>'level' AS level, b->>'balance' AS balance,
       b->>'currency' AS currency, b->>'message' AS message, (b->>'created_at')::timestamptz IS NOT NULL AS has_created,
       json_typeof(b->'bill_id') AS bill_id
  FROM (SELECT body::json AS b FROM claim1 WHERE channel = 'webhook') x ORDER BY 1::bigint;
-- the SMS request: the template filled, encoded per placeholder
SELECT notification_id, body FROM claim1 WHERE channel = 'sms' ORDER BY 1;
-- the e-mail: UTF-8 plain text, subject encoded, the key as Message-ID
SELECT notification_id, regexp_replace(body, 'Date: [^\r]*', 'Date: ...') AS message
  FROM claim1 WHERE channel = 'email' ORDER BY 1 LIMIT 1;
SELECT notification_id, convert_from(decode(substring(body from 'Subject: =\?UTF-8\?B\?([^?]*)\?='), 'base64'), 'UTF8') AS subject
  FROM claim1 WHERE channel = 'email' ORDER BY 1;
-- leased: nothing more for this agent or a second one
SELECT count(*) AS claimed_again FROM prepay.agent_claim_deliveries('mailer');
SELECT count(*) AS second_agent_claims FROM prepay.agent_claim_deliveries('mailer-2');
SELECT DISTINCT state FROM prepay.notification_delivery_status;

-- success: the delivery, then the notification once all its channels are
SELECT n AS n1 FROM (SELECT min(notification_id) AS n FROM claim1 WHERE channel = 'email') x \gset
SET SESSION AUTHORIZATION regress_notify_agent;
SELECT prepay.agent_delivery_done('mailer', 1, :n1, 'webhook', 1, 200);
SELECT prepay.agent_delivery_done('mailer', 1, :n1, 'webhook', 1, 200) AS twice;
SELECT prepay.agent_delivery_done('mailer', 1, :n1, 'sms', 1, 200);
RESET SESSION AUTHORIZATION;
SELECT delivered_at IS NOT NULL AS notification_delivered FROM prepay.notification WHERE notification_id = :n1;
SET SESSION AUTHORIZATION regress_notify_agent;
SELECT prepay.agent_delivery_done('mailer', 1, :n1, 'email', 1, 250);
RESET SESSION AUTHORIZATION;
SELECT delivered_at IS NOT NULL AS notification_delivered FROM prepay.notification WHERE notification_id = :n1;

-- errors: an unknown delivery, an agent of another site
SELECT regress.try(format($$SELECT prepay.agent_delivery_done('mailer', 1, 999999, 'webhook', 1, 200)$$));
SELECT regress.probe('regress_notify_agent', $$SELECT prepay.agent_delivery_done('mailer-2', 1, 1, 'webhook', 1, 200)$$, NULL, true);

-- a transient failure (503) backs off base x 2^(attempts-1) with jitter:
-- between half and all of it
SELECT n AS n2 FROM (SELECT min(notification_id) AS n FROM claim1 WHERE notification_id > :n1 AND channel = 'webhook') x \gset
SET SESSION AUTHORIZATION regress_notify_agent;
SELECT prepay.agent_delivery_failed('mailer', 1, :n2, 'webhook', 1, 'HTTP 503', 503);
RESET SESSION AUTHORIZATION;
SELECT attempts, last_status, last_error, lease_until IS NULL AS released,
       next_attempt_at - last_attempt_at BETWEEN '5 seconds' AND '10.1 seconds' AS backoff_1
  FROM prepay.notification_delivery WHERE notification_id = :n2 AND channel = 'webhook';
SELECT count(*) AS not_yet_due FROM prepay.agent_claim_deliveries('mailer') WHERE notification_id = :n2;
UPDATE prepay.notification_delivery SET next_attempt_at = now() - interval '1 second' WHERE notification_id = :n2 AND channel = 'webhook';
SELECT attempt FROM prepay.agent_claim_deliveries('mailer') WHERE notification_id = :n2;
-- a report of the first attempt is stale now
SELECT prepay.agent_delivery_failed('mailer', 1, :n2, 'webhook', 1, 'late report', 503) AS stale;
-- 429 and 408 are transient too; the delay doubles (and is capped at backoff_max)
SELECT prepay.agent_delivery_failed('mailer', 1, :n2, 'webhook', 2, 'HTTP 429', 429);
SELECT next_attempt_at - last_attempt_at BETWEEN '10 seconds' AND '20.1 seconds' AS backoff_2
  FROM prepay.notification_delivery WHERE notification_id = :n2 AND channel = 'webhook';
UPDATE prepay.notification_delivery SET next_attempt_at = now() - interval '1 second' WHERE notification_id = :n2 AND channel = 'webhook';
SELECT attempt FROM prepay.agent_claim_deliveries('mailer') WHERE notification_id = :n2;
SELECT prepay.agent_delivery_failed('mailer', 1, :n2, 'webhook', 3, 'timeout', 408);
SELECT next_attempt_at - last_attempt_at BETWEEN '20 seconds' AND '40.1 seconds' AS backoff_3
  FROM prepay.notification_delivery WHERE notification_id = :n2 AND channel = 'webhook';
-- the fourth attempt is the last (max_attempts 4): a transport error dead-letters it
UPDATE prepay.notification_delivery SET next_attempt_at = now() - interval '1 second' WHERE notification_id = :n2 AND channel = 'webhook';
SELECT attempt FROM prepay.agent_claim_deliveries('mailer') WHERE notification_id = :n2;
SELECT prepay.agent_delivery_failed('mailer', 1, :n2, 'webhook', 4, 'connection refused', NULL);
SELECT channel, state, attempts, last_error FROM prepay.notification_delivery_status WHERE notification_id = :n2 AND channel = 'webhook';
SELECT kind, account_id, detail FROM prepay.alarm WHERE kind = 'notification_dead' AND cleared_at IS NULL;

-- permanent failures stop at once: HTTP 400 (sms), SMTP 550 (email)
SELECT prepay._delivery_permanent('webhook', 400) AS p400, prepay._delivery_permanent('webhook', 404) AS p404,
       prepay._delivery_permanent('webhook', 408) AS p408, prepay._delivery_permanent('sms', 429) AS p429,
       prepay._delivery_permanent('webhook', 500) AS p500, prepay._delivery_permanent('email', 450) AS p450,
       prepay._delivery_permanent('email', 550) AS p550, prepay._delivery_permanent('sms', NULL) AS transport;
SELECT prepay.agent_delivery_failed('mailer', 1, :n2, 'sms', 1, 'HTTP 400 bad number', 400);
SELECT prepay.agent_delivery_failed('mailer', 1, :n2, 'email', 1, '550 mailbox unavailable', 550);
SELECT channel, state, attempts, last_status, last_error FROM prepay.notification_delivery_status WHERE notification_id = :n2 ORDER BY channel;
-- a late success after a dead letter is still recorded: the message arrived
SELECT prepay.agent_delivery_done('mailer', 1, :n2, 'sms', 1, 200);
SELECT channel, state FROM prepay.notification_delivery_status WHERE notification_id = :n2 ORDER BY channel;

-- an agent dies mid-delivery: when its lease runs out another agent
-- claims the delivery again (same key); the dead agent's report is stale
SELECT n AS n3 FROM (SELECT min(notification_id) AS n FROM claim1 WHERE notification_id > :n2 AND channel = 'webhook') x \gset
SELECT count(*) AS still_leased FROM prepay.agent_claim_deliveries('mailer-2') WHERE notification_id = :n3;
UPDATE prepay.notification_delivery SET lease_until = now() - interval '1 second' WHERE notification_id = :n3;
SET SESSION AUTHORIZATION regress_notify_agent2;
SELECT channel, attempt, idempotency_key FROM prepay.agent_claim_deliveries('mailer-2') WHERE notification_id = :n3 ORDER BY channel;
RESET SESSION AUTHORIZATION;
SELECT prepay.agent_delivery_failed('mailer', 1, :n3, 'webhook', 1, 'killed', NULL) AS dead_agent_report;
SELECT channel, leased_by, attempts FROM prepay.notification_delivery WHERE notification_id = :n3 ORDER BY channel;
-- never reported, lease out, no attempt left: dead at the next claim
UPDATE prepay.notification_delivery SET lease_until = now() - interval '1 second', attempts = 4
 WHERE notification_id = :n3 AND channel = 'webhook';
SELECT count(*) AS claimed FROM prepay.agent_claim_deliveries('mailer') WHERE notification_id = :n3 AND channel = 'webhook';
SELECT state, last_error FROM prepay.notification_delivery_status WHERE notification_id = :n3 AND channel = 'webhook';

-- too old (max_age): dead at the next claim, whatever the attempts
SELECT n AS n4 FROM (SELECT max(notification_id) AS n FROM claim1) x \gset
UPDATE prepay.notification SET created_at = now() - interval '3 days' WHERE notification_id = :n4;
UPDATE prepay.notification_delivery SET lease_until = NULL, created_at = now() - interval '3 days' WHERE notification_id = :n4;
SELECT count(*) AS claimed FROM prepay.agent_claim_deliveries('mailer') WHERE notification_id = :n4;
SELECT channel, state, last_error FROM prepay.notification_delivery_status WHERE notification_id = :n4 ORDER BY channel;

-- the rate limit: at most max_per_minute attempts per channel and minute
UPDATE prepay.notify_channel SET max_per_minute = 3 WHERE channel = 'sms';
UPDATE prepay.notification_delivery SET last_attempt_at = now() - interval '2 minutes';
SELECT count(*) AS sms_before FROM prepay.notification_delivery WHERE channel = 'sms' AND delivered_at IS NULL AND dead_at IS NULL;
SELECT prepay.recharge(1, 2, 1, 'cash', 'C-' || i) FROM generate_series(3, 7) i \g /dev/null
SELECT channel, count(*) AS claimed FROM prepay.agent_claim_deliveries('mailer') GROUP BY channel ORDER BY channel;
SELECT channel, count(*) AS claimed_later FROM prepay.agent_claim_deliveries('mailer') GROUP BY channel ORDER BY channel;

-- the events: payment received (with the new balance), supply restored
-- (a close command done), bill issued; each written in the tenant's language
SELECT prepay.recharge(1, 1, 20, 'cash', 'C-20');
SELECT command_id AS c FROM prepay.command WHERE site_id = 1 AND action = 'close' AND state = 'queued' \gset
UPDATE prepay.command SET state = 'sent' WHERE command_id = :c;
SELECT prepay.agent_command_done(1, :c, 'closed');
UPDATE prepay.notify_site SET language = 'zh' WHERE site_id = 1;
DELETE FROM prepay.account_language WHERE account_id = 1;
INSERT INTO prepay.account_language (site_id, account_id, language) VALUES (1, 2, 'en');
SELECT prepay.recharge(1, 1, 1.50, 'wechat', 'W-1');
SELECT kind, account_id, alarm_level, balance, message FROM prepay.notification
 WHERE kind IN ('payment_received', 'supply_restored', 'bill_issued') AND account_id = 1 ORDER BY notification_id;
-- a bill issued to a postpaid account, in the site's language (zh now)
SELECT prepay.open_account(1, 'P3', 'Office 3', 1, 'postpaid', p_email => 'p3@example.com') AS p3 \gset
SELECT prepay.attach_meter(1, :p3, 3, 0, '2026-03-01 00:00+00');
SELECT regress.use(3, '2026-03-10 00:00+00', 123.4);
SELECT (prepay.draft_bill(1, :p3, '2026-03-01', '2026-04-01')).bill_id AS b \gset
SELECT state FROM prepay.confirm_bill(1, :b);
SELECT state, amount_due, due_on IS NOT NULL AS has_due FROM prepay.issue_bill(1, :b);
SELECT kind, bill_id = :b AS about_the_bill, regexp_replace(message, '\d{4}-\d{2}-\d{2}', 'YYYY-MM-DD') AS message FROM prepay.notification WHERE kind = 'bill_issued';
-- events switched off write nothing
UPDATE prepay.notify_site SET payment_received = false;
SELECT count(*) AS before FROM prepay.notification \gset
SELECT prepay.recharge(1, 1, 1, 'cash', 'C-off');
SELECT count(*) - :before AS written FROM prepay.notification;

-- a site's own template replaces the built-in one
INSERT INTO prepay.notify_template (site_id, template, language, subject, body)
VALUES (1, 'pretrip', 'zh', '即将停电', '【物业】{name}（{account}）余额{balance}，即将停电，请充值。');
SELECT regress.use(1, '2026-03-02 01:00+00', 10);
SELECT account_id, kind, alarm_level, message FROM prepay.notification ORDER BY notification_id DESC LIMIT 1;
SELECT subject, body FROM prepay._notify_text(1, 'low_balance', 'en', '{"account": "A9", "balance": "1.00 CNY"}');
SELECT prepay._notify_money(-3.5, 'CNY', 'zh') AS zh, prepay._notify_money(12, 'EUR', 'en') AS en,
       prepay._url_encode('a b+c/中') AS encoded;

-- a tenant sees the deliveries of its own notifications only
SELECT regress.seen('regress_notify_tenant', 'SELECT count(DISTINCT account_id) FROM prepay.notification_delivery_status') AS tenant_accounts;

SELECT * FROM prepay.check_ledger();
