-- The bill overdue notice (sql/notify.sql, prepay.send_overdue_notices,
-- run by prepay.run_periodic): one notification per issued bill still
-- unpaid after its due date, exactly once, in the tenant's language, only
-- at sites that switch it on, never early; who may run it.
DROP EXTENSION prepay CASCADE;
CREATE EXTENSION prepay;
SET timezone = 'UTC';
SET datestyle = 'ISO';
INSERT INTO prepay.site (name, time_zone) VALUES ('Overdue site', 'Asia/Shanghai');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
INSERT INTO prepay.tariff_version VALUES (1, 1, '2026-01-01', 1.0);

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_overdue_operator') THEN
        CREATE ROLE regress_overdue_operator LOGIN IN ROLE prepay_operator;
        CREATE ROLE regress_overdue_cashier LOGIN IN ROLE prepay_cashier;
        CREATE ROLE regress_overdue_reader LOGIN IN ROLE prepay_reader;
        CREATE ROLE regress_overdue_tenant LOGIN IN ROLE prepay_tenant;
    END IF;
END $$;
INSERT INTO prepay.site_access (site_id, grantee) VALUES
    (1, 'regress_overdue_operator'), (1, 'regress_overdue_cashier'), (1, 'regress_overdue_reader');

-- a postpaid account with an issued bill for March (1.00 per kWh)
CREATE FUNCTION pg_temp.issued_bill(p_code text, p_kwh numeric, p_email text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    acc bigint;
    m bigint;
    b bigint;
BEGIN
    INSERT INTO prepay.meter (site_id, code) VALUES (1, 'M-' || p_code) RETURNING meter_id INTO m;
    acc := prepay.open_account(1, p_code, 'Office ' || p_code, 1, 'postpaid', p_email => p_email);
    PERFORM prepay.attach_meter(1, acc, m, 0, '2026-03-01 00:00+08');
    INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, m, '2026-03-10 00:00+08', p_kwh);
    b := (prepay.draft_bill(1, acc, '2026-03-01', '2026-04-01')).bill_id;
    PERFORM prepay.confirm_bill(1, b);
    PERFORM prepay.issue_bill(1, b);
    RETURN b;
END $$;
SELECT pg_temp.issued_bill('P1', 120.50, 'p1@example.com') AS b1,   -- Chinese, overdue, unpaid
       pg_temp.issued_bill('P2', 80) AS b2,                         -- English, overdue, partly paid
       pg_temp.issued_bill('P3', 40) AS b3,                         -- overdue date passed, but paid
       pg_temp.issued_bill('P4', 10) AS b4 \gset
SELECT account_id AS a2 FROM prepay.bill WHERE bill_id = :b2 \gset
INSERT INTO prepay.tenant_access (site_id, account_id, grantee) VALUES (1, :a2, 'regress_overdue_tenant');
SELECT prepay.pay_bills(1, :a2, 30, 'cash', 'PAY-2');
SELECT prepay.pay_bills(1, (SELECT account_id FROM prepay.bill WHERE bill_id = :b3), 40, 'cash', 'PAY-3');
-- the due dates, in the site's calendar: three days ago, and today for P4
UPDATE prepay.bill SET due_on = prepay._local_day(1, now()) - 3 WHERE bill_id IN (:b1, :b2, :b3);
UPDATE prepay.bill SET due_on = prepay._local_day(1, now()) WHERE bill_id = :b4;
SELECT account_id, state, amount_due, paid, due_on - prepay._local_day(1, now()) AS due_in_days
  FROM prepay.bill ORDER BY bill_id;

-- a site without notify_site (or with the switch off) tells nobody
SELECT prepay.send_overdue_notices(1) AS without_notify_site;
INSERT INTO prepay.notify_site (site_id, language, bill_overdue) VALUES (1, 'zh', false);
INSERT INTO prepay.account_language (site_id, account_id, language) VALUES (1, :a2, 'en');
SELECT prepay.send_overdue_notices(1) AS switched_off;
SELECT count(*) AS overdue_notices FROM prepay.notification WHERE kind = 'bill_overdue';

-- switched on: the daily run (what pg_cron runs) tells P1 and P2, once each
UPDATE prepay.notify_site SET bill_overdue = true WHERE site_id = 1;
SELECT done -> 'overdue_notices' AS run_periodic_notices
  FROM (SELECT prepay.run_periodic(1, prepay._local_day(1, now())) AS done) r;
SELECT a.code, n.kind, n.bill_id = b.bill_id AS about_the_bill, n.balance,
       regexp_replace(n.message, '\d{4}-\d{2}-\d{2}', 'YYYY-MM-DD') AS message
  FROM prepay.notification n
  JOIN prepay.account a ON a.site_id = n.site_id AND a.account_id = n.account_id
  JOIN prepay.bill b ON b.site_id = n.site_id AND b.account_id = n.account_id
 WHERE n.kind = 'bill_overdue' ORDER BY n.notification_id;
SELECT bool_and(n.message LIKE '%' || b.due_on || '%') AS names_the_due_date
  FROM prepay.notification n JOIN prepay.bill b ON b.site_id = n.site_id AND b.bill_id = n.bill_id
 WHERE n.kind = 'bill_overdue';

-- again, and again by the operator: nothing more
SELECT prepay.run_periodic(1, prepay._local_day(1, now())) ? 'overdue_notices' AS rerun_notices;
SET SESSION AUTHORIZATION regress_overdue_operator;
SELECT prepay.send_overdue_notices(1) AS operator_again;
RESET SESSION AUTHORIZATION;
-- a run for a later day does not tell P4 early
SELECT prepay.send_overdue_notices(1, prepay._local_day(1, now()) + 30) AS later_day;
-- the unique index stops a second notice even written by hand
SELECT regress.try(format($$SELECT prepay._notify_event(1, %s, 'bill_overdue', 1, '{}', %s)$$, :a2, :b2)) AS by_hand;
-- P4's due date passes: the operator's run tells P4 only
UPDATE prepay.bill SET due_on = due_on - 1 WHERE bill_id = :b4;
SET SESSION AUTHORIZATION regress_overdue_operator;
SELECT prepay.send_overdue_notices(1) AS operator_run;
RESET SESSION AUTHORIZATION;
SELECT b.account_id, count(n.notification_id) AS notices
  FROM prepay.bill b
  LEFT JOIN prepay.notification n ON n.site_id = b.site_id AND n.bill_id = b.bill_id AND n.kind = 'bill_overdue'
 GROUP BY b.account_id ORDER BY b.account_id;

-- who may run it: staff who manage the site; not a cashier, a reader or a tenant
SELECT who, regress.probe(login, statement, NULL, true) AS outcome
  FROM (VALUES ('cashier', 'regress_overdue_cashier', 'SELECT prepay.send_overdue_notices(1)'),
               ('reader', 'regress_overdue_reader', 'SELECT prepay.send_overdue_notices(1)'),
               ('tenant', 'regress_overdue_tenant', 'SELECT prepay.send_overdue_notices(1)'),
               ('operator, another site', 'regress_overdue_operator', 'SELECT prepay.send_overdue_notices(2)')) AS p (who, login, statement);
-- a tenant sees its own overdue notice
SELECT regress.seen('regress_overdue_tenant', $$SELECT string_agg(kind, ',' ORDER BY notification_id) FROM prepay.notification$$) AS tenant_sees;

-- the template is the site's to change, like the others
INSERT INTO prepay.notify_template (site_id, template, language, subject, body)
VALUES (1, 'bill_overdue', 'en', 'Reminder', '{name}: {amount} overdue since {due_on}.');
SELECT subject, body FROM prepay._notify_text(1, 'bill_overdue', 'en', '{"name": "Office P2", "amount": "50.00 CNY", "due_on": "2026-04-04"}');
SELECT regress.try($$INSERT INTO prepay.notify_template VALUES (1, 'bill_late', 'en', 's', 'b') RETURNING 1$$) AS unknown_template;

SELECT * FROM prepay.check_ledger();
