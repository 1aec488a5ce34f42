-- Batch operations: set_tariff and set_thresholds on their own, then a
-- batch of every action (with failures mixed with successes), selectors,
-- idempotent creation, a scheduled batch that runs once after its time,
-- limited runs, cancel and reschedule, and every error path.
DROP EXTENSION prepay CASCADE;
CREATE EXTENSION prepay;
SET timezone = 'UTC';
SET datestyle = 'ISO';
INSERT INTO prepay.site (name, low_balance_threshold, pretrip_threshold) VALUES ('Campus', 50, 10);  -- site 1
INSERT INTO prepay.site (name) VALUES ('Elsewhere');                                                -- site 2
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'standard'), (1, 'discount');                 -- 1, 2
INSERT INTO prepay.tariff (site_id, name, unit) VALUES (1, 'water', 'm3');                          -- 3
INSERT INTO prepay.tariff_version VALUES (1, 1, '2026-01-01', 1.0), (1, 2, '2026-01-01', 0.5), (1, 3, '2026-01-01', 2.0);
INSERT INTO prepay.meter (site_id, code, building, floor, room) VALUES
    (1, 'M1', 'A', '1', '101'), (1, 'M2', 'A', '1', '102'),     -- meters 1, 2
    (1, 'M3', 'A', '2', '201'), (1, 'M4', 'A', '2', '202'),     -- meters 3, 4
    (1, 'M5', 'B', '1', '101');                                 -- meter 5
INSERT INTO prepay.meter (site_id, code, kind, building, floor, room) VALUES (1, 'W6', 'water', 'B', '1', '101');  -- 6
SELECT prepay.open_account(1, 'S1', 'Student 1', 1);           -- 1: M1
SELECT prepay.open_account(1, 'S2', 'Student 2', 1);           -- 2: M2
SELECT prepay.open_account(1, 'S3', 'Student 3', 1);           -- 3: M3, M4
SELECT prepay.open_account(1, 'S4', 'Student 4', 1);           -- 4: M5, W6 (own water tariff)
SELECT prepay.open_account(1, 'S5', 'Moved out', 1);           -- 5: closed below
SELECT prepay.open_account(1, 'S6', 'Canteen', 1, p_mode => 'postpaid');  -- 6: no meter
SELECT prepay.attach_meter(1, 1, 1, 0, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 2, 2, 0, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 3, 3, 0, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 3, 4, 0, '2026-03-01 00:00+00');
SELECT prepay.attach_meter(1, 4, 5, 0, '2026-03-01 00:00+00');
UPDATE prepay.meter SET tariff_id = 3 WHERE meter_id = 6;
SELECT prepay.attach_meter(1, 4, 6, 0, '2026-03-01 00:00+00');
SELECT prepay.close_account(1, 5);
CREATE FUNCTION pg_temp.accounts() RETURNS TABLE (account_id bigint, tariff_id bigint, balance numeric,
    alarm_level smallint, low numeric, pretrip numeric, credit_limit numeric, protect boolean)
LANGUAGE sql AS $$
    SELECT account_id, tariff_id, balance, alarm_level, low_balance_threshold, pretrip_threshold, credit_limit, protect
      FROM prepay.account WHERE site_id = 1 ORDER BY account_id;
$$;
CREATE FUNCTION pg_temp.items(batch bigint) RETURNS TABLE (item_no integer, account_id bigint, meter_id bigint,
    state prepay.batch_item_state, why text, result jsonb) LANGUAGE sql AS $$
    SELECT item_no, account_id, meter_id, state, why, result FROM prepay.batch_result
     WHERE site_id = 1 AND batch_id = batch ORDER BY item_no;
$$;
-- regress.try with timestamps masked
CREATE FUNCTION pg_temp.try(statement text) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(regress.try(statement), '\d{4}-\d\d-\d\d [0-9:]+(\.\d+)?\+\d\d', '<time>', 'g');
$$;
CREATE FUNCTION pg_temp.summary() RETURNS TABLE (batch_id bigint, client_ref text, action prepay.batch_action,
    target prepay.batch_target, state prepay.batch_state, items bigint, pending bigint, done bigint,
    failed bigint, skipped bigint) LANGUAGE sql AS $$
    SELECT batch_id, client_ref, action, target, state, items, pending, done, failed, skipped
      FROM prepay.batch_summary ORDER BY site_id, batch_id;
$$;

-- ---------------------------------------------------------------------
-- prepay.set_thresholds on its own: the ladder runs at once
-- ---------------------------------------------------------------------
SELECT prepay.recharge(1, 1, 40.00, 'cash', 'R-1');            -- S1: 40, level 1 (<= 50)
SELECT prepay.recharge(1, 2, 100.00, 'cash', 'R-2');           -- S2: 100, level 0
SELECT account_id, balance, alarm_level FROM pg_temp.accounts() WHERE account_id IN (1, 2);
-- S1: pre-trip at 45 -> 40 is now level 2
SELECT prepay.set_thresholds(1, 1, 60, 45);
-- S2: low balance at 100 -> level 1; then back to the site's defaults -> level 0
SELECT prepay.set_thresholds(1, 2, 100, NULL);
SELECT prepay.set_thresholds(1, 2, NULL, NULL);
SELECT account_id, balance, alarm_level, low, pretrip, credit_limit FROM pg_temp.accounts() WHERE account_id IN (1, 2);
SELECT notification_id, account_id, alarm_level, message FROM prepay.notification ORDER BY 1;
-- postpaid: thresholds are stored, the ladder does not run
SELECT prepay.set_thresholds(1, 6, 5, 1);
-- errors
SELECT regress.try($$SELECT prepay.set_thresholds(1, 1, -1, NULL)$$);
SELECT regress.try($$SELECT prepay.set_thresholds(1, 1, 'NaN', NULL)$$);
SELECT regress.try($$SELECT prepay.set_thresholds(1, 1, 10.001, NULL)$$);
SELECT regress.try($$SELECT prepay.set_thresholds(1, 1, 1e12, NULL)$$);
SELECT regress.try($$SELECT prepay.set_thresholds(1, 1, 5, 6)$$);
SELECT regress.try($$SELECT prepay.set_thresholds(1, 1, NULL, 60)$$);      -- above the site's 50
SELECT regress.try($$SELECT prepay.set_thresholds(1, 1, NULL, NULL, -5)$$);
SELECT regress.try($$SELECT prepay.set_thresholds(1, 99, NULL, NULL)$$);
SELECT regress.try($$SELECT prepay.set_thresholds(1, 5, NULL, NULL)$$);

-- ---------------------------------------------------------------------
-- prepay.set_tariff on its own: the next reading is priced with it
-- ---------------------------------------------------------------------
SELECT regress.use(2, '2026-03-01 01:00+00', 10);              -- S2: 10 kWh x 1.0 = 10.00
SELECT prepay.set_tariff(1, 2, p_account_id => 2);             -- returns the previous tariff: 1
SELECT regress.use(2, '2026-03-01 02:00+00', 10);              -- 10 kWh x 0.5 = 5.00
SELECT prepay.set_tariff(1, 1, p_meter_id => 2);               -- meter's own tariff; previous NULL
SELECT regress.use(2, '2026-03-01 03:00+00', 10);              -- 10 kWh x 1.0 = 10.00
SELECT prepay.set_tariff(1, NULL, p_meter_id => 2);            -- back to the account's; previous 1
SELECT regress.use(2, '2026-03-01 04:00+00', 10);              -- 10 kWh x 0.5 = 5.00
SELECT entry_id, account_id, meter_id, amount, balance_after FROM prepay.ledger WHERE kind = 'consumption' ORDER BY 1;
SELECT prepay.set_tariff(1, 1, p_account_id => 2);            -- back to standard for the batches below
-- errors
SELECT regress.try($$SELECT prepay.set_tariff(1, 1)$$);
SELECT regress.try($$SELECT prepay.set_tariff(1, 1, p_account_id => 1, p_meter_id => 1)$$);
SELECT regress.try($$SELECT prepay.set_tariff(1, NULL, p_account_id => 1)$$);
SELECT regress.try($$SELECT prepay.set_tariff(1, 9, p_account_id => 1)$$);
SELECT regress.try($$SELECT prepay.set_tariff(2, 1, p_account_id => 1)$$);  -- tariff 1 is site 1's
SELECT regress.try($$SELECT prepay.set_tariff(1, 1, p_account_id => 99)$$);
SELECT regress.try($$SELECT prepay.set_tariff(1, 1, p_account_id => 5)$$);
SELECT regress.try($$SELECT prepay.set_tariff(1, 1, p_meter_id => 99)$$);
SELECT regress.try($$SELECT prepay.set_tariff(1, 1, p_meter_id => 6)$$);    -- water meter, kWh tariff
SELECT regress.try($$SELECT prepay.set_tariff(1, 3, p_meter_id => 1)$$);    -- electricity meter, m3 tariff
SELECT regress.try($$SELECT prepay.set_tariff(1, 3, p_account_id => 3)$$);  -- S3's meters use its tariff
SELECT prepay.set_tariff(1, 3, p_meter_id => 6);                            -- water on water: fine (was 3)

-- ---------------------------------------------------------------------
-- create_batch: refused batches
-- ---------------------------------------------------------------------
SELECT regress.try($$SELECT prepay.create_batch(1, ' ', 'recharge', 'account', '[1]', '{"channel": "cash"}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', NULL, 'account', '[1]')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'reboot', 'account', '[1]')$$);
SELECT regress.try($$SELECT prepay.create_batch(7, 'x', 'set_protect', 'meter', '[1]', '{"on": true}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'recharge', 'meter', '[1]', '{"channel": "cash"}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_thresholds', 'meter', '[1]', '{"low_balance": 1, "pretrip": 1}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_protect', 'meter', '[1]', '[]')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_protect', 'meter', '[1]', '{"on": true, "of": 1}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_protect', 'meter', '[1]')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_protect', 'meter', '[1]', '{"on": "yes"}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_tariff', 'meter', '[1]', '{"tariff_id": 9}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_tariff', 'meter', '[1]', '{"tariff_id": "2"}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_tariff', 'account', '[1]', '{"tariff_id": null}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_thresholds', 'account', '[1]', '{"low_balance": 5}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_thresholds', 'account', '[1]', '{"low_balance": 5, "pretrip": 6}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_thresholds', 'account', '[1]', '{"low_balance": "five", "pretrip": 1}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_thresholds', 'account', '[1]', '{"low_balance": 5, "pretrip": 1, "credit_limit": -1}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_relay', 'meter', '[1]', '{"action": "open"}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_relay', 'meter', '[1]', '{"action": "trip", "reason": ""}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'recharge', 'account', '[1]', '{"channel": " "}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'recharge', 'account', '[1]', '{"channel": "cash", "amount": 0}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_protect', 'meter', '[]', '{"on": true}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_protect', 'meter', '3', '{"on": true}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_protect', 'meter', '{}', '{"on": true}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_protect', 'meter', '{"wing": "A"}', '{"on": true}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_protect', 'meter', '{"floor": 2}', '{"on": true}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'x', 'set_protect', 'meter', '{"all": true, "floor": "2"}', '{"on": true}')$$);
SELECT count(*) AS batches FROM prepay.batch;

-- ---------------------------------------------------------------------
-- recharge: per-item amounts and references, failures mixed in
-- ---------------------------------------------------------------------
-- balances now: S1 40.00, S2 100 - 30 = 70.00, S3 0, S4 0
SELECT $$[
    {"id": 3, "amount": 25.50, "external_ref": "BANK-1"},
    {"code": "S4", "amount": 60, "external_ref": "BANK-2"},
    {"id": 99, "amount": 10, "external_ref": "BANK-3"},
    {"id": 5, "amount": 10, "external_ref": "BANK-4"},
    {"id": 3, "amount": -5, "external_ref": "BANK-5"},
    {"id": 3, "amount": "abc", "external_ref": "BANK-6"},
    {"id": 3, "amount": 1.005, "external_ref": "BANK-7"},
    {"code": "ZZ", "amount": 10, "external_ref": "BANK-8"},
    {"id": 1, "amount": 40.00, "external_ref": "R-1"},
    {"id": 2, "amount": 99, "external_ref": "BANK-1"},
    {"id": 3, "external_ref": "BANK-9"},
    {"id": 1.5, "amount": 1},
    true,
    3,
    "S1"
  ]$$ AS march_items \gset
SELECT prepay.create_batch(1, 'PAY-2026-03', 'recharge', 'account', :'march_items', '{"channel": "bank", "amount": 5}',
    p_note => 'March transfers');
-- not run yet: created "now" but nothing runs until a runner or run_batch
SELECT * FROM pg_temp.summary();
SELECT batch_id, state, items_run, pending, done, failed, skipped FROM prepay.run_batch(1, 1);
SELECT * FROM pg_temp.items(1);
-- what happened to the money (references are per channel: R-1 on bank is a new payment):
-- S1 40 + 40 (R-1) + 5 (batch:1:15) = 85; S2 70 (BANK-1 is S3's: PY004);
-- S3 25.50 (BANK-1) + 5 (BANK-9) + 5 (batch:1:14) = 35.50, level 1; S4 60
SELECT entry_id, account_id, amount, channel, external_ref FROM prepay.ledger WHERE channel = 'bank' ORDER BY 1;
SELECT account_id, balance, alarm_level FROM pg_temp.accounts();
-- creating it again (the same items, the defaults written in another order)
-- returns the same batch and runs nothing again
SELECT prepay.create_batch(1, 'PAY-2026-03', 'recharge', 'account', :'march_items', '{"amount": 5, "channel": "bank"}');
SELECT batch_id, state, items_run, pending, done, failed, skipped FROM prepay.run_batch(1, 1);
SELECT * FROM prepay.run_due_batches();
SELECT count(*) AS bank_entries FROM prepay.ledger WHERE channel = 'bank';
-- the same reference for another batch is refused
SELECT regress.try($$SELECT prepay.create_batch(1, 'PAY-2026-03', 'recharge', 'account', '[1]', '{"channel": "bank", "amount": 5}')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'PAY-2026-03', 'recharge', 'account', '[3]', '{"channel": "bank", "amount": 5}', '2030-01-01')$$);
-- a replayed payment is skipped, not credited again: a new batch re-posting BANK-1
SELECT prepay.create_batch(1, 'PAY-again', 'recharge', 'account', '[{"id": 3, "amount": 25.50, "external_ref": "BANK-1"}]',
                           '{"channel": "bank"}');
SELECT batch_id, state, items_run, done, failed, skipped FROM prepay.run_batch(1, 2);
SELECT * FROM pg_temp.items(2);

-- ---------------------------------------------------------------------
-- set_thresholds by selector: building A's accounts (S1, S2, S3)
-- ---------------------------------------------------------------------
-- S1 85.00 (low 60, pre-trip 45: level 0), S2 70.00 (site's 50/10: level 0), S3 35.50 (level 1)
SELECT prepay.create_batch(1, 'THR-A', 'set_thresholds', 'account', '{"building": "A"}',
                           '{"low_balance": 80, "pretrip": 40}');
SELECT item_no, account_id, meter_id, state FROM pg_temp.items(3);
SELECT batch_id, state, items_run, done, failed, skipped FROM prepay.run_due_batches();
-- low 80, pre-trip 40: S1 85 stays 0; S2 70 -> 1 (notified); S3 35.50 -> 2 (notified)
SELECT * FROM pg_temp.items(3);
SELECT account_id, balance, alarm_level, low, pretrip, credit_limit FROM pg_temp.accounts();
SELECT account_id, alarm_level, message FROM prepay.notification WHERE notification_id > 3 ORDER BY notification_id;

-- out of arrears by a credit limit: S4 falls to -5 (arrears, both meters tripped);
-- a batch raises its credit limit to 10: pre-trip, and supply is restored
SELECT regress.use(5, '2026-03-01 01:00+00', 65);             -- S4: 60 - 65 = -5
SELECT account_id, balance, alarm_level FROM pg_temp.accounts() WHERE account_id = 4;
SELECT command_id, meter_id, action, state, reason FROM prepay.command ORDER BY 1;
SELECT prepay.create_batch(1, 'THR-S4', 'set_thresholds', 'account', '["S4", "S4", 5]',
                           '{"low_balance": null, "pretrip": null, "credit_limit": 10}');
SELECT batch_id, state, items_run, done, failed, skipped FROM prepay.run_due_batches();
SELECT * FROM pg_temp.items(4);
SELECT account_id, balance, alarm_level, credit_limit FROM pg_temp.accounts() WHERE account_id = 4;
SELECT command_id, meter_id, action, state, reason, last_error FROM prepay.command ORDER BY 1;

-- ---------------------------------------------------------------------
-- set_tariff of meters by selector: building B (M5 and the water meter W6)
-- ---------------------------------------------------------------------
SELECT prepay.create_batch(1, 'TAR-B', 'set_tariff', 'meter', '{"building": "B"}', '{"tariff_id": 2}');
SELECT batch_id, state, items_run, done, failed, skipped FROM prepay.run_due_batches();
SELECT * FROM pg_temp.items(5);
-- M5's next reading is priced at 0.5: 4 kWh = 2.00 (S4: -5 - 2 = -7, still above -10)
SELECT regress.use(5, '2026-03-01 02:00+00', 4);
SELECT entry_id, account_id, meter_id, amount, balance_after FROM prepay.ledger WHERE meter_id = 5 ORDER BY 1;
-- set_tariff of accounts by tariff: everyone still on "standard" (S1, S2, S3, S4, S6) moves to "discount"
SELECT prepay.create_batch(1, 'TAR-ALL', 'set_tariff', 'account', '{"tariff_id": 1}', '{"tariff_id": 2}');
SELECT batch_id, state, items_run, done, failed, skipped FROM prepay.run_due_batches();
SELECT * FROM pg_temp.items(6);
SELECT account_id, tariff_id FROM pg_temp.accounts();
SELECT meter_id, tariff_id FROM prepay.meter ORDER BY 1;

-- ---------------------------------------------------------------------
-- set_protect, then set_relay: trip all meters of accounts
-- ---------------------------------------------------------------------
SELECT prepay.create_batch(1, 'PROT', 'set_protect', 'meter', '["M3", 42]', '{"on": true}');
SELECT batch_id, state, items_run, done, failed, skipped FROM prepay.run_due_batches();
SELECT * FROM pg_temp.items(7);
SELECT prepay.create_batch(1, 'PROT-S2', 'set_protect', 'account', '[2]', '{"on": true}');
SELECT batch_id, state, items_run, done, failed, skipped FROM prepay.run_due_batches();
SELECT account_id, protect FROM pg_temp.accounts() WHERE account_id = 2;
-- trip S1 (M1), S2 (protected account), S3 (M3 protected: nothing of S3 is tripped),
-- S6 (no meter), S1 again, S5 (closed)
SELECT prepay.create_batch(1, 'TRIP', 'set_relay', 'account', '[1, 2, 3, 6, 1, 5]',
                           '{"action": "trip", "reason": "maintenance"}');
SELECT batch_id, state, items_run, done, failed, skipped FROM prepay.run_due_batches();
SELECT * FROM pg_temp.items(9);
SELECT command_id, meter_id, action, state, reason FROM prepay.command WHERE state = 'queued' ORDER BY 1;
-- close meters: M1 (its trip is cancelled), M4, a removed meter fails
SELECT prepay.replace_meter(1, 4, 0, 'M4b', 0, '2026-03-01 05:00+00');    -- meter 7 replaces M4
SELECT prepay.create_batch(1, 'CLOSE', 'set_relay', 'meter', '["M1", 4, 7]', '{"action": "close"}');
SELECT batch_id, state, items_run, done, failed, skipped FROM prepay.run_due_batches();
SELECT * FROM pg_temp.items(10);
SELECT command_id, meter_id, action, state, reason, last_error FROM prepay.command WHERE command_id > 2 ORDER BY 1;
-- protection off by batch for the account: S2 is not in arrears, nothing is tripped
SELECT prepay.create_batch(1, 'UNPROT', 'set_protect', 'account', '{"all": true}', '{"on": false}');
SELECT batch_id, state, items_run, done, failed, skipped FROM prepay.run_due_batches();
SELECT item_no, account_id, state FROM pg_temp.items(11);
SELECT account_id, protect FROM pg_temp.accounts();

-- ---------------------------------------------------------------------
-- a scheduled batch does not run before its time and runs once after it
-- ---------------------------------------------------------------------
SELECT prepay.create_batch(1, 'SUBSIDY', 'recharge', 'account', '{"floor": "1"}',
                           '{"channel": "subsidy", "amount": 20}', now() + interval '1 second');
SELECT item_no, account_id, state FROM pg_temp.items(12);
SELECT * FROM prepay.run_due_batches();                        -- nothing due
SELECT pg_temp.try($$SELECT prepay.run_batch(1, 12)$$);       -- not before its time either
SELECT state, pending FROM prepay.batch_summary WHERE batch_id = 12;
SELECT pg_sleep(1.2);
SELECT batch_id, state, items_run, done, failed, skipped FROM prepay.run_due_batches();
SELECT * FROM prepay.run_due_batches();                        -- nothing left
SELECT item_no, account_id, state, result->>'external_ref' AS ref, result->>'amount' AS amount FROM pg_temp.items(12);
SELECT account_id, count(*), sum(amount) FROM prepay.ledger WHERE channel = 'subsidy' GROUP BY 1 ORDER BY 1;

-- ---------------------------------------------------------------------
-- limited runs, cancel, reschedule
-- ---------------------------------------------------------------------
SELECT prepay.create_batch(1, 'BIG', 'recharge', 'account', '[1, 2, 3, 4]', '{"channel": "card", "amount": 1}');
SELECT prepay.create_batch(1, 'NEXT', 'set_protect', 'meter', '[1]', '{"on": true}');
SELECT batch_id, state, items_run, pending, done FROM prepay.run_due_batches(p_max_items => 3);
SELECT batch_id, state, items_run, pending, done FROM prepay.run_due_batches(p_max_items => 3);
SELECT regress.try($$SELECT prepay.run_due_batches(0)$$);
SELECT prepay.create_batch(1, 'LATER', 'set_relay', 'meter', '[1, 2]', '{"action": "trip"}', '2030-01-01 00:00+00');
SELECT prepay.reschedule_batch(1, 15, '2031-01-01 00:00+00');
SELECT run_at FROM prepay.batch WHERE batch_id = 15;
SELECT prepay.cancel_batch(1, 15, 'tenants moved out');
SELECT * FROM pg_temp.items(15);
SELECT pg_temp.try($$SELECT prepay.cancel_batch(1, 15, 'again')$$);
SELECT pg_temp.try($$SELECT prepay.cancel_batch(1, 13, 'too late')$$);
SELECT regress.try($$SELECT prepay.cancel_batch(1, 99, 'what')$$);
SELECT regress.try($$SELECT prepay.cancel_batch(1, 13, ' ')$$);
SELECT pg_temp.try($$SELECT prepay.reschedule_batch(1, 13, now())$$);
SELECT regress.try($$SELECT prepay.reschedule_batch(1, 99, now())$$);
SELECT regress.try($$SELECT prepay.reschedule_batch(1, 13, NULL)$$);
SELECT regress.try($$SELECT prepay.run_batch(1, 99)$$);
SELECT batch_id, state, items_run FROM prepay.run_batch(1, 15);   -- cancelled: nothing runs
-- a batch scheduled for later, moved to now, runs at the next run
SELECT prepay.create_batch(1, 'MOVED', 'set_protect', 'meter', '[2]', '{"on": true}', '2030-01-01 00:00+00');
SELECT * FROM prepay.run_due_batches();
SELECT prepay.reschedule_batch(1, 16, now());
SELECT batch_id, state, items_run, done FROM prepay.run_due_batches();

-- a deadlock, serialization failure or lack of resources is not an item's
-- fault: the batch's run is undone (no payment stays), noted, and retried
CREATE FUNCTION pg_temp.conflict() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.account_id = 4 THEN
        RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '40001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER conflict BEFORE UPDATE ON prepay.account FOR EACH ROW EXECUTE FUNCTION pg_temp.conflict();
SELECT prepay.create_batch(1, 'RETRY', 'recharge', 'account', '[1, 4]', '{"channel": "card", "amount": 2}');
SELECT batch_id, state, items_run, pending, done, failed, regexp_replace(last_error, ' \(run at .*\)$', '') AS last_error
  FROM prepay.run_due_batches();
SELECT count(*) AS retry_entries FROM prepay.ledger WHERE external_ref LIKE 'batch:17:%';
DROP TRIGGER conflict ON prepay.account;
SELECT batch_id, state, items_run, pending, done, failed, last_error FROM prepay.run_due_batches();
SELECT account_id, amount, external_ref FROM prepay.ledger WHERE external_ref LIKE 'batch:17:%' ORDER BY 1;
-- run_batch does not hide such an error: the caller's transaction fails
CREATE TRIGGER conflict BEFORE UPDATE ON prepay.account FOR EACH ROW EXECUTE FUNCTION pg_temp.conflict();
SELECT prepay.create_batch(1, 'RETRY-2', 'recharge', 'account', '[4]', '{"channel": "card", "amount": 2}');
SELECT regress.try($$SELECT prepay.run_batch(1, 18)$$);
DROP TRIGGER conflict ON prepay.account;
SELECT batch_id, state, items_run, done FROM prepay.run_batch(1, 18);

SELECT * FROM pg_temp.summary();
SELECT site_id, batch_id, item_no, sqlstate, message FROM prepay.batch_result WHERE state = 'failed' ORDER BY 1, 2, 3;
SELECT * FROM prepay.check_ledger();
