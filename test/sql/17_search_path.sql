-- Pinned search_path and refused control characters (issue 17, items 1 and 9).
--
-- 1. Payment channels and references with control characters are refused
--    (PY017) by every public function that stores them with money.
-- 2. The catalog: every function of schema prepay pins its search_path and
--    declares the security mode the rule gives it; prepay._check_routines
--    (which the install runs) refuses a function that does not.
-- 3. The attack: a login with CREATE on public, owning the "$user" schemas
--    of some callers (the superuser's, admin's, operator's, cashier's, reader's), plants
--    functions, aggregates and operators that shadow built-ins for the
--    types prepay's bodies use (array_agg(numeric), count(bigint),
--    format(text, numeric), =(prepay.ledger_kind, prepay.ledger_kind),
--    +(numeric, integer), ||(text, bigint), ...), each of which records
--    that it ran.  Then the whole hostile corpus of 16_hostile (kept in
--    regress.h_call) runs as a superuser, and its baseline calls, every
--    view, a rated reading and an audited update run as each prepay role,
--    all with search_path = "$user", public: no shadow may run.
-- Runs on the fixture 16_hostile leaves (site 1, accounts 1 and 2).
SET timezone = 'UTC';
SET datestyle = 'ISO';

-- ---------------------------------------------------------------------
-- 1. control characters in channels and references (PY017)
-- ---------------------------------------------------------------------
SELECT max(entry_id) AS entry_mark FROM prepay.ledger \gset
SELECT regress.try($$SELECT prepay.recharge(1, 1, 5, E'\x01\x02', 'B-16')$$);      -- the issue's call
SELECT regress.try($$SELECT prepay.recharge(1, 1, 5, 'cash', E'B-16\n')$$);
SELECT regress.try($$SELECT prepay.recharge(1, 1, 5, 'cash', E'B\u001b[2J')$$);
SELECT regress.try($$SELECT prepay.recharge(1, 1, 5, 'cash', E'B\u007f16')$$);     -- DEL
SELECT regress.try($$SELECT prepay.recharge(1, 1, 5, 'cash', E'B\u008516')$$);     -- NEL (C1)
SELECT regress.try($$SELECT prepay.recharge(1, 1, 5, E'ca\tsh', 'B-16')$$);
SELECT regress.try($$SELECT prepay.refund(1, 1, 1, E'cash\r', 'F-16')$$);
SELECT regress.try($$SELECT prepay.refund(1, 1, 1, 'cash', E'F\x0216')$$);
SELECT regress.try($$SELECT prepay.pay_bills(1, 2, 1, E'bank\n', 'P-16')$$);
SELECT regress.try($$SELECT prepay.pay_bills(1, 2, 1, 'bank', E'P\x0116')$$);
SELECT regress.try($$SELECT prepay.close_account(1, 1, E'clos\x07ing')$$);
SELECT regress.try($$SELECT prepay.create_batch(1, 'B-CTRL-1', 'recharge', 'account', '[1]', '{"channel": "ba\u001bnk", "amount": 5}')$$);
-- a batch item's own reference is checked when the item runs: it fails
-- with PY017, the other item is paid
SELECT prepay.create_batch(1, 'B-CTRL-2', 'recharge', 'account',
    '[{"id": 1, "external_ref": "R\u0001"}, {"id": 1, "external_ref": "R-OK"}]', '{"channel": "bank", "amount": 5}') AS batch_id \gset
SELECT state, done, failed FROM prepay.run_batch(1, :batch_id);
SELECT item_no, state, sqlstate, message FROM prepay.batch_item WHERE site_id = 1 AND batch_id = :batch_id ORDER BY item_no;
-- printable text still passes, Unicode included; blank is still 22023
SELECT regress.try($$SELECT prepay.recharge(1, 1, 5, 'Alipay 支付宝', 'Ünï-16 🔌') > 0$$);
SELECT regress.try($$SELECT prepay.recharge(1, 1, 5, 'cash', '  ')$$);
-- the only entries posted are the printable ones; no stored reference
-- has a control character
SELECT kind, amount, channel, external_ref FROM prepay.ledger WHERE entry_id > :entry_mark ORDER BY entry_id;
SELECT count(*) AS stored_with_control_characters FROM prepay.ledger
 WHERE channel ~ '[\x01-\x1f\x7f-\x9f]' OR external_ref ~ '[\x01-\x1f\x7f-\x9f]';
-- as a cashier login too
CREATE ROLE regress_sp_till LOGIN IN ROLE prepay_cashier;
INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'regress_sp_till');
SELECT regress.probe('regress_sp_till', $$SELECT prepay.recharge(1, 1, 5, E'\x01\x02', 'B-16')$$, NULL, true);
SELECT regress.probe('regress_sp_till', $$SELECT prepay.recharge(1, 1, 5, 'cash', 'TILL-16') > 0$$);
DELETE FROM prepay.site_access WHERE grantee = 'regress_sp_till';
DROP ROLE regress_sp_till;

-- ---------------------------------------------------------------------
-- 2. the catalog: each query lists defects
-- ---------------------------------------------------------------------
SELECT p.oid::regprocedure AS function_without_pinned_search_path
  FROM pg_proc p
 WHERE p.pronamespace = 'prepay'::regnamespace AND p.prokind <> 'a'
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false);
SELECT p.oid::regprocedure AS security_mode_against_the_rule, p.prosecdef
  FROM pg_proc p
 WHERE p.pronamespace = 'prepay'::regnamespace AND p.prokind <> 'a'
   AND p.prosecdef <> ((p.prorettype = 'trigger'::regtype AND p.proname NOT IN ('reading_skip_duplicate', 'reading_intake_drain'))
                       OR p.proname IN ('_my_sites', '_my_accounts', '_my_agents', '_is_agent', '_authorize',
                                        '_authorize_account', '_authorize_agent', '_authorize_agent_id')
                       OR (p.prosrc ~ 'prepay\._authorize' AND p.proname !~ '^_'));
-- every kind of function is covered: SQL, PL/pgSQL and C, triggers included
SELECT l.lanname, p.prorettype = 'trigger'::regtype AS trigger, p.prosecdef AS definer,
       bool_and('search_path=pg_catalog, pg_temp' = ANY (p.proconfig)) AS pinned
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'prepay'::regnamespace
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT prepay._check_routines();
-- the check names what breaks the rule
CREATE FUNCTION prepay.regress_unpinned() RETURNS integer LANGUAGE sql AS 'SELECT 1';
SELECT regress.try('SELECT prepay._check_routines()');
ALTER FUNCTION prepay.regress_unpinned() SET search_path = pg_catalog, pg_temp;
SELECT regress.try('SELECT prepay._check_routines()');
DROP FUNCTION prepay.regress_unpinned();
CREATE FUNCTION prepay.regress_definer() RETURNS integer LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS 'SELECT 1';
SELECT regress.try('SELECT prepay._check_routines()');
DROP FUNCTION prepay.regress_definer();
CREATE FUNCTION prepay.regress_authorizing(p_site_id integer) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$ BEGIN PERFORM prepay._authorize(p_site_id, 'read'); END $$;
SELECT regress.try('SELECT prepay._check_routines()');
DROP FUNCTION prepay.regress_authorizing(integer);
ALTER FUNCTION prepay.reading_skip_duplicate() SECURITY DEFINER;
SELECT regress.try('SELECT prepay._check_routines()');
ALTER FUNCTION prepay.reading_skip_duplicate() SECURITY INVOKER;
SELECT prepay._check_routines();

-- ---------------------------------------------------------------------
-- 3. the attack
-- ---------------------------------------------------------------------
-- the callers: a superuser (this session) and a login per prepay role,
-- mapped to site 1 (the tenant to account 1, the agent as agent-h)
SELECT regress.create_logins('regress_sp', 'admin', 'operator', 'cashier', 'reader', 'tenant', 'agent');
INSERT INTO prepay.site_access (site_id, grantee)
VALUES (1, 'regress_sp_admin'), (1, 'regress_sp_operator'), (1, 'regress_sp_cashier'), (1, 'regress_sp_reader');
INSERT INTO prepay.tenant_access (site_id, account_id, grantee) VALUES (1, 1, 'regress_sp_tenant');
INSERT INTO prepay.agent_access (site_id, agent_id, grantee) VALUES (1, 'agent-h', 'regress_sp_agent');

-- the attacker: a tenant login a DBA let create in public, and that owns
-- the schemas named after the callers ("$user" in their search_path, which
-- comes before public); the tenant and the agent have no such schema, so
-- public's shadows are theirs
CREATE ROLE regress_sp_attacker LOGIN IN ROLE prepay_tenant;
GRANT CREATE ON SCHEMA public TO regress_sp_attacker;
DO $$
BEGIN
    EXECUTE format('CREATE SCHEMA %I AUTHORIZATION regress_sp_attacker', current_user);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO PUBLIC', current_user);
END $$;
CREATE SCHEMA regress_sp_admin AUTHORIZATION regress_sp_attacker;
CREATE SCHEMA regress_sp_operator AUTHORIZATION regress_sp_attacker;
CREATE SCHEMA regress_sp_cashier AUTHORIZATION regress_sp_attacker;
CREATE SCHEMA regress_sp_reader AUTHORIZATION regress_sp_attacker;
GRANT USAGE ON SCHEMA regress_sp_admin, regress_sp_operator, regress_sp_cashier, regress_sp_reader TO PUBLIC;
GRANT USAGE ON SCHEMA regress TO regress_sp_attacker;
CREATE TABLE regress.sp_shadow (kind text, name text, args text, rettype text, impl text);
-- where: public and the "$user" schemas (this superuser's shown as "$user")
CREATE TABLE regress.sp_schema (nspname text, label text);
INSERT INTO regress.sp_schema
SELECT s, CASE WHEN s = current_user::text THEN '"$user"' ELSE s END
  FROM unnest(ARRAY['public', current_user::text, 'regress_sp_admin', 'regress_sp_operator', 'regress_sp_cashier',
                    'regress_sp_reader']) AS s;
GRANT SELECT ON regress.sp_shadow, regress.sp_schema TO regress_sp_attacker;

SET SESSION AUTHORIZATION regress_sp_attacker;
-- what the attacker's code does when it runs: counts (a sequence survives
-- the rollback of the caller's transaction), records who ran it and says so
CREATE SEQUENCE public.sp_hits;
CREATE TABLE public.sp_log (shadow text, run_as name, superuser text);
GRANT USAGE ON SEQUENCE public.sp_hits TO PUBLIC;
GRANT INSERT, SELECT ON public.sp_log TO PUBLIC;
CREATE FUNCTION public.sp_ran(p_shadow text) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM nextval('public.sp_hits');
    INSERT INTO public.sp_log VALUES (p_shadow, current_user, current_setting('is_superuser'));
    RAISE NOTICE 'shadow % ran (superuser: %)', p_shadow, current_setting('is_superuser');
END $$;
RESET SESSION AUTHORIZATION;

-- the shadows: (kind, name, argument types, result type, the built-in's
-- result).  Functions and operators exactly typed where pg_catalog offers
-- only a polymorphic, variadic "any" or implicitly cast candidate; a few
-- the built-in would win anyway (sum(numeric), now()).
INSERT INTO regress.sp_shadow (kind, name, args, rettype, impl)
SELECT 'function', 'format', 'text, ' || t, 'text', 'format($1, $2)'
  FROM unnest('{text,numeric,bigint,integer,timestamptz,date,boolean,interval,jsonb,smallint}'::text[]) AS t
UNION ALL
SELECT 'function', 'format', format('text, %s, %s', a, b), 'text', 'format($1, $2, $3)'
  FROM unnest('{text,numeric,bigint,integer,timestamptz,date}'::text[]) AS a,
       unnest('{text,numeric,bigint,integer,timestamptz,date}'::text[]) AS b
UNION ALL
SELECT 'function', f, 'text, ' || t, 'jsonb', f || '($1, $2)'
  FROM unnest('{jsonb_build_object}'::text[]) AS f,
       unnest('{text,numeric,bigint,integer,timestamptz,date,boolean,jsonb,prepay.ledger_kind}'::text[]) AS t
UNION ALL
SELECT 'function', 'json_build_object', 'text, ' || t, 'json', 'json_build_object($1, $2)'
  FROM unnest('{text,numeric,bigint,integer,timestamptz}'::text[]) AS t
UNION ALL
SELECT 'function', f, t, r, f || '($1)'
  FROM (VALUES ('to_jsonb', 'jsonb'), ('to_json', 'json'), ('quote_literal', 'text'), ('concat', 'text'))
       AS v(f, r),
       unnest('{numeric,bigint,integer,timestamptz,bigint[],integer[],text[]}'::text[]) AS t
UNION ALL
SELECT 'function', 'cardinality', t, 'integer', 'cardinality($1)' FROM unnest('{bigint[],integer[],text[],numeric[]}'::text[]) AS t
UNION ALL
SELECT 'function', 'array_length', t || ', integer', 'integer', 'array_length($1, $2)'
  FROM unnest('{bigint[],integer[],text[],numeric[]}'::text[]) AS t
UNION ALL
SELECT 'function', 'array_append', t || '[], ' || t, t || '[]', 'array_append($1, $2)'
  FROM unnest('{bigint,integer,text,numeric}'::text[]) AS t
UNION ALL
SELECT 'function', 'now', '', 'timestamptz', 'now()'
UNION ALL
SELECT 'function', 'unnest', t || '[]', 'SETOF ' || t, NULL FROM unnest('{bigint,integer,text,numeric,timestamptz}'::text[]) AS t
UNION ALL
SELECT 'aggregate', 'array_agg', t, t || '[]', 'array_append($1, $2)'
  FROM unnest('{numeric,bigint,integer,text,timestamptz,prepay.ledger_kind}'::text[]) AS t
UNION ALL
SELECT 'aggregate', 'count', t, 'bigint', 'coalesce($1, 0) + CASE WHEN $2 IS NULL THEN 0 ELSE 1 END'
  FROM unnest('{bigint,integer,numeric,text,timestamptz}'::text[]) AS t
UNION ALL
SELECT 'aggregate', f, t, 'jsonb', 'coalesce($1, ''[]'') || jsonb_build_array($2)'
  FROM unnest('{jsonb_agg}'::text[]) AS f, unnest('{numeric,bigint,text}'::text[]) AS t
UNION ALL
SELECT 'aggregate', 'sum', 'numeric', 'numeric', 'CASE WHEN $2 IS NULL THEN $1 ELSE coalesce($1, 0) + $2 END'
UNION ALL
SELECT 'aggregate', f, t, t, format('CASE WHEN $1 IS NULL OR $2 %s $1 THEN coalesce($2, $1) ELSE $1 END', CASE f WHEN 'max' THEN '>' ELSE '<' END)
  FROM unnest('{max,min}'::text[]) AS f, unnest('{prepay.relay_state,prepay.ledger_kind,prepay.command_state}'::text[]) AS t
UNION ALL
-- operators: comparisons of prepay's enums (pg_catalog has anyenum only)
SELECT 'operator', o, t || ', ' || t, 'boolean', format('$1 OPERATOR(pg_catalog.%s) $2', o)
  FROM unnest('{=,<>,<,>,<=,>=}'::text[]) AS o,
       unnest(ARRAY(SELECT t.oid::regtype::text FROM pg_type t WHERE t.typnamespace = 'prepay'::regnamespace AND t.typtype = 'e')) AS t
UNION ALL
-- arrays (pg_catalog has anyarray only)
SELECT 'operator', o, t || ', ' || t, 'boolean', format('$1 OPERATOR(pg_catalog.%s) $2', o)
  FROM unnest('{=,<>,@>,<@,&&}'::text[]) AS o, unnest('{bigint[],integer[],text[]}'::text[]) AS t
UNION ALL
SELECT 'operator', '||', t || '[], ' || t, t || '[]', '$1 OPERATOR(pg_catalog.||) $2' FROM unnest('{bigint,integer,text}'::text[]) AS t
UNION ALL
-- text concatenation with a non-text (pg_catalog has anynonarray only)
SELECT 'operator', '||', a || ', ' || b, 'text', '$1 OPERATOR(pg_catalog.||) $2'
  FROM (SELECT 'text' AS a, t AS b FROM unnest('{bigint,integer,numeric,date,timestamptz,interval,boolean,prepay.ledger_kind}'::text[]) AS t
        UNION ALL
        SELECT t, 'text' FROM unnest('{bigint,integer,numeric,date,timestamptz}'::text[]) AS t) AS v
UNION ALL
-- numeric with an integer (pg_catalog casts the integer)
SELECT 'operator', o, a || ', ' || b, CASE WHEN o IN ('+', '-', '*', '/') THEN 'numeric' ELSE 'boolean' END,
       format('$1 OPERATOR(pg_catalog.%s) $2', o)
  FROM unnest('{+,-,*,/,=,<>,<,>,<=,>=}'::text[]) AS o,
       (VALUES ('numeric', 'integer'), ('integer', 'numeric'), ('numeric', 'bigint'), ('bigint', 'numeric')) AS v(a, b)
UNION ALL
-- and the ones pg_catalog wins with an exact match anyway
SELECT 'operator', o, 'numeric, numeric', CASE WHEN o = '+' THEN 'numeric' ELSE 'boolean' END,
       format('$1 OPERATOR(pg_catalog.%s) $2', o)
  FROM unnest('{=,+}'::text[]) AS o;

SET SESSION AUTHORIZATION regress_sp_attacker;
SET search_path = pg_catalog, pg_temp;
DO $$
DECLARE
    s regress.sp_schema;
    sh regress.sp_shadow;
    n integer := 0;
    fn text;
    tag text;
BEGIN
    FOR s IN SELECT * FROM regress.sp_schema LOOP
        FOR sh IN SELECT * FROM regress.sp_shadow LOOP
            n := n + 1;
            fn := format('public.sp_%s', n);
            tag := format('%s.%s(%s)', s.label, sh.name, sh.args);
            IF sh.kind = 'function' AND sh.rettype LIKE 'SETOF %' THEN
                EXECUTE format('CREATE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS %L',
                    s.nspname, sh.name, sh.args, sh.rettype,
                    format('BEGIN PERFORM public.sp_ran(%L); RETURN QUERY SELECT * FROM pg_catalog.unnest($1); END',
                           tag));
            ELSIF sh.kind = 'function' THEN
                EXECUTE format('CREATE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS %L',
                    s.nspname, sh.name, sh.args, sh.rettype,
                    format('BEGIN PERFORM public.sp_ran(%L); RETURN %s; END', tag, sh.impl));
            ELSIF sh.kind = 'aggregate' THEN
                EXECUTE format('CREATE FUNCTION %s(%s, %s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS %L',
                    fn, sh.rettype, sh.args, sh.rettype,
                    format('BEGIN PERFORM public.sp_ran(%L); RETURN %s; END', tag, sh.impl));
                EXECUTE format('CREATE AGGREGATE %I.%I(%s) (SFUNC = %s, STYPE = %s)', s.nspname, sh.name, sh.args, fn, sh.rettype);
            ELSE
                EXECUTE format('CREATE FUNCTION %s(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS %L',
                    fn, sh.args, sh.rettype,
                    format('BEGIN PERFORM public.sp_ran(%L); RETURN %s; END', tag, sh.impl));
                EXECUTE format('CREATE OPERATOR %I.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %s)',
                    s.nspname, sh.name, split_part(sh.args, ', ', 1), split_part(sh.args, ', ', 2), fn);
            END IF;
        END LOOP;
    END LOOP;
END $$;
RESET SESSION AUTHORIZATION;
SELECT kind, count(*) > 20 AS shadows_per_schema FROM regress.sp_shadow GROUP BY kind ORDER BY kind;
SELECT count(*) AS schemas_with_shadows FROM pg_namespace n
 WHERE EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = n.oid AND p.proname = 'array_agg')
   AND n.nspname <> 'pg_catalog';

-- the shadows work: with the callers' search_path an ordinary query runs them
SET search_path = "$user", public;
SELECT (array_agg(x))[1] AS shadowed FROM (VALUES (1.5)) AS v(x);
SET search_path = pg_catalog, pg_temp;
SELECT shadow, superuser FROM public.sp_log;
TRUNCATE public.sp_log;
SELECT setval('public.sp_hits', 1, false);

-- the superuser checks the books
SET search_path = "$user", public;
SELECT * FROM prepay.check_ledger();
SET search_path = pg_catalog, pg_temp;
SELECT shadow, run_as = session_user AS as_superuser, superuser FROM public.sp_log;

-- the calls: 16_hostile's corpus (a subquery argument is replaced by its
-- value, computed here, so that the call's own text names no operator),
-- every view, a rated reading and an audited update
CREATE TABLE regress.sp_call (n serial, call text, everyone boolean);
INSERT INTO regress.sp_call (call, everyone)
SELECT replace(replace(replace(h.call,
         $$(SELECT min(entry_id) FROM prepay.ledger WHERE kind = 'recharge')$$,
         (SELECT min(entry_id) FROM prepay.ledger WHERE kind = 'recharge')::text),
         $$(SELECT min(entry_id) FROM prepay.ledger WHERE kind = 'consumption')$$,
         (SELECT min(entry_id) FROM prepay.ledger WHERE kind = 'consumption')::text),
         $$(SELECT min(command_id) FROM prepay.command WHERE state = 'sent')$$,
         coalesce((SELECT min(command_id) FROM prepay.command WHERE state = 'sent')::text, 'NULL')),
       h.kind = 'valid'
  FROM regress.h_call h ORDER BY h.n;
SELECT count(*) AS calls_naming_a_subquery FROM regress.sp_call WHERE call ~* '\(select .* (kind|state) ';
INSERT INTO regress.sp_call (call, everyone)
SELECT format('SELECT count(*) FROM %s', c.oid::regclass), true
  FROM pg_class c WHERE c.relnamespace = 'prepay'::regnamespace AND c.relkind = 'v' ORDER BY c.relname;
INSERT INTO regress.sp_call (call, everyone) VALUES
    ($$INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-10-02 00:00+00', 1210)$$, true),
    ($$UPDATE prepay.account SET name = 'Renamed' WHERE site_id = 1 AND account_id = 1$$, true),
    ($$SELECT count(*) FROM prepay.agent_claim_commands('agent-h', true)$$, true);
CREATE TABLE regress.sp_outcome (caller text, n integer, outcome text);
DO $$
DECLARE
    who text;
    c regress.sp_call;
    state text;
BEGIN
    FOREACH who IN ARRAY ARRAY['superuser', 'regress_sp_admin', 'regress_sp_operator', 'regress_sp_cashier',
                               'regress_sp_reader', 'regress_sp_tenant', 'regress_sp_agent'] LOOP
        FOR c IN SELECT * FROM regress.sp_call WHERE everyone OR who = 'superuser' ORDER BY n LOOP
            BEGIN
                IF who <> 'superuser' THEN
                    EXECUTE format('SET LOCAL SESSION AUTHORIZATION %I', who);
                END IF;
                PERFORM pg_catalog.set_config('search_path', '"$user", public', true);
                EXECUTE c.call;
                PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
                RAISE EXCEPTION USING ERRCODE = 'ZX000';          -- undo the call (and the role and path)
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
            END;
            INSERT INTO regress.sp_outcome VALUES (who, c.n, CASE state WHEN 'ZX000' THEN 'ok' ELSE state END);
        END LOOP;
    END LOOP;
END $$;
-- each caller made its calls, and some of them got through
SELECT caller, count(*) > 60 AS called, bool_or(outcome = 'ok') AS some_succeeded
  FROM regress.sp_outcome GROUP BY caller ORDER BY caller;
-- and no shadow ran, for nobody (the sequence counts calls rolled back too)
SELECT coalesce(pg_sequence_last_value('public.sp_hits'), 0) AS shadow_calls;
SELECT shadow, run_as, superuser FROM public.sp_log;

-- ---------------------------------------------------------------------
-- clean up
-- ---------------------------------------------------------------------
DELETE FROM prepay.site_access WHERE grantee LIKE 'regress_sp_%';
DELETE FROM prepay.tenant_access WHERE grantee LIKE 'regress_sp_%';
DELETE FROM prepay.agent_access WHERE grantee LIKE 'regress_sp_%';
DROP OWNED BY regress_sp_attacker, regress_sp_admin, regress_sp_operator, regress_sp_cashier, regress_sp_reader,
    regress_sp_tenant, regress_sp_agent;
DROP ROLE regress_sp_attacker, regress_sp_admin, regress_sp_operator, regress_sp_cashier, regress_sp_reader,
    regress_sp_tenant, regress_sp_agent;
DROP TABLE regress.sp_shadow, regress.sp_schema, regress.sp_call, regress.sp_outcome, regress.h_call;
RESET search_path;
SELECT * FROM prepay.check_ledger();
