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
--@ copy function prepay._notify_default_template

DROP FUNCTION prepay._notify_event(integer, bigint, text, numeric, jsonb);
--@ copy function prepay._notify_event

--@ copy function prepay._notify_bill
--@ copy function prepay.send_overdue_notices

--@ copy function prepay.run_periodic

-- ---------------------------------------------------------------------
-- the agent's side: the channel's CA and the bill in the webhook document
-- ---------------------------------------------------------------------
DROP FUNCTION prepay.agent_claim_deliveries(text, integer);
DROP FUNCTION prepay._delivery_request(integer, bigint, text);
--@ copy function prepay._delivery_request

--@ copy function prepay.agent_claim_deliveries
