-- The hostile-input corpus (issue 8): every public function is called with
-- every argument replaced, one at a time, by hostile values chosen by the
-- argument's type (NULL, negative, zero, huge, NaN, infinities, far-future
-- and ancient times, unknown ids, empty, long and odd text, wrong JSON
-- shapes, invalid enum labels, values of the wrong type), the other
-- arguments taking valid values from a small fixture.  The corpus is
-- generated from pg_proc, so a new public function is exercised (or, if
-- an argument name has no valid value yet, reported) without editing this
-- file.  Then a readings corpus: INSERT ... SELECT and COPY batches mixing
-- good and hostile rows.
--
-- Each call runs in its own subtransaction and is rolled back after its
-- outcome was recorded, so every call starts from the same fixture and
-- the output does not depend on the order of the calls.  A call that
-- succeeds is checked before the rollback: how many ledger rows it
-- posted, and whether prepay.check_ledger() was still empty.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql

-- ---------------------------------------------------------------------
-- the fixture: two sites; site 1 has a flat and a time-of-use tariff, a
-- prepaid and a postpaid account, a vacant meter, a master meter, a
-- consumption charge, a relay command in flight, bills in every state, an
-- apportionment rule and two batches
-- ---------------------------------------------------------------------
INSERT INTO prepay.site (name) VALUES ('Hostile Plaza'), ('Elsewhere');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (1, 'day and night'), (2, 'flat');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES
    (1, 1, '2026-01-01', 1.0), (2, 3, '2026-01-01', 1.0);
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 2, '2026-01-01',
    '{"periods": {"day": 0.9, "night": 0.3}, "schedules": [{"switches": [["00:00", "night"], ["07:00", "day"], ["21:00", "night"]]}]}');
INSERT INTO prepay.gateway (site_id, name, host, port, agent_id) VALUES (1, 'gw', '10.0.0.1', 502, 'agent-h');
INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id) VALUES
    (1, 'M1', 1, 1), (1, 'M2', 1, 2), (1, 'MASTER', 1, 3), (1, 'VACANT', 1, 4);       -- meters 1-4
INSERT INTO prepay.meter (site_id, code) VALUES (2, 'S1');                              -- meter 5
SELECT prepay.open_account(1, 'A', 'Prepaid shop', 1, p_phone => '13800000001');       -- account 1
SELECT prepay.open_account(1, 'B', 'Postpaid office', 1, p_mode => 'postpaid');         -- account 2
SELECT prepay.open_account(2, 'C', 'Elsewhere shop', 3);                                -- account 3
UPDATE prepay.account SET opened_at = '2026-08-01 00:00+00';
SELECT prepay.attach_meter(1, 1, 1, 1000, '2026-08-01 00:00+00');
SELECT prepay.attach_meter(1, 2, 2, 500, '2026-08-01 00:00+00');
SELECT prepay.record_master_reading(1, 3, at, e)
  FROM (VALUES ('2026-08-01 00:00+00'::timestamptz, 5000), ('2026-09-01 00:00+00', 5200), ('2026-10-01 00:00+00', 5400)) AS v(at, e);
SELECT prepay.recharge(1, 1, 500, 'cash', 'R-1');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 1, '2026-09-01 00:00+00', 1100), (1, 2, '2026-09-01 00:00+00', 520),
    (1, 1, '2026-10-01 00:00+00', 1200), (1, 2, '2026-10-01 00:00+00', 540);
INSERT INTO prepay.account_group (site_id, name) VALUES (1, 'everyone');
INSERT INTO prepay.account_group_member (site_id, group_id, account_id) VALUES (1, 1, 1), (1, 1, 2);
INSERT INTO prepay.apportion_rule (site_id, name, kind, method, group_id, master_meters, price, settle, active_from)
VALUES (1, 'corridor', 'common_area', 'equal', 1, '{3}', 1, 'bill', '2026-08-01');
SELECT prepay.trip(1, 2, 'fixture');
SELECT count(*) AS claimed FROM prepay.agent_claim_commands('agent-h');
INSERT INTO prepay.notify_channel (site_id, channel, url) VALUES (1, 'webhook', 'https://hooks.example/prepay');
INSERT INTO prepay.notification (site_id, account_id, kind, message) VALUES (1, 1, 'fixture', 'a delivery in flight');
SELECT count(*) AS claimed_deliveries FROM prepay.agent_claim_deliveries('agent-h');
SELECT bill_id, state FROM prepay.draft_bill(1, 2, '2026-08-01', '2026-09-01');        -- bill 1: issued below
SELECT bill_id, state FROM prepay.confirm_bill(1, 1);
SELECT bill_id, state, amount_due FROM prepay.issue_bill(1, 1);
SELECT bill_id, state FROM prepay.draft_bill(1, 2, '2026-09-01', '2026-10-01');        -- bill 2: confirmed
SELECT bill_id, state FROM prepay.confirm_bill(1, 2);
SELECT bill_id, state FROM prepay.draft_bill(1, 1, '2026-09-01', '2026-10-01');        -- bill 3: draft
SELECT prepay.create_batch(1, 'B-LATER', 'set_protect', 'meter', '[1]', '{"on": true}', '2100-01-01 00:00+00');  -- batch 1
SELECT prepay.create_batch(1, 'B-NOW', 'set_protect', 'meter', '[2]', '{"on": true}');  -- batch 2
SELECT entry_id, account_id, kind, amount, balance_after FROM prepay.ledger ORDER BY entry_id;
SELECT * FROM prepay.check_ledger();

-- ---------------------------------------------------------------------
-- the hostile values, by type.  kind: 'null', 'hostile' (a value of the
-- right type that must be refused or handled), 'wrong type' (a literal
-- the type's input function refuses, such as an enum label that does not
-- exist, or a typed value no cast fits).
-- Enum types share the values of 'anyenum'.
-- ---------------------------------------------------------------------
CREATE TABLE regress.h_value (type regtype, label text, kind text, expr text);
INSERT INTO regress.h_value (type, label, kind, expr)
SELECT t::regtype, v.label, v.kind, v.expr
  FROM unnest(ARRAY['integer', 'bigint']) AS t,
       (VALUES ('NULL', 'null', 'NULL'), ('-1', 'hostile', '-1'), ('0', 'hostile', '0'),
               ('unknown id', 'hostile', '987654'), ('max', 'hostile', NULL),
               ('text', 'wrong type', $$'seven'$$), ('typed text', 'wrong type', $$'1'::text$$)) AS v(label, kind, expr);
UPDATE regress.h_value SET expr = CASE type WHEN 'integer'::regtype THEN '2147483647' ELSE '9223372036854775807' END
 WHERE label = 'max';
INSERT INTO regress.h_value (type, label, kind, expr) VALUES
    ('numeric', 'NULL', 'null', 'NULL'),
    ('numeric', '-1', 'hostile', '-1'),
    ('numeric', '0', 'hostile', '0'),
    ('numeric', '1e30', 'hostile', '1e30'),
    ('numeric', 'NaN', 'hostile', $$'NaN'$$),
    ('numeric', 'Infinity', 'hostile', $$'Infinity'$$),
    ('numeric', '-Infinity', 'hostile', $$'-Infinity'$$),
    ('numeric', '0.001', 'hostile', '0.001'),
    ('numeric', 'text', 'wrong type', $$'ten'$$),
    ('numeric', 'typed text', 'wrong type', $$'1'::text$$),
    ('text', 'NULL', 'null', 'NULL'),
    ('text', 'empty', 'hostile', $$''$$),
    ('text', 'blank', 'hostile', $$'   '$$),
    ('text', '10000 chars', 'hostile', $$repeat('x', 10000)$$),
    ('text', '10240 hex chars', 'hostile', $$(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 320) AS i)$$),
    ('text', 'control chars', 'hostile', $$E'\x01\x1b[2J\x7f\r\n\t'$$),
    ('text', 'quotes', 'hostile', $x$$q$'); DROP TABLE prepay.ledger; --" \$q$$x$),
    ('text', 'NUL', 'wrong type', $$'a' || chr(0)$$),
    ('text', 'typed integer', 'wrong type', '42'),
    ('timestamp with time zone', 'NULL', 'null', 'NULL'),
    ('timestamp with time zone', 'infinity', 'hostile', $$'infinity'$$),
    ('timestamp with time zone', '-infinity', 'hostile', $$'-infinity'$$),
    ('timestamp with time zone', 'year 4000', 'hostile', $$'4000-01-01 00:00+00'$$),
    ('timestamp with time zone', 'year 1900', 'hostile', $$'1900-01-01 00:00+00'$$),
    ('timestamp with time zone', 'text', 'wrong type', $$'yesterday-ish'$$),
    ('timestamp with time zone', 'typed integer', 'wrong type', '42'),
    ('date', 'NULL', 'null', 'NULL'),
    ('date', 'infinity', 'hostile', $$'infinity'$$),
    ('date', '-infinity', 'hostile', $$'-infinity'$$),
    ('date', 'year 4000', 'hostile', $$'4000-01-01'$$),
    ('date', 'year 1900', 'hostile', $$'1900-01-01'$$),
    ('date', 'text', 'wrong type', $$'someday'$$),
    ('date', 'typed integer', 'wrong type', '42'),
    ('interval', 'NULL', 'null', 'NULL'),
    ('interval', 'negative', 'hostile', $$'-1 day'$$),
    ('interval', 'zero', 'hostile', $$'0'$$),
    ('interval', 'huge', 'hostile', $$'100000000 years'$$),
    ('interval', 'infinite-ish', 'hostile', $$'2147483647 days'$$),
    ('interval', 'text', 'wrong type', $$'a while'$$),
    ('boolean', 'NULL', 'null', 'NULL'),
    ('boolean', 'text', 'wrong type', $$'maybe'$$),
    ('boolean', 'typed integer', 'wrong type', '42'),
    ('jsonb', 'NULL', 'null', 'NULL'),
    ('jsonb', 'json null', 'hostile', $$'null'$$),
    ('jsonb', 'empty object', 'hostile', $$'{}'$$),
    ('jsonb', 'empty array', 'hostile', $$'[]'$$),
    ('jsonb', 'string', 'hostile', $$'"x"'$$),
    ('jsonb', 'number', 'hostile', $$'42'$$),
    ('jsonb', 'nested', 'hostile', $$'{"a": [1, {"b": [null, true]}], "price": "NaN"}'$$),
    ('jsonb', 'deep', 'hostile', $$repeat('[', 5000)::text || repeat(']', 5000)$$),
    ('jsonb', 'text', 'wrong type', $$'{not json'$$),
    ('anyenum', 'NULL', 'null', 'NULL'),
    ('anyenum', 'unknown label', 'wrong type', $$'bogus'$$),
    ('anyenum', 'empty label', 'wrong type', $$''$$),
    ('anyenum', 'typed text', 'wrong type', $$'closed'::text$$);
-- the deep array goes in as jsonb through its text
UPDATE regress.h_value SET expr = format('(%s)::jsonb', expr) WHERE label = 'deep';

-- ---------------------------------------------------------------------
-- a valid value for every argument: by argument name, or by function and
-- argument name where the function needs a particular fixture row
-- ---------------------------------------------------------------------
CREATE TABLE regress.h_valid (fn text, arg text, expr text);
INSERT INTO regress.h_valid (fn, arg, expr) VALUES
    (NULL, 'p_site_id', '1'),
    (NULL, 'p_directory', $$'/tmp'$$),
    (NULL, 'p_premake', '4'),
    (NULL, 'p_manifest', $$'/tmp/prepay.reading.2026-01.manifest.json'$$),
    (NULL, 'p_account_id', '1'),
    (NULL, 'p_meter_id', '1'),
    (NULL, 'p_old_meter_id', '1'),
    (NULL, 'p_tariff_id', '1'),
    (NULL, 'p_gateway_id', '1'),
    (NULL, 'p_rule_id', '1'),
    (NULL, 'p_entry_id', $$(SELECT min(entry_id) FROM prepay.ledger WHERE kind = 'recharge')$$),
    (NULL, 'p_command_id', $$(SELECT min(command_id) FROM prepay.command WHERE state = 'sent')$$),
    (NULL, 'p_bill_id', '3'),
    (NULL, 'p_batch_id', '1'),
    (NULL, 'p_agent_id', $$'agent-h'$$),
    (NULL, 'p_amount', '10.00'),
    (NULL, 'p_channel', $$'cash'$$),
    (NULL, 'p_external_ref', $$'H-REF'$$),
    (NULL, 'p_provider', $$'payco'$$),
    (NULL, 'p_transaction_id', $$'H-TX'$$),
    (NULL, 'p_refund_id', $$'H-RF'$$),
    (NULL, 'p_reason', $$'hostile corpus'$$),
    (NULL, 'p_note', $$'a note'$$),
    (NULL, 'p_error', $$'no answer'$$),
    (NULL, 'p_code', $$'NEW'$$),
    (NULL, 'p_new_code', $$'M1-NEW'$$),
    (NULL, 'p_name', $$'New tenant'$$),
    (NULL, 'p_phone', $$'13800000009'$$),
    (NULL, 'p_email', $$'tenant@example.com'$$),
    (NULL, 'p_floor_area', '20'),
    (NULL, 'p_credit_limit', '0'),
    (NULL, 'p_low_balance', '50'),
    (NULL, 'p_pretrip', '10'),
    (NULL, 'p_mode', $$'prepaid'$$),
    (NULL, 'p_at', $$'2026-10-15 00:00+00'$$),
    (NULL, 'p_moved_out_at', $$'2026-10-15 00:00+00'$$),
    (NULL, 'p_from', $$'2026-09-01 00:00+00'$$),
    (NULL, 'p_to', $$'2026-10-01 00:00+00'$$),
    (NULL, 'p_day', $$'2026-10-01'$$),
    (NULL, 'p_month', $$'2026-09-01'$$),
    (NULL, 'p_period_start', $$'2026-09-01'$$),
    (NULL, 'p_period_end', $$'2026-10-01'$$),
    (NULL, 'p_energy', '10'),
    (NULL, 'p_initial_energy', '0'),
    (NULL, 'p_final_energy', '1210'),
    (NULL, 'p_cycle_used', '0'),
    (NULL, 'p_days', '7'),
    (NULL, 'p_drop', '0.3'),
    (NULL, 'p_min_points', '5'),
    (NULL, 'p_failures', '3'),
    (NULL, 'p_alarm_after', '5'),
    (NULL, 'p_max_items', '10'),
    (NULL, 'p_retry_after', $$'1 minute'$$),
    (NULL, 'p_horizon', $$'24 hours'$$),
    (NULL, 'p_within', $$'7 days'$$),
    (NULL, 'p_include_sent', 'false'),
    (NULL, 'p_on', 'true'),
    (NULL, 'p_consumption_by_day', 'true'),
    (NULL, 'p_relay_state', $$'tripped'$$),
    (NULL, 'p_client_ref', $$'B-NEW'$$),
    (NULL, 'p_action', $$'set_protect'$$),
    (NULL, 'p_target', $$'meter'$$),
    (NULL, 'p_targets', $$'[1]'$$),
    (NULL, 'p_params', $$'{"on": true}'$$),
    (NULL, 'p_run_at', $$'2027-02-01 00:00+00'$$),
    (NULL, 'p_definition', $$'{"price": 1}'$$),
    (NULL, 'p_schedules', $$'{}'$$),
    (NULL, 'p_node_name', $$'worker.example'$$),
    (NULL, 'p_node_port', '5432'),
    (NULL, 'p_notification_id', '(SELECT min(notification_id) FROM prepay.notification_delivery)'),
    (NULL, 'p_attempt', '1'),
    (NULL, 'p_status', '503'),
    (NULL, 'p_limit', '10'),
    ('agent_delivery_done', 'p_channel', $$'webhook'$$),
    ('agent_delivery_failed', 'p_channel', $$'webhook'$$),
    (NULL, 'balance', '100'),
    (NULL, 'low_balance_threshold', '50'),
    (NULL, 'pretrip_threshold', '10'),
    (NULL, 'credit_limit', '0'),
    ('attach_meter', 'p_meter_id', '4'),
    ('record_master_reading', 'p_meter_id', '3'),
    ('record_master_reading', 'p_energy', '5500'),
    ('protect', 'p_account_id', 'NULL'),
    ('set_tariff', 'p_meter_id', 'NULL'),
    ('set_tariff', 'p_tariff_id', '2'),
    ('rate', 'p_tariff_id', '2'),
    ('simulate_bill', 'p_tariff_id', '2'),
    ('explain_charge', 'p_entry_id', $$(SELECT min(entry_id) FROM prepay.ledger WHERE kind = 'consumption')$$),
    ('pay_bills', 'p_account_id', '2'),
    ('pay_bills', 'p_amount', '1.00'),
    ('issue_bill', 'p_bill_id', '2'),
    ('run_batch', 'p_batch_id', '2'),
    ('draft_bill', 'p_period_start', $$'2026-10-01'$$),
    ('draft_bill', 'p_period_end', $$'2026-11-01'$$),
    ('draft_bills', 'p_period_start', $$'2026-10-01'$$),
    ('draft_bills', 'p_period_end', $$'2026-11-01'$$),
    ('apportion', 'p_period_start', $$'2026-09-01'$$);

-- ---------------------------------------------------------------------
-- the public API: every function of the schema not starting with _ that
-- is not a trigger function
-- ---------------------------------------------------------------------
CREATE TABLE regress.h_arg AS
SELECT p.oid::regprocedure AS fn, p.proname::text AS fname, a.pos::integer, a.name::text,
       CASE WHEN t.typtype = 'e' THEN 'anyenum'::regtype ELSE a.type::regtype END AS type,
       coalesce((SELECT v.expr FROM regress.h_valid v WHERE v.fn = p.proname AND v.arg = a.name),
                (SELECT v.expr FROM regress.h_valid v WHERE v.fn IS NULL AND v.arg = a.name)) AS valid
  FROM pg_proc p
  CROSS JOIN LATERAL unnest(p.proargnames[1:p.pronargs], p.proargtypes::oid[]) WITH ORDINALITY AS a(name, type, pos)
  JOIN pg_type t ON t.oid = a.type
 WHERE p.pronamespace = 'prepay'::regnamespace AND p.proname !~ '^_' AND p.prorettype <> 'trigger'::regtype;
-- every argument has a valid value and every type has hostile values (a
-- new function with a new argument name or type shows up here)
SELECT fn, name AS argument_without_valid_value FROM regress.h_arg WHERE valid IS NULL;
SELECT DISTINCT type AS type_without_hostile_values FROM regress.h_arg a
 WHERE NOT EXISTS (SELECT 1 FROM regress.h_value v WHERE v.type = a.type);

-- the calls: per function, one with every argument valid (the baseline),
-- then one per argument and hostile value of its type
CREATE TABLE regress.h_call (n serial, fn regprocedure, fname text, arg text, label text, kind text, call text,
                             outcome text, message text, ledger_rows integer, rows_written bigint,
                             books_balance boolean, ms numeric);
CREATE FUNCTION regress.h_call_text(p_fn regprocedure, p_pos integer, p_expr text) RETURNS text
LANGUAGE sql AS $$
    SELECT format('SELECT count(*) FROM %s(%s)', p.oid::regproc,
                  coalesce((SELECT string_agg(format('%I => %s', a.name, CASE WHEN a.pos = p_pos THEN p_expr ELSE a.valid END),
                                              ', ' ORDER BY a.pos)
                              FROM regress.h_arg a WHERE a.fn = p_fn), ''))
      FROM pg_proc p WHERE p.oid = p_fn
$$;
INSERT INTO regress.h_call (fn, fname, arg, label, kind, call)
SELECT p.oid::regprocedure, p.proname, NULL, 'baseline', 'valid', regress.h_call_text(p.oid::regprocedure, 0, NULL)
  FROM pg_proc p
 WHERE p.pronamespace = 'prepay'::regnamespace AND p.proname !~ '^_' AND p.prorettype <> 'trigger'::regtype
 ORDER BY p.proname, p.oid;
INSERT INTO regress.h_call (fn, fname, arg, label, kind, call)
SELECT a.fn, a.fname, a.name, v.label, v.kind, regress.h_call_text(a.fn, a.pos, v.expr)
  FROM regress.h_arg a JOIN regress.h_value v ON v.type = a.type
 ORDER BY a.fname, a.fn::text, a.pos, v.label;

-- run every call in a subtransaction, record its outcome and undo it
SET statement_timeout = '10min';
DO $$
DECLARE
    c record;
    state text;
    msg text;
    posted integer;
    written bigint;
    writes_before bigint;
    balanced boolean;
    mark bigint;
    started timestamptz;
BEGIN
    FOR c IN SELECT n, call FROM regress.h_call ORDER BY n LOOP
        posted := NULL;
        written := NULL;
        balanced := NULL;
        started := clock_timestamp();
        BEGIN
            SELECT coalesce(max(entry_id), 0) INTO mark FROM prepay.ledger;
            SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) INTO writes_before
              FROM pg_stat_xact_user_tables WHERE schemaname = 'prepay';
            EXECUTE c.call;
            SELECT count(*) INTO posted FROM prepay.ledger WHERE entry_id > mark;
            SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) - writes_before INTO written
              FROM pg_stat_xact_user_tables WHERE schemaname = 'prepay';
            balanced := NOT EXISTS (SELECT 1 FROM prepay.check_ledger());
            RAISE EXCEPTION USING ERRCODE = 'ZX000';          -- undo the call
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        END;
        UPDATE regress.h_call
           SET outcome = CASE state WHEN 'ZX000' THEN 'ok' ELSE state END,
               message = CASE state WHEN 'ZX000' THEN NULL ELSE msg END,
               ledger_rows = posted, rows_written = written, books_balance = balanced,
               ms = extract(epoch FROM clock_timestamp() - started) * 1000
         WHERE n = c.n;
    END LOOP;
END $$;
RESET statement_timeout;

-- ---------------------------------------------------------------------
-- what the corpus proves
-- ---------------------------------------------------------------------
SELECT count(*) AS calls, count(DISTINCT fn) AS functions,
       count(*) FILTER (WHERE kind = 'valid') AS baselines,
       count(*) FILTER (WHERE outcome <> 'ok') AS refused
  FROM regress.h_call;
-- (c) every public function was called with every argument replaced (a
-- function without arguments by its baseline), and every baseline
-- succeeds: the fixture is complete, so a refusal is the value's doing
SELECT p.oid::regprocedure AS function_not_covered
  FROM pg_proc p
 WHERE p.pronamespace = 'prepay'::regnamespace AND p.proname !~ '^_' AND p.prorettype <> 'trigger'::regtype
   AND NOT EXISTS (SELECT 1 FROM regress.h_call c WHERE c.fn = p.oid AND (c.kind <> 'valid' OR p.pronargs = 0));
SELECT a.fn, a.name AS argument_not_covered FROM regress.h_arg a
 WHERE NOT EXISTS (SELECT 1 FROM regress.h_call c WHERE c.fn = a.fn AND c.arg = a.name);
SELECT fn AS baseline_failed, outcome, message FROM regress.h_call WHERE kind = 'valid' AND outcome <> 'ok';
-- (a) no call failed with an internal error (class XX), a generic RAISE
-- (P0001), a feature-not-supported leak (0A000), a lost connection or a
-- cancel; a missing function or a type mismatch (42883, 42804) or a
-- refused literal (22P02) only where the value was of the wrong type
SELECT fn, arg, label, outcome, message AS unspecific_error
  FROM regress.h_call
 WHERE outcome ~ '^(XX|0A|08|57)' OR outcome = 'P0001'
    OR (outcome IN ('42883', '42804', '22P02') AND kind <> 'wrong type')
 ORDER BY n;
-- every wrong-type value was refused
SELECT fn, arg, label, outcome AS wrong_type_accepted FROM regress.h_call WHERE kind = 'wrong type' AND outcome = 'ok' ORDER BY n;
-- no call took longer than 5 seconds: no hostile value makes work without bound
SELECT fn, arg, label, outcome AS slow_call FROM regress.h_call WHERE ms > 5000 ORDER BY n;
-- (b) the outcomes per function: calls, how many succeeded, and the
-- SQLSTATEs of the others (docs/API.md lists prepay's own)
SELECT fname AS function, count(*) AS calls,
       count(*) FILTER (WHERE outcome = 'ok') AS ok,
       string_agg(DISTINCT outcome, ' ' ORDER BY outcome) FILTER (WHERE outcome <> 'ok') AS sqlstates
  FROM regress.h_call GROUP BY fname ORDER BY fname;
-- which hostile value ended how, over all functions
SELECT v.type AS type, h.label, count(*) AS calls,
       string_agg(DISTINCT h.outcome, ' ' ORDER BY h.outcome) AS outcomes
  FROM regress.h_call h JOIN regress.h_arg a ON a.fn = h.fn AND a.name = h.arg
  JOIN regress.h_value v ON v.type = a.type AND v.label = h.label
 GROUP BY v.type, h.label ORDER BY v.type::text, h.label;
-- (d) the books balance after every call that succeeded
SELECT fn, arg, label, ledger_rows AS unbalanced_books FROM regress.h_call WHERE outcome = 'ok' AND NOT books_balance ORDER BY n;
-- every call that accepted a hostile value or NULL and wrote something,
-- each defended below; a call that accepted one and wrote nothing (a
-- report, a lookup of an unknown id, a run with nothing due) only answered
SELECT fname AS function, arg, string_agg(label, ', ' ORDER BY label) AS accepted,
       max(ledger_rows) AS ledger_rows
  FROM regress.h_call WHERE outcome = 'ok' AND kind IN ('hostile', 'null') AND rows_written > 0
 GROUP BY fname, arg ORDER BY fname, arg;
-- Why each is right:
--   agent_command_failed: the agent's error text is kept verbatim (blank or
--     NULL too); a command still called for is queued again whatever the
--     alarm_after (at or below the attempts made: the command_failing alarm
--     now; NULL: none); a retry_after <= 0 or NULL retries at once, one
--     above 60 s waits 60 s.
--   agent_delivery_done, agent_delivery_failed: the caller is a superuser,
--     who acts as every agent id; a delivery report from any attempt is a
--     delivery (the message arrived), the status and error are kept as
--     reported; a failure report of another attempt (NULL too) is stale.
--   agent_gateway_lost, agent_meter_lost: the error text and failure count
--     the agent reports go into the alarm detail as they are.
--   attach_meter, replace_meter p_initial_energy 0, 0.001: registers; NULL
--     in attach_meter: no handover reading (documented).
--   cancel_batch, close, trip, reverse, refund, close_account p_reason;
--     create_batch p_client_ref, p_note; open_account texts; recharge,
--     refund, pay_bills, close_account channel and reference; replace_meter
--     p_new_code; credit_payment, refund_payment provider, transaction
--     and refund ids and reason: free text kept verbatim, NULL where
--     optional (SQL injection is 14_security's business).  A unique text
--     too long for its index (10240 hex chars) is refused with 54000.
--   create_batch, reschedule_batch p_run_at: a finite time (1900 runs at
--     the next run, 4000 waits); NULL is now in create_batch.
--   create_batch p_targets deep: one target, refused when the batch runs.
--   draft_bill, draft_bills: a finite period reaching back to 1900 or on to
--     4000 drafts what was posted in it; draft_bills' NULL end is a month.
--   fold_rollups p_site_id NULL: every site (documented); folding moves
--     rollup deltas and changes nothing the rollup views show.
--   open_account p_floor_area 0, 0.001, NULL and p_credit_limit 0: values.
--   protect p_account_id NULL, set_tariff p_meter_id NULL: the other target.
--   run_due_batches p_max_items NULL: no bound (documented); a large or
--     odd bound runs what is due.
--   set_thresholds NULL: the site's default (or the credit limit
--     unchanged); 0 is a value.
-- and the calls that accepted a hostile value or NULL and wrote nothing
-- (the my_* functions: p_account_id NULL is every account of the caller,
-- documented; an unknown one is 42501)
SELECT fname AS function, string_agg(DISTINCT arg, ', ' ORDER BY arg) AS arguments, count(*) AS calls
  FROM regress.h_call WHERE outcome = 'ok' AND kind IN ('hostile', 'null') AND rows_written = 0
 GROUP BY fname ORDER BY fname;
SELECT * FROM prepay.check_ledger();

-- ---------------------------------------------------------------------
-- the readings corpus: one INSERT ... SELECT and one COPY, each mixing
-- good readings with hostile ones.  Every hostile row is stored and
-- quarantined with its reason, or skipped as a duplicate; the good rows
-- of the same statement are rated.  Meters 6-9: a plain meter, one behind
-- a 100000:1 transformer, one never read, one on a tariff split by its
-- time-of-use registers; all on the postpaid account 2 (no alarms).
-- ---------------------------------------------------------------------
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'by registers');                     -- tariff 4
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 4, '2026-01-01',
    '{"periods": {"sharp": 1.2, "peak": 1.0, "flat": 0.7, "valley": 0.3}, "split": "registers",
      "schedules": [{"switches": [["00:00", "valley"], ["08:00", "peak"], ["12:00", "flat"], ["18:00", "sharp"], ["22:00", "valley"]]}]}');
SELECT setval('prepay.meter_id_seq', 5);      -- the corpus's replace_meter calls drew ids, rolled back
INSERT INTO prepay.meter (site_id, code, multiplier, max_per_hour, tariff_id) VALUES
    (1, 'R-PLAIN', 1, 100, NULL), (1, 'R-CT', 100000, 999999999, NULL), (1, 'R-NEW', 1, 100, NULL), (1, 'R-TOU', 1, 100, 4);
SELECT prepay.attach_meter(1, 2, 6, 100, '2026-10-01 00:00+00');
SELECT prepay.attach_meter(1, 2, 7, 0, '2026-10-01 00:00+00');
SELECT prepay.attach_meter(1, 2, 8);
SELECT prepay.attach_meter(1, 2, 9);
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley)
VALUES (1, 9, '2026-10-01 00:00+00', 100, 10, 20, 30, 40);
SELECT max(entry_id) AS readings_mark FROM prepay.ledger \gset
CREATE TABLE regress.h_reading (n serial, batch integer, label text, expected text, site_id integer, meter_id bigint,
                                read_at timestamptz, energy numeric, sharp numeric, peak numeric, flat numeric, valley numeric);
INSERT INTO regress.h_reading (batch, label, expected, site_id, meter_id, read_at, energy, sharp, peak, flat, valley) VALUES
    (1, 'good', 'rated', 1, 6, '2026-10-02 00:00+00', 110, NULL, NULL, NULL, NULL),
    (1, 'good', 'rated', 1, 6, '2026-10-03 00:00+00', 120, NULL, NULL, NULL, NULL),
    (1, 'duplicate in the batch', 'skipped', 1, 6, '2026-10-03 00:00+00', 120, NULL, NULL, NULL, NULL),
    (1, 'duplicate, other value', 'skipped', 1, 6, '2026-10-03 00:00+00', 125, NULL, NULL, NULL, NULL),
    (1, 'NaN', 'invalid_value', 1, 6, '2026-10-04 00:00+00', 'NaN', NULL, NULL, NULL, NULL),
    (1, 'negative', 'invalid_value', 1, 6, '2026-10-04 01:00+00', -1, NULL, NULL, NULL, NULL),
    (1, 'NULL energy', 'invalid_value', 1, 6, '2026-10-04 02:00+00', NULL, NULL, NULL, NULL, NULL),
    (1, 'backwards', 'counter_backwards', 1, 6, '2026-10-05 00:00+00', 115, NULL, NULL, NULL, NULL),
    (1, 'impossible jump', 'impossible_jump', 1, 6, '2026-10-05 01:00+00', 100000, NULL, NULL, NULL, NULL),
    (1, 'largest register', 'impossible_jump', 1, 6, '2026-10-05 02:00+00', 999999999999.999, NULL, NULL, NULL, NULL),
    (1, 'infinity', 'clock_ahead', 1, 6, 'infinity', 130, NULL, NULL, NULL, NULL),
    (1, 'year 4000', 'clock_ahead', 1, 6, '4000-01-01 00:00+00', 130, NULL, NULL, NULL, NULL),
    (1, 'year 1900', 'clock_behind', 1, 6, '1900-01-01 00:00+00', 50, NULL, NULL, NULL, NULL),
    (1, '-infinity', 'clock_behind', 1, 6, '-infinity', 50, NULL, NULL, NULL, NULL),
    (1, 'before the last rated', 'out_of_order', 1, 6, '2026-09-15 00:00+00', 105, NULL, NULL, NULL, NULL),
    (1, 'good', 'rated', 1, 6, '2026-10-06 00:00+00', 130, NULL, NULL, NULL, NULL),
    (1, 'unknown meter', 'unknown_meter', 1, 987654, '2026-10-02 00:00+00', 1, NULL, NULL, NULL, NULL),
    (1, 'max meter id', 'unknown_meter', 1, 9223372036854775807, '2026-10-02 00:00+00', 1, NULL, NULL, NULL, NULL),
    (1, 'negative meter id', 'unknown_meter', 1, -1, '2026-10-02 00:00+00', 1, NULL, NULL, NULL, NULL),
    (1, 'unknown site', 'unknown_meter', 987654, 6, '2026-10-02 00:00+00', 1, NULL, NULL, NULL, NULL),
    (1, 'meter of another site', 'unknown_meter', 2, 6, '2026-10-02 00:00+00', 1, NULL, NULL, NULL, NULL),
    (1, 'x 100000 overflows', 'impossible_jump', 1, 7, '2026-10-02 00:00+00', 999999999999.999, NULL, NULL, NULL, NULL),
    (1, 'good, x 100000', 'rated', 1, 7, '2026-10-03 00:00+00', 0.01, NULL, NULL, NULL, NULL),
    (1, 'first reading at -infinity', 'clock_behind', 1, 8, '-infinity', 5, NULL, NULL, NULL, NULL),
    (1, 'first reading in 1999', 'clock_behind', 1, 8, '1999-12-31 23:00+00', 5, NULL, NULL, NULL, NULL),
    (1, 'good first reading', 'rated', 1, 8, '2026-10-02 00:00+00', 5, NULL, NULL, NULL, NULL),
    (1, 'good', 'rated', 1, 8, '2026-10-03 00:00+00', 6, NULL, NULL, NULL, NULL),
    (1, 'registers add up', 'rated', 1, 9, '2026-10-02 00:00+00', 110, 11, 23, 33, 43),
    (1, 'registers do not add up', 'rated', 1, 9, '2026-10-03 00:00+00', 120, 12, 24, 34, 1000),
    (1, 'a register NaN', 'invalid_value', 1, 9, '2026-10-04 00:00+00', 130, 'NaN', 25, 35, 1001),
    (1, 'a register missing', 'rated', 1, 9, '2026-10-05 00:00+00', 140, NULL, 26, 36, 1002),
    (1, 'a register negative', 'rated', 1, 9, '2026-10-06 00:00+00', 150, -5, 27, 37, 1003),
    (2, 'good', 'rated', 1, 6, '2026-10-07 00:00+00', 140, NULL, NULL, NULL, NULL),
    (2, 'replayed from batch 1', 'skipped', 1, 6, '2026-10-02 00:00+00', 110, NULL, NULL, NULL, NULL),
    (2, 'replayed hostile row', 'skipped', 1, 6, '2026-10-04 00:00+00', 'NaN', NULL, NULL, NULL, NULL),
    (2, 'NaN', 'invalid_value', 1, 6, '2026-10-07 01:00+00', 'NaN', NULL, NULL, NULL, NULL),
    (2, '-infinity', 'clock_behind', 1, 7, '-infinity', 1, NULL, NULL, NULL, NULL),
    (2, 'unknown meter', 'unknown_meter', 1, 987655, '2026-10-07 00:00+00', 1, NULL, NULL, NULL, NULL),
    (2, 'backwards', 'counter_backwards', 1, 8, '2026-10-07 00:00+00', 1, NULL, NULL, NULL, NULL),
    (2, 'good', 'rated', 1, 8, '2026-10-08 00:00+00', 7.5, NULL, NULL, NULL, NULL);

-- batch 1: INSERT ... SELECT, in the order of the list
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley)
SELECT site_id, meter_id, read_at, energy, sharp, peak, flat, valley FROM regress.h_reading WHERE batch = 1 ORDER BY n;
-- batch 2: COPY
COPY prepay.reading (site_id, meter_id, read_at, energy) FROM stdin;
1	6	2026-10-07 00:00+00	140
1	6	2026-10-02 00:00+00	110
1	6	2026-10-04 00:00+00	NaN
1	6	2026-10-07 01:00+00	NaN
1	7	-infinity	1
1	987655	2026-10-07 00:00+00	1
1	8	2026-10-07 00:00+00	1
1	8	2026-10-08 00:00+00	7.5
\.

-- every row: stored and rated, stored and quarantined with its reason, or
-- skipped as a duplicate of a stored one (the first of them stays)
CREATE FUNCTION regress.h_outcome(h regress.h_reading) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN r.read_at IS NULL THEN 'missing'
                WHEN r.energy IS DISTINCT FROM h.energy
                  OR EXISTS (SELECT 1 FROM regress.h_reading e WHERE e.n < h.n AND e.site_id = h.site_id
                                AND e.meter_id = h.meter_id AND e.read_at = h.read_at) THEN 'skipped'
                ELSE coalesce(r.quarantine_reason::text, 'rated') END
      FROM (SELECT 1) AS one
      LEFT JOIN prepay.reading r ON r.site_id = h.site_id AND r.meter_id = h.meter_id AND r.read_at = h.read_at
$$;
SELECT h.batch, h.label, h.meter_id, h.read_at, h.energy, regress.h_outcome(h) AS outcome,
       regexp_replace(r.quarantine_detail, 'database clock .*', 'database clock (now)') AS quarantine_detail
  FROM regress.h_reading h
  LEFT JOIN prepay.reading r ON r.site_id = h.site_id AND r.meter_id = h.meter_id AND r.read_at = h.read_at
                            AND regress.h_outcome(h) NOT IN ('skipped', 'missing')
 ORDER BY h.n;
SELECT count(*) AS rows, count(*) FILTER (WHERE regress.h_outcome(h) = h.expected) AS as_expected
  FROM regress.h_reading h;
-- the good readings were charged, each interval once: per meter, the
-- consumption entries follow each other without overlap and add up to
-- (last rated - first rated register) x multiplier
SELECT l.meter_id, l.read_from, l.read_to, l.energy, l.amount,
       prepay._pricing_record(l.pieces, c.tariff_id, c.multiplier, c.version_from, c.period, l.read_from, l.read_to, l.energy, l.exact_charge)::jsonb->>'split' AS split
  FROM prepay.ledger l LEFT JOIN prepay.charge_pricing c ON c.site_id = l.site_id AND c.pricing_id = l.pricing_id
 WHERE l.entry_id > :readings_mark ORDER BY l.meter_id, l.read_to;
SELECT m.meter_id, sum(l.energy) AS charged_energy,
       (m.last_energy - min(r.energy) FILTER (WHERE r.read_at = first.read_at)) * m.multiplier AS register_advance,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM prepay.ledger o WHERE o.site_id = 1 AND o.meter_id = l.meter_id
                                          AND o.entry_id <> l.entry_id AND o.kind = 'consumption'
                                          AND o.read_from < l.read_to AND l.read_from < o.read_to)) AS overlapping
  FROM prepay.meter m
  JOIN prepay.ledger l ON l.site_id = m.site_id AND l.meter_id = m.meter_id AND l.kind = 'consumption'
  JOIN LATERAL (SELECT min(read_at) AS read_at FROM prepay.reading x
                 WHERE x.site_id = m.site_id AND x.meter_id = m.meter_id AND x.quarantine_reason IS NULL) AS first ON true
  JOIN prepay.reading r ON r.site_id = m.site_id AND r.meter_id = m.meter_id
 WHERE m.site_id = 1 AND m.meter_id BETWEEN 6 AND 9 AND r.read_at = first.read_at
 GROUP BY m.meter_id, m.last_energy, m.multiplier ORDER BY m.meter_id;
-- one active bad_reading alarm per meter with quarantined readings
SELECT site_id, meter_id, count(*) AS active_bad_reading_alarms FROM prepay.alarm
 WHERE kind = 'bad_reading' AND cleared_at IS NULL GROUP BY site_id, meter_id ORDER BY site_id, meter_id;

-- what cannot be stored at all is refused by the column's type or NOT
-- NULL, and takes its whole statement with it (nothing of it is stored):
-- text that is not a number, a register beyond numeric(15,3), an infinite
-- register, an unknown relay state, a time that is not a time, a reading
-- without its meter or time
SELECT count(*) AS readings_before FROM prepay.reading \gset
COPY prepay.reading (site_id, meter_id, read_at, energy) FROM stdin;
1	6	2026-10-09 00:00+00	150
1	6	2026-10-10 00:00+00	lots
\.
COPY prepay.reading (site_id, meter_id, read_at, energy) FROM stdin;
1	6	2026-10-09 00:00+00	150
1	6	2026-10-10 00:00+00	1e16
\.
SELECT split_part(regress.try(format($$INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, relay_state) VALUES
    (1, 6, '2026-10-09 00:00+00', 150, NULL), (1, 6, '2026-10-10 00:00+00', %s, %s)$$, v.energy, v.relay)), ' | ', 1) AS refused
  FROM (VALUES ($$'Infinity'$$, 'NULL'), ('160', $$'half-open'$$)) AS v(energy, relay);
SELECT split_part(regress.try(format($$INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES
    (1, 6, '2026-10-09 00:00+00', 150), (%s, %s, %s, 160)$$, v.site, v.meter, v.at)), ' | ', 1) AS refused
  FROM (VALUES ('1', '6', $$'soon'$$), ('1', 'NULL', $$'2026-10-10 00:00+00'$$), ('NULL', '6', $$'2026-10-10 00:00+00'$$),
               ('1', '6', 'NULL')) AS v(site, meter, at);
SELECT count(*) - :readings_before AS readings_added FROM prepay.reading;

-- NaN written straight into a table (not through a function) is refused by
-- every numeric column but a reading's (sql/integrity.sql)
SELECT split_part(regress.try(q), ' | ', 1) AS nan_written_directly
  FROM unnest(ARRAY[$$UPDATE prepay.account SET credit_limit = 'NaN'$$,
                    $$UPDATE prepay.site SET low_balance_threshold = 'NaN'$$,
                    $$UPDATE prepay.tariff_version SET price = 'NaN' WHERE price IS NOT NULL$$,
                    $$UPDATE prepay.account SET floor_area = 'NaN'$$]) AS q;

SELECT * FROM prepay.check_ledger();
DROP FUNCTION regress.h_call_text(regprocedure, integer, text), regress.h_outcome(regress.h_reading);
-- regress.h_call stays: 17_search_path makes the same calls again, as every role, with
-- shadowing objects in the callers' schemas, and drops it
DROP TABLE regress.h_value, regress.h_valid, regress.h_arg, regress.h_reading;
