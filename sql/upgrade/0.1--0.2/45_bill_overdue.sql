-- sql/upgrade/0.1--0.2/45_bill_overdue.sql: the bill overdue notice
-- (prepay.send_overdue_notices, run by prepay.run_periodic; switch
-- notify_site.bill_overdue; template bill_overdue; notification.bill_id)
-- and a channel's own certificate authorities (notify_channel.ca_certificate,
-- returned by agent_claim_deliveries).  Same statements as sql/notify.sql
-- and sql/billing.sql; the grants and audit triggers as sql/security.sql
-- makes them.

-- ---------------------------------------------------------------------
-- configuration: the switch, the CA, the template name
-- ---------------------------------------------------------------------
ALTER TABLE prepay.notify_site ADD COLUMN bill_overdue boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN prepay.notify_site.bill_overdue IS 'Write one bill_overdue notification for every issued bill still unpaid after its due date (prepay.send_overdue_notices, run by prepay.run_periodic).';
ALTER TABLE prepay.notify_channel ADD COLUMN ca_certificate text CHECK (ca_certificate ~ '^\s*-----BEGIN CERTIFICATE-----');
COMMENT ON COLUMN prepay.notify_channel.ca_certificate IS 'webhook, sms, email over TLS: the certificate authorities (PEM, one or more BEGIN CERTIFICATE blocks) the server''s certificate must chain to, instead of the system''s trust store; for a receiver or SMTP server with a certificate of a private CA.  NULL: the system''s trust store.  The certificate and host name are always verified.';
ALTER TABLE prepay.notify_template DROP CONSTRAINT notify_template_template_check,
    ADD CONSTRAINT notify_template_template_check CHECK (template IN ('balance_ok', 'low_balance', 'pretrip', 'arrears', 'cut_reminder',
                                                'supply_restored', 'payment_received', 'bill_issued', 'bill_overdue'));
COMMENT ON TABLE prepay.notify_template IS 'A site''s own wording of a message, replacing the built-in one (prepay._notify_default_template).  Placeholders: {site}, {account}, {name}, {balance}, {amount}, {cut_at}, {due_on}, {days_overdue} (amounts in the site''s currency).';
COMMENT ON COLUMN prepay.notify_template.template IS 'Which message: balance_ok, low_balance, pretrip, arrears (the alarm ladder), cut_reminder, supply_restored, payment_received, bill_issued, bill_overdue.';

-- the audit triggers name every column (sql/security.sql)
DROP TRIGGER audit ON prepay.notify_site;
CREATE TRIGGER audit AFTER INSERT OR DELETE OR UPDATE OF site_id, language, payment_received, supply_restored, bill_issued, bill_overdue
    ON prepay.notify_site FOR EACH ROW EXECUTE FUNCTION prepay._audit_row('site_id');
COMMENT ON TRIGGER audit ON prepay.notify_site IS 'Every change of this table is written to the audit trail (prepay.audit), with the values before and after.';
DROP TRIGGER audit ON prepay.notify_channel;
CREATE TRIGGER audit AFTER INSERT OR DELETE OR UPDATE OF site_id, channel, enabled, url, method, headers, body, smtp_tls,
    smtp_user, mail_from, max_per_minute, max_attempts, max_age, backoff_base, backoff_max, lease, ca_certificate
    ON prepay.notify_channel FOR EACH ROW EXECUTE FUNCTION prepay._audit_row('site_id', 'channel');
COMMENT ON TRIGGER audit ON prepay.notify_channel IS 'Every change of this table is written to the audit trail (prepay.audit), with the values before and after.';

-- ---------------------------------------------------------------------
-- the bill a notification is about (bill_issued, bill_overdue)
-- ---------------------------------------------------------------------

ALTER TABLE prepay.notification ADD COLUMN bill_id bigint;
COMMENT ON COLUMN prepay.notification.bill_id IS 'The bill the notification is about (kinds bill_issued and bill_overdue); NULL for the others.';
CREATE UNIQUE INDEX notification_bill_overdue ON prepay.notification (site_id, bill_id) WHERE kind = 'bill_overdue';
COMMENT ON INDEX prepay.notification_bill_overdue IS 'At most one overdue notice per bill, whoever writes it and however often prepay.send_overdue_notices runs.';

-- ---------------------------------------------------------------------
-- texts and events
-- ---------------------------------------------------------------------
CREATE OR REPLACE FUNCTION prepay._notify_default_template(p_template text, p_language text,
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

DROP FUNCTION prepay._notify_event(integer, bigint, text, numeric, jsonb);
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
REVOKE ALL ON ROUTINE prepay._notify_event(integer, bigint, text, numeric, jsonb, bigint) FROM PUBLIC;
GRANT EXECUTE ON ROUTINE prepay._notify_event(integer, bigint, text, numeric, jsonb, bigint) TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;

CREATE OR REPLACE FUNCTION prepay._notify_bill() RETURNS trigger
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
REVOKE ALL ON ROUTINE prepay.send_overdue_notices(integer, date) FROM PUBLIC;
GRANT EXECUTE ON ROUTINE prepay.send_overdue_notices(integer, date) TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;

CREATE OR REPLACE FUNCTION prepay.run_periodic(p_site_id integer, p_day date)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done jsonb := '{}';
    previous_month date := (pg_catalog.date_trunc('month', p_day) - interval '1 month')::date;
    r prepay.apportion_rule;
    p record;
    n integer;
    failed jsonb := '[]';
    problem text;
    problem_detail text;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF NOT EXISTS (SELECT 1 FROM prepay.site WHERE site_id = p_site_id) THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id), NULL);
    END IF;
    -- the period that just ended first: its accruals, settlement and shares
    SELECT count(*) INTO n FROM prepay.accrue_basic_charges(p_site_id, p_day - 1) x WHERE x.posted <> 0;
    done := done || pg_catalog.jsonb_build_object('basic_charges_accrued', n);
    IF p_day = pg_catalog.date_trunc('month', p_day)::date THEN
        done := done || pg_catalog.jsonb_build_object('basic_charges_settled',
                                                      prepay.settle_basic_charges(p_site_id, previous_month));
        n := 0;
        FOR r IN SELECT * FROM prepay.apportion_rule WHERE site_id = p_site_id ORDER BY rule_id LOOP
            p := prepay._period(r.period, p_day - 1);
            CONTINUE WHEN p.period_end <> p_day OR p.period_start < r.active_from
                          OR p.period_start > coalesce(r.active_to, p.period_start);
            BEGIN
                PERFORM prepay.apportion(p_site_id, r.rule_id, p.period_start);
                n := n + 1;
            EXCEPTION WHEN sqlstate 'PY024' THEN
                -- one rule without its master readings must not stop the others
                GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT, problem_detail = PG_EXCEPTION_DETAIL;
                failed := failed || pg_catalog.jsonb_build_object('rule', r.rule_id, 'error', problem || ': ' || problem_detail);
                PERFORM prepay._alarm(p_site_id, 'apportionment_failed', r.master_meters[1],
                                      pg_catalog.format('%s %s: %s: %s', r.name, p.period_start, problem, problem_detail));
            END;
        END LOOP;
        done := done || pg_catalog.jsonb_build_object('apportionments', n);
        IF failed <> '[]' THEN
            done := done || pg_catalog.jsonb_build_object('apportionments_failed', failed);
        END IF;
    END IF;
    -- then the allowances: what is left of the old period expires before the new one is credited
    done := done || pg_catalog.jsonb_build_object('allowances_expired', prepay.expire_allowances(p_site_id, p_day));
    done := done || pg_catalog.jsonb_build_object('allowances_granted', prepay.grant_allowances(p_site_id, p_day));
    done := done || pg_catalog.jsonb_build_object('fees_charged', prepay.charge_fees(p_site_id, p_day));
    IF p_day = pg_catalog.date_trunc('month', p_day)::date THEN
        SELECT count(*) INTO n FROM prepay.draft_bills(p_site_id, previous_month, p_day);
        done := done || pg_catalog.jsonb_build_object('bills_drafted', n);
    END IF;
    n := prepay.send_overdue_notices(p_site_id, p_day);
    IF n > 0 THEN
        done := done || pg_catalog.jsonb_build_object('overdue_notices', n);
    END IF;
    RETURN done;
END $$;
COMMENT ON FUNCTION prepay.run_periodic(integer, date) IS
'The site''s daily billing run for a local day, in order: accrue the previous day''s basic charges; on the first day of a month settle the previous month''s basic charges and apportion every rule in force whose period just ended (a rule whose master readings are missing raises an apportionment_failed alarm and is listed; the others go on; run it again once the readings are in) ; then expire the allowances of periods ended, credit the period''s allowances, charge the fees due, and on the first day of a month draft the previous month''s bills; last, tell the tenants of issued bills overdue on that day (prepay.send_overdue_notices; listed as overdue_notices when it wrote any).  The period that ended is charged before its allowance expires, and spends it first.  Every step is idempotent, so running it twice, late, or from two sessions at once charges once.  Returns what it did.';

-- ---------------------------------------------------------------------
-- the agent's side: the channel's CA and the bill in the webhook document
-- ---------------------------------------------------------------------
DROP FUNCTION prepay.agent_claim_deliveries(text, integer);
DROP FUNCTION prepay._delivery_request(integer, bigint, text);
CREATE FUNCTION prepay._delivery_request(p_site_id integer, p_notification_id bigint, p_channel text)
RETURNS TABLE (idempotency_key text, created_epoch numeric, url text, method text, headers text,
               body text, secret text, username text, mail_from text, mail_to text, timeout_s integer,
               ca_certificate text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
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
     WHERE n.site_id = p_site_id AND n.notification_id = p_notification_id
$$;
COMMENT ON FUNCTION prepay._delivery_request(integer, bigint, text) IS
'Internal: what the agent sends for a delivery: the idempotency key (prepay-<site>-<notification>-<channel>), the creation time, and per channel the URL, method (for email the TLS mode), headers, body (webhook: the JSON document; sms: the filled template; email: the message), the secret (webhook HMAC key, SMTP password), SMTP login and addresses, the request timeout, and the certificate authorities the server must chain to (NULL: the system''s).  Reads the secrets: callable with effect only by their readers.';
REVOKE ALL ON ROUTINE prepay._delivery_request(integer, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON ROUTINE prepay._delivery_request(integer, bigint, text) TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;

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
REVOKE ALL ON ROUTINE prepay.agent_claim_deliveries(text, integer) FROM PUBLIC;
GRANT EXECUTE ON ROUTINE prepay.agent_claim_deliveries(text, integer) TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
