-- The rating batch writes meters, accounts, ledger rows and rollup deltas
-- directly when the SQL statements would do nothing more (extension/direct.c).  A
-- BEFORE row trigger, row security or a missing privilege sends a table
-- through the SQL statements instead (group 2 here: triggers).  Either way
-- the rows are the same, and triggers fire as for the INSERT or UPDATE.
-- Group 3 is an operator's batch under the roles' forced row-level
-- security.  At the end, tables direct writes cannot honour: partitioned,
-- a partition, with a rule.
DROP EXTENSION prepay CASCADE;
CREATE EXTENSION prepay;
SET timezone = 'UTC';
SET datestyle = 'ISO';
INSERT INTO prepay.site (name, low_balance_threshold, pretrip_threshold) VALUES ('Twins', 15, 5);
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
INSERT INTO prepay.tariff_version VALUES (1, 1, '2026-01-01', 0.583), (1, 1, '2026-03-01 12:00+00', 0.61);
-- three groups of four meters on two accounts each, the same shapes:
-- group 1 meters 1-4 (accounts 1, 2), group 2 meters 5-8 (3, 4), group 3 meters 9-12 (5, 6)
INSERT INTO prepay.meter (site_id, code, multiplier)
SELECT 1, 'M' || i, CASE WHEN i % 2 = 0 THEN 1 ELSE 3 END FROM generate_series(1, 12) i;
SELECT count(prepay.open_account(1, 'A' || i, 'Tenant ' || i, 1)) FROM generate_series(1, 6) i;
SELECT count(prepay.attach_meter(1, (m + 1) / 2, m, 100, '2026-03-01 00:00+00')) FROM generate_series(1, 12) m;
SELECT count(prepay.recharge(1, a, 20, 'cash', 'open-' || a)) FROM generate_series(1, 6) a;

-- the same readings for every group: three batches, the last one with two
-- readings per meter, enough to walk each group's second account down the
-- ladder into arrears (notifications, trips)
CREATE FUNCTION public.read_group(g int, k int) RETURNS void LANGUAGE sql AS $$
    INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
    SELECT 1, 4 * (g - 1) + m, '2026-03-01 00:00+00'::timestamptz + interval '5 hours' * (k + r),
           100 + (k + r) * (m * 1.013 + 0.007)
      FROM generate_series(1, 4) m, generate_series(0, CASE WHEN k = 3 THEN 1 ELSE 0 END) r;
$$;

-- AFTER triggers on the ledger fire for direct inserts, with the batch's
-- rows; the statement trigger also writes the meters it saw, before the
-- batch saves their rating state (which must keep the trigger's change)
CREATE TABLE public.ledger_log (what text, entries int, total numeric);
CREATE FUNCTION public.count_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ledger_log
    VALUES (TG_TABLE_NAME || ' update' || CASE WHEN TG_WHEN = 'BEFORE' THEN ' BEFORE row' ELSE '' END, 1, NULL);
    RETURN NEW;
END $$;
CREATE FUNCTION public.log_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ledger_log SELECT 'statement', count(*), sum(amount) FROM new_entries;
    UPDATE prepay.meter SET room = 'seen ' || (SELECT count(*) FROM new_entries e WHERE e.meter_id = meter.meter_id)
     WHERE site_id = 1 AND meter_id IN (SELECT meter_id FROM new_entries);
    RETURN NULL;
END $$;
CREATE FUNCTION public.log_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ledger_log VALUES (TG_WHEN || ' row', 1, NEW.amount);
    RETURN NEW;
END $$;
CREATE FUNCTION public.log_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ledger_log VALUES ('energy_pending ' || TG_WHEN || ' row', 1, NEW.energy);
    RETURN NEW;
END $$;
CREATE TRIGGER log_statement AFTER INSERT ON prepay.ledger
    REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT EXECUTE FUNCTION public.log_statement();
CREATE TRIGGER log_row AFTER INSERT ON prepay.ledger FOR EACH ROW EXECUTE FUNCTION public.log_row();
-- a trigger on meter columns rating does not set does not stop direct
-- updates, and rating does not fire it (only the statement trigger does)
CREATE TRIGGER meter_room AFTER UPDATE OF room ON prepay.meter FOR EACH ROW EXECUTE FUNCTION public.count_update();
-- a statement trigger on accounts fires for the batch's direct updates as
-- for its UPDATE statement (and for the ladder's)
CREATE TRIGGER account_update AFTER UPDATE ON prepay.account FOR EACH STATEMENT EXECUTE FUNCTION public.count_update();
SELECT public.read_group(1, k) FROM generate_series(1, 3) k;
SELECT what, sum(entries) AS entries, sum(total) AS total FROM public.ledger_log GROUP BY what ORDER BY what;
SELECT meter_id, room, last_read_at, last_energy FROM prepay.meter WHERE meter_id <= 4 ORDER BY meter_id;
TRUNCATE public.ledger_log;

-- group 2 through the SQL statements: a BEFORE row trigger on the ledger,
-- on the rollup deltas and on accounts
CREATE TRIGGER log_before BEFORE INSERT ON prepay.ledger FOR EACH ROW EXECUTE FUNCTION public.log_row();
CREATE TRIGGER log_pending BEFORE INSERT ON prepay.energy_pending FOR EACH ROW EXECUTE FUNCTION public.log_pending();
CREATE TRIGGER account_before BEFORE UPDATE ON prepay.account FOR EACH ROW EXECUTE FUNCTION public.count_update();
SELECT public.read_group(2, k) FROM generate_series(1, 3) k;
SELECT what, sum(entries) AS entries, sum(total) AS total FROM public.ledger_log GROUP BY what ORDER BY what;
DROP TRIGGER log_before ON prepay.ledger;
DROP TRIGGER log_pending ON prepay.energy_pending;
DROP TRIGGER account_update ON prepay.account;
DROP TRIGGER account_before ON prepay.account;
DROP TRIGGER log_statement ON prepay.ledger;
DROP TRIGGER log_row ON prepay.ledger;
DROP TRIGGER meter_room ON prepay.meter;

-- group 3 as an operator under the roles' forced row-level security
-- (sql/security.sql): the rating trigger runs as the extension's owner,
-- so the batch rates exactly as for a superuser
CREATE ROLE prepay_direct_tester IN ROLE prepay_operator;
INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'prepay_direct_tester');
GRANT EXECUTE ON FUNCTION public.read_group(int, int) TO prepay_direct_tester;
GRANT USAGE ON SCHEMA public TO prepay_direct_tester;
SET SESSION AUTHORIZATION prepay_direct_tester;
SELECT public.read_group(3, k) FROM generate_series(1, 3) k;
RESET SESSION AUTHORIZATION;
DELETE FROM prepay.site_access WHERE grantee = 'prepay_direct_tester';
REVOKE USAGE ON SCHEMA public FROM prepay_direct_tester;
DROP FUNCTION public.read_group(int, int);
DROP ROLE prepay_direct_tester;

-- group 1 (direct) as the reference: its entries, then every difference
-- of the other groups' entries, meters, accounts and notifications
SELECT meter_id, account_id, read_from, read_to, energy, exact_charge, amount, balance_after
  FROM prepay.ledger WHERE kind = 'consumption' AND meter_id <= 4 ORDER BY entry_id;
SELECT g.g AS group_no, count(*) AS entries,
       count(*) FILTER (WHERE (l.account_id - 2 * (g.g - 1), l.read_from, l.read_to, l.energy,
                               l.exact_charge, l.amount, l.balance_after, prepay._pricing_record(l.pieces, lc.tariff_id, lc.multiplier, lc.version_from, lc.period, l.read_from, l.read_to, l.energy, l.exact_charge)::text)
                              IS DISTINCT FROM (r.account_id, r.read_from, r.read_to, r.energy,
                                                r.exact_charge, r.amount, r.balance_after, prepay._pricing_record(r.pieces, rc.tariff_id, rc.multiplier, rc.version_from, rc.period, r.read_from, r.read_to, r.energy, r.exact_charge)::text)) AS differ
  FROM generate_series(2, 3) g(g)
  JOIN prepay.ledger l ON l.meter_id BETWEEN 4 * g.g - 3 AND 4 * g.g AND l.kind = 'consumption'
  LEFT JOIN prepay.ledger r ON r.kind = 'consumption' AND r.meter_id = l.meter_id - 4 * (g.g - 1)
                           AND r.read_to = l.read_to
  LEFT JOIN prepay.charge_pricing lc ON lc.site_id = l.site_id AND lc.pricing_id = l.pricing_id
  LEFT JOIN prepay.charge_pricing rc ON rc.site_id = r.site_id AND rc.pricing_id = r.pricing_id
 GROUP BY g.g ORDER BY g.g;
SELECT m.meter_id, m.last_read_at, m.last_energy, m.charge_carry
  FROM prepay.meter m JOIN prepay.meter r ON r.meter_id = (m.meter_id - 1) % 4 + 1
 WHERE m.meter_id > 4 AND (m.last_read_at, m.last_energy, m.charge_carry)
       IS DISTINCT FROM (r.last_read_at, r.last_energy, r.charge_carry);
-- the rollup deltas: group 2 appended by the INSERT, groups 1 and 3 directly
SELECT g.g AS group_no,
       (SELECT count(*) FROM prepay.energy_pending p WHERE p.meter_id BETWEEN 4 * g.g - 3 AND 4 * g.g) AS deltas,
       (SELECT count(*) FROM (
            (SELECT p.meter_id - 4 * (g.g - 1), p.day, p.account_id - 2 * (g.g - 1), p.period, p.tier,
                    p.energy, p.cost, p.charged, p.charges
               FROM prepay.energy_pending p WHERE p.meter_id BETWEEN 4 * g.g - 3 AND 4 * g.g
             EXCEPT ALL
             SELECT r.meter_id, r.day, r.account_id, r.period, r.tier, r.energy, r.cost, r.charged, r.charges
               FROM prepay.energy_pending r WHERE r.meter_id <= 4)
            UNION ALL
            (SELECT r.meter_id, r.day, r.account_id, r.period, r.tier, r.energy, r.cost, r.charged, r.charges
               FROM prepay.energy_pending r WHERE r.meter_id <= 4
             EXCEPT ALL
             SELECT p.meter_id - 4 * (g.g - 1), p.day, p.account_id - 2 * (g.g - 1), p.period, p.tier,
                    p.energy, p.cost, p.charged, p.charges
               FROM prepay.energy_pending p WHERE p.meter_id BETWEEN 4 * g.g - 3 AND 4 * g.g)) d) AS differ
  FROM generate_series(1, 3) g(g) ORDER BY 1;
SELECT account_id, balance, alarm_level FROM prepay.account ORDER BY account_id;
SELECT account_id, alarm_level, balance FROM prepay.notification ORDER BY notification_id;
SELECT * FROM prepay.check_ledger();

-- a row trigger on the ledger whose WHEN clause passes consumption entries
-- makes the batch re-read the meters it wrote (and keep its change); one
-- whose WHEN clause reads NEW.kind alone and rules them out does not (the
-- audit trigger's case); a volatile WHEN clause counts as passing
CREATE FUNCTION public.mark_meter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE prepay.meter SET room = TG_NAME WHERE site_id = NEW.site_id AND meter_id = NEW.meter_id;
    RETURN NULL;
END $$;
CREATE TRIGGER never_consumption AFTER INSERT ON prepay.ledger FOR EACH ROW
    WHEN (NEW.kind <> 'consumption') EXECUTE FUNCTION public.mark_meter();
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-02 00:00+00', 105);
CREATE TRIGGER consumption_row AFTER INSERT ON prepay.ledger FOR EACH ROW
    WHEN (NEW.kind = 'consumption') EXECUTE FUNCTION public.mark_meter();
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 2, '2026-03-02 00:00+00', 109);
DROP TRIGGER consumption_row ON prepay.ledger;
CREATE TRIGGER volatile_row AFTER INSERT ON prepay.ledger FOR EACH ROW
    WHEN (NEW.kind <> 'consumption' OR random() >= 0) EXECUTE FUNCTION public.mark_meter();
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 3, '2026-03-02 00:00+00', 113);
DROP TRIGGER volatile_row ON prepay.ledger;
DROP TRIGGER never_consumption ON prepay.ledger;
DROP FUNCTION public.mark_meter();
SELECT meter_id, room, last_read_at, last_energy FROM prepay.meter WHERE meter_id <= 3 ORDER BY meter_id;
SELECT * FROM prepay.check_ledger();

-- tables direct writes cannot honour go through the statements: rollup
-- deltas partitioned by day (the rows are routed to the partition)...
ALTER TABLE prepay.energy_pending RENAME TO energy_pending_plain;
CREATE TABLE prepay.energy_pending (LIKE prepay.energy_pending_plain) PARTITION BY RANGE (day);
CREATE TABLE prepay.energy_pending_march PARTITION OF prepay.energy_pending
    FOR VALUES FROM ('2026-03-01') TO ('2026-04-01');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-03 00:00+00', 106);
SELECT meter_id, day, energy, charged FROM prepay.energy_pending_march;
DROP TABLE prepay.energy_pending;
ALTER TABLE prepay.energy_pending_plain RENAME TO energy_pending;
-- ... rollup deltas as a partition (its bound is checked: the second
-- reading's day is outside, and the statement fails)...
CREATE TABLE public.pending_by_day (LIKE prepay.energy_pending) PARTITION BY RANGE (day);
ALTER TABLE public.pending_by_day ATTACH PARTITION prepay.energy_pending
    FOR VALUES FROM ('2026-03-01') TO ('2026-03-05');
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-04 00:00+00', 107);
\set VERBOSITY terse
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-06 00:00+00', 108);
\set VERBOSITY default
ALTER TABLE public.pending_by_day DETACH PARTITION prepay.energy_pending;
DROP TABLE public.pending_by_day;
-- ... and a ledger with a rule (it applies)
CREATE RULE ledger_copy AS ON INSERT TO prepay.ledger
    DO ALSO INSERT INTO public.ledger_log VALUES ('rule', 1, NEW.amount);
TRUNCATE public.ledger_log;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, '2026-03-06 00:00+00', 108);
DROP RULE ledger_copy ON prepay.ledger;
SELECT what, entries, total FROM public.ledger_log;
SELECT read_from, read_to, energy, amount FROM prepay.ledger
 WHERE kind = 'consumption' AND meter_id = 1 AND read_to > '2026-03-02' ORDER BY entry_id;
SELECT meter_id, day, energy, charged FROM prepay.energy_pending WHERE day > '2026-03-02' ORDER BY day;
SELECT * FROM prepay.check_ledger();
DROP TABLE public.ledger_log;
DROP FUNCTION public.log_statement();
DROP FUNCTION public.log_row();
DROP FUNCTION public.log_pending();
DROP FUNCTION public.count_update();
