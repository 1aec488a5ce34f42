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
DROP EXTENSION prepay CASCADE;
CREATE EXTENSION prepay;
SET timezone = 'UTC';
SET datestyle = 'ISO';

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
SELECT bill_id, state FROM prepay.draft_bill(1, 2, '2026-08-01', '2026-09-01');        -- bill 1: issued below
SELECT bill_id, state FROM prepay.confirm_bill(1, 1);
SELECT bill_id, state, amount_due FROM prepay.issue_bill(1, 1);
SELECT bill_id, state FROM prepay.draft_bill(1, 2, '2026-09-01', '2026-10-01');        -- bill 2: confirmed
SELECT bill_id, state FROM prepay.confirm_bill(1, 2);
SELECT bill_id, state FROM prepay.draft_bill(1, 1, '2026-09-01', '2026-10-01');        -- bill 3: draft
SELECT prepay.create_batch(1, 'B-LATER', 'set_protect', 'meter', '[1]', '{"on": true}', '2027-01-01 00:00+00');  -- batch 1
SELECT prepay.create_batch(1, 'B-NOW', 'set_protect', 'meter', '[2]', '{"on": true}');  -- batch 2
SELECT entry_id, account_id, kind, amount, balance_after FROM prepay.ledger ORDER BY entry_id;
SELECT * FROM prepay.check_ledger();

-- ---------------------------------------------------------------------
-- the hostile values, by type.  kind: 'null', 'hostile' (a value of the
-- right type that must be refused or handled), 'wrong type' (a literal
-- the type's input function refuses, or a typed value no cast fits).
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
    ('anyenum', 'unknown label', 'hostile', $$'bogus'$$),
    ('anyenum', 'empty label', 'hostile', $$''$$),
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
    (NULL, 'p_max_attempts', '5'),
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
                             outcome text, message text, ledger_rows integer, books_balance boolean, ms numeric);
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
    balanced boolean;
    mark bigint;
    started timestamptz;
BEGIN
    FOR c IN SELECT n, call FROM regress.h_call ORDER BY n LOOP
        posted := NULL;
        balanced := NULL;
        started := clock_timestamp();
        BEGIN
            SELECT coalesce(max(entry_id), 0) INTO mark FROM prepay.ledger;
            EXECUTE c.call;
            SELECT count(*) INTO posted FROM prepay.ledger WHERE entry_id > mark;
            balanced := NOT EXISTS (SELECT 1 FROM prepay.check_ledger());
            RAISE EXCEPTION USING ERRCODE = 'ZX000';          -- undo the call
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        END;
        UPDATE regress.h_call
           SET outcome = CASE state WHEN 'ZX000' THEN 'ok' ELSE state END,
               message = CASE state WHEN 'ZX000' THEN NULL ELSE msg END,
               ledger_rows = posted, books_balance = balanced,
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
-- (c) every public function was called, and its baseline succeeds (the
-- fixture is complete: a hostile call's refusal is caused by its value)
SELECT p.oid::regprocedure AS function_not_covered
  FROM pg_proc p
 WHERE p.pronamespace = 'prepay'::regnamespace AND p.proname !~ '^_' AND p.prorettype <> 'trigger'::regtype
   AND NOT EXISTS (SELECT 1 FROM regress.h_call c WHERE c.fn = p.oid AND c.kind <> 'valid');
SELECT fn AS baseline_failed, outcome, message FROM regress.h_call WHERE kind = 'valid' AND outcome <> 'ok';
-- (a) no call failed with an internal error (class XX), a generic RAISE
-- (P0001), a feature-not-supported leak (0A000) or a lost connection; a
-- missing function or a type mismatch (42883, 42804) or a refused literal
-- (22P02) only where the value was of the wrong type
SELECT fn, arg, label, outcome, message AS unspecific_error
  FROM regress.h_call
 WHERE outcome ~ '^(XX|0A|08|57)' OR outcome = 'P0001'
    OR (outcome IN ('42883', '42804', '22P02') AND kind <> 'wrong type')
 ORDER BY n;
-- and every wrong-type value was refused
SELECT fn, arg, label, outcome AS wrong_type_accepted FROM regress.h_call WHERE kind = 'wrong type' AND outcome = 'ok' ORDER BY n;
-- no call took longer than 5 seconds (no hostile interval makes work without bound)
SELECT fn, arg, label, outcome AS slow_call FROM regress.h_call WHERE ms > 5000 ORDER BY n;
-- (b) the outcomes per function: how many calls, and the SQLSTATEs they ended with
SELECT fname AS function, count(*) AS calls,
       count(*) FILTER (WHERE outcome = 'ok') AS ok,
       string_agg(DISTINCT outcome, ' ' ORDER BY outcome) FILTER (WHERE outcome <> 'ok') AS sqlstates
  FROM regress.h_call GROUP BY fname ORDER BY fname;
-- (d) the books balance after every call that succeeded, and a call that
-- posted to the ledger on a hostile value is listed: each must be
-- defensible (an optional argument left NULL, a value that is valid here)
SELECT fn, arg, label, ledger_rows AS unbalanced_books FROM regress.h_call WHERE outcome = 'ok' AND NOT books_balance ORDER BY n;
SELECT fname AS function, arg, label, ledger_rows
  FROM regress.h_call WHERE outcome = 'ok' AND kind <> 'valid' AND ledger_rows > 0 ORDER BY n;
-- every call that accepted a hostile (non-NULL) value, for review
SELECT fname AS function, arg, string_agg(label, ', ' ORDER BY label) AS accepted
  FROM regress.h_call WHERE outcome = 'ok' AND kind = 'hostile'
 GROUP BY fname, arg ORDER BY fname, arg;
-- and every call that accepted NULL
SELECT fname AS function, string_agg(arg, ', ' ORDER BY arg) AS accepts_null
  FROM regress.h_call WHERE outcome = 'ok' AND kind = 'null'
 GROUP BY fname ORDER BY fname;
SELECT * FROM prepay.check_ledger();
