-- Money: recharge, refund, reverse, balance; idempotency and every error.
\set site Campus \set low DEFAULT \set pretrip DEFAULT \set tariff dorm \set price 0.55
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/site.psql
SELECT prepay.open_account(1, 'S1', 'Room 101', 1);
SELECT prepay.open_account(1, 'S2', 'Room 102', 1);

-- recharge returns the ledger entry; the same reference again is the same entry
SELECT prepay.recharge(1, 1, 100.00, 'wechat', 'WX-0001');
SELECT prepay.recharge(1, 1, 100.00, 'wechat', 'WX-0001');
SELECT prepay.recharge(1, 1, 100, 'wechat', 'WX-0001');      -- 100 = 100.00
SELECT prepay.recharge(1, 1, 20.50, 'cash', 'WX-0001');      -- another channel, another payment
SELECT prepay.balance(1, 1);
-- the same reference for a different payment is refused
SELECT regress.try($$SELECT prepay.recharge(1, 1, 99.00, 'wechat', 'WX-0001')$$);
SELECT regress.try($$SELECT prepay.recharge(1, 2, 100.00, 'wechat', 'WX-0001')$$);
-- bad arguments
SELECT regress.try($$SELECT prepay.recharge(1, 1, -5, 'cash', 'C-1')$$);
SELECT regress.try($$SELECT prepay.recharge(1, 1, 0, 'cash', 'C-1')$$);
SELECT regress.try($$SELECT prepay.recharge(1, 1, 10.005, 'cash', 'C-1')$$);
SELECT regress.try($$SELECT prepay.recharge(1, 1, NULL, 'cash', 'C-1')$$);
SELECT regress.try($$SELECT prepay.recharge(1, 1, 'ten', 'cash', 'C-1')$$);
SELECT regress.try($$SELECT prepay.recharge(1, 1, 'NaN', 'cash', 'C-1')$$);
SELECT regress.try($$SELECT prepay.recharge(1, 1, 1e15, 'cash', 'C-1')$$);
SELECT regress.try($$SELECT prepay.recharge(1, 1, 10, '', 'C-1')$$);
SELECT regress.try($$SELECT prepay.recharge(1, 1, 10, 'cash', NULL)$$);
SELECT regress.try($$SELECT prepay.recharge(1, 77, 10, 'cash', 'C-1')$$);
SELECT regress.try($$SELECT prepay.recharge(2, 1, 10, 'cash', 'C-1')$$);
SELECT regress.try($$SELECT prepay.balance(1, 77)$$);

-- refund: at most the balance, idempotent per reference
SELECT prepay.refund(1, 1, 20.50, 'cash', 'RF-1', 'overpaid');
SELECT prepay.refund(1, 1, 20.50, 'cash', 'RF-1', 'overpaid');
SELECT regress.try($$SELECT prepay.refund(1, 1, 100.01, 'cash', 'RF-2')$$);
SELECT regress.try($$SELECT prepay.refund(1, 1, -1, 'cash', 'RF-3')$$);
SELECT prepay.balance(1, 1);

-- reverse posts the exact opposite once
SELECT prepay.reverse(1, 1, 'paid to the wrong room');
SELECT prepay.reverse(1, 1, 'again');
SELECT regress.try($$SELECT prepay.reverse(1, 4, 'a reversal of a reversal')$$);
SELECT regress.try($$SELECT prepay.reverse(1, 999, 'unknown')$$);
SELECT regress.try($$SELECT prepay.reverse(1, 2, '')$$);
SELECT prepay.recharge(1, 2, 100.00, 'wechat', 'WX-0002');
SELECT entry_id, account_id, kind, amount, balance_after, channel, external_ref, reverses_entry, reason,
       (SELECT ac.login FROM prepay.actor ac WHERE ac.site_id = l.site_id AND ac.actor_id = l.actor_id) AS created_by
  FROM prepay.ledger l ORDER BY entry_id;
SELECT account_id, balance, alarm_level FROM prepay.account ORDER BY 1;

-- the ledger is append-only
SELECT regress.try($$UPDATE prepay.ledger SET amount = 1000 WHERE entry_id = 1$$);
SELECT regress.try($$DELETE FROM prepay.ledger WHERE entry_id = 1$$);
SELECT regress.try($$TRUNCATE prepay.ledger$$);

-- an SQL-looking reference is just text
SELECT prepay.recharge(1, 1, 1.00, 'cash', $$x'); DROP TABLE prepay.ledger; --$$);
SELECT external_ref FROM prepay.ledger WHERE channel = 'cash' ORDER BY entry_id DESC LIMIT 1;

-- the auditor's check: empty, and it sees a tampered balance
SELECT * FROM prepay.check_ledger();
UPDATE prepay.account SET balance = balance + 0.01 WHERE account_id = 2;
SELECT * FROM prepay.check_ledger();
UPDATE prepay.account SET balance = balance - 0.01 WHERE account_id = 2;
SELECT * FROM prepay.check_ledger();
-- ... and an entry id used twice in a site (the key is site, account, entry)
BEGIN;
INSERT INTO prepay.ledger (site_id, entry_id, account_id, kind, amount, balance_after, actor_id)
SELECT l.site_id, l.entry_id, 2, 'adjustment', 0, a.balance, l.actor_id
  FROM prepay.ledger l JOIN prepay.account a ON a.site_id = l.site_id AND a.account_id = 2
 WHERE l.site_id = 1 AND l.account_id = 1 ORDER BY l.entry_id LIMIT 1;
SELECT site_id, account_id, balance, problem FROM prepay.check_ledger();
ROLLBACK;

-- alarm_level is the ladder
SELECT b, prepay.alarm_level(b, 50, 10, 0) AS no_credit, prepay.alarm_level(b, 50, 10, 100) AS credit_100
  FROM unnest(ARRAY[100, 50.01, 50, 10.01, 10, 0.01, 0, -99.99, -100, -200]::numeric[]) b;

-- who posted an entry: the login's prepay.actor row at the entry's site,
-- ids 1, 2, ... per site in the order the logins first posted
INSERT INTO prepay.site (name) VALUES ('Annex');
INSERT INTO prepay.tariff (site_id, name) VALUES (2, 'annex');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (2, 2, '2026-01-01', 0.55);
SELECT prepay.open_account(2, 'A1', 'Annex 1', 2);
SELECT prepay.recharge(2, 3, 10.00, 'cash', 'AX-1');
SELECT prepay._actor_id(1) AS postgres_at_1, prepay._actor_id(2) AS postgres_at_2;
CREATE ROLE regress_money_clerk SUPERUSER;
SET SESSION AUTHORIZATION regress_money_clerk;
SELECT prepay.recharge(1, 2, 1.00, 'cash', 'CL-1');
SELECT prepay.recharge(1, 2, 1.00, 'cash', 'CL-2');
SELECT prepay._actor_id(1) AS clerk_at_1;
RESET SESSION AUTHORIZATION;
SELECT site_id, actor_id, login FROM prepay.actor ORDER BY 1, 2;
SELECT l.site_id, l.external_ref, l.actor_id, a.login
  FROM prepay.ledger l JOIN prepay.actor a ON a.site_id = l.site_id AND a.actor_id = l.actor_id
 WHERE l.external_ref IN ('AX-1', 'CL-1', 'CL-2', 'WX-0002') ORDER BY l.entry_id;
-- a site has room for 32767 logins: the next is refused, those it has go on
BEGIN;
INSERT INTO prepay.actor (site_id, actor_id, login) SELECT 2, i, 'regress_seed_' || i FROM generate_series(2, 32767) i;
SET SESSION AUTHORIZATION regress_money_clerk;
SELECT regress.try($$SELECT prepay.recharge(2, 3, 1.00, 'cash', 'AX-2')$$);
RESET SESSION AUTHORIZATION;
SELECT prepay.recharge(2, 3, 1.00, 'cash', 'AX-3') AS known_login_posts;
ROLLBACK;
-- an entry whose actor row is missing is the auditor's concern
BEGIN;
INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id)
SELECT a.site_id, a.account_id, 'adjustment', 0, a.balance, 9 FROM prepay.account a WHERE a.site_id = 2;
SELECT site_id, account_id, balance, problem FROM prepay.check_ledger();
ROLLBACK;
SELECT * FROM prepay.check_ledger();
DROP ROLE regress_money_clerk;
