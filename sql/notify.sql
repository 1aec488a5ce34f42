/*-------------------------------------------------------------------------
 * sql/notify.sql
 *     Delivery of the notification outbox (prepay.notification) by webhook,
 *     e-mail and SMS: the per-site channels and their secrets, the text
 *     templates per site and language, the events that write notifications
 *     besides the balance ladder and the cut reminders (payment received,
 *     supply restored, bill issued), and the delivery state machine a
 *     delivering prepay-agent drives.  Appended after reports.sql and
 *     before security.sql into prepay--<version>.sql.
 *
 * Vocabulary
 *     channel     webhook, email or sms; configured per site in
 *                 prepay.notify_channel, its secret in prepay.notify_secret
 *                 (readable by prepay_admin, handed to the agent only by
 *                 prepay.agent_claim_deliveries).
 *     delivery    one notification on one channel (prepay.notification_delivery),
 *                 written by a trigger when the notification is written.
 *     lease       a claimed delivery belongs to the claiming agent until
 *                 lease_until; an agent that dies mid-delivery loses it and
 *                 another claim sends it again with the same idempotency key.
 *
 * Delivery life (see docs/AGENT.md):
 *     pending --agent_claim_deliveries--> leased --agent_delivery_done--> delivered
 *                                            |--agent_delivery_failed--> pending (backoff) or dead
 *                                            +--lease expires----------> pending (claimed again)
 *     dead: a permanent failure, max_attempts reached or max_age passed;
 *     raises an alarm of kind notification_dead for the account.
 *
 * Errors raised here use SQLSTATEs PY5xx (docs/API.md).
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- configuration: channels, secrets, site settings, languages, templates
-- ---------------------------------------------------------------------

CREATE TABLE prepay.notify_site (
    site_id           integer PRIMARY KEY REFERENCES prepay.site,
    language          text NOT NULL DEFAULT 'en' CHECK (language IN ('zh', 'en')),
    payment_received  boolean NOT NULL DEFAULT true,
    supply_restored   boolean NOT NULL DEFAULT true,
    bill_issued       boolean NOT NULL DEFAULT true,
    bill_overdue      boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE prepay.notify_site IS 'A site''s notification settings.  With a row here the site''s notifications are written from its templates in the tenant''s language (prepay.notify_template), and the events switched on below write notifications too; without one, notifications keep the built-in English text.';
COMMENT ON COLUMN prepay.notify_site.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notify_site.language IS 'Default language of the site''s messages (zh or en); prepay.account_language overrides it per account.';
COMMENT ON COLUMN prepay.notify_site.payment_received IS 'Write a payment_received notification (with the new balance) for every recharge.';
COMMENT ON COLUMN prepay.notify_site.supply_restored IS 'Write a supply_restored notification when a close command of an account''s meter is done.';
COMMENT ON COLUMN prepay.notify_site.bill_issued IS 'Write a bill_issued notification when a bill is issued.';
COMMENT ON COLUMN prepay.notify_site.bill_overdue IS 'Write one bill_overdue notification for every issued bill still unpaid after its due date (prepay.send_overdue_notices, run by prepay.run_periodic).';

CREATE TABLE prepay.account_language (
    site_id     integer NOT NULL,
    account_id  bigint NOT NULL,
    language    text NOT NULL CHECK (language IN ('zh', 'en')),
    PRIMARY KEY (site_id, account_id),
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account ON DELETE CASCADE
);
COMMENT ON TABLE prepay.account_language IS 'The language a tenant is written to in, when it is not the site''s (prepay.notify_site.language).';
COMMENT ON COLUMN prepay.account_language.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.account_language.account_id IS 'Account.';
COMMENT ON COLUMN prepay.account_language.language IS 'zh or en.';

CREATE TABLE prepay.notify_channel (
    site_id         integer NOT NULL REFERENCES prepay.site,
    channel         text NOT NULL CHECK (channel IN ('webhook', 'email', 'sms')),
    enabled         boolean NOT NULL DEFAULT true,
    url             text NOT NULL,
    method          text NOT NULL DEFAULT 'POST' CHECK (method IN ('GET', 'POST', 'PUT')),
    headers         text[] NOT NULL DEFAULT '{}',
    body            text,
    smtp_tls        text NOT NULL DEFAULT 'starttls' CHECK (smtp_tls IN ('starttls', 'implicit', 'none')),
    smtp_user       text,
    mail_from       text,
    max_per_minute  integer NOT NULL DEFAULT 60 CHECK (max_per_minute > 0),
    max_attempts    integer NOT NULL DEFAULT 12 CHECK (max_attempts BETWEEN 1 AND 100),
    max_age         interval NOT NULL DEFAULT '2 days' CHECK (max_age > '0'),
    backoff_base    interval NOT NULL DEFAULT '10 seconds' CHECK (backoff_base > '0'),
    backoff_max     interval NOT NULL DEFAULT '1 hour' CHECK (backoff_max >= backoff_base),
    lease           interval NOT NULL DEFAULT '60 seconds' CHECK (lease BETWEEN '5 seconds' AND '1 hour'),
    ca_certificate  text CHECK (ca_certificate ~ '^\s*-----BEGIN CERTIFICATE-----'),
    PRIMARY KEY (site_id, channel),
    -- plain http and unencrypted SMTP only to this host (tests, a local relay)
    CHECK (channel = 'email' OR url ~ '^https://' OR url ~ '^http://(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?(/|$)'),
    CHECK (channel <> 'email' OR url ~ '^smtps?://[^/]+/?$'),
    CHECK (channel <> 'email' OR smtp_tls <> 'none' OR url ~ '^smtp://(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?/?$'),
    CHECK (channel <> 'email' OR mail_from IS NOT NULL),
    CHECK (channel <> 'sms' OR body IS NOT NULL OR method = 'GET')
);
COMMENT ON TABLE prepay.notify_channel IS 'How a site''s notifications leave: one row per channel (webhook, email, sms).  A notification gets one delivery per enabled channel it has an address for (webhook always, email when it has an e-mail address, sms when it has a phone).  Secrets are in prepay.notify_secret.  Plain http:// and unencrypted SMTP are accepted only to the loopback host.';
COMMENT ON COLUMN prepay.notify_channel.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notify_channel.channel IS 'webhook, email or sms.';
COMMENT ON COLUMN prepay.notify_channel.enabled IS 'false: no new deliveries are written and pending ones are not claimed (they wait).';
COMMENT ON COLUMN prepay.notify_channel.url IS 'webhook: the https:// URL POSTed to; email: the SMTP server, smtp://host:port (STARTTLS or none) or smtps://host:port (implicit TLS); sms: the provider''s request URL, a template (placeholders as in body).';
COMMENT ON COLUMN prepay.notify_channel.method IS 'sms: the HTTP method of the provider request (GET, POST, PUT); webhook: always POST.';
COMMENT ON COLUMN prepay.notify_channel.headers IS 'sms: request headers, "Name: value" templates (placeholders as in body); webhook: extra headers sent as they are.';
COMMENT ON COLUMN prepay.notify_channel.body IS 'sms: the request body template.  Placeholders: {phone}, {text}, {key} (idempotency key), {secret} (prepay.notify_secret), and {phone_url}, {text_url} (percent-encoded), {phone_json}, {text_json} (JSON strings with their quotes).';
COMMENT ON COLUMN prepay.notify_channel.smtp_tls IS 'email: starttls (smtp://, TLS required), implicit (smtps://) or none (loopback only).';
COMMENT ON COLUMN prepay.notify_channel.smtp_user IS 'email: SMTP login; NULL for no authentication.  The password is prepay.notify_secret.secret.';
COMMENT ON COLUMN prepay.notify_channel.mail_from IS 'email: the sender address.';
COMMENT ON COLUMN prepay.notify_channel.max_per_minute IS 'Rate limit: at most this many attempts per minute on this channel of this site; the rest wait for the next claim.';
COMMENT ON COLUMN prepay.notify_channel.max_attempts IS 'A delivery is dead-lettered when this attempt fails.';
COMMENT ON COLUMN prepay.notify_channel.max_age IS 'A delivery still undelivered this long after it was written (with its notification) is dead-lettered.';
COMMENT ON COLUMN prepay.notify_channel.backoff_base IS 'Retry delay after the first failed attempt; it doubles with each attempt, with jitter (between half and all of it).';
COMMENT ON COLUMN prepay.notify_channel.backoff_max IS 'Longest retry delay.';
COMMENT ON COLUMN prepay.notify_channel.ca_certificate IS 'webhook, sms, email over TLS: the certificate authorities (PEM, one or more BEGIN CERTIFICATE blocks) the server''s certificate must chain to, instead of the system''s trust store; for a receiver or SMTP server with a certificate of a private CA.  NULL: the system''s trust store.  The certificate and host name are always verified.';
COMMENT ON COLUMN prepay.notify_channel.lease IS 'How long a claimed delivery belongs to the claiming agent; the agent gives up a request after half of it.  Unreported at the end, it is claimed again.';

CREATE TABLE prepay.notify_secret (
    site_id  integer NOT NULL,
    channel  text NOT NULL,
    secret   text NOT NULL,
    PRIMARY KEY (site_id, channel),
    FOREIGN KEY (site_id, channel) REFERENCES prepay.notify_channel ON DELETE CASCADE
);
COMMENT ON TABLE prepay.notify_secret IS 'The secret of a channel: readable and writable by prepay_admin only; the delivering agent receives it from prepay.agent_claim_deliveries.  Not in the audit trail (which readers see); changes are not audited.';
COMMENT ON COLUMN prepay.notify_secret.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notify_secret.channel IS 'Channel the secret belongs to.';
COMMENT ON COLUMN prepay.notify_secret.secret IS 'webhook: the HMAC-SHA256 key of the signature header; email: the SMTP password; sms: the value of the {secret} placeholder (an API key or token).';

CREATE TABLE prepay.notify_template (
    site_id   integer NOT NULL REFERENCES prepay.site,
    template  text NOT NULL CHECK (template IN ('balance_ok', 'low_balance', 'pretrip', 'arrears', 'cut_reminder',
                                                'supply_restored', 'payment_received', 'bill_issued', 'bill_overdue')),
    language  text NOT NULL CHECK (language IN ('zh', 'en')),
    subject   text NOT NULL,
    body      text NOT NULL,
    PRIMARY KEY (site_id, template, language)
);
COMMENT ON TABLE prepay.notify_template IS 'A site''s own wording of a message, replacing the built-in one (prepay._notify_default_template).  Placeholders: {site}, {account}, {name}, {balance}, {amount}, {cut_at}, {due_on}, {days_overdue} (amounts in the site''s currency).';
COMMENT ON COLUMN prepay.notify_template.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notify_template.template IS 'Which message: balance_ok, low_balance, pretrip, arrears (the alarm ladder), cut_reminder, supply_restored, payment_received, bill_issued, bill_overdue.';
COMMENT ON COLUMN prepay.notify_template.language IS 'zh or en.';
COMMENT ON COLUMN prepay.notify_template.subject IS 'E-mail subject.';
COMMENT ON COLUMN prepay.notify_template.body IS 'Message text (SMS, e-mail body, webhook message).';

-- ---------------------------------------------------------------------
-- deliveries
-- ---------------------------------------------------------------------

CREATE TABLE prepay.notification_delivery (
    site_id          integer NOT NULL,
    notification_id  bigint NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('webhook', 'email', 'sms')),
    account_id       bigint NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lease_until      timestamptz,
    leased_by        text,
    last_attempt_at  timestamptz,
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    delivered_at     timestamptz,
    dead_at          timestamptz,
    PRIMARY KEY (site_id, notification_id, channel),
    FOREIGN KEY (site_id, notification_id) REFERENCES prepay.notification ON DELETE CASCADE,
    CHECK (delivered_at IS NULL OR dead_at IS NULL)
);
CREATE INDEX notification_delivery_due ON prepay.notification_delivery (site_id, channel, next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX notification_delivery_recent ON prepay.notification_delivery (site_id, channel, last_attempt_at);
COMMENT ON INDEX prepay.notification_delivery_due IS 'Deliveries still to make, per channel, by when they are due.';
COMMENT ON INDEX prepay.notification_delivery_recent IS 'The attempts of the last minute per channel (the rate limit).';
COMMENT ON TABLE prepay.notification_delivery IS 'One notification on one channel, and how its delivery went.  Written by a trigger with the notification; changed only by the agent functions (agent_claim_deliveries, agent_delivery_done, agent_delivery_failed).  Read it through prepay.notification_delivery_status.';
COMMENT ON COLUMN prepay.notification_delivery.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notification_delivery.notification_id IS 'The notification delivered.';
COMMENT ON COLUMN prepay.notification_delivery.channel IS 'webhook, email or sms.';
COMMENT ON COLUMN prepay.notification_delivery.account_id IS 'The notification''s account (so that a tenant sees the deliveries of its notifications).';
COMMENT ON COLUMN prepay.notification_delivery.attempts IS 'Attempts so far (a claim is an attempt).';
COMMENT ON COLUMN prepay.notification_delivery.next_attempt_at IS 'Not claimed before this time (the backoff after a failure).';
COMMENT ON COLUMN prepay.notification_delivery.lease_until IS 'While in the future, the delivery belongs to leased_by.';
COMMENT ON COLUMN prepay.notification_delivery.leased_by IS 'Agent id of the last claim.';
COMMENT ON COLUMN prepay.notification_delivery.last_attempt_at IS 'When it was last claimed.';
COMMENT ON COLUMN prepay.notification_delivery.last_status IS 'HTTP status or SMTP reply code of the last attempt; NULL for a transport error (no answer).';
COMMENT ON COLUMN prepay.notification_delivery.last_error IS 'Error of the last failed attempt.';
COMMENT ON COLUMN prepay.notification_delivery.created_at IS 'When the delivery was written (with its notification).';
COMMENT ON COLUMN prepay.notification_delivery.delivered_at IS 'When the receiver accepted it; NULL until then.';
COMMENT ON COLUMN prepay.notification_delivery.dead_at IS 'When it was given up (dead letter); an alarm notification_dead was raised.';

CREATE VIEW prepay.notification_delivery_status AS
SELECT d.site_id, d.notification_id, d.channel, d.account_id, n.kind, n.alarm_level,
       CASE WHEN d.delivered_at IS NOT NULL THEN 'delivered'
            WHEN d.dead_at IS NOT NULL THEN 'dead'
            WHEN d.lease_until > pg_catalog.now() THEN 'in_flight'
            ELSE 'pending' END AS state,
       d.attempts, d.last_attempt_at, d.next_attempt_at, d.last_status, d.last_error,
       n.created_at, d.delivered_at, d.dead_at, d.delivered_at - n.created_at AS latency
  FROM prepay.notification_delivery d
  JOIN prepay.notification n ON n.site_id = d.site_id AND n.notification_id = d.notification_id;
COMMENT ON VIEW prepay.notification_delivery_status IS 'Per notification and channel: state (pending, in_flight, delivered, dead), attempts, last error, delivered time and latency.';
COMMENT ON COLUMN prepay.notification_delivery_status.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notification_delivery_status.notification_id IS 'Notification.';
COMMENT ON COLUMN prepay.notification_delivery_status.channel IS 'webhook, email or sms.';
COMMENT ON COLUMN prepay.notification_delivery_status.account_id IS 'Account notified.';
COMMENT ON COLUMN prepay.notification_delivery_status.kind IS 'The notification''s kind.';
COMMENT ON COLUMN prepay.notification_delivery_status.alarm_level IS 'The notification''s alarm level.';
COMMENT ON COLUMN prepay.notification_delivery_status.state IS 'pending (due at next_attempt_at), in_flight (leased to an agent), delivered or dead.';
COMMENT ON COLUMN prepay.notification_delivery_status.attempts IS 'Attempts so far.';
COMMENT ON COLUMN prepay.notification_delivery_status.last_attempt_at IS 'When it was last claimed.';
COMMENT ON COLUMN prepay.notification_delivery_status.next_attempt_at IS 'When it is due again.';
COMMENT ON COLUMN prepay.notification_delivery_status.last_status IS 'HTTP status or SMTP code of the last attempt.';
COMMENT ON COLUMN prepay.notification_delivery_status.last_error IS 'Error of the last failed attempt.';
COMMENT ON COLUMN prepay.notification_delivery_status.created_at IS 'When the notification was written.';
COMMENT ON COLUMN prepay.notification_delivery_status.delivered_at IS 'When it was delivered.';
COMMENT ON COLUMN prepay.notification_delivery_status.dead_at IS 'When it was given up.';
COMMENT ON COLUMN prepay.notification_delivery_status.latency IS 'delivered_at - created_at.';

-- ---------------------------------------------------------------------
-- the bill a notification is about (bill_issued, bill_overdue)
-- ---------------------------------------------------------------------

ALTER TABLE prepay.notification ADD COLUMN bill_id bigint;
COMMENT ON COLUMN prepay.notification.bill_id IS 'The bill the notification is about (kinds bill_issued and bill_overdue); NULL for the others.';
CREATE UNIQUE INDEX notification_bill_overdue ON prepay.notification (site_id, bill_id) WHERE kind = 'bill_overdue';
COMMENT ON INDEX prepay.notification_bill_overdue IS 'At most one overdue notice per bill, whoever writes it and however often prepay.send_overdue_notices runs.';

-- ---------------------------------------------------------------------
-- texts
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._notify_default_template(p_template text, p_language text,
                                               OUT subject text, OUT body text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.subject, t.body FROM (VALUES
        ('balance_ok', 'en', 'Balance restored', 'Account {account}: balance is {balance}, thank you.'),
        ('balance_ok', 'zh', '余额已恢复', '账户{account}：当前余额{balance}，谢谢。'),
        ('low_balance', 'en', 'Low balance', 'Account {account}: balance is low ({balance}). Please recharge.'),
        ('low_balance', 'zh', '余额不足', '账户{account}：余额不足（{balance}），请及时充值。'),
        ('pretrip', 'en', 'Supply will be cut soon', 'Account {account}: balance {balance}; supply will be cut soon. Please recharge now.'),
        ('pretrip', 'zh', '即将停电', '账户{account}：余额{balance}，即将停止供电，请立即充值。'),
        ('arrears', 'en', 'Account in arrears', 'Account {account} is in arrears ({balance}). Supply is restored automatically when you recharge.'),
        ('arrears', 'zh', '账户已欠费', '账户{account}已欠费（{balance}），充值后自动恢复供电。'),
        ('cut_reminder', 'en', 'Supply cut reminder', 'Account {account}: supply will be cut at about {cut_at} (balance {balance}). Please recharge now.'),
        ('cut_reminder', 'zh', '停电提醒', '账户{account}：预计{cut_at}停止供电（余额{balance}），请立即充值。'),
        ('supply_restored', 'en', 'Supply restored', 'Account {account}: supply is restored (balance {balance}).'),
        ('supply_restored', 'zh', '已恢复供电', '账户{account}：已恢复供电（余额{balance}）。'),
        ('payment_received', 'en', 'Payment received', 'Account {account}: payment of {amount} received, new balance {balance}.'),
        ('payment_received', 'zh', '充值成功', '账户{account}：充值{amount}已到账，当前余额{balance}。'),
        ('bill_issued', 'en', 'New bill', 'Account {account}: your bill of {amount} is due on {due_on}.'),
        ('bill_issued', 'zh', '账单通知', '账户{account}：本期账单{amount}，请于{due_on}前缴纳。'),
        ('bill_overdue', 'en', 'Bill overdue', 'Account {account}: your bill was due on {due_on}; {amount} is still unpaid ({days_overdue} days overdue). Please pay now.'),
        ('bill_overdue', 'zh', '账单逾期', '账户{account}：账单已于{due_on}到期，尚欠{amount}（逾期{days_overdue}天），请尽快缴纳。'))
        AS t (template, language, subject, body)
     WHERE t.template = p_template AND t.language = p_language
$$;
COMMENT ON FUNCTION prepay._notify_default_template(text, text) IS
'The built-in subject and text of a message in a language (zh, en), used when the site has no prepay.notify_template row for it.';

CREATE FUNCTION prepay._notify_money(p_amount numeric, p_currency text, p_language text)
RETURNS text LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_amount IS NULL THEN ''
                WHEN p_language = 'zh' AND p_currency = 'CNY' THEN pg_catalog.round(p_amount, 2)::text || '元'
                ELSE pg_catalog.round(p_amount, 2)::text || ' ' || p_currency END
$$;
COMMENT ON FUNCTION prepay._notify_money(numeric, text, text) IS
'An amount as a message shows it: two decimals and the currency (12.50 CNY; in Chinese 12.50元 for CNY).  Exact: no floating point.';

CREATE FUNCTION prepay._notify_language(p_site_id integer, p_account_id bigint)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT coalesce((SELECT l.language FROM prepay.account_language l
                      WHERE l.site_id = p_site_id AND l.account_id = p_account_id),
                    (SELECT s.language FROM prepay.notify_site s WHERE s.site_id = p_site_id), 'en'));
END $$;
COMMENT ON FUNCTION prepay._notify_language(integer, bigint) IS 'The language an account is written to in: prepay.account_language, else the site''s, else en.';

CREATE FUNCTION prepay._notify_text(p_site_id integer, p_template text, p_language text, p_values jsonb,
                                   OUT subject text, OUT body text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
    v text;
BEGIN
    SELECT t.subject, t.body INTO subject, body FROM prepay.notify_template t
     WHERE t.site_id = p_site_id AND t.template = p_template AND t.language = p_language;
    IF NOT FOUND THEN
        SELECT d.subject, d.body INTO subject, body FROM prepay._notify_default_template(p_template, p_language) d;
    END IF;
    FOR k, v IN SELECT e.key, e.value FROM pg_catalog.jsonb_each_text(p_values) e LOOP
        subject := pg_catalog.replace(subject, '{' || k || '}', coalesce(v, ''));
        body := pg_catalog.replace(body, '{' || k || '}', coalesce(v, ''));
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay._notify_text(integer, text, text, jsonb) IS
'A message of a site in a language: its template (the site''s, else the built-in one) with each {key} of p_values replaced by its value.';

CREATE FUNCTION prepay._notify_values(p_site_id integer, p_account_id bigint, p_language text, p_balance numeric,
                                      p_amount numeric DEFAULT NULL, p_extra jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT pg_catalog.jsonb_build_object(
               'site', s.name, 'account', a.code, 'name', a.name,
               'balance', prepay._notify_money(p_balance, s.currency, p_language),
               'amount', prepay._notify_money(p_amount, s.currency, p_language)) || p_extra
      FROM prepay.site s JOIN prepay.account a ON a.site_id = s.site_id
     WHERE s.site_id = p_site_id AND a.account_id = p_account_id);
END $$;
COMMENT ON FUNCTION prepay._notify_values(integer, bigint, text, numeric, numeric, jsonb) IS
'Internal: the placeholder values of a message to an account (site, account, name, balance, amount in the site''s currency) plus p_extra.';

CREATE FUNCTION prepay._notify_template_of(p_kind text, p_alarm_level smallint)
RETURNS text LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_kind = 'alarm_level'
                THEN (ARRAY['balance_ok', 'low_balance', 'pretrip', 'arrears'])[p_alarm_level + 1]
                ELSE p_kind END
$$;
COMMENT ON FUNCTION prepay._notify_template_of(text, smallint) IS 'Internal: the template of a notification: the alarm level''s for kind alarm_level, else the kind.';

-- ---------------------------------------------------------------------
-- notifications: written in the tenant's language, one delivery per channel
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._notification_text() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lang text;
    extra jsonb := '{}';
    t record;
BEGIN
    IF NEW.kind NOT IN ('alarm_level', 'cut_reminder')
       OR NOT EXISTS (SELECT 1 FROM prepay.notify_site s WHERE s.site_id = NEW.site_id) THEN
        RETURN NEW;
    END IF;
    lang := prepay._notify_language(NEW.site_id, NEW.account_id);
    IF NEW.kind = 'cut_reminder' THEN
        SELECT pg_catalog.jsonb_build_object('cut_at', pg_catalog.to_char(r.predicted_cut AT TIME ZONE s.time_zone,
                                                                          'YYYY-MM-DD HH24:MI'))
          INTO extra
          FROM prepay.cut_reminder r JOIN prepay.site s ON s.site_id = r.site_id
         WHERE r.site_id = NEW.site_id AND r.notification_id = NEW.notification_id;
    END IF;
    SELECT * INTO t FROM prepay._notify_text(NEW.site_id, prepay._notify_template_of(NEW.kind, NEW.alarm_level), lang,
        prepay._notify_values(NEW.site_id, NEW.account_id, lang, NEW.balance, NULL, coalesce(extra, '{}')));
    NEW.message := coalesce(t.body, NEW.message);
    RETURN NEW;
END $$;
COMMENT ON FUNCTION prepay._notification_text() IS
'Internal: BEFORE INSERT trigger on prepay.notification: at a site with prepay.notify_site, the text of an alarm level or cut reminder notification is the site''s template in the tenant''s language.';
CREATE TRIGGER notification_text BEFORE INSERT ON prepay.notification
    FOR EACH ROW EXECUTE FUNCTION prepay._notification_text();
COMMENT ON TRIGGER notification_text ON prepay.notification IS 'Writes the message from the site''s templates in the tenant''s language (sites with prepay.notify_site only).';

CREATE FUNCTION prepay._notification_deliveries() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO prepay.notification_delivery (site_id, notification_id, channel, account_id)
    SELECT NEW.site_id, NEW.notification_id, c.channel, NEW.account_id
      FROM prepay.notify_channel c
     WHERE c.site_id = NEW.site_id AND c.enabled
       AND (c.channel = 'webhook' OR c.channel = 'email' AND NEW.email IS NOT NULL AND NEW.email <> ''
            OR c.channel = 'sms' AND NEW.phone IS NOT NULL AND NEW.phone <> '');
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._notification_deliveries() IS
'Internal: AFTER INSERT trigger on prepay.notification: one delivery per enabled channel of the site the notification has an address for (webhook always; email with an e-mail address; sms with a phone).';
CREATE TRIGGER notification_deliveries AFTER INSERT ON prepay.notification
    FOR EACH ROW EXECUTE FUNCTION prepay._notification_deliveries();
COMMENT ON TRIGGER notification_deliveries ON prepay.notification IS 'Queues the notification on each channel of its site.';

CREATE FUNCTION prepay._notify_event(p_site_id integer, p_account_id bigint, p_kind text,
                                     p_amount numeric, p_extra jsonb DEFAULT '{}', p_bill_id bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    lang text := prepay._notify_language(p_site_id, p_account_id);
    t record;
    id bigint;
BEGIN
    SELECT * INTO a FROM prepay.account WHERE site_id = p_site_id AND account_id = p_account_id;
    SELECT * INTO t FROM prepay._notify_text(p_site_id, p_kind, lang,
        prepay._notify_values(p_site_id, p_account_id, lang, a.balance, p_amount, p_extra));
    -- DO NOTHING: a second overdue notice of a bill (unique index
    -- notification_bill_overdue) is not written
    INSERT INTO prepay.notification (site_id, account_id, kind, alarm_level, balance, phone, email, message, bill_id)
    VALUES (p_site_id, p_account_id, p_kind, a.alarm_level, a.balance, a.phone, a.email, t.body, p_bill_id)
    ON CONFLICT DO NOTHING
    RETURNING notification.notification_id INTO id;
    IF id IS NOT NULL THEN
        PERFORM pg_catalog.pg_notify('prepay_notification', p_site_id || '/' || id);
    END IF;
    RETURN id;
END $$;
COMMENT ON FUNCTION prepay._notify_event(integer, bigint, text, numeric, jsonb, bigint) IS
'Internal: write a notification of an event (payment_received, supply_restored, bill_issued, bill_overdue) to an account in its language, about a bill if given, and NOTIFY prepay_notification.  Returns its id, or NULL when it would be a second overdue notice of the bill (nothing written).';

CREATE FUNCTION prepay._notify_payment() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM prepay.notify_site s WHERE s.site_id = NEW.site_id AND s.payment_received) THEN
        PERFORM prepay._notify_event(NEW.site_id, NEW.account_id, 'payment_received', NEW.amount);
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._notify_payment() IS 'Internal: AFTER INSERT trigger on prepay.ledger for recharges: a payment_received notification (the amount and the new balance) where the site asks for it.';
CREATE TRIGGER notify_payment AFTER INSERT ON prepay.ledger
    FOR EACH ROW WHEN (NEW.kind = 'recharge') EXECUTE FUNCTION prepay._notify_payment();
COMMENT ON TRIGGER notify_payment ON prepay.ledger IS 'Tells the tenant a recharge arrived (sites with prepay.notify_site.payment_received).  Never fires for consumption entries.';

CREATE FUNCTION prepay._notify_restored() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.account_id IS NOT NULL
       AND EXISTS (SELECT 1 FROM prepay.notify_site s WHERE s.site_id = NEW.site_id AND s.supply_restored) THEN
        PERFORM prepay._notify_event(NEW.site_id, NEW.account_id, 'supply_restored', NULL);
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._notify_restored() IS 'Internal: AFTER UPDATE trigger on prepay.command: a supply_restored notification when a close command of an account is done, where the site asks for it.';
CREATE TRIGGER notify_restored AFTER UPDATE OF state ON prepay.command
    FOR EACH ROW WHEN (NEW.state = 'done' AND OLD.state <> 'done' AND NEW.action = 'close')
    EXECUTE FUNCTION prepay._notify_restored();
COMMENT ON TRIGGER notify_restored ON prepay.command IS 'Tells the tenant the supply is back (sites with prepay.notify_site.supply_restored).';

CREATE FUNCTION prepay._notify_bill() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM prepay.notify_site s WHERE s.site_id = NEW.site_id AND s.bill_issued)
       AND NEW.amount_due > 0 THEN
        PERFORM prepay._notify_event(NEW.site_id, NEW.account_id, 'bill_issued', NEW.amount_due,
                                     pg_catalog.jsonb_build_object('due_on', NEW.due_on::text), NEW.bill_id);
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._notify_bill() IS 'Internal: AFTER UPDATE trigger on prepay.bill: a bill_issued notification (amount due, due date) when a bill with something to pay is issued, where the site asks for it.';
CREATE TRIGGER notify_bill AFTER UPDATE OF state ON prepay.bill
    FOR EACH ROW WHEN (NEW.state = 'issued' AND OLD.state <> 'issued')
    EXECUTE FUNCTION prepay._notify_bill();
COMMENT ON TRIGGER notify_bill ON prepay.bill IS 'Tells the tenant a bill was issued (sites with prepay.notify_site.bill_issued).';

CREATE FUNCTION prepay.send_overdue_notices(p_site_id integer, p_day date DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    today date;
    b prepay.bill;
    n integer := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF NOT EXISTS (SELECT 1 FROM prepay.notify_site s WHERE s.site_id = p_site_id AND s.bill_overdue) THEN
        RETURN 0;
    END IF;
    -- never ahead of the site's calendar: a run for a later day tells nobody early
    today := prepay._local_day(p_site_id, pg_catalog.now());
    today := least(coalesce(p_day, today), today);
    -- a bill being paid right now is locked: skipped, and looked at again next run
    FOR b IN SELECT * FROM prepay.bill x
              WHERE x.site_id = p_site_id AND x.state = 'issued' AND x.paid < x.amount_due AND x.due_on < today
                AND NOT EXISTS (SELECT 1 FROM prepay.notification o
                                 WHERE o.site_id = x.site_id AND o.bill_id = x.bill_id AND o.kind = 'bill_overdue')
              ORDER BY x.bill_id
                FOR UPDATE SKIP LOCKED LOOP
        IF prepay._notify_event(p_site_id, b.account_id, 'bill_overdue', b.amount_due - b.paid,
                                pg_catalog.jsonb_build_object('due_on', b.due_on::text, 'days_overdue', today - b.due_on),
                                b.bill_id) IS NOT NULL THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.send_overdue_notices(integer, date) IS
'Tell the tenants of a site whose issued bills are still unpaid after their due date: one bill_overdue notification per bill (the amount still owed, the due date, the days overdue), in the tenant''s language, NOTIFY prepay_notification; never a second one for the same bill (unique index notification_bill_overdue).  Overdue means due_on before p_day, the site''s local day (default and at most its local today, so a run for a later day tells nobody early).  Only at sites with prepay.notify_site.bill_overdue.  Idempotent: prepay.run_periodic calls it on every run.  Needs the manage capability at the site (42501).  Returns how many it wrote.';

-- ---------------------------------------------------------------------
-- the agent's side
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._url_encode(p_text text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(pg_catalog.string_agg(
               CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90 OR b BETWEEN 97 AND 122 OR b IN (45, 46, 95, 126)
                    THEN pg_catalog.chr(b)
                    ELSE '%' || pg_catalog.upper(pg_catalog.lpad(pg_catalog.to_hex(b), 2, '0')) END, '' ORDER BY i), '')
      FROM (SELECT i, pg_catalog.get_byte(x.bytes, i) AS b
              FROM (SELECT pg_catalog.convert_to(p_text, 'UTF8') AS bytes) x,
                   pg_catalog.generate_series(0, pg_catalog.length(x.bytes) - 1) AS i) y
$$;
COMMENT ON FUNCTION prepay._url_encode(text) IS 'Internal: percent-encode UTF-8 text for a URL or a form body (RFC 3986 unreserved characters kept).';

CREATE FUNCTION prepay._sms_fill(p_template text, p_phone text, p_text text, p_key text, p_secret text)
RETURNS text LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
           pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(p_template,
               '{phone_url}', prepay._url_encode(coalesce(p_phone, ''))),
               '{text_url}', prepay._url_encode(coalesce(p_text, ''))),
               '{phone_json}', pg_catalog.to_json(coalesce(p_phone, ''))::text),
               '{text_json}', pg_catalog.to_json(coalesce(p_text, ''))::text),
               '{phone}', coalesce(p_phone, '')),
               '{text}', coalesce(p_text, '')),
               '{key}', coalesce(p_key, '')),
               '{secret}', coalesce(p_secret, ''))
$$;
COMMENT ON FUNCTION prepay._sms_fill(text, text, text, text, text) IS 'Internal: fill an SMS request template (URL, header or body) with the phone, the text, the idempotency key and the secret.';

CREATE FUNCTION prepay._mail_message(p_from text, p_to text, p_subject text, p_body text, p_key text)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'From: ' || p_from || E'\r\n'
        || 'To: ' || p_to || E'\r\n'
        || 'Subject: =?UTF-8?B?' || pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(p_subject, 'UTF8'), 'base64'), E'\n', '') || E'?=\r\n'
        || 'Date: ' || pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS') || E' +0000\r\n'
        || 'Message-ID: <' || p_key || E'@prepay>\r\n'
        || E'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n'
        || 'X-Prepay-Idempotency-Key: ' || p_key || E'\r\n\r\n'
        || pg_catalog.replace(p_body, E'\n', E'\r\n') || E'\r\n'
$$;
COMMENT ON FUNCTION prepay._mail_message(text, text, text, text, text) IS 'Internal: the RFC 5322 text of a notification e-mail (UTF-8 plain text, the subject RFC 2047 encoded, the idempotency key as Message-ID).';

CREATE FUNCTION prepay._delivery_request(p_site_id integer, p_notification_id bigint, p_channel text)
RETURNS TABLE (idempotency_key text, created_epoch numeric, url text, method text, headers text,
               body text, secret text, username text, mail_from text, mail_to text, timeout_s integer,
               ca_certificate text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT k.key, pg_catalog.date_part('epoch', n.created_at)::numeric,
           CASE c.channel WHEN 'sms' THEN prepay._sms_fill(c.url, n.phone, n.message, k.key, x.secret) ELSE c.url END,
           CASE c.channel WHEN 'email' THEN c.smtp_tls WHEN 'webhook' THEN 'POST' ELSE c.method END,
           CASE c.channel WHEN 'webhook' THEN pg_catalog.array_to_string(ARRAY['Content-Type: application/json'] || c.headers, E'\n')
                          WHEN 'sms' THEN pg_catalog.array_to_string(ARRAY(SELECT prepay._sms_fill(h, n.phone, n.message, k.key, x.secret)
                                                                               FROM pg_catalog.unnest(c.headers) AS h), E'\n')
                          ELSE '' END,
           CASE c.channel
               WHEN 'webhook' THEN pg_catalog.json_build_object(
                   'notification_id', n.notification_id, 'idempotency_key', k.key,
                   'site_id', n.site_id, 'site', s.name, 'account_id', n.account_id, 'account', a.code,
                   'meters', (SELECT coalesce(pg_catalog.json_agg(m.code ORDER BY m.meter_id), '[]')
                                FROM prepay.meter m WHERE m.site_id = n.site_id AND m.account_id = n.account_id),
                   'kind', n.kind, 'level', n.alarm_level, 'balance', n.balance, 'currency', s.currency,
                   'message', n.message, 'created_at', n.created_at, 'bill_id', n.bill_id)::text
               WHEN 'sms' THEN prepay._sms_fill(c.body, n.phone, n.message, k.key, x.secret)
               ELSE prepay._mail_message(c.mail_from, n.email,
                        (prepay._notify_text(n.site_id, prepay._notify_template_of(n.kind, n.alarm_level),
                                            prepay._notify_language(n.site_id, n.account_id), '{}')).subject,
                        n.message, k.key) END,
           CASE c.channel WHEN 'sms' THEN NULL ELSE x.secret END,
           c.smtp_user, c.mail_from, CASE c.channel WHEN 'email' THEN n.email END,
           greatest(1, (pg_catalog.date_part('epoch', c.lease) / 2)::integer), c.ca_certificate
      FROM prepay.notification n
      JOIN prepay.site s ON s.site_id = n.site_id
      JOIN prepay.account a ON a.site_id = n.site_id AND a.account_id = n.account_id
      JOIN prepay.notify_channel c ON c.site_id = n.site_id AND c.channel = p_channel
      LEFT JOIN prepay.notify_secret x ON x.site_id = c.site_id AND x.channel = c.channel
     CROSS JOIN LATERAL (SELECT pg_catalog.format('prepay-%s-%s-%s', n.site_id, n.notification_id, p_channel) AS key) k
     WHERE n.site_id = p_site_id AND n.notification_id = p_notification_id;
END $$;
COMMENT ON FUNCTION prepay._delivery_request(integer, bigint, text) IS
'Internal: what the agent sends for a delivery: the idempotency key (prepay-<site>-<notification>-<channel>), the creation time, and per channel the URL, method (for email the TLS mode), headers, body (webhook: the JSON document; sms: the filled template; email: the message), the secret (webhook HMAC key, SMTP password), SMTP login and addresses, the request timeout, and the certificate authorities the server must chain to (NULL: the system''s).  Reads the secrets: callable with effect only by their readers.';

CREATE FUNCTION prepay._delivery_dead(d prepay.notification_delivery, p_error text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE prepay.notification_delivery
       SET dead_at = pg_catalog.now(), lease_until = NULL, last_error = p_error
     WHERE site_id = d.site_id AND notification_id = d.notification_id AND channel = d.channel;
    INSERT INTO prepay.alarm (site_id, kind, account_id, detail)
    VALUES (d.site_id, 'notification_dead', d.account_id,
            pg_catalog.format('notification %s by %s given up after %s attempts: %s',
                              d.notification_id, d.channel, d.attempts, p_error))
    ON CONFLICT DO NOTHING;
END $$;
COMMENT ON FUNCTION prepay._delivery_dead(prepay.notification_delivery, text) IS
'Internal: dead-letter a delivery with its last error and raise an alarm notification_dead for the account (one active alarm per account; the deliveries are in prepay.notification_delivery_status).';

CREATE FUNCTION prepay._deliveries_expire(p_sites integer[])
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        SELECT x AS dl, CASE WHEN x.attempts >= c.max_attempts
                             THEN pg_catalog.format('no result reported within the lease of attempt %s (%s)', x.attempts,
                                                    coalesce(x.last_error, 'agent gone'))
                             ELSE pg_catalog.format('older than max_age %s; last error: %s', c.max_age,
                                                    coalesce(x.last_error, 'none')) END AS why
          FROM prepay.notify_channel c
          JOIN prepay.notification_delivery x ON x.site_id = c.site_id AND x.channel = c.channel
         WHERE c.site_id = ANY (p_sites)
           AND x.delivered_at IS NULL AND x.dead_at IS NULL AND x.next_attempt_at <= pg_catalog.now()
           AND coalesce(x.lease_until, '-infinity') <= pg_catalog.now()
           AND (x.attempts >= c.max_attempts OR x.created_at + c.max_age < pg_catalog.now())
           FOR UPDATE OF x SKIP LOCKED
    LOOP
        PERFORM prepay._delivery_dead(r.dl, r.why);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay._deliveries_expire(integer[]) IS
'Internal: dead-letter the due deliveries of these sites that are too old (max_age after they were written) or whose last attempt (max_attempts) was never reported.';

CREATE FUNCTION prepay.agent_claim_deliveries(p_agent_id text, p_limit integer DEFAULT 50)
RETURNS TABLE (site_id integer, notification_id bigint, channel text, attempt integer,
               idempotency_key text, created_epoch numeric, url text, method text, headers text, body text,
               secret text, username text, mail_from text, mail_to text, timeout_s integer,
               ca_certificate text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    sites integer[];
BEGIN
    PERFORM prepay._authorize_agent_id(p_agent_id);
    sites := ARRAY(SELECT s.site_id FROM prepay.site s WHERE prepay._is_agent(s.site_id, p_agent_id));
    PERFORM prepay._deliveries_expire(sites);
    RETURN QUERY
    WITH due AS (
        SELECT d.site_id, d.notification_id, d.channel
          FROM prepay.notify_channel c
         CROSS JOIN LATERAL (
               SELECT c.max_per_minute - pg_catalog.count(*) AS room
                 FROM prepay.notification_delivery r
                WHERE r.site_id = c.site_id AND r.channel = c.channel
                  AND r.last_attempt_at > pg_catalog.now() - interval '1 minute') q
         CROSS JOIN LATERAL (
               SELECT x.site_id, x.notification_id, x.channel
                 FROM prepay.notification_delivery x
                WHERE x.site_id = c.site_id AND x.channel = c.channel
                  AND x.delivered_at IS NULL AND x.dead_at IS NULL AND x.next_attempt_at <= pg_catalog.now()
                  AND coalesce(x.lease_until, '-infinity') <= pg_catalog.now()
                ORDER BY x.next_attempt_at, x.notification_id
                LIMIT greatest(least(q.room, p_limit), 0)
                  FOR UPDATE SKIP LOCKED) d
         WHERE c.site_id = ANY (sites) AND c.enabled
         LIMIT greatest(p_limit, 1)
    ), claimed AS (
        UPDATE prepay.notification_delivery d
           SET attempts = d.attempts + 1, lease_until = pg_catalog.now() + c.lease, leased_by = p_agent_id,
               last_attempt_at = pg_catalog.now()
          FROM due, prepay.notify_channel c
         WHERE d.site_id = due.site_id AND d.notification_id = due.notification_id AND d.channel = due.channel
           AND c.site_id = d.site_id AND c.channel = d.channel
        RETURNING d.site_id, d.notification_id, d.channel, d.attempts
    )
    SELECT k.site_id, k.notification_id, k.channel, k.attempts, r.*
      FROM claimed k CROSS JOIN LATERAL prepay._delivery_request(k.site_id, k.notification_id, k.channel) r
     ORDER BY k.site_id, k.notification_id, k.channel;
END $$;
COMMENT ON FUNCTION prepay.agent_claim_deliveries(text, integer) IS
'The delivering agent takes up to p_limit due deliveries of the sites it is an agent of (FOR UPDATE SKIP LOCKED, so that two agents never take the same one): each gets attempts + 1 and a lease (notify_channel.lease) and is returned with everything needed to send it, secrets included (see prepay._delivery_request).  At most max_per_minute attempts per site and channel in any minute.  First dead-letters what is too old or was never reported.';

CREATE FUNCTION prepay._agent_delivery(p_agent_id text, p_site_id integer, p_notification_id bigint, p_channel text)
RETURNS prepay.notification_delivery LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d prepay.notification_delivery;
BEGIN
    IF NOT prepay._is_agent(p_site_id, p_agent_id) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied for site %s', p_site_id),
            pg_catalog.format('Agent %s does not deliver for site %s.', pg_catalog.quote_literal(p_agent_id), p_site_id),
            'Map the agent''s login in prepay.agent_access.');
    END IF;
    SELECT * INTO d FROM prepay.notification_delivery
     WHERE site_id = p_site_id AND notification_id = p_notification_id AND channel = p_channel FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY501', 'unknown delivery',
            pg_catalog.format('Site %s has no delivery of notification %s by %s.', p_site_id, p_notification_id, p_channel),
            'Report only deliveries returned by prepay.agent_claim_deliveries.');
    END IF;
    RETURN d;
END $$;
COMMENT ON FUNCTION prepay._agent_delivery(text, integer, bigint, text) IS 'Internal: lock a delivery an agent reports on; 42501 if the agent does not serve the site, PY501 if unknown.';

CREATE FUNCTION prepay.agent_delivery_done(p_agent_id text, p_site_id integer, p_notification_id bigint,
                                           p_channel text, p_attempt integer, p_status integer DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d prepay.notification_delivery;
BEGIN
    PERFORM prepay._authorize_agent_id(p_agent_id);
    d := prepay._agent_delivery(p_agent_id, p_site_id, p_notification_id, p_channel);
    IF d.delivered_at IS NOT NULL THEN
        RETURN 'already delivered';
    END IF;
    UPDATE prepay.notification_delivery
       SET delivered_at = pg_catalog.now(), dead_at = NULL, lease_until = NULL, last_status = p_status
     WHERE site_id = p_site_id AND notification_id = p_notification_id AND channel = p_channel;
    UPDATE prepay.notification n SET delivered_at = pg_catalog.now()
     WHERE n.site_id = p_site_id AND n.notification_id = p_notification_id AND n.delivered_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM prepay.notification_delivery x
                        WHERE x.site_id = n.site_id AND x.notification_id = n.notification_id AND x.delivered_at IS NULL);
    RETURN 'delivered';
END $$;
COMMENT ON FUNCTION prepay.agent_delivery_done(text, integer, bigint, text, integer, integer) IS
'The agent delivered a claimed delivery (the receiver answered 2xx, the SMTP server accepted the message): delivered_at is set, and the notification''s delivered_at once every channel of it is delivered.  Accepted from any attempt, even after the lease ran out or after a dead letter (the message did arrive).  Returns delivered or already delivered.  42501, PY501.';

CREATE FUNCTION prepay._delivery_permanent(p_channel text, p_status integer) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(CASE p_channel WHEN 'email' THEN p_status BETWEEN 500 AND 599
                                   ELSE p_status BETWEEN 400 AND 499 AND p_status NOT IN (408, 429) END, false)
$$;
COMMENT ON FUNCTION prepay._delivery_permanent(text, integer) IS
'Whether an answer is a permanent failure, not worth retrying: for webhook and sms an HTTP 4xx other than 408 (timeout) and 429 (too many requests); for email an SMTP 5xx reply (a refused address or message).  A transport error (NULL status) is never permanent.';

CREATE FUNCTION prepay.agent_delivery_failed(p_agent_id text, p_site_id integer, p_notification_id bigint,
                                             p_channel text, p_attempt integer, p_error text, p_status integer DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d prepay.notification_delivery;
    c prepay.notify_channel;
    delay interval;
    why text := coalesce(p_status::text || ': ', '') || coalesce(p_error, 'unknown error');
BEGIN
    PERFORM prepay._authorize_agent_id(p_agent_id);
    d := prepay._agent_delivery(p_agent_id, p_site_id, p_notification_id, p_channel);
    IF d.delivered_at IS NOT NULL OR d.dead_at IS NOT NULL OR d.attempts IS DISTINCT FROM p_attempt THEN
        RETURN 'stale';       -- another attempt has taken over, or it is settled
    END IF;
    SELECT * INTO c FROM prepay.notify_channel WHERE site_id = p_site_id AND channel = p_channel;
    UPDATE prepay.notification_delivery SET last_status = p_status, last_error = why
     WHERE site_id = p_site_id AND notification_id = p_notification_id AND channel = p_channel;
    IF prepay._delivery_permanent(p_channel, p_status) OR d.attempts >= c.max_attempts THEN
        d.last_status := p_status;
        PERFORM prepay._delivery_dead(d, CASE WHEN prepay._delivery_permanent(p_channel, p_status)
                                              THEN 'permanent failure: ' ELSE '' END || why);
        RETURN 'dead';
    END IF;
    delay := least(c.backoff_max, c.backoff_base * pg_catalog.power(2, least(d.attempts - 1, 30))::integer);
    UPDATE prepay.notification_delivery
       SET lease_until = NULL, next_attempt_at = pg_catalog.now() + delay * (0.5 + 0.5 * pg_catalog.random())
     WHERE site_id = p_site_id AND notification_id = p_notification_id AND channel = p_channel;
    RETURN 'retry';
END $$;
COMMENT ON FUNCTION prepay.agent_delivery_failed(text, integer, bigint, text, integer, text, integer) IS
'The agent failed a claimed delivery (p_status: the HTTP status or SMTP reply code, NULL for a transport error).  A permanent failure (prepay._delivery_permanent) or the channel''s max_attempts-th attempt dead-letters it with an alarm notification_dead (returns dead); otherwise it is due again after backoff_base x 2^(attempts-1), at most backoff_max, times a random factor between 0.5 and 1 (returns retry).  A report of an attempt that is no longer the current one changes nothing (returns stale).  42501, PY501.';

-- ---------------------------------------------------------------------
-- pg_dump: configuration and delivery state are user data
-- ---------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('prepay.notify_site', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.account_language', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.notify_channel', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.notify_secret', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.notify_template', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.notification_delivery', '');
